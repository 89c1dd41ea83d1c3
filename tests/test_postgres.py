"""PostgreSQL: migrate-to from SQLite, its own full-text search, the change marker, connect errors.

These always run against a real server (the fixture's, or a throwaway cluster), whichever
database the rest of the run uses.
"""

from __future__ import annotations

import io
import json
import socket
import time

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from supportdesk.cli.main import app
from supportdesk.db import Database
from supportdesk.demo import seed
from supportdesk.listing import ticket_ids
from supportdesk.models import Message, Ticket, utcnow
from supportdesk.query import QueryContext
from supportdesk.tickets import add_agent, create_ticket, merge_tickets, resolve_actor
from supportdesk.transfer import export_tickets

CTX = QueryContext()


@pytest.fixture
def sqlite_source(tmp_path):
    """A SQLite database with demo tickets, a merge and a ticket that points at another."""
    path = tmp_path / "source.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    with database.write() as session:
        add_agent(session, "importer", role="admin")
        seed(session, me="importer", tickets=40)
    with database.write() as session:
        merge_tickets(session, 40, 3, resolve_actor(session, "importer"))
    yield database
    database.close()


def _run(*args: str, config):
    return CliRunner().invoke(app, ["--config", str(config), "--as", "importer", *args], catch_exceptions=False)


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('[[mailbox]]\nname = "support"\naddress = "support@example.test"\nqueue = "General"\n',
                    encoding="utf-8")
    monkeypatch.delenv("SUPPORTDESK_DB", raising=False)
    monkeypatch.setenv("SUPPORTDESK_ALLOW_AS", "1")
    return path


def _export(database: Database) -> list[dict]:
    out = io.StringIO()
    with database.read() as session:
        export_tickets(session, ticket_ids(session, "", CTX, sort="id"), out, utcnow())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_migrate_to_copies_everything_with_the_same_ids(sqlite_source, empty_postgres, config):
    result = _run("--db", sqlite_source.url, "db", "migrate-to", empty_postgres, config=config)
    assert result.exit_code == 0, result.output
    assert "Copied" in result.output and "tickets" in result.output
    target = Database(empty_postgres)
    try:
        target.check_schema()
        assert _export(target) == _export(sqlite_source)
        with sqlite_source.read() as a, target.read() as b:
            for table in ("tickets", "messages", "events", "customers", "outbox", "attachments", "ticket_tags"):
                assert a.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == \
                    b.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar(), table
            assert b.get(Ticket, 40).merged_into_id == 3
            word = a.execute(sa.select(Message.body_text).where(Message.ticket_id == 5)).scalars().first().split()[0]
            assert ticket_ids(a, word, CTX, sort="id") == ticket_ids(b, word, CTX, sort="id") != []
        # Sequences continue after the copied ids.
        assert _one_ticket(target, "After the move", "fresh words") == 41
        with target.read() as session:
            assert ticket_ids(session, '"fresh words"', CTX) == [41]
    finally:
        target.close()


def test_migrate_to_refuses_a_database_that_is_not_empty(sqlite_source, postgres, config):
    result = _run("--db", sqlite_source.url, "db", "migrate-to", postgres.url, config=config)
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "is not empty (agents has rows)" in result.output
    with postgres.read() as session:
        assert session.execute(sa.text("SELECT count(*) FROM tickets")).scalar() == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_that_cannot_connect_is_one_line(sqlite_source, config):
    port = _closed_port()
    url = f"postgresql+psycopg://desk:secret@127.0.0.1:{port}/desk"
    result = _run("--db", sqlite_source.url, "db", "migrate-to", url, config=config)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line and "secret" not in line
    assert f"cannot connect to the database at postgresql://desk@127.0.0.1:{port}/desk: " in line
    result = _run("--db", url, "tickets", "list", config=config)
    assert result.exit_code == 1
    assert f"error: cannot connect to the database at postgresql://desk@127.0.0.1:{port}/desk: " in result.output


def _one_ticket(database: Database, subject: str, body: str) -> int:
    with database.write() as session:
        alice = resolve_actor(session, "alice")
        return create_ticket(session, alice, requester_email="c@example.test", subject=subject, body=body,
                             queue="General").id


def test_search_documents_follow_every_change(postgres):
    """The triggers keep ticket_search current: new messages, edits, moves (merge) and deletes."""
    first = _one_ticket(postgres, "Printer on fire", "The déjà-vu printer smokes")
    second = _one_ticket(postgres, "Invoice late", "Please resend the invoice")

    def found(text):
        with postgres.read() as session:
            return ticket_ids(session, text, CTX, sort="id")

    assert found("deja") == [first]
    assert found('"deja vu printer"') == [first]
    assert found("smok*") == [first]
    assert found('"fire the"') == []  # the subject and the body are separate fields
    assert found("invoice") == [second]
    with postgres.write() as session:
        session.execute(sa.update(Message.__table__).where(Message.__table__.c.ticket_id == second)
                        .values(body_text="nothing here"))
    assert found("resend") == []
    with postgres.write() as session:
        merge_tickets(session, second, first, resolve_actor(session, "alice"))
    assert found("nothing") == [first]
    with postgres.write() as session:
        session.execute(sa.update(Ticket.__table__).where(Ticket.__table__.c.id == first).values(subject="Toner"))
    assert found("toner") == [first]
    with postgres.write() as session:
        session.execute(sa.delete(Message.__table__).where(Message.__table__.c.body_text == "nothing here"))
    assert found("nothing") == []


def test_data_version_moves_when_another_connection_commits(postgres):
    other = Database(postgres.url)
    try:
        before = postgres.data_version()
        assert postgres.data_version() == before
        with other.read() as session:
            session.execute(sa.text("SELECT count(*) FROM tickets"))
        assert postgres.data_version() == before
        _one_ticket(other, "Hello", "world")
        deadline = time.monotonic() + 2
        while postgres.data_version() == before and time.monotonic() < deadline:
            time.sleep(0.01)
        changed = postgres.data_version()
        assert changed != before
        time.sleep(0.1)
        assert postgres.data_version() == changed
    finally:
        other.close()


def test_data_version_survives_a_lost_listen_connection(postgres):
    """A server restart or a killed backend: the next call reconnects and reports a change."""
    before = postgres.data_version()
    pid = postgres._listener.connection.info.backend_pid
    with postgres.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    time.sleep(0.1)
    after = postgres.data_version()
    assert after != before
    _one_ticket(postgres, "Still", "listening")
    deadline = time.monotonic() + 2
    while postgres.data_version() == after and time.monotonic() < deadline:
        time.sleep(0.01)
    assert postgres.data_version() != after
