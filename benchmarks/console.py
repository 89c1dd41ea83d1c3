"""Console figures at scale: first paint, moving in the queue, opening a ticket, memory.

    .venv/bin/python benchmarks/console.py [--tickets 100000] [--dir DIR]

Prints figures; it is not a test.  Targets (2 cores): first paint ≤ 1 s with
100,000 tickets; moving and opening a ticket < 50 ms; memory < 200 MB.
Pilot's own per-key overhead (it waits for the screen to settle) is reported
apart from the console's work per key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
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
    with database.read() as session:
        session.execute(__import__("sqlalchemy").text("ANALYZE"))
    database.close()
    dump.unlink()
    print(f"seeded {tickets:,} tickets in {time.perf_counter() - start:.1f} s")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def measure(db_path: Path) -> None:
    from supportdesk.config import Settings
    from supportdesk.db import Database
    from supportdesk.tui.app import SupportDeskApp
    from supportdesk.tui.data import load_ticket
    from supportdesk.tui.screens.ticket import TicketScreen
    from supportdesk.tui.widgets.ticket_table import TicketTable

    database = Database(f"sqlite:///{db_path}")
    start = time.perf_counter()
    app = SupportDeskApp(database, Settings(), "bench", poll_seconds=1.0)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(TicketTable)
        while not (table.pager and table.pager.total and table.pager.pages):
            await pilot.pause(0.005)
        print(f"first paint (app start → table rows drawn, headless 80×24, {table.pager.total:,} rows): "
              f"{ms(time.perf_counter() - start)} (target ≤ 1 s)")
        await pilot.pause(0.5)

        def key_work(action) -> float:
            """The console's own work for one key: the action, then drawing every visible line."""
            t = time.perf_counter()
            action()
            for y in range(table.size.height):
                table.render_line(y)
            return time.perf_counter() - t

        moves = [key_work(lambda: table.action_cursor(1)) for _ in range(200)]
        print(f"j (move down), console work per key: median {ms(sorted(moves)[100])}, worst {ms(max(moves))}")
        pages = [key_work(lambda: table.action_page(1)) for _ in range(50)]
        print(f"pagedown into unread pages (keyset): median {ms(sorted(pages)[25])}, worst {ms(max(pages))}")
        jump = key_work(lambda: table.action_jump(-1))
        print(f"end (OFFSET jump to row {table.cursor:,}): {ms(jump)}")
        back = key_work(lambda: table.action_jump(0))
        print(f"home (cached page): {ms(back)}")

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
        opens = []
        for _ in range(5):
            t = time.perf_counter()
            table.action_open()
            while not isinstance(app.screen, TicketScreen) or not app.screen.query(".msg"):
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            opens.append(time.perf_counter() - t)
            app.pop_screen()
            await pilot.pause(0.2)
        print(f"open ticket, enter → screen composed and thread mounted: median {ms(sorted(opens)[2])} "
              f"(target < 50 ms)")

        t = time.perf_counter()
        table.reload()
        print(f"live refresh of the queue after a change (recount + visible page): {ms(time.perf_counter() - t)}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS) of the process: {rss:.0f} MB (target < 200 MB)")
    database.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep an existing bench database in --dir")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="sd-console-"))
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "console.db"
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.tickets:,} tickets")
    if not (args.reuse and db_path.exists()):
        for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            p.unlink(missing_ok=True)
        seed(db_path, args.tickets)
        # Measure in a fresh process, so seeding's memory does not count as the console's.
        import subprocess

        subprocess.run([sys.executable, __file__, "--dir", str(work), "--reuse"], check=True)
        return
    asyncio.run(measure(db_path))


if __name__ == "__main__":
    main()
