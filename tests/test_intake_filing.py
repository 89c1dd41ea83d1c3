"""Set-based filing: the batch path writes what the one-by-one path writes, and keeps its guarantees."""

from __future__ import annotations

import json
import re
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

import supportdesk.mail.filing as filing
import supportdesk.mail.intake as intake
from supportdesk.db import Database
from supportdesk.mail.intake import process_pending, store_raw
from supportdesk.models import (
    Attachment, Customer, Event, Message, Organization, Outbox, Participant, RawMessage, Tag, Ticket, TicketTag,
)
from supportdesk.tickets import add_agent, ensure_queue
from tests.samples import SUPPORT, intake_settings as settings, mail


def a_mixed_batch() -> list[bytes]:
    """New senders, a repeat sender, freemail, CC, an attachment, automatic mail, an untrusted From,
    a reply to an earlier message of the same batch, the same mail twice, and garbage."""
    first = "<first@acme.test>"
    return [
        mail(message_id=first, Cc="Carol <carol@acme.test>, support@example.test"),
        mail(subject="Second question", body="And another thing."),
        mail(subject="From gmail", sender="Dora <dora@gmail.com>"),
        mail(subject="Invoice", sender="eve@initech.test", attachment=b"\x00\x01" * 500),
        mail(subject="Away", sender="bot@initech.test", Auto_Submitted="auto-replied"),
        mail(subject="Re: Printer on fire", In_Reply_To=first, References=first),
        mail(subject="Odd sender", sender="alice@example.org)<mallory@evil.test>"),
        mail(subject="Same mail twice", message_id="<twice@acme.test>", sender="fred@globex.test"),
        mail(subject="Same mail twice", message_id="<twice@acme.test>", sender="fred@globex.test",
             X_Extra="1"),
        b"\x00\x01\x02 not mail at all \xff",
        mail(subject="Last one", sender="gina@globex.test"),
    ]


def fresh_database(tmp_path, name: str, template_db) -> Database:
    path = tmp_path / name
    path.write_bytes(template_db.read_bytes())
    database = Database(f"sqlite:///{path}")
    with database.write() as session:
        ensure_queue(session, "General", SUPPORT)
        add_agent(session, "alice", name="Alice", role="admin")
    return database


def store(database, messages: list[bytes]) -> None:
    with database.write() as session:
        for raw in messages:
            store_raw(session, raw, mailbox="support", source="pipe")


def snapshot(database) -> dict:
    """Everything filing writes, without ids, times and random Message-IDs."""
    ids = re.compile(r"#\d+")

    def rows(session, stmt):
        return sorted(tuple(str(v) for v in row) for row in session.execute(stmt).all())

    T, M, E, C = Ticket.__table__.c, Message.__table__.c, Event.__table__.c, Customer.__table__.c
    with database.read() as session:
        subject_of = dict(session.execute(sa.select(T.id, T.subject)).all())
        email_of = dict(session.execute(sa.select(C.id, C.email)).all())
        events = [(subject_of[t], field, old, ids.sub("#", new or "")) for t, field, old, new in session.execute(
            sa.select(E.ticket_id, E.field, E.old, E.new)).all()]
        messages = session.execute(sa.select(
            M.ticket_id, M.kind, M.from_addr, M.from_name, M.to_addrs, M.cc_addrs, M.subject, M.body_text, M.auto,
            M.raw_message_id, M.in_reply_to, M.references, M.message_id)).all()
        own = {m.message_id for m in messages if m.kind == "outbound"}
        return {
            "tickets": rows(session, sa.select(
                T.subject, T.status, T.priority, T.priority_rank, T.channel, T.queue_id, T.mailbox, T.version,
                T.message_count, T.unread, T.parent_id.is_(None), T.last_inbound_at.is_(None),
                T.last_outbound_at.is_(None), T.solved_at, T.closed_at, T.merged_into_id)),
            "requesters": sorted((subject_of[t], email_of[r]) for t, r in session.execute(
                sa.select(T.id, T.requester_id)).all()),
            "messages": sorted(
                (subject_of[m.ticket_id], m.kind, m.from_addr, m.from_name, m.to_addrs, m.cc_addrs, m.subject,
                 m.body_text.replace(str(m.ticket_id), "N"), m.auto, m.raw_message_id,
                 None if m.in_reply_to in own else m.in_reply_to,
                 " ".join(r for r in (m.references or "").split() if r not in own),
                 None if m.message_id in own else m.message_id)
                for m in messages),
            "events": sorted(events, key=repr),
            "customers": rows(session, sa.select(C.email, C.name, C.organization_id.is_(None))),
            "organizations": rows(session, sa.select(Organization.__table__.c.name, Organization.__table__.c.domain)),
            "participants": sorted((subject_of[p.ticket_id], p.email, p.role) for p in session.execute(
                sa.select(Participant.__table__)).all()),
            "tags": sorted((subject_of[t], name) for t, name in session.execute(
                sa.select(TicketTag.__table__.c.ticket_id, Tag.__table__.c.name)
                .join(Tag.__table__, Tag.__table__.c.id == TicketTag.__table__.c.tag_id)).all()),
            "attachments": rows(session, sa.select(Attachment.__table__.c.filename, Attachment.__table__.c.size,
                                                   Attachment.__table__.c.sha256)),
            "outbox": sorted((subject_of[o.ticket_id], o.status, o.envelope_from, o.envelope_to, o.attempts,
                              b"Auto-Submitted: auto-replied" in o.raw) for o in session.execute(
                sa.select(Outbox.__table__)).all()),
            "raw": rows(session, sa.select(RawMessage.__table__.c.id, RawMessage.__table__.c.state)),
        }


