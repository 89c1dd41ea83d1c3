"""Two consoles on one SQLite file see each other's changes, and the CLI's, within 2 s without a keypress.

Each console has its own `Database` (its own engine and connections), as two agents'
processes would; the consoles poll `PRAGMA data_version` at their default interval.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import sqlalchemy as sa

from supportdesk.config import Settings
from supportdesk.db import Database
from supportdesk.tickets import create_ticket
from supportdesk.tui.app import SupportDeskApp
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.screens.ticket import TicketScreen
from supportdesk.tui.widgets.ticket_table import TicketTable

SIZE = (100, 30)
WITHIN = 2.0


def table_text(app) -> str:
    table = app.screen.query_one(TicketTable)
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def row_of(app, ticket_id: int) -> str:
    return next((line for line in table_text(app).splitlines() if line.split()[:1] == [str(ticket_id)]), "")


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def seen_within(pilot, condition, seconds: float = WITHIN) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `seconds`; no keys are pressed."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        await pilot.pause(0.02)
    return None


def consoles(db_path: Path, *logins: str):
    """Run one Pilot-driven console per login, all on the same file; yields (app, pilot) pairs."""
    class Consoles:
        async def __aenter__(self):
            self.stack = AsyncExitStack()
            self.databases = [Database(f"sqlite:///{db_path}") for _ in logins]
            pairs = []
            for database, login in zip(self.databases, logins):
                app = SupportDeskApp(database, Settings(), login)
                pilot = await self.stack.enter_async_context(app.run_test(size=SIZE))
                pairs.append((app, pilot))
            for app, pilot in pairs:
                await seen_within(pilot, lambda app=app: row_of(app, 1), 5.0)
            return pairs

        async def __aexit__(self, *exc):
            await self.stack.aclose()
            for database in self.databases:
                database.close()

    return Consoles()


def test_a_close_in_one_console_shows_in_the_other(database, db_path, alice):
    with database.write() as session:
        for subject in ("Printer on fire", "Coffee machine", "Badge reader"):
            create_ticket(session, alice, requester_email="bob@acme.test", subject=subject, body="Help!")

    async def main():
        async with consoles(db_path, "alice", "bob") as [(a, pa), (b, pb)]:
            top = a.screen.query_one(TicketTable).current_row().id
            assert "clsd" not in row_of(b, top)
            await pa.press("c")
            waited = await seen_within(pb, lambda: "clsd" in row_of(b, top))
            assert waited is not None, f"bob's console never showed #{top} closed:\n{table_text(b)}"

            await pb.press("j", "A")
            second = b.screen.query_one(TicketTable).current_row().id
            waited = await seen_within(pa, lambda: "bob" in row_of(a, second))
            assert waited is not None, f"alice's console never showed #{second} assigned to bob:\n{table_text(a)}"
            assert isinstance(a.screen, QueueScreen) and isinstance(b.screen, QueueScreen)

    asyncio.run(main())
    with database.read() as session:
        from supportdesk.models import Agent, Ticket

        assert session.get(Ticket, 3).status == "closed"
        bob_id = session.execute(sa.select(Agent.id).where(Agent.login == "bob")).scalar()
        assert session.get(Ticket, 2).assignee_id == bob_id


def test_cli_write_shows_in_two_consoles_and_an_open_ticket(database, db_path, alice, cli_env, tmp_path):
    """A CLI process (another agent, the daemon) writes; both consoles follow, one of them on the ticket itself."""
    with database.write() as session:
        create_ticket(session, alice, requester_email="carol@acme.test", subject="Older one", body="Old.")
        create_ticket(session, alice, requester_email="dan@acme.test", subject="VPN down", body="No VPN.")
    exe = Path(sys.executable).parent / "supportdesk"
    note = tmp_path / "note.txt"
    note.write_text("Rebooted the VPN concentrator.", encoding="utf-8")

    def cli(*args: str) -> None:
        result = subprocess.run([str(exe), "--as", "alice", *args], capture_output=True, text=True, timeout=60,
                                env={**os.environ, **cli_env})
        assert result.returncode == 0, result.stderr

    async def main():
        async with consoles(db_path, "alice", "bob") as [(a, pa), (b, pb)]:
            await pb.press("enter")
            assert await seen_within(pb, lambda: isinstance(b.screen, TicketScreen) and "No VPN." in screen_text(b))
            assert b.screen.ticket_id == 2

            await asyncio.to_thread(cli, "tickets", "note", "2", "--body-file", str(note))
            waited = await seen_within(pb, lambda: "Rebooted the VPN concentrator." in screen_text(b))
            assert waited is not None, f"the open ticket never showed the note:\n{screen_text(b)}"

            await asyncio.to_thread(cli, "tickets", "create", "--from", "erin@acme.test", "--subject", "Walk-in",
                                    "--body-file", str(note))
            waited = await seen_within(pa, lambda: "Walk-in" in table_text(a))
            assert waited is not None, f"alice's queue never showed the new ticket:\n{table_text(a)}"

            await pb.press("escape")
            waited = await seen_within(pb, lambda: "Walk-in" in table_text(b))
            assert waited is not None, f"bob's queue never showed the new ticket:\n{table_text(b)}"

    asyncio.run(main())
