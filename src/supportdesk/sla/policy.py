"""SLA policies from the config, and keeping the tickets' due columns current.

`recompute` is the one writer of `sla_policy` and the three `*_due` columns.
It runs inside every write transaction (a `Database.before_commit` hook, see
`install`) on the tickets the services touched, so a reply, a status or
priority change, a merge or an import updates the due times in the same
commit without the services knowing about SLAs.  Work is set-based: policies
are chosen with one SQL query per policy, histories are loaded with one query
per table, and tickets that are solved or closed are cleared with one UPDATE
(bulk-closing 100,000 tickets never runs the clock).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from supportdesk.config import ConfigError, Settings, derived_from_settings
from supportdesk.models import STATUSES, Ticket, utcnow
from supportdesk.query import QueryContext, QueryError, compile_query, parse_query
from supportdesk.sla.calendar import BusinessCalendar, CalendarError, build_calendar
from supportdesk.sla.clock import (
    CUSTOMER_KINDS,
    DEFAULT_PAUSE_ON,
    STOPPED_STATUSES,
    TARGETS,
    BusinessTime,
    History,
    Policy,
    Targets,
    compute,
)

T = Ticket.__table__.c
DUE_COLUMNS = tuple(f"{name}_due" for name in TARGETS)
ALWAYS_OPEN = {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
_IN_LIMIT = 500
_CHUNK = 5000
_SLA_KEYS = {"name", "match", "calendar", "first_response", "next_response", "resolution", "pause_on"}


@dataclass(frozen=True)
class PolicyRule:
    policy: Policy
    match: str | None  # None: matches every ticket (a default)


@dataclass
class SlaConfig:
    calendars: dict[str, BusinessCalendar] = field(default_factory=dict)
    rules: list[PolicyRule] = field(default_factory=list)

    def policy(self, name: str | None) -> Policy | None:
        return next((r.policy for r in self.rules if r.policy.name == name), None)


@derived_from_settings
def load(settings: Settings) -> SlaConfig:
    """Calendars and policies, validated; errors name the file and `calendar[i].key` / `sla[i].key`.

    Cached per Settings object, because the hook runs on every commit.
    """
    return _load(settings)


def _load(settings: Settings) -> SlaConfig:
    file = settings.file
    config = SlaConfig()
    for i, spec in enumerate(settings.calendars):
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(file, f"calendar[{i}].name", "is required (policies refer to calendars by name)")
        if name in config.calendars:
            raise ConfigError(file, f"calendar[{i}].name", f"calendar name {name!r} is used twice")
        try:
            config.calendars[name] = build_calendar(name, spec)
        except CalendarError as exc:
            raise ConfigError(file, f"calendar[{i}].{exc.key}", exc.message) from None
    names: set[str] = set()
    for i, spec in enumerate(settings.slas):
        key = f"sla[{i}]"
        for k in spec:
            if k not in _SLA_KEYS:
                raise ConfigError(file, f"{key}.{k}", f"unknown key (expected one of: {', '.join(sorted(_SLA_KEYS))})")
        name = spec.get("name", f"sla{i + 1}")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(file, f"{key}.name", f"must be a non-empty string, got {name!r}")
        if name in names:
            raise ConfigError(file, f"{key}.name", f"policy name {name!r} is used twice")
        names.add(name)
        cal_name = spec.get("calendar")
        if cal_name is None:
            calendar = build_calendar("always", ALWAYS_OPEN)
        elif cal_name not in config.calendars:
            known = ", ".join(config.calendars) or "none configured"
            raise ConfigError(file, f"{key}.calendar", f"no [[calendar]] named {cal_name!r} (known: {known})")
        else:
            calendar = config.calendars[cal_name]
        targets: dict[str, float | None] = {}
        for target in TARGETS:
            value = spec.get(target)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0):
                raise ConfigError(file, f"{key}.{target}", f"must be a non-negative number of business minutes, got {value!r}")
            targets[target] = value
        if all(v is None for v in targets.values()):
            raise ConfigError(file, key, "sets no target; expected first_response, next_response and/or resolution")
        pause_on = spec.get("pause_on", sorted(DEFAULT_PAUSE_ON))
        if not isinstance(pause_on, list) or not all(isinstance(s, str) for s in pause_on):
            raise ConfigError(file, f"{key}.pause_on", f"must be a list of statuses, got {pause_on!r}")
        for s in pause_on:
            if s not in STATUSES:
                raise ConfigError(file, f"{key}.pause_on", f"unknown status {s!r} (expected {', '.join(STATUSES)})")
        match = spec.get("match")
        if match is not None:
            if not isinstance(match, str):
                raise ConfigError(file, f"{key}.match", f"must be a query string, got {match!r}")
            _check_match(file, f"{key}.match", match)
            match = match if match.strip() else None
        config.rules.append(PolicyRule(Policy(name, calendar, pause_on=frozenset(pause_on), **targets), match))
    return config


def _check_match(file, key: str, match: str) -> None:
    """A match query must compile without a current agent (`assignee:me` has no meaning here)."""
    try:
        compile_query(parse_query(match), QueryContext(me=None))
    except QueryError as exc:
        raise ConfigError(file, key, str(exc)) from None


# --------------------------------------------------------------------------- recomputation


def install(database, settings: Settings) -> None:
    """Keep due times current in every write transaction of `database`; calling it again
    (a reloaded config) replaces the previous hook."""
    config = load(settings)  # a bad config fails now, not inside someone's commit
    from supportdesk.automation import load as load_automation

    load_automation(settings)  # rules and escalations too: intake must not trip over them later

    def hook(session: Session, touched: set[int]) -> None:
        if config.rules:  # without policies there is nothing to keep current (`sla recompute` clears)
            recompute(session, settings, touched, utcnow())

    database.before_commit["sla"] = hook


def recompute(session: Session, settings: Settings, ticket_ids: Iterable[int], now: datetime | None = None,
              *, workers: int = 1) -> int:
    """Write `sla_policy` and the due columns of these tickets; returns how many rows changed.

    `workers > 1` runs the clock in that many forked processes when there are at least
    PARALLEL_MIN tickets — for `sla recompute` in its own process only: forking a process
    with other threads (console, daemon) is not safe.
    """
    config = load(settings)
    now = now or datetime.now(timezone.utc)
    ids = sorted({int(i) for i in ticket_ids})
    if not ids:
        return 0
    scope = _scope(session, ids)
    changed = _clear_finished(session, scope, now)
    if not config.rules:
        return changed + session.execute(
            sa.update(Ticket.__table__).where(T.id.in_(scope), _any_due_or_policy())
            .values(sla_policy=None, **{c: None for c in DUE_COLUMNS})
            .execution_options(synchronize_session=False)
        ).rowcount
    working = sa.and_(T.id.in_(scope), T.status.not_in(list(STOPPED_STATUSES)))
    chosen = choose_policies(session, config, working, now)
    unmatched = [i for i in session.execute(sa.select(T.id).where(working)).scalars() if i not in chosen]
    for start in range(0, len(unmatched), _CHUNK):
        chunk = unmatched[start:start + _CHUNK]
        changed += session.execute(
            sa.update(Ticket.__table__).where(T.id.in_(chunk), _any_due_or_policy())
            .values(sla_policy=None, **{c: None for c in DUE_COLUMNS})
            .execution_options(synchronize_session=False)
        ).rowcount
    ordered = sorted(chosen)
    chunks = []
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start:start + _CHUNK]
        histories, current = load_histories(session, chunk)
        clocks = _indexes(config, histories.values(), now) if len(chunk) > 20 else {}
        chunks.append([(tid, config.policy(chosen[tid]), histories[tid], current[tid], clocks) for tid in chunk])
    if workers > 1 and len(ordered) >= PARALLEL_MIN:
        updates = _compute_parallel(chunks, now, workers)
    else:
        updates = [u for chunk in chunks for u in _compute_chunk(chunk, now)]
    if updates:
        _write(session, updates)
        _refresh_identity_map(session, {u["tid"]: u for u in updates})
    return changed + len(updates)


PARALLEL_MIN = 20000
_JOBS: list = []  # the chunks, inherited by forked workers (copy-on-write, nothing pickled on the way in)


def _compute_chunk(chunk, now: datetime) -> list[dict]:
    updates = []
    for tid, policy, history, current, clocks in chunk:
        result = compute(history, policy, now, clocks.get(policy.calendar.name), usage=False)
        row = {"p": policy.name, **result.columns}
        if current != row:
            updates.append({"tid": tid, **row})
    return updates


def _compute_job(index_and_now):
    index, now = index_and_now
    return _compute_chunk(_JOBS[index], now)


def _compute_parallel(chunks, now: datetime, workers: int) -> list[dict]:
    import multiprocessing

    global _JOBS
    _JOBS = chunks
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_compute_job, [(i, now) for i in range(len(chunks))], chunksize=1)
    finally:
        _JOBS = []
    return [u for part in parts for u in part]


def _write(session: Session, updates: list[dict]) -> None:
    """One executemany; on SQLite straight to the driver in SQLAlchemy's own text format for
    DateTime (naive UTC, microseconds), which skips per-row bind processing."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        def text(v):
            return None if v is None else v.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")

        conn.exec_driver_sql(
            "UPDATE tickets SET sla_policy = ?, first_response_due = ?, next_response_due = ?, resolution_due = ? "
            "WHERE id = ?",
            [(u["p"], text(u["first_response_due"]), text(u["next_response_due"]), text(u["resolution_due"]), u["tid"])
             for u in updates],
        )
        return
    stmt = (sa.update(Ticket.__table__).where(T.id == sa.bindparam("tid"))
            .values(sla_policy=sa.bindparam("p"), **{c: sa.bindparam(c, type_=T[c].type) for c in DUE_COLUMNS})
            .execution_options(synchronize_session=False))
    conn.execute(stmt, updates)


