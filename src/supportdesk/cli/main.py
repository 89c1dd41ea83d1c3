"""`supportdesk`: the command line, a thin face over the domain services."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from typer.core import TyperGroup

from supportdesk.cli.context import AppContext
from supportdesk.config import ConfigError
from supportdesk.db import DatabaseError
from supportdesk.query import QueryError
from supportdesk.tickets import ConflictError, InvalidError, NotFoundError, ServiceError

EXIT_FAILURE, EXIT_USAGE, EXIT_NOTHING = 1, 2, 3
# Set-up and mail plumbing, run before any agent exists or by the mail system's users: no agent needed.
NO_AGENT_COMMANDS = frozenset({"init", "demo", "doctor", "daemon", "fetch", "ingest", "send", "db"})


class UserFacingGroup(TyperGroup):
    """Turns the domain's refusals into one line on stderr and the SPEC's exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ConfigError, QueryError, InvalidError) as exc:
            _fail(ctx, exc, EXIT_USAGE)
        except (NotFoundError, ConflictError, ServiceError, DatabaseError) as exc:
            _fail(ctx, exc, EXIT_FAILURE)
        except BrokenPipeError:
            sys.stderr.close()
            ctx.exit(EXIT_FAILURE)
        finally:
            obj = ctx.obj
            if isinstance(obj, AppContext):
                obj.close()


def _fail(ctx, exc: Exception, code: int):
    prefix = "query: " if isinstance(exc, QueryError) else ""
    typer.echo(f"supportdesk: error: {prefix}{exc}", err=True)
    ctx.exit(code)


app = typer.Typer(
    cls=UserFacingGroup,
    help="A keyboard-driven help desk that lives in the terminal.",
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, "--config", help="Config file (else $SUPPORTDESK_CONFIG, else the XDG path)."),
    db: Optional[str] = typer.Option(None, "--db", help="Database URL or SQLite path (else $SUPPORTDESK_DB, else config)."),
    as_agent: Optional[str] = typer.Option(None, "--as", help="Act as this agent (default: your login name)."),
):
    ctx.obj = AppContext(config_path=config, db_option=db, as_agent=as_agent,
                         needs_agent=ctx.invoked_subcommand not in NO_AGENT_COMMANDS)
    if ctx.invoked_subcommand is None:
        from supportdesk.cli.setup import open_console

        open_console(ctx.obj)


def _register() -> None:
    from supportdesk.cli import agents, daemon, db, mail, outbox, setup, sla, stats, tickets

    app.add_typer(tickets.app, name="tickets")
    app.add_typer(agents.app, name="agents")
    app.add_typer(agents.queues_app, name="queues")
    app.add_typer(db.app, name="db")
    setup.register(app)
    mail.register(app)
    outbox.register(app)
    sla.register(app)
    stats.register(app)
    daemon.register(app)


_register()


def run() -> None:
    app(prog_name="supportdesk")


if __name__ == "__main__":
    run()
