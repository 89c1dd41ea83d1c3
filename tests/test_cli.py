"""The command line through Typer's runner, and a few runs of the real installed command."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from supportdesk.models import Event, Outbox, Ticket

SPEC_TICKET_FIELDS = {"id", "subject", "status", "priority", "queue", "requester", "assignee", "tags", "channel",
                      "message_count", "created_at", "updated_at", "sla"}
SPEC_SLA_FIELDS = {"first_response_due", "next_response_due", "resolution_due", "breached"}
SPEC_MESSAGE_FIELDS = {"id", "kind", "from", "to", "cc", "subject", "body_text", "message_id", "created_at",
                       "attachments"}


def _create(cli, tmp_path, subject="Printer on fire", sender="bob@acme.test", channel="email", *extra):
    body = tmp_path / "body.txt"
    body.write_text("It is on fire. Really.\n", encoding="utf-8")
    result = cli("tickets", "create", "--from", sender, "--subject", subject, "--body-file", str(body),
                 "--channel", channel, *extra)
    assert result.exit_code == 0, result.output
    return int(result.output.strip())


def test_list_json_has_the_spec_fields(cli, tmp_path):
    ticket_id = _create(cli, tmp_path)
    result = cli("tickets", "list", "--format", "json")
    assert result.exit_code == 0
    tickets = json.loads(result.output)
    assert [t["id"] for t in tickets] == [ticket_id]
    assert SPEC_TICKET_FIELDS <= set(tickets[0])
    assert SPEC_SLA_FIELDS <= set(tickets[0]["sla"])
    assert tickets[0]["created_at"].endswith("Z")


def test_show_json_has_messages_with_spec_fields(cli, tmp_path):
    ticket_id = _create(cli, tmp_path)
    shown = json.loads(cli("tickets", "show", str(ticket_id), "--format", "json").output)
    assert SPEC_MESSAGE_FIELDS <= set(shown["messages"][0])
    assert shown["messages"][0]["body_text"] == "It is on fire. Really.\n"


def test_negated_terms_are_not_options(cli, tmp_path):
    first = _create(cli, tmp_path, "one")
    second = _create(cli, tmp_path, "two")
    assert cli("tickets", "update", str(first), "--add-tag", "spam", "--yes").exit_code == 0
    assert cli("tickets", "update", str(second), "--status", "closed").exit_code == 0
    result = cli("tickets", "list", "-tag:spam", "--format", "ids")
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(second)]
    result = cli("tickets", "list", "tag:spam", "-status:closed", "--format", "ids")
    assert result.output.split() == [str(first)]
    assert cli("tickets", "list", "status:open priority:>=high", "--format", "ids").exit_code == 3


def test_ids_from_stdin_close_exactly_those_in_one_transaction(cli, cli_env, tmp_path, database):
    ids = [_create(cli, tmp_path, f"t{i}") for i in range(5)]
    for ticket_id in ids[:3]:
        cli("tickets", "update", str(ticket_id), "--add-tag", "spam")
    listed = cli("tickets", "list", "tag:spam", "--format", "ids").output
    result = cli("tickets", "close", "-", "--yes", input=listed)
    assert result.exit_code == 0, result.output
    assert "Closed 3 ticket(s)" in result.output
    with database.read() as session:
        statuses = dict(session.execute(sa.select(Ticket.id, Ticket.status)).all())
        stamps = set(session.execute(sa.select(Event.at).where(Event.field == "status", Event.new == "closed")).scalars())
    assert [statuses[i] for i in ids] == ["closed"] * 3 + ["new"] * 2
    assert len(stamps) == 1  # one transaction, one instant


def test_bulk_refuses_unknown_ids_and_changes_nothing(cli, tmp_path, database):
    ticket_id = _create(cli, tmp_path)
    result = cli("tickets", "close", str(ticket_id), "4242", "--yes")
    assert result.exit_code == 1
    assert "no such ticket: #4242" in result.output
    with database.read() as session:
        assert session.get(Ticket, ticket_id).status == "new"


def test_dry_run_changes_nothing_and_nothing_matched_exits_3(cli, tmp_path, database):
    ticket_id = _create(cli, tmp_path)
    result = cli("tickets", "close", "--query", "status:new", "--dry-run")
    assert result.exit_code == 0
    assert "Would close 1 ticket(s)" in result.output
    with database.read() as session:
        assert session.get(Ticket, ticket_id).status == "new"
    assert cli("tickets", "close", "--query", "tag:nothing", "--yes").exit_code == 3
    assert cli("tickets", "list", "tag:nothing").exit_code == 3


def test_reply_is_queued_and_visible_at_once(cli, tmp_path, database):
    ticket_id = _create(cli, tmp_path, "Where is my order?")
    reply = tmp_path / "reply.txt"
    reply.write_text("It ships tomorrow.", encoding="utf-8")
    result = cli("tickets", "reply", str(ticket_id), "--body-file", str(reply), "--status", "pending")
    assert result.exit_code == 0, result.output
    shown = json.loads(cli("tickets", "show", str(ticket_id), "--format", "json").output)
    outbound = shown["messages"][-1]
    assert outbound["kind"] == "outbound" and outbound["delivery"] == "queued" and outbound["auto"] is False
    assert outbound["to"] == ["bob@acme.test"]
    assert f"[Support #{ticket_id}]" in outbound["subject"]
    assert shown["status"] == "pending"
    with database.read() as session:
        raw = session.execute(sa.select(Outbox.raw)).scalar_one()
    sent = email.message_from_bytes(raw, policy=email.policy.default)
    assert f"[Support #{ticket_id}]" in sent["Subject"]
    assert sent["From"].addresses[0].addr_spec == "support@example.test"
    assert sent["Message-ID"].strip("<>") == outbound["message_id"]


def test_close_with_reply_file_queues_one_reply_each(cli, tmp_path, database):
    ids = [_create(cli, tmp_path, f"t{i}") for i in range(3)]
    reply = tmp_path / "bye.txt"
    reply.write_text("Closing this, thanks!", encoding="utf-8")
    result = cli("tickets", "close", *map(str, ids), "--reply-file", str(reply), "--yes")
    assert result.exit_code == 0, result.output
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Outbox)).scalar() == 3


def test_note_and_events(cli, tmp_path):
    ticket_id = _create(cli, tmp_path)
    result = cli("tickets", "note", str(ticket_id), "--body-file", "-", input="Called them back.\n")
    assert result.exit_code == 0
    shown = json.loads(cli("tickets", "show", str(ticket_id), "--format", "json").output)
    assert shown["messages"][-1]["kind"] == "note"
    assert any(e["field"] == "message" and e["actor"] == "alice" for e in shown["events"])


def test_user_errors_are_one_line_with_exit_codes(cli, tmp_path):
    ticket_id = _create(cli, tmp_path)
    cases = [
        (("tickets", "list", "status:opne"), 2, "unknown status 'opne'"),
        (("tickets", "list", "bogus:1"), 2, "unknown field 'bogus'"),
        (("tickets", "update", str(ticket_id), "--assign", "ghost"), 2, "unknown agent 'ghost'"),
        (("tickets", "update", str(ticket_id), "--queue", "Nowhere"), 2, "unknown queue 'Nowhere'"),
        (("tickets", "update", str(ticket_id), "--status", "done"), 2, "unknown status 'done'"),
        (("tickets", "show", "999"), 1, "no ticket #999"),
        (("tickets", "merge", str(ticket_id), str(ticket_id)), 2, "into itself"),
    ]
    for args, code, message in cases:
        result = cli(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output


def test_unknown_agent_is_refused(cli, tmp_path):
    result = cli("tickets", "create", "--from", "a@b.test", "--subject", "x", as_agent="mallory")
    assert result.exit_code == 2
    assert "supportdesk agents add mallory" in result.output


def test_config_error_names_file_and_key(cli, cli_env, tmp_path):
    Path(cli_env["SUPPORTDESK_CONFIG"]).write_text('[tickets]\nreopen_days = "soon"\n', encoding="utf-8")
    result = cli("tickets", "list")
    assert result.exit_code == 2
    assert "config.toml: tickets.reopen_days: must be a non-negative integer" in result.output


def test_old_database_asks_for_upgrade(cli, cli_env, database):
    with database.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    result = cli("tickets", "list")
    assert result.exit_code == 1
    assert "newer than this program" in result.output or "db upgrade" in result.output


def test_missing_database_says_init(cli, cli_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SUPPORTDESK_DB", str(tmp_path / "nope.db"))
    result = cli("tickets", "list")
    assert result.exit_code == 1
    assert "supportdesk init" in result.output


def test_formats(cli, tmp_path):
    _create(cli, tmp_path, "Ünïcode [bold]markup[/b] \x1b]0;pwned\x07")
    csv_out = cli("tickets", "list", "--format", "csv").output.splitlines()
    assert csv_out[0].startswith("id,subject,status")
    jsonl = [json.loads(line) for line in cli("tickets", "list", "--format", "jsonl").output.splitlines()]
    assert jsonl[0]["subject"].startswith("Ünïcode [bold]markup[/b]")
    table = cli("tickets", "list").output
    assert "[bold]markup[/b]" in table and "\x1b" not in table


def test_agents_and_queues(cli):
    assert cli("agents", "add", "carol", "--name", "Carol").exit_code == 0
    agents = json.loads(cli("agents", "list", "--format", "json").output)
    assert {a["login"] for a in agents} == {"alice", "bob", "carol"}
    assert cli("agents", "disable", "carol").exit_code == 0
    disabled = cli("tickets", "list", as_agent="carol")  # read-only commands need an active agent too
    assert disabled.exit_code == 2 and "carol is disabled" in disabled.output
    assert "disabled" in cli("tickets", "create", "--from", "a@b.test", "--subject", "x", as_agent="carol").output
    assert cli("queues", "add", "Sales", "--address", "sales@example.test").exit_code == 0
    assert "Sales" in cli("queues", "list", "--format", "ids").output


@pytest.mark.sqlite_only
def test_db_backup_is_a_working_copy(cli, tmp_path):
    _create(cli, tmp_path)
    target = tmp_path / "copy.db"
    assert cli("db", "backup", str(target)).exit_code == 0
    result = cli("--db", str(target), "tickets", "list", "--format", "ids")
    assert result.output.split() == ["1"]
    assert cli("db", "backup", str(target)).exit_code == 1


# --- the real installed command ----------------------------------------------------------------

def _supportdesk() -> str:
    found = shutil.which("supportdesk", path=str(Path(sys.executable).parent))
    assert found, "the supportdesk console script is not installed next to this Python"
    return found


def _run(args, env, input=None):
    return subprocess.run([_supportdesk(), *args], env=env, input=input, capture_output=True, text=True, timeout=60)


@pytest.mark.integration
def test_real_command_init_create_pipe_close(tmp_path):
    env = dict(os.environ, SUPPORTDESK_CONFIG=str(tmp_path / "cfg" / "config.toml"),
               SUPPORTDESK_DB=str(tmp_path / "data" / "desk.db"), HOME=str(tmp_path))
    init = _run(["init"], env)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "cfg" / "config.toml").exists()
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    for i in range(4):
        created = _run(["tickets", "create", "--from", f"u{i}@spam.test", "--subject", f"Buy now {i}"], env)
        assert created.returncode == 0, created.stderr
    _run(["tickets", "update", "1", "3", "--add-tag", "spam", "--yes"], env)
    ids = _run(["tickets", "list", "tag:spam", "--format", "ids"], env).stdout
    closed = _run(["tickets", "close", "-", "--yes"], env, input=ids)
    assert closed.returncode == 0, closed.stderr
    assert "Closed 2 ticket(s)" in closed.stdout
    listed = json.loads(_run(["tickets", "list", "status:closed", "--format", "json"], env).stdout)
    assert sorted(t["id"] for t in listed) == [1, 3]
    bad = _run(["tickets", "list", "status:nope"], env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert me


@pytest.mark.integration
def test_real_command_demo_then_spec_query(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("SUPPORTDESK_DB", None)
    env.pop("SUPPORTDESK_CONFIG", None)
    demo_db = tmp_path / "demo.db"
    seeded = _run(["demo", "--db", str(demo_db), "--tickets", "120", "--no-open"], env)
    assert seeded.returncode == 0, seeded.stderr
    result = _run(["--db", str(demo_db), "tickets", "list", "status:open priority:>=high", "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    tickets = json.loads(result.stdout)
    assert tickets and all(t["status"] == "open" and t["priority"] in ("high", "urgent") for t in tickets)
    assert all(SPEC_TICKET_FIELDS <= set(t) for t in tickets)
    again = _run(["demo", "--db", str(demo_db), "--tickets", "120", "--no-open"], env)
    assert again.returncode == 0
    real = tmp_path / "real.db"
    real.write_bytes(b"")
    refused = _run(["demo", "--db", str(real), "--no-open"], env)
    assert refused.returncode == 1 and "not a demo database" in refused.stderr


def test_doctor_reports_config_database_and_mailbox_health(cli, cli_env, database):
    healthy = cli("doctor")
    assert healthy.exit_code == 0, healthy.output
    assert "ok   database" in healthy.output
    from supportdesk.models import MailboxState, utcnow

    with database.write() as session:
        session.add(MailboxState(mailbox="support", last_uid=0, last_error="LoginError: authentication failed",
                                 last_error_at=utcnow()))
    Path(cli_env["SUPPORTDESK_CONFIG"]).write_text(
        '[[mailbox]]\nname = "support"\naddress = "support@example.test"\n'
        '[smtp]\nhost = "127.0.0.1"\nport = 9\npassword = "plain"\n', encoding="utf-8")
    sick = cli("doctor")
    assert sick.exit_code == 1
    assert "FAIL mailbox support" in sick.output and "authentication failed" in sick.output
    assert "FAIL secret smtp.password" in sick.output
    assert "FAIL SMTP" in sick.output


def test_signatures_are_set_from_the_command_line(cli, database):
    from supportdesk.models import Agent, Queue

    assert cli("agents", "signature", "bob", "--file", "-", input="Bob\nSupport team\n").exit_code == 0
    assert cli("queues", "signature", "General", "--file", "-", input="The General team\n").exit_code == 0
    with database.read() as session:
        assert session.execute(sa.select(Agent.signature).where(Agent.login == "bob")).scalar() == "Bob\nSupport team"
        assert session.execute(sa.select(Queue.signature).where(Queue.name == "General")).scalar() == "The General team"
    assert cli("agents", "signature", "ghost", "--file", "-", input="x").exit_code == 2
