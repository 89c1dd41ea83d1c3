"""What the console reads and writes, as plain functions over the domain (no Textual here).

The queue pages through tickets with keyset pagination on (created_at, id): the
next page continues after the last row seen, so scrolling through 100,000 rows
never re-reads the ones above.  A jump far away (End, a scrollbar drag) falls
back to OFFSET over the id index only, then fetches the page's details by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.config import Settings
from supportdesk.db import Database
from supportdesk.listing import count, events_for, ticket_detail
from supportdesk.mail.intake import QUARANTINED
from supportdesk.mail.outbox import queue_reply
from supportdesk.mail.parse import quote_split
from supportdesk.models import Agent, Customer, Draft, MailboxState, Outbox, Queue, RawMessage, Ticket, utcnow
from supportdesk.query import Query, QueryContext, QueryError, compile_query, nearest_due, parse_query, sort_order
from supportdesk.tickets import Changes, add_message, bulk_update, get_ticket, resolve_actor, update_ticket

T = Ticket.__table__.c
PAGE = 100
OPEN = "status:new,open,pending,on_hold"
QUARANTINE = "__quarantine__"


@dataclass(frozen=True)
class Row:
    id: int
    subject: str
    status: str
    priority: str
    requester: str
    assignee: str | None
    created_at: datetime
    due: datetime | None
    version: int


@dataclass(frozen=True)
class View:
    name: str
    query: str
    kind: str = "builtin"  # builtin | saved | queue | quarantine | search
    sort: str | None = None  # None: newest first (keyset paged); else a `sort_order` spec (OFFSET paged)


def builtin_views() -> list[View]:
    return [
        View("My open", f"assignee:me {OPEN}"),
        View("Unassigned", "is:unassigned status:new,open"),
        View("Due soon", "sla:due<2h status:new,open", sort="sla"),
        View("Breached", "sla:breached status:new,open", sort="sla"),
        View("Quarantine", QUARANTINE, "quarantine"),
        View("All", ""),
    ]


def all_views(session: Session, settings: Settings) -> list[View]:
    views = builtin_views()
    views += [View(v.name, v.query, "saved") for v in settings.views]
    for name in session.execute(sa.select(Queue.__table__.c.name).order_by(Queue.__table__.c.name)).scalars():
        quoted = f'"{name}"' if " " in name else name
        views.append(View(name, f"queue:{quoted} {OPEN}", "queue"))
    return views


def view_count(session: Session, view: View, ctx: QueryContext) -> int:
    if view.kind == "quarantine":
        R = RawMessage.__table__.c
        return session.execute(sa.select(sa.func.count()).where(R.state == QUARANTINED)).scalar_one()
    return count(session, parse_query(view.query), ctx)


class Pager:
    """Rows of one query, fetched a page at a time and cached until the data changes."""

    def __init__(self, database: Database, query: Query, make_ctx: Callable[[], QueryContext],
                 sort: str | None = None):
        self.database, self.query, self.make_ctx, self.sort = database, query, make_ctx, sort
        self.total = 0
        self.pages: dict[int, list[Row]] = {}

    def reload(self) -> int:
        """Forget cached pages and recount (one COUNT); relative times in the query move on with the clock."""
        self.ctx = self.make_ctx()
        self.where = compile_query(self.query, self.ctx)
        with self.database.read() as session:
            self.total = count(session, self.query, self.ctx)
        self.pages.clear()
        return self.total

    def row(self, index: int) -> Row | None:
        if not 0 <= index < self.total:
            return None
        page = self.page(index // PAGE)
        offset = index % PAGE
        return page[offset] if offset < len(page) else None

    def page(self, number: int) -> list[Row]:
        if number not in self.pages:
            self.pages[number] = self._fetch(number)
        return self.pages[number]

    def _fetch(self, number: int) -> list[Row]:
        if self.sort:
            stmt = sa.select(T.id).where(self.where).order_by(*sort_order(self.sort)).limit(PAGE).offset(number * PAGE)
            with self.database.read() as session:
                return rows_for(session, list(session.execute(stmt).scalars()))
        stmt = sa.select(T.id).where(self.where).order_by(T.created_at.desc(), T.id.desc()).limit(PAGE)
        before = self.pages.get(number - 1)
        if before and len(before) == PAGE:
            last = before[-1]
            stmt = stmt.where(sa.or_(T.created_at < last.created_at,
                                     sa.and_(T.created_at == last.created_at, T.id < last.id)))
        else:
            stmt = stmt.offset(number * PAGE)
        with self.database.read() as session:
            ids = list(session.execute(stmt).scalars())
            return rows_for(session, ids)


def rows_for(session: Session, ids: list[int]) -> list[Row]:
    if not ids:
        return []
    C, A = Customer.__table__.c, Agent.__table__.c
    stmt = (
        sa.select(T.id, T.subject, T.status, T.priority, C.name, C.email, A.login, T.created_at,
                  nearest_due().label("due"), T.version)
        .join(Customer.__table__, C.id == T.requester_id)
        .outerjoin(Agent.__table__, A.id == T.assignee_id)
        .where(T.id.in_(ids))
    )
    by_id = {}
    for r in session.execute(stmt):
        due = r.due
        if isinstance(due, str):
            due = datetime.fromisoformat(due)
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=timezone.utc)
        by_id[r.id] = Row(r.id, r.subject, r.status, r.priority, r.name or r.email, r.login, r.created_at, due,
                          r.version)
    return [by_id[i] for i in ids if i in by_id]


# --- formatting (pure) ----------------------------------------------------------------------

def short_span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def age(created: datetime, now: datetime) -> str:
    return short_span((now - created).total_seconds())


def sla_countdown(due: datetime | None, now: datetime) -> tuple[str, str]:
    """(text, urgency) — urgency is breached, soon (< 1 h), near (< 4 h), ok or none."""
    if due is None:
        return "", "none"
    left = (due - now).total_seconds()
    if left < 0:
        return "-" + short_span(left), "breached"
    return short_span(left), "soon" if left < 3600 else "near" if left < 4 * 3600 else "ok"


# --- the ticket screen ----------------------------------------------------------------------

@dataclass
class TicketView:
    detail: dict
    events: list[dict]
    other_tickets: list[Row] = field(default_factory=list)


def load_ticket(database: Database, ticket_id: int) -> TicketView:
    now = utcnow()
    with database.read() as session:
        detail = ticket_detail(session, ticket_id, now)
        events = events_for(session, ticket_id)
        C = Customer.__table__.c
        requester = session.execute(sa.select(C.id).where(C.email == detail["requester"])).scalar()
        ids = list(session.execute(
            sa.select(T.id).where(T.requester_id == requester, T.id != ticket_id)
            .order_by(T.created_at.desc()).limit(8)).scalars())
        others = rows_for(session, ids)
    return TicketView(detail, events, others)


def split_quote(body: str) -> tuple[str, str]:
    return quote_split(body or "")


def ticket_version(database: Database, ticket_id: int) -> int | None:
    with database.read() as session:
        return session.execute(sa.select(T.version).where(T.id == ticket_id)).scalar()


# --- changes ------------------------------------------------------------------------------

def apply_changes(database: Database, login: str, versions: dict[int, int], changes: Changes) -> int:
    """One transaction over every ticket, refusing any the agent did not see as it is now."""
    with database.write() as session:
        actor = resolve_actor(session, login)
        if len(versions) == 1:
            (ticket_id, version), = versions.items()
            return update_ticket(session, ticket_id, changes, actor, expected_version=version)
        return bulk_update(session, list(versions), changes, actor, expected_versions=dict(versions))


def parse_snooze(text: str, now: datetime) -> datetime:
    """`30m`, `4h`, `2d`, `1w`, or a date/time `2026-12-01` / `2026-12-01T09:00` (local time)."""
    text = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[:-1].isdigit() and text[-1:] in units:
        return now + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time (try 4h, 2d or 2026-12-01T09:00)") from None
    if when.tzinfo is None:
        when = when.astimezone()
    if when <= now:
        raise ValueError(f"{text!r} is in the past")
    return when.astimezone(timezone.utc)


def parse_tags(text: str) -> Changes:
    """`vip -spam +billing`: plain or + adds, - removes."""
    changes = Changes()
    for word in text.replace(",", " ").split():
        if word.startswith("-") and len(word) > 1:
            changes.remove_tags.append(word[1:])
        elif word.lstrip("+"):
            changes.add_tags.append(word.lstrip("+"))
    return changes


def choices(database: Database) -> dict[str, list[str]]:
    with database.read() as session:
        agents = list(session.execute(sa.select(Agent.__table__.c.login).where(Agent.__table__.c.active)
                                      .order_by(Agent.__table__.c.login)).scalars())
        queues = list(session.execute(sa.select(Queue.__table__.c.name).order_by(Queue.__table__.c.name)).scalars())
    return {"assignee": agents + ["none"], "queue": queues}


def send(database: Database, settings: Settings, login: str, ticket_id: int, kind: str, body: str,
         status: str | None) -> None:
    """A reply goes to the outbox (and sets the status chosen); a note is saved; the draft goes."""
    with database.write() as session:
        actor = resolve_actor(session, login)
        ticket = get_ticket(session, ticket_id)
        if kind == "reply":
            queue_reply(session, settings, ticket, actor, body)
        else:
            add_message(session, ticket, actor, kind="note", body=body, from_addr=login, from_name=login,
                        author_agent_id=actor.agent_id)
        if status and status != ticket.status:
            update_ticket(session, ticket_id, Changes(status=status), actor, expected_version=ticket.version)
        session.execute(sa.delete(Draft).where(Draft.agent_id == actor.agent_id, Draft.ticket_id == ticket_id,
                                               Draft.kind == kind))


def load_draft(database: Database, login: str, ticket_id: int, kind: str) -> str:
    with database.read() as session:
        actor = resolve_actor(session, login)
        draft = session.get(Draft, (actor.agent_id, ticket_id, kind))
        return draft.body if draft else ""


def save_draft(database: Database, login: str, ticket_id: int, kind: str, body: str) -> None:
    with database.write() as session:
        actor = resolve_actor(session, login)
        draft = session.get(Draft, (actor.agent_id, ticket_id, kind))
        if not body.strip():
            if draft:
                session.delete(draft)
            return
        if draft is None:
            session.add(Draft(agent_id=actor.agent_id, ticket_id=ticket_id, kind=kind, body=body))
        else:
            draft.body, draft.updated_at = body, utcnow()


# --- the status bar and quarantine --------------------------------------------------------

@dataclass(frozen=True)
class Health:
    mailboxes: list[tuple[str, bool, str]]  # name, ok, detail
    outbox: int
    dead: int


def health(database: Database, now: datetime) -> Health:
    box = Outbox.__table__.c
    with database.read() as session:
        boxes = []
        for s in session.execute(sa.select(MailboxState).order_by(MailboxState.mailbox)).scalars():
            failed = s.last_error and (s.last_fetch_at is None
                                       or (s.last_error_at and s.last_error_at > s.last_fetch_at))
            when = s.last_error_at if failed else s.last_fetch_at
            boxes.append((s.mailbox, not failed, age(when, now) if when else "never"))
        backlog = session.execute(sa.select(sa.func.count()).where(box.status.in_(("queued", "sending", "failed"))))
        outbox = backlog.scalar_one()
        dead = session.execute(sa.select(sa.func.count()).where(box.status == "dead")).scalar_one()
    return Health(boxes, outbox, dead)


def quarantined(database: Database, limit: int = 500) -> list[tuple[int, datetime, str, str]]:
    R = RawMessage.__table__.c
    with database.read() as session:
        return [(r.id, r.received_at, r.mailbox or r.source, r.error or "")
                for r in session.execute(sa.select(R.id, R.received_at, R.mailbox, R.source, R.error)
                                         .where(R.state == QUARANTINED).order_by(R.id.desc()).limit(limit))]


def check_query(text: str, ctx: QueryContext) -> Query:
    """Parse and compile, so an error surfaces here (with its term) and not at paint time."""
    query = parse_query(text)
    compile_query(query, ctx)
    return query


__all__ = ["QueryError"]
