"""The query language against its contract (docs/query-language.md).

Parser tests pin what each term means; error tests pin that a malformed query is
refused rather than read as "everything"; the property tests compare the SQL the
compiler produces with a plain Python reading of the documentation over random
tickets, so the two can only agree if the SQL keeps the documented semantics.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Optional

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportdesk.listing import count, ticket_ids
from supportdesk.models import (
    CHANNELS, PRIORITIES, PRIORITY_RANK, STATUSES, Agent, Customer, Message, Organization, Queue, Tag, Ticket,
    TicketTag,
)
from supportdesk.query import IS_VALUES, SORT_FIELDS, QueryContext, QueryError, compile_query, parse_query, sort_order

FIXED_NOW = datetime(2026, 2, 10, 12, 0, tzinfo=timezone.utc)
CTX = QueryContext(now=FIXED_NOW, me="alice", tz=timezone.utc)


# --- the world the tests build ------------------------------------------------------------

@dataclass(frozen=True)
class Org:
    id: int
    name: str
    domain: str


@dataclass(frozen=True)
class Person:
    id: int
    email: str
    name: str
    org: Optional[Org]


ACME = Org(1, "Acme", "acme.test")
GLOBEX = Org(2, "Globex", "globex.test")
ACME_LABS = Org(3, "Acme Labs", "acmelabs.test")
INITECH = Org(4, "Initech", "initech.co.uk")
UMBRELLA = Org(5, "Umbrella Corp", "umbrella-corp.test")
ORGS = (ACME, GLOBEX, ACME_LABS, INITECH, UMBRELLA)

BOB = Person(1, "bob@acme.test", "Bob Stone", ACME)
CAROL = Person(2, "carol@acme.test", "Carol Bobbins", ACME)
DAVE = Person(3, "dave@globex.test", "Dave", GLOBEX)
ERIN = Person(4, "erin@acmelabs.test", "", ACME_LABS)
FRANK = Person(5, "f_rank@initech.co.uk", "Frank", INITECH)
GINA = Person(6, "gina@umbrella-corp.test", "Gina", UMBRELLA)
HANK = Person(7, "hank@gmail.com", "Hank Acme", None)
IVY = Person(8, "ivy%work@gmail.com", "", None)
PEOPLE = (BOB, CAROL, DAVE, ERIN, FRANK, GINA, HANK, IVY)

TAGS = ("vip", "spam", "refund", "billing-issue")
VOCAB = ("refund", "refunds", "request", "password", "reset", "invoice", "late", "login", "locked", "order",
         "printer", "not", "near")
PAIRS = (("password", "reset"), ("refund", "request"), ("invoice", "late"), ("login", "locked"))
DUE_COLUMNS = ("first_response_due", "next_response_due", "resolution_due")


@dataclass(frozen=True)
class Tk:
    """One ticket as the reference sees it: plain values, no database."""

    id: int
    subject: str = ""
    status: str = "open"
    priority: str = "normal"
    queue: str = "General"
    assignee: Optional[str] = None
    tags: frozenset = frozenset()
    requester: Person = BOB
    channel: str = "email"
    mailbox: Optional[str] = None
    created: datetime = FIXED_NOW
    updated: datetime = FIXED_NOW
    dues: tuple = (None, None, None)
    unread: bool = False
    snoozed_until: Optional[datetime] = None
    merged_into: Optional[int] = None
    messages: tuple = ()  # (subject, body) pairs


def store(database, tickets: list[Tk]) -> None:
    """Replace every ticket (and its customers, tags, messages) with these, via SQLAlchemy Core."""
    with database.write() as session:
        for table in (TicketTag, Message, Ticket, Customer, Organization, Tag):
            session.execute(sa.delete(table.__table__))
        created = FIXED_NOW - timedelta(days=400)
        session.execute(sa.insert(Organization.__table__), [
            {"id": o.id, "name": o.name, "domain": o.domain, "created_at": created} for o in ORGS])
        session.execute(sa.insert(Customer.__table__), [
            {"id": p.id, "email": p.email, "name": p.name, "organization_id": p.org.id if p.org else None,
             "created_at": created} for p in PEOPLE])
        session.execute(sa.insert(Tag.__table__), [{"id": i, "name": n} for i, n in enumerate(TAGS, 1)])
        queues = dict(session.execute(sa.select(Queue.__table__.c.name, Queue.__table__.c.id)).all())
        agents = dict(session.execute(sa.select(Agent.__table__.c.login, Agent.__table__.c.id)).all())
        if not tickets:
            return
        session.execute(sa.insert(Ticket.__table__), [{
            "id": t.id, "subject": t.subject, "status": t.status, "priority": t.priority,
            "priority_rank": PRIORITY_RANK[t.priority], "channel": t.channel, "queue_id": queues[t.queue],
            "requester_id": t.requester.id, "assignee_id": agents[t.assignee] if t.assignee else None,
            "mailbox": t.mailbox, "message_count": len(t.messages), "unread": t.unread,
            "created_at": t.created, "updated_at": t.updated, "snoozed_until": t.snoozed_until,
            **dict(zip(DUE_COLUMNS, t.dues)), "merged_into_id": t.merged_into,
        } for t in sorted(tickets, key=lambda t: t.id)])
        links = [{"ticket_id": t.id, "tag_id": TAGS.index(g) + 1} for t in tickets for g in sorted(t.tags)]
        if links:
            session.execute(sa.insert(TicketTag.__table__), links)
        messages = [(t, subject, body) for t in tickets for subject, body in t.messages]
        if messages:
            session.execute(sa.insert(Message.__table__), [{
                "id": n, "ticket_id": t.id, "kind": "inbound" if n % 3 else "note", "from_addr": t.requester.email,
                "from_name": t.requester.name, "to_addrs": "[]", "cc_addrs": "[]", "subject": subject,
                "body_text": body, "references": "", "auto": False, "created_at": t.created,
            } for n, (t, subject, body) in enumerate(messages, 1)])


# --- the reference: the documentation, read literally ----------------------------------------

def tokens(text: str) -> list[str]:
    """unicode61 with accents folded: lower-cased runs of letters and digits."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", folded)


