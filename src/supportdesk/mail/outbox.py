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
from supportdesk.mail.compose import (
    OutgoingMail, build_message, envelope_recipients, make_message_id, reply_subject, validate_address,
)
from supportdesk.mail.subjects import tag_subject
from supportdesk.models import Agent, Customer, Message, Outbox, Participant, Queue, Ticket, utcnow
from supportdesk.tickets import Actor, InvalidError, StoredMessage, add_message, add_participant, save_attachments

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
    attachments: Sequence[tuple[str, str, bytes]] = (),
    subject: str | None = None,
) -> StoredMessage:
    """Compose a reply and put it in the outbox in the caller's transaction.

    The message appears in the thread at once with delivery `queued`; the SMTP
    side (`supportdesk send`) picks it up later.  The agent's signature (else the
    queue's) is appended to replies an agent writes.
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
    agent = session.get(Agent, actor.agent_id) if actor.agent_id else None
    signature = "" if auto else ((agent.signature if agent else "") or (queue.signature if queue else "")).strip()
    if signature:
        body = f"{body.rstrip()}\n\n-- \n{signature}\n"
    agent_name = (agent.name or agent.login) if agent and not auto else ""
    template = settings.tickets.from_name if agent_name or "{agent}" not in settings.tickets.from_name else "{queue}"
    from_name = template.format(queue=queue.name if queue else "", agent=agent_name).strip()
    mail = OutgoingMail(
        from_addr=from_addr, from_name=from_name, to=list(to), cc=list(cc), reply_to=from_addr,
        subject=subject or reply_subject(ticket.subject, settings.tickets.subject_tag, ticket.id), body_text=body,
        message_id=make_message_id(domain), in_reply_to=in_reply_to, references=references, auto=auto, date=now,
        attachments=list(attachments),
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
    save_attachments(session, message.id, attachments)
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


def queue_forward(
    session: Session, settings: Settings, ticket: Ticket, actor: Actor, note: str, to: Sequence[str], *,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> tuple[StoredMessage, list[str]]:
    """Forward the customer's last message to third parties; they become participants, so their
    answer threads back into the ticket (by header, or by tag)."""
    try:
        recipients = [validate_address(address) for address in to]
    except ValueError as exc:
        raise InvalidError(f"--to: {exc}") from None
    subject = "Fwd: " + tag_subject(ticket.subject, settings.tickets.subject_tag, ticket.id)
    message = queue_reply(session, settings, ticket, actor, forward_body(session, ticket.id, note), to=recipients,
                          cc=[], subject=subject, attachments=attachments)
    for address in recipients:
        add_participant(session, ticket.id, address, role="forwarded")
    return message, recipients


def forward_body(session: Session, ticket_id: int, note: str) -> str:
    """An agent's note above the customer's last message, quoted the way mail clients forward."""
    M = Message.__table__.c
    last = session.execute(sa.select(M.from_addr, M.created_at, M.subject, M.body_text).where(
        M.ticket_id == ticket_id, M.kind.in_(("inbound", "call", "chat", "social"))
    ).order_by(M.created_at.desc(), M.id.desc()).limit(1)).first()
    parts = [note.rstrip()] if note.strip() else []
    if last is not None:
        parts.append("---------- Forwarded message ----------\n"
                     f"From: {last.from_addr}\nDate: {last.created_at.isoformat()}\nSubject: {last.subject}\n\n"
                     f"{last.body_text.rstrip()}")
    return "\n\n".join(parts) + "\n"
