"""Export and import: tickets as JSON Lines, one ticket a line, messages included.

The format is `tickets show --format json` plus the attachment and outbox bytes,
so export → import into an empty database → export gives the same tickets.
An imported ticket keeps its own and its messages' `created_at`; it gets a new
id and keeps the old one as `external_id`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Callable, Iterable, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.db import touch
from supportdesk.listing import events_by_ticket, messages_for, ticket_summaries
from supportdesk.maintenance import FTS_DOCUMENT
from supportdesk.models import (
    CHANNELS, DELIVERY_STATES, MESSAGE_KINDS, PRIORITIES, PRIORITY_RANK, STATUSES, SYSTEM_ACTOR, Agent, Attachment,
    Customer, Event, Message, Organization, Outbox, Participant, Queue, Tag, Ticket, TicketTag, utcnow,
)
from supportdesk.models import UTCDateTime
from supportdesk.tickets import FREEMAIL_DOMAINS, store_blobs, Actor, InvalidError, normalize_tag

BATCH = 1000


def export_tickets(
    session: Session, ids: Sequence[int], stream: IO[str], now: datetime, *, advance: Callable[[int], None] = lambda n: None,
) -> int:
    written = 0
    O = Outbox.__table__.c
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        summaries = ticket_summaries(session, chunk, now)
        messages = messages_for(session, chunk, with_content=True)
        events = events_by_ticket(session, chunk)
        P = Participant.__table__.c
        participants: dict[int, list[str]] = {}
        for ticket_id, email in session.execute(sa.select(P.ticket_id, P.email).where(P.ticket_id.in_(chunk))
                                                .order_by(P.ticket_id, P.email)):
            participants.setdefault(ticket_id, []).append(email)
        raws = dict(session.execute(sa.select(O.message_id, O.raw).where(O.ticket_id.in_(chunk))).all())
        for ticket in summaries:
            ticket["messages"] = messages.get(ticket["id"], [])
            ticket["events"] = events.get(ticket["id"], [])
            ticket["participants"] = participants.get(ticket["id"], [])
            for m in ticket["messages"]:
                if m["kind"] == "outbound" and raws.get(m["id"]):
                    m["raw_base64"] = base64.b64encode(raws[m["id"]]).decode("ascii")
            stream.write(json.dumps(ticket, ensure_ascii=False) + "\n")
            written += 1
        advance(len(chunk))
    return written


# --- reading and checking -------------------------------------------------------------------

class ImportLineError(InvalidError):
    pass


def read_import_file(source: str, *, skip_bad: bool = False) -> tuple[list[dict], list[tuple[int, str]]]:
    """Every line parsed and checked before anything is written; the first bad line
    stops the import (unless skip_bad) with its line number."""
    name = "standard input" if source == "-" else source
    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8")
    except OSError as exc:
        raise InvalidError(f"cannot read {source}: {exc.strerror}") from None
    records: list[dict] = []
    bad: list[tuple[int, str]] = []
    try:
        for line_no, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                records.append(check_record(json.loads(line)))
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
            except ImportLineError as exc:
                problem = str(exc)
            else:
                continue
            if not skip_bad:
                raise InvalidError(f"{name}:{line_no}: {problem}; nothing was imported (use --skip-bad to import the rest)")
            bad.append((line_no, problem))
    except UnicodeDecodeError:
        raise InvalidError(f"{name} is not UTF-8 text; nothing was imported") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    return records, bad


def _when(value, what: str) -> datetime:
    if not isinstance(value, str):
        raise ImportLineError(f"{what} must be an ISO 8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ImportLineError(f"{what} {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ImportLineError(f"{what} {value!r} has no time zone (add Z or an offset)")
    return parsed


def _choice(record: dict, key: str, choices: Sequence[str], default: str) -> str:
    value = record.get(key, default)
    if value not in choices:
        raise ImportLineError(f"{key} {value!r} is not one of {', '.join(choices)}")
    return value


def _list(record: dict, key: str) -> list:
    value = record.get(key, [])
    if not isinstance(value, list):
        raise ImportLineError(f"{key} must be a list")
    return value


def check_record(record) -> dict:
    if not isinstance(record, dict):
        raise ImportLineError("each line must be a JSON object (one ticket)")
    requester = record.get("requester")
    if not isinstance(requester, str) or "@" not in requester:
        raise ImportLineError(f"requester must be an email address, got {requester!r}")
    if not isinstance(record.get("subject", ""), str):
        raise ImportLineError("subject must be a string")
    created = _when(record.get("created_at"), "created_at")
    out = {
        "external_id": str(record["id"]) if record.get("id") is not None else record.get("external_id"),
        "subject": record.get("subject") or "(no subject)",
        "status": _choice(record, "status", STATUSES, "open"),
        "priority": _choice(record, "priority", PRIORITIES, "normal"),
        "channel": _choice(record, "channel", CHANNELS, "email"),
        "queue": record.get("queue") or "General",
        "requester": requester.strip().lower(),
        "requester_name": record.get("requester_name") or "",
        "assignee": record.get("assignee"),
        "participants": [str(p).lower() for p in record.get("participants") or [] if isinstance(p, str)],
        "mailbox": record.get("mailbox"),
        "created_at": created,
        "updated_at": _when(record["updated_at"], "updated_at") if record.get("updated_at") else created,
        "tags": [],
        "messages": [],
        "events": [],
    }
    try:
        out["tags"] = [normalize_tag(t) for t in _list(record, "tags") if isinstance(t, str)]
    except InvalidError as exc:
        raise ImportLineError(str(exc)) from None
    for i, e in enumerate(_list(record, "events")):
        if not isinstance(e, dict) or not isinstance(e.get("field"), str) or not e.get("field"):
            raise ImportLineError(f"events[{i}] must be an object with a field")
        out["events"].append({
            "at": _when(e.get("at"), f"events[{i}].at"), "actor": str(e.get("actor") or SYSTEM_ACTOR),
            "field": e["field"], "old": None if e.get("old") is None else str(e["old"]),
            "new": None if e.get("new") is None else str(e["new"]),
        })
    for i, m in enumerate(_list(record, "messages")):
        if not isinstance(m, dict):
            raise ImportLineError(f"messages[{i}] must be an object")
        kind = m.get("kind")
        if kind not in MESSAGE_KINDS:
            raise ImportLineError(f"messages[{i}].kind {kind!r} is not one of {', '.join(MESSAGE_KINDS)}")
        delivery = m.get("delivery")
        if delivery is not None and delivery not in DELIVERY_STATES:
            raise ImportLineError(f"messages[{i}].delivery {delivery!r} is not one of {', '.join(DELIVERY_STATES)}")
        attachments = []
        for j, a in enumerate(m.get("attachments") or []):
            try:
                data = base64.b64decode(a.get("content_base64", ""), validate=True)
            except (ValueError, TypeError, AttributeError):
                raise ImportLineError(f"messages[{i}].attachments[{j}].content_base64 is not base64") from None
            attachments.append((str(a.get("filename") or f"attachment-{j + 1}"),
                                str(a.get("content_type") or "application/octet-stream"), data))
        out["messages"].append({
            "kind": kind,
            "from": str(m.get("from") or ""),
            "from_name": str(m.get("from_name") or ""),
            "author": m.get("author"),
            "to": [str(x) for x in m.get("to") or []],
            "cc": [str(x) for x in m.get("cc") or []],
            "subject": str(m.get("subject") or out["subject"]),
            "body_text": str(m.get("body_text") or ""),
            "message_id": m.get("message_id"),
            "in_reply_to": m.get("in_reply_to"),
            "created_at": _when(m.get("created_at"), f"messages[{i}].created_at"),
            "auto": bool(m.get("auto", False)),
            "delivery": delivery,
            "raw": base64.b64decode(m["raw_base64"]) if m.get("raw_base64") else None,
            "attachments": attachments,
        })
    return out


# --- writing ---------------------------------------------------------------------------------

@dataclass
class ImportResult:
    tickets: int = 0
    messages: int = 0
    new_queues: list[str] = field(default_factory=list)
    new_agents: list[str] = field(default_factory=list)


def import_tickets(
    session: Session, records: Sequence[dict], actor: Actor, *, advance: Callable[[int], None] = lambda n: None,
) -> ImportResult:
    """Insert in batches with explicit ids (we hold the write lock; on PostgreSQL a table lock),
    set-based for speed (PostgreSQL: COPY)."""
    result = ImportResult()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # Explicit ids: keep other writers (and their sequence ids) out until the sequences are reset.
        session.execute(sa.text("LOCK TABLE tickets, messages IN EXCLUSIVE MODE"))
    cache = _Lookups(session, result)
    next_ticket = (session.execute(sa.select(sa.func.max(Ticket.__table__.c.id))).scalar() or 0) + 1
    next_message = (session.execute(sa.select(sa.func.max(Message.__table__.c.id))).scalar() or 0) + 1
    now = utcnow()
    pause_text_index(session, True)
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        cache.customers([(r["requester"], r["requester_name"]) for r in batch])
        tickets, messages, tag_links, events, outbox, attachments, blobs = [], [], [], [], [], [], {}
        participants = []
        for r in batch:
            ticket_id = next_ticket
            next_ticket += 1
            tickets.append({
                "id": ticket_id, "subject": r["subject"], "status": r["status"], "priority": r["priority"],
                "priority_rank": PRIORITY_RANK[r["priority"]], "channel": r["channel"],
                "queue_id": cache.queue(r["queue"]), "requester_id": cache.customer_ids[r["requester"]],
                "assignee_id": cache.agent(r["assignee"]) if r["assignee"] else None, "mailbox": r["mailbox"],
                "version": 1, "message_count": len(r["messages"]), "unread": False,
                "created_at": r["created_at"], "updated_at": max([r["updated_at"]] + [m["created_at"] for m in r["messages"]]),
                "last_inbound_at": _last(r["messages"], ("inbound", "call", "chat", "social")),
                "last_outbound_at": _last(r["messages"], ("outbound",)),
                "solved_at": r["updated_at"] if r["status"] in ("solved", "closed") else None,
                "closed_at": r["updated_at"] if r["status"] == "closed" else None,
                "external_id": r["external_id"],
            })
            for email in dict.fromkeys(r["participants"]):
                participants.append({"ticket_id": ticket_id, "email": email, "role": "cc"})
            for tag in dict.fromkeys(r["tags"]):
                tag_links.append({"ticket_id": ticket_id, "tag_id": cache.tag(tag)})
            for e in r["events"]:
                events.append(dict(e, ticket_id=ticket_id))
            if r["external_id"] is not None:
                events.append({"ticket_id": ticket_id, "actor": actor.login, "at": now, "field": "imported",
                               "old": None, "new": r["external_id"]})
            for m in r["messages"]:
                message_id = next_message
                next_message += 1
                messages.append({
                    "id": message_id, "ticket_id": ticket_id, "kind": m["kind"],
                    "author_agent_id": cache.agent(m["author"]) if m["author"] else None,
                    "from_addr": m["from"], "from_name": m["from_name"], "to_addrs": json.dumps(m["to"]),
                    "cc_addrs": json.dumps(m["cc"]), "subject": m["subject"], "body_text": m["body_text"],
                    "message_id": m["message_id"], "in_reply_to": m["in_reply_to"], "references": "",
                    "auto": m["auto"], "created_at": m["created_at"],
                })
                if m["kind"] == "outbound" and m["delivery"]:
                    outbox.append({
                        "ticket_id": ticket_id, "message_id": message_id, "status": m["delivery"],
                        "envelope_from": m["from"], "envelope_to": json.dumps(m["to"] + m["cc"]), "raw": m["raw"],
                        "attempts": 0, "created_at": m["created_at"],
                        "sent_at": m["created_at"] if m["delivery"] == "sent" else None,
                        "next_attempt_at": m["created_at"],
                    })
                for filename, content_type, data in m["attachments"]:
                    digest = hashlib.sha256(data).hexdigest()
                    blobs[digest] = {"sha256": digest, "size": len(data), "data": data}
                    attachments.append({"message_id": message_id, "filename": filename, "content_type": content_type,
                                        "size": len(data), "sha256": digest, "inline": False})
        _insert(session, Ticket.__table__, tickets)
        _insert(session, Message.__table__, messages)
        _insert(session, TicketTag.__table__, tag_links)
        _insert(session, Event.__table__, events)
        _insert(session, Outbox.__table__, outbox)
        _insert(session, Participant.__table__, participants)
        if blobs:
            store_blobs(session, list(blobs.values()))
        _insert(session, Attachment.__table__, attachments)
        if tickets:
            index_text(session, tickets[0]["id"], tickets[-1]["id"])
        touch(session, [t["id"] for t in tickets])
        result.tickets += len(tickets)
        result.messages += len(messages)
        advance(len(batch))
    pause_text_index(session, False)
    if dialect == "postgresql":
        reset_sequences(session, ("tickets", "messages"))
    return result


def pause_text_index(session: Session, paused: bool) -> None:
    """Bulk writers stop the per-row full-text triggers for their transaction and call
    `index_text` for what they wrote (SQLite: a row in fts_pause; PostgreSQL: a setting)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(sa.text("INSERT INTO fts_pause (id) VALUES (1)" if paused else "DELETE FROM fts_pause"))
    elif dialect == "postgresql":
        session.execute(sa.text("SELECT set_config('supportdesk.search_pause', :v, true)"),
                        {"v": "on" if paused else "off"})


