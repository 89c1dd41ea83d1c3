"""Who else has a ticket open: a heartbeat row per agent and ticket.

Consoles write their row when a ticket or compose screen opens, refresh it every
HEARTBEAT, and delete it on leaving.  A console that dies leaves its row behind,
so readers ignore rows older than STALE instead of trusting deletes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.models import Agent, Presence, utcnow

ACTIVITIES = ("viewing", "replying")
HEARTBEAT = timedelta(seconds=30)
STALE = timedelta(minutes=2)

P = Presence.__table__.c


@dataclass(frozen=True)
class Seen:
    login: str
    ticket_id: int
    activity: str
    seen_at: datetime

    def sentence(self) -> str:
        return f"{self.login} is {self.activity}"


def mark(session: Session, agent_id: int, activities: dict[int, str], now: datetime | None = None) -> None:
    """Upsert this agent's rows (ticket id → activity) with a fresh timestamp."""
    now = now or utcnow()
    for ticket_id, activity in activities.items():
        if activity not in ACTIVITIES:
            raise ValueError(f"activity must be one of {', '.join(ACTIVITIES)}, got {activity!r}")
        values = {"agent_id": agent_id, "ticket_id": ticket_id, "activity": activity, "seen_at": now}
        dialect = session.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(Presence.__table__).values(**values)
            stmt = stmt.on_conflict_do_update(index_elements=["agent_id", "ticket_id"],
                                              set_={"activity": activity, "seen_at": now})
            session.execute(stmt)
        else:
            session.merge(Presence(**values))


def leave(session: Session, agent_id: int, ticket_ids: Iterable[int] | None = None) -> None:
    """Forget this agent's rows (all of them when no ticket is named)."""
    stmt = sa.delete(Presence.__table__).where(P.agent_id == agent_id)
    if ticket_ids is not None:
        ids = list(ticket_ids)
        if not ids:
            return
        stmt = stmt.where(P.ticket_id.in_(ids))
    session.execute(stmt)


def others(session: Session, ticket_id: int, agent_id: int | None, now: datetime | None = None) -> list[Seen]:
    """Fresh rows of other agents on one ticket; replying first, then by login."""
    now = now or utcnow()
    A = Agent.__table__.c
    stmt = (sa.select(A.login, P.ticket_id, P.activity, P.seen_at)
            .join(Agent.__table__, A.id == P.agent_id)
            .where(P.ticket_id == ticket_id, P.seen_at >= now - STALE))
    if agent_id is not None:
        stmt = stmt.where(P.agent_id != agent_id)
    rows = [Seen(r.login, r.ticket_id, r.activity, r.seen_at) for r in session.execute(stmt)]
    return sorted(rows, key=lambda s: (s.activity != "replying", s.login))


def on_tickets(session: Session, ticket_ids: Iterable[int], login: str | None,
               now: datetime | None = None) -> dict[int, str]:
    """For a page of the queue: which of these tickets other agents have open ("replying" wins)."""
    ids = list(ticket_ids)
    if not ids:
        return {}
    now = now or utcnow()
    A = Agent.__table__.c
    stmt = (sa.select(P.ticket_id, P.activity).join(Agent.__table__, A.id == P.agent_id)
            .where(P.ticket_id.in_(ids), P.seen_at >= now - STALE))
    if login is not None:
        stmt = stmt.where(A.login != login)
    found: dict[int, str] = {}
    for ticket_id, activity in session.execute(stmt):
        if found.get(ticket_id) != "replying":
            found[ticket_id] = activity
    return found


def purge(session: Session, now: datetime | None = None) -> int:
    """Delete rows nobody refreshed within STALE (crashed consoles)."""
    now = now or utcnow()
    return session.execute(sa.delete(Presence.__table__).where(P.seen_at < now - STALE)).rowcount or 0


def describe(seen: list[Seen]) -> str:
    """`bob is replying, carol is viewing` — empty when nobody else is here."""
    return ", ".join(s.sentence() for s in seen)
