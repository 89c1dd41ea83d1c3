"""`supportdesk db …`"""

from __future__ import annotations

from pathlib import Path

import typer

from supportdesk.cli.context import app_context

app = typer.Typer(help="Upgrade and back up the database.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(ctx: typer.Context):
    """Bring the database schema up to this program's version."""
    database = app_context(ctx).database(check=False)
    before, after = database.upgrade()
    if before == after:
        typer.echo(f"The database is up to date (schema {after}).")
    else:
        typer.echo(f"Upgraded the database from {before or 'empty'} to schema {after}.")


@app.command("backup")
def backup(ctx: typer.Context, path: Path = typer.Argument(..., help="A new file for the copy.")):
    """Copy the database consistently while others keep working."""
    app_context(ctx).database().backup(path)
    typer.echo(f"Backed up to {path}.")
