"""SLA figures: recompute due times for 100,000 open tickets, then one `sla check` pass.

    .venv/bin/python benchmarks/sla.py [--tickets 100000]

Prints figures; not a test.  Targets (issue 6): recompute < 10 s, `sla check` < 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from supportdesk.automation import run_timers
from supportdesk.config import parse_settings
from supportdesk.db import Database
from supportdesk.models import Ticket, TicketSlaTarget
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


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the forked recompute workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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
    def timed(label: str, config, **kw) -> None:
        wall, cpu = time.perf_counter(), cpu_seconds()
        with database.write() as session:
            changed = recompute(session, config, ids, now, **kw)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        print(f"recompute {len(ids):,} open tickets, {label}: {wall:.2f} s wall, {cpu:.2f} s CPU "
              f"({changed:,} changed) (target < 10 s)")

    timed("first computation (imported without the hook)", settings)
    timed("nothing changed", settings)
    changed_policy = parse_settings({**CONFIG, "sla": [
        {**p, **{t: p[t] * 3 // 2 for t in ("first_response", "next_response", "resolution")}} for p in CONFIG["sla"]]})
    timed("after a policy change", changed_policy)
    timed("policy changed back, 2 forked workers (as `sla recompute` on 2 cores)", settings, workers=2)
    with database.read() as session:
        with_due = session.execute(sa.select(sa.func.count()).where(Ticket.resolution_due.is_not(None))).scalar()
        recorded = session.execute(sa.select(sa.func.count()).select_from(TicketSlaTarget)).scalar()
    print(f"{with_due:,} tickets with a resolution due, {recorded:,} recorded target rows")
    run_timers(database, settings, now)  # first pass fires and records what is already due
    start, cpu = time.perf_counter(), time.process_time()
    report = run_timers(database, settings, now)
    print(f"`sla check` pass over them (nothing new to fire): {time.perf_counter() - start:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU, {len(report.fired)} fired (target < 1 s)")
    start, cpu = time.perf_counter(), time.process_time()
    report = run_timers(database, settings, now + timedelta(minutes=30))
    print(f"`sla check` 30 minutes later: {time.perf_counter() - start:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU, {report.breaches_recorded:,} breaches recorded, "
          f"{len(report.fired):,} fired")


if __name__ == "__main__":
    main()
