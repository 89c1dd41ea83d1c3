"""A realistic, deterministic demo database: the same tickets every time."""

from __future__ import annotations

import base64
import random
import unicodedata
from datetime import datetime, timedelta, timezone

from sqlmodel import Session, select

from supportdesk.config import MailboxConfig, Settings, TicketsConfig
from supportdesk.mail.compose import OutgoingMail, build_message, make_message_id, reply_subject
from supportdesk.models import Agent
from supportdesk.tickets import Actor, add_agent, ensure_queue
from supportdesk.transfer import check_record, import_tickets

DEMO_MARKER = 0x5D3D  # PRAGMA user_version of demo databases, so `demo` never overwrites a real one
QUEUES = {"General": "support@demo.test", "Billing": "billing@demo.test", "Technical": "tech@demo.test",
          "VIP": "vip@demo.test"}
AGENTS = [("alice", "Alice Archer"), ("bob", "Bob Baker"), ("carol", "Carol Chen"), ("dave", "Dave Diaz")]
COMPANIES = ["acme.test", "globex.test", "initech.test", "umbrella.test", "hooli.test", "stark.test"]
FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
         "Mateo", "Nora", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Müller", "Smith", "García", "Nakamura", "Okafor", "Rossi", "Kowalski", "Nguyen", "Larsen", "Dubois"]
TOPICS = [
    ("Billing", "Invoice {n} charged twice", "Hello, my card was charged twice for invoice {n}. Please refund one of them."),
    ("Billing", "Refund request for order {n}", "I returned order {n} two weeks ago and have not seen a refund yet."),
    ("Billing", "Change billing address", "Please update our billing address to Hauptstraße {n}, Berlin."),
    ("Technical", "Cannot log in since the update", "Since this morning's update I get 'invalid session' on login."),
    ("Technical", "Export to CSV times out", "Exporting more than {n} rows to CSV times out after 30 seconds."),
    ("Technical", "API returns 500 on /orders", "Our integration gets HTTP 500 from /orders for about {n} requests an hour."),
    ("Technical", "Password reset email never arrives", "I requested a password reset three times; nothing arrived."),
    ("General", "Question about opening hours", "Are you open on public holidays? We need help on the 24th."),
    ("General", "Feature request: dark mode", "Would love a dark mode for the dashboard. Our team works late."),
    ("General", "How do I add a colleague?", "How can I add a colleague to our account? We bought {n} seats."),
    ("VIP", "Urgent: production outage", "Our production system is down since {n} minutes. Please call us."),
    ("VIP", "Contract renewal for next year", "Let's talk about renewing the contract for {n} more seats."),
]
SPAM = [("You won a prize!!!", "Click here to claim your prize."), ("Cheap watches", "Best replica watches, 90% off."),
        ("SEO services for your site", "We can get you to page one of search results.")]
REPLIES = [
    "Thanks for reaching out! I'm looking into this now and will get back to you shortly.",
    "Sorry about the trouble. Could you send us a screenshot of the error?",
    "This is fixed on our side now. Could you try again and let us know?",
    "I've issued the refund; it should show on your statement in 3–5 business days.",
]
FOLLOW_UPS = ["Here is the screenshot you asked for.", "Still not working, unfortunately.",
              "Thanks, that worked!", "Any news on this?"]
NOTES = ["Customer is on the Enterprise plan.", "Checked logs: session cookie expired early. Escalating to dev.",
         "Refund approved by finance.", "Possible duplicate of an earlier ticket."]


def demo_settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        mailboxes=[MailboxConfig(name=q.lower(), address=a, queue=q) for q, a in QUEUES.items()],
        tickets=TicketsConfig(subject_tag="Demo"),
    )


def seed(session: Session, *, me: str, tickets: int = 300, anchor: datetime | None = None, seed_value: int = 7) -> int:
    """Fill an empty, migrated database; returns the number of tickets created.

    The tickets are built as export records and loaded through the import path:
    the demo opens in about a second, and import is exercised on every demo.
    """
    rng = random.Random(seed_value)
    now = (anchor or datetime.now(timezone.utc)).replace(microsecond=0)
    for name, address in QUEUES.items():
        ensure_queue(session, name, address)
    for login, full in AGENTS:
        add_agent(session, login, name=full, email=f"{login}@demo.test")
    if session.exec(select(Agent).where(Agent.login == me)).first() is None:
        add_agent(session, me, name=me, role="admin")
    logins = [login for login, _ in AGENTS] + [me]
    people = [(f"{f} {l}", _ascii(f"{f}.{l}".lower().replace("ü", "ue"))) for f in FIRST for l in LAST]
    rng.shuffle(people)
    customers = [(full, f"{local}@{COMPANIES[i % len(COMPANIES)] if i % 4 else 'gmail.com'}")
                 for i, (full, local) in enumerate(people[:120])]
    records = [check_record(_demo_ticket(rng, i, now, customers, logins)) for i in range(tickets)]
    import_tickets(session, records, Actor(me))
    return len(records)