def _indexes(config: SlaConfig, histories: Iterable[History], now: datetime) -> dict[str, BusinessTime]:
    """One business-time index per calendar over the chunk's window (plus room for the due times)."""
    histories = list(histories)
    if not histories:
        return {}
    start = min(h.created_at for h in histories) - timedelta(days=2)
    latest = max([now] + [h.statuses[-1][0] for h in histories if h.statuses]
                 + [m[0] for h in histories for m in h.messages[-1:]])
    end = latest + timedelta(days=120)
    calendars = {rule.policy.calendar.name: rule.policy.calendar for rule in config.rules}
    return {name: BusinessTime.indexed(cal, start, end) for name, cal in calendars.items()}


def _any_due_or_policy():
    return sa.or_(T.sla_policy.is_not(None), *[T[c].is_not(None) for c in DUE_COLUMNS])


def _scope(session: Session, ids: Sequence[int]):
    """The ids as something SQL can join: a list when short, a temp table when long."""
    if len(ids) <= _IN_LIMIT:
        return ids
    session.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS sla_ids (id INTEGER PRIMARY KEY)"))
    session.execute(sa.text("DELETE FROM sla_ids"))
    conn = session.connection()
    if conn.dialect.name == "sqlite":  # the driver's executemany: 100,000 ids in ~50 ms, not ~1 s
        conn.connection.driver_connection.executemany("INSERT INTO sla_ids (id) VALUES (?)", [(i,) for i in ids])
    else:
        conn.execute(sa.text("INSERT INTO sla_ids (id) VALUES (:id)"), [{"id": i} for i in ids])
    return sa.select(sa.column("id")).select_from(sa.table("sla_ids"))


