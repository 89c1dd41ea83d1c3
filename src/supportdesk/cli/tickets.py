"""`supportdesk tickets …`"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.text import Text

from supportdesk.cli.args import QueryCommand, confirm, read_body, read_ids
from supportdesk.cli.context import app_context
from supportdesk.cli.output import Format, print_tickets, stderr_console, stdout_console
from supportdesk.cli.progress import progress
from supportdesk.listing import events_for, ticket_detail, ticket_ids, ticket_summaries
from supportdesk.models import CHANNELS, PRIORITIES, STATUSES
from supportdesk.query import parse_query
from supportdesk.sla.policy import ticket_sla
from supportdesk.tickets import (
    MAX_ID, Changes, InvalidError, bulk_update, check_access, create_ticket, existing_ids, get_ticket, merge_tickets,
    resolve_actor, update_ticket,
)
from supportdesk.text import clean_line, clean_text

app = typer.Typer(help="List, show, create, answer and change tickets.", no_args_is_help=True)

EXIT_NOTHING = 3



@app.command("list", cls=QueryCommand)
def list_(
    ctx: typer.Context,
    query: Optional[List[str]] = typer.Argument(None, help="Query words, e.g. status:open -tag:spam"),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json, jsonl, csv or ids"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most this many tickets."),
    sort: Optional[str] = typer.Option(None, "--sort", help="id, created, updated, priority, status, subject, sla; add :desc"),
):
    """List tickets matching a query (all tickets when none is given)."""
    app_ctx = app_context(ctx)
    parsed = parse_query(query or [])
    qctx = app_ctx.query_context()
    if limit is not None and limit > MAX_ID:
        limit = None  # more than any table can hold: all of them (SQL's LIMIT would overflow)
    with app_ctx.database().read() as session:
        ids = ticket_ids(session, parsed, qctx, sort=sort, limit=limit)
        tickets = ticket_summaries(session, ids, qctx.now)
    print_tickets(tickets, fmt, now=qctx.now)
    if not tickets:
        raise typer.Exit(EXIT_NOTHING)


@app.command("show")
def show(
    ctx: typer.Context,
    ticket_id: int = typer.Argument(..., metavar="ID"),
    fmt: str = typer.Option("text", "--format", help="text or json"),
    events: bool = typer.Option(False, "--events", help="Also show the change history."),
):
    """Show one ticket with its whole thread."""
    if fmt not in ("text", "json"):
        raise InvalidError(f"--format must be text or json, got {fmt!r}")
    app_ctx = app_context(ctx)
    qctx = app_ctx.query_context()
    with app_ctx.database().read() as session:
        get_ticket(session, ticket_id)
        check_access(session, app_ctx.identity().actor, [ticket_id])
        detail = ticket_detail(session, ticket_id, qctx.now)
        sla = ticket_sla(session, app_ctx.settings, ticket_id, qctx.now)
        detail["sla"]["targets"], detail["sla"]["recorded"] = sla["targets"], sla["recorded"]
        if events or fmt == "json":
            detail["events"] = events_for(session, ticket_id)
    if fmt == "json":
        json.dump(detail, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return
    _print_detail(detail, show_events=events)


def _print_detail(detail: dict, *, show_events: bool) -> None:
    console = stdout_console()
    head = Text()
    head.append(f"#{detail['id']} ", style="bold")
    head.append(clean_line(detail["subject"]), style="bold")
    console.print(head)
    facts = [
        ("status", detail["status"]), ("priority", detail["priority"]), ("queue", detail["queue"]),
        ("assignee", detail["assignee"] or "-"), ("requester", detail["requester"]),
        ("organization", detail.get("organization") or "-"), ("channel", detail["channel"]),
        ("tags", " ".join(detail["tags"]) or "-"), ("created", detail["created_at"]),
        ("updated", detail["updated_at"]),
    ]
    if detail["merged_into"]:
        facts.append(("merged into", f"#{detail['merged_into']}"))
    if detail["parent"]:
        facts.append(("follow-up of", f"#{detail['parent']}"))
    for name, value in facts:
        console.print(Text(f"  {name:<13}{clean_line(str(value))}"))
    if detail["sla"]["targets"]:
        console.print(Text(f"  {'sla':<13}{detail['sla']['policy']}"))
        for target, info in detail["sla"]["targets"].items():
            due = f" due {info['due']}" if info["due"] else ""
            due += f", met {info['met_at']}" if info.get("met_at") else ""
            due += f", breached {info['breached_at']}" if info.get("breached_at") else ""
            console.print(Text(f"    {target:<15}{info['state']}{due} ({info['used_minutes']}/"
                               f"{info['target_minutes']} business min)"))
    for m in detail["messages"]:
        console.print()
        label = {"inbound": "from", "outbound": "reply to", "note": "note by", "call": "call with",
                 "chat": "chat with", "social": "social message from"}.get(m["kind"], m["kind"])
        if m["kind"] == "outbound":
            who = ", ".join(m["to"]) or "-"
        elif m["kind"] in ("note", "system"):
            who = m["author"] or m["from"] or "-"
        else:
            who = m["from"] + (f" (logged by {m['author']})" if m["author"] else "")
        line = Text(f"── {m['created_at']}  {label} {clean_line(who)}", style="bold")
        if m["kind"] == "outbound":
            line.append(f"  [{m.get('delivery') or 'unsent'}{', auto' if m.get('auto') else ''}]", style="dim")
        console.print(line)
        console.print(Text(clean_text(m["body_text"]).rstrip()))
        for a in m["attachments"]:
            console.print(Text(f"  📎 {clean_line(a['filename'])} ({a['content_type']}, {a['size']} bytes)"))
    if show_events:
        console.print()
        console.print(Text("History", style="bold"))
        for e in detail["events"]:
            console.print(Text(f"  {e['at']}  {e['actor']}  {e['field']}: {e['old'] or '-'} → {e['new'] or '-'}"))


@app.command("create")
def create(
    ctx: typer.Context,
    from_: str = typer.Option(..., "--from", help="The customer's email address."),
    subject: str = typer.Option(..., "--subject"),
    body_file: Optional[str] = typer.Option(None, "--body-file", help="File with the first message, or - for stdin."),
    channel: str = typer.Option("email", "--channel", help="email, phone, chat, social or web"),
    queue: Optional[str] = typer.Option(None, "--queue"),
    priority: str = typer.Option("normal", "--priority"),
    name: str = typer.Option("", "--name", help="The customer's name."),
    tag: Optional[List[str]] = typer.Option(None, "--tag", help="A tag (repeatable)."),
):
    """Open a ticket, e.g. to log a phone call or a chat."""
    app_ctx = app_context(ctx)
    body = read_body(body_file, required=False)
    if channel not in CHANNELS:
        raise InvalidError(f"unknown channel {channel!r} (expected {', '.join(CHANNELS)})")
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        ticket = create_ticket(
            session, actor, requester_email=from_, requester_name=name, subject=clean_line(subject),
            body=clean_text(body), channel=channel, queue=queue or app_ctx.settings.queue_names()[0],
            priority=priority, tags=tag or [],
        )
        ticket_id = ticket.id
    _report(f"Created ticket #{ticket_id}", str(ticket_id))


def _report(human: str, plain: str) -> None:
    typer.echo(human if sys.stdout.isatty() else plain)


@app.command("reply")
def reply(
    ctx: typer.Context,
    ticket_id: int = typer.Argument(..., metavar="ID"),
    body_file: Optional[str] = typer.Option(None, "--body-file", help="The reply text, or - for stdin."),
    status: Optional[str] = typer.Option(None, "--status", help="Status after replying (new tickets become open)."),
    attach: Optional[List[str]] = typer.Option(None, "--attach", help="A file to attach (repeatable)."),
):
    """Answer the customer by email (queued in the outbox; `supportdesk send` delivers)."""
    from supportdesk.mail.delivery import bounced_recently
    from supportdesk.mail.outbox import queue_reply

    app_ctx = app_context(ctx)
    body = clean_text(read_body(body_file))
    if not body.strip():
        raise InvalidError("the reply is empty")
    _check_status(status)
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        ticket = get_ticket(session, ticket_id)
        check_access(session, actor, [ticket_id])
        bounced = bounced_recently(session, ticket_id)
        if bounced:
            typer.echo(f"supportdesk: warning: mail to {bounced} bounced in the last 30 days; "
                       "this reply may not arrive either", err=True)
        message = queue_reply(session, app_ctx.settings, ticket, actor, body, attachments=read_attachments(attach))
        new_status = status or ("open" if ticket.status == "new" else None)
        if new_status:
            update_ticket(session, ticket_id, Changes(status=new_status), actor)
        message_id = message.id
    _report(f"Reply #{message_id} queued on ticket #{ticket_id}", str(message_id))


@app.command("forward")
def forward(
    ctx: typer.Context,
    ticket_id: int = typer.Argument(..., metavar="ID"),
    to: List[str] = typer.Option(..., "--to", help="The third party's address (repeatable)."),
    body_file: Optional[str] = typer.Option(None, "--body-file", help="A note to put above the customer's message."),
    attach: Optional[List[str]] = typer.Option(None, "--attach", help="A file to attach (repeatable)."),
):
    """Forward the customer's last message to a third party; their answer threads back into the ticket."""
    from supportdesk.mail.outbox import queue_forward

    app_ctx = app_context(ctx)
    note = clean_text(read_body(body_file, required=False))
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        ticket = get_ticket(session, ticket_id)
        check_access(session, actor, [ticket_id])
        message, recipients = queue_forward(session, app_ctx.settings, ticket, actor, note, to,
                                            attachments=read_attachments(attach))
        message_id = message.id
    _report(f"Forward #{message_id} to {', '.join(recipients)} queued on ticket #{ticket_id}", str(message_id))


