"""Inbound mail: raw store (exactly once) → parse → thread → ticket.

Two steps, two kinds of transaction:

1. `store_raw` commits the original bytes together with where they came from
   (mailbox, UIDVALIDITY, UID) — nothing else happens to a message on the server
   before that commit.  Duplicates (a re-fetch after a crash, a UIDVALIDITY reset,
   an MTA retry) are recognised by the IMAP triple or by the content hash.
2. `process_pending` turns stored messages into tickets or replies, a batch per
   transaction (new tickets set-based, see `filing`), and marks the raw rows
   `processed` in that same transaction — so a kill at any point leaves them
   `stored`, to be done again, never half done.  Whatever cannot be parsed goes to
   quarantine with its error; one poisoned message never stops the ones after it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Iterator, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.automation import apply_rules, load as load_automation
from supportdesk.config import MailboxConfig, Settings
from supportdesk.db import Database
from supportdesk.mail.filing import Acknowledger, Item, file_new_tickets, is_plain_new, known_message_ids
from supportdesk.mail.parse import ParsedMessage, parse_many, parse_message
from supportdesk.mail.parsepool import parser_pool
from supportdesk.mail.subjects import find_ticket_tag, remove_ticket_tag
from supportdesk.mail.threading import ThreadFacts, decide, references_of
from supportdesk.models import (
    Agent, Attachment, Customer, Message, Outbox, Participant, Queue, RawMessage, Ticket, utcnow,
)
from supportdesk.tickets import (
    Actor, Changes, add_message, add_participant, create_ticket, follow_merges, get_ticket, id_in_range, queue_id,
    record, save_attachments, update_ticket,
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


class Spooled:
    """A message too large to hold in memory, written piece by piece to a temporary file
    (`imap` fetches it in partials); its SHA-256 and first 64 KB are taken as it is written.
    Nothing of it is in the database until `store_raw_batch` copies it there in one
    transaction, so the raw row appears complete or not at all."""

    HEAD = 65536

    def __init__(self, directory: str | None = None) -> None:
        self.file = tempfile.TemporaryFile(prefix="supportdesk-raw-", dir=directory)
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)
        if len(self.head) < self.HEAD:
            self.head += data[:self.HEAD - len(self.head)]

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        self.file.flush()
        self.file.seek(0)
        while chunk := self.file.read(size):
            yield chunk

    def read(self) -> bytes:
        self.file.flush()
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return self.size


def store_raw_batch(
    session: Session, items: Sequence[tuple[int, bytes | Spooled]], *, mailbox: str, uidvalidity: int,
) -> tuple[int, int]:
    """`store_raw` for a batch of (uid, bytes) from one IMAP folder, in a few statements: (stored, duplicates).
    A message may come as a `Spooled` file: on SQLite it is copied into its row in pieces."""
    R = RawMessage.__table__.c
    sqlite = session.get_bind().dialect.name == "sqlite"
    uids = [uid for uid, _ in items]
    known = set(session.execute(sa.select(R.uid).where(
        R.mailbox == mailbox, R.uidvalidity == uidvalidity, R.uid.in_(uids))).scalars())
    digests = {uid: raw.hash.hexdigest() if isinstance(raw, Spooled) else hashlib.sha256(raw).hexdigest()
               for uid, raw in items if uid not in known}
    seen = set(session.execute(sa.select(R.content_sha256).where(
        R.mailbox == mailbox, R.content_sha256.in_(list(digests.values())))).scalars()) if digests else set()
    now = utcnow()
    rows = []
    for uid, raw in items:
        digest = digests.get(uid)
        if digest is None or digest in seen:
            continue
        seen.add(digest)
        head = raw.head if isinstance(raw, Spooled) else raw
        if isinstance(raw, Spooled) and not (sqlite and len(raw) > BIG_RAW):
            raw = raw.read()  # PostgreSQL (or a small file): bound as a parameter, once in memory
        rows.append({"mailbox": mailbox, "uidvalidity": uidvalidity, "uid": uid, "source": "imap",
                     "content_sha256": digest, "message_id_header": header_message_id(head), "raw": raw,
                     "state": STORED, "received_at": now})
    big = [row for row in rows if sqlite and len(row["raw"]) > BIG_RAW]
    small = [row for row in rows if not any(row is b for b in big)]
    if small:
        session.execute(RawMessage.__table__.insert(), small)
    for row in big:
        _insert_big_raw(session, row)
    return len(rows), len(items) - len(rows)


BIG_RAW = 1 << 20


def _insert_big_raw(session: Session, row: dict) -> None:
    """A large message on SQLite: a zeroblob row, then the bytes written with incremental
    blob I/O (binding them as a parameter would copy them once more inside SQLite); a
    `Spooled` one a piece at a time, so it is never whole in memory."""
    T = RawMessage.__table__
    raw = row["raw"]
    raw_id = session.execute(T.insert().values({**row, "raw": sa.func.zeroblob(len(raw))}).returning(T.c.id)).scalar_one()
    with session.connection().connection.driver_connection.blobopen("raw_messages", "raw", raw_id) as blob:
        if isinstance(raw, Spooled):
            for chunk in raw.chunks():
                blob.write(chunk)
        else:
            blob.write(raw)


# --- step 2: parse and thread -----------------------------------------------------------------

BATCH_MESSAGES = 200
BATCH_BYTES = 16 << 20
"""A filing batch: at most this many messages or bytes of raw mail (one message at least)."""
FIRST_BATCH = 25


PARALLEL_MIN = 400
"""Parse in worker processes when at least this many messages wait (starting them costs ~0.5 s)."""
PARALLEL_MAX_BYTES = 1 << 20
"""Larger messages are parsed in this process: copying them to a worker would double their memory."""
LOOKAHEAD = 2


def process_pending(database: Database, settings: Settings, *, limit: int | None = None,
                    workers: int | None = None) -> IntakeReport:
    """File every stored message, oldest first, a batch per write transaction.

    A batch is parsed before its transaction starts (in worker processes when the
    backlog is large: parsing is pure and the slowest step), then filed set-based
    (`filing`): new tickets for a group of messages in a few statements, replies and
    anything unusual one by one in order.  The raw rows are marked in the same
    transaction, so a kill loses only the uncommitted batch, which stays `stored`.
    When the set-based path fails, the batch is filed again message by message, each
    in its own savepoint: one poisoned message is quarantined and never blocks the rest.
    """
    report = IntakeReport()
    R = RawMessage.__table__.c
    last = 0
    done = 0
    pool = None
    try:
        while limit is None or done < limit:
            with database.read() as session:
                rows = session.execute(
                    sa.select(R.id, sa.func.length(R.raw).label("size")).where(R.state == STORED, R.id > last)
                    .order_by(R.id).limit(5000)).all()
            if not rows:
                break
            if limit is not None:
                rows = rows[:limit - done]
            if pool is None and len(rows) >= PARALLEL_MIN:
                pool = parser_pool(workers)
            for items in _parsed(database, _batches(rows), pool):
                report.merge(_file_items(database, settings, items))
            last = rows[-1].id
            done += len(rows)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return report


def _parsed(database: Database, batches: list[list[int]], pool) -> Iterator[list[Item]]:
    """The batches read and parsed, in order.  With a pool, the next batches are parsed
    there while the current one is filed; the first is parsed here while the pool starts."""
    waiting: deque = deque()
    for number, batch in enumerate(batches):
        with database.read() as session:
            stored = _read_raw(session, database, batch)
        meta = [(raw_id, mailbox) for raw_id, mailbox, _ in stored]
        raws = [raw for _, _, raw in stored]
        del stored
        job = None
        if pool is not None and number > 0 and raws and max(map(len, raws)) <= PARALLEL_MAX_BYTES:
            try:
                job = pool.submit(parse_many, raws)
            except Exception:  # a broken pool: parse here
                log.warning("parser processes unavailable; parsing in this process", exc_info=True)
        waiting.append((meta, job if job is not None else raws))
        del raws
        while len(waiting) > (LOOKAHEAD if pool is not None else 0):
            yield _items(*waiting.popleft())
    while waiting:
        yield _items(*waiting.popleft())


def _read_raw(session: Session, database: Database, ids: list[int]) -> list[tuple[int, str | None, bytes]]:
    """(id, mailbox, bytes) of the rows still `stored`.  Large messages on SQLite are read
    with incremental blob I/O: a SELECT first assembles the value in SQLite's memory and
    then copies it, twice the message's size at once."""
    R = RawMessage.__table__.c
    rows = session.execute(sa.select(R.id, R.mailbox, sa.func.length(R.raw).label("size")).where(
        R.id.in_(ids), R.state == STORED).order_by(R.id)).all()
    big = {r.id for r in rows if database.sqlite and (r.size or 0) > BIG_RAW}
    small = [r.id for r in rows if r.id not in big]
    data = dict(session.execute(sa.select(R.id, R.raw).where(R.id.in_(small))).all()) if small else {}
    result = []
    for row in rows:
        if row.id in big:
            connection = session.connection().connection.driver_connection
            with connection.blobopen("raw_messages", "raw", row.id, readonly=True) as blob:
                raw = blob.read()
        else:
            raw = data.pop(row.id)
        result.append((row.id, row.mailbox, raw))
    return result


