"""The console driven headless with Textual's Pilot at 80×24, against a real database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from supportdesk.config import Settings
from supportdesk.models import Draft, MailboxState, Message, Outbox, Ticket, utcnow
from supportdesk.query import QueryContext, parse_query
from supportdesk.tickets import Changes, add_message, create_ticket, get_ticket, update_ticket
from supportdesk.tui.app import SupportDeskApp, help_sections
from supportdesk.tui.data import PAGE, Pager, parse_snooze, parse_tags
from supportdesk.tui.screens.compose import ComposeScreen
from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal, HelpModal, InputModal
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.screens.ticket import TicketScreen
from supportdesk.tui.widgets.sidebar import Sidebar
from supportdesk.tui.widgets.status_bar import StatusBar
from supportdesk.tui.widgets.ticket_table import TicketTable

EVIL = "[bold red]x[/b] [@click=app.quit]y[/] \x1b]0;pwned\x07"
SIZE = (80, 24)


def new_ticket(database, actor, subject="Printer on fire", email="bob@acme.test", name="Bob Smith", body="Help!",
               **kw):
    with database.write() as session:
        return create_ticket(session, actor, requester_email=email, requester_name=name, subject=subject, body=body,
                             **kw).id


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def table_text(app) -> str:
    table = app.screen.query_one(TicketTable)
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def make_app(database, *, poll: float = 30.0, **kw) -> SupportDeskApp:
    return SupportDeskApp(database, Settings(), "alice", poll_seconds=poll, **kw)


async def settle(app, pilot) -> None:
    """Wait until the console's thread workers (loads, writes, page fetches) are done and drawn.

    The change watcher runs for the app's whole life, so it is left out."""
    for _ in range(100):
        await pilot.pause()
        busy = [w for w in app.workers if w.group != "watch" and not w.is_finished]
        if not busy:
            await pilot.pause()
            return
        await app.workers.wait_for_complete(busy)
    raise AssertionError(f"workers still running: {busy}")


def run(database, scenario, **kw):
    """Run an async Pilot scenario inside a sync test (no pytest-asyncio needed)."""
    async def main():
        app = make_app(database, **kw)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await scenario(app, pilot)
            await settle(app, pilot)
    asyncio.run(main())


async def wait_for(pilot, condition, seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await pilot.pause(0.05)
    return condition()


def test_queue_lists_tickets_with_counts_and_status_bar(database, alice):
    for i in range(3):
        new_ticket(database, alice, subject=f"Subj {i}")
    with database.write() as session:
        session.add(MailboxState(mailbox="support", last_fetch_at=utcnow() - timedelta(hours=3),
                                 last_error="IMAP login failed", last_error_at=utcnow()))
        session.add(MailboxState(mailbox="billing", last_fetch_at=utcnow()))

    async def scenario(app, pilot):
        assert isinstance(app.screen, QueueScreen)
        await wait_for(pilot, lambda: app.screen.query_one(Sidebar).counts.get("All") == 3)
        text = screen_text(app)
        assert "Subj 2" in text and "Subj 0" in text
        assert "Bob Smith"[:8] in text
        sidebar = app.screen.query_one(Sidebar).counts
        assert sidebar["All"] == 3 and sidebar["Unassigned"] == 3 and sidebar["My open"] == 0
        bar = app.screen.query_one(StatusBar)
        assert await wait_for(pilot, lambda: bar.health is not None)
        status = str(bar.render())
        assert status.startswith("alice") and "outbox 0" in status
        assert "support ✗" in status and "billing ✓" in status
        table = app.screen.query_one(TicketTable)
        await pilot.press("j", "j", "k")
        assert table.cursor == 1
        await pilot.press("down")
        assert table.cursor == 2 and table.current_row().subject == "Subj 0"
        await pilot.click(TicketTable, offset=(10, 0))
        assert table.cursor == 0
        await pilot.double_click(TicketTable, offset=(10, 1))
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == table.pager.row(1).id

    run(database, scenario)


def test_untrusted_text_renders_literally_everywhere(database, alice):
    ticket_id = new_ticket(database, alice, subject=EVIL, name=EVIL, body=f"body {EVIL}\n[/]")
    with database.write() as session:
        from supportdesk.tickets import ensure_queue

        ensure_queue(session, "[/b]Q", "q@example.test")

    async def scenario(app, pilot):
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text
        assert "[bold red]x[/b]" in table_text(app) or "[bold red]x" in table_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TicketScreen)
        text = screen_text(app)
        assert "[bold red]x[/b] [@click=app.quit]y[/]" in text
        assert "pwned" in text and "\x1b" not in text and "\x07" not in text
        assert "body [bold red]x[/b]" in text
        await pilot.click("#thread", offset=(5, 2))
        assert app.is_running
        await pilot.press("m")
        await settle(app, pilot)
        assert isinstance(app.screen, ChoiceModal)
        await pilot.press("end", "enter")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, TicketScreen)
        assert "[/b]Q" in str(app.screen.query_one("#side-text").content)
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        assert "[/b]Q" in screen_text(app)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        assert app.is_running

    run(database, scenario)
    with database.read() as session:
        assert session.get(Ticket, ticket_id).queue_id == 3


