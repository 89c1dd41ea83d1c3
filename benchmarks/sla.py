"""SLA figures: recompute due times for 100,000 open tickets, then one `sla check` pass.

    .venv/bin/python benchmarks/sla.py [--tickets 100000]

Prints figures; not a test.  Targets (issue 6): recompute < 10 s, `sla check` < 1 s.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from supportdesk.automation import run_timers
from supportdesk.config import parse_settings
from supportdesk.db import Database
from supportdesk.models import Ticket
from supportdesk.sla.policy import recompute
from supportdesk.tickets import Actor, add_agent, ensure_queue
from supportdesk.transfer import check_record, import_tickets

CONFIG = {
    "calendar": [{"name": "office", "timezone": "Europe/Berlin", "holidays_country": "DE",
                  "hours": {d: ["09:00-12:00", "13:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}}],
    "sla": [
        {"name": "urgent", "match": "priority:urgent", "calendar": "office", "first_response": 60,
         "next_response": 120, "resolution": 480},
        {"name": "default", "calendar": "office", "first_response": 480, "next_response": 960, "resolution": 4800},
    ],
    "escalation": [{"name": "near", "match": "sla:due<30m", "set": {"priority": "urgent"}}],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sd-sla-"))
    database = Database(f"sqlite:///{work / 'desk.db'}")
    database.upgrade()
    settings = parse_settings(CONFIG)
    rng = random.Random(5)
    now = datetime.now(timezone.utc)
    records = []
    for i in range(args.tickets):
        created = now - timedelta(minutes=rng.randint(10, 60 * 24 * 20))
        messages = [{"kind": "inbound", "from": f"c{i}@acme.test", "body_text": "help", "created_at": created.isoformat()}]
        if i % 2:
            messages.append({"kind": "outbound", "from": "support@x.test", "body_text": "on it",
                             "created_at": (created + timedelta(minutes=30)).isoformat(), "delivery": "sent"})
        records.append(check_record({
            "subject": f"t{i}", "requester": f"c{i}@acme.test", "created_at": created.isoformat(),
            "status": rng.choice(["new", "open", "open", "pending"]),
            "priority": rng.choice(["low", "normal", "high", "urgent"]), "messages": messages,
        }))
    with database.write() as session:
        ensure_queue(session, "General", "support@x.test")
        add_agent(session, "bench")
        import_tickets(session, records, Actor("bench"))
    with database.read() as session:
        ids = list(session.execute(sa.select(Ticket.id)).scalars())
    start = time.perf_counter()
    with database.write() as session:
        recompute(session, settings, ids, now)
    elapsed = time.perf_counter() - start
    with database.read() as session:
        with_due = session.execute(sa.select(sa.func.count()).where(Ticket.resolution_due.is_not(None))).scalar()
    print(f"recompute {len(ids):,} open tickets: {elapsed:.2f} s ({with_due:,} with a resolution due) (target < 10 s)")
    run_timers(database, settings, now)  # first pass fires and records what is already due
    start = time.perf_counter()
    report = run_timers(database, settings, now)
    print(f"`sla check` pass over them (nothing new to fire): {time.perf_counter() - start:.2f} s, "
          f"{len(report.fired)} fired (target < 1 s)")


if __name__ == "__main__":
    main()
