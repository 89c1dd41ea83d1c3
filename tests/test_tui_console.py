"""Console features beyond the key table: canned responses, saving attachments, remapped keys,
quarantine retry/release, and database work kept off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import pytest
import sqlalchemy as sa

from supportdesk.config import CannedConfig, ConfigError, Settings, load_settings, parse_settings
from supportdesk.models import Message, RawMessage, Ticket
from supportdesk.tickets import save_attachments
from supportdesk.tui import keymap
from supportdesk.tui.app import OPEN_WAIT, SupportDeskApp, help_sections
from supportdesk.tui.screens.compose import ComposeScreen
from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal, HelpModal, InputModal, QuarantineModal
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.screens.ticket import TicketScreen
from supportdesk.tui.widgets.sidebar import Sidebar
from supportdesk.tui.widgets.ticket_table import TicketTable
from tests.test_tui import EVIL, SIZE, new_ticket, screen_text, settle

MAIL = (b"From: Carol <carol@example.org>\r\nTo: support@example.test\r\nSubject: Lost parcel\r\n"
        b"Message-ID: <lost@example.org>\r\n\r\nWhere is my parcel?\r\n")


def run_with(database, scenario, settings: Settings | None = None):
    async def main():
        app = SupportDeskApp(database, settings or Settings(), "alice", poll_seconds=30.0)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await scenario(app, pilot)
            await settle(app, pilot)
    asyncio.run(main())


def with_attachments(database, alice, files):
    ticket_id = new_ticket(database, alice)
    with database.write() as session:
        message_id = session.execute(sa.select(Message.id).where(Message.ticket_id == ticket_id)).scalar_one()
        save_attachments(session, message_id, files)
    return ticket_id


# --- canned responses -------------------------------------------------------------------------

CANNED = [CannedConfig("Restart", "Please restart the printer."), CannedConfig("Thanks", "Thank you, [b]bye[/b]!")]


def test_canned_response_is_inserted_at_the_cursor(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "reply")
        await settle(app, pilot)
        await pilot.press(*"Hi. ")
        await pilot.press("ctrl+t")
        assert isinstance(app.screen, ChoiceModal)
        assert "Restart" in screen_text(app) and "Thanks" in screen_text(app)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)
        assert app.screen.body == "Hi. Thank you, [b]bye[/b]!"
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"canned")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceModal)
        await pilot.press("escape")
        assert isinstance(app.screen, ComposeScreen) and app.screen.body.endswith("bye[/b]!")

    run_with(database, scenario, Settings(canned=list(CANNED)))


def test_no_canned_responses_configured_says_so(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "note")
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        assert isinstance(app.screen, ComposeScreen)
        assert any("[[canned]]" in n.message for n in app._notifications)

    run_with(database, scenario)


def test_canned_config_is_read_and_checked(tmp_path):
    settings = parse_settings({"canned": [{"name": "Hi", "text": "Hello there"}]})
    assert settings.canned == [CannedConfig("Hi", "Hello there")]
    with pytest.raises(ConfigError, match=r"canned\[0\]\.text: is required"):
        parse_settings({"canned": [{"name": "Hi"}]})
    with pytest.raises(ConfigError, match=r"canned\[0\]\.body: unknown key"):
        parse_settings({"canned": [{"name": "Hi", "text": "x", "body": "y"}]})


# --- attachments ----------------------------------------------------------------------------------

def test_save_attachment_to_a_path_refuses_overwrite(database, alice, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    ticket_id = with_attachments(database, alice, [("../../report\x1b[31m.pdf", "application/pdf", b"%PDF-1 data")])
    target = tmp_path / "saved.pdf"

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        await pilot.press("w")
        assert isinstance(app.screen, InputModal)
        field = app.screen.query_one("Input")
        assert field.value == str(tmp_path / "report[31m.pdf")  # one harmless name, in the current folder
        field.value = str(target)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen)
        assert target.read_bytes() == b"%PDF-1 data"
        assert any("Saved 11 bytes" in n.message for n in app._notifications)
        await pilot.press("w")
        app.screen.query_one("Input").value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InputModal)
        error = str(app.screen.query_one(".error").content)
        assert "already exists" in error and "\n" not in error
        app.screen.query_one("Input").value = str(tmp_path / "missing" / "x.pdf")
        await pilot.press("enter")
        await pilot.pause()
        assert "does not exist" in str(app.screen.query_one(".error").content)
        await pilot.press("escape")
        assert isinstance(app.screen, TicketScreen)

    run_with(database, scenario)
    assert target.read_bytes() == b"%PDF-1 data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.pdf"]


def test_save_picks_one_of_several_attachments(database, alice, tmp_path):
    ticket_id = with_attachments(database, alice, [("a.txt", "text/plain", b"A"), ("b.txt", "text/plain", b"BB")])

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        await pilot.press("w")
        assert isinstance(app.screen, ChoiceModal)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, InputModal)
        assert app.screen.query_one("Input").value.endswith("b.txt")
        app.screen.query_one("Input").value = str(tmp_path / "b-copy.txt")
        await pilot.press("enter")
        await settle(app, pilot)

    run_with(database, scenario)
    assert (tmp_path / "b-copy.txt").read_bytes() == b"BB"


def test_no_attachments_is_a_one_line_warning(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        await pilot.press("w")
        assert isinstance(app.screen, TicketScreen)
        assert any(n.message == "This ticket has no attachments" for n in app._notifications)

    run_with(database, scenario)


# --- remappable bindings ------------------------------------------------------------------------

def test_every_binding_has_an_id_from_the_keymap():
    from supportdesk.tui.screens.actions import ACTION_BINDINGS

    from supportdesk.tui.screens.dashboard import DashboardScreen

    classes = [SupportDeskApp, QueueScreen, TicketScreen, ComposeScreen, TicketTable, Sidebar, ChoiceModal,
               InputModal, ConfirmModal, HelpModal, QuarantineModal, DashboardScreen]
    seen = set()
    for cls in classes:
        for binding in cls.BINDINGS:
            assert binding.id in keymap.BINDING_IDS, (cls.__name__, binding)
            assert binding.key == keymap.DEFAULT_KEYS[binding.id]
            seen.add(binding.id)
    assert seen | {b.id for b in ACTION_BINDINGS} == keymap.BINDING_IDS
    assert keymap.check_keymap({}) == {}  # the defaults do not clash


def test_docs_list_every_binding_id():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "console.md").read_text(encoding="utf-8")
    for binding_id, keys in keymap.DEFAULT_KEYS.items():
        assert f"| `{binding_id}` | `{keys}` |" in text, binding_id


def test_console_keys_are_checked_at_config_load(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[console.keys]\n"action.close" = "x"\n"queue.search" = "ctrl+f, /"\n', encoding="utf-8")
    assert load_settings(path).console_keys == {"action.close": "x", "queue.search": "ctrl+f,slash"}
    for body, message in [
        ('"action.shout" = "x"', "console.keys.action.shout: unknown binding id"),
        ('"action.close" = "ctrl+nope"', "console.keys.action.close: 'ctrl+nope' is not a key"),
        ('"action.close" = "r"', "console.keys.action.close: key r is already queue.reply on the queue list"),
        ('"compose.send" = "s"', "console.keys.compose.send: 's' would be typed into the reply"),
        ('"action.close" = 3', "console.keys.action.close: must be a string"),
    ]:
        path.write_text(f"[console.keys]\n{body}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)
        assert "\n" not in str(caught.value)


def test_remapped_keys_act_and_help_shows_them(database, alice):
    ticket_id = new_ticket(database, alice)
    settings = parse_settings({"console": {"keys": {"action.close": "x", "ticket.save_attachment": "ctrl+w"}}})

    async def scenario(app, pilot):
        await pilot.press("c")  # the old key does nothing now
        await settle(app, pilot)
        with database.read() as session:
            assert session.get(Ticket, ticket_id).status == "new"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpModal)
        help_text = str(app.screen.query_one("Static").content)
        assert "  x " in help_text and "Close the selection" in help_text
        assert "  c " not in help_text
        assert "ctrl+w" in help_text
        await pilot.press("escape")
        await pilot.press("x")
        await settle(app, pilot)

    run_with(database, scenario, settings)
    with database.read() as session:
        assert session.get(Ticket, ticket_id).status == "closed"
    assert ("c", "Close the selection, or the current ticket") in [r for _t, rows in help_sections() for r in rows]


# --- quarantine ------------------------------------------------------------------------------------

def quarantine(database, raw: bytes, error: str) -> int:
    with database.write() as session:
        row = RawMessage(mailbox=None, source="pipe", content_sha256=hashlib.sha256(raw).hexdigest(), raw=raw,
                         state="quarantined", error=error)
        session.add(row)
        session.flush()
        return row.id


def open_quarantine(app):
    screen = app.screen
    screen.show_view(next(v for v in screen.query_one(Sidebar).views if v.kind == "quarantine"))


def test_quarantine_retry_files_the_message(database, alice):
    raw_id = quarantine(database, MAIL, "database was locked")

    async def scenario(app, pilot):
        open_quarantine(app)
        await settle(app, pilot)
        assert isinstance(app.screen, QuarantineModal)
        assert f"#{raw_id}" in screen_text(app) and "database was locked" in screen_text(app)
        await pilot.press("R")
        await settle(app, pilot)
        assert "Nothing in quarantine." in screen_text(app)
        assert any(f"#{raw_id} filed into ticket" in n.message for n in app._notifications)
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)

    run_with(database, scenario)
    with database.read() as session:
        assert session.get(RawMessage, raw_id).state == "processed"
        assert session.execute(sa.select(Ticket.subject)).scalar_one() == "Lost parcel"


def test_quarantine_release_asks_then_makes_a_ticket(database, alice):
    raw_id = quarantine(database, b"\x00\x01 not mail at all " + EVIL.encode(), f"not mail {EVIL}")

    async def scenario(app, pilot):
        open_quarantine(app)
        await settle(app, pilot)
        text = screen_text(app)
        assert "not mail [bold red]x[/b]" in text and "\x1b" not in text
        await pilot.press("L")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await settle(app, pilot)
        with database.read() as session:
            assert session.get(RawMessage, raw_id).state == "quarantined"
        await pilot.press("L", "y")
        await settle(app, pilot)
        assert any("released as ticket" in n.message for n in app._notifications)

    run_with(database, scenario)
    with database.read() as session:
        assert session.get(RawMessage, raw_id).state == "processed"
        assert session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar_one() == 1


# --- blocking work stays off the event loop ---------------------------------------------------------

def gate(monkeypatch, target: str, name: str) -> threading.Event:
    """Make one data function wait for an event, counting on it running in a worker thread."""
    import importlib

    module = importlib.import_module(target)
    real = getattr(module, name)
    opened = threading.Event()

    def waiting(*args, **kwargs):
        assert threading.current_thread() is not threading.main_thread()
        assert opened.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, waiting)
    return opened


def test_keys_work_while_a_ticket_is_still_loading(database, alice, monkeypatch):
    ticket_id = new_ticket(database, alice, subject="Slow one")
    opened = gate(monkeypatch, "supportdesk.tui.screens.ticket", "load_ticket")
    read = gate(monkeypatch, "supportdesk.tui.app", "load_ticket")
    monkeypatch.setattr(SupportDeskApp, "prefetch_ticket", lambda *a: None)  # no read-ahead: the screen loads

    async def scenario(app, pilot):
        await pilot.press("enter")
        await pilot.pause(OPEN_WAIT * 2)  # the read is slow: the screen comes, empty, after OPEN_WAIT
        assert isinstance(app.screen, TicketScreen) and app.screen.view is None
        await pilot.press("question_mark")  # the event loop is free
        assert isinstance(app.screen, HelpModal)
        await pilot.press("escape")
        opened.set()
        read.set()
        await settle(app, pilot)
        assert app.screen.view is not None and "Slow one" in screen_text(app)
        assert app.screen.ticket_id == ticket_id

    run_with(database, scenario)


def test_keys_work_while_an_action_is_being_written(database, alice, monkeypatch):
    for i in range(3):
        new_ticket(database, alice, subject=f"T{i}")
    opened = gate(monkeypatch, "supportdesk.tui.screens.actions", "apply_changes")

    async def scenario(app, pilot):
        table = app.screen.query_one(TicketTable)
        await pilot.press("A")
        await pilot.press("j", "j")
        assert table.cursor == 2
        opened.set()
        await settle(app, pilot)
        assert any("assign → alice" in n.message for n in app._notifications)

    run_with(database, scenario)
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).where(Ticket.assignee_id.is_not(None))).scalar_one() == 1


def test_table_pages_are_fetched_in_a_worker(database, alice, monkeypatch):
    from supportdesk.tickets import create_ticket
    from supportdesk.tui.data import PAGE, Pager

    with database.write() as session:
        for i in range(PAGE + 30):
            create_ticket(session, alice, requester_email=f"u{i}@x.test", subject=f"T{i}")
    opened = gate(monkeypatch, "supportdesk.tui.data", "rows_for")
    opened.set()  # first paint passes; later pages are checked to come from a worker thread

    async def scenario(app, pilot):
        table = app.screen.query_one(TicketTable)
        assert table.pager.total == PAGE + 30 and set(table.pager.pages) == {0}
        opened.clear()
        await pilot.press("end")
        await pilot.pause()
        assert table.current_row() is None and "…" in "".join(
            table.render_line(y).text for y in range(table.size.height))
        opened.set()
        await settle(app, pilot)
        assert table.current_row() is not None and table.current_row().subject == "T0"
        assert isinstance(table.pager, Pager) and 1 in table.pager.pages

    run_with(database, scenario)


def test_a_resting_cursor_reads_the_ticket_ahead_and_a_stale_read_is_replaced(database, alice, monkeypatch):
    """Opening after the cursor rested draws the read-ahead at once; a change made after the
    read-ahead still reaches the screen (it checks the version in a worker)."""
    from supportdesk.tickets import Changes, resolve_actor, update_ticket

    ticket_id = new_ticket(database, alice, subject="Read ahead")
    loads = []
    real_load = TicketScreen.load
    monkeypatch.setattr(TicketScreen, "load", lambda self, *a, **k: (loads.append(a), real_load(self, *a, **k))[1])

    async def scenario(app, pilot):
        await settle(app, pilot)
        await pilot.pause(TicketTable.REST_SECONDS + 0.2)
        await settle(app, pilot)
        ahead = app.take_prefetched(ticket_id)
        assert ahead is not None and ahead.detail["subject"] == "Read ahead"
        with database.write() as session:  # behind the console's back, before it notices
            update_ticket(session, ticket_id, Changes(priority="urgent"), resolve_actor(session, "alice"))
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) and loads == []  # composed from the read-ahead, no load
        assert app.screen.view.detail["priority"] == "urgent"
        assert "urgent" in screen_text(app)

    run_with(database, scenario)
