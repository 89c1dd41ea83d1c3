"""Export → import into an empty database → export gives the same tickets."""

from __future__ import annotations

import io
import json

import pytest
import sqlalchemy as sa

from supportdesk.db import Database
from supportdesk.demo import seed
from supportdesk.listing import ticket_ids
from supportdesk.models import Ticket, utcnow
from supportdesk.query import QueryContext
from supportdesk.tickets import Actor, InvalidError, add_agent
from supportdesk.transfer import export_tickets, import_tickets, read_import_file

VOLATILE = {"id", "external_id", "version", "merged_into", "parent", "unread"}


def _export(database) -> list[dict]:
    out = io.StringIO()
    with database.read() as session:
        ids = ticket_ids(session, "", QueryContext(), sort="id")
        export_tickets(session, ids, out, utcnow())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _comparable(ticket: dict) -> dict:
    ticket = {k: v for k, v in ticket.items() if k not in VOLATILE}
    ticket["events"] = [e for e in ticket["events"] if e["field"] != "imported"]
    ticket["messages"] = [{k: v for k, v in m.items() if k != "id"}
                          | {"attachments": [{k: v for k, v in a.items() if k != "id"} for a in m["attachments"]]}
                          for m in ticket["messages"]]
    return ticket


def _fresh(databases, request):
    url = databases.create()
    request.addfinalizer(lambda: databases.drop(url))
    database = Database(url)
    request.addfinalizer(database.close)
    with database.write() as session:
        add_agent(session, "importer", role="admin")
    return database


def test_round_trip_keeps_every_ticket(tmp_path, databases, request):
    source = _fresh(databases, request)
    with source.write() as session:
        seed(session, me="importer", tickets=60)
    first = _export(source)
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps(t) + "\n" for t in first), encoding="utf-8")

    target = _fresh(databases, request)
    records, bad = read_import_file(str(dump))
    assert not bad and len(records) == 60
    with target.write() as session:
        result = import_tickets(session, records, Actor("importer", 1))
    assert result.tickets == 60
    second = _export(target)
    assert [_comparable(t) for t in second] == [_comparable(t) for t in first]
    assert [t["external_id"] for t in second] == [str(t["id"]) for t in first]
    with target.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar() == 60
    # imported tickets are searchable like any other
    word = first[0]["subject"].split()[0]
    with target.read() as session:
        assert ticket_ids(session, word, QueryContext())


def test_bad_line_is_reported_with_its_number_and_nothing_is_imported(tmp_path):
    good = {"id": 1, "subject": "ok", "requester": "a@b.test", "created_at": "2026-01-01T10:00:00Z", "messages": []}
    lines = [json.dumps(good), json.dumps(dict(good, status="bogus")), "{not json", json.dumps(good)]
    dump = tmp_path / "dump.jsonl"
    dump.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidError, match=r"dump.jsonl:2: status 'bogus' is not one of"):
        read_import_file(str(dump))
    records, bad = read_import_file(str(dump), skip_bad=True)
    assert len(records) == 2
    assert [line for line, _ in bad] == [2, 3]
    assert "not valid JSON" in bad[1][1]


@pytest.mark.parametrize("record, message", [
    ({"subject": "x", "requester": "nobody", "created_at": "2026-01-01T00:00:00Z"}, "requester must be an email"),
    ({"subject": "x", "requester": "a@b.test", "created_at": "2026-01-01T00:00:00"}, "has no time zone"),
    ({"subject": "x", "requester": "a@b.test", "created_at": "2026-01-01T00:00:00Z",
      "messages": [{"kind": "fax", "created_at": "2026-01-01T00:00:00Z"}]}, "messages[0].kind 'fax'"),
    ([1, 2], "must be a JSON object"),
])
def test_line_checks(tmp_path, record, message):
    dump = tmp_path / "d.jsonl"
    dump.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(InvalidError, match=":1: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        read_import_file(str(dump))


def test_cli_import_and_export(cli, tmp_path, database):
    ticket = {"id": 77, "subject": "Imported", "requester": "x@old.test", "queue": "Legacy", "tags": ["old"],
              "created_at": "2025-03-01T09:00:00Z", "status": "solved",
              "messages": [{"kind": "inbound", "from": "x@old.test", "body_text": "hi",
                            "created_at": "2025-03-01T09:00:00Z"}]}
    dump = tmp_path / "in.jsonl"
    dump.write_text(json.dumps(ticket) + "\n", encoding="utf-8")
    result = cli("tickets", "import", str(dump))
    assert result.exit_code == 0, result.output
    assert "created queues: Legacy" in result.output
    out = tmp_path / "out.jsonl"
    assert cli("tickets", "export", "queue:legacy", "-o", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported[0]["created_at"] == "2025-03-01T09:00:00Z"
    assert exported[0]["external_id"] == "77" and exported[0]["tags"] == ["old"]
    assert exported[0]["messages"][0]["body_text"] == "hi"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ticket) + "\n" + "nope\n", encoding="utf-8")
    failed = cli("tickets", "import", str(bad))
    assert failed.exit_code == 2 and "bad.jsonl:2" in failed.output
    with database.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar() == 1
