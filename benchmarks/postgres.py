"""PostgreSQL figures: import, `db migrate-to` from SQLite, selective list, full-text search,
and the cost of the console's change marker.

    eval "$(scripts/postgres-test-cluster env)"
    .venv/bin/python benchmarks/postgres.py [--tickets 20000] [--messages 3] [--url postgresql+psycopg://…]
    scripts/postgres-test-cluster stop "$PG_TEST_DIR"

Prints figures; it is not a test.  The URL names a server: the script creates and drops its
own databases there (default: $SUPPORTDESK_TEST_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import WORDS, make_dump, timed  # noqa: E402

from supportdesk.db import Database  # noqa: E402
from supportdesk.listing import ticket_ids, ticket_summaries  # noqa: E402
from supportdesk.migrate import migrate_to  # noqa: E402
from supportdesk.query import QueryContext, parse_query  # noqa: E402
from supportdesk.tickets import Actor, add_agent, ensure_queue  # noqa: E402
from supportdesk.transfer import import_tickets, read_import_file  # noqa: E402


def fresh(admin: sa.Engine, server: str, name: str) -> str:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def prepare(database: Database) -> Actor:
    database.upgrade()
    with database.write() as session:
        for q in ("General", "Billing", "Technical"):
            ensure_queue(session, q, "support@x.test")
        add_agent(session, "bench", role="admin")
    return Actor("bench", 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("SUPPORTDESK_TEST_DATABASE_URL"))
    args = parser.parse_args()
    if not args.url:
        sys.exit("give --url postgresql+psycopg://USER@HOST:PORT/DB (or set SUPPORTDESK_TEST_DATABASE_URL)")
    work = Path(tempfile.mkdtemp(prefix="sd-pg-bench-"))
    dump = work / "tickets.jsonl"
    make_dump(dump, args.tickets, args.messages, random.Random(1))
    records, _ = read_import_file(str(dump))
    print(f"machine: {os.cpu_count()} cores; {args.tickets:,} tickets × {args.messages} messages")
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    pg = Database(fresh(admin, args.url, "sd_bench_import"))
    actor = prepare(pg)

    def do_import():
        with pg.write() as session:
            return import_tickets(session, records, actor)

    t, result = timed("import", do_import)
    print(f"import into PostgreSQL: {result.tickets:,} tickets, {result.messages:,} messages in {t:.2f} s "
          f"→ {result.tickets / t:,.0f} tickets/s")
    pg.close()

    lite = Database(f"sqlite:///{work / 'bench.db'}")
    actor = prepare(lite)
    with lite.write() as session:
        import_tickets(session, records, actor)
    target = fresh(admin, args.url, "sd_bench_migrated")
    t, summary = timed("migrate", lambda: migrate_to(lite, target))
    print(f"db migrate-to: {summary.total:,} rows in {t:.2f} s → {summary.total / t:,.0f} rows/s")
    lite.close()

    database = Database(target)
    with database.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    ctx = QueryContext(me="bench")
    for text in ("status:open priority:>=high queue:billing", "tag:spam -status:closed", "from:@company7.test"):
        def listing(text=text):
            with database.read() as session:
                return ticket_summaries(session, ticket_ids(session, parse_query(text), ctx, limit=100), ctx.now)
        t, rows = timed("list", listing, repeat=5)
        print(f"list {text!r} (first 100 with JSON fields): {t * 1000:.1f} ms, {len(rows)} rows")
    common, medium, rare = WORDS[0], WORDS[100], WORDS[2500]
    for text in ("ref4242x0", rare, medium, f"{medium} {WORDS[150]}", f'"{WORDS[1]} {WORDS[2]}"', f"{medium[:4]}*",
                 common):
        def search(text=text):
            with database.read() as session:
                return ticket_ids(session, parse_query(text), ctx, limit=100)
        t, rows = timed("search", search, repeat=5)
        print(f"search {text!r}: {t * 1000:.1f} ms, {len(rows)} hits shown")
    database.data_version()
    start = time.perf_counter()
    for _ in range(1000):
        database.data_version()
    print(f"data_version() (LISTEN connection, nothing pending): {(time.perf_counter() - start):.3f} ms per call")
    database.close()
    with admin.connect() as conn:
        for name in ("sd_bench_import", "sd_bench_migrated"):
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


if __name__ == "__main__":
    main()
