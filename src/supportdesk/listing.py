"""Reading tickets out: a query → ticket rows → the SPEC's JSON objects (§7)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Iterator, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.models import (
    Agent, Attachment, Customer, Event, Message, Organization, Outbox, Queue, Tag, Ticket, TicketTag,
)
from supportdesk.query import SLA_DUE_COLUMNS, Query, QueryContext, compile_query, parse_query, sort_order

T = Ticket.__table__.c
SLA_TARGET_NAMES = {"first_response_due": "first_response", "next_response_due": "next_response",
                    "resolution_due": "resolution"}


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def ticket_ids(
    session: Session, query: Query | str, ctx: QueryContext, *, sort: str | None = None, limit: int | None = None,
) -> list[int]:
    if isinstance(query, str):
        query = parse_query(query)
    stmt = sa.select(T.id).where(compile_query(query, ctx)).order_by(*sort_order(sort))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).scalars())


def count(session: Session, query: Query | str, ctx: QueryContext) -> int:
    if isinstance(query, str):
        query = parse_query(query)
    return session.execute(sa.select(sa.func.count()).select_from(Ticket.__table__).where(
        compile_query(query, ctx))).scalar_one()


def _summary_select():
    Q, C, A = Queue.__table__.c, Customer.__table__.c, Agent.__table__.c
    return (
        sa.select(Ticket.__table__, Q.name.label("queue_name"), C.email.label("requester_email"),
                  C.name.label("requester_name"), A.login.label("assignee_login"))
        .join(Queue.__table__, Q.id == T.queue_id)
        .join(Customer.__table__, C.id == T.requester_id)
        .outerjoin(Agent.__table__, A.id == T.assignee_id)
    )


def ticket_summaries(session: Session, ids: Sequence[int], now: datetime) -> list[dict]:
    """SPEC §7 ticket objects for these ids, in the same order; tags fetched in one go."""
    result: list[dict] = []
    for start in range(0, len(ids), 5000):
        chunk = list(ids[start:start + 5000])
        rows = {row.id: row for row in session.execute(_summary_select().where(T.id.in_(chunk)))}
        tags = tags_for(session, chunk)
        result.extend(_summary(rows[i], tags.get(i, []), now) for i in chunk if i in rows)
    return result


def iter_summaries(session: Session, ids: Sequence[int], now: datetime) -> Iterator[dict]:
    for start in range(0, len(ids), 5000):
        yield from ticket_summaries(session, ids[start:start + 5000], now)


def tags_for(session: Session, ids: Sequence[int]) -> dict[int, list[str]]:
    TT, G = TicketTag.__table__.c, Tag.__table__.c
    tags: dict[int, list[str]] = defaultdict(list)
    for ticket_id, name in session.execute(
        sa.select(TT.ticket_id, G.name).join(Tag.__table__, G.id == TT.tag_id)
        .where(TT.ticket_id.in_(list(ids))).order_by(G.name)
    ):
        tags[ticket_id].append(name)
    return tags


def _summary(row, tags: list[str], now: datetime) -> dict:
    breached = [SLA_TARGET_NAMES[c] for c in SLA_DUE_COLUMNS if getattr(row, c) is not None and getattr(row, c) < now]
    return {
        "id": row.id,
        "subject": row.subject,
        "status": row.status,
        "priority": row.priority,
        "queue": row.queue_name,
        "requester": row.requester_email,
        "requester_name": row.requester_name,
        "assignee": row.assignee_login,
        "tags": tags,
        "channel": row.channel,
        "mailbox": row.mailbox,
        "message_count": row.message_count,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "version": row.version,
        "unread": bool(row.unread),
        "merged_into": row.merged_into_id,
        "parent": row.parent_id,
        "external_id": row.external_id,
        "snoozed_until": iso(row.snoozed_until),
        "sla": {
            "policy": row.sla_policy,
            "first_response_due": iso(row.first_response_due),
            "next_response_due": iso(row.next_response_due),
            "resolution_due": iso(row.resolution_due),
            "breached": breached,
        },
    }


def messages_for(session: Session, ticket_ids: Sequence[int], *, with_content: bool = False) -> dict[int, list[dict]]:
    """SPEC §7 message objects per ticket, oldest first."""
    M, O, A = Message.__table__.c, Outbox.__table__.c, Agent.__table__.c
    rows = session.execute(
        sa.select(Message.__table__, O.status.label("delivery"), A.login.label("author"))
        .outerjoin(Outbox.__table__, O.message_id == M.id)
        .outerjoin(Agent.__table__, A.id == M.author_agent_id)
        .where(M.ticket_id.in_(list(ticket_ids))).order_by(M.ticket_id, M.created_at, M.id)
    ).all()
    attachments = attachments_for(session, [r.id for r in rows], with_content=with_content)
    out: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        item = {
            "id": r.id,
            "kind": r.kind,
            "from": r.from_addr,
            "from_name": r.from_name,
            "author": r.author,
            "to": json.loads(r.to_addrs or "[]"),
            "cc": json.loads(r.cc_addrs or "[]"),
            "subject": r.subject,
            "body_text": r.body_text,
            "message_id": r.message_id,
            "in_reply_to": r.in_reply_to,
            "created_at": iso(r.created_at),
            "attachments": attachments.get(r.id, []),
        }
        if r.kind == "outbound":
            item["auto"] = bool(r.auto)
            item["delivery"] = r.delivery
        out[r.ticket_id].append(item)
    return out


def attachments_for(session: Session, message_ids: Sequence[int], *, with_content: bool) -> dict[int, list[dict]]:
    import base64

    from supportdesk.models import AttachmentBlob

    if not message_ids:
        return {}
    At, B = Attachment.__table__.c, AttachmentBlob.__table__.c
    columns = [At.message_id, At.filename, At.content_type, At.size, At.id]
    stmt = sa.select(*columns, B.data) if with_content else sa.select(*columns)
    if with_content:
        stmt = stmt.join(AttachmentBlob.__table__, B.sha256 == At.sha256)
    out: dict[int, list[dict]] = defaultdict(list)
    for start in range(0, len(message_ids), 5000):
        for r in session.execute(stmt.where(At.message_id.in_(list(message_ids[start:start + 5000]))).order_by(At.id)):
            item = {"id": r.id, "filename": r.filename, "content_type": r.content_type, "size": r.size}
            if with_content:
                item["content_base64"] = base64.b64encode(r.data).decode("ascii")
            out[r.message_id].append(item)
    return out


def ticket_detail(session: Session, ticket_id: int, now: datetime, *, with_content: bool = False) -> dict:
    summary = ticket_summaries(session, [ticket_id], now)
    if not summary:
        from supportdesk.tickets import NotFoundError

        raise NotFoundError(f"no ticket #{ticket_id}")
    detail = summary[0]
    detail["messages"] = messages_for(session, [ticket_id], with_content=with_content).get(ticket_id, [])
    org = session.execute(
        sa.select(Organization.__table__.c.name).join(
            Customer.__table__, Customer.__table__.c.organization_id == Organization.__table__.c.id
        ).where(Customer.__table__.c.email == detail["requester"])
    ).scalar()
    detail["organization"] = org
    return detail


def events_for(session: Session, ticket_id: int) -> list[dict]:
    return events_by_ticket(session, [ticket_id]).get(ticket_id, [])


def events_by_ticket(session: Session, ticket_ids: Sequence[int]) -> dict[int, list[dict]]:
    """The audit trail per ticket, oldest first."""
    E = Event.__table__.c
    out: dict[int, list[dict]] = defaultdict(list)
    for r in session.execute(sa.select(Event.__table__).where(E.ticket_id.in_(list(ticket_ids)))
                             .order_by(E.ticket_id, E.at, E.id)):
        out[r.ticket_id].append({"at": iso(r.at), "actor": r.actor, "field": r.field, "old": r.old, "new": r.new})
    return out
