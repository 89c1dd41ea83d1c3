"""The SLA clock: pause/resume through statuses, first and next response, resolution."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from supportdesk.sla.calendar import build_calendar, business_minutes_between
from supportdesk.sla.clock import History, Policy, compute, running_spans

UTC = timezone.utc
OFFICE = build_calendar("office", {"timezone": "UTC", "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}})
ALWAYS = build_calendar("always", {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in
                                                                ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
MON = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday


def policy(cal=OFFICE, first=60, nxt=120, resolution=480, pause_on=("pending", "on_hold")):
    return Policy("p", cal, first, nxt, resolution, frozenset(pause_on))


def at(minutes: float) -> datetime:
    return MON + timedelta(minutes=minutes)


def test_fresh_ticket_runs_all_from_creation():
    t = compute(History(MON, messages=[(MON, "inbound", False)]), policy(), now=at(10))
    fr, nr, res = t.targets["first_response"], t.targets["next_response"], t.targets["resolution"]
    assert (fr.state, fr.due) == ("running", at(60))
    assert (nr.state, nr.due) == ("none", None)
    assert res.due == at(480)
    assert fr.used_minutes == 10
    assert t.columns == {"first_response_due": at(60), "next_response_due": None, "resolution_due": at(480)}


def test_friday_afternoon_ticket_is_due_monday():
    friday = datetime(2026, 11, 20, 16, 50, tzinfo=UTC)
    t = compute(History(friday), policy(first=30), now=friday)
    assert t.targets["first_response"].due == datetime(2026, 11, 23, 9, 20, tzinfo=UTC)


def test_first_response_met_by_public_reply_not_note_or_autoreply():
    history = History(MON, messages=[(MON, "inbound", False), (at(1), "outbound", True), (at(5), "note", False),
                                     (at(30), "outbound", False)])
    fr = compute(history, policy(), now=at(100)).targets["first_response"]
    assert (fr.state, fr.met_at, fr.due, fr.used_minutes) == ("met", at(30), None, 30)


def test_first_response_late_is_breached_and_recorded():
    history = History(MON, messages=[(MON, "inbound", False), (at(90), "outbound", False)])
    fr = compute(history, policy(), now=at(100)).targets["first_response"]
    assert (fr.state, fr.breached_at, fr.met_at) == ("breached", at(60), at(90))
    running = compute(History(MON), policy(), now=at(61)).targets["first_response"]
    assert (running.state, running.due, running.breached_at) == ("breached", at(60), at(60))


def test_pause_adds_time_back_and_resume_continues():
    history = History(MON, statuses=[(at(20), "pending"), (at(80), "open")])
    paused = compute(History(MON, statuses=[(at(20), "pending")]), policy(), now=at(50))
    assert paused.targets["first_response"].state == "paused"
    assert paused.columns == {"first_response_due": None, "next_response_due": None, "resolution_due": None}
    resumed = compute(history, policy(), now=at(90))
    assert resumed.targets["first_response"].due == at(120)  # 60 + 60 paused
    assert resumed.targets["resolution"].due == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # over the night
    assert resumed.targets["first_response"].used_minutes == 30


def test_pause_on_is_per_policy():
    history = History(MON, statuses=[(at(20), "on_hold")])
    t = compute(history, policy(pause_on=("pending",)), now=at(30))
    assert t.targets["first_response"].due == at(60)


def test_solved_stops_and_reopen_resumes_resolution():
    solved = History(MON, statuses=[(at(100), "solved")], messages=[(at(10), "outbound", False)])
    t = compute(solved, policy(), now=at(200))
    assert t.targets["resolution"].state == "met"
    assert t.targets["resolution"].met_at == at(100)
    assert all(v is None for v in t.columns.values())
    reopened = History(MON, statuses=[(at(100), "solved"), (at(200), "open")],
                       messages=[(at(10), "outbound", False), (at(200), "inbound", False)])
    t = compute(reopened, policy(), now=at(210))
    # 100 used before solving: 280 more until 17:00, the last 100 on Tuesday morning
    assert t.targets["resolution"].due == datetime(2026, 11, 24, 10, 40, tzinfo=UTC)
    assert t.targets["next_response"].due == at(200 + 120)


def test_next_response_cycles():
    messages = [(MON, "inbound", False), (at(10), "outbound", False), (at(20), "inbound", False),
                (at(25), "inbound", False)]
    t = compute(History(MON, messages=messages), policy(), now=at(30))
    nr = t.targets["next_response"]
    assert (nr.state, nr.started_at, nr.due) == ("running", at(20), at(140))  # the first follow-up starts it
    answered = messages + [(at(40), "outbound", False), (at(45), "outbound", False)]
    nr = compute(History(MON, messages=answered), policy(), now=at(50)).targets["next_response"]
    assert (nr.state, nr.met_at, nr.due) == ("met", at(40), None)
    again = answered + [(at(60), "chat", False)]
    nr = compute(History(MON, messages=again), policy(), now=at(61)).targets["next_response"]
    assert (nr.started_at, nr.due) == (at(60), at(180))


def test_missing_targets_are_none():
    t = compute(History(MON), policy(first=None, nxt=None), now=at(1))
    assert t.targets["first_response"].state == "none"
    assert t.columns["first_response_due"] is None and t.columns["resolution_due"] == at(480)


# --- properties --------------------------------------------------------------------------

status_strategy = st.sampled_from(["open", "pending", "on_hold", "open", "new", "solved"])
changes_strategy = st.lists(st.tuples(st.integers(0, 20000), status_strategy), max_size=8)


@settings(max_examples=150, deadline=None)
@given(changes=changes_strategy, target=st.integers(0, 5000))
def test_always_open_calendar_matches_wall_clock_arithmetic(changes, target):
    """With a 24/7 calendar, a running due time is creation + target + paused minutes before it."""
    statuses = [(at(m), s) for m, s in changes]
    history = History(MON, statuses=statuses)
    t = compute(history, policy(cal=ALWAYS, resolution=target), now=at(30000))
    spans = running_spans(history, ("pending", "on_hold"))
    res = t.targets["resolution"]
    if res.due is not None:
        # Walk minute sums of running spans by hand.
        left, due = float(target), None
        for a, b in spans:
            length = ((b or at(10**7)) - a) / timedelta(minutes=1)
            if length >= left:
                due = a + timedelta(minutes=left)
                break
            left -= length
        assert res.due == due


@settings(max_examples=100, deadline=None)
@given(changes=changes_strategy, target=st.integers(1, 3000), start=st.integers(0, 7 * 1440))
def test_running_due_uses_exactly_the_target_in_business_time(changes, target, start):
    """Business minutes inside running spans from creation to the due time equal the target."""
    created = MON + timedelta(minutes=start)
    history = History(created, statuses=[(created + timedelta(minutes=m), s) for m, s in changes])
    res = compute(history, policy(resolution=target), now=created).targets["resolution"]
    if res.due is None:
        return
    used = sum(business_minutes_between(OFFICE, a, min(b or res.due, res.due))
               for a, b in running_spans(history, ("pending", "on_hold")) if a < res.due)
    assert abs(used - target) < 1e-6


@settings(max_examples=100, deadline=None)
@given(changes=changes_strategy, pause_at=st.integers(0, 20000), pause_len=st.integers(1, 5000))
def test_a_pause_never_brings_a_due_time_earlier(changes, pause_at, pause_len):
    base = sorted((at(m), s) for m, s in changes)
    if any(s == "solved" for _, s in base):
        return
    last = base[-1][0] if base else MON
    start = max(last, at(pause_at))
    paused = base + [(start, "pending"), (start + timedelta(minutes=pause_len), "open")]
    before = compute(History(MON, statuses=base + [(start, "open")]), policy(), now=MON).targets["resolution"].due
    after = compute(History(MON, statuses=paused), policy(), now=MON).targets["resolution"].due
    if before is not None and after is not None:
        assert after >= before


BERLIN = build_calendar("berlin", {"timezone": "Europe/Berlin", "holidays": ["2026-03-30"],
                                   "hours": {"mon": ["09:00-12:00", "13:00-17:30"], "tue": ["22:00-06:00"],
                                             "fri": ["00:30-03:00"], "sun": ["01:00-04:00"]}})


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 60 * 24 * 40), length=st.integers(0, 60 * 24 * 30), minutes=st.floats(0, 5000))
def test_indexed_business_time_agrees_with_the_calendar(a, length, minutes):
    """The bulk index gives exactly the calendar's answers (DST weeks in March/October included)."""
    from supportdesk.sla.calendar import add_business_minutes
    from supportdesk.sla.clock import BusinessTime

    window_start = datetime(2026, 3, 10, tzinfo=UTC)
    index = BusinessTime.indexed(BERLIN, window_start, window_start + timedelta(days=50))
    for offset_days in (0, 205):  # spring forward, fall back
        start = window_start + timedelta(days=offset_days, minutes=a)
        if offset_days:
            index = BusinessTime.indexed(BERLIN, window_start + timedelta(days=offset_days),
                                         window_start + timedelta(days=offset_days + 50))
        end = start + timedelta(minutes=length)
        assert index.between(start, end) == business_minutes_between(BERLIN, start, end)
        assert index.add(start, minutes) == add_business_minutes(BERLIN, start, minutes)


BERLIN_9_TO_5 = {"timezone": "Europe/Berlin", "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}}


def _berlin(*args) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo("Europe/Berlin"))


def test_friday_ticket_over_a_public_holiday_monday_is_due_tuesday():
    """The issue's fixed cases in local time: Friday 16:50 + 30 business minutes is Monday 09:20,
    and Tuesday 09:20 when that Monday is a holiday — from the `holidays` package (Whit Monday
    2026 in Germany) or listed explicitly."""
    plain = build_calendar("plain", BERLIN_9_TO_5)
    package = build_calendar("de", {**BERLIN_9_TO_5, "holidays_country": "DE"})
    explicit = build_calendar("explicit", {**BERLIN_9_TO_5, "holidays": ["2026-05-25"]})
    friday = _berlin(2026, 5, 22, 16, 50)
    for cal, due in ((plain, _berlin(2026, 5, 25, 9, 20)), (package, _berlin(2026, 5, 26, 9, 20)),
                     (explicit, _berlin(2026, 5, 26, 9, 20))):
        got = compute(History(friday), policy(cal, first=30), now=friday).targets["first_response"].due
        assert got == due, cal.name
        assert business_minutes_between(cal, friday, got) == 30
