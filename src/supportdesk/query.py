"""The query language: text → terms → SQL expression over tickets.

One language for the console's search box, saved views, SLA policies, routing
rules and the command line (SPEC §6).  Parsing is pure; compiling needs only
a `QueryContext` (the clock, the current agent) and yields a SQLAlchemy
expression, so filtering always happens in the database.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from supportdesk.models import (
    CHANNELS, PRIORITIES, PRIORITY_RANK, STATUSES, Agent, Customer, Message, Organization, Queue, Tag, Ticket,
    TicketTag,
)

FIELDS = (
    "status", "queue", "assignee", "priority", "tag", "from", "org", "channel", "mailbox", "subject",
    "created", "updated", "sla", "is", "id",
)
IS_VALUES = ("unassigned", "assigned", "unread", "snoozed", "merged")
_OPERATORS = (">=", "<=", ">", "<", "=")
_COMPARABLE = {"priority", "created", "updated", "id"}
_ENUMS = {"status": STATUSES, "priority": PRIORITIES, "channel": CHANNELS, "is": IS_VALUES}
_DURATION = re.compile(r"^(\d+)\s*(m|min|h|d|w)$", re.ASCII)
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Ticket ids are at most 64-bit on every database; a larger `id:` value is compared against this bound.
_MAX_ID = 2**63 - 1
# A calendar day, ISO 8601 extended or basic; an instant is such a day, `T` (or a space), a time.
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})|(\d{4})(\d{2})(\d{2})", re.ASCII)
_INSTANT = re.compile(r"(?:\d{4}-\d{2}-\d{2}|\d{8})[Tt ]\d", re.ASCII)
_FIELD_PREFIX = re.compile(r"^([A-Za-z_]+):")
# Inside quotes, characters that mean something outside them (list comma, comparison operators,
# spaces that would be trimmed) are kept apart as private-use stand-ins while tokenizing.
_QUOTED = {",": "\ue000", ">": "\ue001", "<": "\ue002", "=": "\ue003", " ": "\ue004"}
_UNQUOTE = str.maketrans({v: k for k, v in _QUOTED.items()})


def _protect(text: str) -> str:
    return text.translate(str.maketrans(_QUOTED))


class QueryError(ValueError):
    """A malformed query; the message names the offending term."""

    def __init__(self, message: str, term: str = "", position: int = 0):
        self.term, self.position = term, position
        super().__init__(message)


@dataclass(frozen=True)
class Term:
    field: str | None  # None: free words / phrase (full-text)
    values: tuple[str, ...]
    op: str = "="
    negated: bool = False
    phrase: bool = False
    text: str = ""
    position: int = 0


@dataclass(frozen=True)
class Query:
    text: str
    terms: tuple[Term, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.terms


@dataclass(frozen=True)
class QueryContext:
    """What a query needs from outside: the current instant and agent, and local time.

    `queue_ids` limits every query to those queues (an agent restricted to some
    queues); None means all of them.
    """

    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    me: str | None = None
    tz: tzinfo = timezone.utc
    dialect: str = "sqlite"
    queue_ids: frozenset[int] | None = None


def parse_query(text: str | list[str] | tuple[str, ...]) -> Query:
    """Parse query text (or argv words, joined by spaces) into terms, checking every term."""
    if not isinstance(text, str):
        text = " ".join(text)
    terms = tuple(_check(term) for term in _tokenize(text))
    return Query(text=text, terms=terms)


def _tokenize(text: str) -> list[Term]:
    terms: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        negated = text[i] == "-"
        if negated:
            i += 1
            if i >= n or text[i].isspace():
                raise QueryError(f"a lone '-' at position {start + 1} negates nothing", "-", start)
        if text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise QueryError(f"unclosed quote in {text[start:]!r} at position {start + 1}", text[start:], start)
            phrase = text[i + 1:end]
            i = end + 1
            if i < n and not text[i].isspace():
                stop = next((k for k in range(i, n) if text[k].isspace()), n)
                bad = text[start:stop]
                raise QueryError(f"expected a space after the quoted phrase in {bad!r} at position {i + 1}", bad, start)
            raw = text[start:i]
            if not phrase.strip():
                raise QueryError(f"empty phrase {raw!r}", raw, start)
            terms.append(Term(None, (phrase,), negated=negated, phrase=True, text=raw, position=start))
            continue
        value_chars: list[str] = []
        while i < n and not text[i].isspace():
            if text[i] == '"':
                end = text.find('"', i + 1)
                if end < 0:
                    raw = text[start:]
                    raise QueryError(f"unclosed quote in {raw!r} at position {i + 1}", raw, start)
                value_chars.append(_protect(text[i + 1:end]))
                i = end + 1
            else:
                value_chars.append(text[i])
                i += 1
        raw = text[start:i]
        word = "".join(value_chars)
        match = _FIELD_PREFIX.match(raw[1:] if negated else raw)
        if match:
            name = match.group(1).lower()
            value = word[len(match.group(0)):]
            terms.append(_field_term(name, value, negated, raw, start))
        else:
            terms.append(Term(None, (word.translate(_UNQUOTE),), negated=negated, text=raw, position=start))
    return terms


def _field_term(name: str, value: str, negated: bool, raw: str, position: int) -> Term:
    if name not in FIELDS:
        raise QueryError(
            f"unknown field {name!r} in {raw!r} (fields: {', '.join(FIELDS)}; quote text that contains ':')",
            raw, position,
        )
    op = "="
    if name == "sla":
        return Term(name, (value.translate(_UNQUOTE),), "=", negated, text=raw, position=position)
    for candidate in _OPERATORS:
        if value.startswith(candidate):
            op, value = candidate, value[len(candidate):]
            break
    if op != "=" and name not in _COMPARABLE:
        raise QueryError(f"{name}: does not compare with {op!r} in {raw!r}", raw, position)
    if not value:
        raise QueryError(f"{raw!r} needs a value after '{name}:'", raw, position)
    values = tuple(v.strip().translate(_UNQUOTE) for v in value.split(","))
    if any(not v for v in values):
        raise QueryError(f"empty value in the list {raw!r}", raw, position)
    if op != "=" and len(values) > 1:
        raise QueryError(f"a comparison takes one value in {raw!r}", raw, position)
    return Term(name, values, op, negated, text=raw, position=position)


def _check(term: Term) -> Term:
    """Validate values whose domain is fixed, so a typo never matches nothing silently."""
    f, raw = term.field, term.text

    def bad(message: str) -> QueryError:
        return QueryError(f"{message} in {raw!r}", raw, term.position)

    if f in _ENUMS:
        values = tuple(v.lower() for v in term.values)
        for v in values:
            if v not in _ENUMS[f]:
                raise bad(f"unknown {f} {v!r} (expected {', '.join(_ENUMS[f])})")
        return Term(f, values, term.op, term.negated, text=raw, position=term.position)
    if f == "id":
        for v in term.values:
            if not (v.isascii() and v.isdigit()):
                raise bad(f"id must be a number, got {v!r}")
    if f in ("created", "updated"):
        for v in term.values:
            try:
                _parse_when(v)
            except ValueError as exc:
                raise bad(str(exc)) from None
    if f == "sla":
        _parse_sla(term.values[0], raw, term.position)
    if f == "tag":
        return Term(f, tuple(v.lower() for v in term.values), term.op, term.negated, text=raw, position=term.position)
    return term


def _parse_when(value: str) -> timedelta | date | datetime:
    """A duration (`7d`, `2h`, `30m`, `1w`), a day (`2026-01-31` or `20260131`) or an ISO instant.

    Only these forms: Python's `fromisoformat` would also take week dates and basic dates as
    midnight instants, so `created:20260209` or `created:2026-W07` would match almost nothing."""
    match = _DURATION.match(value.lower())
    if match:
        return _duration(match)
    day = _DAY.fullmatch(value)
    if day:
        year, month, dom = (int(part) for part in day.groups() if part is not None)
        try:
            return date(year, month, dom)
        except ValueError:
            raise ValueError(f"{value!r} is not a calendar day") from None
    if _INSTANT.match(value):
        try:
            return datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "Zz" else value)
        except ValueError:
            pass
    raise ValueError(
        f"bad date or duration {value!r} (use 7d, 12h, 30m, 2w, a day YYYY-MM-DD or YYYYMMDD, "
        "or an ISO 8601 instant such as 2026-01-31T09:00Z)"
    )


def _duration(match: re.Match) -> timedelta:
    """A `_DURATION` match; one longer than timedelta can hold (`99999999999999w`, thousands of digits)
    is `timedelta.max`, which callers bound to the ends of time."""
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 30:
        return timedelta.max
    try:
        return timedelta(seconds=int(digits) * _UNITS[match.group(2)])
    except OverflowError:
        return timedelta.max


def _parse_sla(value: str, raw: str, position: int) -> tuple[str, str | None, timedelta | None]:
    value = value.lower()
    if value == "breached":
        return ("breached", None, None)
    match = re.match(r"^due(>=|<=|<|>)(.+)$", value)
    if match:
        when = _DURATION.match(match.group(2))
        if when:
            return ("due", match.group(1), _duration(when))
    raise QueryError(f"unknown SLA condition in {raw!r} (expected sla:breached or sla:due<DURATION such as due<1h)", raw, position)


# --- compiling ---------------------------------------------------------------------------

SLA_DUE_COLUMNS = ("first_response_due", "next_response_due", "resolution_due")


def compile_query(query: Query | str, ctx: QueryContext | None = None) -> sa.ColumnElement[bool]:
    """A WHERE clause over `tickets` for the whole query (terms ANDed)."""
    if isinstance(query, str):
        query = parse_query(query)
    ctx = ctx or QueryContext()
    clauses = []
    for term in query.terms:
        clause = _compile_term(term, ctx)
        clauses.append(sa.not_(clause) if term.negated else clause)
    if ctx.queue_ids is not None:
        clauses.append(Ticket.__table__.c.queue_id.in_(sorted(ctx.queue_ids)))
    return sa.and_(sa.true(), *clauses)


def _present(column, clause):
    """A clause that is false, never NULL, when the column is NULL — so negation stays honest."""
    return sa.and_(column.is_not(None), clause)


def _compile_term(term: Term, ctx: QueryContext):
    f, values = term.field, term.values
    T = Ticket.__table__.c
    if f is None:
        return _fulltext(values[0], term, ctx)
    if f == "status":
        return T.status.in_(values)
    if f == "priority":
        if term.op == "=":
            return T.priority.in_(values)
        rank = PRIORITY_RANK[values[0]]
        return _compare(T.priority_rank, term.op, rank)
    if f == "channel":
        return T.channel.in_(values)
    if f == "mailbox":
        return _present(T.mailbox, sa.func.lower(T.mailbox).in_([v.lower() for v in values]))
    if f == "queue":
        ids = sa.select(Queue.__table__.c.id).where(sa.func.lower(Queue.__table__.c.name).in_([v.lower() for v in values]))
        return T.queue_id.in_(ids)
    if f == "assignee":
        return sa.or_(*[_assignee(v, term, ctx) for v in values])
    if f == "tag":
        TT, G = TicketTag.__table__.c, Tag.__table__.c
        return sa.exists(
            sa.select(1).select_from(TicketTag.__table__.join(Tag.__table__, TT.tag_id == G.id))
            .where(TT.ticket_id == T.id, G.name.in_(values))
        )
    if f == "from":
        return sa.or_(*[_from(v) for v in values])
    if f == "org":
        return sa.or_(*[_org(v) for v in values])
    if f == "subject":
        return sa.or_(*[T.subject.ilike(f"%{_like_escape(v)}%", escape="\\") for v in values])
    if f in ("created", "updated"):
        column = T.created_at if f == "created" else T.updated_at
        return sa.or_(*[_when(column, term.op, v, ctx) for v in values])
    if f == "sla":
        return _sla(values[0], term, ctx)
    if f == "is":
        return sa.or_(*[_is(v, ctx) for v in values])
    if f == "id":
        return _id(term.op, values)
    raise QueryError(f"unsupported field {f!r}", term.text, term.position)


def _compare(column, op: str, value):
    return {
        ">": column > value, ">=": column >= value, "<": column < value, "<=": column <= value, "=": column == value,
    }[op]


def _id(op: str, values: tuple[str, ...]):
    """Ids are bound as BIGINT (PostgreSQL's `tickets.id` is a 32-bit integer, which a larger literal
    would overflow); a value beyond 64 bits matches no ticket, and `id:<` it matches every one."""
    T = Ticket.__table__.c

    def bigint(number: int):
        return sa.bindparam(None, number, type_=sa.BigInteger, unique=True)

    numbers = [_id_number(v) for v in values]
    if op == "=":
        return T.id.in_([bigint(n) for n in numbers if n <= _MAX_ID])
    number = numbers[0]
    if number > _MAX_ID:
        number, op = _MAX_ID, {">=": ">", "<": "<="}.get(op, op)
    return _compare(T.id, op, bigint(number))


def _id_number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _MAX_ID + 1 if len(digits) > 19 else int(digits)


def _assignee(value: str, term: Term, ctx: QueryContext):
    T = Ticket.__table__.c
    v = value.lower()
    if v == "none":
        return T.assignee_id.is_(None)
    if v == "me":
        if not ctx.me:
            raise QueryError(f"{term.text!r} needs to know who you are (--as AGENT)", term.text, term.position)
        v = ctx.me.lower()
    ids = sa.select(Agent.__table__.c.id).where(sa.func.lower(Agent.__table__.c.login) == v)
    return _present(T.assignee_id, T.assignee_id.in_(ids))


def _from(value: str):
    C = Customer.__table__.c
    v = value.lower()
    if v.startswith("@"):
        cond = C.email.like(f"%{_like_escape(v)}", escape="\\")
    elif "@" in v:
        cond = C.email == v
    else:
        pattern = f"%{_like_escape(v)}%"
        cond = sa.or_(C.email.like(pattern, escape="\\"), C.name.ilike(pattern, escape="\\"))
    return Ticket.__table__.c.requester_id.in_(sa.select(C.id).where(cond))


def _org(value: str):
    O, C = Organization.__table__.c, Customer.__table__.c
    v = value.lower()
    orgs = sa.select(O.id).where(sa.or_(
        sa.func.lower(O.name) == v, O.domain == v, O.domain.like(f"{_like_escape(v)}.%", escape="\\"),
    ))
    customers = sa.select(C.id).where(C.organization_id.in_(orgs))
    return Ticket.__table__.c.requester_id.in_(customers)


def _when(column, op: str, value: str, ctx: QueryContext):
    parsed = _parse_when(value)
    if isinstance(parsed, timedelta):
        # A duration is an age: created:>7d means "created more than 7 days ago".
        instant = _utc(lambda: ctx.now - parsed, past=True)
        flipped = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": ">="}[op]
        return _compare(column, flipped, instant)
    past = parsed.year < 5000
    if isinstance(parsed, datetime):
        instant = _utc(lambda: parsed if parsed.tzinfo else parsed.replace(tzinfo=ctx.tz), past)
        return _compare(column, op, instant)
    start = _utc(lambda: datetime.combine(parsed, time(0), ctx.tz), past)
    end = _utc(lambda: datetime.combine(parsed + timedelta(days=1), time(0), ctx.tz), past)
    return {
        "=": sa.and_(column >= start, column < end),
        "<": column < start,
        "<=": column < end,
        ">": column >= end,
        ">=": column >= start,
    }[op]


def _utc(make, past: bool) -> datetime:
    """The instant in UTC; one beyond what datetime can hold (`created:<9999-12-31`, `created:>99999999d`)
    becomes the earliest or latest representable instant, which no ticket precedes or follows."""
    try:
        return make().astimezone(timezone.utc)
    except OverflowError:
        return (datetime.min if past else datetime.max).replace(tzinfo=timezone.utc)


def _sla(value: str, term: Term, ctx: QueryContext):
    T = Ticket.__table__.c
    kind, op, delta = _parse_sla(value, term.text, term.position)
    columns = [getattr(T, name) for name in SLA_DUE_COLUMNS]
    if kind == "breached":
        return sa.or_(*[_present(c, c < ctx.now) for c in columns])
    try:
        limit = ctx.now + delta
    except OverflowError:
        limit = datetime.max.replace(tzinfo=timezone.utc)
    if op in ("<", "<="):
        return sa.or_(*[_present(c, _compare(c, op, limit)) for c in columns])
    # due>1h: the nearest pending target is further away than that.
    return sa.and_(
        sa.or_(*[c.is_not(None) for c in columns]),
        *[sa.or_(c.is_(None), _compare(c, op, limit)) for c in columns],
    )


def _is(value: str, ctx: QueryContext):
    T = Ticket.__table__.c
    if value == "unassigned":
        return T.assignee_id.is_(None)
    if value == "assigned":
        return T.assignee_id.is_not(None)
    if value == "unread":
        return T.unread == sa.true()
    if value == "snoozed":
        return _present(T.snoozed_until, T.snoozed_until > ctx.now)
    return T.merged_into_id.is_not(None)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def fts_expression(text: str, phrase: bool) -> str:
    """An FTS5 MATCH string for user text: every word quoted (so FTS syntax stays inert);
    a trailing `*` on a word means a prefix search."""
    if phrase:
        return '"' + text.replace('"', '""') + '"'
    prefix = text.endswith("*")
    word = text.rstrip("*")
    return '"' + word.replace('"', '""') + '"' + ("*" if prefix else "")


def search_words(text: str) -> list[str]:
    """The words of text as both search indexes see them: lower-cased, accents folded,
    runs of letters and digits (FTS5's unicode61 with remove_diacritics; on PostgreSQL
    the migration's `supportdesk_search_text`)."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", folded)


def tsquery_expression(text: str, phrase: bool) -> str | None:
    """A PostgreSQL tsquery for user text: its words in order (`<->`), the last one a prefix
    when the text ends with `*`; None when there is no word.  Words are letters and digits
    only, so quoting each keeps tsquery syntax inert."""
    words = search_words(text.rstrip("*") if not phrase else text)
    if not words:
        return None
    query = " <-> ".join(f"'{w}'" for w in words)
    return query + ":*" if not phrase and text.endswith("*") else query


class FullTextMatch(sa.sql.expression.ColumnElement):
    """`tickets.id` is in the full-text matches, compiled for the dialect at hand: FTS5's
    `ticket_text` on SQLite, `ticket_search` (tsvector, GIN) on PostgreSQL, ILIKE elsewhere."""

    type = sa.Boolean()
    inherit_cache = False

    def __init__(self, sqlite, postgresql, fallback):
        self.sqlite, self.postgresql, self.fallback = sqlite, postgresql, fallback


@compiles(FullTextMatch)
def _fulltext_default(element, compiler, **kw):
    return "(" + compiler.process(element.fallback, **kw) + ")"


@compiles(FullTextMatch, "sqlite")
def _fulltext_sqlite(element, compiler, **kw):
    return "(" + compiler.process(element.sqlite, **kw) + ")"


@compiles(FullTextMatch, "postgresql")
def _fulltext_postgresql(element, compiler, **kw):
    return "(" + compiler.process(element.postgresql, **kw) + ")"


def _fulltext(value: str, term: Term, ctx: QueryContext):
    if not re.search(r"\w", value):
        raise QueryError(f"{term.text!r} has nothing to search for", term.text, term.position)
    T, M = Ticket.__table__.c, Message.__table__.c
    match = sa.bindparam("m", fts_expression(value, term.phrase), unique=True)
    sqlite = T.id.in_(sa.text("SELECT rowid FROM ticket_text WHERE ticket_text MATCH :m").bindparams(match))
    tsquery = tsquery_expression(value, term.phrase)
    if tsquery is None:
        postgresql = sa.false()
    else:
        ts = sa.bindparam("q", tsquery, unique=True)
        postgresql = T.id.in_(sa.text("SELECT ticket_id FROM ticket_search WHERE document @@ CAST(:q AS tsquery)")
                              .bindparams(ts))
    pattern = f"%{_like_escape(value.rstrip('*'))}%"
    fallback = sa.or_(
        T.subject.ilike(pattern, escape="\\"),
        T.id.in_(sa.select(M.ticket_id).where(M.body_text.ilike(pattern, escape="\\"))),
    )
    return FullTextMatch(sqlite, postgresql, fallback)


# --- sorting ------------------------------------------------------------------------------

class least_due(sa.sql.functions.GenericFunction):
    """The earliest of some nullable instants, ignoring NULLs (NULL when all are)."""

    inherit_cache = True
    name = "least_due"


@compiles(least_due)
def _least_due_default(element, compiler, **kw):
    return f"LEAST({compiler.process(element.clauses, **kw)})"


@compiles(least_due, "sqlite")
def _least_due_sqlite(element, compiler, **kw):
    # SQLite's scalar min() is NULL if any argument is: rotate coalesce() so each slot holds a value.
    args = [compiler.process(c, **kw) for c in element.clauses]
    rotations = [", ".join(args[i:] + args[:i]) for i in range(len(args))]
    return "min(" + ", ".join(f"coalesce({r})" for r in rotations) + ")"


def nearest_due():
    T = Ticket.__table__.c
    return least_due(T.first_response_due, T.next_response_due, T.resolution_due, type_=T.resolution_due.type)


SORT_FIELDS = {
    "id": "id", "created": "created_at", "updated": "updated_at", "priority": "priority_rank",
    "status": "status", "subject": "subject", "sla": "resolution_due",
    "requester": "requester_id", "assignee": "assignee_id",
}


def person_sort_key(name: str):
    """The requester's name (else address) or the assignee's login, lower-cased, as a correlated
    subquery so the paged query needs no join; unassigned is '' (first ascending) on every database."""
    T = Ticket.__table__.c
    if name == "requester":
        C = Customer.__table__.c
        return (sa.select(sa.func.lower(sa.func.coalesce(sa.func.nullif(C.name, ""), C.email)))
                .where(C.id == T.requester_id).scalar_subquery())
    A = Agent.__table__.c
    return sa.func.coalesce(
        sa.select(sa.func.lower(A.login)).where(A.id == T.assignee_id).scalar_subquery(), "")


def sort_parts(spec: str | None) -> tuple[str, bool]:
    """`FIELD[:asc|:desc]` or `-FIELD` → (field, descending); no spec is newest first."""
    if not spec:
        return "created", True
    descending = spec.startswith("-")
    name = spec.lstrip("-")
    if ":" in name:
        name, direction = name.split(":", 1)
        if direction not in ("asc", "desc"):
            raise QueryError(f"bad sort direction {direction!r} in {spec!r} (asc or desc)", spec)
        descending = direction == "desc"
    return name, descending


def sort_order(spec: str | None) -> list:
    """ORDER BY for `--sort FIELD[:asc|:desc]` (or `-FIELD`); newest first by default."""
    T = Ticket.__table__.c
    if not spec:
        return [T.created_at.desc(), T.id.desc()]
    name, descending = sort_parts(spec)
    if name not in SORT_FIELDS:
        raise QueryError(f"cannot sort by {name!r} (one of: {', '.join(SORT_FIELDS)})", spec)
    if name in ("requester", "assignee"):
        column = person_sort_key(name)
    else:
        column = getattr(T, SORT_FIELDS[name])
    if name == "sla":
        nearest = nearest_due()
        key = nearest.desc() if descending else nearest.asc()
        return [nearest.is_(None), key, T.id.asc()]
    return [column.desc() if descending else column.asc(), T.id.desc() if descending else T.id.asc()]
