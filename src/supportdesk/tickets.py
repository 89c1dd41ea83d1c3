"""Ticket services: the one place tickets change.

Both faces (console and command line), intake and the daemon call these.  Every
change is recorded as an `Event` and bumps the ticket's `version`; a caller that
read version N and writes after someone else wrote gets `ConflictError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from supportdesk.db import touch
from supportdesk.models import (
    CHANNELS, MESSAGE_KINDS, PRIORITIES, PRIORITY_RANK, STATUSES, SYSTEM_ACTOR, Agent, Attachment, AttachmentBlob,
    AgentQueue, Customer, Event, Message, Organization, Participant, Queue, Tag, Ticket, TicketTag, utcnow,
)

# Domains whose users are individuals, not one organization.
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.de", "hotmail.com", "outlook.com", "live.com", "msn.com",
    "aol.com", "icloud.com", "me.com", "gmx.de", "gmx.net", "web.de", "proton.me", "protonmail.com", "mail.com",
    "yandex.ru", "mail.ru", "qq.com", "163.com", "t-online.de", "orange.fr", "free.fr", "libero.it",
})
CHANNEL_MESSAGE_KIND = {"email": "inbound", "web": "inbound", "phone": "call", "chat": "chat", "social": "social"}
OPEN_STATUSES = ("new", "open", "pending", "on_hold")
BULK_IN_LIMIT = 500
# Every id column is INTEGER: 32 bits on PostgreSQL. SQLite's rowids could go further but never do
# (ids count up from 1; imports renumber), so a larger number names no row on either database.
MAX_ID = 2**31 - 1


def id_in_range(row_id: int) -> bool:
    """Whether `row_id` could name a row at all. Asking the database about one that cannot fails
    (OverflowError on SQLite, "integer out of range" on PostgreSQL) instead of finding nothing."""
    return 1 <= row_id <= MAX_ID


class ServiceError(Exception):
    """A refusal a user can act on; the message is one line."""


class NotFoundError(ServiceError):
    pass


class InvalidError(ServiceError):
    pass


class ConflictError(ServiceError):
    pass


class ForbiddenError(InvalidError):
    """The acting agent may not do this (a ticket or queue outside theirs, an admin-only command)."""


@dataclass(frozen=True)
class Actor:
    """Who is acting: an agent's login, or `system` for the daemon and automations."""

    login: str
    agent_id: int | None = None
    queue_ids: frozenset[int] | None = None  # None: every queue

    @classmethod
    def system(cls) -> "Actor":
        return cls(SYSTEM_ACTOR, None)


@dataclass
class Changes:
    """What to change on tickets; None means leave alone."""

    status: str | None = None
    priority: str | None = None
    assignee: str | None = None  # a login, or "none"
    queue: str | None = None
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    snoozed_until: datetime | None = None
    unsnooze: bool = False

    def empty(self) -> bool:
        return not (
            self.status or self.priority or self.assignee or self.queue or self.add_tags or self.remove_tags
            or self.snoozed_until or self.unsnooze
        )


# --- lookups -------------------------------------------------------------------------------

def resolve_actor(session: Session, login: str, *, require_agent: bool = True) -> Actor:
    if login == SYSTEM_ACTOR:
        return Actor.system()
    agent = session.exec(select(Agent).where(Agent.login == login)).first()
    if agent is None or not agent.active:
        if not require_agent:
            return Actor(login, None)
        state = "is disabled" if agent else "is not a supportdesk agent"
        raise InvalidError(f"{login} {state}; ask an admin to run `supportdesk agents add {login}`")
    return Actor(agent.login, agent.id, agent_queue_ids(session, agent.id))


def agent_queue_ids(session: Session, agent_id: int) -> frozenset[int] | None:
    """The queues an agent is limited to, or None when they work every queue."""
    AQ = AgentQueue.__table__.c
    ids = frozenset(session.execute(sa.select(AQ.queue_id).where(AQ.agent_id == agent_id)).scalars())
    return ids or None