def _clear_finished(session: Session, scope, now: datetime) -> int:
    """Solved/closed tickets have no pending target.

    One UPDATE per column, touching only rows where that column is set, so SQLite maintains
    one due index per row instead of three; `coalesce(status)` keeps the planner on the id
    list instead of scanning every closed ticket by the status index.  (When a target was met
    is not stored: `ticket_sla` derives it from the status events.)
    """
    changed = 0
    stopped = sa.func.coalesce(T.status, "").in_(list(STOPPED_STATUSES))
    for c in DUE_COLUMNS:
        changed += session.execute(
            sa.update(Ticket.__table__).where(T.id.in_(scope), T[c].is_not(None), stopped).values({c: None})
            .execution_options(synchronize_session=False)
        ).rowcount
    return changed


def choose_policies(session: Session, config: SlaConfig, where, now: datetime) -> dict[int, str]:
    """ticket id → policy name for the tickets selected by `where`: first match wins, in SQL."""
    ctx = QueryContext(now=now, me=None, dialect=session.get_bind().dialect.name)
    chosen: dict[int, str] = {}
    for rule in config.rules:
        stmt = sa.select(T.id).where(where)
        if rule.match is not None:
            stmt = stmt.where(compile_query(parse_query(rule.match), ctx))
        for ticket_id in session.execute(stmt).scalars():
            chosen.setdefault(ticket_id, rule.policy.name)
        if rule.match is None:
            break  # a default: nothing after it can win
    return chosen


