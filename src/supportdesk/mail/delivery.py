"""Delivering the outbox over SMTP: claim a row, send its stored bytes, record the answer.

The bytes and Message-ID were fixed when the reply was queued (`mail/outbox.py`),
so every attempt, including one after a crash, sends the very same message.

States and moves:

* ``queued`` / due ``failed`` / ``sending`` whose claim is older than the lease
  → ``sending`` (`claim`: one write transaction, a conditional UPDATE checked by
  rowcount; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several senders never
  take the same row.  A stale ``sending`` row belonged to a sender that died
  mid-message; resending it may deliver that one message twice, which is the
  price of never losing it.
* ``sending`` → ``sent`` (the server said 2xx; partially refused recipients are
  noted in ``last_error``), ``failed`` (4xx, disconnects, timeouts, refused
  connections; retried after 60 s·2^(attempts-1), at most 6 h) or ``dead``
  (5xx, or a temporary failure on the last of ``max_attempts``).  `finish` only
  writes a row still claimed by the same worker.  A 530 "authentication
  required" counts as temporary: it is our configuration, not the message.
  A row whose sender died ``max_attempts`` times goes ``dead`` instead of being
  sent yet again.
* ``queued`` rows wait for their ``next_attempt_at`` too (set to the queueing
  time by `queue_reply`), so a face can hold a reply back (an undo window).
* ``dead`` / ``failed`` / ``bounced`` / ``cancelled`` → ``queued`` (`retry`, an
  agent's decision: the attempt budget starts again); ``queued`` / ``failed`` →
  ``cancelled`` (`cancel`).

``last_error`` always holds the server's last answer (code and text), also on
success, so an agent can quote the queue id to the mail admin.
"""

from __future__ import annotations

import json
from functools import lru_cache
import logging
import os
import secrets
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterable, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.config import ConfigError, MailboxConfig, Settings, SmtpConfig
from supportdesk.db import Database, DatabaseError
from supportdesk.listing import iso
from supportdesk.models import OUTBOX_UNFINISHED, DELIVERY_STATES, Customer, Message, Outbox, Ticket, utcnow
from supportdesk.tickets import Actor, ConflictError, ForbiddenError, InvalidError, NotFoundError, id_in_range, record
from supportdesk.text import clean_line

log = logging.getLogger(__name__)

LEASE_SECONDS = 600
BACKOFF_BASE = 60
BACKOFF_CAP = 6 * 3600
DEFAULT_MAX_ATTEMPTS = 10
ERROR_LIMIT = 2000
RETRYABLE = ("dead", "failed", "bounced", "cancelled")
CANCELLABLE = ("queued", "failed")
# 530 "authentication required" is our configuration, not the message: never kill mail for it.
NOT_THE_MESSAGES_FAULT = frozenset({530})

SENT, TEMPORARY, PERMANENT = "sent", "temporary", "permanent"


class DeliveryError(Exception):
    """The SMTP server cannot be used right now; one line naming the server, never the password."""


@dataclass(frozen=True)
class Job:
    """One claimed outbox row: everything needed to send it again, byte for byte."""

    id: int
    ticket_id: int
    message_id: int
    envelope_from: str
    envelope_to: list[str]
    raw: bytes
    attempts: int
    claimed_by: str
    claimed_at: datetime


@dataclass(frozen=True)
class Outcome:
    """How one SMTP transaction went: `result` is sent, temporary or permanent."""

    result: str
    answer: str
    refused: dict[str, str] = field(default_factory=dict)
    connection_lost: bool = False

    def describe(self) -> str:
        if not self.refused:
            return self.answer
        refused = "; ".join(f"{addr} ({why})" for addr, why in self.refused.items())
        return f"{self.answer}; refused: {refused}"


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    lost_claims: int = 0
    errors: list[str] = field(default_factory=list)
    sent_folder_errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.sent + self.failed + self.dead + self.lost_claims

    def count(self, status: str | None) -> None:
        if status == "sent":
            self.sent += 1
        elif status == "failed":
            self.failed += 1
        elif status == "dead":
            self.dead += 1
        else:
            self.lost_claims += 1


