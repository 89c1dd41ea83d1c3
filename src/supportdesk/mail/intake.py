"""Inbound mail: raw store (exactly once) → parse → thread → ticket.

Two steps, two kinds of transaction:

1. `store_raw` commits the original bytes together with where they came from
   (mailbox, UIDVALIDITY, UID) — nothing else happens to a message on the server
   before that commit.  Duplicates (a re-fetch after a crash, a UIDVALIDITY reset,
   an MTA retry) are recognised by the IMAP triple or by the content hash.
2. `process_pending` turns each stored message into a ticket or a reply, one
   message per transaction, and marks the raw row `processed` in that same
   transaction — so a kill at any point leaves it `stored`, to be done again,
   never half done.  Whatever cannot be parsed goes to quarantine with its error;
   one poisoned message never stops the ones after it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.automation import apply_rules
from supportdesk.config import MailboxConfig, Settings
from supportdesk.db import Database
from supportdesk.mail.loops import DEFAULT_RECIPIENT_LIMITS, DEFAULT_TICKET_LIMITS, allowed, automatic_reason
from supportdesk.mail.parse import ParsedMessage, parse_message
from supportdesk.mail.subjects import find_ticket_tag, remove_ticket_tag
from supportdesk.mail.threading import ThreadFacts, decide, references_of
from supportdesk.models import (
    Agent, Attachment, Customer, Message, Outbox, Participant, Queue, RawMessage, Ticket, utcnow,
)
from supportdesk.tickets import (
    Actor, Changes, InvalidError, add_message, add_participant, create_ticket, follow_merges, get_ticket, record,
    save_attachments, update_ticket,
)
from supportdesk.text import clean_line, clean_text

log = logging.getLogger(__name__)

STORED, PROCESSED, QUARANTINED, DUPLICATE = "stored", "processed", "quarantined", "duplicate"
SYSTEM = Actor.system()


@dataclass
class IntakeReport:
    stored: int = 0
    duplicates: int = 0
    created: list[int] = field(default_factory=list)
    appended: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    bounces: int = 0

    def merge(self, other: "IntakeReport") -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.created += other.created
        self.appended += other.appended
        self.quarantined += other.quarantined
        self.bounces += other.bounces


# --- step 1: store ---------------------------------------------------------------------------

def header_message_id(raw: bytes) -> str | None:
    """The Message-ID from the header block alone (cheap; full parsing comes later)."""
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536], headersonly=True)
        value = headers.get("Message-ID")
    except Exception:
        return None
    if not value:
        return None
    value = clean_line(str(value)).strip().strip("<>").strip()
    return value[:998] or None


def store_raw(
    session: Session, raw: bytes, *, mailbox: str | None, uidvalidity: int | None = None, uid: int | None = None,
    source: str = "imap",
) -> tuple[int, bool]:
    """(raw message id, newly stored?).  Idempotent for the same IMAP triple or the same bytes."""
    R = RawMessage.__table__.c
    if uid is not None:
        existing = session.execute(sa.select(R.id).where(
            R.mailbox == mailbox, R.uidvalidity == uidvalidity, R.uid == uid)).scalar()
        if existing is not None:
            return existing, False
    digest = hashlib.sha256(raw).hexdigest()
    same = session.execute(sa.select(R.id).where(
        R.content_sha256 == digest, sa.or_(R.mailbox == mailbox, sa.and_(R.mailbox.is_(None), mailbox is None))
    )).scalar()
    if same is not None:
        return same, False
    row = RawMessage(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, source=source, content_sha256=digest,
                     message_id_header=header_message_id(raw), raw=raw, state=STORED, received_at=utcnow())
    session.add(row)
    session.flush()
    return row.id, True


def store_raw_batch(
    session: Session, items: Sequence[tuple[int, bytes]], *, mailbox: str, uidvalidity: int,
) -> tuple[int, int]:
    """`store_raw` for a batch of (uid, bytes) from one IMAP folder, in a few statements: (stored, duplicates)."""
    R = RawMessage.__table__.c
    uids = [uid for uid, _ in items]
    known = set(session.execute(sa.select(R.uid).where(
        R.mailbox == mailbox, R.uidvalidity == uidvalidity, R.uid.in_(uids))).scalars())
    digests = {uid: hashlib.sha256(raw).hexdigest() for uid, raw in items if uid not in known}
    seen = set(session.execute(sa.select(R.content_sha256).where(
        R.mailbox == mailbox, R.content_sha256.in_(list(digests.values())))).scalars()) if digests else set()
    now = utcnow()
    rows = []
    for uid, raw in items:
        digest = digests.get(uid)
        if digest is None or digest in seen:
            continue
        seen.add(digest)
        rows.append({"mailbox": mailbox, "uidvalidity": uidvalidity, "uid": uid, "source": "imap",
                     "content_sha256": digest, "message_id_header": header_message_id(raw), "raw": raw,
                     "state": STORED, "received_at": now})
    if rows:
        session.execute(RawMessage.__table__.insert(), rows)
    return len(rows), len(items) - len(rows)


# --- step 2: parse and thread -----------------------------------------------------------------

def process_pending(database: Database, settings: Settings, *, limit: int | None = None,
                    batch_seconds: float = 0.25) -> IntakeReport:
    """File every stored message, oldest first.

    Messages are filed in short write transactions of several messages (at most
    `batch_seconds` long, so agents are never kept waiting), each message inside
    its own savepoint: a message that fails is quarantined without undoing the
    others, and a kill loses only the uncommitted batch, which stays `stored`.
    """
    report = IntakeReport()
    R = RawMessage.__table__.c
    last = 0
    done = 0
    while limit is None or done < limit:
        with database.read() as session:
            ids = list(session.execute(
                sa.select(R.id).where(R.state == STORED, R.id > last).order_by(R.id).limit(200)).scalars())
        if not ids:
            break
        if limit is not None:
            ids = ids[:limit - done]
        position = 0
        while position < len(ids):
            with database.write() as session:
                ours = our_addresses(session, settings)
                started = time.monotonic()
                while position < len(ids) and (time.monotonic() - started < batch_seconds or position == 0):
                    report.merge(_process_in(session, settings, ids[position], ours))
                    position += 1
                    if time.monotonic() - started >= batch_seconds:
                        break
        last = ids[-1]
        done += len(ids)
    return report


def process_one(database: Database, settings: Settings, raw_id: int) -> IntakeReport:
    with database.write() as session:
        return _process_in(session, settings, raw_id, our_addresses(session, settings))


def _process_in(session: Session, settings: Settings, raw_id: int, ours: set[str]) -> IntakeReport:
    """File one stored message inside the caller's transaction, in a savepoint of its own."""
    report = IntakeReport()
    raw = session.get(RawMessage, raw_id, populate_existing=True)
    if raw is None or raw.state != STORED:
        return report
    try:
        with session.begin_nested():
            outcome = _file_message(session, settings, raw, ours)
    except Exception as exc:  # a bug must not stop the messages after this one
        log.exception("raw message %s could not be filed", raw_id)
        raw = session.get(RawMessage, raw_id, populate_existing=True)
        raw.state, raw.error = QUARANTINED, f"internal error while filing: {type(exc).__name__}: {exc}"[:2000]
        session.flush()
        report.quarantined.append(raw_id)
        return report
    if outcome.quarantine:
        raw.state, raw.error = QUARANTINED, outcome.quarantine
        report.quarantined.append(raw_id)
    elif outcome.duplicate_of:
        raw.state, raw.error = DUPLICATE, f"same as message #{outcome.duplicate_of}"
        report.duplicates += 1
    else:
        raw.state, raw.error = PROCESSED, None
        if outcome.created:
            report.created.append(outcome.ticket_id)
        elif outcome.ticket_id:
            report.appended.append(outcome.ticket_id)
        report.bounces += outcome.bounce
    session.flush()
    return report


