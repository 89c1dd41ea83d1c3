"""Filing many new-ticket messages at once: a few IN-queries and executemany inserts.

Most inbound mail opens a new ticket from a sender the batch can resolve up front.
`is_plain_new` picks those; `file_new_tickets` writes them for a whole group in a
fixed number of statements (customers, organisations, tickets, messages, events,
participants, tags, attachments), with the same rows `create_ticket` writes one by
one.  Everything else (replies, tagged subjects, bounces, possible duplicates,
quarantine) keeps the per-message path in `intake`, which runs in order between
groups so a reply always finds the ticket an earlier message of the batch opened.

`Acknowledger` queues the acknowledgements of a group with the recipient rate
limits read once per group and counted on as the group is answered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.config import Settings
from supportdesk.db import touch
from supportdesk.mail.loops import DEFAULT_RECIPIENT_LIMITS, DEFAULT_TICKET_LIMITS, allowed, automatic_reason
from supportdesk.mail.parse import ParsedMessage
from supportdesk.mail.subjects import find_ticket_tag, remove_ticket_tag
from supportdesk.mail.threading import references_of
from supportdesk.models import (
    PRIORITY_RANK, Attachment, AttachmentBlob, Customer, Event, Message, Organization, Outbox, Participant, Queue, RawMessage, Tag,
    Ticket, TicketTag, utcnow,
)
from supportdesk.tickets import FREEMAIL_DOMAINS, Actor, InvalidError, get_ticket, record, store_blobs

SYSTEM = Actor.system()
SUSPICIOUS = "suspicious-sender"
RATE_WINDOW = timedelta(hours=10)


@dataclass
class Item:
    """One stored message on its way to a ticket."""

    raw_id: int
    mailbox: str | None
    parsed: ParsedMessage | None
    """None when the parser failed (the per-message path parses again and quarantines)."""
    released: bool = False
    """Its large attachments were stored and their bytes let go (`release_large_attachments`):
    filed again (the batch rolled back), it is parsed again from the raw message."""


RELEASE_ABOVE = 1 << 20


def release_large_attachments(items: Sequence[Item]) -> None:
    """Let go of attachment bytes over RELEASE_ABOVE once they are written: marking a large raw
    row processed makes SQLite rewrite the row (twice its size in memory for a moment), and
    that should not come on top of the decoded attachment."""
    for item in items:
        parsed = item.parsed
        if parsed is None or not any(len(a.data) > RELEASE_ABOVE for a in parsed.attachments):
            continue
        item.parsed = replace(parsed, attachments=[
            replace(a, data=b"") if len(a.data) > RELEASE_ABOVE else a for a in parsed.attachments])
        item.released = True


def known_message_ids(session: Session, ids: Iterable[str]) -> set[str]:
    """Which of these Message-IDs are already on a stored message (any kind)."""
    M = Message.__table__.c
    wanted = list(dict.fromkeys(i for i in ids if i))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(session.execute(sa.select(M.message_id).where(M.message_id.in_(wanted[start:start + 500])))
                     .scalars())
    return found


def is_plain_new(parsed: ParsedMessage, tag: str, ours: set[str], message_ids: set[str]) -> bool:
    """Certain to open a new, unlinked ticket: nothing it references or repeats is known,
    no ticket tag, a usable sender that is not ours.  `message_ids` holds the ids stored
    before the batch and those of the batch's earlier messages."""
    sender = parsed.from_addr or ""
    if parsed.error or parsed.dsn is not None or "@" not in sender or sender in ours:
        return False
    if any(ch.isspace() for ch in sender):
        return False
    if parsed.message_id and parsed.message_id in message_ids:
        return False
    if any(ident in message_ids for ident in references_of(parsed)):
        return False
    return find_ticket_tag(parsed.subject, tag) is None


