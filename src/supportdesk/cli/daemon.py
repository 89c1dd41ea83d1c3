"""`supportdesk daemon`"""

from __future__ import annotations

import signal

import typer

from supportdesk.cli.context import app_context
from supportdesk.config import ConfigError, load_settings


def register(app: typer.Typer) -> None:
    app.command("daemon")(daemon)


def daemon(
    ctx: typer.Context,
    timer_interval: float = typer.Option(60.0, "--timer-interval", min=0.1, max=86400,
                                         help="Seconds between SLA/automation runs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
):
    """Fetch mail (IMAP IDLE), send the outbox and run SLA timers, forever. SIGHUP reloads the config."""
    import logging

    from supportdesk.daemon import Supervisor, configure_logging, parts_for

    app_ctx = app_context(ctx)
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    database = app_ctx.database()
    from supportdesk.automation import check_config

    check_config(database, app_ctx.settings)  # a rule naming a missing queue or agent stops the start
    state = {"settings": app_ctx.settings}

    def make_parts():
        return parts_for(database, state["settings"], timer_interval=timer_interval)

    supervisor = Supervisor(make_parts)

    def reload(*_):
        try:
            settings = load_settings(app_ctx.config_path)
            check_config(database, settings)
        except ConfigError as exc:
            logging.getLogger("supportdesk.daemon").error("reload refused, keeping the old config: %s", exc,
                                                          extra={"part": "daemon"})
            return
        from supportdesk.sla.policy import install as install_sla

        state["settings"] = settings
        install_sla(database, settings)
        supervisor.reload.set()

    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop.set())
    signal.signal(signal.SIGHUP, reload)
    supervisor.serve()
