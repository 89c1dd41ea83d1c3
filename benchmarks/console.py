"""Console figures at scale: first paint, moving in the queue, opening a ticket, memory.

    .venv/bin/python benchmarks/console.py [--tickets 100000] [--dir DIR] [--fresh] [--cache-kib N]

Prints figures; it is not a test.  The seeded database is kept (by default in
$TMPDIR/sd-console-N) and reused by the next run: seeding 1,000,000 tickets takes ~4 min.  Targets (2 cores): first paint ≤ 1 s with
100,000 tickets; moving and opening a ticket < 50 ms; memory < 200 MB.
Pilot's own per-key overhead (it waits for the screen to settle) is reported
apart from the console's work per key.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

WORDS = ("invoice refund login password export timeout printer order shipping account upgrade contract "
         "billing error crash slow report api webhook mobile android iphone browser cookie session").split()


def make_dump(path: Path, tickets: int, rng: random.Random) -> None:
    now = datetime.now(timezone.utc)
    with path.open("w", encoding="utf-8") as out:
        for i in range(tickets):
            created = now - timedelta(minutes=rng.randint(1, 60 * 24 * 365))
            requester = f"user{rng.randint(1, 20000)}@company{rng.randint(1, 2000)}.test"
            subject = " ".join(rng.choices(WORDS, k=4))
            body = " ".join(rng.choices(WORDS, k=40)) + "\n\nOn Mon, Support wrote:\n> " + " ".join(WORDS[:8])
            out.write(json.dumps({
                "id": i + 1, "subject": subject, "requester": requester,
                "status": rng.choices(["new", "open", "pending", "solved", "closed"], [10, 30, 15, 20, 25])[0],
                "priority": rng.choices(["low", "normal", "high", "urgent"], [20, 60, 15, 5])[0],
                "queue": rng.choice(["General", "Billing", "Technical"]), "channel": "email",
                "assignee": rng.choice([None, "bench"]), "tags": [], "created_at": created.isoformat(),
                "messages": [{"kind": "inbound", "from": requester, "to": [], "cc": [], "subject": subject,
                              "created_at": created.isoformat(), "body_text": body}],
            }) + "\n")


def seed(db_path: Path, tickets: int) -> None:
    from supportdesk.db import Database
    from supportdesk.tickets import Actor, add_agent, ensure_queue
    from supportdesk.transfer import import_tickets, read_import_file

    dump = db_path.with_suffix(".jsonl")
    make_dump(dump, tickets, random.Random(1))
    database = Database(f"sqlite:///{db_path}")
    database.upgrade()
    with database.write() as session:
        for q in ("General", "Billing", "Technical"):
            ensure_queue(session, q, "support@x.test")
        add_agent(session, "bench", role="admin")
    records, _ = read_import_file(str(dump))
    start = time.perf_counter()
    with database.write() as session:
        import_tickets(session, records, Actor("bench", 1))
    database.analyze()  # as `tickets import` does
    database.close()
    dump.unlink()
    print(f"seeded {tickets:,} tickets in {time.perf_counter() - start:.1f} s")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rss_mb() -> float:
    """Resident memory now (not the peak), from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's own peak (VmHWM).  Not ru_maxrss: Linux carries that over from the parent
    across fork+exec, so after seeding in the parent it reported the seeder's memory (152–392 MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def until(condition, seconds: float = 30.0) -> None:
    deadline = time.perf_counter() + seconds
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the console never got there")
        await asyncio.sleep(0.0005)