def file_new_tickets(session: Session, settings: Settings, items: Sequence[Item], queue_id: dict[str | None, int],
                     ours: set[str]) -> list[int]:
    """A new ticket for each item (all passed `is_plain_new`), in the caller's transaction;
    the raw rows are marked processed in the same transaction.  Returns the ticket ids in order."""
    if not items:
        return []
    customers = _customers(session, [(i.parsed.from_addr, i.parsed.from_name) for i in items])
    T, M = Ticket.__table__, Message.__table__
    tag = settings.tickets.subject_tag
    ticket_rows, message_rows, events, participants, tagged = [], [], [], [], []
    for item in items:
        p = item.parsed
        when = utcnow()
        customer_id, name = customers[p.from_addr]
        subject = (remove_ticket_tag(p.subject, tag) or "(no subject)").strip() or "(no subject)"
        ticket_rows.append({
            "subject": subject, "status": "new", "priority": "normal", "priority_rank": PRIORITY_RANK["normal"],
            "channel": "email", "queue_id": queue_id[item.mailbox], "requester_id": customer_id,
            "mailbox": item.mailbox, "version": 2, "message_count": 1, "unread": True,
            "created_at": when, "updated_at": when, "last_inbound_at": when,
        })
        cc = [a for _, a in p.cc if a and a not in ours and a != p.from_addr] if p.from_trusted else []
        message_rows.append({
            "kind": "inbound", "author_agent_id": None, "from_addr": p.from_addr, "from_name": name,
            "to_addrs": json.dumps([a for _, a in p.to if a]), "cc_addrs": json.dumps(cc), "subject": subject,
            "body_text": p.body_text, "message_id": p.message_id, "in_reply_to": (p.in_reply_to or [None])[0],
            "references": " ".join(p.references), "auto": False, "raw_message_id": item.raw_id, "created_at": when,
        })
        events.append({"actor": SYSTEM.login, "at": when, "field": "created", "old": None, "new": "email ticket"})
        participants.append(list(dict.fromkeys(a.strip().lower() for a in cc if a.strip())))
        tagged.append(not p.from_trusted)
    ticket_ids = list(session.execute(T.insert().returning(T.c.id, sort_by_parameter_order=True),
                                      ticket_rows).scalars())
    for ticket_id, row in zip(ticket_ids, message_rows):
        row["ticket_id"] = ticket_id
    message_ids = list(session.execute(M.insert().returning(M.c.id, sort_by_parameter_order=True),
                                       message_rows).scalars())
    for ticket_id, event in zip(ticket_ids, events):
        event["ticket_id"] = ticket_id
    if any(tagged):
        tag_id = _tag_id(session, SUSPICIOUS)
        marked = [t for t, flag in zip(ticket_ids, tagged) if flag]
        session.execute(TicketTag.__table__.insert(), [{"ticket_id": t, "tag_id": tag_id} for t in marked])
        events += [{"ticket_id": t, "actor": SYSTEM.login, "at": r["created_at"], "field": "tag", "old": None,
                    "new": SUSPICIOUS} for t, r, flag in zip(ticket_ids, ticket_rows, tagged) if flag]
    session.execute(Event.__table__.insert(), events)
    rows = [{"ticket_id": t, "email": e, "role": "cc"} for t, emails in zip(ticket_ids, participants) for e in emails]
    if rows:
        session.execute(Participant.__table__.insert(), rows)
    _attachments(session, [(m, i.parsed) for m, i in zip(message_ids, items) if i.parsed.attachments])
    del p  # the last message's parse: released below
    release_large_attachments(items)
    R = RawMessage.__table__
    session.execute(sa.update(R).where(R.c.id == sa.bindparam("raw_id")).values(state="processed", error=None)
                    .execution_options(synchronize_session=False),
                    [{"raw_id": i.raw_id} for i in items])
    touch(session, ticket_ids)
    return ticket_ids


