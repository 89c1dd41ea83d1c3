"""The tables.  Every instant is stored in UTC; see `UTCDateTime`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("email", "phone", "chat", "social", "web")
MESSAGE_KINDS = ("inbound", "outbound", "note", "call", "chat", "social", "system")
DELIVERY_STATES = ("queued", "sending", "sent", "failed", "dead", "bounced", "cancelled")
ROLES = ("agent", "admin")
SYSTEM_ACTOR = "system"
# The rows a sender may still have to send; indexed on its own so claiming stays O(1) as `sent` rows pile up.
OUTBOX_UNFINISHED = "status IN ('queued', 'failed', 'sending')"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; naive UTC in the column.

    Storing naive UTC keeps SQLite's text ordering correct; refusing naive input
    keeps local time out of the database.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def _sparse_index(table: str, column: str) -> sa.Index:
    """An index of the rows where the column is set: most rows leave it NULL and cost nothing."""
    where = sa.text(f"{column} IS NOT NULL")
    return sa.Index(f"ix_{table}_{column}", column, sqlite_where=where, postgresql_where=where)


def _ts(nullable: bool = False, index: bool = False):
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    id: Optional[int] = Field(default=None, primary_key=True)
    login: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    name: str = ""
    email: Optional[str] = None
    role: str = Field(default="agent", sa_column=sa.Column(sa.String(16), nullable=False, server_default="agent"))
    active: bool = Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.true()))
    signature: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Queue(SQLModel, table=True):
    __tablename__ = "queues"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(100), unique=True, nullable=False))
    address: Optional[str] = None
    signature: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False, index=True))
    domain: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(255), unique=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(sa_column=sa.Column(sa.String(320), unique=True, nullable=False))
    name: str = ""
    organization_id: Optional[int] = Field(default=None, foreign_key="organizations.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    __table_args__ = (
        sa.Index("ix_tickets_status_created", "status", "created_at"),
        sa.Index("ix_tickets_queue_status", "queue_id", "status"),
        sa.Index("ix_tickets_queue_status_assignee", "queue_id", "status", "assignee_id"),
        sa.Index("ix_tickets_assignee_status", "assignee_id", "status"),
        *[_sparse_index("tickets", c) for c in ("first_response_due", "next_response_due", "resolution_due",
                                                 "snoozed_until")],
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    subject: str = ""
    status: str = Field(default="new", sa_column=sa.Column(sa.String(16), nullable=False))
    priority: str = Field(default="normal", sa_column=sa.Column(sa.String(16), nullable=False))
    priority_rank: int = Field(default=1, sa_column=sa.Column(sa.SmallInteger, nullable=False, index=True))
    channel: str = Field(default="email", sa_column=sa.Column(sa.String(16), nullable=False))
    queue_id: int = Field(foreign_key="queues.id")
    requester_id: int = Field(foreign_key="customers.id", index=True)
    assignee_id: Optional[int] = Field(default=None, foreign_key="agents.id")
    mailbox: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(100)))
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))
    message_count: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    unread: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True))
    last_inbound_at: Optional[datetime] = _ts(nullable=True)
    last_outbound_at: Optional[datetime] = _ts(nullable=True)
    solved_at: Optional[datetime] = _ts(nullable=True)
    closed_at: Optional[datetime] = _ts(nullable=True)
    snoozed_until: Optional[datetime] = _ts(nullable=True)
    sla_policy: Optional[str] = None
    first_response_due: Optional[datetime] = _ts(nullable=True)
    next_response_due: Optional[datetime] = _ts(nullable=True)
    resolution_due: Optional[datetime] = _ts(nullable=True)
    merged_into_id: Optional[int] = Field(default=None, foreign_key="tickets.id")
    parent_id: Optional[int] = Field(default=None, foreign_key="tickets.id")
    external_id: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))


class Tag(SQLModel, table=True):
    __tablename__ = "tags"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(100), unique=True, nullable=False))


class TicketTag(SQLModel, table=True):
    __tablename__ = "ticket_tags"
    __table_args__ = (sa.Index("ix_ticket_tags_tag", "tag_id", "ticket_id"),)
    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True)
    tag_id: int = Field(foreign_key="tags.id", primary_key=True)


class Participant(SQLModel, table=True):
    """Addresses that take part in a ticket besides the requester (CC, forwarded to)."""

    __tablename__ = "participants"
    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True)
    email: str = Field(sa_column=sa.Column(sa.String(320), primary_key=True))
    role: str = "cc"


class RawMessage(SQLModel, table=True):
    """The original bytes of every inbound message, stored before anything else."""

    __tablename__ = "raw_messages"
    __table_args__ = (
        sa.UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_raw_messages_imap"),
        sa.Index("ix_raw_messages_hash", "content_sha256"),
        sa.Index("ix_raw_messages_state", "state"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    mailbox: Optional[str] = None
    uidvalidity: Optional[int] = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    uid: Optional[int] = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    source: str = "imap"
    content_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    message_id_header: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(998), index=True))
    raw: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    state: str = Field(default="stored", sa_column=sa.Column(sa.String(16), nullable=False))
    error: Optional[str] = None
    received_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        sa.Index("ix_messages_ticket_created", "ticket_id", "created_at"),
        _sparse_index("messages", "message_id"),
        _sparse_index("messages", "raw_message_id"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id")
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    author_agent_id: Optional[int] = Field(default=None, foreign_key="agents.id")
    from_addr: str = ""
    from_name: str = ""
    to_addrs: str = "[]"
    cc_addrs: str = "[]"
    subject: str = ""
    body_text: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    body_html: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    message_id: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(998)))
    in_reply_to: Optional[str] = None
    references: str = ""
    auto: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    raw_message_id: Optional[int] = Field(default=None, foreign_key="raw_messages.id")
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class AttachmentBlob(SQLModel, table=True):
    """Attachment content, stored once per distinct content."""

    __tablename__ = "attachment_blobs"
    sha256: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    size: int
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"
    id: Optional[int] = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", index=True)
    filename: str
    content_type: str = "application/octet-stream"
    size: int = 0
    sha256: str = Field(foreign_key="attachment_blobs.sha256")
    content_id: Optional[str] = None
    inline: bool = False


class Event(SQLModel, table=True):
    """The audit trail: one row per changed field."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_ticket_at", "ticket_id", "at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id")
    actor: str
    at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    field: str
    old: Optional[str] = None
    new: Optional[str] = None


