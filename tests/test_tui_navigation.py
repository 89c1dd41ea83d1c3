"""Getting around the console: sorting the table, the thread's order, the customer's other
tickets, a remappable palette, and quitting without losing a write."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from supportdesk.config import ConfigError, Settings, parse_settings
from supportdesk.models import Draft, Queue, Ticket
from supportdesk.tickets import Changes, add_message, get_ticket, update_ticket
from supportdesk.tui.app import SupportDeskApp
from supportdesk.tui.screens.compose import ComposeScreen
from supportdesk.tui.screens.modals import ChoiceModal
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.screens.ticket import TicketScreen
from supportdesk.tui.widgets.ticket_table import TicketTable, header_text
from tests.test_tui import SIZE, make_app, new_ticket, run, screen_text, settle
from tests.test_tui_console import gate


def subjects(app) -> list[str]:
    table = app.screen.query_one(TicketTable)
    return [table.pager.cached(i).subject for i in range(table.pager.total)]


async def sort_by(app, pilot, label: str) -> None:
    await pilot.press("o")
    await pilot.pause()
    assert isinstance(app.screen, ChoiceModal)
    await pilot.press("home", *["down"] * list(QueueScreen.SORT_MENU).index(label), "enter")
    await settle(app, pilot)
    assert isinstance(app.screen, QueueScreen)


def test_o_sorts_the_table_by_a_column_in_sql_and_again_reverses(database, alice):
    for subject, priority, email in [("Mild", "low", "zed@x.test"), ("Fire", "urgent", "amy@x.test"),
                                     ("Usual", "normal", "kim@x.test")]:
        new_ticket(database, alice, subject=subject, email=email, name="", priority=priority)

    async def scenario(app, pilot):
        assert subjects(app) == ["Usual", "Fire", "Mild"]  # newest first
        assert "Age▼" in screen_text(app)
        await sort_by(app, pilot, "Priority")
        assert subjects(app) == ["Fire", "Usual", "Mild"]
        assert "Pri▼" in screen_text(app)
        await sort_by(app, pilot, "Priority")  # the sorted column again: reversed
        assert subjects(app) == ["Mild", "Usual", "Fire"]
        assert "Pri▲" in screen_text(app)
        await sort_by(app, pilot, "Requester")
        assert subjects(app) == ["Fire", "Usual", "Mild"]  # amy, kim, zed
        await pilot.press("slash", *"-subject:Usual", "enter")  # a sort holds through a search
        await settle(app, pilot)
        assert subjects(app) == ["Fire", "Mild"]

    run(database, scenario)


def test_sort_headings_mark_the_column_within_its_width():
    assert "Age▼" in header_text(80)
    assert "Stat" in header_text(80, "requester") and "Requester▲" in header_text(80, "requester")
    assert "Sta▲" in header_text(80, "status") and "SLA▲" in header_text(80, "sla")
    assert len(header_text(80, "-priority")) == len(header_text(80))


def test_thread_order_toggles_and_holds_for_the_next_ticket(database, alice):
    ticket_id = new_ticket(database, alice, subject="Thread", body="first words")
    other = new_ticket(database, alice, subject="Other", body="other first", email="z@x.test")
    with database.write() as session:
        for tid, body in ((ticket_id, "second words"), (other, "other second")):
            add_message(session, get_ticket(session, tid), alice, kind="note", body=body,
                        author_agent_id=alice.agent_id)

    def thread(app) -> list[str]:
        return [str(m.content).split("\n")[1] for m in app.screen.query(".msg")]

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        assert thread(app) == ["first words", "second words"]
        await pilot.press("O")
        await pilot.pause()
        assert thread(app) == ["second words", "first words"] and "newest first" in screen_text(app)
        await pilot.press("escape")
        app.open_ticket(other)
        await settle(app, pilot)
        assert thread(app) == ["other second", "other first"]
        await pilot.press("O")
        await pilot.pause()
        assert thread(app) == ["other first", "other second"]

    run(database, scenario)


def test_digits_open_the_customers_other_tickets_and_escape_comes_back(database, alice):
    first = new_ticket(database, alice, subject="Oldest trouble")
    second = new_ticket(database, alice, subject="Middle trouble")
    current = new_ticket(database, alice, subject="Newest trouble")
    new_ticket(database, alice, subject="Someone else's", email="else@x.test")

    async def scenario(app, pilot):
        app.open_ticket(current)
        await settle(app, pilot)
        side = str(app.screen.query_one("#side-text").content)
        assert f"1 #{second} " in side and f"2 #{first} " in side and "Someone" not in side
        await pilot.press("2")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == first
        assert "Oldest trouble" in screen_text(app)
        await pilot.press("3")  # the customer has only two others from here: says so, stays
        await pilot.pause()
        assert app.screen.ticket_id == first
        assert any("no other ticket 3" in n.message for n in app._notifications)
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == current
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, QueueScreen)
        app.open_ticket(current)
        await settle(app, pilot)
        await pilot.press("ctrl+p")  # the palette offers the customer's other tickets too
        await pilot.pause()
        await pilot.press(*"Middle trouble")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == second

    run(database, scenario)


def test_the_palette_key_can_be_remapped_but_not_to_a_typing_key(database, alice):
    from textual.command import CommandPalette

    new_ticket(database, alice)
    settings = parse_settings({"console": {"keys": {"app.palette": "ctrl+k"}}})

    async def main():
        app = SupportDeskApp(database, settings, "alice", poll_seconds=30.0)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("ctrl+p")
            await pilot.pause()
            assert not CommandPalette.is_open(app)
            await pilot.press("ctrl+k")
            await pilot.pause()
            assert CommandPalette.is_open(app)
            await pilot.press("escape")
    asyncio.run(main())
    with pytest.raises(ConfigError, match="console.keys.app.palette: 'x' would be typed"):
        parse_settings({"console": {"keys": {"app.palette": "x"}}})


def test_quitting_waits_for_a_write_in_flight(database, alice, monkeypatch):
    """`q` right after `c`: the close is still being written by a worker; the console says so,
    waits, and only then ends — the ticket is closed."""
    ticket_id = new_ticket(database, alice)
    opened = gate(monkeypatch, "supportdesk.tui.screens.actions", "apply_changes")

    async def main():
        app = make_app(database)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("c", "q")
            await pilot.pause(0.3)
            assert app.is_running
            assert any("before quitting" in n.message for n in app._notifications)
            opened.set()
            for _ in range(100):
                if not app.is_running:
                    break
                await asyncio.sleep(0.05)
            assert not app.is_running
    asyncio.run(main())
    with database.read() as session:
        assert session.get(Ticket, ticket_id).status == "closed"


def test_leaving_compose_saves_the_draft_off_the_event_loop_and_quitting_keeps_it(database, alice, monkeypatch):
    ticket_id = new_ticket(database, alice)
    opened = gate(monkeypatch, "supportdesk.tui.screens.compose", "save_draft")  # the sync path, at unmount
    saved = gate(monkeypatch, "supportdesk.tui.app", "save_draft")

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "reply")
        await settle(app, pilot)
        await pilot.press(*"half a reply")
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ComposeScreen)  # back at once; the save waits in a worker
        app.open_compose(ticket_id, "reply")  # reopened before the save landed: the newest text
        await pilot.pause(0.2)
        assert isinstance(app.screen, ComposeScreen) and app.screen.body == "half a reply"
        await pilot.press("escape")
        saved.set()
        opened.set()

    run(database, scenario)
    with database.read() as session:
        assert session.execute(sa.select(Draft.kind, Draft.body)).one() == ("reply", "half a reply")


def test_a_ticket_read_that_fails_says_why_and_stays_on_the_list(database, alice):
    ticket_id = new_ticket(database, alice)
    with database.write() as session:
        update_ticket(session, ticket_id, Changes(status="closed"), alice)

    async def scenario(app, pilot):
        app.open_ticket(ticket_id + 99)
        await settle(app, pilot)
        assert isinstance(app.screen, QueueScreen)
        assert any(f"#{ticket_id + 99}" in n.message or "not found" in n.message.lower()
                   for n in app._notifications)

    run(database, scenario)


def test_no_animations_unless_asked_for(database, monkeypatch):
    monkeypatch.delenv("TEXTUAL_ANIMATIONS", raising=False)
    assert make_app(database).animation_level == "none"
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "full")
    assert make_app(database).animation_level == "full"


def test_settings_default_palette_is_ctrl_p():
    assert Settings().console_keys == {}
    from supportdesk.tui.keymap import DEFAULT_KEYS

    assert DEFAULT_KEYS["app.palette"] == "ctrl+p"


def test_priority_assign_and_move_keys_on_the_ticket_screen(database, alice, bob):
    """p, a, m (the key table's rest) change the open ticket and the screen shows the result."""
    from supportdesk.tickets import ensure_queue

    ticket_id = new_ticket(database, alice, subject="Route me")
    with database.write() as session:
        ensure_queue(session, "Billing", "billing@example.test")

    async def choose(app, pilot, key: str, value: str) -> None:
        await pilot.press(key)
        await settle(app, pilot)  # the agents and queues are read in a worker
        assert isinstance(app.screen, ChoiceModal)
        await pilot.press("home", *["down"] * app.screen.values.index(value), "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen)

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        await choose(app, pilot, "p", "urgent")
        await choose(app, pilot, "a", "bob")
        await choose(app, pilot, "m", "Billing")
        side = str(app.screen.query_one("#side-text").content)
        assert "urgent" in side and "assignee: bob" in side and "Billing" in side

    run(database, scenario)
    with database.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket.priority == "urgent" and ticket.assignee_id == bob.agent_id
        assert session.get(Queue, ticket.queue_id).name == "Billing"


def test_quiet_collections_freeze_after_start_collect_when_idle_and_restore_on_exit(database, alice, monkeypatch):
    """The console's own process: no automatic full collection while keys come; one after a
    pause; Python's settings back as they were when the console ends."""
    import gc

    from supportdesk.tui import app as app_module

    monkeypatch.setattr(app_module, "IDLE_COLLECT", 0.5)
    new_ticket(database, alice)
    before = gc.get_threshold()
    collected = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(a) or 0)

    async def main():
        app = SupportDeskApp(database, Settings(), "alice", poll_seconds=30.0, quiet_gc=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert gc.get_threshold()[2] == 1_000_000 and gc.get_freeze_count() > 0
            started = len(collected)
            for _ in range(8):  # keys keep coming: no full collection meanwhile
                await pilot.press("j")
                await pilot.pause(0.05)
            assert len(collected) == started
            await pilot.pause(1.6)  # then a pause: a collection
            assert len(collected) > started
    asyncio.run(main())
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