def queue_one_by_one(self) -> None:
    """The reference for `Acknowledger.flush`: `queue_reply` for each held acknowledgement."""
    from supportdesk.mail.outbox import acknowledgement_body, queue_reply
    from supportdesk.tickets import Actor, get_ticket

    held, self.held = self.held, []
    for ticket_id, _ in held:
        ticket = get_ticket(self.session, ticket_id)
        queue_reply(self.session, self.settings, ticket, Actor.system(),
                    acknowledgement_body(self.session, self.settings, ticket), auto=True, cc=[])


def test_the_batch_path_writes_what_the_one_by_one_path_writes(tmp_path, template_db, monkeypatch):
    messages = a_mixed_batch()
    batch_db = fresh_database(tmp_path, "batch.db", template_db)
    store(batch_db, messages)
    batch = process_pending(batch_db, settings())

    single_db = fresh_database(tmp_path, "single.db", template_db)
    store(single_db, messages)
    monkeypatch.setattr(intake, "is_plain_new", lambda *args: False)
    monkeypatch.setattr(filing.Acknowledger, "flush", queue_one_by_one)
    single = process_pending(single_db, settings())

    assert len(batch.created) == len(single.created) == 8
    assert batch.appended == single.appended and len(batch.appended) == 1
    assert len(batch.quarantined) == len(single.quarantined) == 1
    assert batch.duplicates == single.duplicates == 1
    expected, got = snapshot(single_db), snapshot(batch_db)
    for key in expected:
        assert got[key] == expected[key], key
    assert any(tag == "suspicious-sender" for _, tag in got["tags"])
    assert ("Printer on fire", "carol@acme.test", "cc") in got["participants"]
    assert len(got["outbox"]) == 6  # not to the automatic mail nor to the untrusted sender
    batch_db.close()
    single_db.close()


def test_a_reply_in_the_same_batch_threads_onto_the_ticket_the_batch_opened(database):
    store(database, [mail(message_id="<a@acme.test>"), mail(subject="other", sender="x@y.test"),
                     mail(subject="Re: Printer on fire", In_Reply_To="<a@acme.test>")])
    report = process_pending(database, settings())
    assert len(report.created) == 2 and report.appended == [report.created[0]]
    with database.read() as session:
        ticket = session.get(Ticket, report.created[0])
        assert ticket.message_count == 3 and ticket.status == "new"  # two inbound and the acknowledgement


def test_acknowledgements_in_one_batch_keep_the_recipient_rate_limit(database):
    store(database, [mail(subject=f"loop {i}") for i in range(35)])
    report = process_pending(database, settings())
    assert len(report.created) == 35
    with database.read() as session:
        acks = session.execute(sa.select(sa.func.count()).where(Message.kind == "outbound", Message.auto)).scalar()
        suppressed = session.execute(sa.select(sa.func.count()).where(
            Event.field == "autoreply", Event.new.like("%too many%"))).scalar()
    assert acks == 30 and suppressed == 5
    store(database, [mail(subject="one more")])
    process_pending(database, settings())
    with database.read() as session:
        acks = session.execute(sa.select(sa.func.count()).where(Message.kind == "outbound", Message.auto)).scalar()
    assert acks == 30


def test_a_failing_batch_is_filed_message_by_message(database, monkeypatch):
    calls = []
    real = filing.file_new_tickets

    def broken(session, settings_, items, *args):
        calls.append(len(items))
        if len(items) > 1:
            raise RuntimeError("batch insert failed")
        return real(session, settings_, items, *args)

    monkeypatch.setattr(intake, "file_new_tickets", broken)
    store(database, [mail(subject=f"m{i}", sender=f"c{i}@acme.test") for i in range(5)])
    report = process_pending(database, settings())
    assert calls and calls[0] == 5
    assert len(report.created) == 5 and not report.quarantined
    with database.read() as session:
        states = set(session.execute(sa.select(RawMessage.state)).scalars())
        tickets = session.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar()
    assert states == {"processed"} and tickets == 5


def test_a_batch_skips_messages_another_process_filed_meanwhile(database, monkeypatch):
    store(database, [mail(subject=f"m{i}") for i in range(3)])
    real = intake._file_items

    def racing(database_, settings_, items):
        with database_.write() as session:  # another filer got there first
            session.execute(sa.update(RawMessage.__table__).where(RawMessage.__table__.c.id == items[0].raw_id)
                            .values(state="processed"))
        return real(database_, settings_, items)

    monkeypatch.setattr(intake, "_file_items", racing)
    report = process_pending(database, settings())
    assert len(report.created) == 2