class Outbox(SQLModel, table=True):
    """Outbound mail, committed with its exact bytes before any SMTP traffic."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
        sa.Index("ix_outbox_unfinished", "id", sqlite_where=sa.text(OUTBOX_UNFINISHED),
                 postgresql_where=sa.text(OUTBOX_UNFINISHED)),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    message_id: int = Field(foreign_key="messages.id", unique=True)
    status: str = Field(default="queued", sa_column=sa.Column(sa.String(16), nullable=False))
    envelope_from: str = ""
    envelope_to: str = "[]"
    raw: Optional[bytes] = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    attempts: int = 0
    next_attempt_at: Optional[datetime] = _ts(nullable=True)
    claimed_by: Optional[str] = None
    claimed_at: Optional[datetime] = _ts(nullable=True)
    last_error: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    sent_at: Optional[datetime] = _ts(nullable=True)


class MailboxState(SQLModel, table=True):
    """Where each mailbox's fetch stands and how it last went."""

    __tablename__ = "mailbox_state"
    mailbox: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    uidvalidity: Optional[int] = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    last_uid: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    stored_total: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    last_fetch_at: Optional[datetime] = _ts(nullable=True)
    last_error: Optional[str] = None
    last_error_at: Optional[datetime] = _ts(nullable=True)


class SurveyResponse(SQLModel, table=True):
    __tablename__ = "survey_responses"
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    rating: int
    comment: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Draft(SQLModel, table=True):
    """An unsent reply or note, per agent and ticket, surviving restarts."""

    __tablename__ = "drafts"
    agent_id: int = Field(foreign_key="agents.id", primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True)
    kind: str = Field(default="reply", sa_column=sa.Column(sa.String(16), primary_key=True))
    body: str = ""
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}


class Presence(SQLModel, table=True):
    """Who has a ticket open in a console and whether they are replying; stale rows are ignored."""

    __tablename__ = "presence"
    agent_id: int = Field(foreign_key="agents.id", primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True, index=True)
    activity: str = Field(default="viewing", sa_column=sa.Column(sa.String(16), nullable=False))
    seen_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class TicketSlaTarget(SQLModel, table=True):
    """Each SLA target of a ticket as last computed, one row per next-response cycle: when it
    started, was (or will be) due, was met or breached, and the business minutes it used.

    Kept by the SLA before-commit hook; `sla check` marks running targets breached when their
    due time passes, so a breach is recorded even on a ticket nobody touches.
    """

    __tablename__ = "ticket_sla_targets"
    __table_args__ = (
        sa.Index("ix_ticket_sla_targets_running_due", "due_at", sqlite_where=sa.text("state = 'running'"),
                 postgresql_where=sa.text("state = 'running'")),
        {"sqlite_with_rowid": False},  # rows live in the primary-key b-tree: one write per row, not two
    )
    ticket_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("tickets.id"), primary_key=True))
    target: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))
    cycle: int = Field(default=0, sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    policy: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    target_minutes: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    business_minutes: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="0"))
    started_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    due_at: Optional[datetime] = _ts(nullable=True)
    met_at: Optional[datetime] = _ts(nullable=True)
    breached_at: Optional[datetime] = _ts(nullable=True)


class AgentQueue(SQLModel, table=True):
    """A queue an agent is limited to; an agent with no rows here works every queue."""

    __tablename__ = "agent_queues"
    agent_id: int = Field(foreign_key="agents.id", primary_key=True)
    queue_id: int = Field(foreign_key="queues.id", primary_key=True, index=True)
