"""SLA policies from config, and due columns kept current by the before-commit hook."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from supportdesk.config import ConfigError, parse_settings
from supportdesk.listing import ticket_ids
from supportdesk.models import Ticket
from supportdesk.query import QueryContext
from supportdesk.sla import policy as sla_policy
from supportdesk.tickets import (
    Changes,
    add_message,
    bulk_update,
    create_ticket,
    get_ticket,
    update_ticket,
)
from tests.samples import ALWAYS, ALWAYS_CALENDAR

UTC = timezone.utc


def make_settings(**extra):
    data = {
        "calendar": [ALWAYS_CALENDAR],
        "sla": [
            {"name": "urgent", "match": "priority:urgent", "calendar": "always", "first_response": 30,
             "next_response": 60, "resolution": 240},
            {"name": "default", "calendar": "always", "first_response": 120, "next_response": 240,
             "resolution": 1440},
        ],
    }
    data.update(extra)
    return parse_settings(data)


@pytest.fixture
def settings(database):
    s = make_settings()
    sla_policy.install(database, s)
    return s


def new_ticket(database, actor, **kw):
    kw.setdefault("requester_email", "carol@customer.test")
    kw.setdefault("subject", "Help")
    with database.write() as session:
        return create_ticket(session, actor, **kw).id


def row(database, ticket_id):
    with database.read() as session:
        return get_ticket(session, ticket_id)


@pytest.mark.parametrize("data, key", [
    ({"calendar": [{"name": "c", "timezone": "Mars/Base", "hours": ALWAYS}]}, "calendar[0].timezone"),
    ({"calendar": [{"name": "c", "timezone": "UTC", "hours": {"mon": ["10:00-12:00", "11:00-13:00"]}}]},
     "calendar[0].hours.mon[1]"),
    ({"calendar": [{"name": "c", "timezone": "UTC", "hours": ALWAYS, "holidays_country": "XX"}]},
     "calendar[0].holidays_country"),
    ({"sla": [{"name": "a", "calendar": "nope", "resolution": 5}]}, "sla[0].calendar"),
    ({"sla": [{"name": "a", "resolution": -5}]}, "sla[0].resolution"),
    ({"sla": [{"name": "a", "resolution": 5, "pause_on": ["waiting"]}]}, "sla[0].pause_on"),
    ({"sla": [{"name": "a"}]}, "sla[0]"),
    ({"sla": [{"name": "a", "resolution": 5, "match": "assignee:me"}]}, "sla[0].match"),
    ({"sla": [{"name": "a", "resolution": 5, "colour": "red"}]}, "sla[0].colour"),
])
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        sla_policy.load(parse_settings(data))
    assert info.value.key == key


def test_first_matching_policy_sets_due_times(database, alice, settings):
    before = datetime.now(UTC)
    normal = new_ticket(database, alice)
    urgent = new_ticket(database, alice, priority="urgent")
    t = row(database, normal)
    assert t.sla_policy == "default"
    assert before + timedelta(minutes=119) < t.first_response_due < before + timedelta(minutes=121)
    assert t.next_response_due is None
    u = row(database, urgent)
    assert u.sla_policy == "urgent"
    assert u.resolution_due - u.created_at == timedelta(minutes=240)


def test_priority_change_switches_policy(database, alice, settings):
    tid = new_ticket(database, alice)
    with database.write() as session:
        update_ticket(session, tid, Changes(priority="urgent"), alice)
    t = row(database, tid)
    assert t.sla_policy == "urgent"
    assert t.first_response_due - t.created_at == timedelta(minutes=30)


def test_reply_pause_resume_solve(database, alice, settings):
    created = datetime.now(UTC) - timedelta(minutes=100)
    tid = new_ticket(database, alice, created_at=created)
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="note", body="internal")
    assert row(database, tid).first_response_due == created + timedelta(minutes=120)
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="outbound", body="hello")
    t = row(database, tid)
    assert t.first_response_due is None and t.next_response_due is None
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="inbound", body="thanks, but…")
    assert row(database, tid).next_response_due is not None
    with database.write() as session:
        update_ticket(session, tid, Changes(status="pending"), alice)
    t = row(database, tid)
    assert (t.first_response_due, t.next_response_due, t.resolution_due) == (None, None, None)
    with database.write() as session:
        update_ticket(session, tid, Changes(status="open"), alice)
    assert row(database, tid).resolution_due >= created + timedelta(minutes=1440)
    with database.write() as session:
        update_ticket(session, tid, Changes(status="solved"), alice)
    with database.read() as session:
        info = sla_policy.ticket_sla(session, settings, tid)
    assert info["targets"]["resolution"]["state"] == "met"
    assert info["targets"]["first_response"]["state"] == "met"
    t = row(database, tid)
    assert (t.first_response_due, t.next_response_due, t.resolution_due) == (None, None, None)


def test_breached_ticket_found_by_query(database, alice, settings):
    old = new_ticket(database, alice, created_at=datetime.now(UTC) - timedelta(hours=3))
    fresh = new_ticket(database, alice)
    with database.read() as session:
        ctx = QueryContext(now=datetime.now(UTC))
        assert ticket_ids(session, "sla:breached", ctx) == [old]
        assert set(ticket_ids(session, "sla:due<3h", ctx)) == {old, fresh}
        assert ticket_ids(session, "sla:due<1h", ctx) == [old]


def test_bulk_close_is_set_based_and_clears(database, alice, settings):
    ids = [new_ticket(database, alice) for _ in range(3)]
    with database.write() as session:
        bulk_update(session, ids, Changes(status="closed"), alice)
    for tid in ids:
        assert row(database, tid).resolution_due is None


def test_recompute_one_ticket_is_fast(database, alice, settings):
    tid = new_ticket(database, alice)
    with database.write() as session:
        for i in range(10):
            add_message(session, get_ticket(session, tid), alice, kind="inbound" if i % 2 else "outbound", body="x")
    with database.write() as session:
        session.execute(sa.update(Ticket.__table__).values(resolution_due=None))
        start = time.perf_counter()
        for _ in range(20):
            sla_policy.recompute(session, settings, [tid])
        elapsed = (time.perf_counter() - start) / 20
    assert row(database, tid).resolution_due is not None
    assert elapsed < 0.2, elapsed  # a guard against whole-table work, not a benchmark (benchmarks/sla.py)


def test_imported_solved_ticket_without_events_has_no_pending_due(database, alice, settings):
    tid = new_ticket(database, alice, created_at=datetime(2025, 1, 6, 9, tzinfo=UTC))
    with database.write() as session:
        session.execute(sa.update(Ticket.__table__).where(Ticket.id == tid).values(status="pending"))
        sla_policy.recompute(session, settings, [tid])
    assert row(database, tid).resolution_due is None


def test_no_policy_means_no_due(database, alice):
    s = make_settings(sla=[{"name": "vip", "match": "tag:vip", "resolution": 60}])
    sla_policy.install(database, s)
    plain = new_ticket(database, alice)
    vip = new_ticket(database, alice, tags=["vip"])
    assert row(database, plain).sla_policy is None and row(database, plain).resolution_due is None
    assert row(database, vip).sla_policy == "vip"
    with database.read() as session:
        info = sla_policy.ticket_sla(session, s, vip)
    assert info["policy"] == "vip"
    assert info["targets"]["resolution"]["state"] == "running"
    assert info["targets"]["first_response"]["state"] == "none"


def test_parallel_recompute_gives_the_same_columns(database, alice, settings, monkeypatch):
    ids = [new_ticket(database, alice, priority="urgent" if i % 3 else "normal",
                      created_at=datetime(2026, 11, 20, 9, tzinfo=UTC) + timedelta(minutes=7 * i)) for i in range(30)]
    with database.read() as session:
        expected = session.execute(sa.select(Ticket.id, Ticket.sla_policy, Ticket.first_response_due,
                                             Ticket.resolution_due).order_by(Ticket.id)).all()
    monkeypatch.setattr(sla_policy, "PARALLEL_MIN", 10)
    monkeypatch.setattr(sla_policy, "_CHUNK", 7)
    with database.write() as session:
        session.execute(sa.update(Ticket.__table__).values(sla_policy=None, first_response_due=None,
                                                           resolution_due=None))
        assert sla_policy.recompute(session, settings, ids, workers=2) == 30
    with database.read() as session:
        got = session.execute(sa.select(Ticket.id, Ticket.sla_policy, Ticket.first_response_due,
                                        Ticket.resolution_due).order_by(Ticket.id)).all()
    assert got == expected