def _demo_ticket(rng: random.Random, i: int, now: datetime, customers, logins) -> dict:
    opened = now - timedelta(minutes=rng.randint(5, 60 * 24 * 45))
    if i % 23 == 0:
        subject, body = rng.choice(SPAM)
        name, email = "Promo Team", f"offers{i}@spam-{i % 5}.test"
        queue, channel, tags = "General", "email", ["spam"]
    else:
        queue, subject, body = rng.choice(TOPICS)
        n = rng.randint(100, 9999)
        subject, body = subject.format(n=n), body.format(n=n)
        name, email = rng.choice(customers)
        channel = rng.choices(["email", "phone", "chat", "social", "web"], [70, 12, 10, 4, 4])[0]
        tags = rng.sample(["billing", "bug", "feature-request", "refund", "onboarding"], rng.randint(0, 2))
        if email.endswith("@acme.test"):
            tags.append("vip")
    priority = rng.choices(["low", "normal", "high", "urgent"], [15, 55, 22, 8])[0]
    agent = rng.choice(logins)
    domain = email.rsplit("@", 1)[1]
    creator = "system" if channel == "email" else "alice"
    events = [_event(opened, creator, "created", None, f"{channel} ticket")]
    events += [_event(opened, creator, "tag", None, tag) for tag in tags]
    first_kind = {"email": "inbound", "web": "inbound", "phone": "call", "chat": "chat", "social": "social"}[channel]
    messages = [{
        "kind": first_kind, "from": email, "from_name": name, "author": None if channel == "email" else "alice",
        "to": [QUEUES[queue]] if channel == "email" else [], "subject": subject, "body_text": body,
        "message_id": make_message_id(domain) if channel == "email" else None, "created_at": opened.isoformat(),
    }]
    when = opened
    for turn in range(rng.randint(0, 5)):
        later = when + timedelta(minutes=rng.randint(10, 60 * 30))
        if later >= now:
            break
        when = later
        if turn % 2 == 0:
            if rng.random() < 0.25:
                messages.append({"kind": "note", "from": agent, "author": agent, "body_text": rng.choice(NOTES),
                                 "subject": subject, "created_at": when.isoformat()})
                events.append(_event(when, agent, "message", None, "note"))
            reply = rng.choice(REPLIES)
            mail = OutgoingMail(
                from_addr=QUEUES[queue], from_name=f"{queue} support", to=[email],
                subject=reply_subject(subject, "Demo", i + 1), body_text=reply, message_id=make_message_id("demo.test"),
                in_reply_to=messages[0]["message_id"], date=when,
            )
            messages.append({
                "kind": "outbound", "from": QUEUES[queue], "from_name": mail.from_name, "author": agent, "to": [email],
                "subject": mail.subject, "body_text": reply, "message_id": mail.message_id,
                "in_reply_to": mail.in_reply_to, "created_at": when.isoformat(),
                "delivery": "sent" if when < now - timedelta(minutes=5) else "queued",
                "raw_base64": base64.b64encode(build_message(mail)).decode("ascii"),
            })
            events.append(_event(when, agent, "message", None, "outbound"))
        else:
            messages.append({"kind": "inbound", "from": email, "from_name": name, "to": [QUEUES[queue]],
                             "subject": f"Re: {subject}", "body_text": rng.choice(FOLLOW_UPS),
                             "message_id": make_message_id(domain), "created_at": when.isoformat()})
            events.append(_event(when, "system", "message", None, "inbound"))
    status = _demo_status(rng, i, len(messages) - 1)
    assignee = None if status == "new" or rng.random() < 0.2 else agent
    settled = min(when + timedelta(minutes=1), now)
    if assignee:
        events.append(_event(settled, agent, "assignee", None, assignee))
    if status != "new":
        events.append(_event(settled, agent, "status", "new", status))
    return {
        "subject": subject, "status": status, "priority": priority, "queue": queue, "requester": email,
        "requester_name": name, "assignee": assignee, "tags": tags, "channel": channel,
        "mailbox": queue.lower() if channel == "email" else None, "created_at": opened.isoformat(),
        "updated_at": settled.isoformat() if status != "new" else when.isoformat(), "messages": messages,
        "events": events, "participants": [f"cc{i}@{domain}"] if rng.random() < 0.15 else [],
    }


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _event(at: datetime, actor: str, field: str, old, new) -> dict:
    return {"at": at.isoformat(), "actor": actor, "field": field, "old": old, "new": new}


def _demo_status(rng: random.Random, i: int, turns: int) -> str:
    if i % 23 == 0:
        return "new"
    if turns == 0:
        return rng.choice(["new", "new", "open"])
    return rng.choices(["open", "pending", "on_hold", "solved", "closed"], [35, 25, 8, 20, 12])[0]
