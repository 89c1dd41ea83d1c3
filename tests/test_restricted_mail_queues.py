"""Agents limited to some queues see and act on only their queues' outbox and quarantine;
quarantined mail of no known queue is for admins (and agents who work every queue);
`sla recompute` is for admins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from supportdesk.config import load_settings
from supportdesk.mail.delivery import cancel, list_outbox, retry
from supportdesk.mail.intake import ingest_bytes, quarantined, raw_bytes, release_quarantined, retry_quarantined
from supportdesk.models import Agent, Outbox, RawMessage, Ticket
from supportdesk.permissions import set_agent_queues
from supportdesk.tickets import ForbiddenError, add_agent, create_ticket, resolve_actor
from tests.checks import one_line_error

TWO_MAILBOXES = (
    '[[mailbox]]\nname = "support"\naddress = "support@example.test"\nqueue = "General"\n'
    '[[mailbox]]\nname = "billing"\naddress = "billing@example.test"\nqueue = "Billing"\n'
    '[tickets]\nsubject_tag = "Support"\n'
)


@pytest.fixture
def settings(cli_env):
    """The CLI's config with a second mailbox filing into Billing."""
    Path(cli_env["SUPPORTDESK_CONFIG"]).write_text(TWO_MAILBOXES, encoding="utf-8")
    return load_settings(cli_env["SUPPORTDESK_CONFIG"])


@pytest.fixture
def desk(database, alice, settings):
    """A General and a Billing ticket, each with a queued reply; bob limited to Billing; dave works every queue."""
    with database.write() as session:
        general = create_ticket(session, alice, requester_email="g@acme.test", subject="General one", body="Hi").id
        billing = create_ticket(session, alice, requester_email="b@acme.test", subject="Billing one", body="Hi",
                                queue="Billing").id
        add_agent(session, "dave")
        set_agent_queues(session, "bob", ["Billing"])
    return {"general": general, "billing": billing}


def reply(cli, ticket_id: int) -> int:
    result = cli("tickets", "reply", str(ticket_id), "--body-file", "-", input="Thanks\n")
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("outbox", "list", "--format", "json").output)
    return max(r["id"] for r in rows if r["ticket_id"] == ticket_id)


def outbox_states(database) -> dict[int, str]:
    with database.read() as session:
        return dict(session.execute(sa.select(Outbox.id, Outbox.status)).all())


def raw_states(database) -> dict[int, str]:
    with database.read() as session:
        return dict(session.execute(sa.select(RawMessage.id, RawMessage.state)).all())


# --- outbox ----------------------------------------------------------------------------------

def test_limited_agent_lists_only_their_queues_outbox(cli, desk):
    general = reply(cli, desk["general"])
    assert cli("outbox", "list", "--format", "json", as_agent="bob").exit_code == 3  # nothing of Billing yet
    billing = reply(cli, desk["billing"])
    mine = json.loads(cli("outbox", "list", "--format", "json", as_agent="bob").output)
    assert [r["id"] for r in mine] == [billing]
    everyone = json.loads(cli("outbox", "list", "--format", "json", as_agent="dave").output)
    assert sorted(r["id"] for r in everyone) == sorted([general, billing])


def test_limited_agent_cancels_and_retries_only_their_queues_mail(cli, database, desk):
    general, billing = reply(cli, desk["general"]), reply(cli, desk["billing"])
    before = outbox_states(database)
    one_line_error(cli("outbox", "cancel", str(billing), str(general), as_agent="bob"), 2,
                   f"outbox #{general} (ticket #{desk['general']}) is not in your queues (nothing changed)")
    assert outbox_states(database) == before
    assert cli("outbox", "cancel", str(billing), as_agent="bob").exit_code == 0
    assert cli("outbox", "cancel", str(general), as_agent="alice").exit_code == 0
    assert outbox_states(database) == {general: "cancelled", billing: "cancelled"}
    one_line_error(cli("outbox", "retry", str(general), as_agent="bob"), 2, "not in your queues")
    assert outbox_states(database) == {general: "cancelled", billing: "cancelled"}
    result = cli("outbox", "retry", str(billing), as_agent="bob")
    assert result.exit_code == 0, result.output
    assert outbox_states(database) == {general: "cancelled", billing: "queued"}
    assert cli("outbox", "retry", str(general), as_agent="dave").exit_code == 0  # every queue, not an admin


def test_outbox_services_refuse_outside_queues_whatever_the_face(cli, database, desk):
    general, billing = reply(cli, desk["general"]), reply(cli, desk["billing"])
    with database.read() as session:
        bob = resolve_actor(session, "bob")
        assert [r["id"] for r in list_outbox(session, queue_ids=bob.queue_ids)] == [billing]
    with pytest.raises(ForbiddenError, match="not in your queues"):
        cancel(database, [general], bob)
    assert cancel(database, [billing], bob) == [billing]
    with pytest.raises(ForbiddenError):
        retry(database, [general, billing], bob)
    assert outbox_states(database) == {general: "queued", billing: "cancelled"}


# --- quarantine ------------------------------------------------------------------------------

@pytest.fixture
def quarantine(database, settings, desk):
    """One unreadable message per mailbox, and one from a mailbox no longer in the config."""
    ids = {}
    for box in ("support", "billing", "retired"):
        raw_id, report = ingest_bytes(database, settings, b"\x00\x01 not mail at all \xff " + box.encode(), box)
        assert report.quarantined == [raw_id]
        ids[box] = raw_id
    return ids