async def measure(db_path: Path, cache_kib: int | None) -> None:
    import supportdesk.db
    from supportdesk.config import Settings
    from supportdesk.db import Database
    from supportdesk.tui.app import SupportDeskApp
    from supportdesk.tui.data import load_ticket
    from supportdesk.tui.screens.ticket import TicketScreen
    from supportdesk.tui.widgets.ticket_table import TicketTable

    if cache_kib is not None:
        supportdesk.db.CACHE_KIB = cache_kib
    print(f"SQLite cache per connection: {supportdesk.db.CACHE_KIB:,} KiB; RSS after imports {rss_mb():.0f} MB")
    database = Database(f"sqlite:///{db_path}")
    start = time.perf_counter()
    app = SupportDeskApp(database, Settings(), "bench", poll_seconds=1.0, quiet_gc=True)  # as `supportdesk` runs it
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(TicketTable)

        def drawn() -> bool:
            """Every row in sight is loaded (the table draws from its cache, pages come from workers)."""
            pager = table.pager
            if not pager or not pager.total or table.size.height == 0:
                return False
            top = int(table.scroll_offset.y)
            return all(pager.cached(i) for i in range(top, min(pager.total, top + table.size.height)))

        await until(drawn)
        print(f"first paint (app start → table rows drawn, headless 80×24, {table.pager.total:,} rows): "
              f"{ms(time.perf_counter() - start)} (target ≤ 1 s)")
        await pilot.pause(1.0)

        async def key(action) -> float:
            """One key's work: the action, its page read if any, then drawing every visible line."""
            t = time.perf_counter()
            action()
            await until(drawn)
            for y in range(table.size.height):
                table.render_line(y)
            return time.perf_counter() - t

        moves = [await key(lambda: table.action_cursor(1)) for _ in range(200)]
        print(f"j (move down): median {ms(sorted(moves)[100])}, worst {ms(max(moves))}")
        pages = [await key(lambda: table.action_page(1)) for _ in range(50)]
        print(f"pagedown into unread pages (keyset): median {ms(sorted(pages)[25])}, worst {ms(max(pages))}")
        jump = await key(lambda: table.action_jump(-1))
        print(f"end (OFFSET jump to row {table.cursor:,}): {ms(jump)}")
        back = await key(lambda: table.action_jump(0))
        print(f"home (first page): {ms(back)}")

        t = time.perf_counter()
        await pilot.press("j")
        print(f"j through Pilot (includes Pilot's settle wait): {ms(time.perf_counter() - t)}")

        row = table.current_row()
        loads = []
        for _ in range(20):
            t = time.perf_counter()
            load_ticket(database, row.id)
            loads.append(time.perf_counter() - t)
        print(f"open ticket, data (thread, customer's tickets, history): median {ms(sorted(loads)[10])}")
        painted: dict = {}
        real_display = app._display

        def display(screen, renderable) -> None:
            """Every frame the compositor hands to the (headless) driver passes here."""
            want = painted.get("want")
            if (renderable is not None and want is not None and "at" not in painted
                    and isinstance(screen, TicketScreen) and screen.view is not None
                    and screen.view.detail["id"] == want):
                painted["at"] = time.perf_counter()
                painted["event"].set()
            return real_display(screen, renderable)

        app._display = display

        async def open_ticket(rest: float) -> float:
            """enter → the first frame painted with the ticket in it.  Waits on an event set by the
            frame itself: polling the screen every 0.5 ms (as this script once did) slows the loop it measures."""
            table.action_cursor(1)
            await until(drawn)
            await pilot.pause(rest)
            painted.clear()
            painted.update(want=table.current_row().id, event=asyncio.Event())
            t = time.perf_counter()
            table.action_open()
            await asyncio.wait_for(painted["event"].wait(), 10)
            took = painted["at"] - t
            painted.clear()
            app.pop_screen()
            await pilot.pause(0.3)
            return took

        for label, rest in (("after the cursor rested (read ahead)", 0.3), ("straight after a move (no read-ahead)", 0.0)):
            opens = [await open_ticket(rest) for _ in range(15)]
            print(f"open ticket {label}, enter → first frame with the ticket: median {ms(sorted(opens)[7])}, "
                  f"worst {ms(max(opens))} (target < 50 ms)")

        def objects() -> int:
            gc.collect()
            return len(gc.get_objects()) + gc.get_freeze_count()

        before = objects()
        for _ in range(40):
            await open_ticket(0.0)
        middle = objects()
        for _ in range(40):
            await open_ticket(0.0)
        print(f"Python objects alive: {before:,} → {middle:,} after 40 more tickets opened → {objects():,} after 80 "
              f"(bounded caches fill, nothing piles up)")

        t = time.perf_counter()
        table.reload()
        await until(lambda: not any(w.group == "table-snapshot" and not w.is_finished for w in app.workers))
        print(f"live refresh of the queue after a change (recount + visible page): {ms(time.perf_counter() - t)}")
        await pilot.pause(3.0)  # let the sidebar counts (every view counted over all tickets) run
        print(f"RSS at the end: {rss_mb():.0f} MB; connections: {database.engine.pool.status()}")
    print(f"peak memory (RSS) of the process: {peak_rss_mb():.0f} MB (target < 200 MB)")
    database.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the seeded database is kept and reused (default: a folder per size in $TMPDIR)")
    parser.add_argument("--fresh", action="store_true", help="seed again even if a database is there")
    parser.add_argument("--cache-kib", type=int, default=None, help="override SQLite's cache per connection")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.dir or Path(tempfile.gettempdir()) / f"sd-console-{args.tickets}"
    db_path = work / "console.db"
    if args.measure_only:
        asyncio.run(measure(db_path, args.cache_kib))
        return
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.tickets:,} tickets in {db_path}")
    if args.fresh or not db_path.exists():
        for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            p.unlink(missing_ok=True)
        seed(db_path, args.tickets)
    from supportdesk.db import Database

    database = Database(f"sqlite:///{db_path}")
    database.upgrade()  # a database seeded by an older checkout gets the newer tables
    database.close()
    # Measure in a fresh process, so seeding's (and Alembic's) memory does not count as the console's.
    import subprocess

    command = [sys.executable, __file__, "--dir", str(work), "--measure-only"]
    if args.cache_kib is not None:
        command += ["--cache-kib", str(args.cache_kib)]
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
