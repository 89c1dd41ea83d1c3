"""Snapshots of the queue, ticket and compose screens at 80×24 (pytest-textual-snapshot).

The data is the seeded demo (fixed seed, fixed anchor) and the console's clock is
frozen at that anchor, so ages and SLA countdowns never move.  After an intended
change to a screen, look at the diff report pytest writes (snapshot_report.html),
then regenerate the pictures and commit `tests/__snapshots__/test_tui_snapshots/`:

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from supportdesk.db import Database
from supportdesk.demo import demo_settings, seed
from supportdesk.tui.app import SupportDeskApp

ANCHOR = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
SIZE = (80, 24)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Timestamps the console shows in local time are the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def demo_app(db_path):
    database = Database(f"sqlite:///{db_path}")
    with database.write() as session:
        seed(session, me="alice", tickets=40, anchor=ANCHOR)

    def make() -> SupportDeskApp:
        # poll_seconds high: nothing else writes, and a refresh mid-snapshot would only add noise.
        return SupportDeskApp(database, demo_settings(f"sqlite:///{db_path}"), "alice", poll_seconds=30.0,
                              clock=lambda: ANCHOR)
    yield make
    database.close()


async def settle(pilot) -> None:
    """Let the one-shot workers (counts, health, pages) finish and the screen repaint.

    Workers may start further workers (a page fetch after the counts), so wait until none is
    left. The change watcher runs for the app's lifetime, so it is left out of the wait."""
    for _ in range(100):
        await pilot.pause(0.05)
        busy = [w for w in pilot.app.workers if w.group != "watch" and not w.is_finished]
        if not busy and pilot.app.focused is not None:
            # The footer lists the focused widget's keys; it recomposes after a focus change.
            await pilot.pause(0.1)
            await pilot.pause(0.1)
            return
        if busy:
            await pilot.app.workers.wait_for_complete(busy)
    raise AssertionError(f"workers still running: {busy}")


def test_queue_screen(snap_compare, demo_app):
    async def table_focused(pilot) -> None:
        await settle(pilot)
        assert pilot.app.focused is pilot.app.screen.table  # focusable while it reads: no start-up race

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=table_focused)


def test_ticket_screen(snap_compare, demo_app):
    async def open_first(pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=open_first)


def test_compose_screen(snap_compare, demo_app):
    async def reply_to_first(pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        await pilot.press(*"Thanks", "comma", "space", *"looking", "space", *"into", "space", *"it", "full_stop")
        await settle(pilot)

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=reply_to_first)
