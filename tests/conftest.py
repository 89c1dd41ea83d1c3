"""Shared fixtures: a real, migrated database (a SQLite file in a temp dir, or a PostgreSQL
database when SUPPORTDESK_TEST_DATABASE_URL names a server), actors, a CLI runner."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from supportdesk.db import Database
from supportdesk.tickets import Actor, add_agent, ensure_queue

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"

# A PostgreSQL server (postgresql+psycopg://user@host:port/db): the database tests then run there.
TEST_DATABASE_URL = os.environ.get("SUPPORTDESK_TEST_DATABASE_URL", "").strip()
ON_POSTGRESQL = bool(TEST_DATABASE_URL)
SQLITE_ONLY = "SQLite-specific (database file, PRAGMA or backup API): covered by the SQLite run"


def pytest_configure(config):
    config.addinivalue_line("markers", f"sqlite_only: skipped when SUPPORTDESK_TEST_DATABASE_URL is set ({SQLITE_ONLY})")


def pytest_collection_modifyitems(config, items):
    if not ON_POSTGRESQL:
        return
    skip = pytest.mark.skip(reason=SQLITE_ONLY)
    for item in items:
        if "sqlite_only" in item.keywords:
            item.add_marker(skip)


def postgres_installed() -> bool:
    return shutil.which("pg_config") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server's URL: SUPPORTDESK_TEST_DATABASE_URL, else a throwaway cluster
    started with scripts/postgres-test-cluster (stopped at the end of the session, or when
    this process dies without getting there)."""
    if TEST_DATABASE_URL:
        yield TEST_DATABASE_URL
        return
    if not postgres_installed():
        if in_ci():
            pytest.fail("PostgreSQL is required under CI=true (scripts/test installs postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and SUPPORTDESK_TEST_DATABASE_URL is unset")
    script = REPO / "scripts" / "postgres-test-cluster"
    started = subprocess.run([str(script), "start", str(os.getpid())], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"scripts/postgres-test-cluster start failed: {started.stderr.strip()}")
    directory, url = started.stdout.split()
    yield url
    subprocess.run([str(script), "stop", directory], capture_output=True)


_OWN_DATABASES = itertools.count(1)


@pytest.fixture
def empty_postgres(postgres_server):
    """A new, empty PostgreSQL database (no schema), dropped afterwards: for tests that must run
    on PostgreSQL whatever database the rest of the run uses."""
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"sdtest_{os.getpid()}_own_{next(_OWN_DATABASES)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def postgres(empty_postgres):
    """A migrated PostgreSQL database of its own with the General queue and alice, an admin."""
    database = Database(empty_postgres)
    database.upgrade()
    with database.write() as session:
        ensure_queue(session, "General", "support@example.test")
        add_agent(session, "alice", name="Alice", role="admin")
    yield database
    database.close()


class PostgresDatabases:
    """Fresh databases on one server: a template migrated once, then `CREATE DATABASE … TEMPLATE`
    for each test (~0.1 s, like copying the SQLite file)."""

    def __init__(self, server_url: str):
        self.server = make_url(server_url)
        self.admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.prefix = f"sdtest_{os.getpid()}"
        self.count = 0
        self.template = f"{self.prefix}_template"
        with self.admin.connect() as conn:
            self.strategy = " STRATEGY FILE_COPY" if conn.dialect.server_version_info >= (15,) else ""
        self._drop(self.template)
        self._execute(f'CREATE DATABASE "{self.template}"')
        database = Database(self.url(self.template))
        database.upgrade()
        database.close()

    def url(self, name: str) -> str:
        return self.server.set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        self.count += 1
        name = f"{self.prefix}_{self.count}"
        self._drop(name)
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"{self.strategy}')
        return self.url(name)

    def drop(self, url: str) -> None:
        self._drop(make_url(url).database)

    def close(self) -> None:
        self._drop(self.template)
        self.admin.dispose()

    def _drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(sql)


class SqliteDatabases:
    """Fresh databases as copies of one migrated file (migrations take ~0.3 s)."""

    def __init__(self, template: Path, directory: Path):
        self.template, self.directory, self.count = template, directory, 0

    def create(self) -> str:
        self.count += 1
        target = self.directory / f"desk-{self.count}.db"
        target.write_bytes(self.template.read_bytes())
        return f"sqlite:///{target}"

    def drop(self, url: str) -> None:
        Path(make_url(url).database).unlink(missing_ok=True)


