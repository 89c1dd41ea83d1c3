"""A realistic, deterministic demo database: the same tickets every time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sqlmodel import Session, select

from supportdesk.config import MailboxConfig, Settings, TicketsConfig
from supportdesk.mail.compose import OutgoingMail, build_message, make_message_id, reply_subject
from supportdesk.models import Agent, Outbox
from supportdesk.tickets import (
    Actor, add_agent, add_message, add_participant, create_ticket, ensure_queue, record,
)

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
    """Fill an empty, migrated database; returns the number of tickets created."""
    rng = random.Random(seed_value)
    now = (anchor or datetime.now(timezone.utc)).replace(microsecond=0)
    for name, address in QUEUES.items():
        ensure_queue(session, name, address)
    agents = {}
    for login, full in AGENTS:
        agent = add_agent(session, login, name=full, email=f"{login}@demo.test")
        agents[login] = Actor(agent.login, agent.id)
    if me not in agents:
        existing = session.exec(select(Agent).where(Agent.login == me)).first()
        agent = existing or add_agent(session, me, name=me, role="admin")
        agents[me] = Actor(agent.login, agent.id)
    people = [(f"{f} {l}", f"{f.lower().replace('é', 'e')}.{l.lower().replace('ü', 'ue').replace('í', 'i')}")
              for f in FIRST for l in LAST]
    rng.shuffle(people)
    customers = []
    for i, (full, local) in enumerate(people[:120]):
        domain = COMPANIES[i % len(COMPANIES)] if i % 4 else "gmail.com"
        customers.append((full, f"{local}@{domain}"))
    created = 0
    for i in range(tickets):
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
        turns = rng.randint(0, 5)
        status = _demo_status(rng, i, turns)
        system = Actor.system()
        ticket = create_ticket(
            session, agents["alice"] if channel != "email" else system, requester_email=email, requester_name=name,
            subject=subject, body=body, channel=channel, queue=queue, priority=priority, tags=tags, created_at=opened,
            mailbox=queue.lower() if channel == "email" else None, status="new",
            message_id=make_message_id(email.rsplit("@", 1)[1]) if channel == "email" else None,
        )
        when = opened
        agent = agents[rng.choice(list(agents))]
        for turn in range(turns):
            when += timedelta(minutes=rng.randint(10, 60 * 30))
            if when >= now:
                break
            if turn % 2 == 0:
                if rng.random() < 0.25:
                    add_message(session, ticket, agent, kind="note", body=rng.choice(NOTES), created_at=when,
                                author_agent_id=agent.agent_id, from_addr=agent.login)
                _demo_reply(session, ticket, agent, rng.choice(REPLIES), when, email, sent=when < now - timedelta(minutes=5))
            else:
                add_message(session, ticket, system, kind="inbound", body=rng.choice(FOLLOW_UPS), created_at=when,
                            from_addr=email, from_name=name, message_id=make_message_id(email.rsplit("@", 1)[1]))
        if rng.random() < 0.15:
            add_participant(session, ticket.id, f"cc{i}@{email.rsplit('@', 1)[1]}")
        if status != "new":
            _settle(session, ticket, agent, status, assign=rng.random() > 0.2, at=min(when + timedelta(minutes=1), now))
        created += 1
    return created


def _settle(session, ticket, agent: Actor, status: str, *, assign: bool, at: datetime) -> None:
    """The ticket's final state, stamped at the time of its last activity (not at seeding time)."""
    if assign:
        record(session, ticket.id, agent, "assignee", None, agent.login, at=at)
        ticket.assignee_id = agent.agent_id
    record(session, ticket.id, agent, "status", "new", status, at=at)
    ticket.status = status
    ticket.updated_at = max(ticket.updated_at, at)
    ticket.version += 1
    if status in ("solved", "closed"):
        ticket.solved_at = at
    if status == "closed":
        ticket.closed_at = at
    session.flush()


def _demo_status(rng: random.Random, i: int, turns: int) -> str:
    if i % 23 == 0:
        return "new"
    if turns == 0:
        return rng.choice(["new", "new", "open"])
    return rng.choices(["open", "pending", "on_hold", "solved", "closed"], [35, 25, 8, 20, 12])[0]


def _demo_reply(session, ticket, agent: Actor, body: str, when: datetime, to: str, *, sent: bool) -> None:
    address = QUEUES.get(_queue_name(session, ticket), "support@demo.test")
    mail = OutgoingMail(
        from_addr=address, from_name="Demo Support", to=[to], subject=reply_subject(ticket.subject, "Demo", ticket.id),
        body_text=body, message_id=make_message_id("demo.test"), date=when,
    )
    message = add_message(session, ticket, agent, kind="outbound", body=body, subject=mail.subject,
                          from_addr=address, to=[to], created_at=when, message_id=mail.message_id,
                          author_agent_id=agent.agent_id)
    session.add(Outbox(ticket_id=ticket.id, message_id=message.id, status="sent" if sent else "queued",
                       envelope_from=address, envelope_to=f'["{to}"]', raw=build_message(mail), attempts=1 if sent else 0,
                       created_at=when, sent_at=when if sent else None, next_attempt_at=when))


def _queue_name(session, ticket) -> str:
    from supportdesk.models import Queue

    return session.get(Queue, ticket.queue_id).name