def check_access(session: Session, actor: Actor, ticket_ids: Sequence[int]) -> None:
    """Refuse the whole batch if any ticket lies outside the actor's queues."""
    if actor.queue_ids is None:
        return
    T = Ticket.__table__.c
    ticket_ids = [i for i in ticket_ids if id_in_range(i)]
    outside = list(session.execute(
        sa.select(T.id).where(T.id.in_(_id_selectable(session, ticket_ids)), T.queue_id.not_in(actor.queue_ids))
        .order_by(T.id).limit(5)
    ).scalars())
    if outside:
        shown = ", ".join(f"#{i}" for i in outside)
        raise ForbiddenError(f"ticket {shown} is not in your queues" if len(outside) == 1
                             else f"tickets {shown} are not in your queues")


def check_queue_access(actor: Actor, queue: Queue) -> None:
    if actor.queue_ids is not None and queue.id not in actor.queue_ids:
        raise ForbiddenError(f"queue {queue.name!r} is not one of your queues")


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id, populate_existing=True) if id_in_range(ticket_id) else None
    if ticket is None:
        raise NotFoundError(f"no ticket #{ticket_id}")
    return ticket


def get_queue(session: Session, name: str) -> Queue:
    queue = session.exec(select(Queue).where(sa.func.lower(Queue.name) == name.lower())).first()
    if queue is None:
        known = ", ".join(session.exec(select(Queue.name).order_by(Queue.name)).all()) or "none"
        raise InvalidError(f"unknown queue {name!r} (known: {known})")
    return queue


def queue_id(session: Session, name: str) -> int:
    """A queue's id by name (case-insensitive), refusing unknown names."""
    found = session.execute(sa.select(Queue.__table__.c.id).where(
        sa.func.lower(Queue.__table__.c.name) == name.lower())).scalar()
    if found is None:
        known = ", ".join(session.exec(select(Queue.name).order_by(Queue.name)).all()) or "none"
        raise InvalidError(f"unknown queue {name!r} (known: {known})")
    return found


def ensure_queue(session: Session, name: str, address: str | None = None) -> Queue:
    queue = session.exec(select(Queue).where(sa.func.lower(Queue.name) == name.lower())).first()
    if queue is None:
        queue = Queue(name=name, address=address)
        session.add(queue)
        session.flush()
    elif address and not queue.address:
        queue.address = address
    return queue


def get_agent(session: Session, login: str) -> Agent:
    agent = session.exec(select(Agent).where(sa.func.lower(Agent.login) == login.lower())).first()
    if agent is None:
        raise InvalidError(f"unknown agent {login!r}; see `supportdesk agents list`")
    if not agent.active:
        raise InvalidError(f"agent {login!r} is disabled")
    return agent


def get_or_create_tag(session: Session, name: str) -> Tag:
    name = normalize_tag(name)
    tag = session.exec(select(Tag).where(Tag.name == name)).first()
    if tag is None:
        tag = Tag(name=name)
        session.add(tag)
        session.flush()
    return tag


def normalize_tag(name: str) -> str:
    cleaned = name.strip().lower()
    if not cleaned or any(ch.isspace() or ch in ",\"'" for ch in cleaned) or cleaned.startswith("-"):
        raise InvalidError(f"bad tag {name!r}: tags are single words without commas or quotes")
    return cleaned


@dataclass(frozen=True)
class CustomerRef:
    id: int
    email: str
    name: str


def get_or_create_customer(session: Session, email: str, name: str = "") -> CustomerRef:
    """The customer with this address, created (with their organization) when new."""
    email = email.strip().lower()
    if "@" not in email or any(ch.isspace() for ch in email):
        raise InvalidError(f"bad email address {email!r}")
    C, O = Customer.__table__, Organization.__table__
    row = session.execute(sa.select(C.c.id, C.c.name).where(C.c.email == email)).first()
    if row is not None:
        if name and not row.name:
            session.execute(sa.update(C).where(C.c.id == row.id).values(name=name))
        return CustomerRef(row.id, email, row.name or name)
    domain = email.rsplit("@", 1)[1]
    org_id = None
    if domain not in FREEMAIL_DOMAINS:
        org_id = session.execute(sa.select(O.c.id).where(O.c.domain == domain)).scalar()
        if org_id is None:
            org_name = domain.split(".")[0].capitalize() if domain.count(".") else domain
            org_id = session.execute(O.insert().values(name=org_name, domain=domain, created_at=utcnow())
                                     .returning(O.c.id)).scalar_one()
    customer_id = session.execute(C.insert().values(email=email, name=name, organization_id=org_id,
                                                    created_at=utcnow()).returning(C.c.id)).scalar_one()
    return CustomerRef(customer_id, email, name)


