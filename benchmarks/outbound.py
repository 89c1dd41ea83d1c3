"""Outbound figures: deliver queued replies to a local aiosmtpd over one reused connection.

    .venv/bin/python benchmarks/outbound.py [--messages 2000]

Prints figures; not a test.  Target: ≥ 200 messages/s.
"""

from __future__ import annotations

import argparse
import base64
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from supportdesk.config import MailboxConfig, Settings, SmtpConfig
from supportdesk.db import Database
from supportdesk.mail.compose import OutgoingMail, build_message, make_message_id
from supportdesk.mail.delivery import send_once
from supportdesk.tickets import Actor, add_agent, ensure_queue
from supportdesk.transfer import check_record, import_tickets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sd-out-"))
    database = Database(f"sqlite:///{work / 'desk.db'}")
    database.upgrade()
    now = datetime.now(timezone.utc).isoformat()
    records = []
    for i in range(args.messages):
        mail = OutgoingMail(from_addr="support@example.test", to=[f"customer{i}@acme.test"],
                            subject=f"Re: Question {i} [Support #{i + 1}]", body_text="Thanks, fixed. " * 40,
                            message_id=make_message_id("example.test"))
        records.append(check_record({
            "subject": f"Question {i}", "requester": f"customer{i}@acme.test", "created_at": now, "status": "open",
            "messages": [{"kind": "outbound", "from": "support@example.test", "to": [f"customer{i}@acme.test"],
                          "body_text": "Thanks", "message_id": mail.message_id, "created_at": now,
                          "delivery": "queued", "raw_base64": base64.b64encode(build_message(mail)).decode()}],
        }))
    with database.write() as session:
        ensure_queue(session, "General", "support@example.test")
        add_agent(session, "bench")
        import_tickets(session, records, Actor("bench"))
    port = free_port()
    # The server runs in its own process, as a real one would (in-process it would share our GIL).
    server = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                               "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        settings = Settings(mailboxes=[MailboxConfig(name="support", address="support@example.test")],
                            smtp=SmtpConfig(host="127.0.0.1", port=port, security="none"))
        start = time.perf_counter()
        report = send_once(database, settings)
        elapsed = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    print(f"delivered {report.sent:,} of {args.messages:,} queued replies "
          f"in {elapsed:.2f} s → {report.sent / elapsed:,.0f} messages/s on one connection (target ≥ 200)")
    if report.sent != args.messages:
        sys.exit(1)


if __name__ == "__main__":
    main()