@dataclass
class _Outcome:
    ticket_id: int | None = None
    created: bool = False
    bounce: int = 0
    quarantine: str | None = None
    duplicate_of: int | None = None


def our_addresses(session: Session, settings: Settings) -> set[str]:
    addresses = {m.address.lower() for m in settings.mailboxes}
    addresses |= {q.address.lower() for q in settings.queues if q.address}
    addresses |= {a.lower() for a in session.execute(sa.select(Queue.__table__.c.address)).scalars() if a}
    return addresses


def _file_message(session: Session, settings: Settings, raw: RawMessage, ours: set[str]) -> _Outcome:
    parsed = parse_message(raw.raw)
    if parsed.error:
        return _Outcome(quarantine=parsed.error)
    if parsed.dsn is not None:
        return _file_bounce(session, parsed, raw)
    M = Message.__table__.c
    if parsed.message_id:
        same = session.execute(sa.select(M.id).where(
            M.message_id == parsed.message_id, M.kind == "inbound", M.from_addr == (parsed.from_addr or ""),
            M.subject == parsed.subject, M.body_text == parsed.body_text)).scalar()
        if same is not None and _same_attachments(session, same, parsed):
            return _Outcome(duplicate_of=same)  # the same mail again, e.g. sent to two of our addresses
    if not parsed.from_addr:
        return _Outcome(quarantine="no usable sender address in From")
    box = _mailbox(settings, raw.mailbox)
    if parsed.from_addr in ours:
        return _Outcome(quarantine=f"sent from our own address {parsed.from_addr} (mail loop?)")
    decision = decide(_facts(session, settings, parsed))
    body = parsed.body_text
    cc = [addr for _, addr in parsed.cc if addr and addr not in ours and addr != parsed.from_addr]
    to = [addr for _, addr in parsed.to if addr]
    when = utcnow()
    if decision.action == "append":
        ticket = get_ticket(session, decision.ticket_id)
        message = add_message(
            session, ticket, SYSTEM, kind="inbound", body=body, subject=parsed.subject, from_addr=parsed.from_addr,
            from_name=parsed.from_name, to=to, cc=[a for _, a in parsed.cc], created_at=when,
            message_id=parsed.message_id, in_reply_to=(parsed.in_reply_to or [None])[0],
            references=parsed.references, raw_message_id=raw.id,
        )
        _save_attachments(session, message.id, parsed)
        if parsed.from_trusted:
            for address in cc:
                add_participant(session, ticket.id, address)
        if decision.reopen:
            update_ticket(session, ticket.id, Changes(status="open"), SYSTEM)
        if ticket.snoozed_until is not None:
            update_ticket(session, ticket.id, Changes(unsnooze=True), SYSTEM)
        apply_rules(session, settings, ticket.id)
        return _Outcome(ticket_id=ticket.id)

    subject = remove_ticket_tag(parsed.subject, settings.tickets.subject_tag) or "(no subject)"
    ticket = create_ticket(
        session, SYSTEM, requester_email=parsed.from_addr, requester_name=parsed.from_name, subject=subject,
        body=body, channel="email", queue=_queue_for(session, box), mailbox=box.name if box else raw.mailbox,
        created_at=when, message_id=parsed.message_id, to=to, cc=cc if parsed.from_trusted else [],
        raw_message_id=raw.id, parent_id=decision.ticket_id if decision.action == "new_linked" else None,
        tags=[] if parsed.from_trusted else ["suspicious-sender"],
        in_reply_to=(parsed.in_reply_to or [None])[0], references=parsed.references,
    )
    if parsed.attachments:
        first = session.execute(sa.select(M.id).where(M.ticket_id == ticket.id).order_by(M.id).limit(1)).scalar()
        _save_attachments(session, first, parsed)
    if decision.action == "new_linked":
        add_message(session, ticket, SYSTEM, kind="system", body=f"Follow-up to ticket #{decision.ticket_id}: "
                    f"{decision.reason}.", record_event=False)
    apply_rules(session, settings, ticket.id)
    if get_ticket(session, ticket.id).status != "closed":  # a rule may drop it as spam: no reply then
        _maybe_acknowledge(session, settings, ticket, parsed, ours)
    return _Outcome(ticket_id=ticket.id, created=True)


