"""`supportdesk stats`: today's numbers, the same as the console's dashboard."""

from __future__ import annotations

import json
from enum import Enum
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from supportdesk.cli.context import app_context
from supportdesk.stats import summary_lines, today_stats
from supportdesk.text import clean_line
from supportdesk.tickets import InvalidError


class StatsFormat(str, Enum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)


def stats(
    ctx: typer.Context,
    fmt: StatsFormat = typer.Option(StatsFormat.table, "--format"),
    tz: Optional[str] = typer.Option(None, "--tz", help="Time zone of \"today\" (e.g. Europe/Berlin; default: local)."),
):
    """Today's numbers: created, solved, replies, backlog, SLA, agents, outbox, mailboxes (your queues only)."""
    app_ctx = app_context(ctx)
    query_ctx = app_ctx.query_context()
    zone = query_ctx.tz
    if tz:
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidError(f"--tz {tz!r}: unknown time zone (e.g. Europe/Berlin, UTC)") from None
    database = app_ctx.database()
    with database.read() as session:
        result = today_stats(session, tz=zone, now=query_ctx.now, queue_ids=query_ctx.queue_ids,
                             dialect=database.engine.dialect.name)
    if fmt == StatsFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"Today {result.day} ({clean_line(result.tz)})")
    for label, value in summary_lines(result):
        typer.echo(f"  {label:<20}{value}")
    if result.agents:
        typer.echo(f"  {'agent':<20}{'open':>6}{'assigned':>10}")
        for load in result.agents:
            typer.echo(f"  {clean_line(load.login):<20}{load.open:>6}{load.assigned:>10}")
    for box in result.mail.mailboxes if result.mail else []:
        state = "ok" if box.ok else f"error: {clean_line(box.last_error or '')}"
        when = box.last_fetch_at.isoformat(timespec="seconds") if box.last_fetch_at else "never"
        typer.echo(f"  mailbox {clean_line(box.name)}: {state} (last fetch {when})")