@pytest.fixture(scope="session", autouse=True)
def allow_as():
    """Tests act as alice, bob… whoever runs them: `--as` is honoured for tests (docs/decisions.md);
    tests/test_identity.py switches it off where refusing `--as` is the point."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUPPORTDESK_ALLOW_AS", "1")
        yield


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """The migrated SQLite file each test copies."""
    if ON_POSTGRESQL:
        pytest.skip(SQLITE_ONLY)
    path = tmp_path_factory.mktemp("template") / "desk.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.close()
    return path


@pytest.fixture(scope="session")
def databases(request, tmp_path_factory):
    """Makes fresh, migrated, empty databases of the run's kind: `.create()` → URL, `.drop(url)`."""
    if ON_POSTGRESQL:
        factory = PostgresDatabases(request.getfixturevalue("postgres_server"))
        yield factory
        factory.close()
        return
    yield SqliteDatabases(request.getfixturevalue("template_db"), tmp_path_factory.mktemp("databases"))


@pytest.fixture
def db_path(tmp_path, template_db) -> Path:
    target = tmp_path / "desk.db"
    target.write_bytes(template_db.read_bytes())
    return target


@pytest.fixture
def db_url(request, databases) -> str:
    """The test's database: the SQLite file `db_path`, or a fresh PostgreSQL database."""
    if not ON_POSTGRESQL:
        return f"sqlite:///{request.getfixturevalue('db_path')}"
    url = databases.create()
    request.addfinalizer(lambda: databases.drop(url))
    return url


@pytest.fixture
def database(db_url):
    database = Database(db_url)
    with database.write() as session:
        for name, address in (("General", "support@example.test"), ("Billing", "billing@example.test")):
            ensure_queue(session, name, address)
        add_agent(session, "alice", name="Alice", role="admin")
        add_agent(session, "bob", name="Bob")
    yield database
    database.close()


@pytest.fixture
def alice(database) -> Actor:
    from supportdesk.tickets import resolve_actor

    with database.read() as session:
        return resolve_actor(session, "alice")


@pytest.fixture
def bob(database) -> Actor:
    from supportdesk.tickets import resolve_actor

    with database.read() as session:
        return resolve_actor(session, "bob")


@pytest.fixture
def cli_env(request, tmp_path, db_url, database, monkeypatch):
    """Environment for running the CLI against the fixture database as alice."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[[mailbox]]\nname = "support"\naddress = "support@example.test"\nqueue = "General"\n'
        '[tickets]\nsubject_tag = "Support"\n',
        encoding="utf-8",
    )
    where = db_url if ON_POSTGRESQL else str(request.getfixturevalue("db_path"))
    env = {"SUPPORTDESK_CONFIG": str(config), "SUPPORTDESK_DB": where, "SUPPORTDESK_ALLOW_AS": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def cli(cli_env):
    """Run `supportdesk …` in-process (Typer's runner) as alice; returns the Result."""
    from typer.testing import CliRunner

    from supportdesk.cli.main import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, as_agent: str = "alice"):
        return runner.invoke(app, ["--as", as_agent, *args], input=input, catch_exceptions=False)

    return invoke


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def dovecot_server():
    from tests.servers import Dovecot, dovecot_binary

    binary = dovecot_binary()
    if binary is None:
        if in_ci():
            pytest.fail("Dovecot is required under CI=true (scripts/test installs dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    server = Dovecot(binary)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dovecot_tls_server():
    """A second Dovecot that speaks TLS (imaps and STARTTLS) with a self-signed certificate."""
    from tests.servers import Dovecot, dovecot_binary

    binary = dovecot_binary()
    if binary is None:
        if in_ci():
            pytest.fail("Dovecot is required under CI=true (scripts/test installs dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    server = Dovecot(binary, tls=True)
    yield server
    server.stop()


@pytest.fixture
def imap_account(dovecot_server):
    """A fresh IMAP user with an empty INBOX on the real Dovecot."""
    return dovecot_server.account()