def text_fields(t: Tk) -> list[str]:
    return [t.subject, *(part for message in t.messages for part in message)]


def has_word(t: Tk, word: str) -> bool:
    if word.endswith("*"):
        prefix = tokens(word)[0]
        return any(tok.startswith(prefix) for f in text_fields(t) for tok in tokens(f))
    return any(tokens(word)[0] in tokens(f) for f in text_fields(t))


def has_phrase(t: Tk, phrase: str) -> bool:
    wanted = tokens(phrase)
    for f in text_fields(t):
        toks = tokens(f)
        if any(toks[i:i + len(wanted)] == wanted for i in range(len(toks) - len(wanted) + 1)):
            return True
    return False


COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "=": operator.eq, "": operator.eq}


def when_matches(instant: datetime, op: str, value: str, tz=timezone.utc) -> bool:
    """created:/updated: — a duration is an age, a date a local day, an instant itself.

    A duration without an operator (`created:7d`) is read as "within the last 7 days".
    """
    duration = re.fullmatch(r"(\d+)([mhdw])", value)
    if duration:
        age = FIXED_NOW - instant
        limit = timedelta(seconds=int(duration[1]) * {"m": 60, "h": 3600, "d": 86400, "w": 604800}[duration[2]])
        return age <= limit if op in ("", "=") else COMPARE[op](age, limit)
    if len(value) == 10:
        day = date.fromisoformat(value)
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        end = start + timedelta(days=1)
        return {"": start <= instant < end, "=": start <= instant < end, "<": instant < start,
                "<=": instant < end, ">": instant >= end, ">=": instant >= start}[op]
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return COMPARE[op](instant, moment)


def sla_matches(t: Tk, value: str) -> bool:
    dues = [d for d in t.dues if d is not None]
    if value == "breached":
        return any(d < FIXED_NOW for d in dues)
    op, amount, unit = re.fullmatch(r"due(<=|>=|<|>)(\d+)([mhdw])", value).groups()
    limit = FIXED_NOW + timedelta(seconds=int(amount) * {"m": 60, "h": 3600, "d": 86400, "w": 604800}[unit])
    if op in ("<", "<="):
        return any(COMPARE[op](d, limit) for d in dues)
    return bool(dues) and COMPARE[op](min(dues), limit)


def from_matches(person: Person, value: str) -> bool:
    v = value.lower()
    if v.startswith("@"):
        return person.email.endswith(v)
    if "@" in v:
        return person.email == v
    return v in person.email or v in person.name.lower()


def org_matches(person: Person, value: str) -> bool:
    org, v = person.org, value.lower()
    return org is not None and (org.name.lower() == v or org.domain == v or org.domain.startswith(v + "."))


def assignee_matches(t: Tk, value: str) -> bool:
    v = value.lower()
    if v == "none":
        return t.assignee is None
    return t.assignee == (CTX.me if v == "me" else v)


def is_matches(t: Tk, value: str) -> bool:
    return {
        "unassigned": t.assignee is None,
        "assigned": t.assignee is not None,
        "unread": t.unread,
        "snoozed": t.snoozed_until is not None and t.snoozed_until > FIXED_NOW,
        "merged": t.merged_into is not None,
    }[value]


def sla_key(t: Tk):
    """The nearest due time; the docs sort by it, tickets without an SLA last."""
    dues = [d for d in t.dues if d is not None]
    return min(dues) if dues else None


# --- generators: tickets -------------------------------------------------------------------

CASINGS = (str.lower, str.lower, str.title, str.upper)
SEPARATORS = (" ", " ", " ", ", ", " - ", ": ")


def at(half_hours: int) -> datetime:
    return FIXED_NOW + timedelta(minutes=30 * half_hours)


def cased(values) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(values), st.sampled_from(CASINGS)).map(lambda p: p[1](p[0]))


@st.composite
def texts(draw, max_chunks: int = 4) -> str:
    """Vocabulary words (sometimes a known pair) in mixed case with punctuation between them."""
    chunks = draw(st.lists(st.one_of(st.sampled_from(VOCAB).map(lambda w: (w,)), st.sampled_from(PAIRS)),
                           max_size=max_chunks))
    words = [w for chunk in chunks for w in chunk]
    out = ""
    for i, word in enumerate(words):
        out += (draw(st.sampled_from(SEPARATORS)) if i else "") + draw(st.sampled_from(CASINGS))(word)
    return out


