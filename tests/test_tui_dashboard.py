"""The dashboard screen driven with Textual's Pilot at 80×24: opened with its key, live, safe text."""

from __future__ import annotations

import asyncio

from supportdesk.config import Settings
from supportdesk.models import MailboxState
from supportdesk.permissions import set_agent_queues
from supportdesk.tickets import create_ticket
from supportdesk.tui.app import SupportDeskApp, help_sections
from supportdesk.tui.screens.dashboard import DashboardScreen
from supportdesk.tui.screens.queue import QueueScreen
from tests.test_tui import screen_text, settle, wait_for

SIZE = (80, 24)
EVIL = "[bold red]x[/b] \x1b]0;pwned\x07"


def new_ticket(database, actor, subject="Printer on fire", queue="General"):
    with database.write() as session:
        return create_ticket(session, actor, requester_email="bob@acme.test", subject=subject, body="Help!",
                             queue=queue).id


def run(database, scenario, login="alice", **kw):
    async def main():
        app = SupportDeskApp(database, Settings(), login, poll_seconds=kw.pop("poll", 30.0), **kw)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await scenario(app, pilot)
            await settle(app, pilot)
    asyncio.run(main())


def line(app, label: str) -> str:
    return next((ln for ln in screen_text(app).splitlines() if ln.strip().startswith(label)), "")


def test_dashboard_opens_with_its_key_and_shows_todays_numbers(database, alice):
    for i in range(3):
        new_ticket(database, alice, subject=f"T{i}")
    with database.write() as session:
        session.add(MailboxState(mailbox=EVIL, last_error="boom [red]x[/]", last_fetch_at=None))

    async def scenario(app, pilot):
        await pilot.press("D")
        await settle(app, pilot)
        assert isinstance(app.screen, DashboardScreen)
        text = screen_text(app)
        assert "Today " in text
        assert line(app, "Created today").split()[-1] == "3"
        assert line(app, "Open backlog").split()[2] == "3"
        assert line(app, "Unassigned").split()[-1] == "3"
        assert "[bold red]x[/b]" in text and "boom [red]x[/]" in text  # shown as text, never as markup
        assert "\x1b" not in text
        # another commit reaches the front screen without a keypress
        new_ticket(database, alice, subject="Arrived")
        app.notify_local_change()
        assert await wait_for(pilot, lambda: line(app, "Created today").split()[-1] == "4")
        await pilot.press("R")
        await settle(app, pilot)
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("D")
        await settle(app, pilot)
        await pilot.press("q")
        assert isinstance(app.screen, QueueScreen) and app.is_running

    run(database, scenario)


def test_dashboard_counts_only_the_agents_queues_and_is_in_help_and_palette(database, alice):
    new_ticket(database, alice, subject="General one")
    new_ticket(database, alice, subject="Billing one", queue="Billing")
    with database.write() as session:
        set_agent_queues(session, "bob", ["Billing"])

    async def scenario(app, pilot):
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Dashboard")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert line(app, "Created today").split()[-1] == "1"
        await pilot.press("question_mark")
        await pilot.pause()
        help_text = screen_text(app)
        assert "Dashboard" in help_text and "Refresh" in help_text

    run(database, scenario, login="bob")
    rows = dict((title, r) for title, r in help_sections())
    assert ("esc, q", "Back") in rows["Dashboard"]
    assert ("D", "Dashboard (today's numbers)") in rows["Queue list"]


def test_dashboard_key_is_remappable(database, alice):
    new_ticket(database, alice)

    async def main():
        app = SupportDeskApp(database, Settings(console_keys={"queue.dashboard": "f9"}), "alice", poll_seconds=30.0)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("D")
            await settle(app, pilot)
            assert isinstance(app.screen, QueueScreen)
            await pilot.press("f9")
            await settle(app, pilot)
            assert isinstance(app.screen, DashboardScreen)
    asyncio.run(main())
