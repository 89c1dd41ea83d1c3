"""Fetching from IMAP: new UIDs → raw store (committed with mailbox, UIDVALIDITY, UID)
→ only then mark or move on the server → file what was stored.

`fetch_once` is one pass; `watch` keeps a connection in IDLE (renewed every
`IDLE_RENEW` seconds, well within the 29 minutes servers allow), falls back to
polling without IDLE, and reconnects with backoff after any network error.
Every pass records its outcome in `mailbox_state` so silent failure is visible.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from supportdesk.config import ConfigError, MailboxConfig, Settings
from supportdesk.db import Database, sqlite_path
from supportdesk.mail.intake import IntakeReport, Spooled, process_pending, store_raw_batch
from supportdesk.models import MailboxState, RawMessage, utcnow
from supportdesk.text import clean_line

log = logging.getLogger(__name__)

BATCH = 100
IDLE_RENEW = 9 * 60
POLL_INTERVAL = 60
STORED_KEYWORD = "$SupportdeskStored"
STREAM_ABOVE = 4 << 20
"""Messages larger than this (RFC822.SIZE) are fetched in pieces into a spool file."""
PIECE = 2 << 20
"""Bytes per partial FETCH of such a message."""
NETWORK_ERRORS = (IMAPClientError, OSError, socket.timeout, ssl.SSLError, EOFError)


class FetchError(Exception):
    """A mailbox could not be fetched; the message says which and why (never the password)."""


@dataclass
class FetchResult:
    mailbox: str
    uidvalidity: int
    fetched: int
    report: IntakeReport


def connect(box: MailboxConfig, timeout: float = 30) -> IMAPClient:
    if not box.imap_host:
        raise ConfigError(None, f"mailbox {box.name}", "has no imap_host (it can only be fed by `supportdesk ingest`)")
    context = ssl.create_default_context()
    if not box.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    client = IMAPClient(box.imap_host, port=box.imap_port, ssl=box.imap_security == "ssl",
                        ssl_context=context if box.imap_security == "ssl" else None, timeout=timeout)
    if box.imap_security == "starttls":
        client.starttls(context)
    password = box.imap_password.resolve() if box.imap_password else ""
    try:
        client.login(box.imap_user or box.address, password)
    except IMAPClientError as exc:
        client.shutdown()
        raise FetchError(f"mailbox {box.name}: login as {box.imap_user or box.address} refused: {clean_line(str(exc))}") from None
    return client


def fetch_once(database: Database, settings: Settings, box: MailboxConfig, client: IMAPClient | None = None,
               *, process: bool = True) -> FetchResult:
    """One pass over a mailbox; records success or the error in mailbox_state.

    When the connection fails halfway, what was stored before stays stored and is
    filed; then FetchError says which mailbox, what happened and how much was kept.
    """
    own = client is None
    report = IntakeReport()
    failure: FetchError | None = None
    try:
        if own:
            client = connect(box)
        result = _fetch(database, box, client, report)
        _record(database, box.name, error=None)
    except NETWORK_ERRORS as exc:
        problem = describe_network_error(exc, box)
        if report.stored:
            problem += f"; the {report.stored} message(s) stored before were kept"
        _record(database, box.name, error=problem)
        failure = FetchError(f"mailbox {box.name}: {problem}")
    except FetchError as exc:
        _record(database, box.name, error=str(exc))
        raise
    finally:
        if own and client is not None:
            try:
                client.logout()
            except Exception:
                pass
    if own:
        client = None  # imaplib keeps the last responses (whole messages) until the client goes
    if process:
        filed = process_pending(database, settings)
        if failure is None:
            result.report.merge(filed)
    if failure is not None:
        raise failure from None
    return result


def describe_network_error(exc: BaseException, box: MailboxConfig) -> str:
    """One line saying what went wrong with the server, in words a user can act on."""
    detail = clean_line(str(exc)) or type(exc).__name__
    server = f"{box.imap_host}:{box.imap_port}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure with {server}: {detail}"
    if isinstance(exc, (IMAPClientAbortError, EOFError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return f"connection to {server} lost: {detail}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"connection to {server} timed out: {detail}"
    if isinstance(exc, OSError):
        return f"cannot reach {server}: {detail}"
    return f"server {server} refused: {detail}"


def _fetch(database: Database, box: MailboxConfig, client: IMAPClient, report: IntakeReport) -> FetchResult:
    info = client.select_folder(box.imap_folder)
    uidvalidity = int(info[b"UIDVALIDITY"])
    with database.write() as session:
        state = session.get(MailboxState, box.name) or MailboxState(mailbox=box.name, last_uid=0)
        session.add(state)
        if state.uidvalidity != uidvalidity:
            if state.uidvalidity is not None:
                log.warning("mailbox %s: UIDVALIDITY changed %s → %s; re-reading (duplicates are recognised)",
                            box.name, state.uidvalidity, uidvalidity)
            state.uidvalidity, state.last_uid = uidvalidity, 0
        last_uid = state.last_uid
    # `UID n:*` always returns the highest UID, even below n: filter ourselves.
    uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
    # Large messages come in pieces into a spool file: a whole FETCH literal is held by
    # imaplib and imapclient's parser at once, ~2–3× the message in this process.
    large = set()
    if uids:
        large = {u for u in client.search(["UID", f"{last_uid + 1}:*", "LARGER", str(STREAM_ABOVE)]) if u > last_uid}
    spool_dir = _spool_dir(database)
    fetched = 0
    for start in range(0, len(uids), BATCH):
        batch = uids[start:start + BATCH]
        whole = [uid for uid in batch if uid not in large]
        data = client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
        items: list[tuple[int, bytes | Spooled]] = []
        try:
            for uid in batch:
                if uid in large:
                    spooled = _fetch_in_pieces(client, uid, spool_dir)
                    if spooled is not None:
                        items.append((uid, spooled))
                elif b"BODY[]" in data.get(uid, {}):
                    items.append((uid, data[uid][b"BODY[]"]))
            del data
            with database.write() as session:
                stored, duplicates = store_raw_batch(session, items, mailbox=box.name, uidvalidity=uidvalidity)
                report.stored += stored
                report.duplicates += duplicates
                fetched += len(items)
                state = session.get(MailboxState, box.name)
                state.last_uid = max(batch)
                state.last_fetch_at = utcnow()
                state.stored_total += stored
        finally:
            for _, raw in items:
                if isinstance(raw, Spooled):
                    raw.close()
            del items
        _after_store(client, box, batch)
    if box.processed_folder:
        _move_leftovers(database, client, box, uidvalidity, last_uid)
    return FetchResult(box.name, uidvalidity, fetched, report)


def _spool_dir(database: Database) -> str | None:
    """Spool files go beside an SQLite database (a /tmp on tmpfs would be memory again)."""
    path = sqlite_path(database.url)
    return str(path.parent) if path is not None and path.parent.is_dir() else None


def _fetch_in_pieces(client: IMAPClient, uid: int, spool_dir: str | None) -> Spooled | None:
    """One message as `BODY.PEEK[]<offset.PIECE>` partials appended to a spool file; None
    when the server no longer has it (expunged meanwhile: nothing half is ever stored)."""
    spooled = Spooled(spool_dir)
    offset = 0
    try:
        while True:
            response = client.fetch([uid], [f"BODY.PEEK[]<{offset}.{PIECE}>"])
            found = [value for key, value in response.get(uid, {}).items() if key.startswith(b"BODY[]")]
            if not found:
                spooled.close()
                return None
            piece = found[0] or b""
            del response, found
            spooled.write(piece)
            offset += len(piece)
            if len(piece) < PIECE:
                return spooled
    except BaseException:
        spooled.close()
        raise


def _after_store(client: IMAPClient, box: MailboxConfig, uids: list[int]) -> None:
    """Only after the commit: move to processed_folder, or mark with a keyword. Never delete."""
    if not uids:
        return
    if box.processed_folder:
        if not client.folder_exists(box.processed_folder):
            client.create_folder(box.processed_folder)
        if client.has_capability("MOVE"):
            client.move(uids, box.processed_folder)
        else:
            client.copy(uids, box.processed_folder)
            client.delete_messages(uids)
            client.uid_expunge(uids) if client.has_capability("UIDPLUS") else client.expunge()
    else:
        client.add_flags(uids, [STORED_KEYWORD])


def _move_leftovers(database: Database, client: IMAPClient, box: MailboxConfig, uidvalidity: int, below: int) -> None:
    """Messages stored before a crash but never moved: move them now."""
    if below <= 0:
        return
    present = [u for u in client.search(["UID", f"1:{below}"]) if u <= below]
    if not present:
        return
    R = RawMessage.__table__.c
    with database.read() as session:
        stored = set(session.execute(sa.select(R.uid).where(
            R.mailbox == box.name, R.uidvalidity == uidvalidity, R.uid.in_(present))).scalars())
    leftovers = [u for u in present if u in stored]
    if leftovers:
        _after_store(client, box, leftovers)


def _record(database: Database, name: str, *, error: str | None) -> None:
    try:
        with database.write() as session:
            state = session.get(MailboxState, name) or MailboxState(mailbox=name, last_uid=0)
            session.add(state)
            now = utcnow()
            if error:
                state.last_error, state.last_error_at = error[:2000], now
            else:
                state.last_fetch_at, state.last_error = now, None
    except Exception:
        log.exception("could not record the state of mailbox %s", name)


def watch(database: Database, settings: Settings, box: MailboxConfig, stop: threading.Event,
          on_result: Callable[[FetchResult], None] = lambda r: None, on_error: Callable[[str], None] = lambda e: None,
          *, idle_renew: float = IDLE_RENEW, poll_interval: float = POLL_INTERVAL) -> None:
    """Fetch, then wait for news with IDLE (or poll), until `stop` is set."""
    backoff = 1.0
    while not stop.is_set():
        client = None
        try:
            client = connect(box)
            on_result(fetch_once(database, settings, box, client))
            backoff = 1.0
            idle = client.has_capability("IDLE")
            while not stop.is_set():
                if idle:
                    client.idle()
                    started = time.monotonic()
                    news = []
                    while not stop.is_set() and not news and time.monotonic() - started < idle_renew:
                        news = client.idle_check(timeout=1)
                    client.idle_done()
                else:
                    stop.wait(poll_interval)
                if stop.is_set():
                    break
                on_result(fetch_once(database, settings, box, client))
        except (FetchError, ConfigError, *NETWORK_ERRORS) as exc:
            if isinstance(exc, FetchError):
                message = str(exc)
            elif isinstance(exc, ConfigError):
                message = clean_line(str(exc))
                _record(database, box.name, error=message)
            else:
                problem = describe_network_error(exc, box)
                _record(database, box.name, error=problem)
                message = f"mailbox {box.name}: {problem}"
            on_error(f"{message}; retrying in {backoff:.0f} s")
            stop.wait(backoff)
            backoff = min(backoff * 2, 300)
        finally:
            if client is not None:
                try:
                    client.logout()
                except Exception:
                    pass
