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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from supportdesk.db import Database
from supportdesk.listing import count, ticket_ids
from supportdesk.models import (
    CHANNELS, PRIORITIES, PRIORITY_RANK, STATUSES, Agent, Customer, Message, Organization, Queue, Tag, Ticket,
    TicketTag,
)
from supportdesk.query import IS_VALUES, SORT_FIELDS, QueryContext, QueryError, compile_query, parse_query, sort_order
from supportdesk.tickets import add_agent, ensure_queue

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
    day = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", value)
    if day:
        start = datetime(*map(int, day.groups()), tzinfo=tz)
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


def render(chunks) -> str:
    out = ""
    for words, casing, separator in chunks:
        for word in words:
            out += (separator if out else "") + casing(word)
    return out


CHUNKS = (*((w,) for w in VOCAB), *PAIRS)


def texts(max_chunks: int = 4) -> st.SearchStrategy[str]:
    """Vocabulary words (sometimes a known pair) in mixed case with punctuation between them."""
    chunk = st.tuples(st.sampled_from(CHUNKS), st.sampled_from(CASINGS), st.sampled_from(SEPARATORS))
    return st.lists(chunk, max_size=max_chunks).map(render)


HALF_HOURS_30_DAYS = st.integers(-30 * 48, 0)
TICKET_FIELDS = st.fixed_dictionaries({
    "subject": texts(),
    "status": st.sampled_from(STATUSES),
    "priority": st.sampled_from(PRIORITIES),
    "queue": st.sampled_from(("General", "Billing")),
    "assignee": st.sampled_from((None, "alice", "bob")),
    "tags": st.frozensets(st.sampled_from(TAGS), max_size=3),
    "requester": st.sampled_from(PEOPLE),
    "channel": st.sampled_from(CHANNELS),
    "mailbox": st.sampled_from((None, "support", "sales")),
    "created": HALF_HOURS_30_DAYS,
    "updated": HALF_HOURS_30_DAYS,
    "dues": st.tuples(*[st.none() | st.integers(-96, 96).map(at)] * len(DUE_COLUMNS)),
    "unread": st.booleans(),
    "snoozed_until": st.none() | st.integers(-48, 48).map(at),
    "merged_into": st.none() | st.integers(1, 25),
    "messages": st.lists(st.tuples(texts(2), texts()), max_size=3).map(tuple),
})


def numbered(rows: list[dict]) -> list[Tk]:
    """Give the drawn rows ids 1..n; updated never precedes created; merges point at an earlier ticket."""
    return [Tk(id=i, **{**row, "created": at(row["created"]), "updated": at(max(row["created"], row["updated"])),
                        "merged_into": row["merged_into"] if row["merged_into"] and row["merged_into"] < i else None})
            for i, row in enumerate(rows, 1)]


def ticket_sets(min_size: int = 5, max_size: int = 25) -> st.SearchStrategy[list[Tk]]:
    return st.lists(TICKET_FIELDS, min_size=min_size, max_size=max_size).map(numbered)


# --- generators: query terms, each with its reference predicate ----------------------------

Pred = Callable[[Tk], bool]
OPERATORS = (">", ">=", "<", "<=", "=")


