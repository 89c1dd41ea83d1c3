"""The daemon: parts supervised and restarted, SIGHUP reload, SIGTERM clean exit, mail flowing end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from supportdesk.daemon import Part, Supervisor
from supportdesk.models import Outbox, Ticket
from tests.test_delivery import smtp, smtp_servers  # noqa: F401  (fixtures)
from tests.test_intake import append, mail


def test_a_crashing_part_is_restarted_and_the_others_keep_running():
    ticks: list[str] = []
    crashes = {"n": 0}

    def flaky(stop):
        crashes["n"] += 1
        if crashes["n"] <= 2:
            raise RuntimeError("boom")
        while not stop.is_set():
            ticks.append("flaky")
            stop.wait(0.05)

    def steady(stop):
        while not stop.is_set():
            ticks.append("steady")
            stop.wait(0.05)

    parts = [Part("flaky", flaky), Part("steady", steady)]
    supervisor = Supervisor(lambda: parts)
    thread = threading.Thread(target=supervisor.serve)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "flaky" not in ticks:
        time.sleep(0.05)
    supervisor.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert parts[0].restarts == 2 and "flaky" in ticks
    assert ticks.count("steady") > 10  # it ran all along, through the other part's crashes


def test_reload_restarts_the_parts_with_a_new_generation():
    generations: list[int] = []

    def make_parts():
        number = len(generations) + 1
        generations.append(number)
        return [Part("p", lambda stop: stop.wait())]

    supervisor = Supervisor(make_parts)
    thread = threading.Thread(target=supervisor.serve)
    thread.start()
    time.sleep(0.3)
    supervisor.reload.set()
    time.sleep(0.6)
    supervisor.stop.set()
    thread.join(timeout=10)
    assert generations == [1, 2]


@pytest.mark.integration
def test_daemon_fetches_sends_reloads_and_stops_cleanly(tmp_path, db_path, database, imap_account, smtp):  # noqa: F811
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[mailbox]]\nname = "support"\naddress = "support@example.test"\nimap_host = "127.0.0.1"\n'
        f'imap_port = {imap_account.port}\nimap_security = "none"\nimap_user = "{imap_account.user}"\n'
        f'imap_password_env = "SD_IMAP_PW"\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n',
        encoding="utf-8")
    env = dict(os.environ, SUPPORTDESK_CONFIG=str(config), SUPPORTDESK_DB=str(db_path), SD_IMAP_PW="secret")
    exe = str(Path(sys.executable).parent / "supportdesk")
    proc = subprocess.Popen([exe, "daemon", "--timer-interval", "1"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        append(imap_account, mail(subject="Daemon, are you there?"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not smtp.handler.received:
            time.sleep(0.3)
        assert smtp.handler.received, "the acknowledgement never left"
        with database.read() as session:
            assert session.execute(sa.select(Ticket.subject)).scalars().all() == ["Daemon, are you there?"]
            assert session.execute(sa.select(Outbox.status)).scalars().all() == ["sent"]
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stderr.read()
    assert "configuration reloaded" in log
    assert 'part=daemon msg="stopped"' in log
    assert "level=error" not in log
    assert "secret" not in log
