"""Intake figures against a local Dovecot: fetch+store rate and filing rate.

    .venv/bin/python benchmarks/intake.py [--messages 3000]

Starts its own Dovecot (needs dovecot-imapd), appends N messages, then measures
`fetch` (IMAP FETCH → raw store, committed with UIDs) and filing (parse → thread
→ ticket → acknowledgement) separately and together.  Prints figures; not a test.
Target (SPEC §12): IMAP intake ≥ 300 messages/s sustained.

Wall time depends on what else the machine runs; CPU time per message (this
process plus the parser processes, `process_time` and `RUSAGE_CHILDREN`) does much
less, so both are printed.  `--workers 0` parses in this process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone
from pathlib import Path

from imapclient import IMAPClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supportdesk.config import MailboxConfig, Secret, Settings, TicketsConfig  # noqa: E402
from supportdesk.db import Database  # noqa: E402
from supportdesk.mail.imap import fetch_once  # noqa: E402
from supportdesk.mail.intake import process_pending  # noqa: E402
from tests.servers import Dovecot, dovecot_binary  # noqa: E402


def message(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i % 500} <customer{i % 500}@company{i % 97}.test>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Question number {i} about my order"
    msg["Message-ID"] = make_msgid(domain=f"company{i % 97}.test")
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg.set_content(("Hello, I have a question about my order. " * 20 + "\n") * 3)
    return bytes(msg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=None, help="parser processes (default: one per core)")
    args = parser.parse_args()
    binary = dovecot_binary()
    if binary is None:
        sys.exit("dovecot is not installed (apt-get install dovecot-imapd)")
    server = Dovecot(binary)
    try:
        account = server.account()
        start = time.perf_counter()
        with IMAPClient(account.host, port=account.port, ssl=False) as client:
            client.login(account.user, account.password)
            batch = [message(i) for i in range(args.messages)]
            for start_at in range(0, len(batch), 500):
                client.multiappend("INBOX", batch[start_at:start_at + 500])
        print(f"appended {args.messages:,} messages ({sum(map(len, batch)) / 1e6:.1f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
        for autoreply in (False, True):
            work = Path(tempfile.mkdtemp(prefix="sd-intake-"))
            database = Database(f"sqlite:///{work / 'desk.db'}")
            database.upgrade()
            box = MailboxConfig(name=f"support{int(autoreply)}", address="support@example.test", imap_host=account.host,
                                imap_port=account.port, imap_security="none", imap_user=account.user,
                                imap_password=Secret(None, "imap_password", plain=account.password))
            settings = Settings(mailboxes=[box], tickets=TicketsConfig(autoreply=autoreply))
            start = time.perf_counter()
            result = fetch_once(database, settings, box, process=False)
            fetch_s = time.perf_counter() - start
            start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
            report = process_pending(database, settings, workers=args.workers)
            file_s = time.perf_counter() - start
            file_cpu = time.process_time() - cpu
            workers_cpu = _children_cpu() - children
            n = result.report.stored
            print(f"autoreply={'on ' if autoreply else 'off'}: fetch+store {n:,} in {fetch_s:.2f} s → {n / fetch_s:,.0f} msg/s; "
                  f"filing {len(report.created):,} tickets in {file_s:.2f} s → {n / file_s:,.0f} msg/s "
                  f"(CPU per message: {1000 * file_cpu / n:.2f} ms filing + {1000 * workers_cpu / n:.2f} ms parser "
                  f"processes); end to end {n / (fetch_s + file_s):,.0f} msg/s")
            database.close()
            with IMAPClient(account.host, port=account.port, ssl=False) as client:
                client.login(account.user, account.password)
                client.select_folder("INBOX")
                client.remove_flags(client.search("ALL"), ["$SupportdeskStored"])
    finally:
        server.stop()


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the parser pool, once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
