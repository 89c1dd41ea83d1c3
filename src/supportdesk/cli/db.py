"""`supportdesk db …`"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from supportdesk.cli.context import app_context
from supportdesk.cli.output import stdout_console
from supportdesk.db import SCHEMA_REVISION, DatabaseError, sqlite_path
from supportdesk.maintenance import (
    check_database, prepare_database_file, repair_fts, restore as restore_database, shared_umask,
)

app = typer.Typer(help="Upgrade, back up, restore and check the database.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(ctx: typer.Context):
    """Bring the database schema up to this program's version."""
    app_ctx = app_context(ctx)
    database = app_ctx.database(check=False)
    path = sqlite_path(app_ctx.url)
    with shared_umask(path.parent if path is not None else Path.cwd()):
        if path is not None:
            prepare_database_file(path)
        before, after = database.upgrade()
    database.analyze()
    if before == after:
        typer.echo(f"The database is up to date (schema {after}).")
    else:
        typer.echo(f"Upgraded the database from {before or 'empty'} to schema {after}.")


@app.command("backup")
def backup(ctx: typer.Context, path: Path = typer.Argument(..., help="A new file for the copy.")):
    """Copy the database consistently while others keep working."""
    app_context(ctx).database().backup(path)
    typer.echo(f"Backed up to {path}.")


@app.command("restore")
def restore(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A backup made by `supportdesk db backup`."),
    force: bool = typer.Option(False, "--force", help="Replace a working database."),
):
    """Replace the database with a verified copy of a backup (stop the daemon and consoles first)."""
    target = _sqlite_target(ctx, "db restore", "use pg_restore for PostgreSQL")
    revision = restore_database(path, target, force=force)
    upgraded = f", upgraded to {SCHEMA_REVISION}" if revision != SCHEMA_REVISION else ""
    typer.echo(f"Restored {target} from {path} (schema {revision}{upgraded}).")


@app.command("check")
def check(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Rebuild the full-text index if it is wrong."),
):
    """Integrity check, foreign keys, and that the full-text index matches every ticket."""
    target = _sqlite_target(ctx, "db check", "PostgreSQL checks its own indexes (see amcheck)")
    findings = check_database(target)
    fts_wrong = any(not f.ok and f.what.startswith("full-text") for f in findings)
    if repair and fts_wrong:
        count = repair_fts(target)
        typer.echo(f"Rebuilt the full-text index ({count} tickets).")
        findings = check_database(target)
    console = stdout_console()
    for finding in findings:
        line = Text("ok   " if finding.ok else "FAIL ", style="green" if finding.ok else "bold red")
        line.append(finding.what)
        if finding.detail:
            line.append(f" — {finding.detail}")
        if finding.fix:
            line.append(f" (fix: {finding.fix})", style="dim")
        console.print(line, soft_wrap=True)
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


def _sqlite_target(ctx: typer.Context, command: str, otherwise: str) -> Path:
    url = app_context(ctx).url
    path = sqlite_path(url)
    if path is None:
        raise DatabaseError(f"{command} works on SQLite files; {otherwise}")
    return path


@app.command("migrate-to")
def migrate_to(ctx: typer.Context, url: str = typer.Argument(..., help="An empty PostgreSQL database: postgresql+psycopg://USER@HOST/DB")):
    """Copy this SQLite database into an empty PostgreSQL database (ids, history and mail kept)."""
    from supportdesk.migrate import migrate_to as copy_database

    summary = copy_database(app_context(ctx).database(), url)
    for table, count in summary.rows.items():
        if count:
            typer.echo(f"  {table:<20} {count:>9}")
    typer.echo(f"Copied {summary.total} rows into {summary.target} (schema {summary.revision}); "
               f"point [database] url at it to switch.")