def some(values: st.SearchStrategy[str], max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(values, min_size=1, max_size=max_size)


def rendered(value: str) -> str:
    return f'"{value}"' if " " in value or "," in value else value


def listed(name: str, values: st.SearchStrategy[list[str]], one: Callable[[Tk, str], bool]):
    """`name:a,"b c"`: a ticket matches when it matches any of the values."""
    return values.map(lambda vs: (f"{name}:{','.join(map(rendered, vs))}", lambda t: any(one(t, v) for v in vs)))


def compared(name: str, values: st.SearchStrategy[str], make: Callable[[str, list[str]], Pred], max_size: int = 3):
    """`name:a,b` or `name:OPv` with one value."""
    plain = some(values, max_size).map(lambda vs: ("", vs))
    with_op = st.tuples(st.sampled_from(OPERATORS), values).map(lambda p: (p[0], [p[1]]))
    return st.one_of(plain, with_op).map(lambda p: (f"{name}:{p[0]}{','.join(p[1])}", make(*p)))


def priority_pred(op: str, values: list[str]) -> Pred:
    ranks = [PRIORITY_RANK[v.lower()] for v in values]
    return lambda t: any(COMPARE[op](PRIORITY_RANK[t.priority], rank) for rank in ranks)


def id_pred(op: str, values: list[str]) -> Pred:
    return lambda t: any(COMPARE[op](t.id, int(v)) for v in values)


def format_instant(instant: datetime, style: str) -> str:
    if style == "Z":
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == "naive":
        return instant.replace(tzinfo=None).isoformat()
    if style == "minutes":
        return instant.strftime("%Y-%m-%dT%H:%M")
    if style == "basic":
        return instant.strftime("%Y%m%dT%H%M%SZ")
    hours, _, minutes = style[1:].partition(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (1 if style[0] == "+" else -1)
    return instant.astimezone(timezone(offset)).isoformat()


WHEN_VALUES = st.one_of(
    st.sampled_from((30, 90, 120, 600)).map("{}m".format),
    st.integers(0, 72).map("{}h".format),
    st.integers(1, 31).map("{}d".format),
    st.integers(1, 5).map("{}w".format),
    st.tuples(st.integers(-32, 2), st.sampled_from(("%Y-%m-%d", "%Y%m%d"))).map(
        lambda p: (FIXED_NOW.date() + timedelta(days=p[0])).strftime(p[1])),
    st.tuples(st.integers(-30 * 48, 2).map(at),
              st.sampled_from(("Z", "+00:00", "+02:00", "-05:30", "naive", "minutes", "basic")))
    .map(lambda p: format_instant(*p)),
)


def time_terms(name: str):
    def make(op: str, values: list[str]) -> Pred:
        return lambda t: any(when_matches(getattr(t, name), op, v) for v in values)
    return compared(name, WHEN_VALUES, make, max_size=2)


SLA_VALUES = st.one_of(
    st.just("breached"),
    st.tuples(st.sampled_from(("<", "<=", ">", ">=")), st.one_of(
        st.sampled_from(("30m", "90m", "1d", "2d")), st.integers(0, 48).map("{}h".format),
    )).map(lambda p: f"due{p[0]}{p[1]}"),
)
WORD_PARTS = st.tuples(st.sampled_from(VOCAB), st.integers(0, 9), st.integers(1, 9)).map(
    lambda p: p[0][min(p[1], len(p[0]) - 1):][:p[2]])
FROM_VALUES = (
    *(p.email for p in PEOPLE), "BOB@ACME.TEST", "Dave@Globex.Test", "nobody@acme.test", "@acme.test", "@ACME.test",
    "@gmail.com", "@globex.test", "@test", "@co.uk", "bob", "BOB", "acme", "stone", "f_r", "fxr", "%", "ivy%",
    "globex", "ar", "gina@", "@",
)
ORG_VALUES = ("acme", "ACME", "acme.test", "acmelabs", "acme labs", "globex", "Globex.test", "initech", "initech.co",
              "umbrella", "umbrella-corp", "Umbrella Corp", "gmail", "gmail.com", "test")
SUBJECT_PHRASES = ("password reset", "refund request", "refund, request", "Password Reset", "invoice - late", "late,")


def subject_has(t: Tk, value: str) -> bool:
    return value.lower() in t.subject.lower()


FIELD_TERMS = (
    listed("status", some(cased(STATUSES)), lambda t, v: t.status == v.lower()),
    compared("priority", cased(PRIORITIES), priority_pred),
    listed("queue", some(st.sampled_from(("general", "General", "billing", "BILLING", "nope"))),
           lambda t, v: t.queue.lower() == v.lower()),
    listed("assignee", some(st.sampled_from(("alice", "bob", "me", "none", "Alice", "BOB", "carol"))),
           assignee_matches),
    listed("tag", some(cased((*TAGS, "nope"))), lambda t, v: v.lower() in t.tags),
    listed("from", some(st.sampled_from(FROM_VALUES), 2), lambda t, v: from_matches(t.requester, v)),
    listed("org", some(st.sampled_from(ORG_VALUES), 2), lambda t, v: org_matches(t.requester, v)),
    listed("channel", some(cased(CHANNELS)), lambda t, v: t.channel == v.lower()),
    listed("mailbox", some(st.sampled_from(("support", "sales", "Support", "other"))),
           lambda t, v: t.mailbox is not None and t.mailbox == v.lower()),
    listed("subject", some(st.one_of(cased(VOCAB), WORD_PARTS, st.sampled_from(SUBJECT_PHRASES), st.just("zzz")), 2),
           subject_has),
    time_terms("created"),
    time_terms("updated"),
    SLA_VALUES.map(lambda v: (f"sla:{v}", lambda t: sla_matches(t, v))),
    listed("is", some(st.sampled_from(IS_VALUES), 2), is_matches),
    compared("id", st.integers(0, 27).map(str), id_pred),
)
TEXT_TERMS = (
    cased((*VOCAB, "zebra")).map(lambda w: (w, lambda t: has_word(t, w))),
    st.tuples(cased(VOCAB), st.integers(1, 9)).map(lambda p: p[0][:p[1]] + "*").map(
        lambda w: (w, lambda t: has_word(t, w))),
    st.tuples(st.one_of(st.sampled_from(PAIRS), st.tuples(st.sampled_from(VOCAB), st.sampled_from(VOCAB))),
              st.sampled_from(CASINGS)).map(lambda p: f"{p[1](p[0][0])} {p[0][1]}").map(
        lambda phrase: (f'"{phrase}"', lambda t: has_phrase(t, phrase))),
)


def maybe_negated(term: tuple[str, Pred], negate: bool) -> tuple[str, Pred]:
    text, pred = term
    return (f"-{text}", lambda t: not pred(t)) if negate else term


TERMS = st.tuples(st.one_of(*FIELD_TERMS, *TEXT_TERMS), st.integers(0, 3).map(lambda n: n == 0)).map(
    lambda p: maybe_negated(*p))
QUERIES = st.lists(TERMS, min_size=1, max_size=4)


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


def test_empty_query_has_no_terms_and_matches_everything(readable):
    """An empty query is the one way to ask for every ticket."""
    assert parse_query("").empty and parse_query("   ").empty and parse_query([]).empty
    with readable.read() as session:
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
    ("created:<20260230", "created:<20260230"),
    ("created:2026-W05", "created:2026-W05"),
    ("created:2026-W05-6", "created:2026-W05-6"),
    ("created:2026031", "created:2026031"),
    ("created:2026-031", "created:2026-031"),
    ("created:2026-01", "created:2026-01"),
    ("created:202601", "created:202601"),
    ("created:>2026", "created:>2026"),
    ("created:2026-0131", "created:2026-0131"),
    ("created:>=20260131T", "created:>=20260131T"),
    ("created:>=2026-01-31x09:00", "created:>=2026-01-31x09:00"),
    ("created:２０２６０１３１", "created:２０２６０１３１"),
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
    ("id:²", "id:²"),
    ("id:1,٣", "id:1,٣"),
    ("id:>1.5", "id:>1.5"),
    ("id:1e30", "id:1e30"),
    ("created:>٣d", "created:>٣d"),
    ("sla:due<١h", "sla:due<١h"),
    ("*", "*"),
    ("tag:vip -*", "-*"),
]


@pytest.mark.parametrize("text, offending", MALFORMED)
def test_malformed_queries_are_refused_naming_the_term(readable, text, offending):
    """A typo must fail loudly and point at itself, never run as a weaker (or empty) filter."""
    with readable.read() as session, pytest.raises(QueryError) as caught:
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


@pytest.fixture(scope="module")
def readable(databases):
    """READABLE stored once for the whole module: these tests only read."""
    url = databases.create()
    database = Database(url)
    with database.write() as session:
        for name in ("General", "Billing"):
            ensure_queue(session, name)
        for login in ("alice", "bob"):
            add_agent(session, login)
    store(database, READABLE)
    yield database
    database.close()
    databases.drop(url)


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
    ("created:20260131", [3]),
    ("created:<20260131", [1, 5]),
    ("created:<=20260131", [1, 3, 5]),
    ("created:>20260131", [2, 4]),
    ("created:>=20260131", [2, 3, 4]),
    ("created:20260129,2026-01-31", [1, 3]),
    ("created:>=20260131T090000Z", [2, 3, 4]),
    ("created:>20260131T0900Z", [2, 4]),
    ("created:\"2026-01-31 10:00+01:00\"", [3]),
    ("created:<9999-12-31", [1, 2, 3, 4, 5]),
    ("created:<=99991231", [1, 2, 3, 4, 5]),
    ("created:9999-12-31", []),
    ("created:>=0001-01-01", [1, 2, 3, 4, 5]),
    ("created:<00010101", []),
    ("created:>=9999-12-31T23:59:59-12:00", []),
    ("created:>999999999999999999999w", []),
    ("created:<999999999999999999999w", [1, 2, 3, 4, 5]),
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
    ("id:0003", [3]),
    ("id:>99999999999999999999999", []),
    ("id:>=9223372036854775807", []),
    ("id:<99999999999999999999999", [1, 2, 3, 4, 5]),
    ("id:<=9223372036854775807", [1, 2, 3, 4, 5]),
    ("id:9223372036854775808,3", [3]),
    ("-id:99999999999999999999999", [1, 2, 3, 4, 5]),
    ("id:>2147483648", []),
    ("sla:due<99999999999999w", [1, 2, 3, 4]),
    ("sla:due<=9999999w", [1, 2, 3, 4]),
    ("sla:due>9999999w", []),
    ("sla:due>=99999999999999w", []),
    ("-sla:due>9999999w", [1, 2, 3, 4, 5]),
    ("updated:<99999999999999w", [1, 2, 3, 4, 5]),
    pytest.param("updated:>" + "9" * 5000 + "m", [], id="updated:>(5000 nines)m"),
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
def test_readable_examples(readable, text, expected):
    """Hand-checkable cases, one or more per field, over the five tickets above."""
    with readable.read() as session:
        assert sorted(ticket_ids(session, text, CTX)) == expected
        assert count(session, text, CTX) == len(expected)


def test_dates_are_local_calendar_days(readable):
    """`created:2026-01-31` is that day where the agent is, not in UTC."""
    honolulu = QueryContext(now=FIXED_NOW, me="alice", tz=timezone(timedelta(hours=-10)))
    with readable.read() as session:
        # Ticket 3 was created 2026-01-31 09:00 UTC, which is 2026-01-30 23:00 at UTC-10.
        assert ticket_ids(session, "created:2026-01-31", honolulu) == []
        assert ticket_ids(session, "created:2026-01-30", honolulu) == [3]
        assert sorted(ticket_ids(session, "created:<2026-01-31", honolulu)) == [1, 3, 5]
        assert ticket_ids(session, "created:2026-01-31T00:00:00", honolulu) == []
        assert ticket_ids(session, "created:2026-01-30T23:00:00", honolulu) == [3]
        assert ticket_ids(session, "created:20260131", honolulu) == []
        assert ticket_ids(session, "created:20260130", honolulu) == [3]
        assert ticket_ids(session, "created:20260130T2300", honolulu) == [3]


@pytest.mark.parametrize("offset", [-12, 0, 14])
def test_dates_at_the_ends_of_the_calendar_never_crash(readable, offset):
    """The first and last representable days, read in any zone, bound everything or nothing."""
    ctx = QueryContext(now=FIXED_NOW, me="alice", tz=timezone(timedelta(hours=offset)))
    everyone = [1, 2, 3, 4, 5]
    with readable.read() as session:
        for text, expected in (("created:<=9999-12-31", everyone), ("created:>9999-12-31", []),
                               ("created:>=0001-01-01", everyone), ("created:<0001-01-01", []),
                               ("created:<=0001-01-01T00:00", []), ("created:<99991231T235959", everyone)):
            assert sorted(ticket_ids(session, text, ctx)) == expected, (offset, text)


@given(day=st.dates(), op=st.sampled_from(("", "=", "<", "<=", ">", ">=")),
       tz=st.sampled_from((timezone.utc, timezone(timedelta(hours=-10)), timezone(timedelta(hours=14)))))
def test_a_basic_date_is_the_same_local_day_as_the_extended_one(day, op, tz):
    """`created:20260209` is exactly `created:2026-02-09` (the whole local day), never an instant."""
    ctx = QueryContext(now=FIXED_NOW, me="alice", tz=tz)
    basic = f"{day.year:04}{day.month:02}{day.day:02}"
    compiled = [compile_query(f"created:{op}{value}", ctx).compile() for value in (basic, day.isoformat())]
    assert str(compiled[0]) == str(compiled[1])
    assert compiled[0].params == compiled[1].params
    if op in ("", "="):
        assert str(compiled[0]).count("tickets.created_at") == 2, "a day is a range, not one instant"


@given(value=st.text(st.sampled_from("0123456789-WT:Z+ "), min_size=1, max_size=20))
def test_date_like_values_are_a_day_an_instant_or_a_one_line_error(value):
    """Whatever digits and separators are typed, `created:` reads a day, an instant or a duration,
    or refuses naming the term; it never raises anything else."""
    term = f'created:"{value}"'
    try:
        query = parse_query(term)
    except QueryError as exc:
        assert term in str(exc) and "\n" not in str(exc)
        return
    compile_query(query, CTX)


NUMBER_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
# Digit strings around every limit: SQLite's and PostgreSQL's 32/64-bit integers, timedelta,
# datetime's last year, Python's 4,300-digit int conversion limit; with leading zeros too.
DIGITS = st.one_of(
    st.integers(0, 2**65).map(str),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**18, 86399999999999, 999999999 * 86400])
    .flatmap(lambda n: st.sampled_from([n - 1, n, n + 1])).map(str),
    st.text("0123456789", min_size=1, max_size=40),
    st.integers(4200, 4400).map(lambda n: "9" * n),
    st.tuples(st.text("0", max_size=30), st.integers(0, 10)).map(lambda p: p[0] + str(p[1])),
)
# A few that are not numbers at all: each must be a one-line error naming its term.
NOT_DIGITS = st.sampled_from(["-1", "1.5", "1e9", "0x10", "²", "٣", "１", "1_000", "+3"])