def _customers(session: Session, people: list[tuple[str, str]]) -> dict[str, tuple[int, str]]:
    """email → (customer id, name) for every sender, creating customers and organisations as
    `get_or_create_customer` does (an unnamed customer takes the name the mail gives)."""
    C, O = Customer.__table__, Organization.__table__
    names: dict[str, str] = {}
    for email, name in people:
        if not names.get(email):
            names[email] = name or ""
    found = {r.email: (r.id, r.name) for r in session.execute(
        sa.select(C.c.id, C.c.email, C.c.name).where(C.c.email.in_(list(names))))}
    renamed = [{"cid": found[e][0], "new_name": names[e]} for e in found if names[e] and not found[e][1]]
    if renamed:
        session.execute(sa.update(C).where(C.c.id == sa.bindparam("cid")).values(name=sa.bindparam("new_name"))
                        .execution_options(synchronize_session=False), renamed)
    result = {e: (cid, name or names[e]) for e, (cid, name) in found.items()}
    missing = [e for e in names if e not in found]
    if not missing:
        return result
    domains = sorted({e.rsplit("@", 1)[1] for e in missing} - FREEMAIL_DOMAINS)
    orgs: dict[str, int] = {}
    if domains:
        orgs = dict(session.execute(sa.select(O.c.domain, O.c.id).where(O.c.domain.in_(domains))).all())
        new = [d for d in domains if d not in orgs]
        if new:
            now = utcnow()
            session.execute(O.insert(), [{"name": d.split(".")[0].capitalize() if d.count(".") else d, "domain": d,
                                          "created_at": now} for d in new])
            orgs.update(session.execute(sa.select(O.c.domain, O.c.id).where(O.c.domain.in_(new))).all())
    now = utcnow()
    ids = session.execute(C.insert().returning(C.c.id, sort_by_parameter_order=True), [
        {"email": e, "name": names[e], "organization_id": orgs.get(e.rsplit("@", 1)[1]), "created_at": now}
        for e in missing]).scalars()
    result.update({e: (cid, names[e]) for e, cid in zip(missing, ids)})
    return result


def _tag_id(session: Session, name: str) -> int:
    G = Tag.__table__.c
    found = session.execute(sa.select(G.id).where(G.name == name)).scalar()
    if found is None:
        found = session.execute(Tag.__table__.insert().values(name=name).returning(G.id)).scalar_one()
    return found


def _attachments(session: Session, messages: list[tuple[int, ParsedMessage]]) -> None:
    """Attachment rows of several messages; each content stored once (`save_attachments` per group)."""
    if not messages:
        return
    blobs, rows = {}, []
    for message_id, parsed in messages:
        for a in parsed.attachments:
            digest = hashlib.sha256(a.data).hexdigest()
            blobs.setdefault(digest, {"sha256": digest, "size": len(a.data), "data": a.data})
            rows.append({"message_id": message_id, "filename": a.filename, "content_type": a.content_type,
                         "size": len(a.data), "sha256": digest, "content_id": a.content_id, "inline": a.inline})
    _store_blobs(session, list(blobs.values()))
    session.execute(Attachment.__table__.insert(), rows)


BIG_BLOB = 1 << 20


def _store_blobs(session: Session, blobs: list[dict]) -> None:
    """`store_blobs`, but on SQLite a large content is written with incremental blob I/O:
    binding it as a parameter copies it once more in SQLite's memory."""
    if session.get_bind().dialect.name != "sqlite":
        store_blobs(session, blobs)
        return
    B = AttachmentBlob.__table__
    have = set(session.execute(sa.select(B.c.sha256).where(B.c.sha256.in_([b["sha256"] for b in blobs]))).scalars())
    small = [b for b in blobs if b["sha256"] not in have and b["size"] <= BIG_BLOB]
    if small:
        store_blobs(session, small)
    for blob in blobs:
        if blob["sha256"] in have or blob["size"] <= BIG_BLOB:
            continue
        session.execute(B.insert().values(sha256=blob["sha256"], size=blob["size"],
                                          data=sa.func.zeroblob(blob["size"])))
        rowid = session.execute(sa.select(sa.literal_column("rowid")).select_from(B)
                                .where(B.c.sha256 == blob["sha256"])).scalar_one()
        with session.connection().connection.driver_connection.blobopen("attachment_blobs", "data", rowid) as target:
            target.write(blob["data"])


