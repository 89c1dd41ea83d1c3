"""Agents and identity: who you are is your login; admins manage; limited agents see only their queues."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from supportdesk.cli.main import app as cli_app
from supportdesk.config import Settings
from supportdesk.listing import count, ticket_ids
from supportdesk.models import AgentQueue, Event, Message, Outbox, Ticket
from supportdesk.permissions import set_agent_queues
from supportdesk.query import QueryContext
from supportdesk.tickets import Changes, ForbiddenError, bulk_update, create_ticket, resolve_actor
from supportdesk.tui.app import SupportDeskApp
from supportdesk.tui.data import load_ticket
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.widgets.sidebar import Sidebar
from supportdesk.tui.widgets.ticket_table import TicketTable
from tests.checks import one_line_error

NOT_AGENT = "you are not a supportdesk agent (login {0}); ask an admin to run `supportdesk agents add {0}`"


@pytest.fixture
def as_login(cli_env, monkeypatch):
    """Run the CLI as if the process belonged to LOGIN, with `--as` no longer waved through."""
    monkeypatch.delenv("SUPPORTDESK_ALLOW_AS", raising=False)
    runner = CliRunner()

    def invoke(login: str, *args: str, input: str | None = None):
        monkeypatch.setattr(getpass, "getuser", lambda: login)
        return runner.invoke(cli_app, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def tickets(database, alice):
    """#1, #2 in General and #3 in Billing, all new."""
    with database.write() as session:
        ids = [create_ticket(session, alice, requester_email=f"c{i}@acme.test", subject=f"Ticket {i}", body="Hi",
                             queue=queue).id
               for i, queue in enumerate(("General", "General", "Billing"), 1)]
    return ids


@pytest.fixture
def bob_in_billing(database, tickets):
    with database.write() as session:
        set_agent_queues(session, "bob", ["Billing"])
    return tickets


def snapshot(database) -> dict:
    with database.read() as session:
        return {
            "tickets": session.execute(sa.select(Ticket.id, Ticket.status, Ticket.queue_id, Ticket.version)
                                       .order_by(Ticket.id)).all(),
            "events": session.execute(sa.select(sa.func.count()).select_from(Event)).scalar(),
            "messages": session.execute(sa.select(sa.func.count()).select_from(Message)).scalar(),
            "outbox": session.execute(sa.select(sa.func.count()).select_from(Outbox)).scalar(),
        }


# --- who you are ------------------------------------------------------------------------------

def test_unknown_login_is_told_to_ask_an_admin_for_every_command(as_login, tickets):
    for args in (("tickets", "list"), ("tickets", "show", "1"), ("agents", "list"), ("queues", "list"),
                 ("tickets", "create", "--from", "a@b.test", "--subject", "x"), ()):
        one_line_error(as_login("zoe", *args), 2, NOT_AGENT.format("zoe"))


def test_set_up_and_help_need_no_agent(as_login):
    assert as_login("zoe", "--help").exit_code == 0
    assert as_login("zoe", "tickets", "list", "--help").exit_code == 0
    assert as_login("zoe", "doctor").exit_code == 0
    assert as_login("zoe", "db", "upgrade").exit_code == 0


def test_disabled_agent_is_refused_even_for_reading(as_login, tickets):
    assert as_login("alice", "agents", "disable", "bob").exit_code == 0
    one_line_error(as_login("bob", "tickets", "list"), 2, "agent bob is disabled; ask an admin")


def test_login_name_is_the_identity_without_as(as_login, database, tickets):
    result = as_login("bob", "tickets", "update", "1", "--status", "open", "--yes")
    assert result.exit_code == 0, result.output
    with database.read() as session:
        actor = session.execute(sa.select(Event.actor).where(Event.field == "status")).scalar_one()
    assert actor == "bob"


def test_as_is_refused_for_a_plain_agent(as_login, database, tickets):
    before = snapshot(database)
    one_line_error(as_login("bob", "--as", "alice", "tickets", "list"), 2,
                   "--as alice: only admins may act as another agent (you are bob)")
    one_line_error(as_login("bob", "--as", "alice", "tickets", "close", "1", "--yes"), 2, "only admins")
    assert snapshot(database) == before
    assert as_login("bob", "--as", "bob", "tickets", "list", "--format", "ids").exit_code == 0