def test_quarantine_view_lists_unparsable_mail(database, alice):
    from supportdesk.models import RawMessage

    with database.write() as session:
        session.add(RawMessage(mailbox="support", content_sha256="0" * 64, raw=b"x", state="quarantined",
                               error=f"bad header {EVIL}"))

    async def scenario(app, pilot):
        sidebar = app.screen.query_one(Sidebar)
        assert await wait_for(pilot, lambda: sidebar.counts.get("Quarantine") == 1)
        sidebar.focus()
        sidebar.highlighted = [v.name for v in sidebar.views].index("Quarantine")
        await pilot.press("enter")
        await pilot.pause()
        text = screen_text(app)
        assert "bad header [bold red]x[/b]" in text and "\x1b" not in text
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)

    run(database, scenario)


def test_table_is_virtual_and_pages_by_keyset(database, alice):
    start = utcnow() - timedelta(days=3)
    with database.write() as session:
        for i in range(PAGE * 2 + 50):
            create_ticket(session, alice, requester_email=f"u{i}@x.test", subject=f"T{i}",
                          created_at=start + timedelta(minutes=i // 2))

    async def scenario(app, pilot):
        table = app.screen.query_one(TicketTable)
        pager = table.pager
        assert pager.total == 250
        assert set(pager.pages) == {0}
        assert table.virtual_size.height == 250
        await pilot.press("pagedown")
        for _ in range(6):
            await pilot.press("pagedown")
        assert set(pager.pages) == {0, 1}
        await pilot.press("end")
        assert table.cursor == 249
        assert 2 in pager.pages
        assert table.current_row().subject == "T0"
        await pilot.press("home")
        assert table.current_row().subject == "T249"

    run(database, scenario)
    # Keyset continuation and OFFSET jumps agree with one plain ordered listing (ties on created_at included).
    pager = Pager(database, parse_query(""), lambda: QueryContext(me="alice"))
    pager.reload()
    walked = [pager.row(i).id for i in range(pager.total)]
    pager.pages.clear()
    jumped = [pager.row(i).id for i in (249, 150, 0)]
    with database.read() as session:
        expected = list(session.execute(sa.select(Ticket.id).order_by(Ticket.created_at.desc(), Ticket.id.desc()))
                        .scalars())
    assert walked == expected
    assert jumped == [expected[249], expected[150], expected[0]]


def test_breached_view_shows_the_most_overdue_first_with_countdowns(database, alice):
    ids = [new_ticket(database, alice, subject=f"S{i}") for i in range(3)]
    now = utcnow()
    dues = {ids[0]: now - timedelta(minutes=5), ids[1]: now - timedelta(hours=3), ids[2]: now + timedelta(minutes=30)}
    with database.write() as session:
        for ticket_id, due in dues.items():
            session.execute(sa.update(Ticket).where(Ticket.id == ticket_id).values(first_response_due=due))

    async def scenario(app, pilot):
        screen = app.screen
        screen.show_view(next(v for v in screen.query_one(Sidebar).views if v.name == "Breached"))
        await pilot.pause()
        table = screen.query_one(TicketTable)
        assert [table.pager.row(i).id for i in range(table.pager.total)] == [ids[1], ids[0]]
        assert "-3h" in table_text(app) and "-5m" in table_text(app)
        screen.show_view(next(v for v in screen.query_one(Sidebar).views if v.name == "All"))
        await pilot.pause()
        assert "29m" in table_text(app) or "30m" in table_text(app)

    run(database, scenario)


def test_ticket_screen_thread_folding_customer_panel_history(database, alice):
    older = new_ticket(database, alice, subject="Older problem")
    ticket_id = new_ticket(database, alice, subject="Current problem",
                           body="New words here.\n\nOn Mon, 1 Jan 2026, Support wrote:\n> quoted old line\n> more")
    with database.write() as session:
        ticket = get_ticket(session, ticket_id)
        add_message(session, ticket, alice, kind="note", body="internal remark", author_agent_id=alice.agent_id)
        update_ticket(session, ticket_id, Changes(priority="high"), alice)

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        screen = app.screen
        messages = list(screen.query(".msg"))
        assert [m.has_class("msg-inbound") for m in messages] == [True, False]
        assert messages[1].has_class("msg-note")
        text = screen_text(app)
        assert "New words here." in text and "quoted old line" not in text and "folded" in text
        assert "Acme" in text and f"#{older}" in text
        side = str(screen.query_one("#side-text").content)
        assert "priority" in side and "normal→high" in side
        await pilot.press("o")
        await pilot.pause()
        assert "quoted old line" in screen_text(app)

    run(database, scenario)


def test_reply_goes_to_outbox_and_sets_pending_by_default(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press(*"Fixed it")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, TicketScreen)
        assert "Fixed it" in screen_text(app)

    run(database, scenario)
    with database.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket.status == "pending"
        outbound = session.execute(sa.select(Message).where(Message.kind == "outbound")).scalar_one()
        assert outbound.body_text == "Fixed it"
        assert session.execute(sa.select(Outbox.status)).scalar_one() == "queued"


def test_note_draft_survives_leaving_and_note_is_saved(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "note")
        await pilot.pause()
        await pilot.press(*"half")
        await pilot.press("escape")
        await settle(app, pilot)  # the draft is written by a worker
        with database.read() as session:
            assert session.execute(sa.select(Draft.body)).scalar_one() == "half"
        app.open_compose(ticket_id, "note")
        await pilot.pause()
        assert app.screen.body == "half"
        await pilot.press("ctrl+s")
        await pilot.pause()

    run(database, scenario)
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Draft)).scalar_one() == 0
        note = session.execute(sa.select(Message).where(Message.kind == "note")).scalar_one()
        assert note.body_text == "half"
        assert session.get(Ticket, ticket_id).status == "new"