def _mailbox(settings: Settings, name: str | None) -> MailboxConfig | None:
    for box in settings.mailboxes:
        if box.name == name:
            return box
    return None


def _queue_for(session: Session, box: MailboxConfig | None) -> str:
    from supportdesk.tickets import ensure_queue

    name = box.queue if box else "General"
    ensure_queue(session, name, box.address if box else None)
    return name


def _facts(session: Session, settings: Settings, parsed: ParsedMessage) -> ThreadFacts:
    M, T = Message.__table__.c, Ticket.__table__.c
    by_reference = None
    ids = references_of(parsed)
    if ids:
        rows = dict(session.execute(sa.select(M.message_id, M.ticket_id).where(M.message_id.in_(ids))).all())
        for ident in ids:
            if ident in rows:
                by_reference = follow_merges(session, rows[ident])
                break
    tagged = find_ticket_tag(parsed.subject, settings.tickets.subject_tag)
    tagged_exists = False
    participates = False
    if tagged is not None:
        tagged_exists = session.get(Ticket, tagged) is not None
        if tagged_exists:
            tagged = follow_merges(session, tagged)
            participates = parsed.from_trusted and _participates(session, tagged, parsed.from_addr)
    candidate = by_reference if by_reference is not None else (tagged if tagged_exists and participates else None)
    status, finished_at = None, None
    if candidate is not None:
        row = session.execute(sa.select(T.status, T.closed_at, T.solved_at).where(T.id == candidate)).one()
        status = row.status
        finished_at = row.closed_at if row.status == "closed" else row.solved_at
    return ThreadFacts(
        now=utcnow(), reopen_days=settings.tickets.reopen_days, ticket_by_reference=by_reference,
        tagged_ticket_id=tagged, tagged_ticket_exists=tagged_exists, sender_participates=participates,
        ticket_status=status, ticket_closed_at=finished_at,
    )


