"""Dashboard / `supportdesk stats` figures at scale: everyone, and agents limited to some queues.

    .venv/bin/python benchmarks/stats.py [--tickets 100000] [--source DB] [--work DB] [--runs 5]

Prints figures; it is not a test.  It never changes the seeded database: it copies
benchmarks/console.py's (by default $TMPDIR/sd-console-N/console.db, seeded there when
missing), upgrades the copy (timing the migrations it still needs, e.g. 0006's index) and
adds two limited agents to it.  The copy is kept and reused (`--fresh` copies again).
Target (issue #5): the dashboard's numbers in < 1 s at 1,000,000 tickets on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def prepare(source: Path, work: Path, fresh: bool) -> None:
    import sqlalchemy as sa

    from supportdesk.db import Database
    from supportdesk.permissions import set_agent_queues
    from supportdesk.models import Agent
    from supportdesk.tickets import add_agent

    if fresh or not work.exists():
        for p in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            p.unlink(missing_ok=True)
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(work) as dst:
            src.backup(dst)  # consistent even with a -wal beside the source
    database = Database(f"sqlite:///{work}")
    start = time.perf_counter()
    before, after = database.upgrade()
    if before != after:
        upgraded = time.perf_counter() - start
        database.analyze()  # as `supportdesk db upgrade` does
        print(f"upgraded {before} → {after} in {upgraded:.1f} s (+ ANALYZE {time.perf_counter() - start - upgraded:.1f} s)")
    with database.write() as session:
        for login, queues in (("one_queue", ["General"]), ("two_queues", ["General", "Billing"])):
            if session.execute(sa.select(Agent.id).where(Agent.login == login)).first() is None:
                add_agent(session, login)
            set_agent_queues(session, login, queues)
    database.close()


def measure(work: Path, runs: int) -> None:
    import sqlalchemy as sa

    from supportdesk.db import Database
    from supportdesk.permissions import visible_queue_ids
    from supportdesk.stats import today_stats

    database = Database(f"sqlite:///{work}")
    with database.read() as session:
        total = session.execute(sa.text("SELECT count(*) FROM tickets")).scalar()
    print(f"{total:,} tickets; today_stats (the dashboard's numbers), median of {runs} warm runs:")
    for login in ("bench", "one_queue", "two_queues"):
        with database.read() as session:
            queue_ids = visible_queue_ids(session, login)
        times = []
        for _ in range(runs + 1):  # the first run warms the page cache
            start = time.perf_counter()
            with database.read() as session:
                result = today_stats(session, queue_ids=queue_ids)
            times.append(time.perf_counter() - start)
        print(f"  {login:<11} ({'every queue' if queue_ids is None else f'{len(queue_ids)} queue(s)'}): "
              f"{statistics.median(times[1:]) * 1000:7.1f} ms (first {times[0] * 1000:.0f} ms); "
              f"backlog {result.open_total:,}, agents {len(result.agents)}")
    database.close()
    exe = Path(sys.executable).parent / "supportdesk"
    if exe.exists():
        for login in ("bench", "two_queues"):
            env = dict(os.environ, SUPPORTDESK_ALLOW_AS="1")
            start = time.perf_counter()
            subprocess.run([str(exe), "--db", str(work), "--as", login, "stats", "--format", "json"], env=env,
                           check=True, capture_output=True)
            print(f"  `supportdesk stats` as {login}, end to end (process start included): "
                  f"{time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--source", type=Path, default=None, help="a seeded database (default: console.py's)")
    parser.add_argument("--work", type=Path, default=None, help="the copy measured (default: $TMPDIR/sd-stats-N.db)")
    parser.add_argument("--fresh", action="store_true", help="copy the source again")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    source = args.source or Path(tempfile.gettempdir()) / f"sd-console-{args.tickets}" / "console.db"
    work = args.work or Path(tempfile.gettempdir()) / f"sd-stats-{args.tickets}.db"
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; source {source}, measured copy {work}")
    if not source.exists():
        from console import seed

        source.parent.mkdir(parents=True, exist_ok=True)
        seed(source, args.tickets)
    prepare(source, work, args.fresh)
    measure(work, args.runs)


if __name__ == "__main__":
    main()
