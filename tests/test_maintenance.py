"""db check / --repair, db restore's refusals and atomicity, shared-server permissions, busy retries."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import Session

from supportdesk import db as dbmod
from supportdesk.config import Secret
from supportdesk.db import Database, DatabaseError
from supportdesk.maintenance import (
    check_database, check_permissions, check_secrets, in_use, inspect_backup, prepare_database_file, repair_fts, restore,
    shared_umask,
)
from supportdesk.tickets import Changes, add_message, create_ticket, update_ticket


def make_tickets(database, actor, n=3):
    ids = []
    with database.write() as session:
        for i in range(n):
            ticket = create_ticket(session, actor, requester_email=f"c{i}@example.test", requester_name="C",
                                   subject=f"Subject {i}", body=f"first body {i}")
            ids.append(ticket.id)
        add_message(session, ticket, actor, kind="note", body="second body")
    return ids


def failing(findings):
    return [f for f in findings if not f.ok]


def test_check_passes_on_a_healthy_database(database, db_path, alice):
    make_tickets(database, alice)
    findings = check_database(db_path)
    assert not failing(findings), findings
    assert {f.what for f in findings} >= {"integrity", "foreign keys", "full-text index"}


def test_check_names_tickets_whose_index_is_wrong_and_repair_fixes_them(database, db_path, alice):
    a, b, c = make_tickets(database, alice)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("UPDATE ticket_text SET body = 'tampered' WHERE rowid = ?", (a,))
    conn.execute("DELETE FROM ticket_text WHERE rowid = ?", (b,))
    conn.execute("INSERT INTO ticket_text (rowid, subject, body) VALUES (9999, 'ghost', '')")
    conn.close()

    problems = {f.detail.split(":")[0]: f.ticket_ids for f in failing(check_database(db_path))}
    assert problems == {
        "1 ticket(s) not indexed": [b],
        "1 ticket(s) indexed but deleted": [9999],
        "1 ticket(s) indexed with old text": [a],
    }
    assert repair_fts(db_path) == 3
    assert not failing(check_database(db_path))
    with database.read() as session:
        hits = session.connection().exec_driver_sql(
            "SELECT rowid FROM ticket_text WHERE ticket_text MATCH 'first'").scalars().all()
    assert sorted(hits) == [a, b, c]


def test_check_reports_dangling_foreign_keys_and_integrity(database, db_path, alice):
    make_tickets(database, alice, 1)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO events (ticket_id, actor, at, field, old, new) VALUES (424242, 'x', '2026-01-01', 'status', NULL, 'open')")
    conn.close()
    bad = failing(check_database(db_path))
    assert [f.what for f in bad] == ["foreign keys"]
    assert "events row" in bad[0].detail and "tickets" in bad[0].detail


def test_cli_check_exit_codes_and_repair(cli, database, db_path, alice):
    (a,) = make_tickets(database, alice, 1)
    assert cli("db", "check").exit_code == 0
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DELETE FROM ticket_text WHERE rowid = ?", (a,))
    conn.close()
    result = cli("db", "check")
    assert result.exit_code == 1
    assert f"not indexed: #{a}" in result.stdout
    result = cli("db", "check", "--repair")
    assert result.exit_code == 0, result.output
    assert "Rebuilt the full-text index (1 tickets)" in result.stdout


def import_dump(tmp_path: Path) -> Path:
    """Tickets as `tickets import` reads them: several messages each (subjects that differ from the
    ticket's, non-ASCII text), one ticket with none."""
    def message(kind, body, minute, subject=None):
        m = {"kind": kind, "from": "dana@old.test", "body_text": body, "created_at": f"2025-03-01T09:{minute:02}:00Z"}
        return m | ({"subject": subject} if subject else {})

    records = [
        {"id": 501, "subject": "Invoice wrong", "requester": "dana@old.test", "created_at": "2025-03-01T09:00:00Z",
         "messages": [message("inbound", "Le montant est faux, ça coûte 12 €", 0),
                      message("note", "checking with billing", 5, subject="internal"),
                      message("outbound", "Fixed — Grüße", 9, subject="Re: Invoice wrong")]},
        {"id": 502, "subject": "Empty thread", "requester": "erin@old.test", "created_at": "2025-03-02T09:00:00Z"},
        {"id": 503, "subject": "Login", "requester": "finn@old.test", "created_at": "2025-03-03T09:00:00Z",
         "messages": [message("inbound", "line one\nline two", 1), message("inbound", "", 2)]},
    ]
    dump = tmp_path / "import.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return dump


@pytest.mark.sqlite_only
def test_tickets_written_by_import_pass_the_check(cli, tmp_path, database, db_path, alice):
    """`tickets import` indexes with its own bulk statement; `db check` must find exactly what it wrote."""
    (existing,) = make_tickets(database, alice, 1)
    result = cli("tickets", "import", str(import_dump(tmp_path)))
    assert result.exit_code == 0, result.output
    findings = check_database(db_path)
    assert not failing(findings), findings
    assert [f.detail for f in findings if f.what == "full-text index"] == ["4 ticket(s), all current"]
    checked = cli("db", "check")
    assert checked.exit_code == 0, checked.output

    conn = sqlite3.connect(db_path, isolation_level=None)
    imported = [r[0] for r in conn.execute("SELECT id FROM tickets WHERE external_id IS NOT NULL ORDER BY id")]
    assert len(imported) == 3 and existing not in imported
    victim = imported[0]
    conn.execute("UPDATE ticket_text SET body = replace(body, 'billing', 'biling') WHERE rowid = ?", (victim,))
    conn.close()
    bad = failing(check_database(db_path))
    assert [(f.what, f.ticket_ids) for f in bad] == [("full-text index", [victim])]
    assert f"indexed with old text: #{victim}" in bad[0].detail
    checked = cli("db", "check")
    assert checked.exit_code == 1 and f"#{victim}" in checked.stdout


# --- restore ---------------------------------------------------------------------------------

def test_restore_refuses_a_working_database_without_force(tmp_path, database, db_path, alice):
    make_tickets(database, alice, 2)
    backup = tmp_path / "backup.db"
    database.backup(backup)
    before = db_path.read_bytes()
    with pytest.raises(DatabaseError, match="working database; add --force"):
        restore(backup, db_path)
    assert db_path.read_bytes() == before


def test_restore_refuses_while_other_processes_have_it_open(tmp_path, database, db_path, alice):
    make_tickets(database, alice, 1)
    backup = tmp_path / "backup.db"
    database.backup(backup)
    database.close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM tickets').fetchall();"
        "print('ready', flush=True); time.sleep(30)"), str(db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert in_use(db_path)
        with pytest.raises(DatabaseError, match="open in other processes"):
            restore(backup, db_path, force=True)
    finally:
        holder.kill()
        holder.wait()
    assert not in_use(db_path)


def test_restore_with_force_replaces_atomically_and_clears_stale_wal(tmp_path, database, db_path, alice):
    ids = make_tickets(database, alice, 2)
    backup = tmp_path / "backup.db"
    database.backup(backup)
    with database.write() as session:
        update_ticket(session, ids[0], Changes(status="closed"), alice)
    database.close()
    Path(f"{db_path}-wal").write_bytes(b"stale")
    os.chmod(db_path, 0o660)

    assert restore(backup, db_path, force=True) == dbmod.SCHEMA_REVISION
    assert not Path(f"{db_path}-wal").exists()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o660
    assert [p.name for p in db_path.parent.iterdir() if ".restore-" in p.name] == []
    restored = Database(f"sqlite:///{db_path}")
    restored.check_schema()
    with restored.read() as session:
        statuses = session.connection().exec_driver_sql("SELECT status FROM tickets ORDER BY id").scalars().all()
    restored.close()
    assert statuses == ["new", "new"]


def test_restore_refuses_files_that_are_not_supportdesk_databases(tmp_path, db_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.commit()
    newer = tmp_path / "newer.db"
    newer.write_bytes(db_path.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()
    for source, message in ((text, "not an SQLite file"), (other, "no schema revision"),
                            (newer, "newer than this program"), (tmp_path / "missing.db", "cannot read")):
        with pytest.raises(DatabaseError, match=message):
            restore(source, db_path, force=True)
    assert db_path.read_bytes() == before
    assert not [p for p in db_path.parent.iterdir() if ".restore-" in p.name]


def test_restore_refuses_a_damaged_backup_and_leaves_the_target(tmp_path, database, db_path, alice):
    make_tickets(database, alice, 30)
    backup = tmp_path / "backup.db"
    database.backup(backup)
    data = bytearray(backup.read_bytes())
    page = 4096
    for offset in range(3 * page, len(data) - page, page):
        data[offset + 8:offset + 40] = b"\xff" * 32
    backup.write_bytes(bytes(data))
    database.close()
    before = db_path.read_bytes()
    with pytest.raises(DatabaseError, match="damaged|cannot copy|malformed"):
        restore(backup, db_path, force=True)
    assert db_path.read_bytes() == before
    assert not [p for p in db_path.parent.iterdir() if ".restore-" in p.name]


def test_restore_into_an_empty_place_and_upgrades_an_older_backup(tmp_path):
    old = tmp_path / "old.db"
    database = Database(f"sqlite:///{old}")
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(dbmod.migrations_dir()))
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    database.close()
    assert inspect_backup(old) == "0001"
    target = tmp_path / "new" / "desk.db"
    assert restore(old, target) == "0001"
    restored = Database(f"sqlite:///{target}")
    restored.check_schema()
    restored.close()


def test_cli_restore_one_line_errors(cli, tmp_path, db_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    result = cli("db", "restore", str(junk), "--force")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "not a supportdesk database" in result.stderr
    backup = tmp_path / "b.db"
    assert cli("db", "backup", str(backup)).exit_code == 0
    result = cli("db", "restore", str(backup))
    assert result.exit_code == 1 and "--force" in result.stderr
    result = cli("db", "restore", str(backup), "--force")
    assert result.exit_code == 0, result.output
    assert "Restored" in result.stdout


# --- permissions -----------------------------------------------------------------------------

def shared_dir(tmp_path: Path, mode=0o2770) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    os.chmod(directory, mode)
    return directory


def test_private_layout_is_fine(tmp_path):
    directory = tmp_path / "data"
    directory.mkdir(mode=0o700)
    (directory / "desk.db").write_bytes(b"")
    findings = check_permissions(directory / "desk.db")
    assert [f.ok for f in findings] == [True]
    assert "single-user" in findings[0].detail


def test_shared_layout_with_the_right_modes_passes(tmp_path):
    directory = shared_dir(tmp_path)
    for name in ("desk.db", "desk.db-wal", "desk.db-shm"):
        (directory / name).write_bytes(b"")
        os.chmod(directory / name, 0o660)
    findings = check_permissions(directory / "desk.db")
    assert all(f.ok for f in findings), findings
    assert [f.what for f in findings] == ["data directory", "desk.db", "desk.db-wal", "desk.db-shm"]


def test_shared_layout_problems_are_explained_with_the_fix(tmp_path):
    directory = shared_dir(tmp_path, 0o775)
    (directory / "desk.db").write_bytes(b"")
    os.chmod(directory / "desk.db", 0o644)
    (directory / "desk.db-shm").write_bytes(b"")
    os.chmod(directory / "desk.db-shm", 0o640)
    os.chown(directory / "desk.db-shm", -1, 65534)
    bad = {f.what: f for f in check_permissions(directory / "desk.db") if not f.ok}
    assert set(bad) == {"data directory", "desk.db", "desk.db-shm"}
    assert "setgid" in bad["data directory"].detail and "others have access" in bad["data directory"].detail
    assert "chmod 2770" in bad["data directory"].fix
    assert "group cannot write" in bad["desk.db"].detail and "everyone on the server" in bad["desk.db"].detail
    assert bad["desk.db"].fix.endswith("chmod 0660 " + str(directory / "desk.db"))
    assert "not " in bad["desk.db-shm"].detail and "chgrp" in bad["desk.db-shm"].fix


def test_sqlite_files_created_in_a_shared_dir_stay_group_writable(tmp_path):
    directory = shared_dir(tmp_path)
    previous = os.umask(0o022)
    try:
        prepare_database_file(directory / "desk.db")
        database = Database(f"sqlite:///{directory / 'desk.db'}")
        database.upgrade()
        backup = tmp_path / "backup.db"
        database.backup(backup)
        with database.write() as session:
            session.connection().exec_driver_sql("CREATE TABLE probe (a)")
            findings = check_permissions(directory / "desk.db")
        database.close()
    finally:
        os.umask(previous)
    assert [f.what for f in findings] == ["data directory", "desk.db", "desk.db-wal", "desk.db-shm"]
    assert all(f.ok for f in findings), findings
    (directory / "desk.db").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{directory / 'desk.db'}{suffix}").unlink(missing_ok=True)
    restore(backup, directory / "desk.db")
    assert stat.S_IMODE((directory / "desk.db").stat().st_mode) == 0o660
    with shared_umask(directory):
        assert os.umask(0o007) == 0o007
    assert os.umask(0o022) == 0o022


def test_secrets_readable_by_the_agents_are_reported(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("x")
    os.chmod(config, 0o644)
    password_file = tmp_path / "imap.pass"
    password_file.write_text("secret")
    os.chmod(password_file, 0o640)
    script = tmp_path / "smtp-pass.sh"
    script.write_text("#!/bin/sh\necho secret\n")
    os.chmod(script, 0o700)
    secrets = [
        Secret(config, "mailbox.support.imap_password", command=f"cat {password_file}"),
        Secret(config, "smtp.password", command=str(script)),
        Secret(config, "mailbox.other.imap_password", env="OTHER"),
    ]
    bad = check_secrets(config, secrets)
    assert [(f.what, str(password_file) in f.detail) for f in bad] == [
        ("secret mailbox.support.imap_password_command", True)]
    assert "chmod go-rwx" in bad[0].fix
    plain = check_secrets(config, [Secret(config, "smtp.password", plain="hunter2")])
    assert len(plain) == 1 and "plain password" in plain[0].detail and "0644" in plain[0].detail
    os.chmod(config, 0o600)
    assert check_secrets(config, [Secret(config, "smtp.password", plain="hunter2")]) == []


def test_doctor_reports_permission_problems(cli, cli_env, tmp_path, db_path):
    os.chmod(db_path.parent, 0o2770)
    os.chmod(db_path, 0o644)
    result = cli("doctor")
    assert result.exit_code == 1
    assert "FAIL desk.db" in result.stdout and "chmod 0660" in result.stdout
    os.chmod(db_path, 0o660)
    for suffix in ("-wal", "-shm"):
        if Path(f"{db_path}{suffix}").exists():
            os.chmod(f"{db_path}{suffix}", 0o660)
    result = cli("doctor")
    assert "FAIL desk.db" not in result.stdout, result.stdout


# --- busy retries ------------------------------------------------------------------------------

def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    ready = threading.Event()

    def hold():
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait()
    return thread


def test_write_retries_begin_with_backoff_when_the_lock_outlasts_busy_timeout(db_path, monkeypatch):
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 100)
    database = Database(f"sqlite:///{db_path}")
    attempts = []
    real = Session.connection

    def counting(self, *a, **kw):
        attempts.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(Session, "connection", counting)
    holder = hold_write_lock(db_path, 0.35)
    try:
        with database.write() as session:
            session.connection().exec_driver_sql("SELECT 1")
    finally:
        holder.join()
        database.close()
    assert len(attempts) >= 3  # at least one BEGIN failed and was retried, then the body ran


def test_write_gives_up_with_one_line_after_the_retries(db_path, monkeypatch):
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(dbmod, "RETRY_BASE_SECONDS", 0.01)
    database = Database(f"sqlite:///{db_path}")
    ran = []
    holder = hold_write_lock(db_path, 1.5)
    try:
        with pytest.raises(DatabaseError) as caught:
            with database.write():
                ran.append(1)
    finally:
        holder.join()
        database.close()
    assert ran == []
    assert "locked by another writer" in str(caught.value) and "\n" not in str(caught.value)


def test_systemd_unit_runs_the_daemon_as_the_group_with_a_shared_umask():
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(Path(__file__).resolve().parents[1] / "contrib" / "systemd" / "supportdesk.service")
    service = unit["Service"]
    assert (service["User"], service["Group"], service["UMask"]) == ("supportdesk", "supportdesk", "0007")
    assert service["ExecStart"].endswith("supportdesk daemon")
    assert "HUP" in service["ExecReload"] and service["KillSignal"] == "SIGTERM"
    assert "/var/lib/supportdesk" in service["ReadWritePaths"]
