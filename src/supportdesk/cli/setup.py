"""`supportdesk init`, `demo` and `doctor`, and what runs with no command."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path
from typing import Optional

import platformdirs
import sqlalchemy as sa
import typer
from rich.text import Text

from supportdesk.cli.context import AppContext, app_context
from supportdesk.cli.output import stdout_console
from supportdesk.config import APP_NAME, ConfigError, Settings, database_url, find_config_file
from supportdesk.db import Database, DatabaseError, sqlite_path
from supportdesk.models import Agent, MailboxState
from supportdesk.tickets import InvalidError, add_agent, ensure_queue

STARTER_CONFIG = """\
# supportdesk configuration — see config.example.toml in the source for every key.

[database]
url = "{url}"

[tickets]
subject_tag = "Support"     # replies carry "[Support #123]"
autoreply = true
reopen_days = 14

# [[mailbox]]
# name = "support"
# address = "support@example.com"
# queue = "General"
# imap_host = "imap.example.com"
# imap_user = "support@example.com"
# imap_password_env = "SUPPORT_IMAP_PASSWORD"

[[view]]
name = "Unassigned"
query = "is:unassigned status:new,open"
"""


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("demo")(demo)
    app.command("doctor")(doctor)


def init(ctx: typer.Context):
    """Write a config (if none), create or upgrade the database, and make you its first admin."""
    app_ctx = app_context(ctx)
    path, _named = find_config_file(app_ctx.config_path)
    if not path.exists():
        url = database_url(app_ctx.db_option, Settings())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(STARTER_CONFIG.format(url=url), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(path, "", f"cannot write the config: {exc.strerror}") from None
        typer.echo(f"Wrote a starter config to {path}")
    database = app_ctx.database(check=False)
    if sqlite_path(app_ctx.url) is not None:
        from supportdesk.maintenance import prepare_database_file

        prepare_database_file(sqlite_path(app_ctx.url))
    before, after = database.upgrade()
    typer.echo(f"Database {database.display_url()}: " + (f"schema {after}" if before == after else f"created (schema {after})"))
    with database.write() as session:
        for name in app_ctx.settings.queue_names():
            ensure_queue(session, name, app_ctx.settings.queue_address(name))
        login = app_ctx.login
        agent = session.execute(sa.select(Agent).where(Agent.login == login)).scalar()
        has_admin = session.execute(sa.select(Agent.id).where(Agent.role == "admin", Agent.active)).first()
        if agent is None:
            add_agent(session, login, role="agent" if has_admin else "admin")
            typer.echo(f"Registered {login} as {'an agent' if has_admin else 'the first admin'}.")
        else:
            typer.echo(f"{login} is already an agent ({agent.role}).")


def demo_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "demo.db"


def demo(
    ctx: typer.Context,
    db: Optional[str] = typer.Option(None, "--db", help="Where to put the demo database (never your real one)."),
    tickets: int = typer.Option(300, "--tickets", min=1, max=1_000_000, help="How many tickets to seed."),
    no_open: bool = typer.Option(False, "--no-open", help="Seed only; do not open the console."),
):
    """Seed a demo database in its own file and open the console on it."""
    from supportdesk.demo import DEMO_MARKER, demo_settings, seed

    app_ctx = app_context(ctx)
    target = Path(db.removeprefix("sqlite:///")) if db else demo_path()
    if "://" in str(target):
        raise DatabaseError("the demo needs a SQLite file path (sqlite:///PATH or a plain path)")
    if target.exists():
        with sqlite3.connect(target) as conn:
            marker = conn.execute("PRAGMA user_version").fetchone()[0]
        if marker != DEMO_MARKER:
            raise DatabaseError(f"{target} exists and is not a demo database; choose another --db")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{target.resolve() if target.parent.exists() else target}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(target) as conn:
        conn.execute(f"PRAGMA user_version = {DEMO_MARKER}")
    database = Database(url)
    database.upgrade()
    with database.write() as session:
        count = seed(session, me=app_ctx.login, tickets=tickets)
    database.analyze()
    typer.echo(f"Seeded {count} demo tickets in {target}", err=True)
    database.close()
    if not no_open:
        demo_ctx = AppContext(db_option=url, as_agent=app_ctx.login, _settings=demo_settings(url))
        open_console(demo_ctx)


def open_console(app_ctx: AppContext) -> None:
    """The Textual console on the configured database, as the current agent."""
    from supportdesk.tickets import resolve_actor
    from supportdesk.tui.app import run_console

    database = app_ctx.database()
    with database.read() as session:
        resolve_actor(session, app_ctx.login)
    run_console(database, app_ctx.settings, app_ctx.login)


def doctor(ctx: typer.Context):
    """Check the config, the database and the mail servers; explain what is wrong."""
    app_ctx = app_context(ctx)
    problems = 0

    def report(ok: bool, what: str, detail: str = "") -> None:
        nonlocal problems
        problems += 0 if ok else 1
        mark = Text("ok   " if ok else "FAIL ", style="green" if ok else "bold red")
        mark.append(what)
        if detail:
            mark.append(f" — {detail}", style="dim" if ok else "")
        stdout_console().print(mark)

    try:
        settings = app_ctx.settings
        report(True, "config", str(settings.file) if settings.file else "no config file (defaults)")
    except ConfigError as exc:
        report(False, "config", str(exc))
        raise typer.Exit(1)
    try:
        from supportdesk.automation import load as load_automation
        from supportdesk.sla.policy import load as load_sla

        load_sla(settings)
        load_automation(settings)
        report(True, "sla and automation", f"{len(settings.slas)} policies, {len(settings.rules)} rules, "
                                          f"{len(settings.escalations)} escalations")
    except ConfigError as exc:
        report(False, "sla and automation", str(exc))
    for key in settings.plain_password_keys:
        report(False, f"secret {key}", "a plain password in the config file; use *_env or *_command")
    try:
        database = app_ctx.database()
        report(True, "database", database.display_url())
        with database.read() as session:
            states = {s.mailbox: s for s in session.execute(sa.select(MailboxState)).scalars()}
            try:
                from supportdesk.automation import check_references

                check_references(session, settings)
            except (ConfigError, InvalidError) as exc:
                report(False, "sla and automation", str(exc))
    except (DatabaseError, ConfigError) as exc:
        report(False, "database", str(exc))
        states = {}
    path = sqlite_path(app_ctx.url)
    if path is not None and path.exists() and not os.access(path, os.W_OK):
        report(False, "database file", f"{path} is not writable by you")
    from supportdesk.maintenance import check_permissions, check_secrets

    secrets = [box.imap_password for box in settings.mailboxes] + [settings.smtp.password if settings.smtp else None]
    for finding in (check_permissions(path) if path is not None else []) + check_secrets(settings.file, secrets):
        report(finding.ok, finding.what, finding.detail + (f"; fix: {finding.fix}" if finding.fix else ""))
    for box in settings.mailboxes:
        state = states.get(box.name)
        if state and state.last_error:
            report(False, f"mailbox {box.name}", f"last error {state.last_error_at}: {state.last_error}")
        elif state and state.last_fetch_at:
            report(True, f"mailbox {box.name}", f"last fetch {state.last_fetch_at.isoformat()}, "
                                                f"{state.stored_total} messages stored so far")
        if box.imap_host:
            report(*_reachable(box.imap_host, box.imap_port, f"IMAP {box.name}"))
    if settings.smtp:
        report(*_reachable(settings.smtp.host, settings.smtp.port, "SMTP"))
    if problems:
        raise typer.Exit(1)


def _reachable(host: str, port: int, what: str) -> tuple[bool, str, str]:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True, what, f"{host}:{port} reachable"
    except OSError as exc:
        return False, what, f"{host}:{port} unreachable ({exc.strerror or exc})"
