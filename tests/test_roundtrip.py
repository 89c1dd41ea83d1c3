"""A whole conversation through real servers: Dovecot in, aiosmtpd out, and back in again."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest

from supportdesk.config import SmtpConfig
from supportdesk.listing import ticket_detail
from supportdesk.mail.delivery import send_once
from supportdesk.mail.imap import fetch_once
from supportdesk.mail.outbox import queue_reply
from supportdesk.models import utcnow
from supportdesk.tickets import get_ticket, resolve_actor
from tests.test_delivery import smtp, smtp_servers  # noqa: F401  (fixtures)
from tests.test_intake import append, settings_for


def customer_mail(subject: str, body: str, **headers) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob Baker <bob@acme.test>"
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="acme.test")
    msg["Date"] = format_datetime(utcnow())
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return bytes(msg)


@pytest.mark.integration
def test_customer_mail_reply_and_answer_thread_into_one_ticket(database, imap_account, smtp):  # noqa: F811
    settings = settings_for(imap_account)
    settings.smtp = SmtpConfig(host="127.0.0.1", port=smtp.port, security="none", timeout=10)
    box = settings.mailboxes[0]

    first = customer_mail("My printer is on fire", "Please help, it smokes.")
    append(imap_account, first)
    created = fetch_once(database, settings, box).report.created
    assert len(created) == 1
    ticket_id = created[0]

    with database.write() as session:
        ticket = get_ticket(session, ticket_id)
        queue_reply(session, settings, ticket, resolve_actor(session, "alice"), "Unplug it first, please.")
    report = send_once(database, settings)
    assert report.sent == 2  # the acknowledgement and the agent's reply
    envelopes = {b"Auto-Submitted: auto-replied" in m["content"]: m for m in smtp.handler.received}
    assert envelopes[True]["from"] == "<>"  # automatic mail: empty envelope sender
    assert envelopes[False]["from"] == "support@example.test"
    reply = email.message_from_bytes(envelopes[False]["content"], policy=policy.default)
    customer_id = email.message_from_bytes(first, policy=policy.default)["Message-ID"]
    assert reply["In-Reply-To"] == customer_id
    assert customer_id in reply["References"]
    assert f"[Support #{ticket_id}]" in reply["Subject"]
    assert reply["From"].addresses[0].addr_spec == "support@example.test"

    # The customer answers from a real mail client: In-Reply-To/References point at our reply.
    answer = customer_mail(f"Re: {reply['Subject']}", "Unplugged. Now what?",
                           In_Reply_To=reply["Message-ID"], References=f"{customer_id} {reply['Message-ID']}")
    # A client that drops the headers but keeps the tag still lands in the ticket (Bob takes part in it).
    tagged_only = customer_mail(f"Re: {reply['Subject']}", "Also, it beeps.")
    append(imap_account, answer, tagged_only)
    result = fetch_once(database, settings, box).report
    assert result.created == [] and result.appended == [ticket_id, ticket_id]
    with database.read() as session:
        detail = ticket_detail(session, ticket_id, utcnow())
    kinds = [m["kind"] for m in detail["messages"]]
    assert kinds.count("inbound") == 3 and kinds.count("outbound") == 2
    assert [m["delivery"] for m in detail["messages"] if m["kind"] == "outbound"] == ["sent", "sent"]