# --- creating -------------------------------------------------------------------------------

def create_ticket(
    session: Session,
    actor: Actor,
    *,
    requester_email: str,
    subject: str,
    body: str = "",
    requester_name: str = "",
    channel: str = "email",
    queue: str = "General",
    mailbox: str | None = None,
    priority: str = "normal",
    status: str = "new",
    tags: Sequence[str] = (),
    created_at: datetime | None = None,
    message_id: str | None = None,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    raw_message_id: int | None = None,
    parent_id: int | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> Ticket:
    """A new ticket with its first message (from the customer, or logged by an agent)."""
    _check_choice("channel", channel, CHANNELS)
    _check_choice("priority", priority, PRIORITIES)
    _check_choice("status", status, STATUSES)
    now = created_at or utcnow()
    target_queue = get_queue(session, queue) if actor.queue_ids is not None else None
    if target_queue is not None:
        check_queue_access(actor, target_queue)
    customer = get_or_create_customer(session, requester_email, requester_name)
    ticket = Ticket(
        subject=subject.strip() or "(no subject)", status=status, priority=priority,
        priority_rank=PRIORITY_RANK[priority], channel=channel,
        queue_id=target_queue.id if target_queue is not None else queue_id(session, queue),
        requester_id=customer.id,
        mailbox=mailbox, created_at=now, updated_at=now, parent_id=parent_id, unread=True,
    )
    session.add(ticket)
    session.flush()
    touch(session, [ticket.id])
    record(session, ticket.id, actor, "created", None, f"{channel} ticket", at=now)
    if parent_id:
        record(session, ticket.id, actor, "parent", None, str(parent_id), at=now)
    for tag in tags:
        _add_tag(session, ticket.id, get_or_create_tag(session, tag), actor, now)
    for address in cc:
        add_participant(session, ticket.id, address)
    add_message(
        session, ticket, actor, kind=CHANNEL_MESSAGE_KIND[channel], body=body, subject=ticket.subject,
        from_addr=customer.email, from_name=customer.name, to=to, cc=cc, created_at=now, message_id=message_id,
        in_reply_to=in_reply_to, references=references, raw_message_id=raw_message_id,
        author_agent_id=actor.agent_id if channel != "email" else None, record_event=False,
    )
    return ticket


def add_participant(session: Session, ticket_id: int, email: str, role: str = "cc") -> None:
    email = email.strip().lower()
    if not email:
        return
    exists = session.get(Participant, (ticket_id, email))
    if exists is None:
        session.add(Participant(ticket_id=ticket_id, email=email, role=role))
        session.flush()


def add_message(
    session: Session,
    ticket: Ticket,
    actor: Actor,
    *,
    kind: str,
    body: str,
    subject: str | None = None,
    from_addr: str = "",
    from_name: str = "",
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    created_at: datetime | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto: bool = False,
    raw_message_id: int | None = None,
    author_agent_id: int | None = None,
    record_event: bool = True,
) -> "StoredMessage":
    """Append a message to a ticket's thread and keep the ticket's summary fields in step."""
    _check_choice("message kind", kind, MESSAGE_KINDS)
    if actor.queue_ids is not None and ticket.queue_id not in actor.queue_ids:
        raise ForbiddenError(f"ticket #{ticket.id} is not in your queues")
    now = created_at or utcnow()
    subject = subject or ticket.subject
    message_pk = session.execute(Message.__table__.insert().values(
        ticket_id=ticket.id, kind=kind, author_agent_id=author_agent_id, from_addr=from_addr, from_name=from_name,
        to_addrs=json.dumps(list(to)), cc_addrs=json.dumps(list(cc)), subject=subject, body_text=body,
        message_id=message_id, in_reply_to=in_reply_to, references=" ".join(references), auto=auto,
        raw_message_id=raw_message_id, created_at=now,
    ).returning(Message.__table__.c.id)).scalar_one()
    message = StoredMessage(message_pk, ticket.id, kind, message_id, subject)
    values: dict = {"message_count": Ticket.message_count + 1, "updated_at": max(now, ticket.updated_at)}
    if kind in ("inbound", "call", "chat", "social"):
        values["last_inbound_at"] = now
        values["unread"] = kind == "inbound" or ticket.unread
    elif kind == "outbound":
        values["last_outbound_at"] = now
        if not auto:
            values["unread"] = False
    _bump(session, ticket, values)
    if record_event:
        record(session, ticket.id, actor, "message", None, f"{kind} #{message.id}", at=now)
    return message


@dataclass(frozen=True)
class StoredMessage:
    """What callers need of a message just written (cheaper than an ORM object)."""

    id: int
    ticket_id: int
    kind: str
    message_id: str | None
    subject: str


def store_blobs(session: Session, rows: list[dict]) -> None:
    """Attachment contents, each stored once however often it is attached."""
    B = AttachmentBlob.__table__
    have = set(session.execute(sa.select(B.c.sha256).where(B.c.sha256.in_([r["sha256"] for r in rows]))).scalars())
    missing = [r for r in rows if r["sha256"] not in have]
    if missing:
        session.execute(B.insert(), missing)


def save_attachments(session: Session, message_id: int, files: Sequence[tuple[str, str, bytes]],
                     *, content_ids: Sequence[str | None] = (), inline: Sequence[bool] = ()) -> None:
    """Attachment rows for a message (filename, content type, bytes), each content stored once."""
    if not files:
        return
    blobs, rows = {}, []
    for n, (filename, content_type, data) in enumerate(files):
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = {"sha256": digest, "size": len(data), "data": data}
        rows.append({"message_id": message_id, "filename": filename, "content_type": content_type,
                     "size": len(data), "sha256": digest,
                     "content_id": content_ids[n] if n < len(content_ids) else None,
                     "inline": inline[n] if n < len(inline) else False})
    store_blobs(session, list(blobs.values()))
    session.execute(Attachment.__table__.insert(), rows)


def record(session: Session, ticket_id: int, actor: Actor, field_name: str, old, new, at: datetime | None = None):
    """One audit event (who, when, what, old, new)."""
    session.execute(Event.__table__.insert().values(
        ticket_id=ticket_id, actor=actor.login, at=at or utcnow(), field=field_name,
        old=None if old is None else str(old), new=None if new is None else str(new),
    ))


def _bump(session: Session, ticket: Ticket, values: dict) -> None:
    """Write ticket fields only if nobody changed the ticket since we read it."""
    T = Ticket.__table__.c
    changed = [T.version] + [getattr(T, name) for name in values]
    row = session.execute(
        sa.update(Ticket.__table__).where(T.id == ticket.id, T.version == ticket.version)
        .values(version=T.version + 1, **values).returning(*changed)
    ).first()
    if row is None:
        raise ConflictError(f"ticket #{ticket.id} was changed by someone else meanwhile; reload and try again")
    for column, value in zip(changed, row):
        set_committed_value(ticket, column.name, value)
    touch(session, [ticket.id])


def _check_choice(what: str, value: str, choices: Iterable[str]) -> None:
    if value not in choices:
        raise InvalidError(f"unknown {what} {value!r} (expected {', '.join(choices)})")


# --- changing -------------------------------------------------------------------------------

def update_ticket(
    session: Session, ticket_id: int, changes: Changes, actor: Actor, *, expected_version: int | None = None
) -> int:
    """Change one ticket; with `expected_version`, refuse if it moved on since it was read."""
    ticket = get_ticket(session, ticket_id)
    if expected_version is not None and ticket.version != expected_version:
        raise ConflictError(
            f"ticket #{ticket_id} was changed by someone else (version {ticket.version}, you saw "
            f"{expected_version}); reload and try again"
        )
    return bulk_update(session, [ticket_id], changes, actor, expected_versions={ticket_id: ticket.version})


def bulk_update(
    session: Session,
    ticket_ids: Sequence[int],
    changes: Changes,
    actor: Actor,
    *,
    expected_versions: dict[int, int] | None = None,
) -> int:
    """Apply `changes` to many tickets in the caller's transaction, set-based.

    Returns how many tickets actually changed.  Events are written with
    INSERT … SELECT so 100,000 tickets take seconds, not minutes.
    """
    if changes.status:
        _check_choice("status", changes.status, STATUSES)
    if changes.priority:
        _check_choice("priority", changes.priority, PRIORITIES)
    check_access(session, actor, ticket_ids)
    values: dict = {}
    event_fields: list[tuple[str, sa.ColumnElement, object, object]] = []
    T = Ticket.__table__.c
    now = utcnow()
    if changes.status:
        values["status"] = changes.status
        event_fields.append(("status", T.status, T.status, changes.status))
    if changes.priority:
        values["priority"] = changes.priority
        values["priority_rank"] = PRIORITY_RANK[changes.priority]
        event_fields.append(("priority", T.priority, T.priority, changes.priority))
    if changes.assignee:
        agent_id = None if changes.assignee.lower() == "none" else get_agent(session, changes.assignee).id
        login = None if agent_id is None else changes.assignee.lower()
        values["assignee_id"] = agent_id
        old_login = (
            sa.select(Agent.__table__.c.login).where(Agent.__table__.c.id == T.assignee_id).scalar_subquery()
        )
        event_fields.append(("assignee", T.assignee_id, old_login, login))
    if changes.queue:
        queue = get_queue(session, changes.queue)
        check_queue_access(actor, queue)
        values["queue_id"] = queue.id
        old_name = sa.select(Queue.__table__.c.name).where(Queue.__table__.c.id == T.queue_id).scalar_subquery()
        event_fields.append(("queue", T.queue_id, old_name, queue.name))
    if changes.snoozed_until or changes.unsnooze:
        values["snoozed_until"] = changes.snoozed_until
        event_fields.append(("snoozed_until", T.snoozed_until, T.snoozed_until, changes.snoozed_until))
    add_tags = [get_or_create_tag(session, t) for t in changes.add_tags]
    remove_tags = [normalize_tag(t) for t in changes.remove_tags]

    ids = _id_selectable(session, ticket_ids)
    in_scope = T.id.in_(ids)
    if expected_versions:
        current = dict(session.execute(
            sa.select(T.id, T.version).where(T.id.in_(list(expected_versions))).with_for_update()
        ).all())
        for tid, version in expected_versions.items():
            if current.get(tid) != version:
                raise ConflictError(f"ticket #{tid} was changed by someone else meanwhile; reload and try again")

    field_differs = [column.is_distinct_from(_bind_for(column, values[key])) for key, column in
                     ((k, getattr(T, k)) for k in values if k != "priority_rank")]
    tag_differs = []
    TT, G = TicketTag.__table__.c, Tag.__table__.c
    for tag in add_tags:
        tag_differs.append(~sa.exists(sa.select(1).where(TT.ticket_id == T.id, TT.tag_id == tag.id)))
    remove_ids = []
    if remove_tags:
        remove_ids = list(session.execute(sa.select(G.id).where(G.name.in_(remove_tags))).scalars())
        if remove_ids:
            tag_differs.append(sa.exists(sa.select(1).where(TT.ticket_id == T.id, TT.tag_id.in_(remove_ids))))
    if not field_differs and not tag_differs:
        return 0
    changed_condition = sa.and_(in_scope, sa.or_(*field_differs, *tag_differs))
    changed = session.execute(sa.select(sa.func.count()).where(changed_condition)).scalar_one()
    if not changed:
        return 0
    touch(session, ticket_ids)

    E = Event.__table__
    for name, column, old_expr, new_value in event_fields:
        new_text = _event_text(new_value)
        session.execute(E.insert().from_select(
            ["ticket_id", "actor", "at", "field", "old", "new"],
            sa.select(
                T.id, sa.literal(actor.login), sa.literal(now, Event.__table__.c.at.type), sa.literal(name),
                sa.cast(old_expr, sa.String), sa.literal(new_text, sa.String),
            ).where(in_scope, column.is_distinct_from(_bind_for(column, values[_value_key(name)]))),
        ))
    _bump_versions(session, in_scope, field_differs, tag_differs, values, changes.status, now)
    for tag in add_tags:
        missing = sa.and_(in_scope, ~sa.exists(sa.select(1).where(TT.ticket_id == T.id, TT.tag_id == tag.id)))
        session.execute(E.insert().from_select(
            ["ticket_id", "actor", "at", "field", "old", "new"],
            sa.select(T.id, sa.literal(actor.login), sa.literal(now, E.c.at.type), sa.literal("tag"),
                      sa.null(), sa.literal(tag.name)).where(missing),
        ))
        session.execute(TicketTag.__table__.insert().from_select(
            ["ticket_id", "tag_id"], sa.select(T.id, sa.literal(tag.id)).where(
                T.id.in_(ids), ~sa.exists(sa.select(1).where(TT.ticket_id == T.id, TT.tag_id == tag.id)))
        ))
    if remove_ids:
        for tag_id, tag_name in session.execute(sa.select(G.id, G.name).where(G.id.in_(remove_ids))).all():
            having = sa.and_(in_scope, sa.exists(sa.select(1).where(TT.ticket_id == T.id, TT.tag_id == tag_id)))
            session.execute(E.insert().from_select(
                ["ticket_id", "actor", "at", "field", "old", "new"],
                sa.select(T.id, sa.literal(actor.login), sa.literal(now, E.c.at.type), sa.literal("tag"),
                          sa.literal(tag_name), sa.null()).where(having),
            ))
            session.execute(TicketTag.__table__.delete().where(TT.tag_id == tag_id, TT.ticket_id.in_(ids)))

    session.expire_all()
    return changed


def _value_key(event_name: str) -> str:
    return {"assignee": "assignee_id", "queue": "queue_id"}.get(event_name, event_name)


def _bind_for(column, value):
    return sa.literal(value, column.type) if value is not None else sa.null()


def _event_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _bump_versions(session: Session, in_scope, field_differs: list, tag_differs: list, values: dict,
                   status: str | None, now: datetime) -> None:
    """One version step for each changed ticket, however many fields and tags change: those whose
    tags alone change step here (before the tag rows move), the others with their fields.

    The "no field differs" test stays a grouped NOT: folded into `status IS 'closed'` it makes
    SQLite walk the status index instead of the ids (4× slower at 100,000 tickets)."""
    T = Ticket.__table__.c
    bump = {"version": T.version + 1, "updated_at": sa.literal(now, T.updated_at.type)}
    if tag_differs:
        tags_only = [in_scope, sa.or_(*tag_differs)]
        if field_differs:
            tags_only.append(sa.not_(sa.or_(*field_differs).self_group()))
        session.execute(sa.update(Ticket.__table__).where(*tags_only).values(**bump))
    if not field_differs:
        return
    extra = {}
    if status:
        entering = T.status.is_distinct_from(status)
        if status == "solved":
            extra["solved_at"] = sa.case((entering, sa.literal(now, T.solved_at.type)), else_=T.solved_at)
        elif status == "closed":
            extra["closed_at"] = sa.case((entering, sa.literal(now, T.closed_at.type)), else_=T.closed_at)
            extra["solved_at"] = sa.func.coalesce(T.solved_at, sa.literal(now, T.solved_at.type))
        else:
            extra["solved_at"] = None
            extra["closed_at"] = None
    session.execute(
        sa.update(Ticket.__table__).where(in_scope, sa.or_(*field_differs))
        .values(**bump, **extra, **values)
        .execution_options(synchronize_session=False)
    )


def _id_selectable(session: Session, ticket_ids: Sequence[int]):
    """The ids as something SQL can join: a literal list when short, a temp table when long."""
    ids = list(dict.fromkeys(int(i) for i in ticket_ids))
    if len(ids) <= BULK_IN_LIMIT:
        return ids or [-1]
    session.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS bulk_ids (id INTEGER PRIMARY KEY)"))
    session.execute(sa.text("DELETE FROM bulk_ids"))
    session.execute(sa.text("INSERT INTO bulk_ids (id) VALUES (:id)"), [{"id": i} for i in ids])
    return sa.select(sa.column("id")).select_from(sa.table("bulk_ids"))


def _add_tag(session: Session, ticket_id: int, tag: Tag, actor: Actor, at: datetime) -> None:
    if session.get(TicketTag, (ticket_id, tag.id)) is None:
        session.add(TicketTag(ticket_id=ticket_id, tag_id=tag.id))
        record(session, ticket_id, actor, "tag", None, tag.name, at=at)
        session.flush()


def existing_ids(session: Session, ticket_ids: Sequence[int]) -> list[int]:
    """The given ids, refusing the whole batch if any is unknown (nothing half-done)."""
    wanted = list(dict.fromkeys(ticket_ids))
    possible = [i for i in wanted if id_in_range(i)]
    found: set[int] = set()
    for start in range(0, len(possible), 20000):
        chunk = possible[start:start + 20000]
        found.update(session.execute(sa.select(Ticket.__table__.c.id).where(Ticket.__table__.c.id.in_(chunk))).scalars())
    missing = [i for i in wanted if i not in found]
    if missing:
        shown = ", ".join(f"#{i}" for i in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise NotFoundError(f"no such ticket: {shown}")
    return wanted


# --- merging --------------------------------------------------------------------------------

def merge_tickets(session: Session, source_id: int, target_id: int, actor: Actor) -> Ticket:
    """Move the source's thread into the target; the source keeps its id and points at the target."""
    if source_id == target_id:
        raise InvalidError("cannot merge a ticket into itself")
    source, target = get_ticket(session, source_id), get_ticket(session, target_id)
    check_access(session, actor, [source_id, target_id])
    if source.merged_into_id:
        raise InvalidError(f"ticket #{source_id} is already merged into #{source.merged_into_id}")
    if target.merged_into_id:
        raise InvalidError(f"ticket #{target_id} was merged into #{target.merged_into_id}; merge into that one")
    now = utcnow()
    M, TT, P = Message.__table__.c, TicketTag.__table__.c, Participant.__table__.c
    moved = session.execute(sa.update(Message.__table__).where(M.ticket_id == source_id).values(ticket_id=target_id)).rowcount
    tag_ids = session.execute(sa.select(TT.tag_id).where(TT.ticket_id == source_id)).scalars().all()
    for tag_id in tag_ids:
        _add_tag(session, target_id, session.get(Tag, tag_id), actor, now)
    for email in session.execute(sa.select(P.email).where(P.ticket_id == source_id)).scalars().all():
        add_participant(session, target_id, email)
    source_requester = session.get(Customer, source.requester_id)
    if source.requester_id != target.requester_id:
        add_participant(session, target_id, source_requester.email, role="merged")
    _bump(session, target, {"message_count": Ticket.message_count + moved, "updated_at": now})
    record(session, target_id, actor, "merged_from", None, str(source_id), at=now)
    _bump(session, source, {
        "merged_into_id": target_id, "message_count": 0, "status": "closed", "closed_at": now, "updated_at": now,
    })
    record(session, source_id, actor, "merged_into", None, str(target_id), at=now)
    if source.status != "closed":
        record(session, source_id, actor, "status", source.status, "closed", at=now)
    add_message(session, target, actor, kind="system", body=f"Ticket #{source_id} was merged into this ticket "
                f"by {actor.login} ({moved} messages moved).", record_event=False)
    return target


def follow_merges(session: Session, ticket_id: int) -> int:
    """The ticket that now holds a (possibly merged) ticket's thread."""
    seen = set()
    while ticket_id not in seen:
        seen.add(ticket_id)
        nxt = session.execute(
            sa.select(Ticket.__table__.c.merged_into_id).where(Ticket.__table__.c.id == ticket_id)
        ).scalar()
        if not nxt:
            return ticket_id
        ticket_id = nxt
    return ticket_id


# --- agents and queues -----------------------------------------------------------------------

def add_agent(session: Session, login: str, *, name: str = "", email: str | None = None, role: str = "agent") -> Agent:
    _check_choice("role", role, ("agent", "admin"))
    login = login.strip().lower()
    if not login or any(ch.isspace() or ch in ",:\"'" for ch in login):
        raise InvalidError(f"bad agent login {login!r}")
    if login == SYSTEM_ACTOR:
        raise InvalidError("'system' is reserved for automations")
    agent = session.exec(select(Agent).where(Agent.login == login)).first()
    if agent is not None:
        if agent.active:
            raise InvalidError(f"agent {login!r} already exists")
        agent.active = True
        agent.role = role
        return agent
    agent = Agent(login=login, name=name or login, email=email, role=role)
    session.add(agent)
    session.flush()
    return agent


def disable_agent(session: Session, login: str) -> Agent:
    agent = get_agent(session, login)
    agent.active = False
    return agent