def seconds(t: datetime) -> int:
    return int((t - FIXED_NOW).total_seconds())


def number_reference(field: str, op: str, digits: list[str], unit: str) -> Pred:
    """Exact integer arithmetic, no datetime (which is what overflowed): ids and ages in seconds."""
    numbers = [int(d) for d in digits]
    if field == "id":
        return lambda t: any(COMPARE[op](t.id, n) for n in numbers)
    limit = numbers[0] * NUMBER_UNITS[unit]
    if field == "sla":
        def pending(t: Tk) -> list[int]:
            return [seconds(d) for d in t.dues if d is not None]
        if op in ("<", "<="):
            return lambda t: any(COMPARE[op](d, limit) for d in pending(t))
        return lambda t: bool(pending(t)) and COMPARE[op](min(pending(t)), limit)
    column = "created" if field == "created" else "updated"
    if op in ("", "="):
        return lambda t: -seconds(getattr(t, column)) <= limit
    return lambda t: COMPARE[op](-seconds(getattr(t, column)), limit)


@st.composite
def number_terms(draw) -> tuple[str, Optional[Pred]]:
    """An `id:`, `created:`, `updated:` or `sla:due` term with any digits; its reference, or None
    when the literal is not a number (then the term must be refused)."""
    field = draw(st.sampled_from(["id", "created", "updated", "sla"]))
    good = draw(st.booleans()) or draw(st.booleans())
    literal = DIGITS if good else NOT_DIGITS
    unit = draw(st.sampled_from(sorted(NUMBER_UNITS)))
    op = draw(st.sampled_from(("<", "<=", ">", ">=") if field == "sla" else ("",) + OPERATORS))
    many = field == "id" and op in ("", "=")
    digits = draw(st.lists(literal, min_size=1, max_size=3 if many else 1))
    suffix = "" if field == "id" else unit
    text = f"sla:due{op}{digits[0]}{suffix}" if field == "sla" else f"{field}:{op}{','.join(digits)}{suffix}"
    if not good:
        return text, None
    if len("".join(digits)) > 4000:
        # The reference cannot int() these; they are far beyond every limit, like 10**40.
        digits = [d if len(d) < 4000 else "1" + "0" * 40 for d in digits]
    return text, number_reference(field, op, digits, unit)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(term=number_terms(), negated=st.booleans())
