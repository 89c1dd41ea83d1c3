"""Intake: exactly-once storage, threading, loops, bounces, quarantine — against a real Dovecot."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from imapclient import IMAPClient

from supportdesk.config import MailboxConfig, Secret, Settings, TicketsConfig
from supportdesk.listing import ticket_detail
from supportdesk.mail.imap import STORED_KEYWORD, fetch_once, watch
from supportdesk.mail.intake import ingest_bytes, process_pending, release_quarantined, retry_quarantined, store_raw
from supportdesk.models import Message, Outbox, RawMessage, Ticket, utcnow
from supportdesk.tickets import Actor, Changes, update_ticket
from tests.conftest import CORPUS
from tests.samples import SUPPORT, intake_settings, mail


def settings_for(account=None, **box) -> Settings:
    if account is None:
        return intake_settings()
    return intake_settings(MailboxConfig(
        name="support", address=SUPPORT, queue="General", imap_host=account.host, imap_port=account.port,
        imap_security="none", imap_user=account.user, imap_password=Secret(None, "imap_password", plain=account.password),
        **box,
    ))


def append(account, *messages: bytes, folder="INBOX") -> None:
    with IMAPClient(account.host, port=account.port, ssl=False) as client:
        client.login(account.user, account.password)
        for raw in messages:
            client.append(folder, raw)


def counts(database) -> dict:
    with database.read() as session:
        return {
            "raw": session.execute(sa.select(sa.func.count()).select_from(RawMessage)).scalar(),
            "tickets": session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar(),
            "inbound": session.execute(sa.select(sa.func.count()).where(Message.kind == "inbound")).scalar(),
            "stored": session.execute(sa.select(sa.func.count()).where(RawMessage.state == "stored")).scalar(),
        }


# --- without a server --------------------------------------------------------------------------

def test_store_is_idempotent_by_uid_and_by_content(database):
    raw = mail()
    with database.write() as session:
        first, new = store_raw(session, raw, mailbox="support", uidvalidity=7, uid=1)
        again, new_again = store_raw(session, raw, mailbox="support", uidvalidity=7, uid=1)
        moved, new_moved = store_raw(session, raw, mailbox="support", uidvalidity=8, uid=1)
    assert new and not new_again and not new_moved and first == again == moved


def test_reply_threads_by_header_and_reopens_solved(database):
    settings = settings_for()
    original = mail(message_id="<first@acme.test>")
    _, report = ingest_bytes(database, settings, original, "support")
    (ticket_id,) = report.created
    with database.write() as session:
        update_ticket(session, ticket_id, Changes(status="solved"), Actor.system())
    reply = mail(subject="Re: Printer on fire", In_Reply_To="<first@acme.test>", References="<first@acme.test>")
    _, second = ingest_bytes(database, settings, reply, "support")
    assert second.appended == [ticket_id]
    with database.read() as session:
        detail = ticket_detail(session, ticket_id, utcnow())
    assert detail["status"] == "open"
    assert [m["kind"] for m in detail["messages"]][:1] == ["inbound"]
    assert sum(m["kind"] == "inbound" for m in detail["messages"]) == 2


def test_subject_tag_needs_a_participant(database):
    settings = settings_for()
    _, report = ingest_bytes(database, settings, mail(), "support")
    (ticket_id,) = report.created
    tagged = f"Re: Printer on fire [Support #{ticket_id}]"
    _, ok = ingest_bytes(database, settings, mail(subject=tagged), "support")
    assert ok.appended == [ticket_id]
    _, stranger = ingest_bytes(database, settings, mail(subject=tagged, sender="mallory@evil.test"), "support")
    assert stranger.created and stranger.created[0] != ticket_id
    with database.read() as session:
        new = session.get(Ticket, stranger.created[0])
        assert new.parent_id == ticket_id
        assert all(m.from_addr != "mallory@evil.test" for m in session.execute(
            sa.select(Message).where(Message.ticket_id == ticket_id)).scalars())


def test_reply_to_closed_ticket_opens_linked_follow_up(database):
    settings = settings_for()
    _, report = ingest_bytes(database, settings, mail(message_id="<c1@acme.test>"), "support")
    (ticket_id,) = report.created
    with database.write() as session:
        update_ticket(session, ticket_id, Changes(status="closed"), Actor.system())
    _, again = ingest_bytes(database, settings, mail(subject="Re: x", In_Reply_To="<c1@acme.test>"), "support")
    assert again.created
    with database.read() as session:
        assert session.get(Ticket, again.created[0]).parent_id == ticket_id
        assert session.get(Ticket, ticket_id).status == "closed"


def test_acknowledgement_is_automatic_mail_and_loops_get_none(database):
    settings = settings_for()
    _, report = ingest_bytes(database, settings, mail(), "support")
    with database.read() as session:
        detail = ticket_detail(session, report.created[0], utcnow())
        outbox = session.execute(sa.select(Outbox)).scalars().all()
    acks = [m for m in detail["messages"] if m["kind"] == "outbound"]
    assert len(acks) == 1 and acks[0]["auto"] is True and acks[0]["delivery"] == "queued"
    assert outbox[0].envelope_from == ""
    assert b"Auto-Submitted: auto-replied" in outbox[0].raw
    for headers in ({"Auto_Submitted": "auto-replied"}, {"Precedence": "bulk"}, {"List_Id": "<x.lists.test>"}):
        _, r = ingest_bytes(database, settings, mail(sender=f"robot{len(headers)}@acme.test", **headers), "support")
        with database.read() as session:
            detail = ticket_detail(session, r.created[0], utcnow())
        assert not [m for m in detail["messages"] if m["kind"] == "outbound"], headers


def test_an_auto_responder_answering_every_acknowledgement_cannot_loop(database):
    """The other side answers each of our mails without any loop header; it must stay bounded."""
    settings = settings_for()
    ingest_bytes(database, settings, mail(subject="Hello", sender="bot@other.test"), "support")
    for _ in range(20):
        with database.read() as session:
            last = session.execute(sa.select(Message).where(Message.kind == "outbound")
                                   .order_by(Message.id.desc())).scalars().first()
        reference = f"<{last.message_id}>" if last else None
        headers = {"In_Reply_To": reference, "References": reference} if reference else {}
        ingest_bytes(database, settings, mail(subject=f"Re: {last.subject if last else 'Hello'}",
                                              sender="bot@other.test", body="I am away.", **headers), "support")
    with database.read() as session:
        tickets = session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar()
        acks = session.execute(sa.select(sa.func.count()).where(Message.kind == "outbound", Message.auto)).scalar()
    assert tickets == 1 and acks == 1


def test_acknowledgements_are_rate_limited_per_recipient(database):
    settings = settings_for()
    for i in range(35):
        ingest_bytes(database, settings, mail(subject=f"loop {i}"), "support")
    with database.read() as session:
        acks = session.execute(sa.select(sa.func.count()).where(Message.kind == "outbound", Message.auto)).scalar()
    assert acks == 30


def test_bounce_marks_the_reply_and_lands_on_its_ticket(database, cli):
    settings = settings_for()
    _, report = ingest_bytes(database, settings, mail(), "support")
    ticket_id = report.created[0]
    with database.read() as session:
        ack = session.execute(sa.select(Message).where(Message.kind == "outbound")).scalar_one()
    dsn = (
        "From: MAILER-DAEMON@mx.acme.test\r\nTo: support@example.test\r\nSubject: Undelivered Mail\r\n"
        "Message-ID: <dsn1@mx.acme.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.acme.test\r\n\r\n"
        "Final-Recipient: rfc822; bob@acme.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{ack.message_id}>\r\nSubject: x\r\n--B--\r\n"
    ).encode()
    _, bounced = ingest_bytes(database, settings, dsn, "support")
    assert bounced.bounces == 1
    with database.read() as session:
        detail = ticket_detail(session, ticket_id, utcnow())
    assert [m["delivery"] for m in detail["messages"] if m["kind"] == "outbound"] == ["bounced"]
    assert any(m["kind"] == "system" and "5.1.1" in m["body_text"] for m in detail["messages"])


def test_quarantine_keeps_raw_and_can_release(database, cli):
    settings = settings_for()
    raw_id, report = ingest_bytes(database, settings, b"\x00\x01\x02 not mail at all \xff", "support")
    assert report.quarantined == [raw_id]
    listed = json.loads(cli("quarantine", "list", "--format", "json").output)
    assert [q["id"] for q in listed] == [raw_id] and listed[0]["error"]
    assert retry_quarantined(database, settings, [raw_id]).quarantined == [raw_id]
    created = release_quarantined(database, settings, [raw_id], Actor("alice", 1))
    assert len(created) == 1
    assert cli("quarantine", "list").exit_code == 3


def test_a_poisoned_message_does_not_stop_the_next(database, monkeypatch):
    settings = settings_for()
    import supportdesk.mail.intake as intake

    real = intake.parse_message
    monkeypatch.setattr(intake, "parse_message", lambda raw: (_ for _ in ()).throw(RuntimeError("boom"))
                        if b"POISON" in raw else real(raw))
    with database.write() as session:
        store_raw(session, mail(subject="POISON"), mailbox="support", source="pipe")
        store_raw(session, mail(subject="fine"), mailbox="support", source="pipe")
    report = process_pending(database, settings)
    assert len(report.quarantined) == 1 and len(report.created) == 1
    with database.read() as session:
        error = session.execute(sa.select(RawMessage.error).where(RawMessage.state == "quarantined")).scalar()
    assert "boom" in error


WINDOWS_1252 = "Grüße – das Gerät kostet 12 € … “bitte”"


def unlabelled_8bit(subject: str, multipart: bool) -> bytes:
    """An old mailer's message: 8-bit Windows-1252 text without a charset label."""
    head = (f"From: Bob <bob@acme.test>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@acme.test>\r\nMIME-Version: 1.0\r\n").encode()
    text = WINDOWS_1252.encode("cp1252")
    if not multipart:
        return head + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text + b"\r\n"
    return head + (b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\nContent-Type: text/plain\r\n"
                   b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text + b"\r\n--BB\r\n"
                   b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
                   b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--BB--\r\n")


def test_unlabelled_8bit_mail_is_filed_readably_with_its_raw_bytes_unchanged(database):
    """Neither filing path (one by one from the MTA pipe, batched after a fetch) drops or quarantines
    it; the ticket shows the text, the stored raw message is the bytes that came in."""
    settings = settings_for()
    piped = [unlabelled_8bit(f"piped {kind}", kind == "multipart") for kind in ("single", "multipart")]
    fetched = [unlabelled_8bit(f"fetched {kind}", kind == "multipart") for kind in ("single", "multipart")]
    for raw in piped:
        _, report = ingest_bytes(database, settings, raw, "support")
        assert len(report.created) == 1 and not report.quarantined
    with database.write() as session:
        for uid, raw in enumerate(fetched, 1):
            store_raw(session, raw, mailbox="support", uidvalidity=1, uid=uid)
    report = process_pending(database, settings)
    assert len(report.created) == 2 and not report.quarantined
    with database.read() as session:
        filed = session.execute(
            sa.select(Message.subject, Message.body_text, RawMessage.raw, RawMessage.state)
            .join(RawMessage, RawMessage.id == Message.raw_message_id).order_by(Message.id)
        ).all()
    assert [(subject, body) for subject, body, _, _ in filed] == [
        ("piped single", WINDOWS_1252), ("piped multipart", WINDOWS_1252),
        ("fetched single", WINDOWS_1252), ("fetched multipart", WINDOWS_1252),
    ]
    assert [raw for _, _, raw, _ in filed] == piped + fetched
    assert {state for _, _, _, state in filed} == {"processed"}


# --- against a real Dovecot ----------------------------------------------------------------------

@pytest.mark.integration
def test_the_whole_corpus_through_the_real_fetch_path(database, imap_account):
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".txt", ".raw"))
    assert len(files) > 80
    append(imap_account, *[p.read_bytes() for p in files])
    settings = settings_for(imap_account)
    result = fetch_once(database, settings, settings.mailboxes[0])
    assert result.fetched == len(files)
    c = counts(database)
    assert c["raw"] == len(files) and c["stored"] == 0
    with database.read() as session:
        rows = session.execute(sa.select(RawMessage.id, RawMessage.state, RawMessage.error)).all()
        filed = set(session.execute(sa.select(Message.raw_message_id)).scalars())
        bodies = session.execute(sa.select(Message.body_text, Message.subject).where(Message.kind == "inbound")).all()
    for row in rows:
        assert row.state in ("processed", "quarantined", "duplicate"), row
        if row.state == "processed":
            assert row.id in filed, row
        else:
            assert row.error, row
    assert sum(r.state == "processed" for r in rows) >= 60
    for body, subject in bodies:
        assert "\x1b" not in body and "\x1b" not in subject


