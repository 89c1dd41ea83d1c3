"""`supportdesk fetch`, `ingest` and `quarantine …`"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import List, Optional

import typer

from supportdesk.cli.context import app_context
from supportdesk.cli.output import Format, write_rows
from supportdesk.db import DatabaseError
from supportdesk.tickets import InvalidError, resolve_actor

EX_TEMPFAIL = 75
quarantine_app = typer.Typer(help="Messages intake could not file, kept raw.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch)
    app.command("ingest")(ingest)
    app.add_typer(quarantine_app, name="quarantine")


def fetch(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="One pass over the mailboxes, then exit (the default)."),
    watch: bool = typer.Option(False, "--watch", help="Keep fetching as mail arrives (IMAP IDLE)."),
    mailbox: Optional[str] = typer.Option(None, "--mailbox", help="Only this mailbox."),
):
    """Fetch new mail from the configured IMAP mailboxes into tickets."""
    from supportdesk.mail.imap import FetchError, fetch_once, watch as watch_mailbox

    if once and watch:
        raise InvalidError("give --once or --watch, not both")
    app_ctx = app_context(ctx)
    settings = app_ctx.settings
    boxes = [settings.mailbox(mailbox)] if mailbox else [b for b in settings.mailboxes if b.imap_host]
    if not boxes:
        raise InvalidError("no mailbox with an imap_host is configured (see [[mailbox]] in config.example.toml)")
    database = app_ctx.database()
    if not watch:
        failed = 0
        for box in boxes:
            try:
                result = fetch_once(database, settings, box)
            except FetchError as exc:
                typer.echo(f"supportdesk: error: {exc}", err=True)
                failed += 1
                continue
            r = result.report
            typer.echo(f"{box.name}: {r.stored} new, {r.duplicates} already stored; {len(r.created)} new ticket(s), "
                       f"{len(r.appended)} repl(ies), {len(r.quarantined)} quarantined, {r.bounces} bounce(s)")
        raise typer.Exit(1 if failed else 0)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = []
    for box in boxes:
        def report(result, name=box.name):
            r = result.report
            if r.stored or r.quarantined:
                typer.echo(f"{name}: {r.stored} new; {len(r.created)} new ticket(s), {len(r.appended)} repl(ies), "
                           f"{len(r.quarantined)} quarantined")
        thread = threading.Thread(target=watch_mailbox, args=(database, settings, box, stop),
                                  kwargs={"on_result": report,
                                          "on_error": lambda e: typer.echo(f"supportdesk: {e}", err=True)},
                                  name=f"fetch-{box.name}", daemon=True)
        thread.start()
        threads.append(thread)
    while not stop.is_set():
        stop.wait(0.5)
    for thread in threads:
        thread.join(timeout=10)


def ingest(
    ctx: typer.Context,
    mailbox: Optional[str] = typer.Option(None, "--mailbox", help="The mailbox this mail arrived for."),
    as_json: bool = typer.Option(False, "--json", help="Read a phone call, chat or social message as JSON."),
):
    """File one message from standard input (for an MTA pipe). Exit 75 asks the MTA to retry."""
    from supportdesk.mail.intake import ingest_bytes, ingest_interaction

    app_ctx = app_context(ctx)
    settings = app_ctx.settings
    if mailbox:
        settings.mailbox(mailbox)
    data = sys.stdin.buffer.read()
    try:
        database = app_ctx.database()
        if as_json:
            try:
                payload = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InvalidError(f"ingest --json: standard input is not JSON ({exc})") from None
            with database.read() as session:
                actor = resolve_actor(session, app_ctx.login)
            ticket_id = ingest_interaction(database, settings, payload, actor)
            typer.echo(str(ticket_id))
            return
        if not data.strip():
            raise InvalidError("ingest: standard input is empty")
        raw_id, report = ingest_bytes(database, settings, data, mailbox)
    except DatabaseError as exc:
        typer.echo(f"supportdesk: temporary failure: {exc}", err=True)
        raise typer.Exit(EX_TEMPFAIL)
    if report.quarantined:
        typer.echo(f"stored as raw message #{raw_id} in quarantine", err=True)
    elif report.duplicates:
        typer.echo(f"already stored as raw message #{raw_id}", err=True)
    else:
        ticket = (report.created or report.appended or [None])[0]
        typer.echo(f"filed raw message #{raw_id}" + (f" on ticket #{ticket}" if ticket else ""), err=True)


@quarantine_app.command("list")
def quarantine_list(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format")):
    """Messages that could not be filed, with the reason (your queues' only)."""
    from supportdesk.mail.intake import quarantined

    app_ctx = app_context(ctx)
    with app_ctx.database().read() as session:
        rows = quarantined(session, app_ctx.settings, app_ctx.identity().actor)
    write_rows(rows, fmt, ("id", "mailbox", "received_at", "size", "message_id", "error"))
    if not rows:
        raise typer.Exit(3)


@quarantine_app.command("show")
def quarantine_show(ctx: typer.Context, raw_id: int = typer.Argument(..., metavar="ID"),
                    raw: bool = typer.Option(False, "--raw", help="Write the original bytes to stdout.")):
    """Show a quarantined message (headers and error), or its original bytes with --raw."""
    from supportdesk.mail.intake import raw_bytes
    from supportdesk.text import clean_text

    app_ctx = app_context(ctx)
    with app_ctx.database().read() as session:
        data = raw_bytes(session, raw_id, app_ctx.settings, app_ctx.identity().actor)
    if raw:
        sys.stdout.buffer.write(data)
        return
    typer.echo(clean_text(data[:8192].decode("utf-8", "replace")))


@quarantine_app.command("retry")
def quarantine_retry(ctx: typer.Context, ids: List[int] = typer.Argument(..., metavar="ID…")):
    """Run quarantined messages through intake again."""
    from supportdesk.mail.intake import retry_quarantined

    app_ctx = app_context(ctx)
    database = app_ctx.database()
    report = retry_quarantined(database, app_ctx.settings, ids, app_ctx.identity().actor)
    typer.echo(f"{len(report.created) + len(report.appended)} filed, {len(report.quarantined)} still quarantined.")


@quarantine_app.command("release")
def quarantine_release(ctx: typer.Context, ids: List[int] = typer.Argument(..., metavar="ID…")):
    """Make tickets of quarantined messages anyway, with whatever text can be recovered."""
    from supportdesk.mail.intake import release_quarantined

    app_ctx = app_context(ctx)
    database = app_ctx.database()
    with database.read() as session:
        actor = resolve_actor(session, app_ctx.login)
    created = release_quarantined(database, app_ctx.settings, ids, actor)
    typer.echo("Created ticket(s) " + ", ".join(f"#{i}" for i in created) + ".")