class Acknowledger:
    """Acknowledgements for the new tickets of one transaction, rate-limited per recipient
    (SPEC §8); what was queued earlier in the transaction counts too.

    `acknowledge` decides at once (suppressions are recorded as events) and holds the
    mail; `flush` composes and writes the held ones together, before the transaction
    commits.  Only tickets created in this transaction are acknowledged, so the
    per-ticket limit counts what this transaction queued.
    """

    def __init__(self, session: Session, settings: Settings, ours: set[str]):
        self.session, self.settings, self.ours = session, settings, ours
        self.sent: dict[str, list[datetime]] = {}
        self.on_ticket: dict[int, list[datetime]] = {}
        self.held: list[tuple[int, datetime]] = []

    def prepare(self, addresses: Iterable[str]) -> None:
        """Read the recent automatic mail to these addresses in one query."""
        wanted = [a for a in dict.fromkeys(addresses) if a and a not in self.sent]
        if not wanted:
            return
        M = Message.__table__.c
        window = utcnow() - RATE_WINDOW
        for start in range(0, len(wanted), 200):
            chunk = wanted[start:start + 200]
            for address in chunk:
                self.sent[address] = []
            rows = self.session.execute(sa.select(M.to_addrs, M.created_at).where(
                M.kind == "outbound", M.auto == sa.true(), M.created_at >= window,
                sa.or_(*[M.to_addrs.like(f'%"{a}"%') for a in chunk]))).all()
            for row in rows:
                for address in chunk:
                    if f'"{address}"' in row.to_addrs:
                        self.sent[address].append(row.created_at)

    def acknowledge(self, ticket_id: int, parsed: ParsedMessage) -> None:
        """Acknowledge a new ticket, unless the mail is automatic, untrusted or the rate is exceeded."""
        if not self.settings.tickets.autoreply or not parsed.from_trusted:
            return
        reason = automatic_reason(parsed, self.ours)
        if reason:
            record(self.session, ticket_id, SYSTEM, "autoreply", None, f"suppressed: {reason}")
            return
        now = utcnow()
        self.prepare([parsed.from_addr])
        sent = self.sent[parsed.from_addr]
        if not allowed(sent, now, DEFAULT_RECIPIENT_LIMITS):
            record(self.session, ticket_id, SYSTEM, "autoreply", None,
                   "suppressed: too many automatic replies to this address")
            return
        on_ticket = self.on_ticket.setdefault(ticket_id, [])
        if not allowed(on_ticket, now, DEFAULT_TICKET_LIMITS):
            return
        sent.append(now)
        on_ticket.append(now)
        self.held.append((ticket_id, now))

    def flush(self) -> None:
        """Compose the held acknowledgements and put them in the outbox, as `queue_reply`
        would one by one: thread message, outbox row, event, ticket summary."""
        held, self.held = self.held, []
        if not held:
            return
        from supportdesk.mail.compose import (
            OutgoingMail, build_message, envelope_recipients, make_message_id, reply_subject,
        )
        from supportdesk.mail.outbox import REPLYABLE_KINDS, sender_address
        from supportdesk.mail.templates import render

        session, settings = self.session, self.settings
        session.flush()
        T, C, Q, M = Ticket.__table__.c, Customer.__table__.c, Queue.__table__.c, Message.__table__.c
        ids = [ticket_id for ticket_id, _ in held]
        info = {r.id: r for r in session.execute(
            sa.select(T.id, T.subject, T.status, T.priority, T.mailbox, T.queue_id, T.updated_at,
                      C.email, C.name.label("customer_name"), Q.name.label("queue_name"),
                      Q.address.label("queue_address"))
            .join(Customer.__table__, C.id == T.requester_id).join(Queue.__table__, Q.id == T.queue_id)
            .where(T.id.in_(ids)))}
        thread: dict[int, list] = {}
        for row in session.execute(sa.select(M.ticket_id, M.kind, M.message_id).where(
                M.ticket_id.in_(ids), M.message_id.is_not(None), M.kind.in_(REPLYABLE_KINDS))
                .order_by(M.created_at, M.id)):
            thread.setdefault(row.ticket_id, []).append(row)
        config_dir = settings.file.parent if settings.file else None
        boxes = {b.name: b.address for b in settings.mailboxes}
        messages, outbox, tickets = [], [], []
        for ticket_id, now in held:
            t = info[ticket_id]
            rows = thread.get(ticket_id, [])
            inbound = [r.message_id for r in rows if r.kind == "inbound"]
            in_reply_to = inbound[-1] if inbound else (rows[-1].message_id if rows else None)
            references = [r.message_id for r in rows]
            try:
                from_addr = boxes.get(t.mailbox) or sender_address(session, settings, get_ticket(session, ticket_id))
                body = render("acknowledgement.txt", config_dir,
                              ticket={"id": t.id, "subject": t.subject, "status": t.status, "priority": t.priority},
                              customer={"email": t.email, "name": t.customer_name},
                              queue={"name": t.queue_name, "address": t.queue_address})
                template = settings.tickets.from_name if "{agent}" not in settings.tickets.from_name else "{queue}"
                mail = OutgoingMail(
                    from_addr=from_addr, from_name=template.format(queue=t.queue_name, agent="").strip(), to=[t.email],
                    cc=[], reply_to=from_addr, subject=reply_subject(t.subject, settings.tickets.subject_tag, t.id),
                    body_text=body, message_id=make_message_id(from_addr.rsplit("@", 1)[1]), in_reply_to=in_reply_to,
                    references=references, auto=True, date=now, attachments=[],
                )
                raw = build_message(mail)
            except (InvalidError, ValueError) as exc:
                problem = exc if isinstance(exc, InvalidError) else f"ticket #{ticket_id}: cannot build the reply: {exc}"
                record(session, ticket_id, SYSTEM, "autoreply", None, f"not sent: {problem}"[:500])
                continue
            messages.append({
                "ticket_id": ticket_id, "kind": "outbound", "author_agent_id": None, "from_addr": from_addr,
                "from_name": mail.from_name, "to_addrs": json.dumps(mail.to), "cc_addrs": "[]", "subject": mail.subject,
                "body_text": body, "message_id": mail.message_id, "in_reply_to": in_reply_to,
                "references": " ".join(references), "auto": True, "raw_message_id": None, "created_at": now,
            })
            outbox.append({"ticket_id": ticket_id, "status": "queued", "envelope_from": "",
                           "envelope_to": json.dumps(envelope_recipients(mail)), "raw": raw, "attempts": 0,
                           "next_attempt_at": now, "created_at": now})
            tickets.append({"tid": ticket_id, "now": now, "latest": max(now, t.updated_at)})
        if not messages:
            return
        message_ids = list(session.execute(Message.__table__.insert().returning(M.id, sort_by_parameter_order=True),
                                           messages).scalars())
        for row, message_id in zip(outbox, message_ids):
            row["message_id"] = message_id
        session.execute(Outbox.__table__.insert(), outbox)
        session.execute(Event.__table__.insert(), [
            {"ticket_id": m["ticket_id"], "actor": SYSTEM.login, "at": m["created_at"], "field": "message", "old": None,
             "new": f"outbound #{message_id}"} for m, message_id in zip(messages, message_ids)])
        session.execute(sa.update(Ticket.__table__).where(T.id == sa.bindparam("tid")).values(
            message_count=T.message_count + 1, version=T.version + 1, last_outbound_at=sa.bindparam("now"),
            updated_at=sa.bindparam("latest")).execution_options(synchronize_session=False), tickets)
        touch(session, [t["tid"] for t in tickets])
        changed = {t["tid"] for t in tickets}
        for obj in list(session.identity_map.values()):
            if isinstance(obj, Ticket) and obj.id in changed:
                session.expire(obj)