def test_any_number_runs_exactly_or_is_refused_in_one_line(readable, term, negated):
    """Whatever digits `id:`, `created:`/`updated:` durations and `sla:due` get — past 32 or 64 bits,
    past datetime's last year, past Python's int conversion limit — the database either answers
    exactly what integer arithmetic says, or the query is refused with one line naming the term."""
    text, pred = term
    text = "-" + text if negated else text
    with readable.read() as session:
        if pred is None:
            with pytest.raises(QueryError) as caught:
                ticket_ids(session, text, CTX)
            message = str(caught.value)
            assert text in message and "\n" not in message
            return
        got = ticket_ids(session, text, CTX)
        assert count(session, text, CTX) == len(got)
    expected = [t.id for t in READABLE if pred(t) != negated]
    assert sorted(got) == expected, text


def test_a_number_beyond_64_bits_is_no_traceback_on_the_command_line(cli, tmp_path):
    """`tickets list 'id:>999…'` is an ordinary "nothing matched" (exit 3), `id:<999…` lists every ticket,
    a non-number is a one-line usage error (exit 2)."""
    body = tmp_path / "body.txt"
    body.write_text("hello\n", encoding="utf-8")
    created = cli("tickets", "create", "--from", "bob@acme.test", "--subject", "hi", "--body-file", str(body))
    assert created.exit_code == 0, created.output
    huge = "9" * 30
    for query in (f"id:>{huge}", f"id:{huge}", "sla:due>99999999999999w", f"created:>{huge}w"):
        result = cli("tickets", "list", query, "--format", "ids")
        assert result.exit_code == 3 and result.output.strip() == "" and "Traceback" not in result.output, query
    listed = cli("tickets", "list", f"id:<{huge}", f"updated:<{huge}w", "--format", "ids")
    assert listed.exit_code == 0 and listed.output.split() == [created.output.strip()]
    refused = cli("tickets", "list", "id:>²")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert refused.output.count("\n") == 1 and "id:>²" in refused.output