def listed(cli, login: str) -> list[int]:
    result = cli("quarantine", "list", "--format", "json", as_agent=login)
    assert result.exit_code in (0, 3), result.output
    return [row["id"] for row in json.loads(result.output or "[]")] if result.exit_code == 0 else []


def test_limited_agent_lists_and_shows_only_their_queues_quarantine(cli, database, quarantine):
    assert listed(cli, "bob") == [quarantine["billing"]]
    assert listed(cli, "dave") == sorted(quarantine.values())  # every queue: everything, as before
    assert listed(cli, "alice") == sorted(quarantine.values())
    with database.write() as session:
        set_agent_queues(session, "alice", ["General"])  # a limited admin still gets the mail of no queue
    assert listed(cli, "alice") == [quarantine["support"], quarantine["retired"]]

    shown = cli("quarantine", "show", str(quarantine["billing"]), "--raw", as_agent="bob")
    assert shown.exit_code == 0 and "not mail at all" in shown.output
    one_line_error(cli("quarantine", "show", str(quarantine["support"]), as_agent="bob"), 2,
                   f"raw message #{quarantine['support']} is not in your queues (General)")
    one_line_error(cli("quarantine", "show", str(quarantine["retired"]), "--raw", as_agent="bob"), 2,
                   f"raw message #{quarantine['retired']} has no known queue (mailbox retired): for admins")


def test_limited_agent_retries_and_releases_only_their_queues_quarantine(cli, database, quarantine):
    before = raw_states(database)
    one_line_error(cli("quarantine", "release", str(quarantine["billing"]), str(quarantine["support"]),
                       as_agent="bob"), 2, "is not in your queues (General) (nothing changed)")
    one_line_error(cli("quarantine", "retry", str(quarantine["retired"]), as_agent="bob"), 2,
                   "has no known queue (mailbox retired): for admins")
    assert raw_states(database) == before

    assert cli("quarantine", "retry", str(quarantine["billing"]), as_agent="bob").exit_code == 0
    released = cli("quarantine", "release", str(quarantine["billing"]), as_agent="bob")
    assert released.exit_code == 0, released.output
    with database.read() as session:
        queue = session.execute(sa.text(
            "SELECT q.name FROM tickets t JOIN queues q ON q.id = t.queue_id ORDER BY t.id DESC LIMIT 1")).scalar()
    assert queue == "Billing"
    # once filed, a raw message belongs to its ticket's queue
    assert cli("quarantine", "show", str(quarantine["billing"]), "--raw", as_agent="bob").exit_code == 0
    assert cli("quarantine", "release", str(quarantine["retired"]), as_agent="dave").exit_code == 0
    one_line_error(cli("quarantine", "show", str(quarantine["retired"]), as_agent="bob"), 2,
                   f"raw message #{quarantine['retired']} is filed outside your queues")


def test_quarantine_services_refuse_outside_queues_whatever_the_face(database, settings, quarantine):
    with database.read() as session:
        bob = resolve_actor(session, "bob")
        assert [r["id"] for r in quarantined(session, settings, bob)] == [quarantine["billing"]]
        with pytest.raises(ForbiddenError):
            raw_bytes(session, quarantine["support"], settings, bob)
    before = raw_states(database)
    with pytest.raises(ForbiddenError):
        release_quarantined(database, settings, [quarantine["support"]], bob)
    with pytest.raises(ForbiddenError):
        retry_quarantined(database, settings, [quarantine["retired"]], bob)
    assert raw_states(database) == before


# --- sla recompute -----------------------------------------------------------------------------

def test_sla_recompute_is_for_admins(cli, database, desk):
    with database.read() as session:
        before = session.execute(sa.select(Ticket.id, Ticket.version, Ticket.resolution_due)).all()
    one_line_error(cli("sla", "recompute", as_agent="dave"), 2, "sla recompute is for admins; dave is an agent")
    one_line_error(cli("sla", "recompute", as_agent="bob"), 2, "sla recompute is for admins; bob is an agent")
    with database.read() as session:
        assert session.execute(sa.select(Ticket.id, Ticket.version, Ticket.resolution_due)).all() == before
        assert session.execute(sa.select(Agent.role).where(Agent.login == "alice")).scalar() == "admin"
    result = cli("sla", "recompute", as_agent="alice")
    assert result.exit_code == 0 and "Recomputed 2 ticket(s)" in result.output, result.output


def test_the_consoles_quarantine_list_and_count_follow_the_same_rule(database, settings, quarantine):
    """bob (Billing only) sees and counts only Billing's quarantined mail in the console too."""
    import asyncio

    from supportdesk.tui.app import SupportDeskApp
    from supportdesk.tui.screens.modals import QuarantineModal
    from supportdesk.tui.widgets.sidebar import Sidebar
    from tests.test_tui import settle

    async def main() -> tuple[int | None, list[int]]:
        app = SupportDeskApp(database, settings, "bob", poll_seconds=30.0)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            count = app.screen.query_one(Sidebar).counts.get("Quarantine")
            app.push_screen(QuarantineModal())
            await settle(app, pilot)
            return count, [row[0] for row in app.screen.rows]

    assert asyncio.run(main()) == (1, [quarantine["billing"]])