def test_as_is_honoured_for_an_admin(as_login, database, tickets):
    result = as_login("alice", "--as", "bob", "tickets", "update", "2", "--status", "open", "--yes")
    assert result.exit_code == 0, result.output
    with database.read() as session:
        assert session.execute(sa.select(Event.actor).where(Event.field == "status")).scalar_one() == "bob"


def test_as_for_a_non_agent_login_names_the_real_login(as_login, tickets):
    one_line_error(as_login("zoe", "--as", "alice", "tickets", "list"), 2, "(you are zoe)")


@pytest.mark.integration
def test_real_command_refuses_an_unknown_login(cli_env, tickets):
    """The installed command, run by whoever runs the tests (not an agent of the fixture database)."""
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    if me in ("alice", "bob"):
        pytest.skip("the test user is one of the fixture's agents")
    env = dict(os.environ, **cli_env)
    env.pop("SUPPORTDESK_ALLOW_AS")
    exe = str(Path(sys.executable).parent / "supportdesk")
    result = subprocess.run([exe, "tickets", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"supportdesk: error: {NOT_AGENT.format(me)}\n"
    refused = subprocess.run([exe, "--as", "alice", "tickets", "list"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "only admins may act as another agent" in refused.stderr


# --- admins manage ------------------------------------------------------------------------------

ADMIN_ONLY = [
    ("agents", "add", "carol"),
    ("agents", "disable", "alice"),
    ("agents", "role", "bob", "admin"),
    ("agents", "queues", "bob", "--all"),
    ("agents", "queues", "alice", "--set", "Billing"),
    ("agents", "signature", "alice", "--file", "-"),
    ("queues", "add", "Sales"),
    ("queues", "signature", "General", "--file", "-"),
    ("tickets", "import", "-"),
]


@pytest.mark.parametrize("args", ADMIN_ONLY, ids=lambda a: " ".join(a[:2]))
def test_admin_commands_refuse_agents(as_login, database, args):
    with database.read() as session:
        before = (session.execute(sa.text("SELECT login, role, active, signature FROM agents ORDER BY id")).all(),
                  session.execute(sa.text("SELECT name, signature FROM queues ORDER BY id")).all(),
                  session.execute(sa.select(sa.func.count()).select_from(AgentQueue)).scalar())
    result = as_login("bob", *args, input="x\n")
    one_line_error(result, 2, "is for admins; bob is an agent")
    with database.read() as session:
        after = (session.execute(sa.text("SELECT login, role, active, signature FROM agents ORDER BY id")).all(),
                 session.execute(sa.text("SELECT name, signature FROM queues ORDER BY id")).all(),
                 session.execute(sa.select(sa.func.count()).select_from(AgentQueue)).scalar())
    assert after == before


def test_admin_manages_agents_roles_and_queues(as_login):
    assert as_login("alice", "agents", "add", "carol").exit_code == 0
    assert as_login("alice", "agents", "role", "carol", "admin").exit_code == 0
    assert as_login("carol", "queues", "add", "Sales").exit_code == 0
    assert as_login("bob", "agents", "signature", "bob", "--file", "-", input="Bob\n").exit_code == 0
    listed = {a["login"]: a for a in json.loads(as_login("bob", "agents", "list", "--format", "json").output)}
    assert listed["carol"]["role"] == "admin" and listed["bob"]["queues"] is None


def test_the_last_admin_cannot_be_disabled_or_demoted(as_login):
    one_line_error(as_login("alice", "agents", "disable", "alice"), 2, "alice is the last admin")
    one_line_error(as_login("alice", "agents", "role", "alice", "agent"), 2, "alice is the last admin")


# --- agents limited to some queues -----------------------------------------------------------

def test_agent_queues_are_set_shown_and_lifted(as_login, tickets):
    result = as_login("alice", "agents", "queues", "bob", "--set", "billing")
    assert result.exit_code == 0 and "Billing" in result.output
    assert as_login("bob", "agents", "queues", "bob").output.strip() == "bob: Billing"
    table = as_login("bob", "agents", "list").output
    assert any(line.startswith("bob\t") and "\tBilling\t" in line for line in table.splitlines()), table
    one_line_error(as_login("alice", "agents", "queues", "bob", "--set", "Nowhere"), 2, "unknown queue 'Nowhere'")
    assert as_login("alice", "agents", "queues", "bob", "--all").exit_code == 0
    assert as_login("bob", "agents", "queues", "bob").output.strip() == "bob: all queues"


def test_limited_agent_lists_and_counts_only_their_queues(as_login, bob_in_billing):
    general1, general2, billing = bob_in_billing
    assert as_login("bob", "tickets", "list", "--format", "ids").output.split() == [str(billing)]
    assert as_login("bob", "tickets", "list", "queue:General").exit_code == 3
    exported = as_login("bob", "tickets", "export").output.splitlines()
    assert [json.loads(line)["id"] for line in exported] == [billing]
    queues = as_login("bob", "queues", "list", "--format", "json").output
    assert [q["name"] for q in json.loads(queues)] == ["Billing"]
    everything = as_login("alice", "tickets", "list", "--format", "ids").output.split()
    assert sorted(everything) == sorted(str(i) for i in bob_in_billing)


def test_limited_agent_cannot_show_or_change_other_queues_tickets(as_login, database, bob_in_billing):
    general1, _, billing = bob_in_billing
    before = snapshot(database)
    one_line_error(as_login("bob", "tickets", "show", str(general1)), 2, f"ticket #{general1} is not in your queues")
    one_line_error(as_login("bob", "tickets", "update", str(general1), "--status", "open", "--yes"), 2,
                   f"ticket #{general1} is not in your queues")
    one_line_error(as_login("bob", "tickets", "reply", str(general1), "--body-file", "-", input="Hello\n"), 2,
                   "not in your queues")
    one_line_error(as_login("bob", "tickets", "note", str(general1), "--body-file", "-", input="Hm\n"), 2,
                   "not in your queues")
    one_line_error(as_login("bob", "tickets", "merge", str(billing), str(general1)), 2, "not in your queues")
    one_line_error(as_login("bob", "tickets", "update", str(billing), "--queue", "General", "--yes"), 2,
                   "queue 'General' is not one of your queues")
    one_line_error(as_login("bob", "tickets", "create", "--from", "x@y.test", "--subject", "s", "--queue", "General"),
                   2, "queue 'General' is not one of your queues")
    assert snapshot(database) == before


def test_bulk_change_with_one_forbidden_id_changes_nothing(as_login, database, bob_in_billing):
    general1, _, billing = bob_in_billing
    before = snapshot(database)
    for args in (("tickets", "update", str(billing), str(general1), "--status", "pending", "--yes"),
                 ("tickets", "close", str(billing), str(general1), "--reply-file", "-", "--yes"),
                 ("tickets", "close", str(billing), str(general1), "--dry-run")):
        one_line_error(as_login("bob", *args, input="Bye\n"), 2, f"ticket #{general1} is not in your queues")
    assert snapshot(database) == before
    piped = as_login("bob", "tickets", "close", "-", "--yes", input=f"{general1}\n{billing}\n")
    one_line_error(piped, 2, "not in your queues")
    assert snapshot(database) == before


def test_limited_agent_query_bulk_touches_only_their_queues(as_login, database, bob_in_billing):
    result = as_login("bob", "tickets", "close", "--query", "status:new", "--yes")
    assert result.exit_code == 0 and "Closed 1 ticket(s)" in result.output
    with database.read() as session:
        assert dict(session.execute(sa.select(Ticket.id, Ticket.status)).all()) == {
            1: "new", 2: "new", 3: "closed"}


def test_services_refuse_outside_queues_whatever_the_face(database, bob_in_billing):
    general1, _, billing = bob_in_billing
    with database.read() as session:
        bob = resolve_actor(session, "bob")
    assert bob.queue_ids is not None and len(bob.queue_ids) == 1
    with pytest.raises(ForbiddenError, match=f"ticket #{general1} is not in your queues"):
        with database.write() as session:
            bulk_update(session, [billing, general1], Changes(status="open"), bob)
    with database.read() as session:
        assert session.execute(sa.select(Ticket.status).where(Ticket.id == billing)).scalar() == "new"
        ctx = QueryContext(me="bob", queue_ids=bob.queue_ids)
        assert count(session, "", ctx) == 1
        assert ticket_ids(session, "status:new", ctx) == [billing]
    with pytest.raises(ForbiddenError):
        load_ticket(database, general1, queue_ids=bob.queue_ids)
    assert load_ticket(database, billing, queue_ids=bob.queue_ids).detail["queue"] == "Billing"


def test_console_of_a_limited_agent_shows_only_their_queues(database, bob_in_billing):
    general1, _, billing = bob_in_billing

    async def main():
        app = SupportDeskApp(database, Settings(), "bob", poll_seconds=30.0)
        async with app.run_test(size=(100, 30)) as pilot:
            sidebar = app.screen.query_one(Sidebar)
            table = app.screen.query_one(TicketTable)

            def rows() -> list[str]:
                return [table.render_line(y).text for y in range(table.size.height)]

            for _ in range(200):
                await pilot.pause(0.05)
                if sidebar.counts.get("All") is not None and any("Ticket" in r for r in rows()):
                    break
            counts = dict(sidebar.counts)
            queue_views = [v.name for v in sidebar.views if v.kind == "queue"]
            listed = rows()
            app.open_ticket(general1)  # e.g. from the palette: refused with a notice, back on the queue
            for _ in range(100):
                await pilot.pause(0.05)
                if isinstance(app.screen, QueueScreen) and app._notifications:
                    break
            notices = [n.message for n in app._notifications]
            return counts, queue_views, table.pager.total, listed, type(app.screen), notices

    counts, queue_views, total, rows, screen, notices = asyncio.run(main())
    assert screen is QueueScreen and any(f"ticket #{general1} is not in your queues" in n for n in notices)
    assert queue_views == ["Billing"]
    assert counts["All"] == 1 and counts["Unassigned"] == 1 and counts["Billing"] == 1
    assert total == 1
    text = "\n".join(rows)
    assert "Ticket 3" in text and "Ticket 1" not in text and "Ticket 2" not in text


def test_limited_agent_sla_check_lists_only_their_queues(as_login, database, bob_in_billing):
    from datetime import timedelta

    from supportdesk.models import utcnow

    due = utcnow() + timedelta(minutes=20)
    with database.write() as session:
        session.execute(sa.update(Ticket).values(resolution_due=due))
    listed = as_login("bob", "sla", "check", "--within", "1h", "--format", "ids", "--dry-run")
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == [str(bob_in_billing[2])]
    everything = as_login("alice", "sla", "check", "--within", "1h", "--format", "ids", "--dry-run").output.split()
    assert sorted(everything) == sorted(str(i) for i in bob_in_billing)


def test_a_running_console_follows_a_change_of_the_agents_queues(database, tickets):
    """An admin limits bob while his console runs: within a poll his list, counts and the
    ticket he has open follow (the ticket closes with the reason); lifting the limit shows all again."""
    from tests.test_tui import settle, wait_for
    from supportdesk.tui.screens.ticket import TicketScreen

    general1, _, billing = tickets

    async def main():
        app = SupportDeskApp(database, Settings(), "bob", poll_seconds=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            table = app.screen.query_one(TicketTable)
            sidebar = app.screen.query_one(Sidebar)
            assert table.pager.total == 3
            app.open_ticket(general1)
            await settle(app, pilot)
            assert isinstance(app.screen, TicketScreen)
            with database.write() as session:
                set_agent_queues(session, "bob", ["Billing"])
            assert await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen), 3.0)
            def noticed(text: str) -> bool:
                return any(text in n.message for n in app._notifications)

            assert await wait_for(pilot, lambda: noticed("queues were changed"))
            assert await wait_for(pilot, lambda: noticed(f"ticket #{general1} is not in your queues"))
            assert await wait_for(pilot, lambda: table.pager.total == 1, 3.0)
            assert await wait_for(pilot, lambda: [v.name for v in sidebar.views if v.kind == "queue"] == ["Billing"])
            assert await wait_for(pilot, lambda: sidebar.counts.get("All") == 1)
            with database.write() as session:
                set_agent_queues(session, "bob", None)
            assert await wait_for(pilot, lambda: table.pager.total == 3, 3.0)
            assert app.queue_ids is None

    asyncio.run(main())
