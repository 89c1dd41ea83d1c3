"""The outbox: outbound mail is built once and committed before any SMTP traffic.

States: queued → sending → sent; failed (retried with backoff); dead (gave up);
bounced (a delivery report came back); cancelled (an agent withdrew it).
"""

from __future__ import annotations

import json
from typing import Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.config import Settings
from supportdesk.mail.compose import OutgoingMail, build_message, envelope_recipients, make_message_id, reply_subject
from supportdesk.models import Customer, Message, Outbox, Participant, Queue, Ticket, utcnow
from supportdesk.tickets import Actor, InvalidError, StoredMessage, add_message

REPLYABLE_KINDS = ("inbound", "outbound")


def thread_headers(session: Session, ticket_id: int) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References) for a reply: the customer's last message, then the thread in order."""
    M = Message.__table__.c
    rows = session.execute(
        sa.select(M.kind, M.message_id).where(M.ticket_id == ticket_id, M.message_id.is_not(None),
                                              M.kind.in_(REPLYABLE_KINDS)).order_by(M.created_at, M.id)
    ).all()
    inbound = [r.message_id for r in rows if r.kind == "inbound"]
    in_reply_to = inbound[-1] if inbound else (rows[-1].message_id if rows else None)
    return in_reply_to, [r.message_id for r in rows]


def sender_address(session: Session, settings: Settings, ticket: Ticket) -> str:
    queue = session.get(Queue, ticket.queue_id)
    if ticket.mailbox:
        for box in settings.mailboxes:
            if box.name == ticket.mailbox:
                return box.address
    address = (queue.address if queue else None) or settings.queue_address(queue.name if queue else "General")
    if not address:
        raise InvalidError(
            f"queue {queue.name if queue else '?'!r} has no email address to reply from; "
            "configure a [[mailbox]] for it or set [[queue]] address"
        )
    return address


def queue_reply(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    actor: Actor,
    body: str,
    *,
    auto: bool = False,
    to: Sequence[str] | None = None,
    cc: Sequence[str] | None = None,
) -> StoredMessage:
    """Compose a reply and put it in the outbox in the caller's transaction.

    The message appears in the thread at once with delivery `queued`; the SMTP
    side (`supportdesk send`) picks it up later.
    """
    requester = session.get(Customer, ticket.requester_id)
    from_addr = sender_address(session, settings, ticket)
    if to is None:
        to = [requester.email]
    if cc is None:
        P = Participant.__table__.c
        cc = [e for e in session.execute(sa.select(P.email).where(P.ticket_id == ticket.id, P.role == "cc")).scalars()
              if e not in to and e != from_addr]
    in_reply_to, references = thread_headers(session, ticket.id)
    domain = from_addr.rsplit("@", 1)[1]
    now = utcnow()
    queue = session.get(Queue, ticket.queue_id)
    mail = OutgoingMail(
        from_addr=from_addr, from_name=queue.name if queue else "", to=list(to), cc=list(cc), reply_to=from_addr,
        subject=reply_subject(ticket.subject, settings.tickets.subject_tag, ticket.id), body_text=body,
        message_id=make_message_id(domain), in_reply_to=in_reply_to, references=references, auto=auto, date=now,
    )
    try:
        raw = build_message(mail)
    except ValueError as exc:
        raise InvalidError(f"ticket #{ticket.id}: cannot build the reply: {exc}") from None
    message = add_message(
        session, ticket, actor, kind="outbound", body=body, subject=mail.subject, from_addr=from_addr,
        from_name=mail.from_name, to=mail.to, cc=mail.cc, created_at=now, message_id=mail.message_id,
        in_reply_to=in_reply_to, references=references, auto=auto, author_agent_id=actor.agent_id,
    )
    session.execute(Outbox.__table__.insert().values(
        ticket_id=ticket.id, message_id=message.id, status="queued", envelope_from="" if auto else from_addr,
        envelope_to=json.dumps(envelope_recipients(mail)), raw=raw, attempts=0, next_attempt_at=now, created_at=now,
    ))
    return message


def acknowledgement_body(session: Session, settings: Settings, ticket: Ticket) -> str:
    """The automatic acknowledgement, from the (overridable) template."""
    from supportdesk.mail.templates import render

    customer = session.get(Customer, ticket.requester_id)
    queue = session.get(Queue, ticket.queue_id)
    return render(
        "acknowledgement.txt", settings.file.parent if settings.file else None,
        ticket={"id": ticket.id, "subject": ticket.subject, "status": ticket.status, "priority": ticket.priority},
        customer={"email": customer.email, "name": customer.name},
        queue={"name": queue.name if queue else "", "address": queue.address if queue else None},
    )
