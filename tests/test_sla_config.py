"""Bad SLA/automation configuration: refused with file, key and reason at load, by `doctor`,
at daemon start; a failed SIGHUP reload keeps the daemon on its last good configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from supportdesk import automation
from supportdesk.config import ConfigError, parse_settings
from supportdesk.models import Ticket
from supportdesk.sla import policy as sla_policy
from supportdesk.tickets import Actor, create_ticket, get_ticket
from tests.samples import ALWAYS, always_sla

GOOD = always_sla(first_response=60) + '''
[[escalation]]
name = "late"
match = "sla:breached"
set = { priority = "urgent" }
'''
MISSING_QUEUE = GOOD + '''
[[rule]]
name = "to nowhere"
match = "from:@acme.test"
set = { queue = "Nowhere" }
'''


@pytest.mark.parametrize("data, key, reason", [
    ({"calendar": [{"name": "c", "timezone": "UTC", "hours": {"mon": ["09:00-12:00", "11:00-13:00"]}}]},
     "calendar[0].hours.mon[1]", "overlap"),
    ({"calendar": [{"name": "c", "timezone": "UTC", "hours": {"mon": ["22:00-06:00"], "tue": ["05:00-09:00"]}}]},
     "calendar[0].hours.tue[0]", "overlap"),
    ({"calendar": [{"name": "c", "timezone": "Europe/Atlantis", "hours": ALWAYS}]}, "calendar[0].timezone", "IANA"),
    ({"calendar": [{"name": "c", "timezone": "UTC", "hours": ALWAYS, "holidays_country": "XX"}]},
     "calendar[0].holidays_country", "ISO 3166"),
    ({"calendar": [{"name": "c", "timezone": "UTC", "hours": ALWAYS, "holidays_country": "DE",
                    "holidays_subdivision": "ZZ"}]}, "calendar[0].holidays_subdivision", "BE"),
    ({"rule": [{"subject_regex": "[unclosed", "set": {"priority": "high"}}]}, "rule[0].subject_regex",
     "bad regular expression"),
    ({"rule": [{"from_regex": "(?P<x", "set": {"priority": "high"}}]}, "rule[0].from_regex", "bad regular expression"),
])
def test_bad_config_is_refused_with_file_key_and_reason(tmp_path, data, key, reason):
    settings = parse_settings(data)
    settings.file = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as info:
        sla_policy.load(settings)
        automation.load(settings)
    assert info.value.key == key
    message = str(info.value)
    assert "config.toml" in message and key in message and reason in message
    assert "\n" not in message


def _write(cli_env, text: str) -> Path:
    path = Path(cli_env["SUPPORTDESK_CONFIG"])
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")
    return path


def test_doctor_reports_a_rule_naming_a_missing_queue(cli, cli_env):
    _write(cli_env, MISSING_QUEUE)
    result = cli("doctor")
    text = " ".join(result.stdout.split())  # the console may wrap long lines
    assert "FAIL sla and automation" in text and "rule[0].set.queue: no queue named 'Nowhere'" in text


def _daemon(cli_env, *args):
    exe = str(Path(sys.executable).parent / "supportdesk")
    env = dict(os.environ, **cli_env)
    return subprocess.Popen([exe, "daemon", "--timer-interval", "0.5", *args], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_daemon_start_refuses_a_rule_naming_a_missing_queue(cli_env):
    _write(cli_env, MISSING_QUEUE)
    proc = _daemon(cli_env)
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().strip()
    assert "rule[0].set.queue" in err and "Nowhere" in err and "config.toml" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_daemon_keeps_its_last_good_config_when_a_reload_fails(cli_env, database):
    path = _write(cli_env, GOOD)
    good = path.read_text(encoding="utf-8")
    proc = _daemon(cli_env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(text in x for x in lines) and proc.poll() is None:
            time.sleep(0.1)
        assert any(text in x for x in lines), "".join(lines)

    try:
        wait_for("running:")  # the SIGHUP handler is in place
        path.write_text(good.replace('first_response = 60', 'first_response = 60\npause_on = ["waiting"]'),
                        encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        wait_for("reload refused")
        # Still working on the old configuration: a breached ticket is escalated by it.
        with database.write() as session:
            tid = create_ticket(session, Actor.system(), requester_email="carol@customer.test", subject="late",
                                created_at=datetime.now(timezone.utc) - timedelta(hours=2)).id
        with database.write() as session:  # this process has no hook installed: due times as the daemon would
            sla_policy.recompute(session, parse_settings({"calendar": [{"name": "always", "timezone": "UTC",
                                                                          "hours": ALWAYS}],
                                                          "sla": [{"name": "default", "calendar": "always",
                                                                   "first_response": 60}]}), [tid])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with database.read() as session:
                if get_ticket(session, tid).priority == "urgent":
                    break
            time.sleep(0.3)
        with database.read() as session:
            priority = session.execute(sa.select(Ticket.priority).where(Ticket.id == tid)).scalar()
        assert priority == "urgent", proc.poll()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    log = "".join(lines)
    assert "reload refused, keeping the old config" in log and "sla[0].pause_on" in log
    assert "configuration reloaded" not in log
