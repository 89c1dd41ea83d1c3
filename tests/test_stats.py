"""Today's numbers (`supportdesk.stats`, `supportdesk stats`): local midnight, queue limits, JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from supportdesk.models import MailboxState, Outbox, Ticket, TicketSlaTarget
from supportdesk.permissions import set_agent_queues, visible_queue_ids
from supportdesk.stats import day_bounds, minutes_text, today_stats
from supportdesk.tickets import add_message, create_ticket, get_ticket

NY = ZoneInfo("America/New_York")  # UTC-5 in January
NOW = datetime(2026, 1, 16, 3, 0, tzinfo=timezone.utc)  # 22:00 on Thursday 15 January in New York


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=timezone.utc)


def set_ticket(database, ticket_id: int, **values) -> None:
    with database.write() as session:
        session.execute(sa.update(Ticket.__table__).where(Ticket.__table__.c.id == ticket_id).values(**values))


@pytest.fixture
def desk(database, alice):
    """Tickets and messages at chosen instants around New York's midnight (05:00 UTC)."""
    ids = {}
    with database.write() as session:
        def new(name, at, queue="General", email="c@acme.test"):
            ids[name] = create_ticket(session, alice, requester_email=email, subject=name, body="Hi",
                                      queue=queue, created_at=at).id

        new("late_utc_today", utc(16, 1))  # 20:00 local on the 15th: today, though the 16th in UTC
        new("at_midnight", utc(15, 5))  # 00:00 local: today
        new("before_midnight", utc(15, 4, 59))  # 23:59 local on the 14th: yesterday
        new("billing_today", utc(15, 12), queue="Billing", email="d@acme.test")
        new("old", utc(10, 9))
        new("old_billing", utc(10, 9), queue="Billing", email="d@acme.test")
        late = get_ticket(session, ids["late_utc_today"])
        add_message(session, late, alice, kind="outbound", body="On it", created_at=utc(16, 2))
        add_message(session, late, alice, kind="outbound", body="auto", auto=True, created_at=utc(16, 2))
        before = get_ticket(session, ids["before_midnight"])
        add_message(session, before, alice, kind="outbound", body="Yesterday's reply", created_at=utc(15, 4, 59))
        old = get_ticket(session, ids["old"])
        add_message(session, old, alice, kind="inbound", body="Any news?", created_at=utc(15, 6))
        agents = {r.login: r.id for r in session.execute(sa.text("SELECT id, login FROM agents"))}
    # solved today (local), closed yesterday (local), both through the same columns the services set
    set_ticket(database, ids["at_midnight"], status="solved", solved_at=utc(15, 6), updated_at=utc(15, 6))
    set_ticket(database, ids["before_midnight"], status="closed", solved_at=utc(15, 4, 59),
               closed_at=utc(15, 4, 59), updated_at=utc(15, 4, 59))
    set_ticket(database, ids["old"], status="open", assignee_id=agents["alice"], first_response_due=utc(16, 2))
    set_ticket(database, ids["late_utc_today"], status="open", assignee_id=agents["bob"],
               resolution_due=utc(16, 3, 30))
    set_ticket(database, ids["old_billing"], status="pending", assignee_id=agents["bob"])
    with database.write() as session:
        session.add(TicketSlaTarget(ticket_id=ids["late_utc_today"], target="first_response", cycle=0, policy="p",
                                    state="met", target_minutes=60, business_minutes=30, started_at=utc(16, 1),
                                    met_at=utc(16, 2)))
        session.add(TicketSlaTarget(ticket_id=ids["before_midnight"], target="first_response", cycle=0,
                                    policy="p", state="met", target_minutes=60, business_minutes=5,
                                    started_at=utc(15, 4, 59), met_at=utc(15, 4, 59)))
        session.add(MailboxState(mailbox="support", last_fetch_at=utc(16, 2, 55)))
    return ids


def test_day_bounds_are_local_midnights():
    assert day_bounds(NOW, NY) == (utc(15, 5), utc(16, 5))
    assert day_bounds(NOW, timezone.utc) == (utc(16, 0), utc(17, 0))


def test_todays_numbers_in_the_agents_zone(database, desk):
    with database.read() as session:
        stats = today_stats(session, tz=NY, now=NOW)
    assert (stats.day, stats.tz) == ("2026-01-15", "America/New_York")
    assert stats.created == 3  # late_utc_today, at_midnight, billing_today
    assert (stats.solved, stats.closed) == (1, 0)
    assert stats.replies == 1  # the automatic one and yesterday's do not count
    assert stats.inbound == 4  # three new tickets' first messages and the follow-up on `old`
    assert stats.backlog == {"new": 1, "open": 2, "pending": 1, "on_hold": 0}
    assert stats.open_total == 4
    assert stats.unassigned == 1  # billing_today
    assert (stats.breached, stats.due_soon) == (1, 1)  # old (due 02:00), late_utc_today (due 03:30)
    assert stats.first_responses == 1
    assert (stats.first_response_business_minutes, stats.first_response_wall_minutes) == (30, 60)
    assert [(a.login, a.open, a.assigned) for a in stats.agents] == [("alice", 1, 1), ("bob", 1, 2)]
    assert [(b.name, b.ok) for b in stats.mail.mailboxes] == [("support", True)]

    with database.read() as session:  # the same instant is another day in UTC
        in_utc = today_stats(session, tz=timezone.utc, now=NOW)
    assert in_utc.day == "2026-01-16"
    assert (in_utc.created, in_utc.solved, in_utc.replies, in_utc.first_responses) == (1, 0, 1, 1)


