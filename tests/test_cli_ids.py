"""Ids and counts on the command line: a number no database column can hold is an ordinary
"not found" (one line, the command's exit code, nothing changed), never a traceback; a word
that is not a number is a usage error. Runs on SQLite and on PostgreSQL (32-bit ids there)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from supportdesk.models import Event, Message, Outbox, RawMessage, Ticket

HUGE = "99999999999999999999"  # beyond 64 bits: OverflowError on SQLite, once
BEYOND_INT32 = "3000000000"  # fits SQLite's rowid, not PostgreSQL's integer id columns
TOO_MANY_DIGITS = "9" * 5000  # beyond what Python's int() parses


@pytest.fixture
def desk(cli, tmp_path):
    """A ticket with a queued reply (one outbox row) and a quarantined raw message."""
    body = tmp_path / "body.txt"
    body.write_text("Hello\n", encoding="utf-8")
    created = cli("tickets", "create", "--from", "bob@acme.test", "--subject", "Printer", "--body-file", str(body))
    assert created.exit_code == 0, created.output
    ticket_id = int(created.output)
    replied = cli("tickets", "reply", str(ticket_id), "--body-file", str(body))
    assert replied.exit_code == 0, replied.output
    ingested = cli("ingest", "--mailbox", "support", input=b"\x00\x01\x02 not mail at all \xff")
    assert ingested.exit_code == 0, ingested.output
    raw_id = ingested.output.split("#")[1].split()[0]
    return {"ticket": str(ticket_id), "outbox": str(int(replied.output)), "raw": raw_id, "body": str(body)}


def _outbox_id(database, message_id: str) -> str:
    with database.read() as session:
        return str(session.execute(sa.select(Outbox.id).where(Outbox.message_id == int(message_id))).scalar_one())


def _state(database) -> dict:
    with database.read() as session:
        return {
            "tickets": session.execute(sa.select(Ticket.id, Ticket.status, Ticket.version).order_by(Ticket.id)).all(),
            "events": session.execute(sa.select(sa.func.count()).select_from(Event)).scalar(),
            "messages": session.execute(sa.select(sa.func.count()).select_from(Message)).scalar(),
            "outbox": session.execute(sa.select(Outbox.id, Outbox.status).order_by(Outbox.id)).all(),
            "raw": session.execute(sa.select(RawMessage.id, RawMessage.state).order_by(RawMessage.id)).all(),
        }


def _commands(big: str, desk: dict, outbox: str) -> list[tuple[tuple[str, ...], str | None, int, str]]:
    """(arguments, standard input, exit code, text of the one line) for every command taking ids."""
    t, body = desk["ticket"], desk["body"]
    return [
        (("tickets", "show", big), None, 1, f"no ticket #{big}"),
        (("tickets", "show", f"{big}", "--format", "json", "--events"), None, 1, f"no ticket #{big}"),
        (("tickets", "reply", big, "--body-file", body), None, 1, f"no ticket #{big}"),
        (("tickets", "forward", big, "--to", "vendor@parts.test"), None, 1, f"no ticket #{big}"),
        (("tickets", "note", big, "--body-file", body), None, 1, f"no ticket #{big}"),
        (("tickets", "merge", big, t), None, 1, f"no ticket #{big}"),
        (("tickets", "merge", t, big), None, 1, f"no ticket #{big}"),
        (("tickets", "update", big, "--status", "open"), None, 1, f"no such ticket: #{big}"),
        (("tickets", "update", t, big, "--status", "open", "--yes"), None, 1, f"no such ticket: #{big}"),
        (("tickets", "update", f"#{big}", "--status", "open", "--if-version", "1"), None, 1, f"no such ticket: #{big}"),
        (("tickets", "update", "-", "--status", "open", "--yes"), f"{t}\n{big}\n", 1, f"no such ticket: #{big}"),
        (("tickets", "close", t, big, "--yes"), None, 1, f"no such ticket: #{big}"),
        (("tickets", "close", big, "--dry-run"), None, 1, f"no such ticket: #{big}"),
        (("tickets", "close", "-", "--reply-file", body, "--yes"), f"{big} {t}", 1, f"no such ticket: #{big}"),
        (("outbox", "retry", big), None, 1, f"no outbox message #{big}"),
        (("outbox", "cancel", outbox, big), None, 1, f"no outbox message #{big}"),
        (("outbox", "cancel", "-"), f"{outbox},{big}", 1, f"no outbox message #{big}"),
        (("quarantine", "show", big), None, 1, f"no raw message #{big}"),
        (("quarantine", "show", big, "--raw"), None, 1, f"no raw message #{big}"),
        (("quarantine", "retry", big), None, 1, f"not in quarantine: #{big}"),
        (("quarantine", "release", desk["raw"], big), None, 1, f"not in quarantine: #{big}"),
    ]


@pytest.mark.parametrize("big", [HUGE, BEYOND_INT32])
@pytest.mark.parametrize("as_agent", ["alice", "bob"])
def test_an_id_beyond_any_column_is_not_found(cli, desk, database, big, as_agent):
    if as_agent == "bob":  # a limited agent: the queue check runs on the ids first
        assert cli("agents", "queues", "bob", "--set", "General").exit_code == 0
    before = _state(database)
    outbox = _outbox_id(database, desk["outbox"])
    for args, stdin, code, text in _commands(big, desk, outbox):
        result = cli(*args, input=stdin, as_agent=as_agent)
        assert result.exit_code == code, (args, result.output)
        assert text in result.output, (args, result.output)
        assert result.output.strip().count("\n") == 0, (args, result.output)
        assert "Traceback" not in result.output
    assert _state(database) == before


@pytest.mark.parametrize("word", ["abc", "12x", "²", "-", TOO_MANY_DIGITS])
def test_a_word_that_is_not_an_id_is_a_usage_error(cli, desk, database, word):
    before = _state(database)
    commands = [
        ("tickets", "show", word), ("tickets", "note", word, "--body-file", desk["body"]),
        ("tickets", "merge", word, desk["ticket"]),
        ("tickets", "update", word, "--status", "open"), ("tickets", "close", desk["ticket"], word, "--yes"),
        ("outbox", "cancel", word), ("quarantine", "show", word), ("quarantine", "release", word),
    ]
    for args in commands:
        if word == "-" and args[1] in ("update", "close", "cancel"):
            continue  # '-' reads ids from standard input there
        result = cli(*args, input="")
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert _state(database) == before


def test_ids_from_standard_input_must_be_numbers(cli, desk, database):
    before = _state(database)
    for args in (("tickets", "close", "-", "--yes"), ("outbox", "retry", "-")):
        for junk in ("12 abc", "²", TOO_MANY_DIGITS):
            result = cli(*args, input=junk)
            assert result.exit_code == 2, (args, junk[:20], result.output)
            assert "standard input" in result.output and result.output.strip().count("\n") == 0
    assert _state(database) == before


@pytest.mark.parametrize("big", [HUGE, BEYOND_INT32, "9223372036854775808"])
def test_a_huge_limit_lists_everything(cli, desk, big):
    result = cli("tickets", "list", "--limit", big, "--format", "ids")
    assert result.exit_code == 0, result.output
    assert result.output.split() == [desk["ticket"]]


def test_a_huge_if_version_is_a_conflict(cli, desk, database):
    before = _state(database)
    result = cli("tickets", "update", desk["ticket"], "--status", "open", "--if-version", HUGE)
    assert result.exit_code == 1 and "changed by someone else" in result.output, result.output
    assert result.output.strip().count("\n") == 0
    assert _state(database) == before


def test_a_huge_window_or_worker_count_is_refused_in_one_line(cli, desk):
    for args in (("sla", "check", "--within", f"{HUGE}m", "--dry-run"), ("sla", "check", "--within", "99999999d")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "--within" in result.output or "duration" in result.output
        assert result.output.strip().count("\n") == 0, result.output
    result = cli("sla", "recompute", "--workers", HUGE)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_a_huge_demo_is_refused_before_anything_is_written(cli, tmp_path):
    result = cli("demo", "--tickets", HUGE, "--no-open", "--db", str(tmp_path / "demo.db"))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "demo.db").exists()


def test_the_ticket_that_exists_still_works(cli, desk):
    shown = json.loads(cli("tickets", "show", f"{desk['ticket']}", "--format", "json").output)
    assert str(shown["id"]) == desk["ticket"]
    assert cli("tickets", "update", f"#{desk['ticket']}", "--status", "open").exit_code == 0


@pytest.mark.parametrize("args", [
    ("send", "--watch", "--interval"), ("send", "--once", "--lease"), ("daemon", "--timer-interval"),
])
@pytest.mark.parametrize("value", ["1e400", "inf", "nan", HUGE])
def test_seconds_beyond_what_a_timer_takes_are_a_usage_error(cli, args, value):
    result = cli(*args, value)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("ticket, code, text", [
    (int(HUGE), 1, f"no ticket #{HUGE}"), (BEYOND_INT32, 1, f"no ticket #{BEYOND_INT32}"),
    ("abc", 2, "'ticket' must be a ticket id"), (1.5, 2, "'ticket' must be a ticket id"),
    (True, 2, "'ticket' must be a ticket id"), ([1], 2, "'ticket' must be a ticket id"),
])
def test_ingest_json_ticket_that_cannot_exist(cli, desk, database, ticket, code, text):
    before = _state(database)
    payload = json.dumps({"channel": "phone", "from": "bob@acme.test", "body": "Called again", "ticket": ticket})
    result = cli("ingest", "--json", input=payload)
    assert result.exit_code == code, result.output
    assert text in result.output and result.output.strip().count("\n") == 0, result.output
    assert _state(database) == before


@pytest.mark.parametrize("when, text", [
    ("yesterday", "created_at 'yesterday' is not an ISO 8601 time"),
    (20261201, "created_at must be an ISO 8601 time, got '20261201'"),
    ("2026-12-01T09:30:00", "created_at needs a time zone"),
])
def test_ingest_json_with_a_bad_time_is_one_line(cli, desk, database, when, text):
    before = _state(database)
    payload = json.dumps({"channel": "phone", "from": "bob@acme.test", "body": "Called", "created_at": when})
    result = cli("ingest", "--json", input=payload)
    assert result.exit_code == 2, result.output
    assert text in result.output and result.output.strip().count("\n") == 0, result.output
    assert "Traceback" not in result.output
    assert _state(database) == before