def default_worker() -> str:
    """Unique per sender, so `finish` never writes a row another sender has taken over."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(BACKOFF_BASE * 2 ** min(max(attempts - 1, 0), 20), BACKOFF_CAP))


# --- the state machine -------------------------------------------------------------------------

def _due(now: datetime, lease_seconds: float):
    O = Outbox.__table__.c
    return sa.or_(
        sa.and_(O.status == "queued", sa.or_(O.next_attempt_at.is_(None), O.next_attempt_at <= now)),
        sa.and_(O.status == "failed", sa.or_(O.next_attempt_at.is_(None), O.next_attempt_at <= now)),
        sa.and_(O.status == "sending",
                sa.or_(O.claimed_at.is_(None), O.claimed_at < now - timedelta(seconds=lease_seconds))),
    )


def claim(database: Database, worker: str, now: datetime | None = None, lease_seconds: float = LEASE_SECONDS,
          *, max_attempts: int | None = None) -> Job | None:
    """Take the oldest due row for `worker`, or None when nothing is due.

    With `max_attempts`, a row whose senders died on it that many times is given
    up (``dead``) instead of being sent yet again: a message that crashes the
    sender must not turn into an endless stream of duplicates.
    """
    now = now or utcnow()
    with database.write() as session:
        return _claim_in(session, worker, now, lease_seconds, max_attempts)


def _claim_in(session: Session, worker: str, now: datetime, lease_seconds: float, max_attempts: int | None
              ) -> Job | None:
    take, stale = _claim_statements(session.get_bind().dialect.name == "postgresql")
    params = {"now": now, "cutoff": now - timedelta(seconds=lease_seconds), "worker": worker}
    if max_attempts:
        session.execute(stale, dict(params, max_attempts=max_attempts, error=(
            f"the sender stopped during each of {max_attempts} attempts; "
            "it may have been delivered — check before `supportdesk outbox retry`")))
    row = session.execute(take, params).first()
    if row is None:
        return None
    return Job(id=row.id, ticket_id=row.ticket_id, message_id=row.message_id,
               envelope_from=row.envelope_from or "", envelope_to=list(json.loads(row.envelope_to or "[]")),
               raw=bytes(row.raw or b""), attempts=row.attempts, claimed_by=worker, claimed_at=now)


@lru_cache(maxsize=2)
def _claim_statements(postgres: bool):
    """The claim's statements, built once with bind parameters (building them is most of a claim's cost)."""
    O = Outbox.__table__.c
    now = sa.bindparam("now", type_=O.claimed_at.type)
    cutoff = sa.bindparam("cutoff", type_=O.claimed_at.type)
    waiting = sa.or_(O.next_attempt_at.is_(None), O.next_attempt_at <= now)
    due = sa.or_(
        sa.and_(O.status.in_(("queued", "failed")), waiting),
        sa.and_(O.status == "sending", sa.or_(O.claimed_at.is_(None), O.claimed_at < cutoff)),
    )
    pick = sa.select(O.id).where(sa.text(OUTBOX_UNFINISHED), due).order_by(O.id).limit(1)
    if postgres:
        pick = pick.with_for_update(skip_locked=True)
    # One statement: pick the oldest due row and take it, unless another sender got there first.
    take = (sa.update(Outbox.__table__).where(O.id == pick.scalar_subquery(), due)
            .values(status="sending", claimed_by=sa.bindparam("worker"), claimed_at=now, attempts=O.attempts + 1)
            .returning(O.id, O.ticket_id, O.message_id, O.envelope_from, O.envelope_to, O.raw, O.attempts))
    stale = (sa.update(Outbox.__table__)
             .where(O.status == "sending", O.attempts >= sa.bindparam("max_attempts"),
                    sa.or_(O.claimed_at.is_(None), O.claimed_at < cutoff))
             .values(status="dead", claimed_at=None, last_error=sa.bindparam("error")))
    return take, stale


@lru_cache(maxsize=1)
def _finish_statement():
    O = Outbox.__table__.c
    return (sa.update(Outbox.__table__)
            .where(O.id == sa.bindparam("row_id"), O.status == "sending", O.claimed_by == sa.bindparam("worker"))
            .values(status=sa.bindparam("status"), last_error=sa.bindparam("last_error"), claimed_at=None,
                    sent_at=sa.bindparam("sent_at", type_=O.sent_at.type),
                    next_attempt_at=sa.bindparam("next_attempt_at", type_=O.next_attempt_at.type)))


def finish(database: Database, job: Job, outcome: Outcome, worker: str, *, now: datetime | None = None,
           max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> str | None:
    """Record an outcome; returns the new status, or None if the row is no longer ours."""
    status, _ = finish_and_claim(database, job, outcome, worker, now=now, max_attempts=max_attempts, claim_next=False)
    return status


def finish_and_claim(database: Database, job: Job, outcome: Outcome, worker: str, *, now: datetime | None = None,
                     max_attempts: int = DEFAULT_MAX_ATTEMPTS, lease_seconds: float = LEASE_SECONDS,
                     claim_next: bool = True) -> tuple[str | None, Job | None]:
    """Record an outcome and (in the same transaction, one commit fewer a message) take the next row."""
    now = now or utcnow()
    values: dict = {"last_error": outcome.describe()[:ERROR_LIMIT], "sent_at": None}
    if outcome.result == SENT:
        values.update(status="sent", sent_at=now, next_attempt_at=None)
    elif outcome.result == TEMPORARY and job.attempts < max_attempts:
        values.update(status="failed", next_attempt_at=now + backoff(job.attempts))
    else:
        values.update(status="dead", next_attempt_at=None)
    for attempt in range(3):
        try:
            with database.write() as session:
                done = session.execute(_finish_statement(), dict(values, row_id=job.id, worker=worker))
                status: str | None = values["status"]
                if done.rowcount != 1:
                    log.warning("outbox #%s was taken over by another sender; not recording %s", job.id,
                                values["status"])
                    status = None
                elif values["status"] == "dead":
                    record(session, job.ticket_id, Actor.system(), "delivery", f"message #{job.message_id} sending",
                           f"message #{job.message_id} dead: {values['last_error'][:200]}", at=now)
                following = _claim_in(session, worker, now, lease_seconds, max_attempts) if claim_next else None
            return status, following
        except DatabaseError:
            # Losing a "sent" here means sending again after the lease: worth a short wait.
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    return None, None


def retry(database: Database, ids: Sequence[int], actor: Actor | None = None,
          *, now: datetime | None = None) -> list[int]:
    """Queue dead, failed, bounced or cancelled messages again, due now, with a fresh attempt budget."""
    return _move(database, ids, RETRYABLE, "queued", actor, now,
                 refuse=lambda i, s: f"outbox #{i} is {s}: " + (
                     "it was delivered; sending it again would duplicate it" if s == "sent"
                     else "it is being sent right now" if s == "sending" else "it is already waiting to be sent"))


def cancel(database: Database, ids: Sequence[int], actor: Actor | None = None,
           *, now: datetime | None = None) -> list[int]:
    """Withdraw messages that have not gone out (queued or failed)."""
    return _move(database, ids, CANCELLABLE, "cancelled", actor, now,
                 refuse=lambda i, s: f"outbox #{i} is {s}: " + (
                     "it was already delivered" if s == "sent"
                     else "it is being handed to the SMTP server right now; it cannot be recalled" if s == "sending"
                     else "only queued or failed messages can be cancelled"))


def _move(database: Database, ids: Sequence[int], allowed: tuple[str, ...], target: str, actor: Actor | None,
          now: datetime | None, refuse: Callable[[int, str], str]) -> list[int]:
    """All or nothing: every id must exist and be in an allowed state, else nothing changes."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise InvalidError("give at least one outbox id")
    now = now or utcnow()
    actor = actor or Actor.system()
    O = Outbox.__table__.c
    with database.write() as session:
        possible = [i for i in ids if id_in_range(i)]
        rows = {r.id: r for r in session.execute(
            sa.select(O.id, O.status, O.ticket_id, O.message_id).where(O.id.in_(possible))).all()}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise NotFoundError("no outbox message " + ", ".join(f"#{i}" for i in missing))
        _check_queues(session, actor, [rows[i] for i in ids])
        refused = [refuse(i, rows[i].status) for i in ids if rows[i].status not in allowed]
        if refused:
            raise InvalidError("; ".join(refused) + " (nothing changed)")
        values: dict = {"status": target, "claimed_by": None, "claimed_at": None}
        if target == "queued":
            values.update(next_attempt_at=now, attempts=0)
        else:
            values.update(next_attempt_at=None)
        done = session.execute(sa.update(Outbox.__table__).where(O.id.in_(ids), O.status.in_(allowed)).values(**values))
        if done.rowcount != len(ids):
            raise ConflictError("an outbox message changed meanwhile (a sender took it); nothing changed, try again")
        for i in ids:
            row = rows[i]
            record(session, row.ticket_id, actor, "delivery", f"message #{row.message_id} {row.status}",
                   f"message #{row.message_id} {target}", at=now)
    return ids


