"""Recorded SLA targets (`ticket_sla_targets`): met and breached instants kept by the hook,
breaches recorded by `sla check` on untouched tickets (once, with a `system` event), imports,
recompute after a policy change, and `ticket_sla` reading them back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from supportdesk import automation
from supportdesk.config import parse_settings
from supportdesk.models import Event, Ticket, TicketSlaTarget
from supportdesk.sla import policy as sla_policy
from supportdesk.tickets import Actor, Changes, add_message, bulk_update, create_ticket, get_ticket, update_ticket
from supportdesk.transfer import check_record, import_tickets
from tests.samples import always_sla, always_sla_data

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def make_settings(first=60, nxt=30, resolution=600):
    return parse_settings(always_sla_data(first_response=first, next_response=nxt, resolution=resolution))


@pytest.fixture
def clock(monkeypatch):
    """One movable clock for the services (status changes) and the hook (target states)."""
    from supportdesk import tickets

    class Clock:
        now = NOW
    monkeypatch.setattr(sla_policy, "utcnow", lambda: Clock.now)
    monkeypatch.setattr(tickets, "utcnow", lambda: Clock.now)
    return Clock


@pytest.fixture
def settings(database, clock):
    s = make_settings()
    sla_policy.install(database, s)
    return s


def rows(database, tid):
    R = TicketSlaTarget.__table__.c
    with database.read() as session:
        return {(r.target, r.cycle): r for r in session.execute(
            sa.select(TicketSlaTarget.__table__).where(R.ticket_id == tid)).all()}


def breach_events(database, tid):
    with database.read() as session:
        return session.execute(sa.select(Event.field, Event.at, Event.actor).where(
            Event.ticket_id == tid, Event.new == "breached").order_by(Event.id)).all()


def new_ticket(database, created_at, clock=None):
    if clock is not None:
        clock.now = created_at
    with database.write() as session:
        return create_ticket(session, Actor.system(), requester_email="carol@customer.test", subject="Help",
                             body="Hello", created_at=created_at).id


def message(database, tid, agent, kind, at, clock=None):
    """A message written at its own time (the clock moves with it when given)."""
    if clock is not None:
        clock.now = at
    with database.write() as session:
        add_message(session, get_ticket(session, tid), agent, kind=kind, body="x", created_at=at)


def test_met_targets_and_every_next_response_cycle_are_recorded(database, alice, settings, clock):
    created = NOW - timedelta(minutes=300)
    tid = new_ticket(database, created, clock)
    message(database, tid, alice, "outbound", created + timedelta(minutes=20), clock)   # first response met
    message(database, tid, alice, "inbound", created + timedelta(minutes=40), clock)    # cycle 1 …
    message(database, tid, alice, "outbound", created + timedelta(minutes=50), clock)   # … met after 10 min
    message(database, tid, alice, "inbound", created + timedelta(minutes=100), clock)   # cycle 2 …
    message(database, tid, alice, "outbound", created + timedelta(minutes=200), clock)  # … met late
    clock.now = NOW
    r = rows(database, tid)
    assert sorted(r) == [("first_response", 0), ("next_response", 1), ("next_response", 2), ("resolution", 0)]
    fr = r[("first_response", 0)]
    assert (fr.state, fr.met_at, fr.breached_at, fr.business_minutes) == (
        "met", created + timedelta(minutes=20), None, 20)
    assert fr.due_at == created + timedelta(minutes=60)  # the due time it was met against
    c1, c2 = r[("next_response", 1)], r[("next_response", 2)]
    assert (c1.state, c1.started_at, c1.met_at, c1.business_minutes) == (
        "met", created + timedelta(minutes=40), created + timedelta(minutes=50), 10)
    assert (c2.state, c2.met_at, c2.breached_at) == (
        "breached", created + timedelta(minutes=200), created + timedelta(minutes=130))
    res = r[("resolution", 0)]
    assert (res.state, res.due_at, res.met_at) == ("running", created + timedelta(minutes=600), None)
    # the late cycle was recorded as a breach event by `system`, at the instant it breached
    assert [tuple(e) for e in breach_events(database, tid)] == [
        ("sla.next_response", created + timedelta(minutes=130), "system")]

    with database.write() as session:
        update_ticket(session, tid, Changes(status="solved"), alice)
    res = rows(database, tid)[("resolution", 0)]
    assert (res.state, res.met_at, res.breached_at) == ("met", NOW, None)
    with database.read() as session:
        info = sla_policy.ticket_sla(session, settings, tid, NOW)
    assert [(x["target"], x["cycle"], x["state"]) for x in info["recorded"]] == [
        ("first_response", 0, "met"), ("next_response", 1, "met"), ("next_response", 2, "breached"),
        ("resolution", 0, "met")]
    assert info["targets"]["next_response"]["cycle"] == 2
    assert info["targets"]["first_response"]["met_at"] == (created + timedelta(minutes=20)).isoformat()[:-6] + "Z"


def test_sla_check_records_a_breach_on_an_untouched_ticket_once(database, settings, clock):
    tid = new_ticket(database, NOW - timedelta(minutes=50))  # first response due at NOW + 10m
    assert rows(database, tid)[("first_response", 0)].state == "running"
    assert automation.run_timers(database, settings, NOW).breaches_recorded == 0
    report = automation.run_timers(database, settings, NOW + timedelta(minutes=11))
    assert report.breaches_recorded == 1
    fr = rows(database, tid)[("first_response", 0)]
    assert (fr.state, fr.breached_at) == ("breached", NOW + timedelta(minutes=10))
    assert automation.run_timers(database, settings, NOW + timedelta(minutes=20)).breaches_recorded == 0
    assert [tuple(e) for e in breach_events(database, tid)] == [
        ("sla.first_response", NOW + timedelta(minutes=10), "system")]
    # a later write recomputes the same breach: no second event, the row stays breached
    clock.now = NOW + timedelta(minutes=30)
    with database.write() as session:
        update_ticket(session, tid, Changes(priority="high"), Actor.system())
    assert rows(database, tid)[("first_response", 0)].breached_at == NOW + timedelta(minutes=10)
    assert len(breach_events(database, tid)) == 1


def test_a_write_after_the_due_time_records_the_breach_with_its_event(database, alice, settings, clock):
    tid = new_ticket(database, NOW)
    clock.now = NOW + timedelta(minutes=90)
    message(database, tid, alice, "outbound", NOW + timedelta(minutes=90))  # answered 30 min late
    fr = rows(database, tid)[("first_response", 0)]
    assert (fr.state, fr.met_at, fr.breached_at) == ("breached", NOW + timedelta(minutes=90), NOW + timedelta(minutes=60))
    assert [tuple(e) for e in breach_events(database, tid)] == [("sla.first_response", NOW + timedelta(minutes=60),
                                                                 "system")]
    assert automation.run_timers(database, settings, clock.now).breaches_recorded == 0


def test_paused_target_is_recorded_paused_and_check_leaves_it(database, alice, settings, clock):
    tid = new_ticket(database, NOW - timedelta(minutes=50))
    with database.write() as session:
        update_ticket(session, tid, Changes(status="pending"), alice)
    fr = rows(database, tid)[("first_response", 0)]
    assert (fr.state, fr.business_minutes) == ("paused", 50)
    assert automation.run_timers(database, settings, NOW + timedelta(days=3)).breaches_recorded == 0


def test_bulk_close_finishes_rows_once(database, alice, settings, clock):
    ids = [new_ticket(database, NOW - timedelta(minutes=30)) for _ in range(3)]
    with database.write() as session:
        bulk_update(session, ids, Changes(status="closed"), alice)
    for tid in ids:
        r = rows(database, tid)
        assert (r[("resolution", 0)].state, r[("resolution", 0)].met_at) == ("met", NOW)
        assert r[("first_response", 0)].state == "stopped"
        assert r[("resolution", 0)].business_minutes == 30


def test_policy_change_rewrites_the_rows(database, settings, clock):
    tid = new_ticket(database, NOW - timedelta(minutes=90))  # breached under a 60-minute first response
    assert rows(database, tid)[("first_response", 0)].state == "breached"
    generous = make_settings(first=120)
    with database.write() as session:
        sla_policy.recompute(session, generous, [tid], NOW)
    fr = rows(database, tid)[("first_response", 0)]
    assert (fr.state, fr.due_at, fr.breached_at) == ("running", NOW + timedelta(minutes=30), None)


def test_unmatched_ticket_loses_its_rows(database, settings, clock):
    tid = new_ticket(database, NOW)
    assert rows(database, tid)
    vip_only = parse_settings({"sla": [{"name": "vip", "match": "tag:vip", "resolution": 60}]})
    with database.write() as session:
        sla_policy.recompute(session, vip_only, [tid], NOW)
    assert rows(database, tid) == {}


def test_imported_tickets_get_their_historical_instants(database, settings, clock):
    created = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    record = check_record({
        "subject": "old", "requester": "dan@customer.test", "created_at": created.isoformat(), "status": "solved",
        "updated_at": (created + timedelta(days=2)).isoformat(),
        "messages": [
            {"kind": "inbound", "from": "dan@customer.test", "body_text": "help", "created_at": created.isoformat()},
            {"kind": "outbound", "from": "support@x.test", "body_text": "done", "delivery": "sent",
             "created_at": (created + timedelta(minutes=75)).isoformat()},
        ],
    })
    with database.write() as session:
        import_tickets(session, [record], Actor.system())
    with database.read() as session:
        tid = session.execute(sa.select(sa.func.max(Ticket.id))).scalar()
    r = rows(database, tid)
    fr = r[("first_response", 0)]
    assert (fr.state, fr.met_at, fr.breached_at) == (
        "breached", created + timedelta(minutes=75), created + timedelta(minutes=60))
    res = r[("resolution", 0)]  # solved two days later: met, but late
    assert (res.state, res.met_at, res.breached_at) == (
        "breached", created + timedelta(days=2), created + timedelta(minutes=600))
    assert [(e.field, e.at) for e in breach_events(database, tid)] == [
        ("sla.first_response", created + timedelta(minutes=60)), ("sla.resolution", created + timedelta(minutes=600))]



CLI_SLA = always_sla(first_response=60, next_response=30, resolution=600)


def test_tickets_show_reports_each_target_from_the_recorded_rows(cli, cli_env, database):
    import json
    from pathlib import Path

    config = Path(cli_env["SUPPORTDESK_CONFIG"])
    config.write_text(config.read_text(encoding="utf-8") + CLI_SLA, encoding="utf-8")
    created = cli("tickets", "create", "--from", "carol@customer.test", "--subject", "Help", "--body-file", "-",
                  input="Hello")
    assert created.exit_code == 0, created.output
    with database.read() as session:
        tid = session.execute(sa.select(sa.func.max(Ticket.id))).scalar()
    assert cli("tickets", "reply", str(tid), "--body-file", "-", input="On it").exit_code == 0
    shown = cli("tickets", "show", str(tid), "--format", "json")
    assert shown.exit_code == 0, shown.output
    sla = json.loads(shown.stdout)["sla"]
    assert set(sla) >= {"policy", "first_response_due", "next_response_due", "resolution_due", "breached",
                        "targets", "recorded"}
    fr, res = sla["targets"]["first_response"], sla["targets"]["resolution"]
    recorded = rows(database, tid)
    assert fr["state"] == "met" and fr["met_at"] and fr["breached_at"] is None
    assert fr["met_at"] == recorded[("first_response", 0)].met_at.isoformat().replace("+00:00", "Z")
    assert fr["target_minutes"] == 60 and 0 <= fr["used_minutes"] < 5
    assert res["state"] == "running" and res["due"] == sla["resolution_due"]
    assert sla["targets"]["next_response"]["state"] == "none"
    assert [(r["target"], r["state"]) for r in sla["recorded"]] == [("first_response", "met"), ("resolution", "running")]
    text = cli("tickets", "show", str(tid)).stdout
    assert "first_response met due" in " ".join(text.split()) and ", met " in text


def test_sla_check_refuses_a_bad_window_before_running_anything(cli, cli_env, database, clock):
    from pathlib import Path

    config = Path(cli_env["SUPPORTDESK_CONFIG"])
    config.write_text(config.read_text(encoding="utf-8") + CLI_SLA, encoding="utf-8")
    with database.write() as session:
        tid = create_ticket(session, Actor.system(), requester_email="carol@customer.test", subject="Late",
                            created_at=NOW - timedelta(hours=3)).id
        sla_policy.recompute(session, make_settings(), [tid], NOW - timedelta(hours=3))
    result = cli("sla", "check", "--within", "soon")
    assert result.exit_code == 2 and "bad duration 'soon'" in result.output
    assert rows(database, tid)[("first_response", 0)].state == "running"  # no breach recorded by the refused run
    result = cli("sla", "check")
    assert result.exit_code == 0 and "recorded 2 new SLA breach(es)" in result.output
    assert rows(database, tid)[("first_response", 0)].state == "breached"