def test_parsing_in_worker_processes_files_the_same(database, monkeypatch):
    monkeypatch.setattr(intake, "PARALLEL_MIN", 5)
    monkeypatch.setattr(intake, "BATCH_MESSAGES", 4)
    store(database, [mail(subject=f"parallel {i}", sender=f"p{i}@acme.test") for i in range(12)])
    report = process_pending(database, settings(), workers=1)
    assert len(report.created) == 12
    with database.read() as session:
        subjects = sorted(session.execute(sa.select(Ticket.subject)).scalars())
    assert subjects == sorted(f"parallel {i}" for i in range(12))


@pytest.mark.parametrize("limit", [1, 2])
def test_limit_files_only_that_many(database, limit):
    store(database, [mail(subject=f"m{i}") for i in range(3)])
    assert len(process_pending(database, settings(), limit=limit).created) == limit


def test_outbox_rows_of_batched_acknowledgements_are_deliverable(database):
    store(database, [mail(subject=f"hello {i}", sender=f"h{i}@acme.test") for i in range(3)])
    process_pending(database, settings())
    with database.read() as session:
        rows = session.execute(sa.select(Outbox)).scalars().all()
        messages = {m.id: m for m in session.execute(sa.select(Message).where(Message.kind == "outbound")).scalars()}
    assert len(rows) == 3
    for row in rows:
        message = messages[row.message_id]
        assert row.status == "queued" and row.envelope_from == "" and json.loads(row.envelope_to) == json.loads(
            message.to_addrs)
        assert f"<{message.message_id}>".encode() in row.raw
        assert f"[Support #{row.ticket_id}]".encode() in row.raw


def test_batch_filing_on_postgresql(postgres):
    """The same batch on PostgreSQL (RETURNING in executemany, no incremental blob I/O)."""
    store(postgres, a_mixed_batch() + [mail(subject="Big", sender="big@acme.test", attachment=b"\x07" * (2 << 20))])
    report = process_pending(postgres, settings())
    assert len(report.created) == 9 and len(report.appended) == 1 and len(report.quarantined) == 1
    got = snapshot(postgres)
    assert len(got["outbox"]) == 7 and ("Printer on fire", "carol@acme.test", "cc") in got["participants"]
    assert ("data.bin", str(2 << 20)) in {row[:2] for row in got["attachments"]}


def test_large_base64_bodies_parse_the_same_with_the_shortcut():
    """Big bodies cut out before the email package (to save memory) give the same result,
    and a big body inside a forwarded message falls back to the ordinary parse."""
    import os

    from supportdesk.mail.parse import _Parser, parse_message

    data = os.urandom(2 << 20)
    plain = EmailMessage()
    plain["From"] = "a@acme.test"
    plain["To"] = SUPPORT
    plain["Subject"] = "big"
    plain.set_content("see attached")
    plain.add_attachment(data, maintype="application", subtype="pdf", filename="big.pdf")
    outer = EmailMessage()
    outer["From"] = "b@acme.test"
    outer["To"] = SUPPORT
    outer["Subject"] = "Fwd: big"
    outer.set_content("forwarding")
    outer.add_attachment(plain)
    for raw in (bytes(plain), bytes(plain).replace(b"\n", b"\r\n"), bytes(outer)):
        fast, slow = parse_message(raw), _Parser(raw, cut_big_bodies=False).run()
        assert fast == slow
        assert b"SupportdeskBigBody" not in b"".join(a.data for a in fast.attachments)
    assert parse_message(bytes(plain)).attachments[0].data == data
    cut = _Parser(bytes(plain))
    cut.run()
    assert cut.big and cut.big_used == set(cut.big)  # the shortcut was taken


def test_a_batch_failing_after_it_let_go_of_large_attachments_files_them_whole(database, monkeypatch):
    """The batch path lets go of attachment bytes over 1 MB once written; if the batch then
    fails, the message-by-message path parses those messages again from the raw bytes."""
    import hashlib
    import os

    from supportdesk.models import AttachmentBlob

    real = filing.file_new_tickets
    released = []

    def fails_late(session, settings_, items, *args):
        real(session, settings_, items, *args)
        released.extend(item.released for item in items)
        raise RuntimeError("failed after the attachments were written")

    monkeypatch.setattr(intake, "file_new_tickets", fails_late)
    big, small = os.urandom(1_500_000), b"\x00\x01" * 500
    store(database, [mail(subject="big", sender="b@acme.test", attachment=big),
                     mail(subject="small", sender="s@acme.test", attachment=small)])
    report = process_pending(database, settings())
    assert released == [True, False]
    assert len(report.created) == 2 and not report.quarantined
    with database.read() as session:
        stored = dict(session.execute(sa.select(Attachment.size, AttachmentBlob.data).join(
            AttachmentBlob, AttachmentBlob.sha256 == Attachment.sha256)).all())
    assert hashlib.sha256(stored[len(big)]).digest() == hashlib.sha256(big).digest()
    assert stored[len(small)] == small