def _check_queues(session: Session, actor: Actor, rows) -> None:
    """A limited agent retries or cancels only their queues' mail (all or nothing, as for tickets)."""
    if actor.queue_ids is None:
        return
    T = Ticket.__table__.c
    queue_of = dict(session.execute(sa.select(T.id, T.queue_id).where(T.id.in_({r.ticket_id for r in rows}))).all())
    outside = [f"#{r.id} (ticket #{r.ticket_id})" for r in rows if queue_of.get(r.ticket_id) not in actor.queue_ids]
    if outside:
        raise ForbiddenError(f"outbox {', '.join(outside[:5])} {'is' if len(outside) == 1 else 'are'} "
                             "not in your queues (nothing changed)")


# --- reading -----------------------------------------------------------------------------------

OUTBOX_COLUMNS = ("id", "ticket_id", "status", "attempts", "to", "subject", "created_at", "next_attempt_at",
                  "sent_at", "last_error")


def list_outbox(session: Session, status: str | Iterable[str] | None = None, *,
                queue_ids: frozenset[int] | None = None) -> list[dict]:
    """Outbox rows, oldest first; `status` is one state, a comma-separated list or several;
    `queue_ids` (a limited agent's queues) keeps only the mail of tickets in those queues."""
    O, M = Outbox.__table__.c, Message.__table__.c
    query = (sa.select(O.id, O.ticket_id, O.message_id, O.status, O.attempts, O.envelope_from, O.envelope_to,
                       O.created_at, O.next_attempt_at, O.sent_at, O.claimed_by, O.last_error,
                       M.subject, M.message_id.label("message_id_header"), M.auto)
             .join(Message.__table__, M.id == O.message_id).order_by(O.id))
    if queue_ids is not None:
        T = Ticket.__table__.c
        query = query.join(Ticket.__table__, T.id == O.ticket_id).where(T.queue_id.in_(sorted(queue_ids)))
    if status:
        given = [status] if isinstance(status, str) else list(status)
        wanted = [part.strip() for item in given for part in item.split(",") if part.strip()]
        unknown = [s for s in wanted if s not in DELIVERY_STATES]
        if unknown:
            raise InvalidError(f"unknown outbox status {unknown[0]!r} (one of: {', '.join(DELIVERY_STATES)})")
        query = query.where(O.status.in_(wanted))
    return [{
        "id": r.id, "ticket_id": r.ticket_id, "status": r.status, "attempts": r.attempts,
        "from": r.envelope_from, "to": json.loads(r.envelope_to or "[]"), "subject": r.subject,
        "message_id": r.message_id_header, "auto": bool(r.auto), "created_at": iso(r.created_at),
        "next_attempt_at": iso(r.next_attempt_at) if r.status in ("queued", "failed") else None,
        "sent_at": iso(r.sent_at), "claimed_by": r.claimed_by if r.status == "sending" else None,
        "last_error": r.last_error,
    } for r in session.execute(query).all()]