def test_a_restricted_agent_sees_only_their_queues(database, desk):
    with database.write() as session:
        set_agent_queues(session, "bob", ["Billing"])
        ticket = session.get(Ticket, desk["billing_today"])
        message = add_message(session, ticket, get_actor(session, "alice"), kind="outbound", body="Hi",
                              created_at=utc(15, 13))
        session.add(Outbox(ticket_id=ticket.id, message_id=message.id, status="queued"))
        general = session.get(Ticket, desk["late_utc_today"])
        other = add_message(session, general, get_actor(session, "alice"), kind="outbound", body="x",
                            created_at=utc(16, 2, 30))
        session.add(Outbox(ticket_id=general.id, message_id=other.id, status="dead"))
    with database.read() as session:
        queue_ids = visible_queue_ids(session, "bob")
        limited = today_stats(session, tz=NY, now=NOW, queue_ids=queue_ids)
        everyone = today_stats(session, tz=NY, now=NOW)
    assert limited.created == 1 and limited.inbound == 1 and limited.replies == 1
    assert limited.backlog == {"new": 1, "open": 0, "pending": 1, "on_hold": 0}
    assert (limited.solved, limited.breached, limited.due_soon, limited.first_responses) == (0, 0, 0, 0)
    assert [(a.login, a.open, a.assigned) for a in limited.agents] == [("bob", 0, 1)]
    assert (limited.mail.outbox, limited.mail.dead) == (1, 0)
    assert (everyone.mail.outbox, everyone.mail.dead) == (1, 1)
    assert everyone.replies == 3


def get_actor(session, login):
    from supportdesk.tickets import resolve_actor

    return resolve_actor(session, login)


def test_minutes_text():
    assert [minutes_text(v) for v in (None, 42.4, 135, 1500)] == ["—", "42m", "2h15m", "1d1h"]


def test_cli_stats_json_and_table(cli, database, alice):
    with database.write() as session:
        set_agent_queues(session, "bob", ["Billing"])
        create_ticket(session, alice, requester_email="c@acme.test", subject="Now", body="Hi")
    result = cli("stats", "--format", "json", "--tz", "UTC")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["created"] == 1 and data["backlog"]["new"] == 1 and data["open_total"] == 1
    assert data["unassigned"] == 1 and data["tz"] == "UTC"
    assert data["start"].endswith("T00:00:00Z")
    assert set(data["mail"]) == {"mailboxes", "outbox", "dead"}
    restricted = json.loads(cli("stats", "--format", "json", "--tz", "UTC", as_agent="bob").stdout)
    assert restricted["created"] == 0 and restricted["open_total"] == 0
    table = cli("stats")
    assert table.exit_code == 0 and "Created today" in table.stdout and "Open backlog" in table.stdout
    bad = cli("stats", "--tz", "Mars/Olympus")
    assert bad.exit_code == 2 and "unknown time zone" in bad.stderr


@pytest.mark.sqlite_only
def test_per_agent_counts_read_only_the_queue_status_assignee_index(database, alice):
    """The grouped count behind backlog, unassigned and per-agent load: the same numbers limited
    to every queue as for everyone, and, once analysed, read from index 0006 without a table row
    (through the rows it took 2.1 s at 1,000,000 tickets for an agent limited to two queues)."""
    from sqlalchemy import event

    with database.write() as session:
        create_ticket(session, alice, requester_email="c@acme.test", subject="seed", body="Hi")
        columns = [c.name for c in Ticket.__table__.c if c.name != "id"]
        varied = {"queue_id": "1 + n.i % 2", "status": "CASE n.i % 5 WHEN 0 THEN 'new' WHEN 1 THEN 'open' "
                  "WHEN 2 THEN 'pending' WHEN 3 THEN 'solved' ELSE 'closed' END",
                  "assignee_id": "CASE n.i % 3 WHEN 0 THEN NULL ELSE n.i % 3 END"}
        session.execute(sa.text(
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
            f"INSERT INTO tickets ({', '.join(columns)}) "
            f"SELECT {', '.join(varied.get(c, 't.' + c) for c in columns)} FROM tickets t, n"))
        all_queues = frozenset(session.execute(sa.text("SELECT id FROM queues")).scalars())
    database.analyze()
    statements = []
    event.listen(database.engine, "before_cursor_execute", lambda *a: statements.append((a[2], a[3])))
    with database.read() as session:
        everyone = today_stats(session, now=NOW)
        limited = today_stats(session, now=NOW, queue_ids=all_queues)
        one = today_stats(session, now=NOW, queue_ids=frozenset({1}))
        grouped = [(sql, params) for sql, params in statements if "GROUP BY tickets.queue_id" in sql]
        plans = [" ".join(str(row[-1]) for row in session.connection().exec_driver_sql(
            f"EXPLAIN QUERY PLAN {sql}", params)) for sql, params in grouped]
    assert (everyone.backlog, everyone.unassigned, everyone.agents) == \
        (limited.backlog, limited.unassigned, limited.agents)
    assert everyone.backlog == {"new": 601, "open": 600, "pending": 600, "on_hold": 0}
    assert everyone.unassigned == 601  # the seed ticket and every third copy
    assert [(a.login, a.open, a.assigned) for a in everyone.agents] == [("alice", 400, 600), ("bob", 400, 600)]
    assert one.open_total == 901 and sum(a.assigned for a in one.agents) + one.unassigned == 901  # seed in General
    assert len(plans) == 3
    for plan in plans:
        assert "COVERING INDEX ix_tickets_queue_status_assignee" in plan and "TEMP B-TREE" not in plan, plan