def test_free_words_may_come_from_different_messages(database):
    """Several words must each appear somewhere in the ticket, not in one message."""
    ticket = Tk(1, subject="Order", messages=(("", "printer jammed"), ("locked", "")))
    store(database, [ticket, Tk(2, subject="printer locked order")])
    with database.read() as session:
        assert sorted(ticket_ids(session, "order printer locked", CTX)) == [1, 2]
        assert ticket_ids(session, '"printer locked"', CTX) == [2]
        assert ticket_ids(session, '"jammed locked"', CTX) == []


def test_a_phrase_never_spans_a_message_subject_and_its_body(database):
    """Found by the property test: subject "Near, late" + body "invoice: …" is not the phrase "late invoice"."""
    store(database, [Tk(1, subject="", messages=(("Near, late", "invoice: late near"),))])
    with database.read() as session:
        assert ticket_ids(session, '"late invoice"', CTX) == []
        assert ticket_ids(session, '"invoice late"', CTX) == [1]


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

def explain(session, tickets: list[Tk], chosen: list[tuple[str, Pred]], got: set, expected: set) -> str:
    """Say which ids differ and which terms disagree on their own (none: only the combination does)."""
    lines = [f"query {' '.join(text for text, _ in chosen)!r}",
             f"only SQL: {sorted(got - expected)}", describe(tickets, got - expected),
             f"only reference: {sorted(expected - got)}", describe(tickets, expected - got)]
    for text, pred in chosen:
        alone = set(ticket_ids(session, text, CTX))
        wanted = {t.id for t in tickets if pred(t)}
        lines.append(f"  term {text!r} alone: " + ("agrees" if alone == wanted else
                     f"only SQL {sorted(alone - wanted)}, only reference {sorted(wanted - alone)}"))
    return "\n".join(lines)


