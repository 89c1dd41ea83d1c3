"""SLA policies from the config, and keeping the tickets' due columns current.

`recompute` is the one writer of `sla_policy`, the three `*_due` columns and the
`ticket_sla_targets` rows (besides `automation.record_breaches`, which marks running
targets breached when their time passes).
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
from functools import cached_property
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from supportdesk.config import ConfigError, Settings, derived_from_settings
from supportdesk.models import STATUSES, SYSTEM_ACTOR, Ticket, TicketSlaTarget, utcnow
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
R = TicketSlaTarget.__table__.c
DUE_COLUMNS = tuple(f"{name}_due" for name in TARGETS)
ALWAYS_OPEN = {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
_IN_LIMIT = 500
NOW_KEY = "sla_now"  # session.info: the instant timed work runs "as of", so the hook computes states at it too
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
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, Policy]:
        """Asked once per ticket in a recompute of 100,000: a dict, not a scan of the rules."""
        found: dict[str, Policy] = {}
        for rule in self.rules:
            found.setdefault(rule.policy.name, rule.policy)
        return found


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
            recompute(session, settings, touched, session.info.get(NOW_KEY) or utcnow())

    database.before_commit["sla"] = hook


def recompute(session: Session, settings: Settings, ticket_ids: Iterable[int], now: datetime | None = None,
              *, workers: int = 1) -> int:
    """Write `sla_policy`, the due columns and the `ticket_sla_targets` rows of these tickets;
    returns how many tickets changed.

    Tickets that are solved or closed get their due columns cleared set-based; their target
    rows are computed once more when they still have a running or paused target (the solve
    meets the resolution target) or none at all (an import), never again after that.
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
    statuses = session.execute(sa.select(T.id, T.status).where(T.id.in_(scope))).all()
    open_ids = [tid for tid, status in statuses if status not in STOPPED_STATUSES]
    any_stopped = len(open_ids) < len(statuses)
    changed = _clear_finished(session, scope, now) if any_stopped else 0
    working = sa.and_(T.id.in_(scope), T.status.not_in(list(STOPPED_STATUSES)))
    if not config.rules:
        _delete_targets(session, open_ids)
        return changed + session.execute(
            sa.update(Ticket.__table__).where(T.id.in_(scope), _any_due_or_policy())
            .values(sla_policy=None, **{c: None for c in DUE_COLUMNS})
            .execution_options(synchronize_session=False)
        ).rowcount
    chosen = choose_policies(session, config, working, now)
    unmatched = [i for i in open_ids if i not in chosen]
    _delete_targets(session, unmatched)
    for start in range(0, len(unmatched), _CHUNK):
        chunk = unmatched[start:start + _CHUNK]
        changed += session.execute(
            sa.update(Ticket.__table__).where(T.id.in_(chunk), _any_due_or_policy())
            .values(sla_policy=None, **{c: None for c in DUE_COLUMNS})
            .execution_options(synchronize_session=False)
        ).rowcount
    finishing = _finishing(session, config, scope, now) if any_stopped else {}
    ordered = sorted(chosen)
    chunks = []
    for group, policies in ((ordered, chosen), (sorted(finishing), finishing)):
        for start in range(0, len(group), _CHUNK):
            chunk = group[start:start + _CHUNK]
            histories, current = load_histories(session, chunk)
            rows = load_target_rows(session, chunk)
            clocks = _indexes(config, histories.values(), now) if len(chunk) > 20 else {}
            chunks.append([(tid, config.policy(policies[tid]), histories[tid], current[tid], rows.get(tid, {}),
                            clocks, policies is chosen) for tid in chunk])
    dialect = session.get_bind().dialect.name
    if workers > 1 and len(ordered) >= PARALLEL_MIN:
        parts = _compute_parallel(chunks, now, workers, dialect)
    else:
        parts = [_compute_chunk(chunk, now, dialect) for chunk in chunks]
    updates = [u for part in parts for u in part[0]]
    if updates:
        _write(session, updates)
        _refresh_identity_map(session, {u["tid"]: u for u in updates})
    _write_targets(session, [op for part in parts for op in part[1]])
    return changed + len(updates)


PARALLEL_MIN = 20000
_JOBS: list = []  # the chunks, inherited by forked workers (copy-on-write, nothing pickled on the way in)