def bounced_recently(session: Session, ticket_id: int, days: int = 30, *, now: datetime | None = None) -> str | None:
    """The requester's address when mail to it bounced within `days` (on any ticket), else None.

    Lets a face warn the agent before they write a reply nobody will read.
    """
    T, C, O = Ticket.__table__.c, Customer.__table__.c, Outbox.__table__.c
    email = session.execute(sa.select(C.email).join(Ticket.__table__, T.requester_id == C.id)
                            .where(T.id == ticket_id)).scalar()
    if not email:
        return None
    cutoff = (now or utcnow()) - timedelta(days=days)
    needle = json.dumps(email).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    candidates = session.execute(sa.select(O.envelope_to).where(
        O.status == "bounced", sa.func.coalesce(O.sent_at, O.created_at) >= cutoff,
        O.envelope_to.like(f"%{needle}%", escape="\\"))).scalars()
    for envelope_to in candidates:
        if email in (a.lower() for a in json.loads(envelope_to or "[]")):
            return email
    return None


# --- SMTP --------------------------------------------------------------------------------------

class _RemembersLastReply:
    """smtplib's `sendmail` drops the final answer to DATA; keep it for `last_error`."""

    last_reply: tuple[int, bytes] | None = None

    def getreply(self):
        reply = super().getreply()
        self.last_reply = reply
        return reply


