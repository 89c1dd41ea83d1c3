"""The console's ticket screen shows each SLA target's recorded state, not only the countdown."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from supportdesk.config import Settings, parse_settings
from supportdesk.sla import policy as sla_policy
from supportdesk.tickets import add_message, create_ticket, get_ticket
from supportdesk.tui.app import SupportDeskApp
from supportdesk.tui.screens.ticket import TicketScreen, sla_targets_text
from tests.samples import always_sla_data

UTC = timezone.utc
SETTINGS = parse_settings(always_sla_data(first_response=60, next_response=30, resolution=6000))


def test_target_lines_name_state_instant_and_business_time():
    text = sla_targets_text([
        {"target": "first_response", "cycle": 0, "state": "met", "due": "2026-11-23T10:00:00Z",
         "met_at": "2026-11-23T09:20:00Z", "breached_at": None, "used_minutes": 20.0, "target_minutes": 60.0},
        {"target": "next_response", "cycle": 1, "state": "breached", "due": "2026-11-23T10:00:00Z",
         "met_at": None, "breached_at": "2026-11-23T10:00:00Z", "used_minutes": 45.0, "target_minutes": 30.0},
        {"target": "resolution", "cycle": 0, "state": "running", "due": "2026-11-27T13:00:00Z",
         "met_at": None, "breached_at": None, "used_minutes": 0.0, "target_minutes": 6000.0},
    ])
    assert text.plain.splitlines() == [
        "first response met      11-23 09:20 (20/60 min)",
        "next response  breached 11-23 10:00 (45/30 min)",
        "resolution     running  11-27 13:00",
    ]
    assert [span.style for span in text.spans] == ["green", "bold red"]


def test_ticket_screen_shows_per_target_states(database, alice):
    sla_policy.install(database, SETTINGS)
    now = datetime.now(UTC)
    created = now - timedelta(minutes=200)
    with database.write() as session:
        tid = create_ticket(session, alice, requester_email="bob@acme.test", subject="Printer", body="Help",
                            created_at=created).id
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="outbound", body="On it",
                    created_at=created + timedelta(minutes=20))
    with database.write() as session:
        add_message(session, get_ticket(session, tid), alice, kind="inbound", body="Still broken",
                    created_at=created + timedelta(minutes=100))

    async def main():
        app = SupportDeskApp(database, Settings(), "alice", poll_seconds=30.0)
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(TicketScreen(tid))
            side = None
            for _ in range(100):
                await pilot.pause(0.05)
                if isinstance(app.screen, TicketScreen) and app.screen.view is not None:
                    side = str(app.screen.query_one("#side-text").content)
                    if "first response" in side:
                        break
            return side

    side = asyncio.run(main())
    lines = {line.split()[0]: line.split()[1:] for line in side.splitlines()
             if line.startswith(("first response", "next response", "resolution"))}
    met = (created + timedelta(minutes=20)).strftime("%m-%d %H:%M").split()
    breached = (created + timedelta(minutes=130)).strftime("%m-%d %H:%M").split()
    due = (created + timedelta(minutes=6000)).strftime("%m-%d %H:%M").split()
    assert lines["first"] == ["response", "met", *met, "(20/60", "min)"]
    assert lines["next"][:4] == ["response", "breached", *breached]  # reads breached before `sla check` ran
    assert lines["resolution"] == ["running", *due]
