"""Routing rules, escalations and timed automations (SPEC §4, §10).

Every condition is first a `match` query (SPEC §6) evaluated in SQL against
the ticket, so rules, escalations, views and SLA policies select tickets the
same way.  Every action goes through the ticket services, so it is recorded as
an event by the acting actor (``system`` for automations) and the SLA hook
recomputes due times in the same commit.

* Routing rules (``[[rule]]``) run in config order on ticket creation and on
  each inbound message (`apply_rules`); a later rule sees what earlier ones
  set; ``stop = true`` ends the chain.
* Escalations (``[[escalation]]``) fire once per ticket, escalation and SLA
  target (a next-response target once per cycle): the firing is an Event
  with field ``escalation`` whose value is the key checked next time.
* Timed automations: snoozed tickets wake when their time comes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.config import ConfigError, Settings, derived_from_settings
from supportdesk.models import (
    PRIORITIES,
    STATUSES,
    SYSTEM_ACTOR,
    Agent,
    Event,
    Message,
    Queue,
    Ticket,
    TicketSlaTarget,
    utcnow,
)
from supportdesk.query import (
    SLA_DUE_COLUMNS,
    nearest_due,
    QueryContext,
    QueryError,
    compile_query,
    parse_query,
)
from supportdesk.tickets import (
    Actor,
    Changes,
    InvalidError,
    bulk_update,
    get_ticket,
    normalize_tag,
    record,
)

T = Ticket.__table__.c
OPEN_STATUSES = ("new", "open", "pending", "on_hold")
ASSIGN_STRATEGIES = ("@round_robin", "@least_open")
_SET_KEYS = {"queue", "priority", "status", "assignee", "add_tags", "remove_tags"}
_RULE_KEYS = {"name", "match", "set", "drop", "stop", "subject_regex", "body_regex", "from_regex", "to",
              "business_hours", "calendar"}
_ESCALATION_KEYS = {"name", "match", "set", "notify"}


@dataclass(frozen=True)
class Actions:
    """What a rule or escalation sets; mirrors `Changes` plus assignment strategies."""

    queue: str | None = None
    priority: str | None = None
    status: str | None = None
    assignee: str | None = None  # a login, "none", "@round_robin" or "@least_open"
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()

    def empty(self) -> bool:
        return not (self.queue or self.priority or self.status or self.assignee or self.add_tags or self.remove_tags)


@dataclass(frozen=True)
class Rule:
    name: str
    key: str  # "rule[3]", for messages
    match: str | None = None
    actions: Actions = Actions()
    drop: bool = False
    stop: bool = False
    subject_regex: re.Pattern | None = None
    body_regex: re.Pattern | None = None
    from_regex: re.Pattern | None = None
    to: tuple[str, ...] = ()
    business_hours: bool | None = None
    calendar: str | None = None


@dataclass(frozen=True)
class Escalation:
    name: str
    key: str
    match: str
    actions: Actions = Actions()
    notify: tuple[str, ...] = ()  # "assignee" or email addresses


@dataclass
class AutomationConfig:
    rules: list[Rule] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)


# --------------------------------------------------------------------------- config


@derived_from_settings
def load(settings: Settings) -> AutomationConfig:
    """Rules and escalations, validated; errors name the file and `rule[i].key`. Cached per Settings."""
    return _load(settings)


def _load(settings: Settings) -> AutomationConfig:
    file = settings.file
    config = AutomationConfig()
    calendars = {c.get("name") for c in settings.calendars}

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(file, key, problem)

    for i, spec in enumerate(settings.rules):
        key = f"rule[{i}]"
        _allowed(spec, key, _RULE_KEYS, fail)
        regexes = {}
        for name in ("subject_regex", "body_regex", "from_regex"):
            value = spec.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise fail(f"{key}.{name}", f"must be a regular expression string, got {value!r}")
            try:
                regexes[name] = re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise fail(f"{key}.{name}", f"bad regular expression: {exc}") from None
        to = spec.get("to", ())
        to = (to,) if isinstance(to, str) else to
        if not isinstance(to, (list, tuple)) or not all(isinstance(a, str) and "@" in a for a in to):
            raise fail(f"{key}.to", f"must be an address or a list of addresses, got {spec.get('to')!r}")
        hours = spec.get("business_hours")
        if hours is not None and not isinstance(hours, bool):
            raise fail(f"{key}.business_hours", f"must be true or false, got {hours!r}")
        cal = spec.get("calendar")
        if hours is not None:
            if cal is None:
                if not settings.calendars:
                    raise fail(f"{key}.business_hours", "needs a [[calendar]] (none configured)")
                cal = settings.calendars[0].get("name")
            elif cal not in calendars:
                raise fail(f"{key}.calendar", f"no [[calendar]] named {cal!r}")
        for flag in ("drop", "stop"):
            if not isinstance(spec.get(flag, False), bool):
                raise fail(f"{key}.{flag}", f"must be true or false, got {spec.get(flag)!r}")
        actions = _actions(spec.get("set", {}), f"{key}.set", fail)
        if actions.empty() and not spec.get("drop"):
            raise fail(key, "does nothing; expected `set = { … }` or `drop = true`")
        config.rules.append(Rule(
            name=_name(spec, key, fail, f"rule {i + 1}"), key=key, match=_match(spec, key, fail), actions=actions,
            drop=spec.get("drop", False), stop=spec.get("stop", False),
            subject_regex=regexes.get("subject_regex"), body_regex=regexes.get("body_regex"),
            from_regex=regexes.get("from_regex"), to=tuple(a.lower() for a in to), business_hours=hours, calendar=cal,
        ))
    for i, spec in enumerate(settings.escalations):
        key = f"escalation[{i}]"
        _allowed(spec, key, _ESCALATION_KEYS, fail)
        match = _match(spec, key, fail)
        if match is None:
            raise fail(f"{key}.match", "is required, e.g. match = \"sla:due<30m\" or \"sla:breached\"")
        notify = spec.get("notify", ())
        notify = (notify,) if isinstance(notify, str) else notify
        if not isinstance(notify, (list, tuple)) or not all(
            isinstance(n, str) and (n == "assignee" or ("@" in n and " " not in n)) for n in notify
        ):
            raise fail(f"{key}.notify", f"must be \"assignee\" or email addresses, got {spec.get('notify')!r}")
        actions = _actions(spec.get("set", {}), f"{key}.set", fail)
        if actions.empty() and not notify:
            raise fail(key, "does nothing; expected `set = { … }` and/or `notify = …`")
        config.escalations.append(Escalation(
            name=_name(spec, key, fail, f"escalation {i + 1}"), key=key, match=match, actions=actions,
            notify=tuple(notify),
        ))
    return config


def _allowed(spec: dict, key: str, keys: set[str], fail) -> None:
    for k in spec:
        if k not in keys:
            raise fail(f"{key}.{k}", f"unknown key (expected one of: {', '.join(sorted(keys))})")


def _name(spec: dict, key: str, fail, default: str) -> str:
    name = spec.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{key}.name", f"must be a non-empty string, got {name!r}")
    return name


def _match(spec: dict, key: str, fail) -> str | None:
    match = spec.get("match")
    if match is None:
        return None
    if not isinstance(match, str):
        raise fail(f"{key}.match", f"must be a query string, got {match!r}")
    try:
        compile_query(parse_query(match), QueryContext(me=None))
    except QueryError as exc:
        raise fail(f"{key}.match", str(exc)) from None
    return match if match.strip() else None


def _actions(spec: Any, key: str, fail) -> Actions:
    if not isinstance(spec, dict):
        raise fail(key, "must be a table, e.g. set = { queue = \"VIP\", priority = \"high\" }")
    _allowed(spec, key, _SET_KEYS, fail)
    values: dict[str, Any] = {}
    for name in ("queue", "priority", "status", "assignee"):
        value = spec.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise fail(f"{key}.{name}", f"must be a non-empty string, got {value!r}")
        values[name] = value
    if values["priority"] and values["priority"] not in PRIORITIES:
        raise fail(f"{key}.priority", f"unknown priority {values['priority']!r} (expected {', '.join(PRIORITIES)})")
    if values["status"] and values["status"] not in STATUSES:
        raise fail(f"{key}.status", f"unknown status {values['status']!r} (expected {', '.join(STATUSES)})")
    if values["assignee"] and values["assignee"].startswith("@") and values["assignee"] not in ASSIGN_STRATEGIES:
        raise fail(f"{key}.assignee", f"unknown strategy {values['assignee']!r} (expected a login, none, "
                                      f"{', '.join(ASSIGN_STRATEGIES)})")
    for name in ("add_tags", "remove_tags"):
        tags = spec.get(name, [])
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list):
            raise fail(f"{key}.{name}", f"must be a list of tags, got {tags!r}")
        try:
            values[name] = tuple(normalize_tag(t) for t in tags)
        except (InvalidError, AttributeError) as exc:
            raise fail(f"{key}.{name}", str(exc)) from None
    return Actions(**values)


def check_references(session: Session, settings: Settings) -> None:
    """Queues and agents named by rules and escalations must exist (`doctor`, daemon start)."""
    config = load(settings)
    queues = {q.lower() for q in session.execute(sa.select(Queue.__table__.c.name)).scalars()}
    A = Agent.__table__.c
    agents = {a.lower() for a in session.execute(sa.select(A.login).where(A.active == sa.true())).scalars()}
    for item in [*config.rules, *config.escalations]:
        a = item.actions
        if a.queue and a.queue.lower() not in queues:
            raise ConfigError(settings.file, f"{item.key}.set.queue", f"no queue named {a.queue!r}")
        if a.assignee and not a.assignee.startswith("@") and a.assignee.lower() != "none" \
                and a.assignee.lower() not in agents:
            raise ConfigError(settings.file, f"{item.key}.set.assignee", f"no active agent {a.assignee!r}")


def check_config(database, settings: Settings) -> None:
    """Everything the timers and intake use from a config, checked before it replaces a working
    one: calendars, SLA policies, rules, escalations, and the queues and agents they name
    (`supportdesk daemon` at start and on SIGHUP).  Raises ConfigError naming file and key."""
    from supportdesk.sla.policy import load as load_sla

    load_sla(settings)
    load(settings)
    with database.read() as session:
        check_references(session, settings)


# --------------------------------------------------------------------------- routing rules


def _matches_sql(session: Session, ticket_id: int, match: str | None, now: datetime) -> bool:
    if match is None:
        return True
    ctx = QueryContext(now=now, me=None, dialect=session.get_bind().dialect.name)
    stmt = sa.select(T.id).where(T.id == ticket_id, compile_query(parse_query(match), ctx))
    return session.execute(stmt).first() is not None


def _latest_customer_message(session: Session, ticket_id: int):
    M = Message.__table__.c
    return session.execute(
        sa.select(M.subject, M.body_text, M.from_addr, M.to_addrs, M.cc_addrs, M.created_at)
        .where(M.ticket_id == ticket_id, M.kind.in_(("inbound", "call", "chat", "social")))
        .order_by(M.created_at.desc(), M.id.desc()).limit(1)
    ).first()


def rule_fires(session: Session, settings: Settings, rule: Rule, ticket_id: int, now: datetime) -> bool:
    """Whether `rule` holds for the ticket and its latest customer message."""
    if not _matches_sql(session, ticket_id, rule.match, now):
        return False
    needs_message = rule.subject_regex or rule.body_regex or rule.from_regex or rule.to or rule.business_hours is not None
    if not needs_message:
        return True
    message = _latest_customer_message(session, ticket_id)
    if message is None:
        return False
    if rule.subject_regex and not rule.subject_regex.search(message.subject or ""):
        return False
    if rule.body_regex and not rule.body_regex.search(message.body_text or ""):
        return False
    if rule.from_regex and not rule.from_regex.search(message.from_addr or ""):
        return False
    if rule.to:
        import json

        recipients = {a.lower() for a in json.loads(message.to_addrs or "[]") + json.loads(message.cc_addrs or "[]")}
        if not recipients & set(rule.to):
            return False
    if rule.business_hours is not None:
        from supportdesk.sla.calendar import is_open
        from supportdesk.sla.policy import load as load_sla

        calendar = load_sla(settings).calendars[rule.calendar]
        if is_open(calendar, message.created_at) != rule.business_hours:
            return False
    return True


def apply_rules(session: Session, settings: Settings, ticket_id: int, actor: Actor | None = None,
                *, now: datetime | None = None) -> list[str]:
    """Run the routing rules on one ticket (after it was created, or got an inbound message).

    Call inside the intake transaction; returns the names of the rules that fired.
    """
    config = load(settings)
    if not config.rules:
        return []
    actor = actor or Actor.system()
    now = now or utcnow()
    fired: list[str] = []
    for rule in config.rules:
        if not rule_fires(session, settings, rule, ticket_id, now):
            continue
        fired.append(rule.name)
        record(session, ticket_id, actor, "rule", None, rule.name, at=now)
        actions = Actions(status="closed", add_tags=("spam",)) if rule.drop else rule.actions
        _apply(session, [ticket_id], actions, actor)
        if rule.stop or rule.drop:
            break
    return fired


def _apply(session: Session, ticket_ids: Sequence[int], actions: Actions, actor: Actor) -> int:
    if actions.empty() or not ticket_ids:
        return 0
    changes = Changes(status=actions.status, priority=actions.priority, queue=actions.queue,
                      add_tags=list(actions.add_tags), remove_tags=list(actions.remove_tags))
    done = bulk_update(session, ticket_ids, changes, actor) if not changes.empty() else 0
    if actions.assignee:
        if actions.assignee in ASSIGN_STRATEGIES:
            for ticket_id in ticket_ids:
                login = pick_agent(session, actions.assignee)
                if login:
                    done += bulk_update(session, [ticket_id], Changes(assignee=login), actor)
        else:
            done += bulk_update(session, ticket_ids, Changes(assignee=actions.assignee), actor)
    return done


def pick_agent(session: Session, strategy: str) -> str | None:
    """An active agent by strategy: `@least_open` (fewest unfinished tickets) or `@round_robin`
    (the one after the agent the system last assigned, in login order)."""
    A = Agent.__table__.c
    logins = list(session.execute(sa.select(A.login).where(A.active == sa.true()).order_by(A.login)).scalars())
    if not logins:
        return None
    if strategy == "@least_open":
        counts = dict(session.execute(
            sa.select(A.login, sa.func.count(T.id)).select_from(Agent.__table__)
            .outerjoin(Ticket.__table__, sa.and_(T.assignee_id == A.id, T.status.in_(OPEN_STATUSES)))
            .where(A.active == sa.true()).group_by(A.login)
        ).all())
        return min(logins, key=lambda login: (counts.get(login, 0), login))
    E = Event.__table__.c
    last = session.execute(
        sa.select(E.new).where(E.field == "assignee", E.actor == SYSTEM_ACTOR, E.new.is_not(None))
        .order_by(E.id.desc()).limit(1)
    ).scalar()
    if last not in logins:
        return logins[0]
    return logins[(logins.index(last) + 1) % len(logins)]


# --------------------------------------------------------------------------- escalations


@dataclass(frozen=True)
class Firing:
    ticket_id: int
    escalation: str
    target: str
    due: datetime | None
    key: str
    notified: tuple[str, ...] = ()
    warning: str | None = None


def run_escalations(session: Session, settings: Settings, now: datetime | None = None,
                    *, dry_run: bool = False) -> list[Firing]:
    """Fire every due escalation once per ticket and target; with `dry_run`, only say what would fire."""
    config = load(settings)
    now = now or utcnow()
    ctx = QueryContext(now=now, me=None, dialect=session.get_bind().dialect.name)
    system = Actor.system()
    E, M = Event.__table__.c, Message.__table__.c
    # The target is the nearest pending due time (ties in the order of SLA_DUE_COLUMNS); a
    # next-response cycle is named by the agent reply it follows.  The once-only key is built
    # in SQL, so tickets that already fired are skipped by the index, not loaded.
    nearest = nearest_due()
    target = sa.case(*[(T[c] == nearest, sa.literal(c[:-4])) for c in SLA_DUE_COLUMNS], else_=sa.literal("ticket"))
    cycle = (sa.select(sa.func.max(M.id)).where(M.ticket_id == T.id, M.kind == "outbound", M.auto == sa.false())
             .scalar_subquery())
    suffix = sa.case((sa.and_(target == "next_response", cycle.is_not(None)),
                      sa.literal("@") + sa.cast(cycle, sa.String)), else_=sa.literal(""))
    fired: list[Firing] = []
    for esc in config.escalations:
        key = sa.literal(esc.name + ":") + target + suffix
        already = sa.exists(sa.select(1).where(E.ticket_id == T.id, E.field == "escalation", E.new == key))
        rows = session.execute(
            sa.select(T.id, *[T[c] for c in SLA_DUE_COLUMNS], target.label("target"), key.label("key"))
            .where(T.status.not_in(("solved", "closed")), T.merged_into_id.is_(None),
                   compile_query(parse_query(esc.match), ctx), ~already).order_by(T.id)
        ).all()
        new = [Firing(r.id, esc.name, r.target, getattr(r, f"{r.target}_due", None), r.key) for r in rows]
        if dry_run or not new:
            fired.extend(new)
            continue
        session.execute(Event.__table__.insert(), [  # one executemany: a backlog may fire thousands at once
            {"ticket_id": f.ticket_id, "actor": system.login, "at": now, "field": "escalation", "old": None,
             "new": f.key} for f in new])
        _apply(session, [f.ticket_id for f in new], esc.actions, system)
        for f in new:
            notified, warning = _notify(session, settings, esc, f, now) if esc.notify else ((), None)
            fired.append(Firing(f.ticket_id, f.escalation, f.target, f.due, f.key, notified, warning))
        session.flush()
    return fired


def _notify(session: Session, settings: Settings, esc: Escalation, firing: Firing, now: datetime):
    """An automatic notice through the outbox (part of the thread, addressed to the agent/team)."""
    from supportdesk.mail.outbox import queue_reply

    ticket = get_ticket(session, firing.ticket_id)
    recipients: list[str] = []
    for who in esc.notify:
        if who == "assignee":
            email = session.execute(sa.select(Agent.__table__.c.email).where(
                Agent.__table__.c.id == ticket.assignee_id)).scalar() if ticket.assignee_id else None
            if email:
                recipients.append(email)
        else:
            recipients.append(who)
    recipients = list(dict.fromkeys(recipients))
    if not recipients:
        return (), "no one to notify (no assignee, or the assignee has no email address)"
    if firing.due is None:
        reason = f"escalation {esc.name!r} matched"
    elif firing.due <= now:
        reason = f"{firing.target} target breached {_delta(now - firing.due)} ago (escalation {esc.name!r})"
    else:
        reason = f"{firing.target} target due in {_delta(firing.due - now)} (escalation {esc.name!r})"
    body = render_template(settings, "escalation.txt", ticket=_ticket_vars(session, ticket), reason=reason)
    try:
        queue_reply(session, settings, ticket, Actor.system(), body, auto=True, to=recipients, cc=[])
    except InvalidError as exc:
        return (), str(exc)
    return tuple(recipients), None


def _ticket_vars(session: Session, ticket: Ticket) -> dict:
    queue = session.get(Queue, ticket.queue_id)
    return {"id": ticket.id, "subject": ticket.subject, "status": ticket.status, "priority": ticket.priority,
            "queue": queue.name if queue else ""}


TEMPLATE_DEFAULTS = {
    "pending_reminder.txt": (
        "Hello{% if customer.name %} {{ customer.name }}{% endif %},\n\n"
        "we are still waiting for your answer on request #{{ ticket.id }}:\n\n    {{ ticket.subject }}\n\n"
        "Please reply to this message when you can. If we do not hear from you, we will consider the "
        "request solved in {{ solve_in_days }} days.\n"
    ),
}


def render_template(settings: Settings, name: str, **variables: Any) -> str:
    """The mail template `name`: the team's file in `<config dir>/templates/` if there is one, else
    the defaults of `mail.templates` and of this module (same sandbox, same rules)."""
    from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader, StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    from supportdesk.mail.templates import DEFAULTS, TemplateProblem

    config_dir = settings.file.parent if settings.file else None
    loaders = []
    if config_dir is not None and (config_dir / "templates").is_dir():
        loaders.append(FileSystemLoader(str(config_dir / "templates")))
    loaders.append(DictLoader({**TEMPLATE_DEFAULTS, **DEFAULTS}))
    env = SandboxedEnvironment(loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False,
                               keep_trailing_newline=True)
    try:
        return env.get_template(name).render(**variables)
    except TemplateError as exc:
        raise TemplateProblem(f"template {name}: {exc.message or exc}") from None


def _delta(delta) -> str:
    minutes = int(abs(delta.total_seconds()) // 60)
    if minutes >= 1440:
        return f"{minutes // 1440}d {minutes % 1440 // 60}h"
    if minutes >= 60:
        return f"{minutes // 60}h {minutes % 60}m"
    return f"{minutes}m"


# --------------------------------------------------------------------------- timed automations


def wake_snoozed(session: Session, now: datetime | None = None, *, dry_run: bool = False) -> list[int]:
    """Snoozed tickets whose time has come lose their snooze (recorded as a `system` event)."""
    now = now or utcnow()
    ids = list(session.execute(
        sa.select(T.id).where(T.snoozed_until.is_not(None), T.snoozed_until <= now).order_by(T.id)).scalars())
    if ids and not dry_run:
        bulk_update(session, ids, Changes(unsnooze=True), Actor.system())
    return ids


def record_breaches(session: Session, now: datetime | None = None) -> int:
    """Mark each running SLA target whose due time has passed as breached in `ticket_sla_targets`,
    once, with an event `sla.<target>` = `breached` by `system` at its due time.

    The before-commit hook records breaches on tickets that change; this is what records them on
    tickets nobody touches.  The literal `state = 'running'` lets SQLite use the partial index.
    """
    now = now or utcnow()
    R = TicketSlaTarget.__table__
    due = sa.and_(sa.text("ticket_sla_targets.state = 'running'"), R.c.due_at < sa.literal(now, R.c.due_at.type))
    rows = session.execute(sa.select(R.c.ticket_id, R.c.target, R.c.due_at).where(due)).all()
    if not rows:
        return 0
    session.execute(sa.update(R).where(due).values(state="breached", breached_at=R.c.due_at)
                    .execution_options(synchronize_session=False))
    session.execute(Event.__table__.insert(), [
        {"ticket_id": r.ticket_id, "actor": SYSTEM_ACTOR, "at": r.due_at, "field": f"sla.{r.target}", "old": None,
         "new": "breached"} for r in rows])
    return len(rows)


@dataclass(frozen=True)
class Timers:
    """Timed automations' settings in days (None = off); from the config's automation section."""

    pending_reminder_days: float | None = None
    pending_solve_days: float | None = None
    solved_close_days: float | None = None


def _pending_since():
    """When each pending ticket last entered `pending` (its last status event), else its last update."""
    E = Event.__table__.alias("entered").c  # aliased: it is nested in queries over events too
    entered = (sa.select(sa.func.max(E.at)).where(E.ticket_id == T.id, E.field == "status", E.new == "pending")
               .correlate(Ticket.__table__).scalar_subquery())
    return sa.func.coalesce(entered, T.updated_at)


def remind_pending(session: Session, settings: Settings, timers: Timers, now: datetime,
                   *, dry_run: bool = False) -> list[int]:
    """Email the customer once per pending spell after `pending_reminder_days` (automatic mail)."""
    from supportdesk.mail.outbox import queue_reply
    from supportdesk.models import Customer

    if timers.pending_reminder_days is None:
        return []
    E = Event.__table__.c
    since = _pending_since()
    cutoff = now - timedelta(days=timers.pending_reminder_days)
    reminded = sa.exists(sa.select(1).where(E.ticket_id == T.id, E.field == "automation",
                                            E.new == "pending_reminder", E.at >= since))
    ids = list(session.execute(sa.select(T.id).where(T.status == "pending", since <= cutoff, ~reminded)
                               .order_by(T.id)).scalars())
    if dry_run:
        return ids
    solve_in = timers.pending_solve_days - timers.pending_reminder_days if timers.pending_solve_days else None
    for ticket_id in ids:
        ticket = get_ticket(session, ticket_id)
        customer = session.get(Customer, ticket.requester_id)
        body = render_template(settings, "pending_reminder.txt", ticket=_ticket_vars(session, ticket),
                               customer={"email": customer.email, "name": customer.name},
                               solve_in_days=int(solve_in) if solve_in and solve_in > 0 else 0)
        record(session, ticket_id, Actor.system(), "automation", None, "pending_reminder", at=now)
        queue_reply(session, settings, ticket, Actor.system(), body, auto=True)
    return ids


def solve_pending(session: Session, timers: Timers, now: datetime, *, dry_run: bool = False) -> list[int]:
    """Pending tickets nobody answered for `pending_solve_days` become solved (set-based)."""
    if timers.pending_solve_days is None:
        return []
    cutoff = now - timedelta(days=timers.pending_solve_days)
    ids = list(session.execute(sa.select(T.id).where(T.status == "pending", _pending_since() <= cutoff)
                               .order_by(T.id)).scalars())
    if ids and not dry_run:
        bulk_update(session, ids, Changes(status="solved"), Actor.system())
    return ids


def close_solved(session: Session, timers: Timers, now: datetime, *, dry_run: bool = False) -> list[int]:
    """Solved tickets close after `solved_close_days` (set-based)."""
    if timers.solved_close_days is None:
        return []
    cutoff = now - timedelta(days=timers.solved_close_days)
    ids = list(session.execute(sa.select(T.id).where(T.status == "solved", T.solved_at.is_not(None),
                                                     T.solved_at <= cutoff).order_by(T.id)).scalars())
    if ids and not dry_run:
        bulk_update(session, ids, Changes(status="closed"), Actor.system())
    return ids


@dataclass
class CheckReport:
    woken: list[int] = field(default_factory=list)
    fired: list[Firing] = field(default_factory=list)
    breaches_recorded: int = 0
    reminded: list[int] = field(default_factory=list)
    solved: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


def run_timers(database, settings: Settings, now: datetime | None = None, *, dry_run: bool = False,
               timers: Timers | None = None) -> CheckReport:
    """One pass of the timed work (`sla check`, and the daemon every minute), in one transaction."""
    now = now or datetime.now(timezone.utc)
    timers = timers or Timers(**settings.automation)
    report = CheckReport()
    if dry_run:
        with database.read() as session:
            report.woken = wake_snoozed(session, now, dry_run=True)
            report.closed = close_solved(session, timers, now, dry_run=True)
            report.solved = solve_pending(session, timers, now, dry_run=True)
            report.reminded = remind_pending(session, settings, timers, now, dry_run=True)
            report.fired = run_escalations(session, settings, now, dry_run=True)
        return report
    with database.write() as session:
        from supportdesk.sla.policy import NOW_KEY

        session.info[NOW_KEY] = now
        report.woken = wake_snoozed(session, now)
        report.closed = close_solved(session, timers, now)
        report.solved = solve_pending(session, timers, now)
        report.reminded = remind_pending(session, settings, timers, now)
        report.breaches_recorded = record_breaches(session, now)
        report.fired = run_escalations(session, settings, now)
    return report