class SMTPConnection(_RemembersLastReply, smtplib.SMTP):
    pass


class SMTPSSLConnection(_RemembersLastReply, smtplib.SMTP_SSL):
    pass


def tls_context(config: SmtpConfig) -> ssl.SSLContext:
    """Verifying by default (system CAs, or SSL_CERT_FILE). `tls_verify = false` turns verification
    off entirely, which lets anyone on the path read the mail and the password: for tests and
    servers on the same host only."""
    context = ssl.create_default_context()
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def open_smtp(config: SmtpConfig, password: str | None = None) -> smtplib.SMTP:
    """A ready, authenticated connection; any problem becomes one `DeliveryError` line."""
    where = f"SMTP server {config.host}:{config.port}"
    context = tls_context(config) if config.security != "none" else None
    smtp: smtplib.SMTP | None = None
    try:
        if config.security == "ssl":
            smtp = SMTPSSLConnection(config.host, config.port, timeout=config.timeout or None, context=context)
        else:
            smtp = SMTPConnection(config.host, config.port, timeout=config.timeout or None)
            if config.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{where} does not offer STARTTLS; check [smtp] security and port")
                smtp.starttls(context=context)
                smtp.ehlo()
        if config.user:
            if password is None:
                password = config.password.resolve() if config.password else ""
            try:
                smtp.login(config.user, password)
            except smtplib.SMTPNotSupportedError:
                raise DeliveryError(f"{where} does not offer AUTH (on this connection: some servers only "
                                    "offer it after STARTTLS); check [smtp] security, or remove [smtp] user") from None
            except smtplib.SMTPAuthenticationError as exc:
                raise DeliveryError(f"{where}: login as {config.user} refused: {_answer(exc.smtp_code, exc.smtp_error)}") from None
        return smtp
    except Exception as exc:
        if smtp is not None:
            smtp.close()
        if isinstance(exc, (DeliveryError, ConfigError)):
            raise
        raise DeliveryError(_connection_problem(where, exc)) from None


def _connection_problem(where: str, exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"{where}: TLS certificate not trusted ({exc.verify_message or exc.reason}); trust its CA "
                "(system store or SSL_CERT_FILE) or, for a test server only, set [smtp] tls_verify = false")
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS failed ({exc.reason or exc}); check [smtp] security and port"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{where} refused us: {_answer(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection: {clean_line(str(exc)) or 'no reason given'}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"{where} did not answer in time"
    if isinstance(exc, socket.gaierror):
        return f"{where}: unknown host ({exc.strerror})"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"{where}: {type(exc).__name__}: {clean_line(str(exc))}"


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return clean_line(f"{code} {text}")


