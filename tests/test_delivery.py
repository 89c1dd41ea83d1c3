"""Outbound delivery against a real SMTP server (aiosmtpd on loopback): exactly the stored
bytes, retries without duplicates, nothing lost when the server or the sender dies."""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from supportdesk.config import ConfigError, MailboxConfig, Secret, Settings, SmtpConfig, TicketsConfig
from supportdesk.db import Database
from supportdesk.listing import ticket_detail
from supportdesk.mail.delivery import (
    Outcome, backoff, bounced_recently, cancel, claim, finish, list_outbox, retry, send_once,
)
from supportdesk.mail.outbox import queue_reply
from supportdesk.models import Event, Outbox, utcnow
from supportdesk.tickets import Actor, InvalidError, NotFoundError, create_ticket, resolve_actor
from tests.servers import free_port

SUPPORT = "support@example.test"
EXE = str(Path(sys.executable).parent / "supportdesk")


class Recorder:
    """An SMTP handler a test can program: answers to DATA in turn, refused recipients, a delay."""

    def __init__(self):
        self.received: list[dict] = []
        self.data_answers: list[str] = []
        self.rcpt_answers: dict[str, str] = {}
        self.delay = 0.0
        self.logins: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_answers:
            return self.rcpt_answers[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        answer = self.data_answers.pop(0) if self.data_answers else "250 2.0.0 Ok: queued as Q1"
        if answer.startswith("250"):
            # Recorded before the (slow) answer: the server has the mail even if the client dies now.
            self.received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                  "content": bytes(envelope.content),
                                  "tls": server.transport.get_extra_info("ssl_object") is not None,
                                  "authenticated": bool(session.authenticated)})
        if self.delay:
            await asyncio.sleep(self.delay)
        return answer

    def message_ids(self) -> list[str]:
        return [email.message_from_bytes(m["content"], policy=policy.default)["Message-ID"] for m in self.received]


class SmtpServer:
    def __init__(self, port: int | None = None, **smtp_parameters):
        self.port = port or free_port()
        self.handler = Recorder()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, server_hostname="mx.test",
                                     **smtp_parameters)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_servers():
    """Start aiosmtpd servers on free loopback ports; all stopped at the end."""
    started: list[SmtpServer] = []

    def start(port: int | None = None, **smtp_parameters) -> SmtpServer:
        server = SmtpServer(port, **smtp_parameters)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp(smtp_servers) -> SmtpServer:
    return smtp_servers()


def settings_for(port: int, **smtp) -> Settings:
    smtp.setdefault("security", "none")
    return Settings(
        mailboxes=[smtp.pop("mailbox", MailboxConfig(name="support", address=SUPPORT, queue="General"))],
        smtp=SmtpConfig(host=smtp.pop("host", "127.0.0.1"), port=port, timeout=10, **smtp),
        tickets=TicketsConfig(subject_tag="Support", autoreply=False),
    )


def queue_replies(database, settings, count=1, *, auto=False, cc=None, first=0) -> list[int]:
    """Real tickets with a customer message each, answered through the outbox service; outbox ids."""
    ids = []
    with database.write() as session:
        alice = resolve_actor(session, "alice")
        for i in range(first, first + count):
            ticket = create_ticket(session, Actor.system(), requester_email=f"customer{i}@acme.test",
                                   subject=f"Printer {i} on fire", body="It is on fire.", mailbox="support",
                                   message_id=f"question{i}.{time.monotonic_ns()}@acme.test")
            message = queue_reply(session, settings, ticket, Actor.system() if auto else alice,
                                  f"Reply number {i}.", auto=auto, cc=cc)
            ids.append(session.execute(sa.select(Outbox.id).where(Outbox.message_id == message.id)).scalar_one())
    return ids


def rows(database) -> dict[int, Outbox]:
    with database.read() as session:
        return {o.id: o for o in session.execute(sa.select(Outbox)).scalars()}


def write_config(path: Path, smtp: str) -> None:
    path.write_text(f'[[mailbox]]\nname = "support"\naddress = "{SUPPORT}"\nqueue = "General"\n'
                    f'[tickets]\nsubject_tag = "Support"\n[smtp]\n{smtp}', encoding="utf-8")


