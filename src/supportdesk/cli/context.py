"""What every command needs: settings, the database, who is acting."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

import typer

from supportdesk.config import Settings, database_url, load_settings
from supportdesk.db import Database
from supportdesk.query import QueryContext


@dataclass
class AppContext:
    config_path: str | None = None
    db_option: str | None = None
    as_agent: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)

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
            if check:
                self._db.check_schema()
        return self._db

    @property
    def login(self) -> str:
        if self.as_agent:
            return self.as_agent.lower()
        try:
            return getpass.getuser().lower()
        except (KeyError, OSError):
            return os.environ.get("USER", "unknown").lower()

    def query_context(self) -> QueryContext:
        local = datetime.now().astimezone().tzinfo or timezone.utc
        return QueryContext(now=datetime.now(timezone.utc), me=self.login, tz=local)

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