def _participates(session: Session, ticket_id: int, address: str) -> bool:
    T, C, P, A = Ticket.__table__.c, Customer.__table__.c, Participant.__table__.c, Agent.__table__.c
    requester = session.execute(sa.select(C.email).join(Ticket.__table__, T.requester_id == C.id)
                                .where(T.id == ticket_id)).scalar()
    if requester == address:
        return True
    if session.execute(sa.select(P.email).where(P.ticket_id == ticket_id, P.email == address)).first():
        return True
    return session.execute(sa.select(A.id).where(sa.func.lower(A.email) == address, A.active)).first() is not None


def _same_attachments(session: Session, message_id: int, parsed: ParsedMessage) -> bool:
    A = Attachment.__table__.c
    stored = sorted(session.execute(sa.select(A.sha256).where(A.message_id == message_id)).scalars())
    return stored == sorted(hashlib.sha256(a.data).hexdigest() for a in parsed.attachments)


def _save_attachments(session: Session, message_id: int, parsed: ParsedMessage) -> None:
    save_attachments(session, message_id, [(a.filename, a.content_type, a.data) for a in parsed.attachments],
                     content_ids=[a.content_id for a in parsed.attachments],
                     inline=[a.inline for a in parsed.attachments])


def _file_bounce(session: Session, parsed: ParsedMessage, raw: RawMessage) -> _Outcome:
    """A delivery status notification: a system message on the ticket whose reply bounced."""
    M, O = Message.__table__.c, Outbox.__table__.c
    dsn = parsed.dsn
    original = None
    if dsn.original_message_id:
        original = session.execute(sa.select(M.id, M.ticket_id).where(
            M.message_id == dsn.original_message_id, M.kind == "outbound")).first()
    if original is None:
        return _Outcome(quarantine=f"delivery report for a message we did not send ({dsn.original_message_id or 'no id'})")
    ticket = get_ticket(session, follow_merges(session, original.ticket_id))
    session.execute(sa.update(Outbox.__table__).where(O.message_id == original.id).values(
        status="bounced", last_error=clean_line(f"{dsn.status} {dsn.diagnostic}")[:2000]))
    recipients = ", ".join(dsn.recipients) or "the recipient"
    add_message(session, ticket, SYSTEM, kind="system", raw_message_id=raw.id, record_event=False,
                body=clean_text(f"Delivery to {recipients} failed ({dsn.action or 'failed'} {dsn.status}): "
                                f"{dsn.diagnostic}".strip()))
    record(session, ticket.id, SYSTEM, "bounce", None, f"message #{original.id}")
    return _Outcome(ticket_id=ticket.id, bounce=1)


