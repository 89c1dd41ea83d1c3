"""Ticket services: events for every change, versions, conflicts, merge, bulk."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from supportdesk.listing import events_for, ticket_detail, ticket_summaries
from supportdesk.models import Event, Ticket, utcnow
from supportdesk.tickets import (
    Changes, ConflictError, InvalidError, NotFoundError, add_message, bulk_update, create_ticket, get_ticket,
    merge_tickets, resolve_actor, update_ticket,
)


def _new(database, actor, **kw):
    with database.write() as session:
        ticket = create_ticket(session, actor, requester_email=kw.pop("email", "bob@acme.test"),
                               subject=kw.pop("subject", "Printer on fire"), body=kw.pop("body", "Help!"), **kw)
        return ticket.id


def test_create_records_customer_organization_message_and_event(database, alice):
    ticket_id = _new(database, alice, channel="phone", tags=["VIP"])
    with database.read() as session:
        detail = ticket_detail(session, ticket_id, utcnow())
        events = events_for(session, ticket_id)
    assert detail["requester"] == "bob@acme.test"
    assert detail["organization"] == "Acme"
    assert detail["tags"] == ["vip"]
    assert [m["kind"] for m in detail["messages"]] == ["call"]
    assert detail["message_count"] == 1
    assert [(e["field"], e["new"]) for e in events] == [("created", "phone ticket"), ("tag", "vip")]


def test_freemail_customers_get_no_organization(database, alice):
    ticket_id = _new(database, alice, email="someone@gmail.com")
    with database.read() as session:
        assert ticket_detail(session, ticket_id, utcnow())["organization"] is None


def test_every_change_is_an_event_with_old_and_new(database, alice):
    ticket_id = _new(database, alice)
    with database.write() as session:
        changed = update_ticket(session, ticket_id, Changes(status="open", priority="urgent", assignee="bob",
                                                            queue="Billing", add_tags=["x"]), alice)
    assert changed == 1
    with database.read() as session:
        events = {(e["field"], e["old"], e["new"], e["actor"]) for e in events_for(session, ticket_id)}
        ticket = get_ticket(session, ticket_id)
    assert ("status", "new", "open", "alice") in events
    assert ("priority", "normal", "urgent", "alice") in events
    assert ("assignee", None, "bob", "alice") in events
    assert ("queue", "General", "Billing", "alice") in events
    assert ("tag", None, "x", "alice") in events
    assert ticket.priority_rank == 3


def test_no_op_change_writes_nothing(database, alice):
    ticket_id = _new(database, alice)
    with database.read() as session:
        version = get_ticket(session, ticket_id).version
        before = session.execute(sa.select(sa.func.count()).select_from(Event)).scalar()
    with database.write() as session:
        assert update_ticket(session, ticket_id, Changes(status="new", priority="normal"), alice) == 0
    with database.read() as session:
        assert get_ticket(session, ticket_id).version == version
        assert session.execute(sa.select(sa.func.count()).select_from(Event)).scalar() == before


def test_version_bumps_and_stale_write_is_refused(database, alice, bob):
    ticket_id = _new(database, alice)
    with database.read() as session:
        seen = get_ticket(session, ticket_id).version
    with database.write() as session:
        update_ticket(session, ticket_id, Changes(priority="high"), bob, expected_version=seen)
    with pytest.raises(ConflictError, match=f"ticket #{ticket_id} was changed by someone else"):
        with database.write() as session:
            update_ticket(session, ticket_id, Changes(priority="low"), alice, expected_version=seen)
    with database.read() as session:
        ticket = get_ticket(session, ticket_id)
        assert ticket.priority == "high"
        assert ticket.version == seen + 1


def test_messages_bump_version_and_summary(database, alice):
    ticket_id = _new(database, alice)
    with database.write() as session:
        ticket = get_ticket(session, ticket_id)
        version = ticket.version
        add_message(session, ticket, alice, kind="note", body="internal")
    with database.read() as session:
        ticket = get_ticket(session, ticket_id)
    assert ticket.version == version + 1
    assert ticket.message_count == 2


def test_unknown_values_are_refused_with_names(database, alice):
    ticket_id = _new(database, alice)
    with pytest.raises(InvalidError, match="unknown agent 'nobody'"):
        with database.write() as session:
            update_ticket(session, ticket_id, Changes(assignee="nobody"), alice)
    with pytest.raises(InvalidError, match="unknown queue 'Nope'"):
        with database.write() as session:
            update_ticket(session, ticket_id, Changes(queue="Nope"), alice)
    with pytest.raises(InvalidError, match="unknown status"):
        with database.write() as session:
            update_ticket(session, ticket_id, Changes(status="done"), alice)
    with pytest.raises(NotFoundError, match="no ticket #999"):
        with database.write() as session:
            update_ticket(session, 999, Changes(status="open"), alice)


def test_unknown_actor_is_told_to_ask_an_admin(database):
    with pytest.raises(InvalidError, match="ask an admin to run `supportdesk agents add mallory`"):
        with database.read() as session:
            resolve_actor(session, "mallory")


def test_bulk_update_is_set_based_and_counts_only_changed(database, alice):
    ids = [_new(database, alice, subject=f"t{i}") for i in range(6)]
    with database.write() as session:
        update_ticket(session, ids[0], Changes(status="closed"), alice)
    with database.write() as session:
        changed = bulk_update(session, ids, Changes(status="closed", add_tags=["spam"]), alice)
    assert changed == 6  # the closed one still gains the tag
    with database.read() as session:
        rows = ticket_summaries(session, ids, utcnow())
        status_events = session.execute(
            sa.select(sa.func.count()).select_from(Event).where(Event.field == "status", Event.new == "closed")
        ).scalar()
        closed_at = session.execute(sa.select(Ticket.closed_at).where(Ticket.id.in_(ids))).scalars().all()
    assert {r["status"] for r in rows} == {"closed"}
    assert all(r["tags"] == ["spam"] for r in rows)
    assert status_events == 6
    assert all(c is not None for c in closed_at)


def test_bulk_update_over_the_temp_table_path(database, alice):
    ids = [_new(database, alice, subject=f"bulk {i}") for i in range(520)]
    with database.write() as session:
        assert bulk_update(session, ids, Changes(priority="high", remove_tags=["none"]), alice) == 520
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).where(Ticket.priority == "high")).scalar() == 520


def test_failed_bulk_change_leaves_nothing_half_done(database, alice):
    ids = [_new(database, alice) for _ in range(3)]
    with pytest.raises(InvalidError):
        with database.write() as session:
            bulk_update(session, ids, Changes(status="open"), alice)
            bulk_update(session, ids, Changes(assignee="ghost"), alice)
    with database.read() as session:
        assert {t.status for t in session.execute(sa.select(Ticket)).scalars()} == {"new"}


def test_reopening_clears_solved_and_closed_times(database, alice):
    ticket_id = _new(database, alice)
    with database.write() as session:
        update_ticket(session, ticket_id, Changes(status="solved"), alice)
    with database.read() as session:
        assert get_ticket(session, ticket_id).solved_at is not None
    with database.write() as session:
        update_ticket(session, ticket_id, Changes(status="open"), alice)
    with database.read() as session:
        ticket = get_ticket(session, ticket_id)
        assert ticket.solved_at is None and ticket.closed_at is None


def test_merge_moves_thread_and_keeps_ids(database, alice):
    source = _new(database, alice, email="carol@globex.test", subject="Dup", tags=["a"])
    target = _new(database, alice, subject="Original")
    with database.write() as session:
        merge_tickets(session, source, target, alice)
    with database.read() as session:
        merged = ticket_detail(session, source, utcnow())
        kept = ticket_detail(session, target, utcnow())
    assert merged["merged_into"] == target and merged["status"] == "closed" and merged["messages"] == []
    assert [m["kind"] for m in kept["messages"]] == ["inbound", "inbound", "system"]
    assert kept["message_count"] == 3
    assert "a" in kept["tags"]
    with pytest.raises(InvalidError, match="already merged"):
        with database.write() as session:
            merge_tickets(session, source, target, alice)
    with pytest.raises(InvalidError, match="into itself"):
        with database.write() as session:
            merge_tickets(session, target, target, alice)
