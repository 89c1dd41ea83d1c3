"""Routing rules, escalations (fire once), timed automations on a frozen clock, and the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from supportdesk import automation
from supportdesk.config import ConfigError, parse_settings
from supportdesk.models import Event, Message, Outbox, Queue, Ticket
from supportdesk.sla import policy as sla_policy
from supportdesk.tickets import (
    Actor,
    Changes,
    add_message,
    create_ticket,
    get_ticket,
    update_ticket,
)
from tests.samples import ALWAYS, always_sla

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def make_settings(rules=(), escalations=(), sla=None):
    return parse_settings({
        "calendar": [{"name": "office", "timezone": "UTC", "hours": {"mon": ["09:00-17:00"], "tue": ["09:00-17:00"]}},
                     {"name": "always", "timezone": "UTC", "hours": ALWAYS}],
        "sla": sla if sla is not None else [
            {"name": "default", "calendar": "always", "first_response": 60, "next_response": 60, "resolution": 600}],
        "rule": list(rules),
        "escalation": list(escalations),
    })


def new_ticket(database, settings=None, *, created_at=None, body="Hello", email="carol@customer.test",
               subject="Help", to=(), **kw):
    with database.write() as session:
        ticket = create_ticket(session, Actor.system(), requester_email=email, subject=subject, body=body,
                               created_at=created_at, to=to, **kw)
        fired = automation.apply_rules(session, settings, ticket.id, now=created_at) if settings else []
        return ticket.id, fired


def ticket(database, tid):
    with database.read() as session:
        t = get_ticket(session, tid)
        queue = session.get(Queue, t.queue_id).name
        from supportdesk.listing import tags_for

        return t, queue, tags_for(session, [tid]).get(tid, [])


# --- routing rules ------------------------------------------------------------------------------

def test_rules_run_in_order_and_see_earlier_changes(database):
    settings = make_settings(rules=[
        {"name": "acme", "match": "from:@acme.test", "set": {"queue": "Billing", "priority": "high",
                                                             "add_tags": ["vip"]}},
        {"name": "billing urgent", "match": "queue:Billing subject:outage", "set": {"priority": "urgent"}},
        {"name": "never", "match": "from:@other.test", "set": {"priority": "low"}},
    ])
    tid, fired = new_ticket(database, settings, email="boss@acme.test", subject="Total outage")
    assert fired == ["acme", "billing urgent"]
    t, queue, tags = ticket(database, tid)
    assert (queue, t.priority, tags) == ("Billing", "urgent", ["vip"])
    with database.read() as session:
        trail = session.execute(sa.select(Event.field, Event.new, Event.actor).where(
            Event.ticket_id == tid, Event.field == "rule")).all()
    assert [tuple(r) for r in trail] == [("rule", "acme", "system"), ("rule", "billing urgent", "system")]


def test_stop_ends_the_chain_and_order_matters(database):
    settings = make_settings(rules=[
        {"name": "first", "match": "from:@acme.test", "set": {"priority": "high"}, "stop": True},
        {"name": "second", "match": "from:@acme.test", "set": {"priority": "low"}},
    ])
    tid, fired = new_ticket(database, settings, email="x@acme.test")
    assert fired == ["first"] and ticket(database, tid)[0].priority == "high"


def test_message_conditions_regex_recipient_hours_and_drop(database):
    settings = make_settings(rules=[
        {"name": "invoice", "body_regex": r"invoice\s+#?\d+", "set": {"queue": "Billing"}},
        {"name": "sales box", "to": "sales@example.test", "set": {"add_tags": ["sales"]}},
        {"name": "after hours", "business_hours": False, "calendar": "office", "set": {"add_tags": ["after-hours"]}},
        {"name": "spam", "subject_regex": "^viagra", "drop": True},
    ])
    monday_noon = datetime(2026, 11, 23, 12, tzinfo=UTC)
    tid, fired = new_ticket(database, settings, body="About invoice #42", to=["sales@example.test"],
                            created_at=monday_noon)
    assert fired == ["invoice", "sales box"]
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    tid, fired = new_ticket(database, settings, subject="VIAGRA cheap", created_at=saturday)
    assert fired == ["after hours", "spam"]
    t, _, tags = ticket(database, tid)
    assert t.status == "closed" and tags == ["after-hours", "spam"]


def test_rules_also_run_on_inbound_messages(database):
    settings = make_settings(rules=[{"name": "angry", "body_regex": "lawyer", "set": {"priority": "urgent"}}])
    tid, fired = new_ticket(database, settings)
    assert fired == []
    with database.write() as session:
        add_message(session, get_ticket(session, tid), Actor.system(), kind="inbound", body="my lawyer says")
        assert automation.apply_rules(session, settings, tid) == ["angry"]
    assert ticket(database, tid)[0].priority == "urgent"


def test_assignment_strategies(database):
    settings = make_settings(rules=[{"name": "rr", "set": {"assignee": "@round_robin"}}])
    logins = []
    for _ in range(3):
        tid, _ = new_ticket(database, settings)
        with database.read() as session:
            logins.append(session.execute(sa.text(
                "SELECT login FROM agents JOIN tickets ON tickets.assignee_id = agents.id WHERE tickets.id = :t"),
                {"t": tid}).scalar())
    assert logins == ["alice", "bob", "alice"]
    with database.read() as session:
        assert automation.pick_agent(session, "@least_open") == "bob"


@pytest.mark.parametrize("rules, escalations, key", [
    ([{"match": "from:@x.test", "body_regex": "(unclosed", "set": {"priority": "high"}}], [], "rule[0].body_regex"),
    ([{"set": {"colour": "red"}}], [], "rule[0].set.colour"),
    ([{"set": {"priority": "extreme"}}], [], "rule[0].set.priority"),
    ([{"name": "noop"}], [], "rule[0]"),
    ([{"business_hours": True, "calendar": "moon", "set": {"priority": "high"}}], [], "rule[0].calendar"),
    ([{"set": {"assignee": "@random"}}], [], "rule[0].set.assignee"),
    ([], [{"set": {"priority": "urgent"}}], "escalation[0].match"),
    ([], [{"match": "sla:breached", "notify": "nobody"}], "escalation[0].notify"),
])
def test_config_errors_name_the_key(rules, escalations, key):
    with pytest.raises(ConfigError) as info:
        automation.load(make_settings(rules=rules, escalations=escalations))
    assert info.value.key == key


def test_missing_queue_or_agent_is_refused(database):
    for spec, key in (({"queue": "Nowhere"}, "rule[0].set.queue"), ({"assignee": "mallory"}, "rule[0].set.assignee")):
        settings = make_settings(rules=[{"set": spec}])
        with database.read() as session, pytest.raises(ConfigError) as info:
            automation.check_references(session, settings)
        assert info.value.key == key


# --- escalations ----------------------------------------------------------------------------------

@pytest.fixture
def escalating(database, bob):
    settings = make_settings(escalations=[
        {"name": "near", "match": "sla:due<30m", "set": {"priority": "urgent"}, "notify": ["assignee", "team@example.test"]},
        {"name": "late", "match": "sla:breached", "set": {"add_tags": ["late"]}},
    ])
    sla_policy.install(database, settings)
    return settings


@pytest.fixture
def frozen(monkeypatch):
    """The before-commit hook computes target states at NOW (run_timers passes its own instant)."""
    monkeypatch.setattr(sla_policy, "utcnow", lambda: NOW)


def test_escalation_fires_once_per_ticket_and_target(database, escalating, frozen):
    created = NOW - timedelta(minutes=40)  # first response due at NOW + 20m
    tid, _ = new_ticket(database, created_at=created)
    quiet, _ = new_ticket(database, created_at=NOW)
    with database.write() as session:
        update_ticket(session, tid, Changes(assignee="bob"), Actor.system())
    dry = automation.run_timers(database, escalating, NOW, dry_run=True)
    assert [(f.ticket_id, f.escalation, f.target) for f in dry.fired] == [(tid, "near", "first_response")]
    assert ticket(database, tid)[0].priority == "normal"  # dry run changed nothing

    report = automation.run_timers(database, escalating, NOW)
    assert [(f.ticket_id, f.escalation, f.target) for f in report.fired] == [(tid, "near", "first_response")]
    assert report.fired[0].notified == ("team@example.test",)  # bob has no email address
    assert ticket(database, tid)[0].priority == "urgent"
    with database.read() as session:
        outbox = session.execute(sa.select(Outbox.envelope_to)).scalars().all()
        assert [json.loads(o) for o in outbox] == [["team@example.test"]]
        auto = session.execute(sa.select(Message.auto).where(Message.ticket_id == tid, Message.kind == "outbound"))
        assert auto.scalars().all() == [True]
    # The notice is automatic mail: it does not meet the first response.
    assert ticket(database, tid)[0].first_response_due == created + timedelta(minutes=60)
    assert automation.run_timers(database, escalating, NOW + timedelta(minutes=5)).fired == []

    later = automation.run_timers(database, escalating, NOW + timedelta(minutes=25))
    assert [(f.ticket_id, f.escalation) for f in later.fired] == [(tid, "late")]
    assert "late" in ticket(database, tid)[2]
    assert automation.run_timers(database, escalating, NOW + timedelta(minutes=30)).fired == []
    with database.read() as session:
        breaches = session.execute(sa.select(Event.field, Event.at).where(
            Event.ticket_id == tid, Event.new == "breached")).all()
    assert [(f, at) for f, at in breaches] == [("sla.first_response", created + timedelta(minutes=60))]
    assert quiet


def test_paused_or_solved_tickets_do_not_fire(database, escalating):
    paused, _ = new_ticket(database, created_at=NOW - timedelta(minutes=40))
    solved, _ = new_ticket(database, created_at=NOW - timedelta(minutes=40))
    with database.write() as session:
        update_ticket(session, paused, Changes(status="pending"), Actor.system())
        update_ticket(session, solved, Changes(status="solved"), Actor.system())
    assert automation.run_timers(database, escalating, NOW).fired == []


def test_next_response_escalates_again_per_cycle(database, escalating, alice):
    tid, _ = new_ticket(database, created_at=NOW - timedelta(minutes=200))
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="outbound", body="hi",
                    created_at=NOW - timedelta(minutes=190))
        add_message(session, get_ticket(session, tid), alice, kind="inbound", body="?",
                    created_at=NOW - timedelta(minutes=40))
    first = automation.run_timers(database, escalating, NOW)
    assert [(f.escalation, f.target) for f in first.fired] == [("near", "next_response")]
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="outbound", body="answer",
                    created_at=NOW + timedelta(minutes=1))
        add_message(session, get_ticket(session, tid), alice, kind="inbound", body="again?",
                    created_at=NOW + timedelta(minutes=2))
    again = automation.run_timers(database, escalating, NOW + timedelta(minutes=35))
    assert [(f.escalation, f.target) for f in again.fired] == [("near", "next_response")]  # a new cycle


# --- timed automations -----------------------------------------------------------------------------

def test_snoozed_tickets_wake_when_due(database):
    settings = make_settings()
    tid, _ = new_ticket(database)
    with database.write() as session:
        update_ticket(session, tid, Changes(snoozed_until=NOW + timedelta(hours=1)), Actor.system())
    assert automation.run_timers(database, settings, NOW).woken == []
    assert automation.run_timers(database, settings, NOW + timedelta(hours=1)).woken == [tid]
    assert ticket(database, tid)[0].snoozed_until is None


def test_pending_reminder_then_solve_then_close(database):
    settings = make_settings()
    timers = automation.Timers(pending_reminder_days=3, pending_solve_days=7, solved_close_days=2)
    tid, _ = new_ticket(database)
    with database.write() as session:
        update_ticket(session, tid, Changes(status="pending"), Actor.system())
    start = datetime.now(UTC)
    assert automation.run_timers(database, settings, start + timedelta(days=2), timers=timers).reminded == []
    report = automation.run_timers(database, settings, start + timedelta(days=3, minutes=1), timers=timers)
    assert report.reminded == [tid]
    assert automation.run_timers(database, settings, start + timedelta(days=4), timers=timers).reminded == []
    with database.read() as session:
        body, auto = session.execute(sa.select(Message.body_text, Message.auto).where(
            Message.ticket_id == tid, Message.kind == "outbound")).one()
    assert auto and f"#{tid}" in body and "in 4 days" in body
    dry = automation.run_timers(database, settings, start + timedelta(days=7, minutes=1), timers=timers, dry_run=True)
    assert dry.solved == [tid] and ticket(database, tid)[0].status == "pending"
    assert automation.run_timers(database, settings, start + timedelta(days=7, minutes=1), timers=timers).solved == [tid]
    assert ticket(database, tid)[0].status == "solved"
    # (the services stamp solved_at with the real clock, so count from `start`)
    assert automation.run_timers(database, settings, start + timedelta(days=1), timers=timers).closed == []
    later = automation.run_timers(database, settings, start + timedelta(days=2, minutes=1), timers=timers)
    assert later.closed == [tid] and ticket(database, tid)[0].status == "closed"
    with database.read() as session:
        actors = set(session.execute(sa.select(Event.actor).where(Event.ticket_id == tid, Event.field == "status"))
                     .scalars())
    assert actors == {"system"}


# --- command line ----------------------------------------------------------------------------------

CONFIG = '''
[[mailbox]]
name = "support"
address = "support@example.test"
queue = "General"
''' + always_sla(first_response=60, resolution=600) + '''
[[rule]]
name = "acme is VIP"
match = "from:@acme.test"
set = { queue = "Billing", priority = "high", add_tags = ["vip"] }

[[rule]]
name = "refunds"
subject_regex = "refund"
set = { add_tags = ["refund"] }

[[escalation]]
name = "breached"
match = "sla:breached"
set = { priority = "urgent" }
'''


@pytest.fixture
def sla_cli(cli, cli_env):
    from pathlib import Path

    Path(cli_env["SUPPORTDESK_CONFIG"]).write_text(CONFIG, encoding="utf-8")
    return cli


def test_cli_sla_check_lists_and_escalates(sla_cli, database):
    late, _ = new_ticket(database, created_at=datetime.now(UTC) - timedelta(minutes=90))
    soon, _ = new_ticket(database, created_at=datetime.now(UTC) - timedelta(minutes=30))
    with database.write() as session:  # the CLI's hook is not installed on this Database object
        from supportdesk.config import load_settings
        from supportdesk.sla.policy import recompute
        recompute(session, load_settings(), [late, soon])
    dry = sla_cli("sla", "check", "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    rows = json.loads(dry.stdout)
    assert [(r["id"], r["target"], r["breached"]) for r in rows] == [(late, "first_response", True),
                                                                    (soon, "first_response", False)]
    assert rows[0]["left"].startswith("-")
    assert ticket(database, late)[0].priority == "normal"
    result = sla_cli("sla", "check", "--format", "ids", "--within", "10m")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(late)]
    assert ticket(database, late)[0].priority == "urgent"
    shown = json.loads(sla_cli("tickets", "list", f"id:{late}", "--format", "json").stdout)[0]
    assert shown["sla"]["breached"] == ["first_response"]
    with database.write() as session:
        session.execute(sa.update(Ticket.__table__).values(first_response_due=None, resolution_due=None))
    assert sla_cli("sla", "check").exit_code == 3
    assert "Recomputed 2 ticket(s)" in sla_cli("sla", "recompute").stdout


def test_cli_rules_test_changes_nothing(sla_cli, database, tmp_path):
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"From: Boss <boss@acme.test>\r\nTo: support@example.test\r\nSubject: Refund please\r\n"
                    b"Message-ID: <x1@acme.test>\r\n\r\nHello\r\n")
    result = sla_cli("rules", "test", str(eml))
    assert result.exit_code == 0, result.output
    assert "fires  acme is VIP" in result.stdout and "fires  refunds" in result.stdout
    assert "would set queue: General -> Billing" in result.stdout
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Ticket.__table__)).scalar() == 0
    eml.write_bytes(b"From: someone@else.test\r\nSubject: Hi\r\n\r\nHello\r\n")
    assert sla_cli("rules", "test", str(eml)).exit_code == 3