def _maybe_acknowledge(session: Session, settings: Settings, ticket: Ticket, parsed: ParsedMessage,
                       ours: set[str]) -> None:
    """Acknowledge a new ticket, unless the mail is automatic, untrusted or the rate is exceeded."""
    if not settings.tickets.autoreply or not parsed.from_trusted:
        return
    reason = automatic_reason(parsed, ours)
    if reason:
        record(session, ticket.id, SYSTEM, "autoreply", None, f"suppressed: {reason}")
        return
    now = utcnow()
    M = Message.__table__.c
    window = now - timedelta(hours=10)
    sent = list(session.execute(sa.select(M.created_at).where(
        M.kind == "outbound", M.auto == sa.true(), M.created_at >= window,
        M.to_addrs.like(f'%"{parsed.from_addr}"%'))).scalars())
    if not allowed(sent, now, DEFAULT_RECIPIENT_LIMITS):
        record(session, ticket.id, SYSTEM, "autoreply", None, "suppressed: too many automatic replies to this address")
        return
    on_ticket = list(session.execute(sa.select(M.created_at).where(
        M.ticket_id == ticket.id, M.kind == "outbound", M.auto == sa.true(), M.created_at >= window)).scalars())
    if not allowed(on_ticket, now, DEFAULT_TICKET_LIMITS):
        return
    from supportdesk.mail.outbox import acknowledgement_body, queue_reply

    try:
        with session.begin_nested():
            queue_reply(session, settings, ticket, SYSTEM, acknowledgement_body(session, settings, ticket),
                        auto=True, cc=[])
    except InvalidError as exc:
        record(session, ticket.id, SYSTEM, "autoreply", None, f"not sent: {exc}"[:500])


# --- the mail server pipe (`supportdesk ingest`) ------------------------------------------------

def ingest_bytes(database: Database, settings: Settings, raw: bytes, mailbox: str | None) -> tuple[int, IntakeReport]:
    """Store one message from an MTA and file it; the store is committed first."""
    name = mailbox or (settings.mailboxes[0].name if settings.mailboxes else None)
    with database.write() as session:
        raw_id, new = store_raw(session, raw, mailbox=name, source="pipe")
    report = IntakeReport(stored=int(new), duplicates=int(not new))
    if new:
        report.merge(process_one(database, settings, raw_id))
    return raw_id, report


def ingest_interaction(database: Database, settings: Settings, data: dict, actor: Actor) -> int:
    """A phone call, chat or social message from another tool, as JSON (SPEC §7 fields)."""
    from supportdesk.tickets import InvalidError

    if not isinstance(data, dict):
        raise InvalidError("ingest --json expects one JSON object")
    channel = data.get("channel", "phone")
    requester = data.get("from") or data.get("requester")
    if not isinstance(requester, str):
        raise InvalidError("ingest --json: 'from' (the customer's email address) is required")
    body = clean_text(str(data.get("body_text") or data.get("body") or ""))
    when = data.get("created_at")
    created_at = datetime.fromisoformat(when.replace("Z", "+00:00")) if isinstance(when, str) else None
    if created_at is not None and created_at.tzinfo is None:
        raise InvalidError("ingest --json: created_at needs a time zone (Z or an offset)")
    with database.write() as session:
        ticket_id = data.get("ticket")
        if ticket_id is not None:
            ticket = get_ticket(session, int(ticket_id))
            kind = {"phone": "call", "chat": "chat", "social": "social"}.get(channel, "inbound")
            add_message(session, ticket, actor, kind=kind, body=body, from_addr=requester.lower(),
                        created_at=created_at, author_agent_id=actor.agent_id)
            apply_rules(session, settings, ticket.id)
            return ticket.id
        ticket = create_ticket(
            session, actor, requester_email=requester, requester_name=clean_line(str(data.get("name") or "")),
            subject=clean_line(str(data.get("subject") or f"{channel} contact")), body=body, channel=channel,
            queue=str(data.get("queue") or settings.queue_names()[0]), created_at=created_at,
            tags=[str(t) for t in data.get("tags") or []],
        )
        apply_rules(session, settings, ticket.id)
        return ticket.id