def test_draft_is_kept_when_quitting_mid_compose(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "reply")
        await pilot.pause()
        await pilot.press(*"unsent")

    run(database, scenario)
    with database.read() as session:
        assert session.execute(sa.select(Draft.kind, Draft.body)).one() == ("reply", "unsent")


def test_actions_on_current_row_and_on_a_confirmed_selection(database, alice):
    a = new_ticket(database, alice, subject="A")
    b = new_ticket(database, alice, subject="B")
    c = new_ticket(database, alice, subject="C")

    async def scenario(app, pilot):
        await pilot.press("s")
        assert isinstance(app.screen, ChoiceModal)
        await pilot.press("down", "enter")
        await pilot.pause()
        await pilot.press("A")
        await pilot.pause()
        await pilot.press("space", "space")
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await pilot.pause()
        assert app.screen.query_one(TicketTable).selected == {}

    run(database, scenario)
    with database.read() as session:
        status = dict(session.execute(sa.select(Ticket.id, Ticket.status)).all())
        assignee = session.execute(sa.select(Ticket.assignee_id).where(Ticket.id == c)).scalar()
    assert status == {c: "closed", b: "closed", a: "new"}
    assert assignee is not None


def test_stale_write_is_refused_with_a_message(database, alice, bob):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        with database.write() as session:
            update_ticket(session, ticket_id, Changes(priority="urgent"), bob)
        await pilot.press("A")
        await pilot.pause()
        assert any("changed by someone else" in n.message for n in app._notifications)

    run(database, scenario)
    with database.read() as session:
        assert session.get(Ticket, ticket_id).assignee_id is None


