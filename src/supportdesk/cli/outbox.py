"""`supportdesk send` and `supportdesk outbox list|retry|cancel`."""

from __future__ import annotations

import re
import signal
import sys
import threading
from typing import List, Optional

import typer

from supportdesk.cli.args import parse_id
from supportdesk.cli.context import app_context
from supportdesk.cli.output import Format, write_rows
from supportdesk.mail.delivery import (
    LEASE_SECONDS, OUTBOX_COLUMNS, Job, Outcome, cancel, list_outbox, retry, send_once, send_watch, smtp_config,
)
from supportdesk.tickets import InvalidError, resolve_actor

outbox_app = typer.Typer(help="Outbound mail: waiting, sent, failed or given up.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    app.add_typer(outbox_app, name="outbox")


def send(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Send what is due, then exit (the default)."),
    watch: bool = typer.Option(False, "--watch", help="Keep sending as replies are queued, until SIGTERM/ctrl+c."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Send at most this many messages (--once)."),
    interval: float = typer.Option(5.0, "--interval", min=0.1, max=86400,
                                   help="Seconds between looks at the outbox (--watch)."),
    lease: float = typer.Option(
        LEASE_SECONDS, "--lease", min=0.1, max=7 * 86400,
        help="Seconds after which a message left in `sending` by a sender that died is sent again."),
):
    """Deliver the outbox over SMTP (the smtp section of the config).

    SIGTERM or ctrl+c stops after the message being handed over, so none is left half-sent.
    """
    if once and watch:
        raise InvalidError("give --once or --watch, not both")
    app_ctx = app_context(ctx)
    settings = app_ctx.settings
    smtp_config(settings)
    database = app_ctx.database()
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if watch:
            send_watch(database, settings, stop, interval, lease_seconds=lease, on_result=_print_result,
                       on_error=lambda message: typer.echo(f"supportdesk: {message}; will retry", err=True))
            return
        report = send_once(database, settings, limit=limit, lease_seconds=lease, stop=stop, on_result=_print_result)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for message in report.errors:
        typer.echo(f"supportdesk: error: {message}", err=True)
    for message in report.sent_folder_errors:
        typer.echo(f"supportdesk: warning: {message}", err=True)
    if report.attempted == 0:
        with database.read() as session:
            waiting = len(list_outbox(session, "failed"))
        typer.echo("Nothing to send." + (f" {waiting} failed message(s) wait for their next attempt "
                                         "(`supportdesk outbox list --status failed`; `outbox retry ID` sends now)."
                                         if waiting else ""), err=True)
        return
    typer.echo(f"{report.sent} sent, {report.failed} failed (will retry), {report.dead} dead.", err=True)
    raise typer.Exit(1 if report.failed or report.dead else 0)


def _print_result(job: Job, outcome: Outcome, status: str | None) -> None:
    shown = status or "taken over by another sender"
    typer.echo(f"outbox #{job.id} (ticket #{job.ticket_id}): {shown}: {outcome.describe()}")


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", help="queued, sending, sent, failed, dead, bounced or "
                                                               "cancelled; several with commas."),
    fmt: Format = typer.Option(Format.table, "--format"),
):
    """Outbound messages, oldest first, with the server's last answer (your queues only)."""
    app_ctx = app_context(ctx)
    with app_ctx.database().read() as session:
        rows = list_outbox(session, status, queue_ids=app_ctx.identity().actor.queue_ids)
    if fmt in (Format.table, Format.csv):
        rows = [dict(r, to=", ".join(r["to"])) for r in rows]
    write_rows(rows, fmt, OUTBOX_COLUMNS)
    if not rows:
        raise typer.Exit(3)


@outbox_app.command("retry")
def outbox_retry(ctx: typer.Context, ids: List[str] = typer.Argument(..., metavar="ID…", help="Outbox ids, or - "
                                                                                               "to read them from stdin.")):
    """Send dead, failed, bounced or cancelled messages again (the same message, due now)."""
    app_ctx = app_context(ctx)
    database = app_ctx.database()
    with database.read() as session:
        actor = resolve_actor(session, app_ctx.login)
    done = retry(database, _outbox_ids(ids), actor)
    typer.echo(f"Queued {len(done)} message(s) again; `supportdesk send` delivers them.")


@outbox_app.command("cancel")
def outbox_cancel(ctx: typer.Context, ids: List[str] = typer.Argument(..., metavar="ID…", help="Outbox ids, or - "
                                                                                                "to read them from stdin.")):
    """Withdraw queued or failed messages (they stay in the thread, marked cancelled)."""
    app_ctx = app_context(ctx)
    database = app_ctx.database()
    with database.read() as session:
        actor = resolve_actor(session, app_ctx.login)
    done = cancel(database, _outbox_ids(ids), actor)
    typer.echo(f"Cancelled {len(done)} message(s).")


def _outbox_ids(words: List[str]) -> list[int]:
    ids: list[int] = []
    for word in words:
        where = "standard input" if word == "-" else "arguments"
        ids.extend(parse_id(t, where, "an outbox id (see `supportdesk outbox list`)")
                   for t in re.split(r"[\s,]+", sys.stdin.read() if word == "-" else word) if t)
    return ids