# --- quarantine ---------------------------------------------------------------------------------

def quarantined(session: Session) -> list[dict]:
    R = RawMessage.__table__.c
    rows = session.execute(sa.select(R.id, R.mailbox, R.uid, R.received_at, R.error, R.message_id_header,
                                     sa.func.length(R.raw).label("size"))
                           .where(R.state == QUARANTINED).order_by(R.id)).all()
    return [{"id": r.id, "mailbox": r.mailbox, "uid": r.uid, "received_at": r.received_at.isoformat(),
             "size": r.size, "message_id": r.message_id_header, "error": r.error} for r in rows]


def retry_quarantined(database: Database, settings: Settings, raw_ids: Sequence[int]) -> IntakeReport:
    """Run quarantined messages through intake again (e.g. after an upgrade)."""
    _requeue(database, raw_ids)
    report = IntakeReport()
    for raw_id in raw_ids:
        report.merge(process_one(database, settings, raw_id))
    return report


def release_quarantined(database: Database, settings: Settings, raw_ids: Sequence[int], actor: Actor) -> list[int]:
    """Make a ticket of quarantined messages anyway, with whatever text can be recovered."""
    R = RawMessage.__table__.c
    created = []
    with database.write() as session:
        _check_quarantined(session, raw_ids)
        for raw_id in raw_ids:
            raw = session.get(RawMessage, raw_id)
            parsed = parse_message(raw.raw)
            body = parsed.body_text or clean_text(raw.raw.decode("utf-8", "replace"))
            sender = parsed.from_addr or "unknown-sender@invalid"
            ticket = create_ticket(
                session, actor, requester_email=sender, requester_name=parsed.from_name,
                subject=parsed.subject or f"Released message #{raw_id}", body=body, channel="email",
                queue=_queue_for(session, _mailbox(settings, raw.mailbox)), mailbox=raw.mailbox,
                raw_message_id=raw.id, tags=["released"],
            )
            record(session, ticket.id, actor, "released", None, f"raw #{raw_id}: {raw.error}")
            session.execute(sa.update(RawMessage.__table__).where(R.id == raw_id).values(state=PROCESSED))
            created.append(ticket.id)
    return created


def _check_quarantined(session: Session, raw_ids: Sequence[int]) -> None:
    from supportdesk.tickets import NotFoundError

    R = RawMessage.__table__.c
    found = set(session.execute(sa.select(R.id).where(R.id.in_(list(raw_ids)), R.state == QUARANTINED)).scalars())
    missing = [i for i in raw_ids if i not in found]
    if missing:
        raise NotFoundError(f"not in quarantine: {', '.join(f'#{i}' for i in missing)}")


def _requeue(database: Database, raw_ids: Sequence[int]) -> None:
    R = RawMessage.__table__.c
    with database.write() as session:
        _check_quarantined(session, raw_ids)
        session.execute(sa.update(RawMessage.__table__).where(R.id.in_(list(raw_ids))).values(state=STORED, error=None))


def raw_bytes(session: Session, raw_id: int) -> bytes:
    from supportdesk.tickets import NotFoundError

    raw = session.get(RawMessage, raw_id)
    if raw is None:
        raise NotFoundError(f"no raw message #{raw_id}")
    return raw.raw
