"""What every command needs: settings, the database, who is acting."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import typer

from supportdesk.config import Settings, database_url, load_settings
from supportdesk.db import Database
from supportdesk.query import QueryContext

if TYPE_CHECKING:
    from supportdesk.permissions import Identity


@dataclass
class AppContext:
    config_path: str | None = None
    db_option: str | None = None
    as_agent: str | None = None
    needs_agent: bool = True  # False for set-up and mail plumbing (init, demo, doctor, daemon, fetch, …)
    _settings: Settings | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)
    _identity: "Identity | None" = field(default=None, repr=False)
    _as_checked: bool = field(default=False, repr=False)
    _db_checked: bool = field(default=False, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def url(self) -> str:
        return database_url(self.db_option, self.settings)

    def database(self, *, check: bool = True) -> Database:
        if self._db is None:
            self._db = Database(self.url)
            from supportdesk.sla.policy import install as install_sla
            install_sla(self._db, self.settings)
        if check and not self._db_checked:
            self._db.check_schema()
            self._db_checked = True
            if self.needs_agent:
                self.identity()
        return self._db

    @property
    def real_login(self) -> str:
        """Who is running the program: the login name on this server."""
        try:
            return getpass.getuser().lower()
        except (KeyError, OSError):
            return os.environ.get("USER", "unknown").lower()

    @property
    def login(self) -> str:
        """The acting agent: the real login, or `--as` when the real login may use it."""
        if self.as_agent and self.as_agent.lower() != self.real_login:
            self._check_as()
            return self.as_agent.lower()
        return self.real_login

    def _check_as(self) -> None:
        """`--as` is for admins (and for test fixtures, which set SUPPORTDESK_ALLOW_AS=1)."""
        from supportdesk.permissions import ALLOW_AS_ENV, is_admin
        from supportdesk.tickets import ForbiddenError

        if self._as_checked or os.environ.get(ALLOW_AS_ENV) == "1":
            return
        with self.database().read() as session:
            self._as_checked = is_admin(session, self.real_login)
        if not self._as_checked:
            raise ForbiddenError(f"--as {self.as_agent.lower()}: only admins may act as another agent "
                                 f"(you are {self.real_login})")

    def identity(self) -> "Identity":
        """The acting agent with their role and queues, read once; refuses unknown logins."""
        if self._identity is None:
            from supportdesk.permissions import identify

            login = self.login
            with self.database().read() as session:
                self._identity = identify(session, login)
        return self._identity

    def require_admin(self, what: str) -> None:
        from supportdesk.permissions import require_admin

        require_admin(self.identity(), what)

    def query_context(self) -> QueryContext:
        local = datetime.now().astimezone().tzinfo or timezone.utc
        queue_ids = self.identity().actor.queue_ids if self.needs_agent else None
        return QueryContext(now=datetime.now(timezone.utc), me=self.login, tz=local, queue_ids=queue_ids)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def app_context(ctx: typer.Context) -> AppContext:
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext()
    return root.obj


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