# Shrinking re-runs the database work thousands of times (minutes); `explain` localises a
# failure instead, and the Hypothesis database replays it.
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(tickets=ticket_sets(), cases=st.lists(QUERIES, min_size=4, max_size=12))
def test_sql_agrees_with_the_documented_semantics(database, tickets, cases):
    """Whatever the tickets and the query, the database returns exactly what the docs promise,
    and `-term` is the exact complement of `term` (NULL columns included)."""
    store(database, tickets)
    everyone = {t.id for t in tickets}
    with database.read() as session:
        for chosen in cases:
            text = " ".join(term for term, _ in chosen)
            expected = {t.id for t in tickets if all(pred(t) for _, pred in chosen)}
            got = set(ticket_ids(session, text, CTX))
            if got != expected:
                pytest.fail(explain(session, tickets, chosen, got, expected))
            assert count(session, text, CTX) == len(expected), text
            first = chosen[0][0]
            yes = set(ticket_ids(session, first, CTX))
            no = set(ticket_ids(session, first[1:] if first.startswith("-") else f"-{first}", CTX))
            assert yes.isdisjoint(no) and yes | no == everyone, first


# --- 5. sorting ----------------------------------------------------------------------------

SORT_KEYS = {
    "id": lambda t: t.id,
    "created": lambda t: t.created,
    "updated": lambda t: t.updated,
    "priority": lambda t: PRIORITY_RANK[t.priority],
    "status": lambda t: t.status,
    "subject": lambda t: t.subject,
    "requester": lambda t: (t.requester.name or t.requester.email).lower(),
    "assignee": lambda t: (t.assignee or "").lower(),
}


