"""Presence (who else has a ticket open) and the send guard (what arrived while writing)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from supportdesk import presence
from supportdesk.config import Settings
from supportdesk.mail.outbox import queue_reply
from supportdesk.models import Message, Presence, Ticket, utcnow
from supportdesk.tickets import add_message, get_ticket
from supportdesk.tui.screens.compose import ComposeScreen
from supportdesk.tui.screens.modals import ConfirmModal
from supportdesk.tui.screens.ticket import TicketScreen
from tests.test_tui import new_ticket, run, screen_text, settle, wait_for


def rows(database) -> dict[tuple[int, int], str]:
    with database.read() as session:
        return {(r.agent_id, r.ticket_id): r.activity for r in session.execute(sa.select(Presence)).scalars()}


def test_presence_upserts_ignores_stale_rows_and_forgets(database, alice, bob):
    ticket_id = new_ticket(database, alice)
    other = new_ticket(database, alice, subject="Other")
    now = utcnow()
    with database.write() as session:
        presence.mark(session, bob.agent_id, {ticket_id: "viewing", other: "viewing"}, now)
        presence.mark(session, bob.agent_id, {ticket_id: "replying"}, now)
        presence.mark(session, alice.agent_id, {ticket_id: "viewing"}, now - presence.STALE - timedelta(seconds=1))
    with database.read() as session:
        seen = presence.others(session, ticket_id, alice.agent_id, now)
        assert [(s.login, s.activity) for s in seen] == [("bob", "replying")]
        assert presence.describe(seen) == "bob is replying"
        assert presence.others(session, ticket_id, bob.agent_id, now) == []  # alice's row is stale
    with database.write() as session:
        assert presence.purge(session, now) == 1
        presence.leave(session, bob.agent_id, [other])
    assert rows(database) == {(bob.agent_id, ticket_id): "replying"}
    with database.write() as session:
        with pytest.raises(ValueError):
            presence.mark(session, bob.agent_id, {ticket_id: "typing"})
        presence.leave(session, bob.agent_id)
    assert rows(database) == {}


def test_opening_a_ticket_shows_who_else_is_on_it(database, alice, bob):
    ticket_id = new_ticket(database, alice)
    with database.write() as session:
        presence.mark(session, bob.agent_id, {ticket_id: "replying"})

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        assert "bob is replying" in screen_text(app)
        with database.write() as session:  # bob leaves; carol-less desk: the line goes within a poll
            presence.leave(session, bob.agent_id)
        assert await wait_for(pilot, lambda: "bob is" not in screen_text(app), 3.0)
        assert not app.screen.query_one("#presence").display
        with database.write() as session:
            presence.mark(session, bob.agent_id, {ticket_id: "viewing"})
        assert await wait_for(pilot, lambda: "bob is viewing" in screen_text(app), 3.0)

    run(database, scenario, poll=0.1)


def test_a_stale_presence_is_not_shown(database, alice, bob):
    ticket_id = new_ticket(database, alice)
    with database.write() as session:
        presence.mark(session, bob.agent_id, {ticket_id: "replying"}, utcnow() - timedelta(minutes=5))

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.view is not None
        assert "bob is" not in screen_text(app)

    run(database, scenario)


def test_the_console_writes_its_own_presence_and_clears_it(database, alice):
    ticket_id = new_ticket(database, alice)
    me = alice.agent_id

    async def scenario(app, pilot):
        await pilot.press("enter")
        await settle(app, pilot)
        assert rows(database) == {(me, ticket_id): "viewing"}
        await pilot.press("r")
        await settle(app, pilot)
        assert isinstance(app.screen, ComposeScreen)
        assert rows(database) == {(me, ticket_id): "replying"}
        await pilot.press("escape")
        await settle(app, pilot)
        assert rows(database) == {(me, ticket_id): "viewing"}
        await pilot.press("n")  # a note is not a reply
        await settle(app, pilot)
        assert rows(database) == {(me, ticket_id): "viewing"}
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("escape")
        await settle(app, pilot)
        assert rows(database) == {}
        await pilot.press("enter")
        await settle(app, pilot)
        assert rows(database) == {(me, ticket_id): "viewing"}
        with database.write() as session:  # the heartbeat refreshes the time
            session.execute(sa.update(Presence).values(seen_at=utcnow() - timedelta(minutes=1)))
        app.write_presence(True)
        await settle(app, pilot)
        with database.read() as session:
            assert session.execute(sa.select(Presence.seen_at)).scalar_one() > utcnow() - timedelta(seconds=30)

    run(database, scenario)
    assert rows(database) == {}  # quitting forgets it


def test_send_asks_when_the_customer_wrote_meanwhile_and_shows_it(database, alice):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "reply")
        await settle(app, pilot)
        await pilot.press(*"Try a restart")
        with database.write() as session:
            add_message(session, get_ticket(session, ticket_id), alice, kind="inbound",
                        body="\n  Never mind, [bold]it works\x1b[31m now\n", from_addr="bob@acme.test",
                        from_name="Bob Smith")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmModal)
        text = screen_text(app)
        assert "customer wrote again" in text and "Bob Smith" in text
        assert "Never mind, [bold]it works" in text and "\x1b" not in text
        await pilot.press("n")
        await settle(app, pilot)
        assert isinstance(app.screen, ComposeScreen) and app.screen.body == "Try a restart"
        with database.read() as session:
            assert session.execute(sa.select(sa.func.count()).where(Message.kind == "outbound")).scalar_one() == 0
        await pilot.press("ctrl+s")  # what arrived has been shown: no second question
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen) or not isinstance(app.screen, (ComposeScreen, ConfirmModal))

    run(database, scenario)
    with database.read() as session:
        bodies = list(session.execute(sa.select(Message.body_text).where(Message.kind == "outbound")).scalars())
    assert bodies == ["Try a restart"]


def test_send_asks_when_another_agent_replied_and_sends_on_yes(database, alice, bob):
    ticket_id = new_ticket(database, alice)
    with database.write() as session:  # alice's own earlier reply is no reason to ask
        queue_reply(session, Settings(), get_ticket(session, ticket_id), alice, "first answer")

    async def scenario(app, pilot):
        app.open_ticket(ticket_id)
        await settle(app, pilot)
        await pilot.press("r")
        await settle(app, pilot)
        await pilot.press(*"Second")
        with database.write() as session:
            queue_reply(session, Settings(), get_ticket(session, ticket_id), bob, "bob was quicker")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmModal)
        text = screen_text(app)
        assert "Another agent replied" in text and "bob" in text and "bob was quicker" in text
        await pilot.press("y")
        await settle(app, pilot)
        assert isinstance(app.screen, TicketScreen)
        assert "Second" in screen_text(app)

    run(database, scenario)
    with database.read() as session:
        bodies = list(session.execute(sa.select(Message.body_text).where(Message.kind == "outbound")
                                      .order_by(Message.id)).scalars())
        assert bodies == ["first answer", "bob was quicker", "Second"]
        assert session.get(Ticket, ticket_id).status == "pending"


def test_own_reply_or_a_note_meanwhile_sends_without_asking(database, alice, bob):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "reply")
        await settle(app, pilot)
        await pilot.press(*"ok")
        with database.write() as session:
            ticket = get_ticket(session, ticket_id)
            add_message(session, ticket, bob, kind="note", body="fyi", author_agent_id=bob.agent_id)
            queue_reply(session, Settings(), ticket, alice, "sent from the shell")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert not isinstance(app.screen, (ConfirmModal, ComposeScreen))

    run(database, scenario)
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).where(Message.kind == "outbound")).scalar_one() == 2


def test_compose_warns_live_when_the_customer_writes_and_who_else_is_here(database, alice, bob):
    ticket_id = new_ticket(database, alice)

    async def scenario(app, pilot):
        app.open_compose(ticket_id, "reply")
        await settle(app, pilot)
        assert not app.screen.query_one("#presence").display
        with database.write() as session:
            presence.mark(session, bob.agent_id, {ticket_id: "replying"})
            add_message(session, get_ticket(session, ticket_id), alice, kind="inbound", body="hello?",
                        from_addr="bob@acme.test")
        assert await wait_for(pilot, lambda: "customer wrote again" in screen_text(app), 3.0)
        assert "bob is replying" in screen_text(app)

    run(database, scenario, poll=0.1)


def test_two_consoles_see_each_other(database, alice, bob):
    """Bob's console replying and Alice's console opening the same ticket, on one database."""
    import asyncio

    from supportdesk.tui.app import SupportDeskApp
    from tests.test_tui import SIZE

    ticket_id = new_ticket(database, alice)

    async def main():
        bobs = SupportDeskApp(database, Settings(), "bob", poll_seconds=0.1)
        alices = SupportDeskApp(database, Settings(), "alice", poll_seconds=0.1)
        async with bobs.run_test(size=SIZE) as bob_pilot:
            await settle(bobs, bob_pilot)
            bobs.open_compose(ticket_id, "reply")
            await settle(bobs, bob_pilot)
            assert isinstance(bobs.screen, ComposeScreen)
            async with alices.run_test(size=SIZE) as alice_pilot:
                await settle(alices, alice_pilot)
                await alice_pilot.press("enter")
                await settle(alices, alice_pilot)
                assert "bob is replying" in screen_text(alices)
                assert await wait_for(bob_pilot, lambda: "alice is viewing" in screen_text(bobs), 3.0)
                await bob_pilot.press("escape", "escape")
                await settle(bobs, bob_pilot)
                assert await wait_for(alice_pilot, lambda: "bob is" not in screen_text(alices), 3.0)

    asyncio.run(main())


def test_queue_rows_mark_tickets_other_agents_have_open(database, alice, bob):
    """○ someone is viewing, ✎ someone is replying — in the table, following presence live."""
    from supportdesk.tui.widgets.ticket_table import TicketTable

    replied = new_ticket(database, alice, subject="Being answered")
    viewed = new_ticket(database, alice, subject="Being read")
    quiet = new_ticket(database, alice, subject="Nobody here")

    def marks(app) -> dict[str, str]:
        table = app.screen.query_one(TicketTable)
        rows = [table.pager.cached(i) for i in range(table.pager.total)]
        return {row.subject: table.render_line(i).text[0] for i, row in enumerate(rows)}

    async def scenario(app, pilot):
        with database.write() as session:
            presence.mark(session, bob.agent_id, {replied: "replying", viewed: "viewing"})
            presence.mark(session, alice.agent_id, {quiet: "viewing"})  # her own presence is not marked
        assert await wait_for(pilot, lambda: marks(app).get("Being answered") == "✎", 3.0)
        assert marks(app) == {"Being answered": "✎", "Being read": "○", "Nobody here": " "}
        with database.write() as session:
            presence.leave(session, bob.agent_id)
        assert await wait_for(pilot, lambda: set(marks(app).values()) == {" "}, 3.0)

    run(database, scenario, poll=0.1)
