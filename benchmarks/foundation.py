"""Foundation figures: import, selective list, bulk close and full-text search at scale.

    .venv/bin/python benchmarks/foundation.py [--tickets 100000] [--messages 3] [--dir DIR]

Prints figures; it is not a test.  Targets (2 cores): import ≥ 5,000 tickets/s,
selective list < 200 ms, bulk close of 100,000 < 5 s, search < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from supportdesk.db import Database
from supportdesk.listing import ticket_ids, ticket_summaries
from supportdesk.query import QueryContext, parse_query
from supportdesk.tickets import Actor, Changes, add_agent, bulk_update, ensure_queue
from supportdesk.transfer import import_tickets, read_import_file

SYLLABLES = "ka lo mi ne ru sa te vo pi da fe gu ho ji ba".split()
WORDS = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES][:3000]
WEIGHTS = [1 / (rank + 1) ** 1.07 for rank in range(len(WORDS))]  # Zipf-like, as in real text


def make_dump(path: Path, tickets: int, messages: int, rng: random.Random) -> None:
    now = datetime.now(timezone.utc)
    with path.open("w", encoding="utf-8") as out:
        for i in range(tickets):
            created = now - timedelta(minutes=rng.randint(1, 60 * 24 * 365))
            requester = f"user{rng.randint(1, 20000)}@company{rng.randint(1, 2000)}.test"
            subject = " ".join(rng.choices(WORDS, WEIGHTS, k=5))
            thread = []
            for m in range(messages):
                when = created + timedelta(minutes=30 * m)
                thread.append({
                    "kind": "inbound" if m % 2 == 0 else "outbound", "from": requester if m % 2 == 0 else "support@x.test",
                    "to": [], "cc": [], "subject": subject, "created_at": when.isoformat(),
                    "body_text": " ".join(rng.choices(WORDS, WEIGHTS, k=60)) + f" ref{i}x{m}",
                })
            out.write(json.dumps({
                "id": i + 1, "subject": subject, "requester": requester,
                "status": rng.choices(["new", "open", "pending", "solved", "closed"], [10, 30, 15, 20, 25])[0],
                "priority": rng.choices(["low", "normal", "high", "urgent"], [20, 60, 15, 5])[0],
                "queue": rng.choice(["General", "Billing", "Technical"]), "channel": "email",
                "tags": ["spam"] if i % 10 == 0 else [], "created_at": created.isoformat(), "messages": thread,
            }) + "\n")


def timed(label: str, fn, repeat: int = 1):
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="sd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    dump = work / "tickets.jsonl"
    db_path = work / "bench.db"
    for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        p.unlink(missing_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.tickets:,} tickets × {args.messages} messages")
    t, _ = timed("dump", lambda: make_dump(dump, args.tickets, args.messages, rng))
    print(f"generated JSONL ({dump.stat().st_size / 1e6:.0f} MB) in {t:.1f} s")

    database = Database(f"sqlite:///{db_path}")
    database.upgrade()
    with database.write() as session:
        for q in ("General", "Billing", "Technical"):
            ensure_queue(session, q, "support@x.test")
        add_agent(session, "bench", role="admin")
    actor = Actor("bench", 1)

    def do_import():
        records, _ = read_import_file(str(dump))
        with database.write() as session:
            return import_tickets(session, records, actor)

    t, result = timed("import", do_import)
    print(f"import: {result.tickets:,} tickets, {result.messages:,} messages in {t:.2f} s "
          f"→ {result.tickets / t:,.0f} tickets/s (target ≥ 5,000)")

    ctx = QueryContext(me="bench")
    with database.read() as session:
        session.execute(__import__("sqlalchemy").text("ANALYZE"))
    for text in ("status:open priority:>=high queue:billing", "tag:spam -status:closed", "from:@company7.test",
                 "status:new,open created:<30d"):
        def listing(text=text):
            with database.read() as session:
                ids = ticket_ids(session, parse_query(text), ctx, limit=100)
                return ticket_summaries(session, ids, ctx.now)
        t, rows = timed("list", listing, repeat=5)
        print(f"list {text!r} (first 100 with JSON fields): {t * 1000:.1f} ms, {len(rows)} rows (target < 200 ms)")

    common, medium, rare = WORDS[0], WORDS[100], WORDS[2500]
    for text in ("ref4242x0", rare, medium, f"{medium} {WORDS[150]}", f'"{WORDS[1]} {WORDS[2]}"',
                 f"{medium} -status:closed", f"{common} (in most tickets: worst case)"):
        text = text.split(" (")[0]
        def search(text=text):
            with database.read() as session:
                return ticket_ids(session, parse_query(text), ctx, limit=100)
        t, rows = timed("search", search, repeat=5)
        print(f"search {text!r}: {t * 1000:.1f} ms, {len(rows)} hits shown (target < 100 ms)")

    env = dict(os.environ, SUPPORTDESK_DB=str(db_path), SUPPORTDESK_CONFIG=str(work / "none.toml"),
               SUPPORTDESK_ALLOW_AS="1")  # act as the seeded agent "bench", whoever runs this
    (work / "none.toml").write_text("", encoding="utf-8")
    exe = str(Path(sys.executable).parent / "supportdesk")
    start = time.perf_counter()
    out = subprocess.run([exe, "--as", "bench", "tickets", "list", "status:open priority:>=high queue:billing",
                          "--limit", "50", "--format", "json"], env=env, capture_output=True, text=True)
    print(f"CLI `tickets list … --limit 50 --format json` end to end: {(time.perf_counter() - start) * 1000:.0f} ms "
          f"(exit {out.returncode}; includes interpreter start and imports)")

    with database.read() as session:
        all_ids = ticket_ids(session, parse_query(""), ctx, sort="id")

    def close_all():
        with database.write() as session:
            return bulk_update(session, all_ids, Changes(status="closed"), actor)

    t, changed = timed("close", close_all)
    print(f"bulk close: {changed:,} tickets changed (of {len(all_ids):,}) in {t:.2f} s (target < 5 s)")
    start = time.perf_counter()
    out = subprocess.run([exe, "--as", "bench", "tickets", "update", "--query", "status:closed", "--status", "open",
                          "--yes"], env=env, capture_output=True, text=True)
    print(f"CLI `tickets update --query status:closed --status open --yes`: {time.perf_counter() - start:.2f} s "
          f"({out.stdout.strip() or out.stderr.strip()})")
    database.close()
    print(f"database: {db_path.stat().st_size / 1e6:.0f} MB at {db_path}")


if __name__ == "__main__":
    main()