def _items(meta: list[tuple[int, str | None]], parsed) -> list[Item]:
    """Items from a parser job's result, or from raw bytes parsed now."""
    if not isinstance(parsed, list):
        try:
            parsed = parsed.result()
        except Exception:  # a dead worker: the per-message path parses again
            log.warning("parser process failed; parsing in this process", exc_info=True)
            parsed = [None] * len(meta)
    else:
        parsed = [_parse(raw) for raw in parsed]
    return [Item(raw_id, mailbox, p) for (raw_id, mailbox), p in zip(meta, parsed)]


def _parse(raw: bytes) -> ParsedMessage | None:
    """None when the parser itself fails: the message is then filed alone and quarantined with the error."""
    try:
        return parse_message(raw)
    except Exception:
        return None


def _batches(rows) -> list[list[int]]:
    """Ids in batches of growing size up to BATCH_MESSAGES/BATCH_BYTES: the first tickets
    are committed quickly, the bulk goes in large transactions."""
    batches: list[list[int]] = [[]]
    size = 0
    for row in rows:
        most = min(BATCH_MESSAGES, FIRST_BATCH << (len(batches) - 1))
        if batches[-1] and (len(batches[-1]) >= most or size + (row.size or 0) > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(row.id)
        size += row.size or 0
    return [b for b in batches if b]


def _file_items(database: Database, settings: Settings, items: list[Item]) -> IntakeReport:
    """One write transaction for a parsed batch; message by message if the batch fails."""
    if not items:
        return IntakeReport()
    with database.write() as session:
        try:
            with session.begin_nested():
                return _file_batch(session, settings, items)
        except Exception:
            log.warning("filing a batch of %d messages failed; filing them one by one", len(items), exc_info=True)
        report = IntakeReport()
        ours = our_addresses(session, settings)
        acknowledger = Acknowledger(session, settings, ours)
        for item in items:
            parsed = None if item.released else item.parsed  # released: parsed again from the raw bytes
            report.merge(_process_in(session, settings, item.raw_id, ours, acknowledger, parsed))
        return report


def _file_batch(session: Session, settings: Settings, items: list[Item]) -> IntakeReport:
    R = RawMessage.__table__.c
    # Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers): a second filer waits, then skips.
    still = set(session.execute(sa.select(R.id).where(R.id.in_([i.raw_id for i in items]), R.state == STORED)
                                .with_for_update()).scalars())
    items = [i for i in items if i.raw_id in still]
    report = IntakeReport()
    ours = our_addresses(session, settings)
    acknowledger = Acknowledger(session, settings, ours)
    tag = settings.tickets.subject_tag
    seen = known_message_ids(session, [ident for i in items if i.parsed
                                       for ident in (i.parsed.message_id, *references_of(i.parsed))])
    queues: dict[str | None, int] = {}
    group: list[Item] = []

    def flush() -> None:
        if not group:
            return
        for item in group:
            if item.mailbox not in queues:
                queues[item.mailbox] = queue_id(session, _queue_for(session, _mailbox(settings, item.mailbox)))
        ticket_ids = file_new_tickets(session, settings, group, queues, ours)
        closed: set[int] = set()
        if load_automation(settings).rules:
            for ticket_id in ticket_ids:
                apply_rules(session, settings, ticket_id)
            T = Ticket.__table__.c
            closed = set(session.execute(sa.select(T.id).where(T.id.in_(ticket_ids), T.status == "closed")).scalars())
        if settings.tickets.autoreply:
            acknowledger.prepare(i.parsed.from_addr for i in group if i.parsed.from_trusted)
            for ticket_id, item in zip(ticket_ids, group):
                if ticket_id not in closed:
                    acknowledger.acknowledge(ticket_id, item.parsed)
            acknowledger.flush()
        report.created.extend(ticket_ids)
        group.clear()

    for item in items:
        if item.parsed is not None and is_plain_new(item.parsed, tag, ours, seen):
            group.append(item)
        else:
            flush()
            report.merge(_process_in(session, settings, item.raw_id, ours, acknowledger, item.parsed))
        if item.parsed is not None and item.parsed.message_id:
            seen.add(item.parsed.message_id)
    flush()
    return report


def process_one(database: Database, settings: Settings, raw_id: int) -> IntakeReport:
    with database.write() as session:
        ours = our_addresses(session, settings)
        return _process_in(session, settings, raw_id, ours, Acknowledger(session, settings, ours))


def _process_in(session: Session, settings: Settings, raw_id: int, ours: set[str], acknowledger: Acknowledger,
                parsed: ParsedMessage | None = None) -> IntakeReport:
    """File one stored message inside the caller's transaction, in a savepoint of its own."""
    report = IntakeReport()
    raw = session.get(RawMessage, raw_id, populate_existing=True)
    if raw is None or raw.state != STORED:
        return report
    try:
        with session.begin_nested():
            outcome = _file_message(session, settings, raw, ours, acknowledger, parsed)
            acknowledger.flush()
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


def _file_message(session: Session, settings: Settings, raw: RawMessage, ours: set[str],
                  acknowledger: Acknowledger, parsed: ParsedMessage | None = None) -> _Outcome:
    if parsed is None:
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
        acknowledger.acknowledge(ticket.id, parsed)
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
    if when is not None and not isinstance(when, str):
        raise InvalidError(f"ingest --json: created_at must be an ISO 8601 time, got {str(when)[:40]!r}")
    try:
        created_at = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None
    except ValueError:
        raise InvalidError(f"ingest --json: created_at {when[:40]!r} is not an ISO 8601 time "
                           "(e.g. 2026-12-01T09:30:00Z)") from None
    if created_at is not None and created_at.tzinfo is None:
        raise InvalidError("ingest --json: created_at needs a time zone (Z or an offset)")
    with database.write() as session:
        ticket_id = data.get("ticket")
        if ticket_id is not None:
            if isinstance(ticket_id, str) and ticket_id.isascii() and ticket_id.isdigit() and len(ticket_id) <= 4000:
                ticket_id = int(ticket_id)
            if not isinstance(ticket_id, int) or isinstance(ticket_id, bool):
                raise InvalidError(f"ingest --json: 'ticket' must be a ticket id, got {str(ticket_id)[:40]!r}")
            ticket = get_ticket(session, ticket_id)
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

# Queue limits: raw mail belongs to the queue its mailbox files into (`[[mailbox]] queue`), or,
# once filed, to its tickets' queues.  A limited agent sees and handles only their queues' raw
# mail; mail of no known queue (piped in without --mailbox, a mailbox since removed from the
# config, a queue not created yet) is for admins and agents who work every queue.

def _raw_refusal(session: Session, settings: Settings | None, actor: Actor | None, raw_id: int,
                 mailbox: str | None, what: str = "quarantined message") -> str | None:
    """Why `actor` may not see or handle this raw message, or None when they may."""
    if actor is None or actor.queue_ids is None:
        return None
    M, T, Q = Message.__table__.c, Ticket.__table__.c, Queue.__table__.c
    filed = set(session.execute(sa.select(T.queue_id).join(Message.__table__, M.ticket_id == T.id)
                                .where(M.raw_message_id == raw_id)).scalars())
    if filed:
        return None if filed <= actor.queue_ids else f"{what} #{raw_id} is filed outside your queues"
    box = _mailbox(settings, mailbox) if settings is not None and mailbox else None
    queue = None if box is None else session.execute(
        sa.select(Q.id).where(sa.func.lower(Q.name) == box.queue.lower())).scalar()
    if queue is None:
        role = session.execute(sa.select(Agent.__table__.c.role).where(Agent.__table__.c.id == actor.agent_id)).scalar()
        return None if role == "admin" else (
            f"{what} #{raw_id} has no known queue (mailbox {clean_line(mailbox or 'none')}): for admins")
    return None if queue in actor.queue_ids else f"{what} #{raw_id} is not in your queues ({box.queue})"


def _check_raw_access(session: Session, settings: Settings | None, actor: Actor | None,
                      raw_ids: Sequence[int]) -> None:
    """All or nothing: refuse the batch when any message lies outside the actor's queues."""
    from supportdesk.tickets import ForbiddenError

    if actor is None or actor.queue_ids is None:
        return
    R = RawMessage.__table__.c
    mailboxes = dict(session.execute(sa.select(R.id, R.mailbox).where(R.id.in_(list(raw_ids)))).all())
    refused = [why for i in raw_ids if (why := _raw_refusal(session, settings, actor, i, mailboxes.get(i)))]
    if refused:
        raise ForbiddenError("; ".join(refused[:3]) + (" …" if len(refused) > 3 else "") + " (nothing changed)")


def quarantined(session: Session, settings: Settings | None = None, actor: Actor | None = None) -> list[dict]:
    """Quarantined messages, oldest first; with a limited `actor`, only those they may handle."""
    R = RawMessage.__table__.c
    rows = session.execute(sa.select(R.id, R.mailbox, R.uid, R.received_at, R.error, R.message_id_header,
                                     sa.func.length(R.raw).label("size"))
                           .where(R.state == QUARANTINED).order_by(R.id)).all()
    return [{"id": r.id, "mailbox": r.mailbox, "uid": r.uid, "received_at": r.received_at.isoformat(),
             "size": r.size, "message_id": r.message_id_header, "error": r.error} for r in rows
            if _raw_refusal(session, settings, actor, r.id, r.mailbox) is None]


def retry_quarantined(database: Database, settings: Settings, raw_ids: Sequence[int],
                      actor: Actor | None = None) -> IntakeReport:
    """Run quarantined messages through intake again (e.g. after an upgrade); a limited `actor`
    only their queues' messages."""
    _requeue(database, raw_ids, settings, actor)
    report = IntakeReport()
    for raw_id in raw_ids:
        report.merge(process_one(database, settings, raw_id))
    return report


def release_quarantined(database: Database, settings: Settings, raw_ids: Sequence[int], actor: Actor) -> list[int]:
    """Make a ticket of quarantined messages anyway, with whatever text can be recovered (a limited
    `actor`: only their queues' messages)."""
    R = RawMessage.__table__.c
    created = []
    with database.write() as session:
        _check_quarantined(session, raw_ids)
        _check_raw_access(session, settings, actor, raw_ids)
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
    possible = [i for i in raw_ids if id_in_range(i)]
    found = set(session.execute(sa.select(R.id).where(R.id.in_(possible), R.state == QUARANTINED)).scalars())
    missing = [i for i in raw_ids if i not in found]
    if missing:
        raise NotFoundError(f"not in quarantine: {', '.join(f'#{i}' for i in missing)}")


def _requeue(database: Database, raw_ids: Sequence[int], settings: Settings | None = None,
             actor: Actor | None = None) -> None:
    R = RawMessage.__table__.c
    with database.write() as session:
        _check_quarantined(session, raw_ids)
        _check_raw_access(session, settings, actor, raw_ids)
        session.execute(sa.update(RawMessage.__table__).where(R.id.in_(list(raw_ids))).values(state=STORED, error=None))


def raw_bytes(session: Session, raw_id: int, settings: Settings | None = None, actor: Actor | None = None) -> bytes:
    """A raw message's original bytes; a limited `actor` only their queues' (see `_raw_refusal`)."""
    from supportdesk.tickets import ForbiddenError, NotFoundError

    raw = session.get(RawMessage, raw_id) if id_in_range(raw_id) else None
    if raw is None:
        raise NotFoundError(f"no raw message #{raw_id}")
    refusal = _raw_refusal(session, settings, actor, raw_id, raw.mailbox, what="raw message")
    if refusal:
        raise ForbiddenError(refusal)
    return raw.raw
