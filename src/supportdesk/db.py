"""Engine and sessions, SQLite pragmas, migrations, and the change marker."""

from __future__ import annotations

import os
import random
import sqlite3
import time
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
SCHEMA_REVISION = "0006"
BUSY_TIMEOUT_MS = 5000
# After busy_timeout runs out, BEGIN is tried this many times in all, backing off with jitter.
WRITE_ATTEMPTS = 4
RETRY_BASE_SECONDS = 0.1
CACHE_KIB = 4096
"""SQLite's page cache per connection.  Every pooled connection (the console keeps one per
worker thread) fills its own, so it multiplies: at 32 MiB the console reached 325 MB with
1,000,000 tickets, at 4 MiB 114 MB; imports and bulk updates were no slower (the OS caches
the file anyway).  No mmap (SQLite's default): mapped pages would count as the console's RSS."""


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


def public_url(url: str) -> str:
    """The URL without password or driver name, for messages: postgresql://user@host:port/db."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.render_as_string(hide_password=True)
    where = f"{parsed.host or 'localhost'}" + (f":{parsed.port}" if parsed.port else "")
    user = f"{parsed.username}@" if parsed.username else ""
    return f"{backend}://{user}{where}/{parsed.database or ''}"


def create_db_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"{url!r} is not a database URL (sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)") from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername in ("postgresql", "postgres"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    try:
        if is_sqlite(url):
            engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(engine)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise DatabaseError(
            f"cannot use the database at {public_url(url)}: {exc}; for PostgreSQL install supportdesk[postgresql]"
        ) from None
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
        self._listener: ChangeListener | None = None

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with translate_errors(self.url), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)
        so read-modify-write never dead-ends in SQLITE_BUSY halfway.  Before it commits,
        the `before_commit` hooks see every ticket the services touched.

        Why retries live here, around BEGIN only: a `with` body cannot be re-run, but with
        IMMEDIATE + busy_timeout the one place SQLITE_BUSY surfaces is BEGIN itself (a
        writer held the lock longer than busy_timeout, or WAL recovery), before the body
        has done anything.  So BEGIN is retried a few times with jittered backoff, which
        spreads out writers that woke together; COMMIT cannot hit BUSY in WAL mode."""
        with translate_errors(self.url):
            session, transaction = self._begin_write()
            with session, transaction:
                yield session
                touched = session.info.pop(TOUCHED, set())
                if touched:
                    session.flush()
                    for hook in list(self.before_commit.values()):
                        hook(session, touched)

    def _begin_write(self):
        for attempt in range(WRITE_ATTEMPTS):
            session = Session(self._writer, expire_on_commit=False)
            transaction = session.begin()
            try:
                session.connection()
                return session, transaction
            except OperationalError as exc:
                session.close()
                if not is_busy(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
            time.sleep(random.uniform(0.5, 1.5) * RETRY_BASE_SECONDS * 2 ** attempt)
        raise AssertionError("unreachable")

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

    def analyze(self) -> None:
        """Refresh the query planner's statistics.  Without them SQLite reads the due-time views
        through the status index (about 1 s instead of 6 ms at 1M tickets), so bulk loads and
        upgrades end with this."""
        with translate_errors(self.url), self.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    def data_version(self) -> int:
        """Changes whenever another connection commits; a cheap "something changed".  SQLite:
        `PRAGMA data_version`.  PostgreSQL: how many `supportdesk_changes` notifications a
        dedicated LISTEN connection has heard (migration 0005 sends one per committed change),
        so polling costs no round trip."""
        if not self.sqlite:
            if self._listener is None:
                with translate_errors(self.url):
                    self._listener = ChangeListener(self.engine)
            return self._listener.version()
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
            # One step: a read transaction on a WAL snapshot, so writers go on; in small steps
            # every commit by another process restarts the copy, which may never finish.
            source.backup(dest, pages=-1)
        except sqlite3.Error as exc:
            dest.close()
            target.unlink(missing_ok=True)
            raise DatabaseError(f"backup failed: {exc}") from None
        finally:
            source.close()
        dest.close()

    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


class ChangeListener:
    """A PostgreSQL connection that LISTENs on `supportdesk_changes`; its version is the
    number of notifications received so far."""

    CHANNEL = "supportdesk_changes"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.count = 0
        self.connection = self._connect()

    def _connect(self):
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        try:
            connection = psycopg.connect(*args, **kwargs, autocommit=True)
            connection.execute(f"LISTEN {self.CHANNEL}")
        except psycopg.OperationalError as exc:
            raise OperationalError("LISTEN", None, exc) from None
        return connection

    def version(self) -> int:
        """Notifications heard so far; after a lost connection, one more (changes may have been missed)."""
        import psycopg

        try:
            # A timeout above zero makes psycopg read the socket, which also notices a lost connection.
            self.count += sum(1 for _ in self.connection.notifies(timeout=0.001))
        except psycopg.OperationalError:
            self.connection.close()
            self.connection = self._connect()
            self.count += 1
        return self.count

    def close(self) -> None:
        self.connection.close()


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


def is_busy(exc: OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED, however the driver words it."""
    message = str(exc.orig) if exc.orig is not None else str(exc)
    return "locked" in message or "busy" in message


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver errors a user can act on into one clear line."""
    try:
        yield
    except OperationalError as exc:
        message = str(exc.orig) if exc.orig is not None else str(exc)
        if is_busy(exc):
            raise DatabaseError(
                f"the database is locked by another writer (tried {WRITE_ATTEMPTS} times, "
                f"{BUSY_TIMEOUT_MS // 1000} s each); try again"
            ) from None
        if "unable to open" in message or "readonly" in message:
            raise DatabaseError(f"cannot open the database at {make_url(url).database}: {message}") from None
        if not is_sqlite(url) and ("connect" in message or "does not exist" in message
                                   or "authentication" in message or "password" in message):
            first = message.strip().splitlines()[0].removeprefix("connection failed: ")
            raise DatabaseError(f"cannot connect to the database at {public_url(url)}: {first}") from None
        if "no such table" in message:
            raise SchemaError(f"the database is not initialised ({message}); run `supportdesk init`") from None
        raise