def _kind(code: int) -> str:
    return PERMANENT if 500 <= code < 600 and code not in NOT_THE_MESSAGES_FAULT else TEMPORARY


def deliver(smtp: smtplib.SMTP, job: Job) -> Outcome:
    """One SMTP transaction with the stored bytes; never raises for what the server says or does."""
    if not job.envelope_to:
        return Outcome(PERMANENT, "the message has no recipients")
    try:
        refused = smtp.sendmail(job.envelope_from, job.envelope_to, job.raw)
    except smtplib.SMTPRecipientsRefused as exc:
        answers = {addr: _answer(code, text) for addr, (code, text) in exc.recipients.items()}
        kinds = {_kind(code) for code, _ in exc.recipients.values()}
        detail = "; ".join(f"{addr}: {answer}" for addr, answer in answers.items())
        return Outcome(TEMPORARY if TEMPORARY in kinds or not kinds else PERMANENT,
                       f"all recipients refused: {detail}")
    except smtplib.SMTPSenderRefused as exc:
        return Outcome(_kind(exc.smtp_code), f"sender <{exc.sender}> refused: {_answer(exc.smtp_code, exc.smtp_error)}",
                       connection_lost=exc.smtp_code == 421)
    except smtplib.SMTPResponseException as exc:
        return Outcome(_kind(exc.smtp_code), _answer(exc.smtp_code, exc.smtp_error), connection_lost=exc.smtp_code == 421)
    except smtplib.SMTPNotSupportedError as exc:
        return Outcome(PERMANENT, f"the server cannot take this message: {clean_line(str(exc))}")
    except smtplib.SMTPServerDisconnected as exc:
        return Outcome(TEMPORARY, f"connection lost: {clean_line(str(exc)) or 'server disconnected'}",
                       connection_lost=True)
    except (TimeoutError, socket.timeout):
        return Outcome(TEMPORARY, "connection lost: the server did not answer in time", connection_lost=True)
    except (OSError, smtplib.SMTPException) as exc:
        reason = getattr(exc, "strerror", None) or clean_line(str(exc)) or type(exc).__name__
        return Outcome(TEMPORARY, f"connection lost: {reason}", connection_lost=True)
    reply = getattr(smtp, "last_reply", None)
    answer = _answer(*reply) if reply else "250 accepted"
    return Outcome(SENT, answer, refused={addr: _answer(code, text) for addr, (code, text) in (refused or {}).items()})


class _SentFolder:
    """Best effort: a copy of each sent message in an IMAP folder. One connection per pass;
    after a failure the rest of the pass skips it, and nothing is ever un-sent."""

    def __init__(self, box: MailboxConfig, folder: str):
        self.box, self.folder = box, folder
        self.client = None
        self.error: str | None = None

    def append(self, raw: bytes) -> str | None:
        if self.error:
            return None
        from supportdesk.mail.imap import connect

        try:
            if self.client is None:
                self.client = connect(self.box)
                if not self.client.folder_exists(self.folder):
                    self.client.create_folder(self.folder)
            self.client.append(self.folder, raw, flags=[b"\\Seen"])
            return None
        except Exception as exc:  # best effort by design: the message is already sent
            self.error = f"copy to {self.box.name}/{self.folder} failed: {type(exc).__name__}: {clean_line(str(exc))}"
            log.warning("%s", self.error)
            self.close()
            return self.error

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except Exception:
                pass
            self.client = None


def smtp_config(settings: Settings) -> SmtpConfig:
    if settings.smtp is None:
        raise ConfigError(settings.file, "smtp", "no [smtp] section is configured, so mail cannot be sent "
                                                 "(see config.example.toml)")
    return settings.smtp