@st.composite
def ticket_sets(draw, min_size: int = 5, max_size: int = 25) -> list[Tk]:
    n = draw(st.integers(min_size, max_size))
    tickets = []
    for i in range(1, n + 1):
        created = draw(st.integers(-30 * 48, 0))
        tickets.append(Tk(
            id=i,
            subject=draw(texts()),
            status=draw(st.sampled_from(STATUSES)),
            priority=draw(st.sampled_from(PRIORITIES)),
            queue=draw(st.sampled_from(("General", "Billing"))),
            assignee=draw(st.sampled_from((None, "alice", "bob"))),
            tags=frozenset(draw(st.lists(st.sampled_from(TAGS), max_size=3))),
            requester=draw(st.sampled_from(PEOPLE)),
            channel=draw(st.sampled_from(CHANNELS)),
            mailbox=draw(st.sampled_from((None, "support", "sales"))),
            created=at(created),
            updated=at(draw(st.integers(created, 0))),
            dues=tuple(draw(st.none() | st.integers(-96, 96).map(at)) for _ in DUE_COLUMNS),
            unread=draw(st.booleans()),
            snoozed_until=draw(st.none() | st.integers(-48, 48).map(at)),
            merged_into=draw(st.none() | st.integers(1, i - 1)) if i > 1 else None,
            messages=tuple(draw(st.lists(st.tuples(texts(2), texts()), max_size=3))),
        ))
    return tickets


# --- generators: query terms, each with its reference predicate ----------------------------

Pred = Callable[[Tk], bool]