def _when(value) -> datetime | None:
    """Driver value → aware UTC (SQLite gives text, PostgreSQL naive datetimes); skipping the ORM's
    type processing halves the load time of 100,000 histories."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value + "+00:00")
    return value.replace(tzinfo=timezone.utc)


_TICKETS_SQL = sa.text(
    "SELECT id, created_at, updated_at, solved_at, closed_at, status, sla_policy, first_response_due, "
    "next_response_due, resolution_due FROM tickets WHERE id IN :ids"
).bindparams(sa.bindparam("ids", expanding=True))
_STATUS_SQL = sa.text(
    "SELECT ticket_id, at, old, new FROM events WHERE field = 'status' AND ticket_id IN :ids ORDER BY ticket_id, at, id"
).bindparams(sa.bindparam("ids", expanding=True))
_MESSAGES_SQL = sa.text(
    "SELECT ticket_id, created_at, kind, auto FROM messages WHERE ticket_id IN :ids AND kind IN :kinds"
).bindparams(sa.bindparam("ids", expanding=True), sa.bindparam("kinds", expanding=True))


def _runner(session: Session):
    """Run a text query and return all rows; on SQLite through the raw driver cursor (same
    connection and transaction), which is several times faster than fetching via Core."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return lambda stmt, params: conn.execute(stmt, params).all()
    raw = conn.connection.driver_connection

    def run(stmt, params):
        sql, args = stmt.text, []
        for name, values in params.items():
            sql = sql.replace(f":{name}", "(" + ",".join("?" * len(values)) + ")")
        # parameters appear in the SQL in the order the dict lists them
        for name in sorted(params, key=lambda n: stmt.text.index(f":{n}")):
            args.extend(params[name])
        return raw.execute(sql, args).fetchall()

    return run


def load_histories(session: Session, ids: Sequence[int]) -> tuple[dict[int, History], dict[int, dict]]:
    """Histories of these tickets (three queries) and their current SLA columns."""
    ids = list(ids)
    run = _runner(session)
    statuses: dict[int, list] = {i: [] for i in ids}
    first_old: dict[int, str] = {}
    for ticket_id, at, old, new in run(_STATUS_SQL, {"ids": ids}):
        if ticket_id not in first_old and old:
            first_old[ticket_id] = old
        statuses[ticket_id].append((_when(at), new))
    messages: dict[int, list] = {i: [] for i in ids}
    kinds = sorted(CUSTOMER_KINDS | {"outbound"})
    for ticket_id, at, kind, auto in run(_MESSAGES_SQL, {"ids": ids, "kinds": kinds}):
        messages[ticket_id].append((_when(at), kind, bool(auto)))
    histories: dict[int, History] = {}
    current: dict[int, dict] = {}
    for (tid, created, updated, solved, closed, status, policy_name, fr, nr, res) in run(_TICKETS_SQL, {"ids": ids}):
        created = _when(created)
        changes = statuses[tid]
        initial = first_old.get(tid, "new") if changes else "new"
        last = changes[-1][1] if changes else initial
        if last != status:
            # History without (all) status events, e.g. an imported ticket: it reached its
            # current status when it was solved/closed, else at its last update.
            when = _when({"closed": closed, "solved": solved}.get(status) or updated)
            changes = changes + [(max(when, changes[-1][0]) if changes else when, status)]
        msgs = messages[tid]
        msgs.sort(key=lambda m: m[0])
        histories[tid] = History(created, initial, changes, msgs)
        current[tid] = {"p": policy_name, "first_response_due": _when(fr), "next_response_due": _when(nr),
                        "resolution_due": _when(res)}
    return histories, current


def _refresh_identity_map(session: Session, updates: dict[int, dict]) -> None:
    """Loaded Ticket objects show the new values (callers often print the ticket they just changed)."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Ticket) and obj.id in updates:
            u = updates[obj.id]
            set_committed_value(obj, "sla_policy", u["p"])
            for c in DUE_COLUMNS:
                set_committed_value(obj, c, u[c])


# --------------------------------------------------------------------------- reading


def ticket_sla(session: Session, settings: Settings, ticket_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Each target's due time, state (running/paused/met/breached/stopped/none) and business
    minutes used, for `tickets show` and the console."""
    now = now or datetime.now(timezone.utc)
    config = load(settings)
    chosen = choose_policies(session, config, T.id == ticket_id, now) if config.rules else {}
    name = chosen.get(ticket_id)
    if name is None:
        return {"policy": None, "targets": {}}
    histories, _ = load_histories(session, [ticket_id])
    result: Targets = compute(histories[ticket_id], config.policy(name), now)
    return {"policy": name, "targets": {
        t.name: {
            "state": t.state, "due": _iso(t.due), "target_minutes": t.target_minutes,
            "used_minutes": round(t.used_minutes, 1), "started_at": _iso(t.started_at),
            "met_at": _iso(t.met_at), "breached_at": _iso(t.breached_at),
        } for t in result.targets.values()
    }}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None