def wait_for(predicate, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


# --- the happy path ----------------------------------------------------------------------------

@pytest.mark.integration
def test_reply_arrives_byte_identical_with_threading_headers(database, smtp):
    settings = settings_for(smtp.port)
    (outbox_id,) = queue_replies(database, settings)
    report = send_once(database, settings)
    assert (report.sent, report.failed, report.dead) == (1, 0, 0)
    (got,) = smtp.handler.received
    row = rows(database)[outbox_id]
    assert got["content"] == row.raw
    assert got["from"] == SUPPORT and got["to"] == ["customer0@acme.test"]
    with database.read() as session:
        detail = ticket_detail(session, row.ticket_id, utcnow())
    question, reply = detail["messages"]
    parsed = email.message_from_bytes(got["content"], policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == SUPPORT
    assert parsed["To"] == "customer0@acme.test"
    assert f"[Support #{row.ticket_id}]" in parsed["Subject"]
    assert parsed["Message-ID"] == f"<{reply['message_id']}>"
    assert parsed["In-Reply-To"] == f"<{question['message_id']}>"
    assert f"<{question['message_id']}>" in parsed["References"]
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1
    assert row.last_error.startswith("250 2.0.0 Ok: queued as Q1")
    assert reply["delivery"] == "sent"


@pytest.mark.integration
def test_automatic_mail_goes_with_an_empty_envelope_sender(database, smtp):
    settings = settings_for(smtp.port)
    queue_replies(database, settings, auto=True)
    send_once(database, settings)
    (got,) = smtp.handler.received
    assert got["from"] == "<>", "aiosmtpd reports MAIL FROM:<> as '<>'"
    assert b"Auto-Submitted: auto-replied" in got["content"]


@pytest.mark.integration
def test_a_partially_refused_reply_is_sent_and_says_who_was_refused(database, smtp):
    settings = settings_for(smtp.port)
    smtp.handler.rcpt_answers["carol@acme.test"] = "550 5.1.1 carol: no such user"
    (outbox_id,) = queue_replies(database, settings, cc=["carol@acme.test"])
    assert send_once(database, settings).sent == 1
    row = rows(database)[outbox_id]
    assert row.status == "sent"
    assert "refused: carol@acme.test (550 5.1.1 carol: no such user)" in row.last_error
    assert smtp.handler.received[0]["to"] == ["customer0@acme.test"]


# --- failures ----------------------------------------------------------------------------------

@pytest.mark.integration
def test_temporary_failures_retry_with_backoff_and_deliver_once(database, smtp):
    settings = settings_for(smtp.port)
    smtp.handler.data_answers = ["451 4.3.0 try again later", "451 4.3.0 try again later"]
    (outbox_id,) = queue_replies(database, settings)
    t0 = utcnow()
    assert send_once(database, settings, now=t0).failed == 1
    row = rows(database)[outbox_id]
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "451 4.3.0 try again later")
    assert row.next_attempt_at == t0 + timedelta(seconds=60)
    assert send_once(database, settings, now=t0 + timedelta(seconds=30)).attempted == 0
    assert send_once(database, settings, now=t0 + timedelta(seconds=61)).failed == 1
    assert rows(database)[outbox_id].next_attempt_at == t0 + timedelta(seconds=61 + 120)
    assert send_once(database, settings, now=t0 + timedelta(hours=1)).sent == 1
    row = rows(database)[outbox_id]
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(smtp.handler.received) == 1


def test_backoff_doubles_and_is_capped():
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff(9).total_seconds() == 60 * 256
    assert backoff(10).total_seconds() == 6 * 3600 and backoff(500).total_seconds() == 6 * 3600


@pytest.mark.integration
def test_temporary_failure_on_the_last_attempt_is_dead(database, smtp):
    settings = settings_for(smtp.port, max_attempts=2)
    smtp.handler.data_answers = ["452 4.3.1 out of memory"] * 2
    (outbox_id,) = queue_replies(database, settings)
    t0 = utcnow()
    send_once(database, settings, now=t0)
    assert send_once(database, settings, now=t0 + timedelta(hours=1)).dead == 1
    assert rows(database)[outbox_id].status == "dead"
    with database.read() as session:
        events = session.execute(sa.select(Event.new).where(Event.field == "delivery")).scalars().all()
    assert any("dead" in e and "452" in e for e in events)


@pytest.mark.integration
def test_permanent_refusal_is_dead_and_visible_in_outbox_list(database, smtp, cli):
    settings = settings_for(smtp.port)
    smtp.handler.rcpt_answers["customer0@acme.test"] = "550 5.1.1 customer0: no such user"
    (outbox_id,) = queue_replies(database, settings)
    assert send_once(database, settings).dead == 1
    result = cli("outbox", "list", "--status", "dead", "--format", "json")
    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.stdout)
    assert listed["id"] == outbox_id and listed["status"] == "dead" and listed["attempts"] == 1
    assert "550 5.1.1 customer0: no such user" in listed["last_error"]
    assert listed["to"] == ["customer0@acme.test"] and listed["subject"].startswith("Re: Printer 0")
    assert smtp.handler.received == []


