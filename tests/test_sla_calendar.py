"""Business-hours arithmetic: worked examples plus property tests against a
brute-force, minute-by-minute reference that shares no code with the module."""

from __future__ import annotations

import bisect
import functools
import itertools
import time as _time
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportdesk.sla.calendar import (
    BusinessCalendar,
    CalendarError,
    CountryHolidays,
    add_business_minutes,
    build_calendar,
    business_minutes_between,
    is_holiday,
    is_open,
    next_open,
    open_spans,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")

OFFICE = {
    "timezone": "Europe/Berlin",
    "hours": {
        "mon": ["09:00-12:00", "13:00-17:00"],
        "tue": ["09:00-17:00"],
        "wed": ["09:00-17:00"],
        "thu": ["09:00-17:00"],
        "fri": ["09:00-15:00"],
    },
    "holidays_country": "DE",
    "holidays_subdivision": "BE",
}


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def office() -> BusinessCalendar:
    return build_calendar("office", OFFICE)


# --------------------------------------------------------------------------- ordinary weeks


def test_within_one_day(office):
    # Tue 2026-06-16 10:00 + 2 h
    assert add_business_minutes(office, berlin(2026, 6, 16, 10, 0), 120) == berlin(2026, 6, 16, 12, 0)


def test_result_is_utc(office):
    due = add_business_minutes(office, berlin(2026, 6, 16, 10, 0), 120)
    assert due.tzinfo is UTC
    assert due == utc(2026, 6, 16, 10, 0)


def test_weekend_is_skipped(office):
    # Fri 14:00: one hour left on Friday, the second hour on Monday morning.
    assert add_business_minutes(office, berlin(2026, 6, 12, 14, 0), 120) == berlin(2026, 6, 15, 10, 0)
    assert business_minutes_between(office, berlin(2026, 6, 12, 14, 0), berlin(2026, 6, 15, 10, 0)) == 120


def test_lunch_break_is_skipped(office):
    assert add_business_minutes(office, berlin(2026, 6, 15, 11, 30), 60) == berlin(2026, 6, 15, 13, 30)
    assert business_minutes_between(office, berlin(2026, 6, 15, 11, 0), berlin(2026, 6, 15, 14, 0)) == 120
    assert not is_open(office, berlin(2026, 6, 15, 12, 30))


def test_start_outside_hours_counts_from_next_opening(office):
    assert add_business_minutes(office, berlin(2026, 6, 13, 11, 0), 60) == berlin(2026, 6, 15, 10, 0)  # Saturday
    assert add_business_minutes(office, berlin(2026, 6, 16, 6, 0), 30) == berlin(2026, 6, 16, 9, 30)  # early
    assert add_business_minutes(office, berlin(2026, 6, 16, 20, 0), 30) == berlin(2026, 6, 17, 9, 30)  # late


def test_due_exactly_at_closing_is_closing_time(office):
    assert add_business_minutes(office, berlin(2026, 6, 16, 16, 0), 60) == berlin(2026, 6, 16, 17, 0)
    assert add_business_minutes(office, berlin(2026, 6, 15, 11, 0), 60) == berlin(2026, 6, 15, 12, 0)


def test_full_week(office):
    week = 7 * 60 + 8 * 60 * 3 + 6 * 60
    assert business_minutes_between(office, berlin(2026, 6, 15), berlin(2026, 6, 22)) == week
    assert add_business_minutes(office, berlin(2026, 6, 15), week) == berlin(2026, 6, 19, 15, 0)


def test_zero_minutes_returns_start_even_when_closed(office):
    saturday = berlin(2026, 6, 13, 11, 7, 5)
    assert add_business_minutes(office, saturday, 0) == saturday
    assert add_business_minutes(office, saturday, 0).tzinfo is UTC


def test_fractional_minutes(office):
    start = berlin(2026, 6, 16, 16, 59)
    assert add_business_minutes(office, start, 1.5) == berlin(2026, 6, 17, 9, 0, 30)
    assert business_minutes_between(office, start, berlin(2026, 6, 17, 9, 0, 30)) == 1.5


def test_between_is_zero_when_b_not_after_a(office):
    a = berlin(2026, 6, 16, 10, 0)
    assert business_minutes_between(office, a, a) == 0
    assert business_minutes_between(office, a, a - timedelta(hours=3)) == 0


def test_is_open_half_open_spans(office):
    assert is_open(office, berlin(2026, 6, 16, 9, 0))
    assert is_open(office, berlin(2026, 6, 16, 16, 59, 59))
    assert not is_open(office, berlin(2026, 6, 16, 17, 0))
    assert not is_open(office, berlin(2026, 6, 13, 10, 0))  # Saturday


def test_next_open(office):
    assert next_open(office, berlin(2026, 6, 16, 10, 0)) == berlin(2026, 6, 16, 10, 0)
    assert next_open(office, berlin(2026, 6, 15, 12, 10)) == berlin(2026, 6, 15, 13, 0)
    assert next_open(office, berlin(2026, 6, 12, 15, 0)) == berlin(2026, 6, 15, 9, 0)
    assert next_open(office, berlin(2026, 6, 12, 15, 0)).tzinfo is UTC


def test_open_spans_are_clipped(office):
    spans = list(open_spans(office, berlin(2026, 6, 15, 10, 0), berlin(2026, 6, 16, 10, 0)))
    assert spans == [
        (berlin(2026, 6, 15, 10, 0), berlin(2026, 6, 15, 12, 0)),
        (berlin(2026, 6, 15, 13, 0), berlin(2026, 6, 15, 17, 0)),
        (berlin(2026, 6, 16, 9, 0), berlin(2026, 6, 16, 10, 0)),
    ]


def test_other_zone_input_same_instant(office):
    new_york = ZoneInfo("America/New_York")
    start = datetime(2026, 6, 16, 4, 0, tzinfo=new_york)  # 10:00 Berlin
    assert add_business_minutes(office, start, 120) == berlin(2026, 6, 16, 12, 0)


def test_large_amounts_are_not_bounded_by_search_limit(office):
    # Five years of business time is fine: the limit is on *closed* stretches.
    minutes = 5 * 52 * 1860
    due = add_business_minutes(office, berlin(2026, 1, 5), minutes)
    assert due.year in (2030, 2031)
    assert business_minutes_between(office, berlin(2026, 1, 5), due) == minutes


# --------------------------------------------------------------------------- holidays


def test_package_holiday_christmas_de_be(office):
    assert is_holiday(office, date(2026, 12, 25))
    assert not is_holiday(office, date(2026, 12, 24))  # not a public holiday in Berlin
    assert not is_open(office, berlin(2026, 12, 25, 10, 0))
    # Thu 24th 16:00: one hour that day; Fri 25th is Christmas, 26th/27th weekend.
    assert add_business_minutes(office, berlin(2026, 12, 24, 16, 0), 120) == berlin(2026, 12, 28, 10, 0)


def test_package_subdivision_matters():
    # International Women's Day is a public holiday in Berlin only.
    be = build_calendar("be", OFFICE)
    by = build_calendar("by", {**OFFICE, "holidays_subdivision": "BY"})
    assert is_holiday(be, date(2027, 3, 8))
    assert not is_holiday(by, date(2027, 3, 8))
    assert not is_open(be, berlin(2027, 3, 8, 10, 0))
    assert is_open(by, berlin(2027, 3, 8, 10, 0))


def test_package_years_expand_on_demand():
    lookup = CountryHolidays("de", "be")
    assert (lookup.country, lookup.subdivision) == ("DE", "BE")
    assert lookup(date(2031, 12, 25)) and lookup(date(1999, 1, 1))
    assert not lookup(date(2031, 12, 23))
    assert lookup.name(date(2031, 12, 25)) == "Christmas Day"
    assert CountryHolidays("DE", "Berlin") == lookup


def test_explicit_dates_and_ranges_over_year_end():
    cal = build_calendar("office", {**OFFICE, "holidays": ["2026-12-24", "2026-12-27..2026-12-31"]})
    for day in (24, 25, 28, 29, 30, 31):
        assert is_holiday(cal, date(2026, 12, day))
    # Wed 23rd 16:00 -> 1 h; 24 explicit, 25/26 package, 27-31 range, 1 Jan package,
    # 2/3 Jan weekend: the second hour is on Mon 4 Jan 2027.
    assert add_business_minutes(cal, berlin(2026, 12, 23, 16, 0), 120) == berlin(2027, 1, 4, 10, 0)
    assert business_minutes_between(cal, berlin(2026, 12, 23), berlin(2027, 1, 5)) == 8 * 60 + 7 * 60


def test_explicit_dates_may_be_toml_dates():
    cal = build_calendar("x", {"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}, "holidays": [date(2026, 6, 15)]})
    assert cal.holiday_dates == frozenset({date(2026, 6, 15)})


def test_calendar_without_package_holidays_is_open_at_christmas():
    cal = build_calendar("plain", {"timezone": "Europe/Berlin", "hours": {"fri": ["09:00-17:00"]}})
    assert is_open(cal, berlin(2026, 12, 25, 10, 0))


# --------------------------------------------------------------------------- daylight-saving time


def test_spring_forward_night_shift_is_two_real_hours():
    cal = build_calendar("night", {"timezone": "Europe/Berlin", "hours": {"sun": ["01:00-04:00"]}})
    assert business_minutes_between(cal, berlin(2026, 3, 28), berlin(2026, 3, 30)) == 120
    assert list(open_spans(cal, berlin(2026, 3, 28), berlin(2026, 3, 30))) == [(utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))]
    # 90 minutes from the 01:00 opening lands at 03:30 CEST.
    assert add_business_minutes(cal, berlin(2026, 3, 29, 0, 30), 90) == utc(2026, 3, 29, 1, 30)


def test_fall_back_night_shift_is_four_real_hours():
    cal = build_calendar("night", {"timezone": "Europe/Berlin", "hours": {"sun": ["01:00-04:00"]}})
    assert business_minutes_between(cal, berlin(2026, 10, 24), berlin(2026, 10, 26)) == 240
    # 150 minutes after 01:00 CEST is the *second* 02:30 (CET).
    due = add_business_minutes(cal, berlin(2026, 10, 25, 0, 0), 150)
    assert due == utc(2026, 10, 25, 1, 30)
    assert due.astimezone(BERLIN).fold == 1


def test_day_shift_across_dst_weekend(office):
    # Fri 27 Mar 14:00 CET + 2 h -> Mon 30 Mar 10:00 CEST (= 08:00 UTC).
    assert add_business_minutes(office, berlin(2026, 3, 27, 14, 0), 120) == utc(2026, 3, 30, 8, 0)
    assert add_business_minutes(office, berlin(2026, 10, 23, 14, 0), 120) == utc(2026, 10, 26, 9, 0)


def test_nonexistent_endpoints_move_to_the_jump():
    cal = build_calendar("gap", {"timezone": "Europe/Berlin", "hours": {"sun": ["02:30-05:00"]}})
    # 02:30 does not exist on 29 Mar: the shift opens when clocks jump to 03:00.
    assert next_open(cal, berlin(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert business_minutes_between(cal, berlin(2026, 3, 28), berlin(2026, 3, 30)) == 120
    inside = build_calendar("gap", {"timezone": "Europe/Berlin", "hours": {"sun": ["02:15-02:45"]}})
    # A shift wholly inside the gap vanishes that night.
    assert business_minutes_between(inside, berlin(2026, 3, 28), berlin(2026, 3, 30)) == 0
    assert business_minutes_between(inside, berlin(2026, 4, 4), berlin(2026, 4, 6)) == 30


def test_ambiguous_endpoints_mean_first_occurrence():
    cal = build_calendar("amb", {"timezone": "Europe/Berlin", "hours": {"sun": ["02:30-03:30"]}})
    # 02:30 CEST (00:30 UTC) to 03:30 CET (02:30 UTC).
    assert list(open_spans(cal, berlin(2026, 10, 24), berlin(2026, 10, 26))) == [(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30))]


def test_overnight_shift_across_dst():
    cal = build_calendar("n", {"timezone": "Europe/Berlin", "hours": {"sat": ["22:00-06:00"]}})
    assert business_minutes_between(cal, berlin(2026, 3, 28), berlin(2026, 3, 30)) == 7 * 60
    assert business_minutes_between(cal, berlin(2026, 10, 24), berlin(2026, 10, 26)) == 9 * 60


# --------------------------------------------------------------------------- overnight shifts and 24:00


def test_overnight_shift():
    cal = build_calendar("n", {"timezone": "UTC", "hours": {"fri": ["22:00-06:00"]}})
    assert add_business_minutes(cal, utc(2026, 6, 12, 23, 0), 180) == utc(2026, 6, 13, 2, 0)
    assert is_open(cal, utc(2026, 6, 13, 5, 59))
    assert not is_open(cal, utc(2026, 6, 13, 6, 0))
    assert not is_open(cal, utc(2026, 6, 13, 23, 0))  # Saturday night is not listed
    assert add_business_minutes(cal, utc(2026, 6, 13, 5, 0), 120) == utc(2026, 6, 19, 23, 0)


def test_holiday_closes_shifts_starting_that_day_only():
    spec = {"timezone": "UTC", "hours": {"thu": ["22:00-06:00"], "fri": ["22:00-06:00"]}}
    # Thu 31 Dec 2026 night shift runs into New Year's Day even if 1 Jan is a holiday ...
    cal = build_calendar("n", {**spec, "holidays": ["2027-01-01"]})
    assert is_open(cal, utc(2027, 1, 1, 3, 0))
    assert not is_open(cal, utc(2027, 1, 1, 23, 0))
    # ... and a holiday on 31 Dec closes the shift that starts that evening.
    cal = build_calendar("n", {**spec, "holidays": ["2026-12-31"]})
    assert not is_open(cal, utc(2027, 1, 1, 3, 0))
    assert is_open(cal, utc(2027, 1, 1, 23, 0))


def test_overnight_sunday_into_monday():
    cal = build_calendar("n", {"timezone": "UTC", "hours": {"sun": ["20:00-04:00"], "mon": ["04:00-08:00"]}})
    assert business_minutes_between(cal, utc(2026, 6, 14), utc(2026, 6, 16)) == 12 * 60
    assert add_business_minutes(cal, utc(2026, 6, 14, 19, 0), 12 * 60) == utc(2026, 6, 15, 8, 0)


def test_24_00_and_round_the_clock():
    cal = build_calendar("24", {"timezone": "UTC", "hours": {"mon": ["00:00-24:00"], "tue": ["00:00-24:00"]}})
    assert add_business_minutes(cal, utc(2026, 6, 15), 2880) == utc(2026, 6, 17)
    assert cal.hours[0] == ((time(0), time(0)),)
    same_day = build_calendar("n", {"timezone": "UTC", "hours": {"wed": ["09:00-09:00"]}})
    assert business_minutes_between(same_day, utc(2026, 6, 15), utc(2026, 6, 22)) == 1440
    assert is_open(same_day, utc(2026, 6, 18, 8, 59)) and not is_open(same_day, utc(2026, 6, 18, 9, 0))


# --------------------------------------------------------------------------- never open, bad input


def test_never_open_calendar_raises_instead_of_looping():
    empty = BusinessCalendar("empty", "UTC", {})
    with pytest.raises(CalendarError):
        add_business_minutes(empty, utc(2026, 1, 1), 1)
    with pytest.raises(CalendarError):
        next_open(empty, utc(2026, 1, 1))
    assert business_minutes_between(empty, utc(2026, 1, 1), utc(2027, 1, 1)) == 0
    assert not is_open(empty, utc(2026, 1, 1))
    assert add_business_minutes(empty, utc(2026, 1, 1), 0) == utc(2026, 1, 1)


def test_all_holidays_calendar_raises_quickly():
    cal = build_calendar("x", {"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}, "holidays": ["2026-01-01..2030-12-31"]})
    started = _time.perf_counter()
    with pytest.raises(CalendarError) as err:
        add_business_minutes(cal, utc(2026, 1, 1), 60)
    assert _time.perf_counter() - started < 2
    assert err.value.key == "hours"
    assert not is_open(cal, utc(2026, 6, 15, 10, 0))
    # Within the search limit, a long closure is simply skipped.
    shorter = build_calendar("x", {"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}, "holidays": ["2026-01-01..2027-12-31"]})
    assert add_business_minutes(shorter, utc(2026, 1, 1), 60) == utc(2028, 1, 3, 10, 0)


@pytest.mark.parametrize("call", [
    lambda cal, naive: is_open(cal, naive),
    lambda cal, naive: next_open(cal, naive),
    lambda cal, naive: add_business_minutes(cal, naive, 10),
    lambda cal, naive: business_minutes_between(cal, naive, utc(2026, 7, 1)),
    lambda cal, naive: business_minutes_between(cal, utc(2026, 5, 1), naive),
])
def test_naive_datetimes_are_rejected(office, call):
    with pytest.raises(ValueError, match="timezone-aware"):
        call(office, datetime(2026, 6, 16, 10, 0))


@pytest.mark.parametrize("minutes", [-1, float("nan"), float("inf")])
def test_bad_minutes_are_rejected(office, minutes):
    with pytest.raises(ValueError):
        add_business_minutes(office, utc(2026, 6, 16), minutes)


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("change, key, fragment", [
    ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ({"timezone": None}, "timezone", "missing"),
    ({"hours": {"moon": ["09:00-17:00"]}}, "hours.moon", "mon, tue"),
    ({"hours": {"mon": "09:00-17:00", "monday": ["10:00-11:00"]}}, "hours.monday", "twice"),
    ({"hours": {"mon": ["09:00-12:00", "13:00-1700"]}}, "hours.mon[1]", "HH:MM-HH:MM"),
    ({"hours": {"mon": ["09:00-12:00", 9]}}, "hours.mon[1]", "string"),
    ({"hours": {"tue": ["25:00-26:00"]}}, "hours.tue[0]", "00:00 to 23:59"),
    ({"hours": {"tue": ["24:00-06:00"]}}, "hours.tue[0]", "00:00 to 23:59"),
    ({"hours": {"tue": ["09:00-24:30"]}}, "hours.tue[0]", "00:00 to 24:00"),
    ({"hours": {"tue": ["09:00-12:00", "11:00-13:00"]}}, "hours.tue[1]", "overlap"),
    ({"hours": {"tue": ["11:00-13:00", "09:00-12:00"]}}, "hours.tue[0]", "overlap"),
    ({"hours": {"mon": ["22:00-06:00"], "tue": ["05:00-09:00"]}}, "hours.tue[0]", "overlap"),
    ({"hours": {"sun": ["22:00-06:00"], "mon": ["05:00-09:00"]}}, "hours.sun[0]", "week boundary"),
    ({"hours": {"mon": "x"}}, "hours.mon[0]", "HH:MM"),
    ({"hours": ["09:00-17:00"]}, "hours", "table"),
    ({"hours": {"sat": []}}, "hours", "no open hours"),
    ({"holidays_country": "XX"}, "holidays_country", "ISO 3166"),
    ({"holidays_subdivision": "ZZ"}, "holidays_subdivision", "BE"),
    ({"holidays_country": None}, "holidays_subdivision", "without holidays_country"),
    ({"holidays": ["2026-02-30"]}, "holidays[0]", "YYYY-MM-DD"),
    ({"holidays": ["2026-12-24", "24.12.2026"]}, "holidays[1]", "YYYY-MM-DD"),
    ({"holidays": ["2026-12-31..2026-12-27"]}, "holidays[0]", "ends before it starts"),
    ({"holidays": ["2026-12-27..soon"]}, "holidays[0]", "YYYY-MM-DD"),
    ({"holidays": "2026-12-24"}, "holidays", "list"),
    ({"holiday": ["2026-12-24"]}, "holiday", "unknown key"),
])
def test_config_errors_name_the_key(change, key, fragment):
    spec = {k: v for k, v in {**OFFICE, **change}.items() if v is not None}
    with pytest.raises(CalendarError) as err:
        build_calendar("office", spec)
    assert err.value.key == key
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_build_is_lenient_where_harmless():
    cal = build_calendar("office", {
        "name": "office",
        "timezone": "Europe/Berlin",
        "hours": {"Monday": "9:00 - 17:00", "sat": []},
        "holidays_country": "de",
        "holidays_subdivision": "be",
    })
    assert cal.hours == {0: ((time(9), time(17)),)}
    assert cal.holiday_lookup == CountryHolidays("DE", "BE")
    assert cal == build_calendar("office", {**OFFICE, "hours": {"mon": ["09:00-17:00"]}})
    hash(cal)


def test_direct_construction_is_validated():
    with pytest.raises(CalendarError) as err:
        BusinessCalendar("x", "UTC", {0: ((time(9), time(12)), (time(11), time(13)))})
    assert err.value.key == "hours.mon[1]"
    with pytest.raises(CalendarError):
        BusinessCalendar("x", "UTC", {7: ((time(9), time(12)),)})


def test_speed(office):
    """A due time 480 business minutes out should take well under 1 ms."""
    start = berlin(2026, 6, 1, 8, 0)
    began = _time.perf_counter()
    for i in range(500):
        add_business_minutes(office, start + timedelta(minutes=37 * i), 480)
    assert (_time.perf_counter() - began) / 500 < 0.002  # generous: CI machines vary


# --------------------------------------------------------------------------- brute-force reference

# Each zone with days worth testing in it: its DST changes (all on Sundays),
# a year end and an ordinary day.
ZONE_BASES = {
    "UTC": [date(2026, 12, 31), date(2026, 6, 17)],
    "Asia/Kolkata": [date(2026, 12, 31), date(2026, 6, 17)],
    "Etc/GMT+10": [date(2026, 12, 31)],
    "Europe/Berlin": [date(2026, 3, 29), date(2026, 10, 25), date(2026, 12, 31)],
    "America/New_York": [date(2026, 3, 8), date(2026, 11, 1)],
    "Australia/Lord_Howe": [date(2026, 4, 5), date(2026, 10, 4)],  # 30-minute DST
    "Pacific/Chatham": [date(2026, 4, 5), date(2026, 9, 27)],  # changes at 02:45/03:45
}
ZONE_AND_BASE = [(zone, base) for zone, bases in ZONE_BASES.items() for base in bases]
BEFORE, AFTER = 3, 5            # window around a base date, in days
STEP = 15                       # shift boundaries fall on quarter hours
WEEK = 7 * 1440


@functools.lru_cache(maxsize=None)
def _clock(zone: str, base: date) -> tuple[datetime, list[int]]:
    """Window start and, minute by minute, the running maximum of the local
    clock reading (as minutes after the window start's naive UTC time): the
    first minute showing a wall time or later is then a bisect away."""
    tz = ZoneInfo(zone)
    w0 = datetime(base.year, base.month, base.day, tzinfo=UTC) - timedelta(days=BEFORE)

    def offset(k: int) -> int:
        return int((w0 + timedelta(minutes=k)).astimezone(tz).utcoffset() / timedelta(minutes=1))

    walls: list[int] = []
    for hour in range((BEFORE + AFTER) * 24):
        k0 = hour * 60
        if offset(k0) == offset(k0 + 59):  # no change inside this hour: skip per-minute lookups
            walls.extend(range(k0 + offset(k0), k0 + 60 + offset(k0)))
        else:
            walls.extend(k + offset(k) for k in range(k0, k0 + 60))
    return w0, list(itertools.accumulate(walls, max))


class Reference:
    """Minute-by-minute truth for one calendar over a window of days."""

    def __init__(self, zone: str, base: date, shifts: dict[int, list[tuple[int, int]]], holidays: set[date]):
        self.w0, walls = _clock(zone, base)
        tz = ZoneInfo(zone)
        naive0 = self.w0.replace(tzinfo=None)
        self.open = bytearray(len(walls))
        first_day = (self.w0.astimezone(tz) - timedelta(days=2)).date()
        last_day = (self.w0 + timedelta(minutes=len(walls))).astimezone(tz).date()
        day = first_day
        while day <= last_day:
            if day not in holidays:
                for start, length in shifts.get(day.weekday(), []):
                    midnight = (datetime(day.year, day.month, day.day) - naive0) // timedelta(minutes=1)
                    lo = bisect.bisect_left(walls, midnight + start)
                    hi = bisect.bisect_left(walls, midnight + start + length)
                    self.open[lo:hi] = b"\x01" * (hi - lo)
            day += timedelta(days=1)
        self.prefix = list(itertools.accumulate(self.open, initial=0))

    def index(self, instant: datetime) -> int:
        return int((instant - self.w0) / timedelta(minutes=1))

    def instant(self, k: int) -> datetime:
        return self.w0 + timedelta(minutes=k)

    def between(self, a: int, b: int) -> int:
        return self.prefix[b] - self.prefix[a] if b > a else 0

    def add(self, a: int, n: int) -> int | None:
        """First minute boundary at which n business minutes after a have passed."""
        if n == 0:
            return a
        target = self.prefix[a] + n
        k = bisect.bisect_left(self.prefix, target)
        return k if k < len(self.prefix) else None

    def next_open(self, a: int) -> int | None:
        k = self.open.find(1, a)
        return None if k < 0 else k


@st.composite
def calendars(draw):
    """Random non-overlapping weekly shifts (possibly overnight, 24 h, or
    wrapping Sunday into Monday) as config strings plus reference minutes."""
    count = draw(st.integers(1, 5)) * 2
    anywhere = st.integers(0, WEEK // STEP - 1)
    sunday_small_hours = st.integers(6 * 96 + 4, 6 * 96 + 16)  # Sun 01:00-04:00, where clocks change
    points = sorted(draw(st.sets(st.one_of(anywhere, sunday_small_hours), min_size=count, max_size=count)))
    points = [p * STEP for p in points]
    if draw(st.booleans()):  # pair the last point with the first, across the week end
        points = points[1:] + [points[0] + WEEK]
    pairs = list(zip(points[::2], points[1::2]))
    hours: dict[str, list[str]] = {}
    shifts: dict[int, list[tuple[int, int]]] = {}
    for p, q in pairs:
        if q - p > 1440 and draw(st.booleans()):
            q = p + draw(st.integers(1, 1440 // STEP)) * STEP  # keep it one shift
        while p < q:
            day_start = p // 1440 * 1440
            chunk_end = q if q - p <= 1440 else day_start + 1440
            start, end = p - day_start, chunk_end - day_start
            weekday = (p // 1440) % 7
            text = f"{start // 60:02d}:{start % 60:02d}-{(end % 1440) // 60:02d}:{end % 60:02d}"
            if end == 1440 and draw(st.booleans()):
                text = text[:6] + "24:00"
            hours.setdefault(("mon", "tue", "wed", "thu", "fri", "sat", "sun")[weekday], []).append(text)
            shifts.setdefault(weekday, []).append((start, end - start))
            p = chunk_end
    zone, base = draw(st.sampled_from(ZONE_AND_BASE))
    holidays = draw(st.sets(st.integers(-3, 4).map(lambda d: base + timedelta(days=d)), max_size=3))
    spec = {"timezone": zone, "hours": hours, "holidays": [d.isoformat() for d in holidays]}
    return build_calendar("random", spec), Reference(zone, base, shifts, holidays), base


def _minute(draw, base: date, spread_days: int = 2) -> datetime:
    midnight = datetime(base.year, base.month, base.day, tzinfo=UTC)
    return midnight + timedelta(minutes=draw(st.integers(-spread_days * 1440, spread_days * 1440)))


PROPS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(st.data())
def test_between_matches_brute_force(data):
    cal, ref, base = data.draw(calendars())
    a, b = _minute(data.draw, base), _minute(data.draw, base)
    assert business_minutes_between(cal, a, b) == ref.between(ref.index(a), ref.index(b))


@PROPS
@given(st.data())
def test_is_open_and_next_open_match_brute_force(data):
    cal, ref, base = data.draw(calendars())
    t = _minute(data.draw, base)
    assert is_open(cal, t) == bool(ref.open[ref.index(t)])
    expected = ref.next_open(ref.index(t))
    if expected is not None and expected - ref.index(t) < 3 * 1440:
        assert next_open(cal, t) == ref.instant(expected)


@PROPS
@given(st.data())
def test_add_matches_brute_force_and_inverts_between(data):
    cal, ref, base = data.draw(calendars())
    a = _minute(data.draw, base)
    available = ref.between(ref.index(a), len(ref.open) - 1440)
    n = data.draw(st.integers(0, max(0, available)))
    due = add_business_minutes(cal, a, n)
    assert due == ref.instant(ref.add(ref.index(a), n))
    assert business_minutes_between(cal, a, due) == n
    half = n + 0.5 if n < available else n
    assert business_minutes_between(cal, a, add_business_minutes(cal, a, half)) == half


@PROPS
@given(st.data())
def test_monotone(data):
    cal, ref, base = data.draw(calendars())
    a1, a2 = sorted([_minute(data.draw, base), _minute(data.draw, base)])
    available = ref.between(ref.index(a2), len(ref.open) - 1440)
    n1, n2 = sorted([data.draw(st.integers(0, max(0, available))), data.draw(st.integers(0, max(0, available)))])
    assert add_business_minutes(cal, a1, n1) <= add_business_minutes(cal, a1, n2)
    assert add_business_minutes(cal, a1, n2) <= add_business_minutes(cal, a2, n2)
    b = _minute(data.draw, base)
    assert business_minutes_between(cal, a1, b) >= business_minutes_between(cal, a2, b)
    assert business_minutes_between(cal, a1, a2) <= business_minutes_between(cal, a1, max(a2, b))
