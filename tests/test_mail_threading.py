"""Threading inbound mail onto tickets (SPEC §8), as a pure decision."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportdesk.mail.parse import ParsedMessage, parse_message
from supportdesk.mail.threading import MAX_LOOKUP_IDS, ThreadDecision, ThreadFacts, decide, references_of

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")


def facts(**kwargs) -> ThreadFacts:
    return ThreadFacts(now=NOW, reopen_days=14, **kwargs)


def test_no_reference_no_tag_is_a_new_ticket():
    assert decide(facts()) == ThreadDecision("new", None, False, "no reference and no ticket tag")


def test_reference_appends():
    decision = decide(facts(ticket_by_reference=7, ticket_status="open"))
    assert (decision.action, decision.ticket_id, decision.reopen) == ("append", 7, False)


def test_reference_wins_over_tag_and_over_strangers():
    decision = decide(
        facts(ticket_by_reference=7, tagged_ticket_id=9, tagged_ticket_exists=True, ticket_status="open")
    )
    assert (decision.action, decision.ticket_id) == ("append", 7)


def test_tag_from_participant_appends():
    decision = decide(facts(tagged_ticket_id=9, tagged_ticket_exists=True, sender_participates=True, ticket_status="new"))
    assert (decision.action, decision.ticket_id, decision.reopen) == ("append", 9, False)


def test_tag_from_stranger_opens_a_linked_ticket():
    decision = decide(facts(tagged_ticket_id=9, tagged_ticket_exists=True, sender_participates=False, ticket_status="open"))
    assert (decision.action, decision.ticket_id, decision.reopen) == ("new_linked", 9, False)
    assert "does not take part" in decision.reason


def test_tag_of_missing_ticket_opens_an_unlinked_ticket():
    decision = decide(facts(tagged_ticket_id=99999, tagged_ticket_exists=False, sender_participates=True))
    assert (decision.action, decision.ticket_id) == ("new", None)


@pytest.mark.parametrize("status", ["solved", "pending", "on_hold"])
def test_reply_reopens_waiting_and_solved_tickets(status):
    decision = decide(facts(ticket_by_reference=3, ticket_status=status, ticket_closed_at=NOW - timedelta(days=2)))
    assert (decision.action, decision.ticket_id, decision.reopen) == ("append", 3, True)


def test_closed_ticket_gets_a_follow_up_even_when_recent():
    decision = decide(facts(ticket_by_reference=3, ticket_status="closed", ticket_closed_at=NOW - timedelta(minutes=5)))
    assert (decision.action, decision.ticket_id, decision.reopen) == ("new_linked", 3, False)


def test_solved_long_ago_gets_a_follow_up():
    old = NOW - timedelta(days=14, seconds=1)
    decision = decide(facts(ticket_by_reference=3, ticket_status="solved", ticket_closed_at=old))
    assert (decision.action, decision.ticket_id) == ("new_linked", 3)
    recent = NOW - timedelta(days=14)
    assert decide(facts(ticket_by_reference=3, ticket_status="solved", ticket_closed_at=recent)).action == "append"


def test_closed_tagged_ticket_from_participant_gets_a_follow_up():
    decision = decide(
        facts(tagged_ticket_id=4, tagged_ticket_exists=True, sender_participates=True, ticket_status="closed")
    )
    assert (decision.action, decision.ticket_id) == ("new_linked", 4)


def test_naive_datetimes_are_utc():
    decision = ThreadFacts(
        now=NOW.replace(tzinfo=None),
        reopen_days=1,
        ticket_by_reference=3,
        ticket_status="solved",
        ticket_closed_at=NOW - timedelta(days=2),
    )
    assert decide(decision).action == "new_linked"


ids = st.one_of(st.none(), st.integers(min_value=1, max_value=50))
facts_strategy = st.builds(
    ThreadFacts,
    now=st.just(NOW),
    reopen_days=st.integers(min_value=0, max_value=60),
    ticket_by_reference=ids,
    tagged_ticket_id=ids,
    tagged_ticket_exists=st.booleans(),
    sender_participates=st.booleans(),
    ticket_status=st.one_of(st.none(), st.sampled_from(STATUSES)),
    ticket_closed_at=st.one_of(st.none(), st.integers(min_value=0, max_value=90 * 24).map(lambda h: NOW - timedelta(hours=h))),
)


@settings(max_examples=200, deadline=None)
@given(facts_strategy)
def test_decision_invariants(f):
    decision = decide(f)
    assert decision.action in ("append", "new", "new_linked")
    assert decision.reason
    if f.ticket_by_reference is not None:
        assert decision.ticket_id == f.ticket_by_reference
        assert decision.action != "new"
    elif f.tagged_ticket_id is not None and not f.sender_participates:
        assert decision.action != "append"
    if decision.action == "append":
        assert decision.ticket_id is not None
        assert f.ticket_status != "closed"
        assert decision.reopen == (f.ticket_status in ("solved", "pending", "on_hold"))
    else:
        assert decision.reopen is False
    if decision.action == "new":
        assert decision.ticket_id is None
    if decision.action == "new_linked":
        assert decision.ticket_id in (f.ticket_by_reference, f.tagged_ticket_id)


@settings(max_examples=100, deadline=None)
@given(facts_strategy, st.integers(min_value=1, max_value=50))
def test_stranger_with_tag_never_reaches_the_tagged_ticket(f, tagged):
    f = dataclasses.replace(f, ticket_by_reference=None, tagged_ticket_id=tagged, sender_participates=False)
    decision = decide(f)
    assert decision.action != "append"
    assert decision.ticket_id in (None, tagged)


@settings(max_examples=100, deadline=None)
@given(facts_strategy, st.integers(min_value=1, max_value=50))
def test_header_reference_always_wins(f, referenced):
    decision = decide(dataclasses.replace(f, ticket_by_reference=referenced))
    assert decision.ticket_id == referenced
    assert decision.action in ("append", "new_linked")


def test_references_of_orders_newest_first():
    msg = parse_message(
        b"From: a@example.org\r\nSubject: Re: x\r\nIn-Reply-To: <parent@x>\r\n"
        b"References: <root@x> <middle@x> <parent@x>\r\n\r\nhi\r\n"
    )
    assert references_of(msg) == ["parent@x", "middle@x", "root@x"]


def test_references_of_is_bounded():
    msg = ParsedMessage(references=[f"id{i}@x" for i in range(1000)])
    found = references_of(msg)
    assert len(found) == MAX_LOOKUP_IDS
    assert found[0] == "id999@x"


def test_references_of_without_headers():
    assert references_of(ParsedMessage()) == []