def some(values: st.SearchStrategy[str], max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(values, min_size=1, max_size=max_size)


@st.composite
def status_terms(draw):
    values = draw(some(cased(STATUSES)))
    wanted = {v.lower() for v in values}
    return f"status:{','.join(values)}", lambda t: t.status in wanted


@st.composite
def priority_terms(draw):
    op = draw(st.sampled_from(("", "=", ">", ">=", "<", "<=")))
    values = draw(some(cased(PRIORITIES))) if op == "" else [draw(cased(PRIORITIES))]
    ranks = [PRIORITY_RANK[v.lower()] for v in values]
    return (f"priority:{op}{','.join(values)}",
            lambda t: any(COMPARE[op](PRIORITY_RANK[t.priority], rank) for rank in ranks))


@st.composite
def queue_terms(draw):
    values = draw(some(st.sampled_from(("general", "General", "billing", "BILLING", "nope"))))
    return f"queue:{','.join(values)}", lambda t: t.queue.lower() in {v.lower() for v in values}


@st.composite
def assignee_terms(draw):
    values = draw(some(st.sampled_from(("alice", "bob", "me", "none", "Alice", "BOB", "carol"))))
    return f"assignee:{','.join(values)}", lambda t: any(assignee_matches(t, v) for v in values)


@st.composite
def tag_terms(draw):
    values = draw(some(cased((*TAGS, "nope"))))
    return f"tag:{','.join(values)}", lambda t: any(v.lower() in t.tags for v in values)


FROM_VALUES = (
    *(p.email for p in PEOPLE), "BOB@ACME.TEST", "Dave@Globex.Test", "nobody@acme.test", "@acme.test", "@ACME.test",
    "@gmail.com", "@globex.test", "@test", "@co.uk", "bob", "BOB", "acme", "stone", "f_r", "fxr", "%", "ivy%",
    "globex", "ar", "gina@", "@",
)


@st.composite
def from_terms(draw):
    values = draw(some(st.sampled_from(FROM_VALUES), 2))
    return f"from:{','.join(values)}", lambda t: any(from_matches(t.requester, v) for v in values)


@st.composite
def org_terms(draw):
    plain = ("acme", "ACME", "acme.test", "acmelabs", "globex", "Globex.test", "initech", "initech.co", "umbrella",
             "umbrella-corp", "gmail", "gmail.com", "test")
    if draw(st.booleans()):
        value = draw(st.sampled_from(("acme labs", "Umbrella Corp", "umbrella corp")))
        return f'org:"{value}"', lambda t: org_matches(t.requester, value)
    values = draw(some(st.sampled_from(plain), 2))
    return f"org:{','.join(values)}", lambda t: any(org_matches(t.requester, v) for v in values)


@st.composite
def channel_terms(draw):
    values = draw(some(cased(CHANNELS)))
    return f"channel:{','.join(values)}", lambda t: t.channel in {v.lower() for v in values}


@st.composite
def mailbox_terms(draw):
    values = draw(some(st.sampled_from(("support", "sales", "Support", "other"))))
    return (f"mailbox:{','.join(values)}",
            lambda t: t.mailbox is not None and t.mailbox in {v.lower() for v in values})


@st.composite
def word_parts(draw) -> str:
    word = draw(st.sampled_from(VOCAB))
    start = draw(st.integers(0, len(word) - 1))
    return word[start:draw(st.integers(start + 1, len(word)))]


@st.composite
def subject_terms(draw):
    if draw(st.booleans()):
        value = draw(st.one_of(
            st.sampled_from(PAIRS).map(" ".join), st.sampled_from(("refund, request", "Password Reset", "invoice - late")),
        ))
        return f'subject:"{value}"', lambda t: value.lower() in t.subject.lower()
    values = draw(some(st.one_of(cased(VOCAB), word_parts(), st.just("zzz")), 2))
    return f"subject:{','.join(values)}", lambda t: any(v.lower() in t.subject.lower() for v in values)


@st.composite
def when_values(draw) -> str:
    kind = draw(st.sampled_from(("duration", "date", "instant")))
    if kind == "duration":
        unit = draw(st.sampled_from("mhdw"))
        amount = draw({"m": st.sampled_from((30, 90, 120, 600)), "h": st.integers(0, 72), "d": st.integers(1, 31),
                       "w": st.integers(1, 5)}[unit])
        return f"{amount}{unit}"
    if kind == "date":
        return (FIXED_NOW.date() + timedelta(days=draw(st.integers(-32, 2)))).isoformat()
    instant = at(draw(st.integers(-30 * 48, 2)))
    style = draw(st.sampled_from(("Z", "+00:00", "+02:00", "-05:30", "naive", "minutes")))
    if style == "Z":
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == "naive":
        return instant.replace(tzinfo=None).isoformat()
    if style == "minutes":
        return instant.strftime("%Y-%m-%dT%H:%M")
    hours, _, minutes = style[1:].partition(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (1 if style[0] == "+" else -1)
    return instant.astimezone(timezone(offset)).isoformat()


@st.composite
def time_terms(draw):
    name = draw(st.sampled_from(("created", "updated")))
    op = draw(st.sampled_from(("", "=", ">", ">=", "<", "<=")))
    values = draw(some(when_values(), 2)) if op == "" else [draw(when_values())]

    def pred(t: Tk) -> bool:
        instant = t.created if name == "created" else t.updated
        return any(when_matches(instant, op, v) for v in values)

    return f"{name}:{op}{','.join(values)}", pred


@st.composite
def sla_terms(draw):
    if draw(st.integers(0, 3)) == 0:
        value = "breached"
    else:
        op = draw(st.sampled_from(("<", "<=", ">", ">=")))
        unit = draw(st.sampled_from("mhd"))
        amount = draw({"m": st.sampled_from((30, 90)), "h": st.integers(0, 48), "d": st.integers(1, 2)}[unit])
        value = f"due{op}{amount}{unit}"
    return f"sla:{value}", lambda t: sla_matches(t, value)


@st.composite
def is_terms(draw):
    values = draw(some(st.sampled_from(IS_VALUES), 2))
    return f"is:{','.join(values)}", lambda t: any(is_matches(t, v) for v in values)


@st.composite
def id_terms(draw):
    op = draw(st.sampled_from(("", "", ">", ">=", "<", "<=", "=")))
    values = draw(some(st.integers(1, 27))) if op == "" else [draw(st.integers(0, 26))]
    return f"id:{op}{','.join(map(str, values))}", lambda t: any(COMPARE[op](t.id, v) for v in values)


@st.composite
def word_terms(draw):
    word = draw(cased((*VOCAB, "zebra")))
    return word, lambda t: has_word(t, word)


@st.composite
def prefix_terms(draw):
    word = draw(cased(VOCAB))
    prefix = word[:draw(st.integers(1, len(word)))] + "*"
    return prefix, lambda t: has_word(t, prefix)


@st.composite
def phrase_terms(draw):
    first, second = draw(st.one_of(st.sampled_from(PAIRS), st.tuples(st.sampled_from(VOCAB), st.sampled_from(VOCAB))))
    phrase = f"{draw(st.sampled_from(CASINGS))(first)} {second}"
    return f'"{phrase}"', lambda t: has_phrase(t, phrase)


TERM_KINDS = (
    status_terms, priority_terms, queue_terms, assignee_terms, tag_terms, from_terms, org_terms, channel_terms,
    mailbox_terms, subject_terms, time_terms, sla_terms, is_terms, id_terms, word_terms, prefix_terms, phrase_terms,
)


@st.composite
def terms(draw) -> tuple[str, Pred]:
    text, pred = draw(st.one_of(*(kind() for kind in TERM_KINDS)))
    if draw(st.integers(0, 3)) == 0:
        return f"-{text}", lambda t: not pred(t)
    return text, pred


@st.composite
def queries(draw) -> tuple[str, list[Pred]]:
    chosen = draw(st.lists(terms(), min_size=1, max_size=4))
    return " ".join(text for text, _ in chosen), [pred for _, pred in chosen]


def describe(tickets: list[Tk], ids) -> str:
    return "\n".join(repr(t) for t in tickets if t.id in ids)


# --- 1. parsing ----------------------------------------------------------------------------

SPEC_LINE = (
    'status:open,pending queue:billing assignee:me assignee:none assignee:alice priority:>=high tag:vip -tag:spam '
    'from:bob@x.com from:@example.com org:acme channel:phone mailbox:support subject:refund created:>7d '
    'created:<2026-01-31 updated:<2d sla:breached sla:due<1h is:unassigned is:unread "exact phrase" free words'
)
SPEC_TERMS = [
    ("status", ("open", "pending"), "=", False, False),
    ("queue", ("billing",), "=", False, False),
    ("assignee", ("me",), "=", False, False),
    ("assignee", ("none",), "=", False, False),
    ("assignee", ("alice",), "=", False, False),
    ("priority", ("high",), ">=", False, False),
    ("tag", ("vip",), "=", False, False),
    ("tag", ("spam",), "=", True, False),
    ("from", ("bob@x.com",), "=", False, False),
    ("from", ("@example.com",), "=", False, False),
    ("org", ("acme",), "=", False, False),
    ("channel", ("phone",), "=", False, False),
    ("mailbox", ("support",), "=", False, False),
    ("subject", ("refund",), "=", False, False),
    ("created", ("7d",), ">", False, False),
    ("created", ("2026-01-31",), "<", False, False),
    ("updated", ("2d",), "<", False, False),
    ("sla", ("breached",), "=", False, False),
    ("sla", ("due<1h",), "=", False, False),
    ("is", ("unassigned",), "=", False, False),
    ("is", ("unread",), "=", False, False),
    (None, ("exact phrase",), "=", False, True),
    (None, ("free",), "=", False, False),
    (None, ("words",), "=", False, False),
]


def shape(term):
    return (term.field, term.values, term.op, term.negated, term.phrase)


def test_the_spec_example_parses_term_by_term():
    """The SPEC's own example line is the grammar's canonical sample."""
    assert [shape(t) for t in parse_query(SPEC_LINE).terms] == SPEC_TERMS


@pytest.mark.parametrize("text, expected", [
    *zip(SPEC_LINE.split(" ")[:21], SPEC_TERMS[:21]), ('"exact phrase"', SPEC_TERMS[21]), ("free", SPEC_TERMS[22]),
])
def test_each_spec_term_parses_alone(text, expected):
    """Each term means the same alone as inside a longer query."""
    (term,) = parse_query(text).terms
    assert shape(term) == expected
    assert term.text == text


@pytest.mark.parametrize("text, expected", [
    ("subject:\"two words\"", ("subject", ("two words",), "=", False, False)),
    ("subject:\"a,b\"", ("subject", ("a,b",), "=", False, False)),
    ("-subject:\"password reset\"", ("subject", ("password reset",), "=", True, False)),
    ("-\"out of office\"", (None, ("out of office",), "=", True, True)),
    ("-refund", (None, ("refund",), "=", True, False)),
    ("refun*", (None, ("refun*",), "=", False, False)),
    ("org:\"acme labs\"", ("org", ("acme labs",), "=", False, False)),
    ("id:12,13", ("id", ("12", "13"), "=", False, False)),
    ("id:>1000", ("id", ("1000",), ">", False, False)),
    ("priority:high,urgent", ("priority", ("high", "urgent"), "=", False, False)),
    ("created:>=2026-01-31T09:00:00Z", ("created", ("2026-01-31T09:00:00Z",), ">=", False, False)),
    ("sla:due>1h", ("sla", ("due>1h",), "=", False, False)),
    ("is:snoozed,merged", ("is", ("snoozed", "merged"), "=", False, False)),
])
def test_quoted_values_lists_and_operators(text, expected):
    """Quotes keep spaces and commas inside one value; commas elsewhere make a list."""
    (term,) = parse_query(text).terms
    assert shape(term) == expected


def test_comma_outside_quotes_still_separates_values():
    """Docs: a comma means OR within a field; only the quoted value itself is never split."""
    (term,) = parse_query('org:"acme labs",globex').terms
    assert term.values == ("acme labs", "globex")


@pytest.mark.parametrize("text, expected", [
    ("STATUS:Open,PENDING", ("status", ("open", "pending"), "=", False, False)),
    ("Tag:VIP", ("tag", ("vip",), "=", False, False)),
    ("-Priority:>=HIGH", ("priority", ("high",), ">=", True, False)),
    ("Is:Unread", ("is", ("unread",), "=", False, False)),
    ("CHANNEL:Phone", ("channel", ("phone",), "=", False, False)),
])
def test_field_names_are_case_insensitive(text, expected):
    """People type `Status:` as often as `status:`; fixed vocabularies fold case too."""
    (term,) = parse_query(text).terms
    assert shape(term) == expected


def test_argv_words_are_joined_like_one_argument():
    """`tickets list tag:spam -status:closed` must mean the same as the quoted form."""
    from_argv = parse_query(["tag:spam", "-status:closed"])
    assert [shape(t) for t in from_argv.terms] == [
        ("tag", ("spam",), "=", False, False), ("status", ("closed",), "=", True, False)]
    assert from_argv.terms == parse_query("tag:spam -status:closed").terms
    assert parse_query(('subject:"two', 'words"')).terms[0].values == ("two words",)


def test_empty_query_has_no_terms_and_matches_everything(database):
    """An empty query is the one way to ask for every ticket."""
    store(database, READABLE)
    assert parse_query("").empty and parse_query("   ").empty and parse_query([]).empty
    with database.read() as session:
        assert sorted(ticket_ids(session, "", CTX)) == [t.id for t in READABLE]


# --- 2. errors -----------------------------------------------------------------------------

MALFORMED = [
    ("frobnicate:1", "frobnicate:1"),
    ("status:open frobnicate:1 tag:vip", "frobnicate:1"),
    ("http://example.com", "http://example.com"),
    ("status:opne", "status:opne"),
    ("status:open,closd", "status:open,closd"),
    ("priority:highest", "priority:highest"),
    ("priority:>=hgh", "priority:>=hgh"),
    ("channel:fax", "channel:fax"),
    ("is:sleepy", "is:sleepy"),
    ("created:<2026-02-30", "created:<2026-02-30"),
    ("created:2026-1-5", "created:2026-1-5"),
    ("updated:<yesterday", "updated:<yesterday"),
    ("created:>7y", "created:>7y"),
    ("created:>d", "created:>d"),
    ("subject:\"refund", "subject:\"refund"),
    ("tag:vip \"unclosed phrase", "\"unclosed phrase"),
    ("status:open subject:x\"y", "subject:x\"y"),
    ("\"a b\"c", "\"a b\"c"),
    ("tag:vip -", "-"),
    ("- tag:vip", "-"),
    ("status:", "status:"),
    ("-tag:", "-tag:"),
    ("subject:\"\"", "subject:\"\""),
    ("\"  \"", "\"  \""),
    ("status:open,", "status:open,"),
    ("status:open,,closed", "status:open,,closed"),
    ("tag:,vip", "tag:,vip"),
    ("queue:>billing", "queue:>billing"),
    ("tag:<vip", "tag:<vip"),
    ("subject:>=refund", "subject:>=refund"),
    ("status:>open", "status:>open"),
    ("priority:>high,urgent", "priority:>high,urgent"),
    ("id:>3,4", "id:>3,4"),
    ("id:abc", "id:abc"),
    ("id:-3", "id:-3"),
    ("sla:soon", "sla:soon"),
    ("sla:due<soon", "sla:due<soon"),
    ("sla:due=1h", "sla:due=1h"),
    ("sla:", "sla:"),
    ("-sla:breach", "-sla:breach"),
    ("*", "*"),
    ("tag:vip -*", "-*"),
]


@pytest.mark.parametrize("text, offending", MALFORMED)
def test_malformed_queries_are_refused_naming_the_term(database, text, offending):
    """A typo must fail loudly and point at itself, never run as a weaker (or empty) filter."""
    store(database, READABLE)
    with database.read() as session, pytest.raises(QueryError) as caught:
        ticket_ids(session, text, CTX)
    assert offending in str(caught.value)


@pytest.mark.parametrize("text", [t for t, _ in MALFORMED if t not in ("*", "tag:vip -*")])
def test_malformed_queries_fail_already_while_parsing(text):
    """Views and rules are checked when saved, so parsing alone must catch these."""
    with pytest.raises(QueryError):
        parse_query(text)


def test_assignee_me_needs_to_know_who_i_am():
    """Without `--as`, `assignee:me` cannot mean anyone; it must not mean everyone."""
    nobody = QueryContext(now=FIXED_NOW, me=None)
    for text in ("assignee:me", "-assignee:me", "assignee:none,me"):
        with pytest.raises(QueryError) as caught:
            compile_query(text, nobody)
        assert text.lstrip("-") in str(caught.value)


def test_error_carries_the_term_and_its_position():
    """The console highlights the offending term; it needs where it starts."""
    with pytest.raises(QueryError) as caught:
        parse_query("status:open chanel:phone")
    assert caught.value.term == "chanel:phone"
    assert caught.value.position == 12


# --- 3. a readable world, field by field ---------------------------------------------------

READABLE = [
    Tk(1, subject="Refund request for order 42", status="open", priority="high", queue="Billing", assignee="alice",
       tags=frozenset({"vip"}), requester=BOB, channel="email", mailbox="support",
       created=datetime(2026, 1, 29, 12, 0, tzinfo=timezone.utc), updated=FIXED_NOW - timedelta(hours=1),
       dues=(FIXED_NOW - timedelta(hours=2), None, None), unread=True),
    Tk(2, subject="Password reset", status="pending", priority="normal", queue="General", assignee=None,
       tags=frozenset({"spam"}), requester=HANK, channel="phone", mailbox=None,
       created=FIXED_NOW - timedelta(days=1), updated=FIXED_NOW - timedelta(days=1),
       dues=(None, None, FIXED_NOW + timedelta(minutes=30)), snoozed_until=FIXED_NOW + timedelta(days=1),
       messages=(("Re: Password reset", "I cannot login after the password reset."),)),
    Tk(3, subject="Invoice late", status="closed", priority="low", queue="Billing", assignee="bob",
       requester=DAVE, channel="chat", mailbox="sales",
       created=datetime(2026, 1, 31, 9, 0, tzinfo=timezone.utc), updated=FIXED_NOW - timedelta(days=3),
       dues=(None, FIXED_NOW + timedelta(hours=5), None), merged_into=1,
       messages=(("", "Customer asked for a refund by phone."), ("Café order", "Déjà vu"))),
    Tk(4, subject="Printer on fire", status="new", priority="urgent", queue="General", assignee="alice",
       tags=frozenset({"vip", "spam"}), requester=ERIN, channel="web", mailbox="support",
       created=FIXED_NOW - timedelta(hours=2), updated=FIXED_NOW - timedelta(hours=2),
       dues=(FIXED_NOW + timedelta(hours=3), None, FIXED_NOW + timedelta(hours=20))),
    Tk(5, subject="Hello 100% done_now", status="solved", priority="normal", queue="General", assignee=None,
       requester=FRANK, channel="social", created=FIXED_NOW - timedelta(days=30),
       updated=FIXED_NOW - timedelta(days=20), snoozed_until=FIXED_NOW - timedelta(hours=1)),
]


@pytest.mark.parametrize("text, expected", [
    ("status:open,pending", [1, 2]),
    ("status:CLOSED", [3]),
    ("-status:closed,solved", [1, 2, 4]),
    ("priority:high", [1]),
    ("priority:>=high", [1, 4]),
    ("priority:<normal", [3]),
    ("priority:<=normal", [2, 3, 5]),
    ("priority:>urgent", []),
    ("queue:billing", [1, 3]),
    ("queue:GENERAL", [2, 4, 5]),
    ("queue:nowhere", []),
    ("assignee:me", [1, 4]),
    ("assignee:alice", [1, 4]),
    ("assignee:none", [2, 5]),
    ("-assignee:alice", [2, 3, 5]),
    ("assignee:bob,none", [2, 3, 5]),
    ("tag:vip", [1, 4]),
    ("tag:VIP,spam", [1, 2, 4]),
    ("-tag:spam", [1, 3, 5]),
    ("tag:vip -tag:spam", [1]),
    ("from:bob@acme.test", [1]),
    ("from:BOB@ACME.TEST", [1]),
    ("from:@acme.test", [1]),
    ("from:@gmail.com", [2]),
    ("from:hank", [2]),
    ("from:acme", [1, 2, 4]),
    ("from:f_r", [5]),
    ("from:fxr", []),
    ("org:acme", [1]),
    ("org:acme.test", [1]),
    ("org:ACME", [1]),
    ("org:\"acme labs\"", [4]),
    ("org:acmelabs", [4]),
    ("org:initech", [5]),
    ("org:initech.co", [5]),
    ("org:gmail", []),
    ("-org:acme", [2, 3, 4, 5]),
    ("channel:phone,chat", [2, 3]),
    ("mailbox:support", [1, 4]),
    ("-mailbox:support", [2, 3, 5]),
    ("subject:refund", [1]),
    ("subject:RES", [2]),
    ("subject:\"password reset\"", [2]),
    ("subject:fire,late", [3, 4]),
    ("subject:100%", [5]),
    ("subject:%", [5]),
    ("subject:e_n", [5]),
    ("subject:o_e", []),
    ("created:>7d", [1, 3, 5]),
    ("created:<2d", [2, 4]),
    ("created:<=1d", [2, 4]),
    ("created:<1d", [4]),
    ("created:>=1d", [1, 2, 3, 5]),
    ("created:2026-01-31", [3]),
    ("created:=2026-01-31", [3]),
    ("created:<2026-01-31", [1, 5]),
    ("created:<=2026-01-31", [1, 3, 5]),
    ("created:>2026-01-31", [2, 4]),
    ("created:>=2026-01-31", [2, 3, 4]),
    ("created:2026-01-29,2026-01-31", [1, 3]),
    ("created:>=2026-01-31T09:00:00Z", [2, 3, 4]),
    ("created:>2026-01-31T09:00:00Z", [2, 4]),
    ("created:=2026-01-31T10:00:00+01:00", [3]),
    ("updated:<2d", [1, 2, 4]),
    ("updated:>2w", [5]),
    ("updated:<90m", [1]),
    ("sla:breached", [1]),
    ("-sla:breached", [2, 3, 4, 5]),
    ("sla:due<1h", [1, 2]),
    ("sla:due<4h", [1, 2, 4]),
    ("sla:due>1h", [3, 4]),
    ("sla:due>4h", [3]),
    ("-sla:due>1h", [1, 2, 5]),
    ("is:unassigned", [2, 5]),
    ("is:assigned", [1, 3, 4]),
    ("is:unread", [1]),
    ("is:snoozed", [2]),
    ("-is:snoozed", [1, 3, 4, 5]),
    ("is:merged", [3]),
    ("id:1,3", [1, 3]),
    ("id:>3", [4, 5]),
    ("id:<=2", [1, 2]),
    ("refund", [1, 3]),
    ("REFUND", [1, 3]),
    ("-refund", [2, 4, 5]),
    ("refunds", []),
    ("refun*", [1, 3]),
    ("login", [2]),
    ("log*", [2]),
    ("password login", [2]),
    ("refund printer", []),
    ("\"password reset\"", [2]),
    ("\"reset password\"", []),
    ("\"login after the password\"", [2]),
    ("\"refund request\"", [1]),
    ("-\"refund request\"", [2, 3, 4, 5]),
    ("cafe", [3]),
    ("deja", [3]),
    ("not", []),
    ("near", []),
    ("tag:vip status:open refund", [1]),
])
def test_readable_examples(database, text, expected):
    """Hand-checkable cases, one or more per field, over five tickets described above."""
    store(database, READABLE)
    with database.read() as session:
        assert sorted(ticket_ids(session, text, CTX)) == expected
        assert count(session, text, CTX) == len(expected)


def test_dates_are_local_calendar_days(database):
    """`created:2026-01-31` is that day where the agent is, not in UTC."""
    store(database, READABLE)
    honolulu = QueryContext(now=FIXED_NOW, me="alice", tz=timezone(timedelta(hours=-10)))
    with database.read() as session:
        # Ticket 3 was created 2026-01-31 09:00 UTC, which is 2026-01-30 23:00 at UTC-10.
        assert ticket_ids(session, "created:2026-01-31", honolulu) == []
        assert ticket_ids(session, "created:2026-01-30", honolulu) == [3]
        assert sorted(ticket_ids(session, "created:<2026-01-31", honolulu)) == [1, 3, 5]
        assert ticket_ids(session, "created:2026-01-31T00:00:00", honolulu) == []
        assert ticket_ids(session, "created:2026-01-30T23:00:00", honolulu) == [3]


def test_free_words_may_come_from_different_messages(database):
    """Several words must each appear somewhere in the ticket, not in one message."""
    ticket = Tk(1, subject="Order", messages=(("", "printer jammed"), ("locked", "")))
    store(database, [ticket, Tk(2, subject="printer locked order")])
    with database.read() as session:
        assert sorted(ticket_ids(session, "order printer locked", CTX)) == [1, 2]
        assert ticket_ids(session, '"printer locked"', CTX) == [2]
        assert ticket_ids(session, '"jammed locked"', CTX) == []


def test_fts_syntax_in_user_text_stays_inert(database):
    """Words like NOT/OR/NEAR and stray FTS punctuation are text, not operators."""
    store(database, [Tk(1, subject="not near or and"), Tk(2, subject="refund")])
    with database.read() as session:
        assert ticket_ids(session, "NOT", CTX) == [1]
        assert ticket_ids(session, "OR", CTX) == [1]
        assert ticket_ids(session, '"not near"', CTX) == [1]
        assert ticket_ids(session, "refund^", CTX) == [2]
        assert ticket_ids(session, "-NOT", CTX) == [2]


# --- 4. the property: SQL = the documentation ----------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(tickets=ticket_sets(), cases=st.lists(queries(), min_size=1, max_size=8))
def test_sql_agrees_with_the_documented_semantics(database, tickets, cases):
    """Whatever the tickets and the query, the database returns exactly what the docs promise."""
    store(database, tickets)
    with database.read() as session:
        for text, preds in cases:
            expected = {t.id for t in tickets if all(p(t) for p in preds)}
            got = set(ticket_ids(session, text, CTX))
            assert got == expected, (
                f"{text!r}\nonly SQL: {sorted(got - expected)}\n{describe(tickets, got - expected)}"
                f"\nonly reference: {sorted(expected - got)}\n{describe(tickets, expected - got)}"
            )


@PROPERTY_SETTINGS
@given(tickets=ticket_sets(), term=terms())
def test_negating_a_term_gives_the_complement(database, tickets, term):
    """`-term` is exact: together with `term` it covers every ticket exactly once (NULLs included)."""
    text, _ = term
    flipped = text[1:] if text.startswith("-") else f"-{text}"
    store(database, tickets)
    with database.read() as session:
        yes, no = set(ticket_ids(session, text, CTX)), set(ticket_ids(session, flipped, CTX))
    assert yes.isdisjoint(no) and yes | no == {t.id for t in tickets}


# --- 5. sorting ----------------------------------------------------------------------------

SORT_KEYS = {
    "id": lambda t: t.id,
    "created": lambda t: t.created,
    "updated": lambda t: t.updated,
    "priority": lambda t: PRIORITY_RANK[t.priority],
    "status": lambda t: t.status,
    "subject": lambda t: t.subject,
}


def test_every_sort_field_is_covered():
    assert set(SORT_KEYS) | {"sla"} == set(SORT_FIELDS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tickets=ticket_sets(2, 15), name=st.sampled_from(sorted(SORT_FIELDS)),
       style=st.sampled_from(("{}", "{}:asc", "{}:desc", "-{}")))
def test_sort_order_matches_python_sorting(database, tickets, name, style):
    """Each `--sort` field orders like Python's sort of the documented key (ties by id, same direction)."""
    spec = style.format(name)
    descending = spec.endswith(":desc") or spec.startswith("-")
    store(database, tickets)
    by_id = {t.id: t for t in tickets}
    with database.read() as session:
        got = [by_id[i] for i in ticket_ids(session, "", CTX, sort=spec)]
    if name == "sla":
        with_sla = sorted((sla_key(t) for t in tickets if sla_key(t) is not None), reverse=descending)
        assert [sla_key(t) for t in got] == with_sla + [None] * (len(tickets) - len(with_sla))
    else:
        key = SORT_KEYS[name]
        assert [t.id for t in got] == [t.id for t in sorted(tickets, key=lambda t: (key(t), t.id), reverse=descending)]


def test_sla_sort_uses_the_nearest_due_time(database):
    """A ticket whose resolution is due before its next response is nearer than one due in between."""
    soon_resolution = Tk(1, dues=(None, FIXED_NOW + timedelta(hours=8), FIXED_NOW + timedelta(hours=1)))
    middle = Tk(2, dues=(None, None, FIXED_NOW + timedelta(hours=4)))
    no_sla = Tk(3)
    store(database, [no_sla, middle, soon_resolution])
    with database.read() as session:
        assert ticket_ids(session, "", CTX, sort="sla") == [1, 2, 3]
        assert ticket_ids(session, "", CTX, sort="sla:desc") == [2, 1, 3]


def test_default_order_is_newest_first(database):
    store(database, READABLE)
    with database.read() as session:
        assert ticket_ids(session, "", CTX) == [4, 2, 3, 1, 5]
        assert ticket_ids(session, "", CTX, limit=2) == [4, 2]


@pytest.mark.parametrize("spec", ["colour", "priority:up", "sla:", "-", "created:desc:asc", "assignee"])
def test_bad_sort_is_an_error(spec):
    """A mistyped `--sort` must not silently fall back to another order."""
    with pytest.raises(QueryError) as caught:
        sort_order(spec)
    assert caught.value.term == spec
