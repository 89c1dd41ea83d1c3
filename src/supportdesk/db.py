"""Engine and sessions, SQLite pragmas, migrations, and the change marker."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

# The newest migration this program knows; a test keeps it equal to Alembic's head.
SCHEMA_REVISION = "0004"
BUSY_TIMEOUT_MS = 5000
CACHE_KIB = 32768


TOUCHED = "touched_tickets"


def touch(session: Session, ticket_ids) -> None:
    """Note tickets changed in this transaction, for the before-commit hooks (SLA recomputation)."""
    session.info.setdefault(TOUCHED, set()).update(ticket_ids)


class DatabaseError(Exception):
    """A database problem a user can act on (one line, no traceback)."""


class SchemaError(DatabaseError):
    pass


def migrations_dir() -> Path:
    """Alembic scripts: inside the installed wheel, or at the top of a source checkout."""
    packaged = resources.files("supportdesk") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if checkout.is_dir():
        return checkout
    raise DatabaseError("migrations are missing from this installation; reinstall supportdesk")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_db_engine(url: str) -> Engine:
    if is_sqlite(url):
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


class Database:
    """One database: where it is, how to open sessions on it, its schema state."""

    def __init__(self, url: str):
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine = create_db_engine(url)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.sqlite else self.engine
        # Named, so registering a hook again (e.g. after a config reload) replaces it.
        self.before_commit: dict[str, Callable[[Session, set[int]], None]] = {}

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with translate_errors(self.url), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)
        so read-modify-write never dead-ends in SQLITE_BUSY halfway.  Before it commits,
        the `before_commit` hooks see every ticket the services touched."""
        with translate_errors(self.url), Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session
                touched = session.info.pop(TOUCHED, set())
                if touched:
                    session.flush()
                    for hook in list(self.before_commit.values()):
                        hook(session, touched)

    def current_revision(self) -> str | None:
        with translate_errors(self.url), self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    def check_schema(self) -> None:
        """Refuse to work on a database this program does not match."""
        path = sqlite_path(self.url)
        if path is not None and not path.exists():
            raise SchemaError(f"no database at {path}; run `supportdesk init` to create it")
        revision = self.current_revision()
        if revision is None:
            raise SchemaError(f"the database at {self.display_url()} is not initialised; run `supportdesk init`")
        if revision == SCHEMA_REVISION:
            return
        if revision in known_revisions():
            raise SchemaError(
                f"the database schema is older than this program ({revision} < {SCHEMA_REVISION}); "
                "run `supportdesk db upgrade`"
            )
        raise SchemaError(
            f"the database schema ({revision}) is newer than this program knows; upgrade supportdesk"
        )

    def upgrade(self) -> tuple[str | None, str]:
        """Run migrations up to the newest; returns (before, after)."""
        from alembic import command
        from alembic.config import Config

        path = sqlite_path(self.url)
        if path is not None:
            ensure_writable_parent(path)
        before = self.current_revision()
        config = Config()
        config.set_main_option("script_location", str(migrations_dir()))
        with translate_errors(self.url), self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return before, self.current_revision() or SCHEMA_REVISION

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite); a cheap "something changed"."""
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA data_version").scalar())

    def backup(self, target: Path) -> None:
        """An online, consistent copy while others keep writing (SQLite backup API)."""
        path = sqlite_path(self.url)
        if path is None:
            raise DatabaseError("db backup supports SQLite databases; use pg_dump for PostgreSQL")
        target = Path(target)
        if target.exists():
            raise DatabaseError(f"{target} already exists; choose a new file name")
        ensure_writable_parent(target)
        source = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        dest = sqlite3.connect(target)
        try:
            source.backup(dest, pages=1024)
        except sqlite3.Error as exc:
            dest.close()
            target.unlink(missing_ok=True)
            raise DatabaseError(f"backup failed: {exc}") from None
        finally:
            source.close()
        dest.close()

    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    return {rev.revision for rev in script.walk_revisions()}


def ensure_writable_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create directory {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DatabaseError(f"database path {path} is not writable")


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver errors a user can act on into one clear line."""
    try:
        yield
    except OperationalError as exc:
        message = str(exc.orig) if exc.orig is not None else str(exc)
        if "locked" in message or "busy" in message:
            raise DatabaseError(
                f"the database is locked by another writer (waited {BUSY_TIMEOUT_MS // 1000} s); try again"
            ) from None
        if "unable to open" in message or "readonly" in message:
            raise DatabaseError(f"cannot open the database at {make_url(url).database}: {message}") from None
        if "no such table" in message:
            raise SchemaError(f"the database is not initialised ({message}); run `supportdesk init`") from None
        raise
