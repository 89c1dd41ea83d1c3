"""Inputs several test files build alike: the support mailbox's settings, a customer's mail,
and an SLA configuration whose clock always runs."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from supportdesk.config import MailboxConfig, Settings, TicketsConfig
from supportdesk.models import utcnow

SUPPORT = "support@example.test"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = {day: ["00:00-24:00"] for day in DAYS}
ALWAYS_CALENDAR = {"name": "always", "timezone": "UTC", "hours": ALWAYS}


def intake_settings(mailbox: MailboxConfig | None = None) -> Settings:
    """Mail to the support mailbox files into General, tagged [Support #N], and new tickets are acknowledged."""
    mailbox = mailbox or MailboxConfig(name="support", address=SUPPORT, queue="General")
    return Settings(mailboxes=[mailbox], tickets=TicketsConfig(subject_tag="Support", autoreply=True))


def mail(subject="Printer on fire", sender="Bob <bob@acme.test>", body="It is on fire.", attachment=None,
         **headers) -> bytes:
    """A customer's message to the support mailbox; `In_Reply_To="…"` adds the header In-Reply-To."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = headers.pop("message_id", make_msgid(domain="acme.test"))
    msg["Date"] = format_datetime(utcnow())
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="data.bin")
    return bytes(msg)


def always_sla(**targets: int) -> str:
    """TOML: the calendar "always" (every hour of every day, UTC) and the SLA "default" on it
    with these targets in minutes, e.g. `always_sla(first_response=60)`."""
    hours = "\n".join(f'{day} = ["00:00-24:00"]' for day in DAYS)
    minutes = "\n".join(f"{name} = {value}" for name, value in targets.items())
    return (
        f'\n[[calendar]]\nname = "always"\ntimezone = "UTC"\n[calendar.hours]\n{hours}\n\n'
        f'[[sla]]\nname = "default"\ncalendar = "always"\n{minutes}\n'
    )


def always_sla_data(**targets: int) -> dict:
    """`always_sla(...)` as the dict `parse_settings` takes."""
    return {"calendar": [dict(ALWAYS_CALENDAR)],
            "sla": [{"name": "default", "calendar": "always", **targets}]}