def _compute_chunk(chunk, now: datetime, dialect: str) -> tuple[list[dict], list[tuple]]:
    """(ticket column updates, target row changes) for one chunk.  A row change is (ticket id,
    target, cycle, the new row ready for the driver or None to delete it, the breach instant it
    newly records or None); rows are converted here so forked workers share that work too."""
    when = _db_time(dialect)
    updates, ops = [], []
    for tid, policy, history, current, old_rows, clocks, write_columns in chunk:
        result = compute(history, policy, now, clocks.get(policy.calendar.name), usage=False)
        if write_columns:
            row = {"p": policy.name, **result.columns}
            if current != row:
                updates.append({"tid": tid, **row})
        seen = set()
        for t in result.every():
            key = (t.name, t.cycle)
            seen.add(key)
            new = (policy.name, t.state, float(t.target_minutes), round(t.used_minutes, 4), t.started_at,
                   t.deadline, t.met_at, t.breached_at)
            old = old_rows.get(key)
            if old != new:
                newly = t.breached_at if t.breached_at is not None and (old is None or old[7] is None) else None
                ops.append((tid, t.name, t.cycle, (*new[:4], *(when(v) for v in new[4:])),
                            when(newly) if newly is not None else None))
        ops.extend((tid, name, cycle, None, None) for name, cycle in old_rows if (name, cycle) not in seen)
    return updates, ops


def _compute_job(job):
    index, now, dialect = job
    return _compute_chunk(_JOBS[index], now, dialect)


def _compute_parallel(chunks, now: datetime, workers: int, dialect: str) -> list[tuple[list, list]]:
    import multiprocessing

    global _JOBS
    _JOBS = chunks
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_compute_job, [(i, now, dialect) for i in range(len(chunks))], chunksize=1)
    finally:
        _JOBS = []


def _db_time(dialect: str):
    """Python datetime → what the driver stores: on SQLite SQLAlchemy's own text format for
    DateTime (naive UTC, microseconds), which skips per-row bind processing."""
    if dialect == "sqlite":
        def text(v):
            if v is None:
                return None
            if v.tzinfo is not timezone.utc:
                v = v.astimezone(timezone.utc)
            return v.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
        return text
    return lambda v: None if v is None else v.astimezone(timezone.utc).replace(tzinfo=None)


def _write(session: Session, updates: list[dict]) -> None:
    """One executemany; on SQLite straight to the driver."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        text = _db_time("sqlite")
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


_DELETE_TARGET = "DELETE FROM ticket_sla_targets WHERE ticket_id = ? AND target = ? AND cycle = ?"
_UPSERT_TARGET = (
    "INSERT INTO ticket_sla_targets (ticket_id, target, cycle, policy, state, target_minutes, business_minutes, "
    "started_at, due_at, met_at, breached_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (ticket_id, target, cycle) DO UPDATE SET policy = excluded.policy, state = excluded.state, "
    "target_minutes = excluded.target_minutes, business_minutes = excluded.business_minutes, "
    "started_at = excluded.started_at, due_at = excluded.due_at, met_at = excluded.met_at, "
    "breached_at = excluded.breached_at")
_INSERT_EVENT = "INSERT INTO events (ticket_id, actor, at, field, old, new) VALUES (?, ?, ?, ?, NULL, ?)"


def _executemany(conn, sql: str, params: list[tuple]) -> None:
    """`?` placeholders: straight to the driver on SQLite, as named parameters elsewhere."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(sql, params)
        return
    pieces = sql.split("?")
    named = "".join(piece + (f":p{i}" if i < len(pieces) - 1 else "") for i, piece in enumerate(pieces))
    conn.execute(sa.text(named), [{f"p{i}": v for i, v in enumerate(row)} for row in params])


def _write_targets(session: Session, ops: list[tuple]) -> None:
    """Apply target row changes (an upsert per changed row, a delete per vanished one) and record
    each newly breached target as an event `sla.<target>` = `breached` by `system` at the breach
    instant.  On SQLite through the driver's executemany: a first computation of 100,000
    tickets writes some 250,000 rows.
    """
    if not ops:
        return
    deletes = [(tid, name, cycle) for tid, name, cycle, new, _ in ops if new is None]
    upserts = [(tid, name, cycle, *new) for tid, name, cycle, new, _ in ops if new is not None]
    events = [(tid, SYSTEM_ACTOR, newly, f"sla.{name}", "breached") for tid, name, _, _, newly in ops
              if newly is not None]
    conn = session.connection()
    for sql, params in ((_DELETE_TARGET, deletes), (_UPSERT_TARGET, upserts), (_INSERT_EVENT, events)):
        if params:
            _executemany(conn, sql, params)


def _delete_targets(session: Session, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), _CHUNK):
        session.execute(sa.delete(TicketSlaTarget.__table__).where(R.ticket_id.in_(list(ids[start:start + _CHUNK])))
                        .execution_options(synchronize_session=False))