def test_tags_and_snooze_dialogs(database, alice):
    ticket_id = new_ticket(database, alice, tags=["spam"])

    async def scenario(app, pilot):
        await pilot.press("t")
        assert isinstance(app.screen, InputModal)
        app.screen.query_one("Input").value = "vip -spam"
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("z")
        app.screen.query_one("Input").value = "yesterday"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InputModal)
        assert "cannot read" in str(app.screen.query_one(".error").content)
        app.screen.query_one("Input").value = "2h"
        await pilot.press("enter")
        await pilot.pause()

    run(database, scenario)
    from supportdesk.listing import tags_for

    with database.read() as session:
        assert tags_for(session, [ticket_id])[ticket_id] == ["vip"]
        assert session.get(Ticket, ticket_id).snoozed_until > utcnow() + timedelta(minutes=110)


def test_search_shows_errors_inline_and_filters(database, alice):
    new_ticket(database, alice, subject="Refund please")
    new_ticket(database, alice, subject="Other thing", status="open")

    async def scenario(app, pilot):
        await pilot.press("slash")
        await pilot.press(*"status:bogus", "enter")
        await pilot.pause()
        text = screen_text(app)
        assert "bogus" in text and "query:" in text
        assert app.screen.query_one(TicketTable).pager.total == 2
        app.screen.query_one("#search").value = "status:open"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one(TicketTable).pager.total == 1
        assert "status:open" in str(app.screen.query_one(StatusBar).render())
        assert "Other thing" in table_text(app)

    run(database, scenario)


def test_help_lists_every_binding_and_palette_switches_views(database, alice):
    async def scenario(app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpModal)
        text = screen_text(app) + str(app.screen.query_one("Static").content)
        for key in ("j", "k", "enter", "esc", "q", "/", "space", "r", "n", "c", "s", "p", "a", "A", "t", "m",
                    "z", "ctrl+s", "ctrl+e", "ctrl+p", "?"):
            assert f"  {key}" in text or f", {key}" in text, key
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Breached")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, QueueScreen)
        assert "sla:breached" in app.screen.query_text

    run(database, scenario)
    described = [row for _title, rows in help_sections() for row in rows]
    assert all(description for _keys, description in described)


def test_changes_elsewhere_appear_without_a_keypress(database, alice):
    new_ticket(database, alice, subject="First")

    async def scenario(app, pilot):
        table = app.screen.query_one(TicketTable)
        assert table.pager.total == 1
        new_ticket(database, alice, subject="Arrived")
        assert await wait_for(pilot, lambda: table.pager.total == 2, 2.0)
        assert "Arrived" in table_text(app)
        assert await wait_for(pilot, lambda: app.screen.query_one(Sidebar).counts.get("All") == 2, 3.0)

    run(database, scenario, poll=0.2)


def test_pure_helpers():
    now = utcnow()
    assert parse_snooze("4h", now) == now + timedelta(hours=4)
    with pytest.raises(ValueError):
        parse_snooze("2001-01-01", now)
    changes = parse_tags("vip, -spam +billing")
    assert changes.add_tags == ["vip", "billing"] and changes.remove_tags == ["spam"]
    assert Pager  # the table's data source is importable without Textual side effects
