"""Which ticket an inbound message belongs to (SPEC §8).  (pure)

The caller looks the facts up in the database and fills ``ThreadFacts``; ``decide``
applies the rules, so they can be tested without a database:

1. An In-Reply-To/References id matching a stored message (inbound or outbound)
   wins: only someone who received that message can quote its id.
2. Else the subject tag ``[<tag> #<id>]`` of an existing ticket, but only when the
   sender already takes part in it (requester, CC'd address, agent).  A stranger
   quoting a ticket number gets a new ticket linked to it and never sees or
   writes into someone else's thread (the Zammad complaint).
3. Else a new ticket.

Then the status of the ticket found:

* ``closed`` is final: a new ticket linked to it as its follow-up.
* finished (closed, or solved) longer than ``reopen_days`` ago: a linked follow-up too.
* ``solved``: the message is appended and the ticket reopens.
* ``pending`` (waiting on the customer) and ``on_hold`` (waiting on a third party)
  go back to ``open`` as well: the customer's answer is something an agent must
  now look at, and a ticket left in a waiting state would hide it.
* ``new``/``open``: appended, status unchanged.

Callers should resolve merged tickets to their target before filling the facts,
and should not count an untrusted From (``ParsedMessage.from_trusted``) as a
participant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from supportdesk.mail.parse import ParsedMessage

__all__ = ["MAX_LOOKUP_IDS", "ThreadDecision", "ThreadFacts", "decide", "references_of"]

MAX_LOOKUP_IDS = 50
"""A References header can list thousands of ids; the newest ones are the useful ones."""

_REOPENING = frozenset({"solved", "pending", "on_hold"})


@dataclass(frozen=True, kw_only=True)
class ThreadFacts:
    """What the database knows about the message's candidate ticket.

    ``ticket_status``/``ticket_closed_at`` describe the candidate: the reference
    ticket if there is one, else the tagged ticket.  ``ticket_closed_at`` is when it
    was closed, or solved for a solved ticket.
    """

    now: datetime
    reopen_days: int
    ticket_by_reference: int | None = None
    tagged_ticket_id: int | None = None
    tagged_ticket_exists: bool = False
    sender_participates: bool = False
    ticket_status: str | None = None
    ticket_closed_at: datetime | None = None


@dataclass(frozen=True)
class ThreadDecision:
    """``ticket_id``: the ticket to append to, or the parent of a ``new_linked`` ticket."""

    action: Literal["append", "new", "new_linked"]
    ticket_id: int | None
    reopen: bool
    reason: str


def decide(facts: ThreadFacts) -> ThreadDecision:
    """Append to a ticket, open a new one, or open a follow-up linked to an old one."""
    if facts.ticket_by_reference is not None:
        return _by_status(facts.ticket_by_reference, facts, "reply to a message of the ticket")
    if facts.tagged_ticket_id is None:
        return ThreadDecision("new", None, False, "no reference and no ticket tag")
    if not facts.tagged_ticket_exists:
        return ThreadDecision("new", None, False, f"tag names ticket #{facts.tagged_ticket_id}, which does not exist")
    if not facts.sender_participates:
        return ThreadDecision(
            "new_linked",
            facts.tagged_ticket_id,
            False,
            f"sender does not take part in tagged ticket #{facts.tagged_ticket_id}",
        )
    return _by_status(facts.tagged_ticket_id, facts, "subject tag from a participant")


def _by_status(ticket_id: int, facts: ThreadFacts, why: str) -> ThreadDecision:
    status = (facts.ticket_status or "").lower()
    if status == "closed":
        return ThreadDecision("new_linked", ticket_id, False, f"{why}; ticket is closed: follow-up")
    if facts.ticket_closed_at is not None and status in ("solved", "closed"):
        age = _utc(facts.now) - _utc(facts.ticket_closed_at)
        if age > timedelta(days=facts.reopen_days):
            return ThreadDecision(
                "new_linked", ticket_id, False, f"{why}; finished more than {facts.reopen_days} days ago: follow-up"
            )
    if status in _REOPENING:
        return ThreadDecision("append", ticket_id, True, f"{why}; reopens the {status} ticket")
    return ThreadDecision("append", ticket_id, False, why)


def references_of(msg: ParsedMessage) -> list[str]:
    """Message ids to look up, best first: In-Reply-To, then References newest first.

    At most ``MAX_LOOKUP_IDS``, without duplicates.
    """
    ids: list[str] = []
    seen: set[str] = set()
    for ident in [*msg.in_reply_to, *reversed(msg.references)]:
        if ident and ident not in seen:
            seen.add(ident)
            ids.append(ident)
            if len(ids) >= MAX_LOOKUP_IDS:
                break
    return ids


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