def _sent_folder(settings: Settings, config: SmtpConfig) -> _SentFolder | None:
    if not config.sent_folder and not config.sent_folder_mailbox:
        return None
    if not (config.sent_folder and config.sent_folder_mailbox):
        raise ConfigError(settings.file, "smtp.sent_folder", "set both sent_folder and sent_folder_mailbox, or neither")
    return _SentFolder(settings.mailbox(config.sent_folder_mailbox), config.sent_folder)


def has_due(database: Database, now: datetime | None = None, lease_seconds: float = LEASE_SECONDS) -> bool:
    with database.read() as session:
        return session.execute(sa.select(Outbox.__table__.c.id).where(_due(now or utcnow(), lease_seconds))
                               .limit(1)).first() is not None


def send_once(database: Database, settings: Settings, worker: str | None = None, limit: int | None = None, *,
              now: datetime | None = None, lease_seconds: float = LEASE_SECONDS, stop: threading.Event | None = None,
              on_result: Callable[[Job, Outcome, str | None], None] | None = None) -> SendReport:
    """Deliver what is due, one message at a time over one SMTP connection.

    If the server cannot be reached, each due message is put back as ``failed``
    with backoff and the reason (nothing is lost). `stop` is checked between
    messages; `now` overrides the clock (tests, catching up).
    """
    config = smtp_config(settings)
    sent_folder = _sent_folder(settings, config)
    worker = worker or default_worker()
    report = SendReport()
    if not has_due(database, now, lease_seconds):
        return report
    # Resolve before claiming anything: a configuration problem must not cost messages an attempt.
    password = config.password.resolve() if config.user and config.password else None
    smtp: smtplib.SMTP | None = None
    unreachable: str | None = None
    try:
        go = (limit is None or limit > 0) and not (stop is not None and stop.is_set())
        job = claim(database, worker, now or utcnow(), lease_seconds, max_attempts=config.max_attempts) if go else None
        while job is not None:
            if smtp is None and unreachable is None:
                try:
                    smtp = open_smtp(config, password)
                except DeliveryError as exc:
                    unreachable = str(exc)
                    report.errors.append(unreachable)
                    log.warning("%s", unreachable)
            if smtp is None:
                outcome = Outcome(TEMPORARY, unreachable or "no connection", connection_lost=True)
            else:
                outcome = deliver(smtp, job)
                if outcome.connection_lost:
                    _quit(smtp)
                    smtp = None
            more = (limit is None or report.attempted + 1 < limit) and not (stop is not None and stop.is_set())
            status, following = finish_and_claim(database, job, outcome, worker, now=now,
                                                 max_attempts=config.max_attempts, lease_seconds=lease_seconds,
                                                 claim_next=more)
            report.count(status)
            if status == "sent" and sent_folder is not None:
                error = sent_folder.append(job.raw)
                if error:
                    report.sent_folder_errors.append(error)
            if on_result is not None:
                on_result(job, outcome, status)
            job = following
    finally:
        if smtp is not None:
            _quit(smtp)
        if sent_folder is not None:
            sent_folder.close()
    return report


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except Exception:
        smtp.close()


def send_watch(database: Database, settings: Settings, stop: threading.Event, interval: float = 5, *,
               worker: str | None = None, lease_seconds: float = LEASE_SECONDS,
               on_result: Callable[[Job, Outcome, str | None], None] | None = None,
               on_error: Callable[[str], None] = lambda message: None) -> None:
    """Send what is due every `interval` seconds until `stop` is set (checked between messages).

    A broken configuration is refused at the start; later problems (a locked
    database, a password command failing) are reported and retried.
    """
    smtp_config(settings)
    _sent_folder(settings, settings.smtp)
    worker = worker or default_worker()
    while not stop.is_set():
        try:
            report = send_once(database, settings, worker, stop=stop, lease_seconds=lease_seconds, on_result=on_result)
            for message in report.errors + report.sent_folder_errors:
                on_error(message)
        except (DatabaseError, ConfigError) as exc:
            on_error(str(exc))
        stop.wait(interval)