@pytest.mark.integration
def test_server_down_loses_nothing_and_delivers_once_it_is_back(database, smtp_servers):
    port = free_port()
    settings = settings_for(port)
    ids = queue_replies(database, settings, 3)
    report = send_once(database, settings)
    assert report.failed == 3 and report.sent == 0
    assert len(report.errors) == 1 and f"127.0.0.1:{port}" in report.errors[0]
    for row in rows(database).values():
        assert row.status == "failed" and row.attempts == 1 and "refused" in row.last_error.lower()
    server = smtp_servers(port)
    assert send_once(database, settings, now=utcnow() + timedelta(minutes=2)).sent == 3
    assert sorted(server.handler.message_ids()) == sorted(set(server.handler.message_ids()))
    assert len(server.handler.received) == 3
    assert {r.status for r in rows(database).values()} == {"sent"} and set(rows(database)) == set(ids)


# --- concurrency and crashes -------------------------------------------------------------------

@pytest.mark.integration
def test_two_concurrent_senders_deliver_each_message_exactly_once(database, db_path, smtp):
    settings = settings_for(smtp.port)
    queue_replies(database, settings, 40)
    smtp.handler.delay = 0.01
    start = threading.Barrier(2)
    reports, errors = {}, []

    def sender(name: str) -> None:
        own = Database(f"sqlite:///{db_path}")
        try:
            start.wait()
            reports[name] = send_once(own, settings, worker=name)
        except Exception as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=sender, args=(f"sender-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    ids = smtp.handler.message_ids()
    assert len(ids) == 40 and len(set(ids)) == 40
    assert sum(r.sent for r in reports.values()) == 40
    assert all(r.sent > 0 for r in reports.values()), "one sender did all the work: nothing was concurrent"
    assert {r.status for r in rows(database).values()} == {"sent"}


def test_a_claim_is_exclusive_until_its_lease_expires(database):
    settings = settings_for(1)
    (outbox_id,) = queue_replies(database, settings)
    t0 = utcnow()
    first = claim(database, "a", t0, lease_seconds=600)
    assert first.id == outbox_id and first.attempts == 1
    assert claim(database, "b", t0 + timedelta(seconds=599), lease_seconds=600) is None
    second = claim(database, "b", t0 + timedelta(seconds=601), lease_seconds=600)
    assert second.id == outbox_id and second.attempts == 2 and second.raw == first.raw
    sent = Outcome("sent", "250 ok")
    assert finish(database, first, sent, "a") is None
    assert rows(database)[outbox_id].status == "sending"
    assert finish(database, second, sent, "b") == "sent"


def test_a_message_that_kills_its_sender_every_time_ends_dead(database):
    settings = settings_for(1)
    (outbox_id,) = queue_replies(database, settings)
    t0 = utcnow()
    for i in range(3):
        assert claim(database, f"w{i}", t0 + timedelta(seconds=10 * i), lease_seconds=5, max_attempts=3)
    assert claim(database, "w9", t0 + timedelta(minutes=5), lease_seconds=5, max_attempts=3) is None
    row = rows(database)[outbox_id]
    assert row.status == "dead" and "may have been delivered" in row.last_error


def _send_env(tmp_path, db_path, port: int) -> dict:
    config = tmp_path / "send.toml"
    write_config(config, f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout = 10\n')
    return dict(os.environ, SUPPORTDESK_CONFIG=str(config), SUPPORTDESK_DB=str(db_path))


@pytest.mark.integration
def test_sigkill_mid_run_loses_nothing_and_duplicates_at_most_the_message_in_flight(
        tmp_path, db_path, database, smtp):
    settings = settings_for(smtp.port)
    total = 10
    queue_replies(database, settings, total)
    smtp.handler.delay = 0.3
    env = _send_env(tmp_path, db_path, smtp.port)
    proc = subprocess.Popen([EXE, "send", "--watch", "--interval", "0.2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(smtp.handler.received) >= 3, timeout=20)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    states = Counter(r.status for r in rows(database).values())
    assert states["sending"] <= 1 and states["sent"] >= 2
    smtp.handler.delay = 0
    time.sleep(1.1)
    done = subprocess.run([EXE, "send", "--once", "--lease", "1"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert {r.status for r in rows(database).values()} == {"sent"}
    counts = Counter(smtp.handler.message_ids())
    assert len(counts) == total
    assert sum(counts.values()) - total <= 1


@pytest.mark.integration
def test_sigterm_stops_watch_after_the_current_message(tmp_path, db_path, database, smtp):
    settings = settings_for(smtp.port)
    queue_replies(database, settings, 6)
    smtp.handler.delay = 0.5
    env = _send_env(tmp_path, db_path, smtp.port)
    proc = subprocess.Popen([EXE, "send", "--watch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: len(smtp.handler.received) >= 1, timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    states = Counter(r.status for r in rows(database).values())
    assert states["sending"] == 0 and states["sent"] == len(smtp.handler.received) and states["queued"] >= 1
    assert "sent: 250" in out


# --- TLS and AUTH ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


def _server_tls(certificate):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.integration
def test_starttls_refuses_an_untrusted_certificate_clearly(database, smtp_servers, certificate, cli, cli_env,
                                                           monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = smtp_servers(tls_context=_server_tls(certificate), require_starttls=True)
    write_config(Path(cli_env["SUPPORTDESK_CONFIG"]),
                 f'host = "127.0.0.1"\nport = {server.port}\nsecurity = "starttls"\ntimeout = 10\n')
    settings = settings_for(server.port, security="starttls")
    (outbox_id,) = queue_replies(database, settings)
    result = cli("send", "--once")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("supportdesk: error")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "127.0.0.1:" in errors[0] and "certificate not trusted" in errors[0]
    row = rows(database)[outbox_id]
    assert row.status == "failed" and "certificate not trusted" in row.last_error
    assert server.handler.received == []


@pytest.mark.integration
def test_starttls_works_when_the_ca_is_trusted_or_verification_is_off(database, smtp_servers, certificate,
                                                                     monkeypatch):
    server = smtp_servers(tls_context=_server_tls(certificate), require_starttls=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    queue_replies(database, settings_for(server.port), 1)
    assert send_once(database, settings_for(server.port, security="starttls")).sent == 1
    monkeypatch.delenv("SSL_CERT_FILE")
    queue_replies(database, settings_for(server.port), 1, first=1)
    assert send_once(database, settings_for(server.port, security="starttls", tls_verify=False)).sent == 1
    assert [m["tls"] for m in server.handler.received] == [True, True]


@pytest.mark.integration
def test_implicit_tls_with_a_trusted_ca(database, smtp_servers, certificate, monkeypatch):
    server = smtp_servers(ssl_context=_server_tls(certificate))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    queue_replies(database, settings_for(server.port))
    assert send_once(database, settings_for(server.port, security="ssl", host="localhost")).sent == 1
    assert server.handler.received[0]["tls"]


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SUPPORT.encode(), b"s3cret pa55")
    return AuthResult(success=ok, handled=False)


@pytest.mark.integration
def test_auth_after_starttls_uses_the_password_from_the_environment_and_never_shows_it(
        database, smtp_servers, certificate, monkeypatch):
    server = smtp_servers(tls_context=_server_tls(certificate), require_starttls=True, authenticator=_authenticator,
                          auth_required=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    settings = settings_for(server.port, security="starttls", user=SUPPORT,
                            password=Secret(None, "smtp.password", env="SD_SMTP_PW"))
    (outbox_id,) = queue_replies(database, settings)
    monkeypatch.delenv("SD_SMTP_PW", raising=False)
    with pytest.raises(ConfigError, match="SD_SMTP_PW"):
        send_once(database, settings)
    assert rows(database)[outbox_id].attempts == 0
    monkeypatch.setenv("SD_SMTP_PW", "wrong pa55")
    report = send_once(database, settings)
    row = rows(database)[outbox_id]
    assert report.failed == 1 and row.status == "failed"
    assert f"login as {SUPPORT} refused: 535" in row.last_error and "pa55" not in row.last_error
    monkeypatch.setenv("SD_SMTP_PW", "s3cret pa55")
    assert send_once(database, settings, now=utcnow() + timedelta(minutes=5)).sent == 1
    assert server.handler.received[0]["authenticated"] and server.handler.received[0]["tls"]


@pytest.mark.integration
def test_sent_copy_goes_to_the_imap_sent_folder_and_its_failure_never_unsends(database, smtp, imap_account):
    from imapclient import IMAPClient

    box = MailboxConfig(name="support", address=SUPPORT, queue="General", imap_host=imap_account.host,
                        imap_port=imap_account.port, imap_security="none", imap_user=imap_account.user,
                        imap_password=Secret(None, "imap_password", plain=imap_account.password))
    settings = settings_for(smtp.port, mailbox=box, sent_folder_mailbox="support", sent_folder="Sent")
    (outbox_id,) = queue_replies(database, settings)
    report = send_once(database, settings)
    assert report.sent == 1 and not report.sent_folder_errors
    with IMAPClient(imap_account.host, port=imap_account.port, ssl=False) as client:
        client.login(imap_account.user, imap_account.password)
        client.select_folder("Sent")
        (uid,) = client.search("ALL")
        stored = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"])[uid]
    assert stored[b"BODY[]"] == rows(database)[outbox_id].raw and b"\\Seen" in stored[b"FLAGS"]
    broken = MailboxConfig(name="support", address=SUPPORT, queue="General", imap_host=imap_account.host,
                           imap_port=imap_account.port, imap_security="none", imap_user=imap_account.user,
                           imap_password=Secret(None, "imap_password", plain="wrong"))
    settings = settings_for(smtp.port, mailbox=broken, sent_folder_mailbox="support", sent_folder="Sent")
    queue_replies(database, settings, 2, first=1)
    report = send_once(database, settings)
    assert report.sent == 2 and len(report.sent_folder_errors) == 1
    assert {r.status for r in rows(database).values()} == {"sent"}


# --- agents' commands --------------------------------------------------------------------------

def test_retry_and_cancel_follow_the_rules(database):
    settings = settings_for(1)
    a, b, c = queue_replies(database, settings, 3)
    assert cancel(database, [a]) == [a]
    with pytest.raises(InvalidError, match="only queued or failed"):
        cancel(database, [a, b])
    assert rows(database)[b].status == "queued", "all or nothing"
    job = claim(database, "w", utcnow())
    assert job.id == b
    with pytest.raises(InvalidError, match="being handed to the SMTP server"):
        cancel(database, [b])
    finish(database, job, Outcome("sent", "250 ok"), "w")
    with pytest.raises(InvalidError, match="duplicate"):
        retry(database, [b])
    with pytest.raises(NotFoundError, match="#999"):
        retry(database, [999])
    with database.write() as session:
        session.execute(sa.update(Outbox).where(Outbox.id == c).values(status="dead", attempts=10))
    assert retry(database, [a, c]) == [a, c]
    after = rows(database)
    assert after[a].status == after[c].status == "queued" and after[c].attempts == 0


def test_bounced_recently_names_the_requester(database):
    settings = settings_for(1)
    (outbox_id,) = queue_replies(database, settings)
    ticket_id = rows(database)[outbox_id].ticket_id
    with database.read() as session:
        assert bounced_recently(session, ticket_id) is None
    with database.write() as session:
        session.execute(sa.update(Outbox).where(Outbox.id == outbox_id).values(
            status="bounced", sent_at=utcnow() - timedelta(days=3)))
        later = create_ticket(session, Actor.system(), requester_email="customer0@acme.test", subject="Again")
    with database.read() as session:
        assert bounced_recently(session, later.id) == "customer0@acme.test"
        assert bounced_recently(session, later.id, days=2) is None
        assert list_outbox(session, "bounced")[0]["id"] == outbox_id


def test_send_without_smtp_config_is_a_usage_error(cli):
    result = cli("send", "--once")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "[smtp]" in result.output and "Traceback" not in result.output


@pytest.mark.integration
def test_send_and_outbox_commands(database, smtp, cli, cli_env):
    write_config(Path(cli_env["SUPPORTDESK_CONFIG"]),
                 f'host = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\ntimeout = 10\n')
    settings = settings_for(smtp.port)
    assert cli("outbox", "list").exit_code == 3
    first, second, third = queue_replies(database, settings, 3)
    listed = cli("outbox", "list", "--format", "ids")
    assert listed.stdout.split() == [str(first), str(second), str(third)]
    assert cli("outbox", "cancel", str(third)).exit_code == 0
    result = cli("send", "--once", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert f"outbox #{first} (ticket #" in result.stdout and "1 sent, 0 failed" in result.stderr
    assert cli("send", "--once").exit_code == 0
    assert len(smtp.handler.received) == 2
    refused = cli("outbox", "cancel", str(first))
    assert refused.exit_code == 2 and "already delivered" in refused.output
    assert cli("outbox", "retry", "nonsense").exit_code == 2
    assert cli("outbox", "retry", "-", input=f"{third}\n").exit_code == 0
    table = cli("outbox", "list", "--status", "queued")
    assert table.exit_code == 0 and table.stdout.startswith(f"{third}\t")
    csv_out = cli("outbox", "list", "--status", "sent,queued", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("id,ticket_id,status") and len(csv_out) == 4
    assert cli("outbox", "list", "--status", "lost").exit_code == 2
    with database.read() as session:
        events = session.execute(sa.select(Event.actor, Event.new).where(Event.field == "delivery")).all()
    assert ("alice", f"message #{rows(database)[third].message_id} queued") in [tuple(e) for e in events]


def test_reply_to_a_bounced_address_warns_the_agent(cli, database, tmp_path):
    """SPEC §9 / issue: a reply to a customer whose address bounced recently warns first."""
    created = cli("tickets", "create", "--from", "gone@acme.test", "--subject", "Hello")
    ticket_id = int(created.output)
    body = tmp_path / "r.txt"
    body.write_text("First answer", encoding="utf-8")
    assert cli("tickets", "reply", str(ticket_id), "--body-file", str(body)).exit_code == 0
    with database.write() as session:
        session.execute(sa.update(Outbox.__table__).values(status="bounced"))
    again = cli("tickets", "reply", str(ticket_id), "--body-file", str(body))
    assert again.exit_code == 0
    assert "gone@acme.test bounced in the last 30 days" in again.output


def test_reply_with_attachment_signature_and_agent_display_name(cli, cli_env, database, tmp_path):
    Path(cli_env["SUPPORTDESK_CONFIG"]).write_text(
        '[[mailbox]]\nname = "support"\naddress = "support@example.test"\nqueue = "General"\n'
        '[tickets]\nfrom_name = "{agent} via {queue}"\n', encoding="utf-8")
    with database.write() as session:
        from supportdesk.models import Agent

        session.execute(sa.update(Agent.__table__).where(Agent.login == "alice").values(signature="Alice, Support"))
    ticket_id = int(cli("tickets", "create", "--from", "bob@acme.test", "--subject", "Invoice").output)
    body, pdf = tmp_path / "r.txt", tmp_path / "invoice.pdf"
    body.write_text("Here it is.", encoding="utf-8")
    pdf.write_bytes(b"%PDF-1.4 fake")
    result = cli("tickets", "reply", str(ticket_id), "--body-file", str(body), "--attach", str(pdf))
    assert result.exit_code == 0, result.output
    with database.read() as session:
        raw = session.execute(sa.select(Outbox.raw)).scalar_one()
    sent = email.message_from_bytes(raw, policy=policy.default)
    assert sent["From"].addresses[0].display_name == "Alice via General"
    assert "-- \nAlice, Support" in sent.get_body(("plain",)).get_content().replace("\r\n", "\n")
    (part,) = list(sent.iter_attachments())
    assert part.get_filename() == "invoice.pdf" and part.get_content() == b"%PDF-1.4 fake"
    shown = json.loads(cli("tickets", "show", str(ticket_id), "--format", "json").output)
    assert shown["messages"][-1]["attachments"][0]["filename"] == "invoice.pdf"


def test_forward_to_a_third_party_threads_their_answer_back(cli, database, tmp_path):
    from supportdesk.mail.intake import ingest_bytes
    from tests.test_intake import mail, settings_for as intake_settings

    ticket_id = int(cli("tickets", "create", "--from", "bob@acme.test", "--subject", "Broken pump",
                        "--body-file", "-", input="The pump leaks.\n").output)
    result = cli("tickets", "forward", str(ticket_id), "--to", "vendor@pumps.test", "--body-file", "-",
                 input="Can you look at this?\n")
    assert result.exit_code == 0, result.output
    with database.read() as session:
        raw = session.execute(sa.select(Outbox.raw)).scalar_one()
    sent = email.message_from_bytes(raw, policy=policy.default)
    assert sent["To"] == "vendor@pumps.test" and sent["Subject"].startswith("Fwd: Broken pump [Support #")
    text = sent.get_body(("plain",)).get_content()
    assert "Can you look at this?" in text and "The pump leaks." in text
    answer = mail(subject=f"Re: {sent['Subject']}", sender="vendor@pumps.test", body="Replace the seal.",
                  In_Reply_To=sent["Message-ID"])
    _, report = ingest_bytes(database, intake_settings(), answer, "support")
    assert report.appended == [ticket_id]
    assert cli("tickets", "forward", str(ticket_id), "--to", "Evil <x@y.test>").exit_code == 2