@pytest.mark.integration
def test_fetch_marks_with_a_keyword_and_never_deletes(database, imap_account):
    append(imap_account, mail(subject="one"), mail(subject="two"))
    settings = settings_for(imap_account)
    fetch_once(database, settings, settings.mailboxes[0])
    fetch_once(database, settings, settings.mailboxes[0])
    assert counts(database)["tickets"] == 2
    with IMAPClient(imap_account.host, port=imap_account.port, ssl=False) as client:
        client.login(imap_account.user, imap_account.password)
        client.select_folder("INBOX")
        flags = client.get_flags(client.search("ALL"))
    assert len(flags) == 2
    assert all(STORED_KEYWORD.encode() in f and b"\\Seen" not in f for f in flags.values())


@pytest.mark.integration
def test_processed_folder_and_uidvalidity_change_without_duplicates(database, imap_account):
    messages = [mail(subject=f"m{i}") for i in range(5)]
    append(imap_account, *messages)
    settings = settings_for(imap_account, processed_folder="Processed")
    fetch_once(database, settings, settings.mailboxes[0])
    with IMAPClient(imap_account.host, port=imap_account.port, ssl=False) as client:
        client.login(imap_account.user, imap_account.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        assert client.select_folder("Processed")[b"EXISTS"] == 5
        # The server loses its UID state: the same mail reappears under a new UIDVALIDITY.
        client.rename_folder("Processed", "Old")
        client.select_folder("INBOX")
        client.close_folder()
        client.delete_folder("INBOX") if False else None
    with IMAPClient(imap_account.host, port=imap_account.port, ssl=False) as client:
        client.login(imap_account.user, imap_account.password)
        client.create_folder("Inbox2")
        for raw in messages:
            client.append("Inbox2", raw)
    moved = settings_for(imap_account, processed_folder="Processed", imap_folder="Inbox2")
    fetch_once(database, moved, moved.mailboxes[0])
    c = counts(database)
    assert c["tickets"] == 5 and c["raw"] == 5 and c["inbound"] == 5


@pytest.mark.integration
def test_sigkill_at_any_moment_stores_everything_exactly_once(tmp_path, db_path, database, imap_account):
    total = 150
    append(imap_account, *[mail(subject=f"kill test {i}", body=f"body {i} " * 50) for i in range(total)])
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[mailbox]]\nname = "support"\naddress = "{SUPPORT}"\nimap_host = "127.0.0.1"\n'
        f'imap_port = {imap_account.port}\nimap_security = "none"\nimap_user = "{imap_account.user}"\n'
        'imap_password_env = "SD_IMAP_PW"\n[tickets]\nautoreply = false\n', encoding="utf-8")
    env = dict(os.environ, SUPPORTDESK_CONFIG=str(config), SUPPORTDESK_DB=str(db_path), SD_IMAP_PW="secret")
    exe = str(Path(sys.executable).parent / "supportdesk")
    rng = random.Random(3)
    kills = 0
    for _ in range(6):
        # Kill at a random point of progress (raw rows stored + tickets filed), however fast the machine.
        target = rng.randint(1, 2 * total - 1)
        proc = subprocess.Popen([exe, "fetch", "--once"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None:
            c = counts(database)
            if c["raw"] + c["tickets"] >= target:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait()
    final = subprocess.run([exe, "fetch", "--once"], env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    c = counts(database)
    assert kills >= 1
    assert c == {"raw": total, "tickets": total, "inbound": total, "stored": 0}
    with database.read() as session:
        subjects = session.execute(sa.select(Ticket.subject)).scalars().all()
    assert sorted(subjects) == sorted(f"kill test {i}" for i in range(total))


@pytest.mark.integration
def test_watch_picks_up_new_mail_with_idle(database, imap_account):
    settings = settings_for(imap_account)
    stop = threading.Event()
    errors: list[str] = []
    thread = threading.Thread(target=watch, args=(database, settings, settings.mailboxes[0], stop),
                              kwargs={"on_error": errors.append}, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        append(imap_account, mail(subject="arrives while watching"))
        deadline = time.monotonic() + 3  # the bound; Dovecot batches IDLE news by ~0.5 s
        while time.monotonic() < deadline and counts(database)["tickets"] == 0:
            time.sleep(0.2)
        assert counts(database)["tickets"] == 1, errors
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.integration
def test_wrong_password_is_recorded_and_reported(database, imap_account, cli):
    imap_account.password = "wrong"
    settings = settings_for(imap_account)
    from supportdesk.mail.imap import FetchError

    with pytest.raises(FetchError, match="login as"):
        fetch_once(database, settings, settings.mailboxes[0])
    from supportdesk.models import MailboxState

    with database.read() as session:
        state = session.get(MailboxState, "support")
    assert state.last_error and "wrong" not in state.last_error


@pytest.mark.integration
def test_ingest_command_and_tempfail_when_locked(tmp_path, db_path, database, cli_env):
    exe = str(Path(sys.executable).parent / "supportdesk")
    env = dict(os.environ, **cli_env)
    done = subprocess.run([exe, "ingest", "--mailbox", "support"], input=mail(subject="piped"), env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert counts(database)["tickets"] == 1
    import sqlite3

    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        locked = subprocess.run([exe, "ingest"], input=mail(subject="later"), env=env, capture_output=True, timeout=60)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert locked.returncode == 75, locked.stderr
    assert b"temporary failure" in locked.stderr
    call = subprocess.run([exe, "--as", "alice", "ingest", "--json"], env=env, capture_output=True, timeout=60,
                          input=json.dumps({"channel": "phone", "from": "carol@globex.test", "subject": "Called",
                                            "body_text": "Wants a callback"}).encode())
    assert call.returncode == 0, call.stderr
    with database.read() as session:
        ticket = session.get(Ticket, int(call.stdout))
        assert ticket.channel == "phone"


@pytest.mark.integration
@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_imap_tls_verifies_certificates(database, dovecot_tls_server, security, monkeypatch):
    """TLS is verified against the system store: a self-signed server is refused, trusted via SSL_CERT_FILE."""
    from supportdesk.mail.imap import FetchError

    account = dovecot_tls_server.account()
    append(account, mail(subject="over tls"))
    port = dovecot_tls_server.imaps_port if security == "ssl" else dovecot_tls_server.port
    box = MailboxConfig(name="support", address=SUPPORT, imap_host="127.0.0.1", imap_port=port,
                        imap_security=security, imap_user=account.user,
                        imap_password=Secret(None, "imap_password", plain=account.password))
    settings = Settings(mailboxes=[box], tickets=TicketsConfig(autoreply=False))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        fetch_once(database, settings, box)
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot_tls_server.cert))
    assert fetch_once(database, settings, box).report.created


def test_routing_rules_run_on_new_mail_and_a_dropped_message_gets_no_acknowledgement(database):
    from supportdesk.tickets import ensure_queue

    settings = settings_for()
    settings.rules = [
        {"name": "acme is VIP", "match": "from:@acme.test", "set": {"queue": "Billing", "priority": "high",
                                                                    "add_tags": ["vip"]}},
        {"name": "spam", "match": "subject:prize", "drop": True},
    ]
    with database.write() as session:
        ensure_queue(session, "Billing")
    _, vip = ingest_bytes(database, settings, mail(subject="Invoice question"), "support")
    _, spam = ingest_bytes(database, settings, mail(subject="You won a prize", sender="promo@spam.test"), "support")
    with database.read() as session:
        routed = ticket_detail(session, vip.created[0], utcnow())
        dropped = ticket_detail(session, spam.created[0], utcnow())
    assert (routed["queue"], routed["priority"], routed["tags"]) == ("Billing", "high", ["vip"])
    assert dropped["status"] == "closed" and "spam" in dropped["tags"]
    assert not [m for m in dropped["messages"] if m["kind"] == "outbound"]
    assert [m for m in routed["messages"] if m["kind"] == "outbound" and m["auto"]]