def test_every_sort_field_is_covered():
    """A new sort field must get a reference key here before it ships."""
    assert set(SORT_KEYS) | {"sla"} == set(SORT_FIELDS)


@settings(PROPERTY_SETTINGS, max_examples=30)
@given(tickets=ticket_sets(2, 15))
def test_sort_order_matches_python_sorting(database, tickets):
    """Each `--sort` field, either direction and spelling, orders like Python's sort of the
    documented key; ties go by id in the same direction (sla: only the key order is documented)."""
    store(database, tickets)
    by_id = {t.id: t for t in tickets}
    with database.read() as session:
        for name in SORT_FIELDS:
            for spec in (name, f"{name}:asc", f"{name}:desc", f"-{name}"):
                descending = spec.endswith(":desc") or spec.startswith("-")
                got = [by_id[i] for i in ticket_ids(session, "", CTX, sort=spec)]
                if name == "sla":
                    with_sla = sorted((sla_key(t) for t in tickets if sla_key(t) is not None), reverse=descending)
                    assert [sla_key(t) for t in got] == with_sla + [None] * (len(tickets) - len(with_sla)), spec
                else:
                    key = SORT_KEYS[name]
                    wanted = sorted(tickets, key=lambda t: (key(t), t.id), reverse=descending)
                    assert [t.id for t in got] == [t.id for t in wanted], spec


def test_sla_sort_uses_the_nearest_due_time(database):
    """A ticket whose resolution is due before its next response is nearer than one due in between."""
    soon_resolution = Tk(1, dues=(None, FIXED_NOW + timedelta(hours=8), FIXED_NOW + timedelta(hours=1)))
    middle = Tk(2, dues=(None, None, FIXED_NOW + timedelta(hours=4)))
    no_sla = Tk(3)
    store(database, [no_sla, middle, soon_resolution])
    with database.read() as session:
        assert ticket_ids(session, "", CTX, sort="sla") == [1, 2, 3]
        assert ticket_ids(session, "", CTX, sort="sla:desc") == [2, 1, 3]


def test_default_order_is_newest_first(readable):
    """Without `--sort` the newest ticket comes first."""
    with readable.read() as session:
        assert ticket_ids(session, "", CTX) == [4, 2, 3, 1, 5]
        assert ticket_ids(session, "", CTX, limit=2) == [4, 2]


@pytest.mark.parametrize("spec", ["colour", "priority:up", "sla:", "-", "created:desc:asc", "owner"])
def test_bad_sort_is_an_error(spec):
    """A mistyped `--sort` must not silently fall back to another order."""
    with pytest.raises(QueryError) as caught:
        sort_order(spec)
    assert caught.value.term == spec


@pytest.mark.parametrize("text, values, op", [
    ('subject:"=foo"', ("=foo",), "="),
    ('subject:">5 items"', (">5 items",), "="),
    ('subject:" reset"', (" reset",), "="),
    ('subject:"a,b",c', ("a,b", "c"), "="),
    ("priority:>=high", ("high",), ">="),
])
def test_quoted_text_is_literal(text, values, op):
    """Inside quotes, operators, commas and edge spaces are part of the value."""
    (term,) = parse_query(text).terms
    assert (term.values, term.op) == (values, op)
