"""What the console reads and writes, as plain functions over the domain (no Textual here).

The queue pages through tickets with keyset pagination on (created_at, id): the
next page continues after the last row seen, so scrolling through 100,000 rows
never re-reads the ones above.  A jump far away (End, a scrollbar drag) falls
back to OFFSET over the id index only, then fetches the page's details by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
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
from supportdesk import presence
from supportdesk.models import (
    Agent, Customer, Draft, Message, Queue, RawMessage, Ticket, utcnow,
)
from supportdesk.query import Query, QueryContext, QueryError, compile_query, nearest_due, parse_query, sort_order
from supportdesk.sla.policy import recorded_targets
from supportdesk.stats import mail_health
from supportdesk.text import clean_line
from supportdesk.tickets import (
    Actor, Changes, add_message, bulk_update, check_access, get_ticket, resolve_actor, update_ticket,
)

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
    others: str = ""  # another agent has it open: "viewing" or "replying" (queue pages only)


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


def all_views(session: Session, settings: Settings, queue_ids: frozenset[int] | None = None) -> list[View]:
    """Built-in views, saved views, then one per queue (only the agent's own queues when they are limited)."""
    views = builtin_views()
    views += [View(v.name, v.query, "saved") for v in settings.views]
    Q = Queue.__table__.c
    names = sa.select(Q.name).order_by(Q.name)
    if queue_ids is not None:
        names = names.where(Q.id.in_(sorted(queue_ids)))
    for name in session.execute(names).scalars():
        quoted = f'"{name}"' if " " in name else name
        views.append(View(name, f"queue:{quoted} {OPEN}", "queue"))
    return views


def view_count(session: Session, view: View, ctx: QueryContext, settings: Settings | None = None) -> int:
    if view.kind == "quarantine":
        if ctx.queue_ids is not None:  # a limited agent counts what they may handle
            return len(_quarantine_for(session, settings, ctx.me))
        R = RawMessage.__table__.c
        return session.execute(sa.select(sa.func.count()).where(R.state == QUARANTINED)).scalar_one()
    return count(session, parse_query(view.query), ctx)


def _quarantine_for(session: Session, settings: Settings | None, login: str | None) -> set[int]:
    """Quarantined message ids an agent limited to some queues may see (intake decides)."""
    from supportdesk.mail.intake import quarantined as handled

    actor = resolve_actor(session, login) if login else None
    return {row["id"] for row in handled(session, settings, actor)}


class Pager:
    """Rows of one query, fetched a page at a time and cached until the data changes."""

    def __init__(self, database: Database, query: Query, make_ctx: Callable[[], QueryContext],
                 sort: str | None = None):
        self.database, self.query, self.make_ctx, self.sort = database, query, make_ctx, sort
        self.me = make_ctx().me
        self.total = 0
        self.pages: dict[int, list[Row]] = {}
        self.generation = 0
        self.where = compile_query(query, make_ctx())

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

    def cached(self, index: int) -> Row | None:
        """The row if its page is already here; never touches the database (the event loop's view)."""
        if not 0 <= index < self.total:
            return None
        page = self.pages.get(index // PAGE)
        offset = index % PAGE
        return page[offset] if page is not None and offset < len(page) else None

    def snapshot(self, first: int, last: int) -> tuple[int, dict[int, list[Row]], object]:
        """For a worker: a fresh count and the pages covering rows first..last, leaving this pager untouched."""
        ctx = self.make_ctx()
        where = compile_query(self.query, ctx)
        with self.database.read() as session:
            total = count(session, self.query, ctx)
        pages: dict[int, list[Row]] = {}
        for number in range(max(0, first) // PAGE, min(max(0, last), max(0, total - 1)) // PAGE + 1):
            if number * PAGE < total:
                pages[number] = self._fetch(number, where, pages)
        return total, pages, where

    def fetch(self, number: int) -> list[Row]:
        """For a worker: one page, read with the query as last compiled."""
        return self._fetch(number)

    def install(self, total: int, pages: dict[int, list[Row]], where) -> None:
        """Back on the event loop: swap in what a snapshot read."""
        self.total, self.pages, self.where = total, pages, where
        self.generation += 1

    def page(self, number: int) -> list[Row]:
        if number not in self.pages:
            self.pages[number] = self._fetch(number)
        return self.pages[number]

    def _fetch(self, number: int, where=None, pages: dict[int, list[Row]] | None = None) -> list[Row]:
        where = self.where if where is None else where
        pages = self.pages if pages is None else pages
        if self.sort:
            stmt = sa.select(T.id).where(where).order_by(*sort_order(self.sort)).limit(PAGE).offset(number * PAGE)
            with self.database.read() as session:
                return rows_for(session, list(session.execute(stmt).scalars()), self.me)
        stmt = sa.select(T.id).where(where).order_by(T.created_at.desc(), T.id.desc()).limit(PAGE)
        before = pages.get(number - 1)
        if before and len(before) == PAGE:
            last = before[-1]
            stmt = stmt.where(sa.or_(T.created_at < last.created_at,
                                     sa.and_(T.created_at == last.created_at, T.id < last.id)))
        else:
            stmt = stmt.offset(number * PAGE)
        with self.database.read() as session:
            ids = list(session.execute(stmt).scalars())
            return rows_for(session, ids, self.me)


def rows_for(session: Session, ids: list[int], me: str | None = None) -> list[Row]:
    """Table rows in the order of `ids`; given `me`, marked with other agents' presence."""
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
    seen = presence.on_tickets(session, ids, me) if me is not None else {}
    for r in session.execute(stmt):
        due = r.due
        if isinstance(due, str):
            due = datetime.fromisoformat(due)
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=timezone.utc)
        by_id[r.id] = Row(r.id, r.subject, r.status, r.priority, r.name or r.email, r.login, r.created_at, due,
                          r.version, seen.get(r.id, ""))
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
    sla_targets: list[dict] = field(default_factory=list)  # recorded per-target states (sla.policy.recorded_targets)


OTHER_TICKETS = 9  # the customer panel numbers them; keys 1–9 open them


def load_ticket(database: Database, ticket_id: int, now: datetime | None = None,
                queue_ids: frozenset[int] | None = None) -> TicketView:
    """The ticket, its history and the requester's other tickets (within `queue_ids` when limited)."""
    now = now or utcnow()
    with database.read() as session:
        check_access(session, Actor("", queue_ids=queue_ids), [ticket_id])
        detail = ticket_detail(session, ticket_id, now)
        events = events_for(session, ticket_id)
        C = Customer.__table__.c
        requester = session.execute(sa.select(C.id).where(C.email == detail["requester"])).scalar()
        ids = list(session.execute(
            sa.select(T.id).where(T.requester_id == requester, T.id != ticket_id,
                                  T.queue_id.in_(sorted(queue_ids)) if queue_ids is not None else sa.true())
            .order_by(T.created_at.desc()).limit(OTHER_TICKETS)).scalars())
        others = rows_for(session, ids)
        targets = recorded_targets(session, ticket_id, now)
    return TicketView(detail, events, others, targets)


def check_ticket_access(database: Database, ticket_id: int, queue_ids: frozenset[int] | None) -> None:
    """ForbiddenError when the ticket is outside the agent's queues (which may have changed)."""
    with database.read() as session:
        check_access(session, Actor("", queue_ids=queue_ids), [ticket_id])


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


@dataclass(frozen=True)
class ComposeStart:
    """What a compose screen needs before its first key: the subject, the draft, the newest message seen."""

    subject: str
    draft: str
    last_message_id: int
    seen: list = field(default_factory=list)


def compose_start(database: Database, login: str, ticket_id: int, kind: str,
                  now: datetime | None = None) -> ComposeStart:
    M = Message.__table__.c
    with database.read() as session:
        ticket = get_ticket(session, ticket_id)
        last = session.execute(sa.select(sa.func.max(M.id)).where(M.ticket_id == ticket_id)).scalar() or 0
        agent_id = _agent_id(session, login)
        draft = session.get(Draft, (agent_id, ticket_id, kind)) if agent_id is not None else None
        seen = presence.others(session, ticket_id, agent_id, now)
        return ComposeStart(ticket.subject, draft.body if draft else "", last, seen)


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
    """The status bar's mailbox and outbox line (the same numbers as `stats.mail_health`)."""
    with database.read() as session:
        mail = mail_health(session)
    boxes = []
    for box in mail.mailboxes:
        when = box.last_fetch_at if box.ok else box.last_error_at
        boxes.append((box.name, box.ok, age(when, now) if when else "never"))
    return Health(boxes, mail.outbox, mail.dead)


def quarantined(database: Database, settings: Settings | None = None, login: str | None = None,
                queue_ids: frozenset[int] | None = None, limit: int = 500) -> list[tuple[int, datetime, str, str]]:
    """Newest first; an agent limited to some queues sees only their queues' messages."""
    R = RawMessage.__table__.c
    with database.read() as session:
        allowed = _quarantine_for(session, settings, login) if queue_ids is not None else None
        stmt = sa.select(R.id, R.received_at, R.mailbox, R.source, R.error).where(R.state == QUARANTINED)
        if allowed is not None:
            stmt = stmt.where(R.id.in_(sorted(allowed)))
        return [(r.id, r.received_at, r.mailbox or r.source, r.error or "")
                for r in session.execute(stmt.order_by(R.id.desc()).limit(limit))]


# --- attachments ---------------------------------------------------------------------------

def safe_filename(name: str) -> str:
    """A sender's file name reduced to one harmless path component."""
    base = clean_line(name or "").replace("\\", "/").split("/")[-1].strip().lstrip(".")
    return base[:200] or "attachment"


def save_attachment(database: Database, attachment_id: int, target: Path) -> int:
    """Write one attachment to a new file; never overwrites, never leaves half a file. Returns the size.

    ValueError carries the one line to show."""
    from supportdesk.models import Attachment, AttachmentBlob

    At, B = Attachment.__table__.c, AttachmentBlob.__table__.c
    with database.read() as session:
        data = session.execute(sa.select(B.data).join(Attachment.__table__, At.sha256 == B.sha256)
                               .where(At.id == attachment_id)).scalar()
    if data is None:
        raise ValueError(f"attachment #{attachment_id} is gone")
    target = Path(target).expanduser()
    if target.is_dir():
        raise ValueError(f"{target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise ValueError(f"{target.parent} does not exist")
    try:
        handle = open(target, "xb")
    except FileExistsError:
        raise ValueError(f"{target} already exists (not overwritten)") from None
    except OSError as exc:
        raise ValueError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with handle:
            handle.write(data)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise ValueError(f"cannot write {target}: {exc.strerror or exc}") from None
    return len(data)


# --- presence and the send guard ---------------------------------------------------------

def _agent_id(session: Session, login: str) -> int | None:
    return resolve_actor(session, login, require_agent=False).agent_id


def write_presence(database: Database, login: str, wanted: dict[int, str], written: dict[int, str]) -> None:
    """Make this agent's presence rows say `wanted` (ticket id → activity), refreshing their time."""
    with database.write() as session:
        agent_id = _agent_id(session, login)
        if agent_id is None:
            return
        presence.leave(session, agent_id, [t for t in written if t not in wanted])
        presence.mark(session, agent_id, wanted)


def forget_presence(database: Database, login: str) -> None:
    with database.write() as session:
        agent_id = _agent_id(session, login)
        if agent_id is not None:
            presence.leave(session, agent_id)


def ticket_presence(database: Database, login: str, ticket_id: int,
                    now: datetime | None = None) -> list[presence.Seen]:
    with database.read() as session:
        return presence.others(session, ticket_id, _agent_id(session, login), now)


def last_message_id(database: Database, ticket_id: int) -> int:
    M = Message.__table__.c
    with database.read() as session:
        return session.execute(sa.select(sa.func.max(M.id)).where(M.ticket_id == ticket_id)).scalar() or 0


@dataclass(frozen=True)
class Arrival:
    """A message that reached the ticket while a reply was being written."""

    id: int
    kind: str
    who: str
    created_at: datetime
    excerpt: str


def arrivals(database: Database, login: str, ticket_id: int, after_id: int) -> list[Arrival]:
    """What the customer wrote, or other agents replied, after message `after_id` (notes and system lines aside)."""
    M, A = Message.__table__.c, Agent.__table__.c
    with database.read() as session:
        me = _agent_id(session, login)
        stmt = (sa.select(M.id, M.kind, M.from_addr, M.from_name, M.body_text, M.created_at, A.login)
                .outerjoin(Agent.__table__, A.id == M.author_agent_id)
                .where(M.ticket_id == ticket_id, M.id > after_id, M.kind.notin_(("note", "system")))
                .order_by(M.id))
        found = []
        for r in session.execute(stmt):
            if r.kind == "outbound" and me is not None and r.login == login:
                continue
            who = r.login if r.kind == "outbound" and r.login else (r.from_name or r.from_addr or "someone")
            first = next((line.strip() for line in (r.body_text or "").splitlines() if line.strip()), "")
            found.append(Arrival(r.id, r.kind, clean_line(who), r.created_at, clean_line(first)[:120]))
    return found


def visible_queues(database: Database, login: str) -> frozenset[int] | None:
    """The queues this agent is limited to (None: all); read at start and after every change."""
    from supportdesk.permissions import visible_queue_ids

    with database.read() as session:
        return visible_queue_ids(session, login)


def check_query(text: str, ctx: QueryContext) -> Query:
    """Parse and compile, so an error surfaces here (with its term) and not at paint time."""
    query = parse_query(text)
    compile_query(query, ctx)
    return query


__all__ = ["QueryError"]
