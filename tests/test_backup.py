"""`db backup` while agents keep writing, then `db restore` into a database that works."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from supportdesk.db import Database
from supportdesk.maintenance import check_database
from supportdesk.models import Event, Message, Ticket
from supportdesk.query import QueryContext, parse_query
from supportdesk.listing import ticket_ids
from supportdesk.tickets import Changes, create_ticket, resolve_actor, update_ticket

# Keeps creating tickets and changing them, one transaction each, until killed.
WRITER = """
import sys, itertools
from supportdesk.db import Database
from supportdesk.tickets import Changes, create_ticket, resolve_actor, update_ticket
database = Database(sys.argv[1])
with database.read() as session:
    actor = resolve_actor(session, "bob")
print("writing", flush=True)
for n in itertools.count():
    with database.write() as session:
        ticket = create_ticket(session, actor, requester_email=f"w{n}@example.test", requester_name="W",
                               subject=f"written while backing up {n}", body="kiwifruit " * 50)
        update_ticket(session, ticket.id, Changes(priority="high", add_tags=["during"]), actor)
"""


def test_backup_during_concurrent_writes_restores_into_a_working_database(tmp_path, database, db_path, alice, cli):
    big = "lorem ipsum dolor " * 1200  # ~20 KB a ticket: the file spans many backup steps
    with database.write() as session:
        for i in range(300):
            create_ticket(session, alice, requester_email=f"c{i}@example.test", requester_name="C",
                          subject=f"before {i}", body=big)
    database.close()
    assert db_path.stat().st_size > 5 * 1024 * 1024

    writer = subprocess.Popen([sys.executable, "-c", WRITER, f"sqlite:///{db_path}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    backups = []
    try:
        assert writer.stdout.readline().strip() == "writing"
        for n in range(3):
            time.sleep(0.3)
            target = tmp_path / f"backup-{n}.db"
            started = time.monotonic()
            done = subprocess.run([str(Path(sys.executable).with_name("supportdesk")), "--as", "alice", "db", "backup",
                                   str(target)],
                                  capture_output=True, text=True, timeout=120, env=dict(os.environ))
            assert done.returncode == 0, done.stderr
            assert time.monotonic() - started < 60
            backups.append(target)
    finally:
        writer.kill()
        _, writer_errors = writer.communicate()
    assert "locked" not in writer_errors

    live = Database(f"sqlite:///{db_path}")
    with live.read() as session:
        live_tickets = session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar()
    live.close()
    counts = []
    for backup in backups:
        # A consistent snapshot: integrity, keys and the full-text index all agree.
        assert [f for f in check_database(backup) if not f.ok] == []
        snapshot = Database(f"sqlite:///{backup}")
        with snapshot.read() as session:
            tickets = session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar()
            without_message = session.execute(sa.select(sa.func.count()).select_from(Ticket).where(
                ~sa.exists().where(Message.ticket_id == Ticket.id))).scalar()
            half_done = session.execute(sa.select(sa.func.count()).select_from(Ticket).where(
                Ticket.subject.like("written while%"), Ticket.priority != "high")).scalar()
            events = session.execute(sa.select(sa.func.count()).select_from(Event)).scalar()
        snapshot.close()
        assert without_message == 0 and half_done == 0
        assert events >= tickets
        counts.append(tickets)
    assert 300 < counts[0] <= counts[1] <= counts[2] <= live_tickets, counts

    # Restore the middle backup over the live database (stopped writers, --force) and work on it.
    result = cli("db", "restore", str(backups[1]))
    assert result.exit_code == 1 and "--force" in result.stderr
    result = cli("db", "restore", str(backups[1]), "--force")
    assert result.exit_code == 0, result.stderr
    restored = Database(f"sqlite:///{db_path}")
    restored.check_schema()
    with restored.write() as session:
        actor = resolve_actor(session, "alice")
        new_id = create_ticket(session, actor, requester_email="after@example.test", requester_name="A",
                            subject="after the restore", body="papaya").id
        update_ticket(session, 1, Changes(status="open"), actor)
    ctx = QueryContext(me="alice")
    with restored.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar() == counts[1] + 1
        assert ticket_ids(session, parse_query("papaya"), ctx) == [new_id]
        assert len(ticket_ids(session, parse_query("kiwifruit"), ctx)) == counts[1] - 300
    restored.close()
    assert [f for f in check_database(db_path) if not f.ok] == []
    assert cli("db", "check").exit_code == 0
