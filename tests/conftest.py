"""Shared fixtures: a real, migrated SQLite database in a temp dir, actors, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supportdesk.db import Database
from supportdesk.tickets import Actor, add_agent, ensure_queue

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """Migrate once; each test copies the file (migrations take ~0.3 s)."""
    path = tmp_path_factory.mktemp("template") / "desk.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.close()
    return path


@pytest.fixture
def db_path(tmp_path, template_db) -> Path:
    target = tmp_path / "desk.db"
    target.write_bytes(template_db.read_bytes())
    return target


@pytest.fixture
def database(db_path):
    database = Database(f"sqlite:///{db_path}")
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
def cli_env(tmp_path, db_path, database, monkeypatch):
    """Environment for running the CLI against the fixture database as alice."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[[mailbox]]\nname = "support"\naddress = "support@example.test"\nqueue = "General"\n'
        '[tickets]\nsubject_tag = "Support"\n',
        encoding="utf-8",
    )
    env = {"SUPPORTDESK_CONFIG": str(config), "SUPPORTDESK_DB": str(db_path)}
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
