"""One bulk update is one version per changed ticket, however many fields and tags it touches
(a client holding version N must see N + 1, not N + 3), and every change is still an event."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from supportdesk.models import Event, Ticket
from supportdesk.tickets import Changes, ConflictError, bulk_update, create_ticket, update_ticket


def _tickets(database, actor, count: int, tags=()) -> list[int]:
    with database.write() as session:
        return [create_ticket(session, actor, requester_email=f"c{i}@acme.test", subject=f"t{i}", body="Help",
                              tags=list(tags)).id
                for i in range(count)]


def _versions(database, ids) -> dict[int, int]:
    with database.read() as session:
        return dict(session.execute(sa.select(Ticket.id, Ticket.version).where(Ticket.id.in_(ids))).all())


def _events(database, ids) -> list[tuple]:
    with database.read() as session:
        return sorted(session.execute(
            sa.select(Event.ticket_id, Event.field, Event.old, Event.new)
            .where(Event.ticket_id.in_(ids), Event.field != "created")
        ).all(), key=lambda e: (e[0], e[1], str(e[2]), str(e[3])))


@pytest.mark.parametrize("changes", [
    Changes(status="open", add_tags=["vip"]),
    Changes(priority="high", add_tags=["vip", "refund"], remove_tags=["old"]),
    Changes(add_tags=["vip", "refund"], remove_tags=["old"]),
    Changes(assignee="bob", queue="Billing", remove_tags=["old"]),
])
def test_one_bulk_update_bumps_each_changed_ticket_once(database, alice, changes):
    ids = _tickets(database, alice, 3, tags=["old"])
    before = _versions(database, ids)
    with database.write() as session:
        assert bulk_update(session, ids, changes, alice) == 3
    assert _versions(database, ids) == {tid: version + 1 for tid, version in before.items()}


def test_every_field_and_tag_is_still_an_event(database, alice):
    ids = _tickets(database, alice, 2, tags=["old"])
    before = _events(database, ids)
    with database.write() as session:
        bulk_update(session, ids, Changes(status="open", priority="high", add_tags=["vip"], remove_tags=["old"]),
                    alice)
    added = [e for e in _events(database, ids) if e not in before]
    assert added == sorted(
        [(tid, field, old, new) for tid in ids for field, old, new in (
            ("priority", "normal", "high"), ("status", "new", "open"), ("tag", None, "vip"), ("tag", "old", None))],
        key=lambda e: (e[0], e[1], str(e[2]), str(e[3])),
    )


def test_tickets_only_partly_changed_are_bumped_once_and_untouched_ones_not_at_all(database, alice):
    """One ticket needs only the tag, one only the status, one nothing: versions +1, +1, +0."""
    open_untagged, new_tagged, done = _tickets(database, alice, 3)
    with database.write() as session:
        bulk_update(session, [open_untagged], Changes(status="open"), alice)
        bulk_update(session, [new_tagged], Changes(add_tags=["vip"]), alice)
        bulk_update(session, [done], Changes(status="open", add_tags=["vip"]), alice)
    ids = [open_untagged, new_tagged, done]
    before = _versions(database, ids)
    with database.write() as session:
        assert bulk_update(session, ids, Changes(status="open", add_tags=["vip"]), alice) == 2
    after = _versions(database, ids)
    assert [after[t] - before[t] for t in ids] == [1, 1, 0]
    with database.read() as session:
        statuses = dict(session.execute(sa.select(Ticket.id, Ticket.status).where(Ticket.id.in_(ids))).all())
    assert set(statuses.values()) == {"open"}


def test_a_client_holding_the_version_conflicts_only_after_a_real_change(database, alice, bob):
    """update_ticket's optimistic check sees exactly one step per update."""
    (tid,) = _tickets(database, alice, 1)
    seen = _versions(database, [tid])[tid]
    with database.write() as session:
        update_ticket(session, tid, Changes(priority="urgent", add_tags=["vip"], remove_tags=["none"]), bob,
                      expected_version=seen)
    with database.write() as session:
        update_ticket(session, tid, Changes(status="open"), alice, expected_version=seen + 1)
    with pytest.raises(ConflictError):
        with database.write() as session:
            update_ticket(session, tid, Changes(status="pending"), alice, expected_version=seen + 1)
