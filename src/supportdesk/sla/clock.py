"""SLA targets and due times from a ticket's history (SPEC §10).  Pure.

Input is what happened to one ticket — when it was created, its status
changes and its public messages, each with its instant — plus a policy and
its business calendar.  Output is, per target, the due time, whether it is
running, paused, met or breached, when it was met or breached, and how much
business time it used.

Clock semantics (the way RT and Zammad pause, see NOTES.md):

* the clock runs while the status is not in the policy's ``pause_on`` set and
  not ``solved``/``closed``; time spent paused is *added back* (the due time
  moves out by the paused business time), never reset;
* ``solved``/``closed`` stop every clock; a reopen resumes it where it stood;
* **first response** starts at creation and is met by the first public agent
  reply (an outbound message that is not automatic; notes never count);
* **next response** starts at each customer message that follows an agent
  reply and is met by the next agent reply;
* **resolution** starts at creation and is met when the ticket is solved
  (it runs again after a reopen, with the business time already used).

A *pending* due time (``Targets.columns``) is what the ticket table stores:
``None`` when the target is met, paused, stopped, or not part of the policy,
so ``sla:due<1h`` and ``sla:breached`` are plain SQL over those columns.
Due times do not depend on "now"; only the states and used minutes do.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from supportdesk.sla.calendar import (
    BusinessCalendar,
    add_business_minutes,
    business_minutes_between,
    open_spans,
)

TARGETS = ("first_response", "next_response", "resolution")
STOPPED_STATUSES = frozenset({"solved", "closed"})
DEFAULT_PAUSE_ON = frozenset({"pending", "on_hold"})
CUSTOMER_KINDS = frozenset({"inbound", "call", "chat", "social"})


@dataclass(frozen=True)
class Policy:
    """An SLA policy: targets in business minutes (None = no such target)."""

    name: str
    calendar: BusinessCalendar
    first_response: float | None = None
    next_response: float | None = None
    resolution: float | None = None
    pause_on: frozenset[str] = DEFAULT_PAUSE_ON

    def target(self, name: str) -> float | None:
        return getattr(self, name)


@dataclass(frozen=True)
class History:
    """What the clock needs to know about one ticket.

    ``statuses``: (instant, new status) in any order; ``messages``: (instant,
    kind, auto) for the thread (notes, system messages and automatic mail are
    ignored here so callers may pass everything).
    """

    created_at: datetime
    initial_status: str = "new"
    statuses: Sequence[tuple[datetime, str]] = ()
    messages: Sequence[tuple[datetime, str, bool]] = ()


@dataclass(slots=True)
class TargetState:
    name: str
    state: str  # running | paused | stopped | met | breached | none
    due: datetime | None = None  # the pending due time (None unless running or breached-and-running)
    started_at: datetime | None = None
    met_at: datetime | None = None
    breached_at: datetime | None = None
    used_minutes: float = 0.0
    target_minutes: float | None = None
    cycle: int = 0  # next response: 1 for the first cycle, 2 for the next…; 0 for the other targets
    deadline: datetime | None = None  # when the target was (or would have been) due, even when met or paused

    @property
    def pending_due(self) -> datetime | None:
        return self.due


@dataclass(slots=True)
class Targets:
    policy: str
    targets: dict[str, TargetState] = field(default_factory=dict)
    earlier_cycles: list[TargetState] = field(default_factory=list)  # next-response cycles before the current one

    def every(self) -> list[TargetState]:
        """Every tracked target, earlier next-response cycles included (what `ticket_sla_targets` records)."""
        out = [self.targets["first_response"], *self.earlier_cycles, self.targets["next_response"],
               self.targets["resolution"]]
        return [t for t in out if t.state != "none"]

    @property
    def columns(self) -> dict[str, datetime | None]:
        """The three ticket columns: ``first_response_due`` etc."""
        return {f"{name}_due": self.targets[name].due for name in TARGETS}


Span = tuple[datetime, "datetime | None"]  # a running interval; end None = still running

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


class BusinessTime:
    """Business-time arithmetic on one calendar, optionally indexed over a window.

    Unindexed, it calls the calendar functions.  `indexed(cal, start, end)`
    precomputes cumulative business microseconds at every opening in the
    window, so "minutes between" and "plus N minutes" become two bisections
    (exact integer microseconds, the same answers as the calendar's) — that is
    what makes recomputing 100,000 tickets take seconds.  Outside the window
    it falls back to the calendar.
    """

    def __init__(self, cal: BusinessCalendar):
        self.cal = cal
        self._lo = self._hi = None

    @classmethod
    def indexed(cls, cal: BusinessCalendar, start: datetime, end: datetime) -> "BusinessTime":
        self = cls(cal)
        starts, ends, before, after = [], [], [], []
        total = 0
        for a, b in open_spans(cal, start, end):
            sa_, sb = (a - _EPOCH) // _US, (b - _EPOCH) // _US
            starts.append(sa_)
            ends.append(sb)
            before.append(total)
            total += sb - sa_
            after.append(total)
        self._lo, self._hi = (start - _EPOCH) // _US, (end - _EPOCH) // _US
        self._starts, self._ends, self._before, self._after = starts, ends, before, after
        return self

    def _cum(self, x: int) -> int:
        i = bisect_right(self._starts, x) - 1
        if i < 0:
            return 0
        return self._before[i] + min(x, self._ends[i]) - self._starts[i]

    def between(self, a: datetime, b: datetime) -> float:
        """Business minutes in [a, b)."""
        if self._lo is None:
            return business_minutes_between(self.cal, a, b)
        x, y = (a - _EPOCH) // _US, (b - _EPOCH) // _US
        if x < self._lo or y > self._hi:
            return business_minutes_between(self.cal, a, b)
        if y <= x:
            return 0.0
        return (self._cum(y) - self._cum(x)) / 60e6

    def add(self, a: datetime, minutes: float) -> datetime:
        """The instant at which `minutes` business minutes have passed after `a`."""
        if self._lo is None or not minutes:
            return add_business_minutes(self.cal, a, minutes)
        x = (a - _EPOCH) // _US
        if x < self._lo:
            return add_business_minutes(self.cal, a, minutes)
        step = timedelta(minutes=minutes) // _US
        if not step:
            return a.astimezone(timezone.utc)
        target = self._cum(x) + step
        i = bisect_left(self._after, target)  # the first opening that reaches the target
        if i >= len(self._after):
            return add_business_minutes(self.cal, a, minutes)
        return _EPOCH + _US * (self._starts[i] + target - self._before[i])


def running_spans(history: History, pause_on: Iterable[str]) -> list[Span]:
    """The intervals in which the clock runs, in order; the last may be open-ended."""
    paused = frozenset(pause_on) | STOPPED_STATUSES
    changes = sorted(history.statuses, key=lambda item: item[0])
    spans: list[Span] = []
    status = history.initial_status
    run_from = history.created_at if status not in paused else None
    for at, new in changes:
        at = max(at, history.created_at)
        runs = new not in paused
        if run_from is not None and not runs:
            if at > run_from:
                spans.append((run_from, at))
            run_from = None
        elif run_from is None and runs:
            run_from = at
        status = new
    if run_from is not None:
        spans.append((run_from, None))
    return spans


def final_status(history: History) -> str:
    changes = sorted(history.statuses, key=lambda item: item[0])
    return changes[-1][1] if changes else history.initial_status


def _measure(cal: "BusinessTime", spans: Sequence[Span], begin: datetime, end: datetime | None,
             minutes: float, now: datetime | None) -> tuple[datetime | None, datetime | None, float]:
    """Walk the running spans clipped to [begin, end): (breach instant, pending due, used minutes).

    The breach instant is when used time reaches ``minutes`` (may be in the
    future when the last span is still running); the pending due is that
    instant when the clock is still running at the end of the window.
    """
    remaining = float(minutes)
    used = 0.0
    breach: datetime | None = None
    due: datetime | None = None
    for start, stop in spans:
        if stop is not None and stop <= begin:
            continue
        a = max(start, begin)
        b = stop
        if end is not None and (b is None or b > end):
            b = end
        if b is not None and b <= a:
            continue
        if b is None:
            # Open-ended: still running now.
            if breach is None:
                due = cal.add(a, max(remaining, 0.0))
                breach = due
            else:
                due = breach
            if now is not None and now > a:
                used += cal.between(a, now)
            break
        length = cal.between(a, b)
        if breach is None and length >= remaining:
            breach = cal.add(a, remaining)
        remaining -= length
        used += length
    return breach, due, used


def compute(history: History, policy: Policy, now: datetime, clock: BusinessTime | None = None,
            *, usage: bool = True) -> Targets:
    """Every target's state for one ticket at ``now``; ``clock`` (an indexed `BusinessTime`
    on the policy's calendar) speeds up bulk work; ``usage=False`` skips the business time
    used so far (the due columns do not need it)."""
    cal = clock if clock is not None else BusinessTime(policy.calendar)
    spans = running_spans(history, policy.pause_on)
    current = final_status(history)
    stopped = current in STOPPED_STATUSES
    public = sorted(
        ((at, "customer" if kind in CUSTOMER_KINDS else "agent") for at, kind, auto in history.messages
         if kind in CUSTOMER_KINDS or (kind == "outbound" and not auto)),
        key=lambda item: item[0],
    )
    # When the ticket last went from working to solved/closed (resolution's met instant).
    solved_at = None
    if stopped:
        previous = history.initial_status
        for at, new in sorted(history.statuses, key=lambda item: item[0]):
            if new in STOPPED_STATUSES and previous not in STOPPED_STATUSES:
                solved_at = max(at, history.created_at)
            previous = new
        solved_at = solved_at or history.created_at

    results: dict[str, TargetState] = {}

    def measure(name: str, begin: datetime | None, met: datetime | None, cycle: int = 0) -> TargetState:
        minutes = policy.target(name)
        if minutes is None or begin is None:
            return TargetState(name, "none", target_minutes=minutes, cycle=cycle)
        breach, due, used = _measure(cal, spans, begin, met, minutes, now if usage else None)
        breached_at = breach if breach is not None and (met is None or breach < met) and breach <= now else None
        if met is not None:
            state = "breached" if breached_at else "met"
            deadline = breach if breach is not None else cal.add(met, max(minutes - used, 0.0))
            return TargetState(name, state, None, begin, met, breached_at, used, minutes, cycle, deadline)
        if due is not None:
            state = "breached" if due <= now else "running"
            return TargetState(name, state, due, begin, None, due if due <= now else None, used, minutes, cycle, due)
        state = "breached" if breached_at else ("stopped" if stopped else "paused")
        return TargetState(name, state, None, begin, None, breached_at, used, minutes, cycle, breach)

    # first response: from creation to the first agent reply
    first_agent = next((at for at, who in public if who == "agent"), None)
    results["first_response"] = measure("first_response", history.created_at, first_agent)

    # next response: each customer message that follows an agent reply opens a cycle (unless one
    # is open), the next agent reply meets it
    cycles: list[list] = []
    seen_agent = False
    for at, who in public:
        if who == "agent":
            if cycles and cycles[-1][1] is None:
                cycles[-1][1] = at
            seen_agent = True
        elif seen_agent and (not cycles or cycles[-1][1] is not None):
            cycles.append([at, None])
    earlier = []
    if policy.next_response is not None:
        earlier = [measure("next_response", b, m, n) for n, (b, m) in enumerate(cycles[:-1], 1)]
    if cycles:
        results["next_response"] = measure("next_response", cycles[-1][0], cycles[-1][1], len(cycles))
    else:
        results["next_response"] = measure("next_response", None, None)

    # resolution: from creation until solved (reopen resumes it)
    results["resolution"] = measure("resolution", history.created_at, solved_at if stopped else None)
    return Targets(policy.name, results, earlier)