def _finishing(session: Session, config: SlaConfig, scope, now: datetime) -> dict[int, str]:
    """Solved/closed tickets whose target rows are not final yet → the policy to finish them with
    (the one they ran under, else the first that matches, e.g. for an imported solved ticket)."""
    unfinished = sa.exists(sa.select(1).where(R.ticket_id == T.id, R.state.in_(("running", "paused"))))
    none_yet = ~sa.exists(sa.select(1).where(R.ticket_id == T.id))
    where = sa.and_(T.id.in_(scope), T.status.in_(list(STOPPED_STATUSES)), sa.or_(unfinished, none_yet))
    found = dict(session.execute(sa.select(T.id, T.sla_policy).where(where)).all())
    if not found:
        return {}
    known = {tid: name for tid, name in found.items() if config.policy(name) is not None}
    rest = [tid for tid in found if tid not in known]
    if rest:
        known.update(choose_policies(session, config, T.id.in_(rest), now))
    return known


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


_ROWS_SQL = sa.text(
    "SELECT ticket_id, target, cycle, policy, state, target_minutes, business_minutes, started_at, due_at, met_at, "
    "breached_at FROM ticket_sla_targets WHERE ticket_id IN :ids"
).bindparams(sa.bindparam("ids", expanding=True))


def load_target_rows(session: Session, ids: Sequence[int]) -> dict[int, dict[tuple[str, int], tuple]]:
    """The recorded `ticket_sla_targets` rows: ticket id → (target, cycle) → (policy, state,
    target_minutes, business_minutes, started_at, due_at, met_at, breached_at), the tuple
    `_compute_chunk` builds, so unchanged rows compare equal."""
    out: dict[int, dict] = {}
    for tid, name, cycle, policy, state, minutes, used, started, due, met, breached in _runner(session)(
            _ROWS_SQL, {"ids": list(ids)}):
        out.setdefault(tid, {})[(name, cycle)] = (policy, state, float(minutes), float(used), _when(started),
                                                  _when(due), _when(met), _when(breached))
    return out


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
    """Each target's due time, state (running/paused/stopped/met/breached/none) and business
    minutes used, for `tickets show`.

    Read from the recorded `ticket_sla_targets` rows (see `recorded_targets`); the live clock
    only adds the business time a running target used since the rows were written.
    `recorded` lists every row, earlier next-response cycles included.  A ticket without rows
    (no hook ran yet) is computed on the fly.
    """
    now = now or datetime.now(timezone.utc)
    config = load(settings)
    rows = load_target_rows(session, [ticket_id]).get(ticket_id, {})
    policy_name = next(iter(rows.values()))[0] if rows else None
    if policy_name is None and config.rules:
        policy_name = choose_policies(session, config, T.id == ticket_id, now).get(ticket_id)
    if policy_name is None:
        return {"policy": None, "targets": {}, "recorded": []}
    policy = config.policy(policy_name)
    live = None
    if policy is not None:
        histories, _ = load_histories(session, [ticket_id])
        live = compute(histories[ticket_id], policy, now)
        if not rows:
            rows = {(t.name, t.cycle): (policy_name, t.state, float(t.target_minutes), t.used_minutes, t.started_at,
                                        t.deadline, t.met_at, t.breached_at) for t in live.every()}
    recorded = _as_dicts(rows, now, live)
    targets = {}
    for name in TARGETS:
        latest = [r for r in recorded if r["target"] == name]
        if latest:
            targets[name] = {k: v for k, v in latest[-1].items() if k != "target"}
        else:
            targets[name] = {"cycle": 0, "state": "none", "due": None,
                             "target_minutes": policy.target(name) if policy else None,
                             "used_minutes": 0.0, "started_at": None, "met_at": None, "breached_at": None}
    return {"policy": policy_name, "targets": targets, "recorded": recorded}


def recorded_targets(session: Session, ticket_id: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """The ticket's current targets as recorded (the latest next-response cycle), no config
    needed: for the console, which shows them next to the countdown."""
    now = now or datetime.now(timezone.utc)
    recorded = _as_dicts(load_target_rows(session, [ticket_id]).get(ticket_id, {}), now, None)
    latest = {r["target"]: r for r in recorded}
    return [latest[name] for name in TARGETS if name in latest]


def _as_dicts(rows: dict[tuple[str, int], tuple], now: datetime, live: Targets | None) -> list[dict[str, Any]]:
    """Recorded rows as `tickets show` objects, in target order; a running target whose due time
    has passed reads as breached even before `sla check` records it."""
    out = []
    for (name, cycle), (policy, state, minutes, used, started, due, met, breached) in sorted(
            rows.items(), key=lambda item: (TARGETS.index(item[0][0]), item[0][1])):
        if state == "running" and due is not None and due <= now:
            state, breached = "breached", due
        current = live.targets.get(name) if live is not None else None
        if met is None and current is not None and current.cycle == cycle:
            used = current.used_minutes  # still counting
        out.append({"target": name, "cycle": cycle, "state": state, "due": _iso(due), "target_minutes": minutes,
                    "used_minutes": round(used, 1), "started_at": _iso(started), "met_at": _iso(met),
                    "breached_at": _iso(breached)})
    return out


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None