def read_attachments(paths: list[str] | None) -> list[tuple[str, str, bytes]]:
    import mimetypes
    import os

    files = []
    for path in paths or []:
        try:
            with open(os.path.expanduser(path), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InvalidError(f"cannot read {path}: {exc.strerror}") from None
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        files.append((os.path.basename(path), content_type, data))
    return files


@app.command("note")
def note(
    ctx: typer.Context,
    ticket_id: int = typer.Argument(..., metavar="ID"),
    body_file: Optional[str] = typer.Option(None, "--body-file", help="The note text, or - for stdin."),
):
    """Add an internal note (never sent to the customer)."""
    from supportdesk.tickets import add_message

    app_ctx = app_context(ctx)
    body = clean_text(read_body(body_file))
    if not body.strip():
        raise InvalidError("the note is empty")
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        ticket = get_ticket(session, ticket_id)
        check_access(session, actor, [ticket_id])
        message = add_message(session, ticket, actor, kind="note", body=body, author_agent_id=actor.agent_id,
                              from_addr=actor.login)
        message_id = message.id
    _report(f"Note #{message_id} added to ticket #{ticket_id}", str(message_id))


def _check_status(status: str | None) -> None:
    if status and status not in STATUSES:
        raise InvalidError(f"unknown status {status!r} (expected {', '.join(STATUSES)})")


def _select_ids(session, app_ctx, ids: list[str] | None, query: str | None) -> list[int]:
    if ids and query:
        raise InvalidError("give ticket ids (or -) or --query, not both")
    if query is not None:
        return ticket_ids(session, parse_query(query), app_ctx.query_context(), sort="id")
    if not ids:
        raise InvalidError("give ticket ids, - (ids on standard input) or --query QUERY")
    selected = existing_ids(session, read_ids(ids))
    check_access(session, app_ctx.identity().actor, selected)
    return selected


def _bulk(
    ctx: typer.Context, ids: list[str] | None, query: str | None, changes: Changes, *, verb: str,
    dry_run: bool, yes: bool, reply_file: str | None = None,
) -> None:
    """Select, confirm, then change everything in one transaction (all or nothing)."""
    app_ctx = app_context(ctx)
    reply_body = clean_text(read_body(reply_file)) if reply_file else None
    if reply_file and not (reply_body or "").strip():
        raise InvalidError(f"{reply_file}: the reply is empty")
    if query is not None:
        parse_query(query)
    database = app_ctx.database()
    if dry_run or not yes:
        with database.read() as session:
            selected = _select_ids(session, app_ctx, ids, query)
            if not selected:
                typer.echo("No tickets matched.", err=True)
                raise typer.Exit(EXIT_NOTHING)
            if dry_run:
                now = app_ctx.query_context().now
                print_tickets(ticket_summaries(session, selected, now), Format.table, now=now)
                typer.echo(f"Would {verb} {len(selected)} ticket(s).", err=True)
                return
        if not confirm(f"{verb.capitalize()} {len(selected)} ticket(s)?", assume_yes=yes):
            typer.echo("Nothing changed.", err=True)
            raise typer.Exit(1)
    with database.write() as session:
        actor = resolve_actor(session, app_ctx.login)
        selected = _select_ids(session, app_ctx, ids, query)
        if not selected:
            typer.echo("No tickets matched.", err=True)
            raise typer.Exit(EXIT_NOTHING)
        if reply_body:
            from supportdesk.mail.outbox import queue_reply

            with progress("Queueing replies", len(selected)) as advance:
                for ticket_id in selected:
                    queue_reply(session, app_ctx.settings, get_ticket(session, ticket_id), actor, reply_body)
                    advance(1)
        changed = bulk_update(session, selected, changes, actor)
    past = {"close": "Closed", "update": "Updated"}.get(verb, verb)
    typer.echo(f"{past} {changed} ticket(s)" + (f" ({len(selected) - changed} already so)" if changed < len(selected) else "") + ".")


@app.command("update", cls=QueryCommand)
def update(
    ctx: typer.Context,
    ids: Optional[List[str]] = typer.Argument(None, metavar="[ID…|-]"),
    query: Optional[str] = typer.Option(None, "--query", help="Change every ticket matching this query."),
    status: Optional[str] = typer.Option(None, "--status"),
    priority: Optional[str] = typer.Option(None, "--priority"),
    assign: Optional[str] = typer.Option(None, "--assign", help="An agent's login, or none."),
    queue: Optional[str] = typer.Option(None, "--queue"),
    add_tag: Optional[List[str]] = typer.Option(None, "--add-tag"),
    remove_tag: Optional[List[str]] = typer.Option(None, "--remove-tag"),
    if_version: Optional[int] = typer.Option(
        None, "--if-version", help="One ticket: change it only if it is still at this version (else exit 1)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Change status, priority, assignee, queue or tags of one or many tickets."""
    _check_status(status)
    if priority and priority not in PRIORITIES:
        raise InvalidError(f"unknown priority {priority!r} (expected {', '.join(PRIORITIES)})")
    changes = Changes(status=status, priority=priority, assignee=assign, queue=queue,
                      add_tags=add_tag or [], remove_tags=remove_tag or [])
    if changes.empty():
        raise InvalidError("nothing to change: give --status, --priority, --assign, --queue, --add-tag or --remove-tag")
    if if_version is not None:
        _update_if_version(ctx, ids, query, changes, if_version)
        return
    _bulk(ctx, ids, query, changes, verb="update", dry_run=dry_run, yes=yes)


def _update_if_version(ctx: typer.Context, ids: list[str] | None, query: str | None, changes: Changes,
                       version: int) -> None:
    """Read-then-write for scripts: a ticket that moved past `version` is refused (ConflictError, exit 1)."""
    if query is not None or len(ids or []) != 1 or ids == ["-"]:
        raise InvalidError("--if-version needs exactly one ticket id (not - or --query)")
    app_ctx = app_context(ctx)
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        selected = _select_ids(session, app_ctx, ids, None)
        if not selected:
            typer.echo("No tickets matched.", err=True)
            raise typer.Exit(EXIT_NOTHING)
        changed = update_ticket(session, selected[0], changes, actor, expected_version=version)
        now = get_ticket(session, selected[0]).version
    typer.echo(f"Updated ticket #{selected[0]} (version {now})." if changed
               else f"Ticket #{selected[0]} is already so (version {now}).")


@app.command("close", cls=QueryCommand)
def close(
    ctx: typer.Context,
    ids: Optional[List[str]] = typer.Argument(None, metavar="[ID…|-]"),
    query: Optional[str] = typer.Option(None, "--query", help="Close every ticket matching this query."),
    reply_file: Optional[str] = typer.Option(None, "--reply-file", help="Send this reply to each ticket first."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be closed; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Close tickets for good (a later customer reply opens a linked follow-up)."""
    _bulk(ctx, ids, query, Changes(status="closed"), verb="close", dry_run=dry_run, yes=yes, reply_file=reply_file)


@app.command("merge")
def merge(
    ctx: typer.Context,
    source_id: int = typer.Argument(..., metavar="SOURCE_ID"),
    target_id: int = typer.Argument(..., metavar="TARGET_ID"),
):
    """Move SOURCE's thread into TARGET; SOURCE is closed and points at TARGET."""
    app_ctx = app_context(ctx)
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        merge_tickets(session, source_id, target_id, actor)
    typer.echo(f"Merged ticket #{source_id} into #{target_id}.")


@app.command("export", cls=QueryCommand)
def export(
    ctx: typer.Context,
    query: Optional[List[str]] = typer.Argument(None, help="Query words (all tickets when none)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
):
    """Write tickets with their messages as JSON Lines, one ticket a line."""
    from supportdesk.transfer import export_tickets

    app_ctx = app_context(ctx)
    parsed = parse_query(query or [])
    qctx = app_ctx.query_context()
    with app_ctx.database().read() as session:
        ids = ticket_ids(session, parsed, qctx, sort="id")
        stream = open(output, "w", encoding="utf-8") if output else sys.stdout
        try:
            with progress("Exporting", len(ids)) as advance:
                written = export_tickets(session, ids, stream, qctx.now, advance=advance)
        finally:
            if output:
                stream.close()
    if output or sys.stderr.isatty():
        stderr_console().print(Text(f"Exported {written} ticket(s)."))
    if not written:
        raise typer.Exit(EXIT_NOTHING)


@app.command("import")
def import_(
    ctx: typer.Context,
    source: str = typer.Argument(..., metavar="FILE|-"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Import the good lines and report the bad ones."),
):
    """Read tickets in the export format (keeps created_at; old ids become external_id)."""
    from supportdesk.transfer import import_tickets, read_import_file

    app_ctx = app_context(ctx)
    app_ctx.require_admin("tickets import")
    records, bad = read_import_file(source, skip_bad=skip_bad)
    for line_no, problem in bad:
        typer.echo(f"supportdesk: skipped {source}:{line_no}: {problem}", err=True)
    with app_ctx.database().write() as session:
        actor = resolve_actor(session, app_ctx.login)
        with progress("Importing", len(records)) as advance:
            result = import_tickets(session, records, actor, advance=advance)
    app_ctx.database().analyze()
    typer.echo(f"Imported {result.tickets} ticket(s) with {result.messages} message(s)"
               + (f"; created queues: {', '.join(result.new_queues)}" if result.new_queues else "")
               + (f"; skipped {len(bad)} bad line(s)" if bad else "") + ".")