def reset_sequences(session: Session, tables: Iterable[str]) -> None:
    """After inserts with explicit ids (PostgreSQL): each `id` sequence continues after the largest id."""
    for table in tables:
        session.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        ))


def index_text(session: Session, first: int, last: int) -> None:
    """Full-text documents for tickets first..last in one statement (indexing was paused)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(
            "INSERT INTO ticket_search (ticket_id, document) "
            "SELECT id, supportdesk_search_document(id) FROM tickets WHERE id BETWEEN :first AND :last "
            "ON CONFLICT (ticket_id) DO UPDATE SET document = excluded.document"
        ), {"first": first, "last": last})
        return
    session.execute(sa.text(
        f"INSERT INTO ticket_text (rowid, subject, body) SELECT t.id, t.subject, {FTS_DOCUMENT} "
        "FROM tickets t WHERE t.id BETWEEN :first AND :last"
    ), {"first": first, "last": last})


def _last(messages: Iterable[dict], kinds: tuple[str, ...]) -> datetime | None:
    times = [m["created_at"] for m in messages if m["kind"] in kinds]
    return max(times) if times else None


def _insert(session: Session, table: sa.Table, rows: list[dict]) -> None:
    """Many rows at once.  On SQLite straight through the driver: SQLAlchemy's per-value
    processing costs more than SQLite's own work at import volumes."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        copy_rows(connection, table, rows)
        return
    if connection.dialect.name != "sqlite":
        session.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join(f":{c}" for c in columns)})'
    instants = [c for c in columns if isinstance(table.c[c].type, UTCDateTime)]
    for row in rows:
        for c in instants:
            row[c] = _sqlite_instant(row[c])
    connection.exec_driver_sql(sql, rows)


