"""`supportdesk sla check|recompute` and `supportdesk rules test FILE.eml`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional

import sqlalchemy as sa
import typer
from sqlmodel import Session

from supportdesk.cli.args import QueryCommand
from supportdesk.cli.context import app_context
from supportdesk.cli.output import Format, write_rows
from supportdesk.models import Agent, Ticket
from supportdesk.query import SLA_DUE_COLUMNS, compile_query, parse_query
from supportdesk.tickets import InvalidError

sla_app = typer.Typer(help="Service levels: tickets at risk or breached, escalations, due times.",
                      no_args_is_help=True)
rules_app = typer.Typer(help="Routing rules from the config.", no_args_is_help=True)

MAX_WINDOW_MINUTES = 100 * 366 * 1440  # far enough for any SLA; `now +` a much larger one overflows
CHECK_COLUMNS = ("id", "status", "priority", "assignee", "policy", "target", "due", "left", "subject")
T = Ticket.__table__.c


def register(app: typer.Typer) -> None:
    app.add_typer(sla_app, name="sla")
    app.add_typer(rules_app, name="rules")


def _duration(text: str) -> timedelta:
    m = re.fullmatch(r"\s*([0-9]{1,12})\s*(m|min|h|d)\s*", text)
    if not m:
        raise InvalidError(f"bad duration {text!r} (use 30m, 2h or 1d)")
    minutes = int(m.group(1)) * {"m": 1, "min": 1, "h": 60, "d": 1440}[m.group(2)]
    if minutes > MAX_WINDOW_MINUTES:
        raise InvalidError(f"bad duration {text!r}: at most {MAX_WINDOW_MINUTES // 1440}d")
    return timedelta(minutes=minutes)


def _left(due: datetime, now: datetime) -> str:
    seconds = (due - now).total_seconds()
    minutes = int(abs(seconds) // 60)
    text = f"{minutes // 1440}d{minutes % 1440 // 60}h" if minutes >= 1440 else (
        f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m")
    return f"-{text}" if seconds < 0 else text


@sla_app.command("check")
def check(
    ctx: typer.Context,
    within: str = typer.Option("1h", "--within", help="List tickets with a target due within this time (30m, 2h, 1d)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what escalations would fire; change nothing."),
    fmt: Format = typer.Option(Format.table, "--format"),
):
    """List tickets at risk and breached (time left or over), wake snoozed tickets, run escalations."""
    from supportdesk.automation import run_timers

    app_ctx = app_context(ctx)
    settings = app_ctx.settings
    database = app_ctx.database()
    now = datetime.now(timezone.utc)
    limit = now + _duration(within)  # a bad --within is refused before anything runs
    report = run_timers(database, settings, now, dry_run=dry_run)
    verb = "would fire" if dry_run else "fired"
    for f in report.fired:
        extra = f"; notified {', '.join(f.notified)}" if f.notified else (f"; {f.warning}" if f.warning else "")
        typer.echo(f"escalation {f.escalation!r} {verb} on #{f.ticket_id} ({f.target}){extra}", err=True)
    for what, ids in (("wake", report.woken), ("remind", report.reminded), ("solve", report.solved),
                      ("close", report.closed)):
        if ids:
            done = {"wake": "woke", "remind": "reminded"}.get(what, what + "d")
            typer.echo(f"{'would ' + what if dry_run else done} {len(ids)} ticket(s): "
                       + " ".join(f"#{i}" for i in ids[:20]) + (" …" if len(ids) > 20 else ""), err=True)
    if report.breaches_recorded:
        typer.echo(f"recorded {report.breaches_recorded} new SLA breach(es)", err=True)
    A = Agent.__table__.c
    with database.read() as session:
        rows = session.execute(
            sa.select(T.id, T.status, T.priority, T.subject, T.sla_policy, A.login, *[T[c] for c in SLA_DUE_COLUMNS])
            .outerjoin(Agent.__table__, A.id == T.assignee_id)
            .where(sa.or_(*[T[c] < limit for c in SLA_DUE_COLUMNS]))
            .where(T.queue_id.in_(sorted(mine)) if (mine := app_ctx.identity().actor.queue_ids) is not None
                   else sa.true())
        ).all()
    out = []
    for r in rows:
        for column in SLA_DUE_COLUMNS:
            due = getattr(r, column)
            if due is not None and due < limit:
                out.append({
                    "id": r.id, "status": r.status, "priority": r.priority, "assignee": r.login, "policy": r.sla_policy,
                    "target": column[:-4], "due": due.isoformat().replace("+00:00", "Z"), "left": _left(due, now),
                    "seconds_left": int((due - now).total_seconds()), "breached": due <= now, "subject": r.subject,
                })
    out.sort(key=lambda item: (item["seconds_left"], item["id"]))
    write_rows(out, fmt, CHECK_COLUMNS)
    if not out:
        raise typer.Exit(3)


@sla_app.command("recompute", cls=QueryCommand)
def recompute_command(
    ctx: typer.Context,
    query: Optional[List[str]] = typer.Argument(None, help="Which tickets (default: all not solved or closed)."),
    workers: int = typer.Option(0, "--workers", min=0, max=64,
                                help="Processes for the clock (0: one per CPU, at most 4)."),
):
    """Recompute policies and due times, e.g. after changing [[sla]] or [[calendar]] in the config (admins)."""
    from supportdesk.sla.policy import recompute

    app_ctx = app_context(ctx)
    app_ctx.require_admin("sla recompute")
    database = app_ctx.database()
    text = " ".join(query or []) or "status:new,open,pending,on_hold"
    with database.write() as session:
        ids = list(session.execute(sa.select(T.id).where(compile_query(parse_query(text), app_ctx.query_context())))
                   .scalars())
        import os

        changed = recompute(session, app_ctx.settings, ids, workers=workers or min(os.cpu_count() or 1, 4))
    typer.echo(f"Recomputed {len(ids)} ticket(s); {changed} changed.")


@rules_app.command("test")
def rules_test(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="An RFC 5322 message (.eml)."),
    mailbox: Optional[str] = typer.Option(None, "--mailbox", help="As if fetched from this mailbox."),
):
    """Which routing rules would fire for this message as a new ticket, and what they would set.

    Runs the rules on a throw-away ticket in a transaction that is rolled back: nothing changes.
    """
    from supportdesk.automation import apply_rules, load
    from supportdesk.listing import ticket_summaries
    from supportdesk.mail.parse import parse_message
    from supportdesk.tickets import Actor, create_ticket, ensure_queue

    app_ctx = app_context(ctx)
    settings = app_ctx.settings
    rules = load(settings).rules
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InvalidError(f"cannot read {file}: {exc.strerror}") from None
    parsed = parse_message(raw)
    if parsed.error or not parsed.from_addr:
        raise InvalidError(f"{file}: {parsed.error or 'no usable sender address in From'}")
    recipients = {a.lower() for _, a in parsed.to + parsed.cc if a}
    box = None
    if mailbox:
        box = settings.mailbox(mailbox)
    else:
        box = next((b for b in settings.mailboxes if b.address in recipients), None) or (
            settings.mailboxes[0] if settings.mailboxes else None)
    database = app_ctx.database()
    with Session(database.engine, expire_on_commit=False) as session:
        transaction = session.begin()
        try:
            ensure_queue(session, box.queue if box else "General")
            ticket = create_ticket(
                session, Actor.system(), requester_email=parsed.from_addr, requester_name=parsed.from_name,
                subject=parsed.subject or "(no subject)", body=parsed.body_text, channel="email",
                queue=box.queue if box else "General", mailbox=box.name if box else None,
                created_at=parsed.date or datetime.now(timezone.utc), message_id=parsed.message_id,
                to=[a for _, a in parsed.to if a], cc=[a for _, a in parsed.cc if a],
            )
            before = ticket_summaries(session, [ticket.id], datetime.now(timezone.utc))[0]
            fired = apply_rules(session, settings, ticket.id, Actor.system())
            after = ticket_summaries(session, [ticket.id], datetime.now(timezone.utc))[0]
        finally:
            transaction.rollback()
    for rule in rules:
        typer.echo(f"{'fires' if rule.name in fired else '-    '}  {rule.name}")
    for key in ("queue", "priority", "status", "assignee", "tags"):
        if before[key] != after[key]:
            typer.echo(f"would set {key}: {before[key]} -> {after[key]}")
    if not fired:
        typer.echo("No rule fires for this message.", err=True)
        raise typer.Exit(3)