def copy_rows(connection: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """PostgreSQL's COPY for many rows (all with the same keys): several times faster than
    executemany.  Each value goes through its column type's own bind processing first."""
    columns = list(rows[0])
    processors = [table.c[c].type.bind_processor(connection.dialect) for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = connection.connection.driver_connection.cursor()
    with cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row[c] if p is None else p(row[c]) for c, p in zip(columns, processors)])


def _sqlite_instant(value: datetime | None) -> str | None:
    """The storage form SQLAlchemy's SQLite dialect writes for our instants (naive UTC, microseconds)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


class _Lookups:
    """Name → id caches that create what the file needs (queues, tags, customers)."""

    def __init__(self, session: Session, result: ImportResult):
        self.session, self.result = session, result
        self.queues = {n.lower(): i for i, n in session.execute(sa.select(Queue.__table__.c.id, Queue.__table__.c.name))}
        self.agents = {n: i for i, n in session.execute(sa.select(Agent.__table__.c.id, Agent.__table__.c.login))}
        self.tags = {n: i for i, n in session.execute(sa.select(Tag.__table__.c.id, Tag.__table__.c.name))}
        self.customer_ids: dict[str, int] = {}
        self.orgs: dict[str, int] = {}

    def queue(self, name: str) -> int:
        key = name.lower()
        if key not in self.queues:
            self.queues[key] = self.session.execute(Queue.__table__.insert().values(name=name, created_at=utcnow())).inserted_primary_key[0]
            self.result.new_queues.append(name)
        return self.queues[key]

    def agent(self, login: str) -> int:
        login = login.lower()
        if login not in self.agents:
            self.agents[login] = self.session.execute(Agent.__table__.insert().values(
                login=login, name=login, role="agent", active=False, signature="", created_at=utcnow())).inserted_primary_key[0]
            self.result.new_agents.append(login)
        return self.agents[login]

    def tag(self, name: str) -> int:
        if name not in self.tags:
            self.tags[name] = self.session.execute(Tag.__table__.insert().values(name=name)).inserted_primary_key[0]
        return self.tags[name]

    def customers(self, people: list[tuple[str, str]]) -> None:
        C, O = Customer.__table__, Organization.__table__
        wanted = {email: name for email, name in people if email not in self.customer_ids}
        if not wanted:
            return
        for start in range(0, len(wanted), 5000):
            chunk = list(wanted)[start:start + 5000]
            self.customer_ids.update(dict(self.session.execute(sa.select(C.c.email, C.c.id).where(C.c.email.in_(chunk))).all()))
        missing = [e for e in wanted if e not in self.customer_ids]
        if not missing:
            return
        domains = {e.rsplit("@", 1)[1] for e in missing} - FREEMAIL_DOMAINS - set(self.orgs)
        if domains:
            self.orgs.update(dict(self.session.execute(sa.select(O.c.domain, O.c.id).where(O.c.domain.in_(list(domains)))).all()))
            new = [d for d in domains if d not in self.orgs]
            if new:
                now = utcnow()
                self.session.execute(O.insert(), [{"name": d.split(".")[0].capitalize(), "domain": d, "created_at": now} for d in new])
                self.orgs.update(dict(self.session.execute(sa.select(O.c.domain, O.c.id).where(O.c.domain.in_(new))).all()))
        now = utcnow()
        self.session.execute(C.insert(), [
            {"email": e, "name": wanted[e], "organization_id": self.orgs.get(e.rsplit("@", 1)[1]), "created_at": now}
            for e in missing
        ])
        for start in range(0, len(missing), 5000):
            chunk = missing[start:start + 5000]
            self.customer_ids.update(dict(self.session.execute(sa.select(C.c.email, C.c.id).where(C.c.email.in_(chunk))).all()))
