"""Business-hours calendars and business-time arithmetic for SLA clocks.

Pure: standard library ``zoneinfo`` plus the ``holidays`` package (imported
lazily, only by calendars that name a country). No database, no UI.

Model
-----
A calendar has weekly opening hours in *local wall-clock time*: for each
weekday (0 = Monday) a tuple of ``(start, end)`` intervals. An interval whose
end is not after its start is an overnight shift that runs from ``start`` on
that day to ``end`` on the next day; ``"24:00"`` is read as ``00:00`` of the
next day. Days that are not listed are closed.

Each shift is anchored to the local date it *starts* on. A holiday (explicit
date or from the ``holidays`` package) closes every shift that starts on that
date; an overnight shift that started the evening before runs into the
holiday morning as normal.

Daylight-saving time
--------------------
Every shift endpoint is a wall-clock reading, converted to a real instant by
one rule: *the first instant at which the local clock shows that time or
later*. Consequences:

* ordinary times convert exactly;
* an ambiguous time (clocks go back, the hour repeats) means its first
  occurrence, so a shift 01:00-04:00 on a fall-back night lasts 4 real hours;
* a time that does not exist (clocks jump forward) means the moment of the
  jump, so a shift 01:00-04:00 on a spring-forward night lasts 2 real hours
  and a shift 02:15-02:45 inside the gap vanishes.

The rule is monotone, so shifts that do not overlap on the clock never overlap
in real time either. All arithmetic is done on real (UTC) instants at
microsecond resolution; results are returned in UTC.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DAY_NAMES",
    "SEARCH_LIMIT_DAYS",
    "BusinessCalendar",
    "CalendarError",
    "CountryHolidays",
    "add_business_minutes",
    "build_calendar",
    "business_minutes_between",
    "is_holiday",
    "is_open",
    "next_open",
    "open_spans",
]

UTC = timezone.utc
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {n: i for i, n in enumerate(DAY_NAMES)} | {n: i for i, n in enumerate(_FULL_DAY_NAMES)}

#: How many consecutive closed days we scan before deciding a calendar never
#: opens again (about three years), so a mis-configured calendar raises
#: instead of looping forever.
SEARCH_LIMIT_DAYS = 3 * 366

_DAY = timedelta(days=1)
_WEEK_SECONDS = 7 * 86400
_SPAN_CACHE_SIZE = 2048

Span = tuple[datetime, datetime]


class CalendarError(ValueError):
    """A calendar is mis-configured, or can never satisfy a request.

    ``key`` names the offending config key relative to the calendar table
    (``timezone``, ``hours.mon[1]``, ``holidays[2]`` …) so the config loader
    can prefix it with the file and ``calendar[i]``.
    """

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# --------------------------------------------------------------------------- holidays


@dataclass(frozen=True)
class CountryHolidays:
    """Public holidays of a country/subdivision from the ``holidays`` package.

    A callable ``date -> bool``. Years are computed on first use and cached,
    so a calendar costs nothing until it is asked about a year.
    """

    country: str
    subdivision: str | None = None
    _years: dict[int, Mapping[date, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        import holidays

        country = self.country.strip().upper() if isinstance(self.country, str) else self.country
        supported = holidays.list_supported_countries()
        if not isinstance(country, str) or country not in supported:
            raise CalendarError(
                "holidays_country",
                f"unknown country {self.country!r}; expected an ISO 3166-1 alpha-2 code "
                "supported by the holidays package, such as 'DE', 'US' or 'GB'",
            )
        object.__setattr__(self, "country", country)
        if self.subdivision is None:
            return
        entity = holidays.country_holidays(country, years=())
        codes = list(entity.subdivisions)
        aliases = dict(getattr(entity, "subdivisions_aliases", {}) or {})
        wanted = str(self.subdivision).strip().casefold()
        for name in codes + list(aliases):
            if name.casefold() == wanted:
                object.__setattr__(self, "subdivision", aliases.get(name, name))
                return
        expected = ", ".join(codes) if codes else "none (this country has no subdivisions)"
        raise CalendarError(
            "holidays_subdivision",
            f"unknown subdivision {self.subdivision!r} for {country}; expected one of: {expected}",
        )

    def _year(self, year: int) -> Mapping[date, str]:
        found = self._years.get(year)
        if found is None:
            import holidays

            found = dict(holidays.country_holidays(self.country, subdiv=self.subdivision, years=year))
            self._years[year] = found
        return found

    def __call__(self, day: date) -> bool:
        return day in self._year(day.year)

    def name(self, day: date) -> str | None:
        """The holiday's name, for display; ``None`` on ordinary days."""
        return self._year(day.year).get(day)


# --------------------------------------------------------------------------- the calendar


def _seconds(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _normalize_hours(hours: Mapping[Any, Any]) -> dict[int, tuple[tuple[time, time], ...]]:
    """Check weekday keys and intervals, reject overlaps (also across midnight
    and from Sunday into Monday), and return the hours sorted by start."""
    if not isinstance(hours, Mapping):
        raise CalendarError("hours", "expected a mapping of weekday (0 = Monday) to intervals")
    # (week-second start, week-second end, key) over all shifts, for the overlap check
    placed: list[tuple[float, float, str]] = []
    result: dict[int, tuple[tuple[time, time], ...]] = {}
    for day, intervals in hours.items():
        if not isinstance(day, int) or isinstance(day, bool) or not 0 <= day <= 6:
            raise CalendarError("hours", f"bad weekday {day!r}; expected 0 (Monday) to 6 (Sunday)")
        day_key = f"hours.{DAY_NAMES[day]}"
        if isinstance(intervals, (str, bytes)) or not isinstance(intervals, (list, tuple)):
            raise CalendarError(day_key, f"expected a tuple of (start, end) time pairs, got {intervals!r}")
        checked: list[tuple[time, time]] = []
        for i, interval in enumerate(intervals):
            key = f"{day_key}[{i}]"
            try:
                start, end = interval
            except (TypeError, ValueError):
                raise CalendarError(key, f"expected a (start, end) pair of times, got {interval!r}") from None
            for t in (start, end):
                if not isinstance(t, time):
                    raise CalendarError(key, f"expected datetime.time values, got {t!r}")
                if t.tzinfo is not None:
                    raise CalendarError(key, "times must be local wall-clock times without tzinfo")
            s = _seconds(start)
            length = _seconds(end) - s
            if length <= 0:
                length += 86400  # overnight: ends on the next day
            base = day * 86400 + s
            placed.append((base, base + length, key))
            checked.append((start, end))
        if checked:
            result[day] = tuple(sorted(checked, key=lambda iv: _seconds(iv[0])))
    placed.sort()
    for (_s1, e1, k1), (s2, _e2, k2) in zip(placed, placed[1:]):
        if s2 < e1:
            raise CalendarError(k2, f"overlaps {k1}; intervals must not overlap (touching is fine)")
    if len(placed) > 1:
        s0, _e0, k0 = placed[0]
        _sl, el, kl = placed[-1]
        if el - _WEEK_SECONDS > s0:
            raise CalendarError(kl, f"overlaps {k0} across the week boundary; intervals must not overlap")
    return result


@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly local opening hours in one time zone, minus holidays.

    ``hours`` maps weekday (0 = Monday) to ``(start, end)`` local times; an
    ``end`` not after ``start`` is an overnight shift into the next day (so
    ``time(0)`` as an end means midnight, i.e. ``"24:00"``). A date in
    ``holiday_dates``, or for which ``holiday_lookup`` is true, closes the
    shifts that start on it. Validated on construction, and ``hours`` is
    normalised to a dict sorted by start time (treat it as read-only: the
    real-time offsets are derived from it once). ``holiday_lookup`` must be
    pure, since the spans of each day are cached.
    """

    name: str
    timezone: str
    hours: Mapping[int, tuple[tuple[time, time], ...]] = field(hash=False)
    holiday_dates: frozenset[date] = frozenset()
    holiday_lookup: Callable[[date], bool] | None = None
    _tz: ZoneInfo = field(init=False, repr=False, compare=False, hash=False)
    _offsets: tuple[tuple[tuple[timedelta, timedelta], ...], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _cache: dict[date, tuple[Span, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        try:
            tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise CalendarError(
                "timezone",
                f"unknown time zone {self.timezone!r}; expected an IANA name such as 'Europe/Berlin' or 'UTC'",
            ) from None
        hours = _normalize_hours(self.hours)
        object.__setattr__(self, "hours", hours)
        object.__setattr__(self, "holiday_dates", frozenset(self.holiday_dates))
        object.__setattr__(self, "_tz", tz)
        offsets = []
        for day in range(7):
            day_offsets = []
            for start, end in hours.get(day, ()):
                s = timedelta(hours=start.hour, minutes=start.minute, seconds=start.second,
                              microseconds=start.microsecond)
                e = timedelta(hours=end.hour, minutes=end.minute, seconds=end.second,
                              microseconds=end.microsecond)
                if e <= s:
                    e += _DAY
                day_offsets.append((s, e))
            offsets.append(tuple(day_offsets))
        object.__setattr__(self, "_offsets", tuple(offsets))

    @property
    def tzinfo(self) -> ZoneInfo:
        return self._tz

    @property
    def ever_open(self) -> bool:
        """False if the weekly hours are empty (holidays aside)."""
        return any(self._offsets)

    def is_holiday(self, day: date) -> bool:
        return day in self.holiday_dates or (self.holiday_lookup is not None and bool(self.holiday_lookup(day)))

    def _spans(self, day: date) -> tuple[Span, ...]:
        """Real (UTC) spans of the shifts starting on local ``day``; cached
        because SLA sweeps ask about the same few days over and over."""
        spans = self._cache.get(day)
        if spans is None:
            offsets = self._offsets[day.weekday()]
            if not offsets or self.is_holiday(day):
                spans = ()
            else:
                midnight = datetime(day.year, day.month, day.day)
                tz = self._tz
                out = []
                for s, e in offsets:
                    start = _wall_to_utc(midnight + s, tz)
                    end = _wall_to_utc(midnight + e, tz)
                    if end > start:  # a shift wholly inside a DST gap vanishes
                        out.append((start, end))
                spans = tuple(out)
            if len(self._cache) >= _SPAN_CACHE_SIZE:
                self._cache.clear()
            self._cache[day] = spans
        return spans


def _wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first real instant at which the clock in ``tz`` shows ``wall`` or later.

    ``fold=0`` already gives the first occurrence of an ambiguous time; for a
    time inside a spring-forward gap we search for the moment of the jump.
    """
    guess = wall.replace(tzinfo=tz).astimezone(UTC)
    if guess.astimezone(tz).replace(tzinfo=None) == wall:
        return guess
    # Nonexistent. fold=0 used the offset from before the jump (at or after
    # the jump); fold=1 the offset from after it (before the jump).
    early = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo = math.floor(early.timestamp())
    hi = math.ceil(guess.timestamp())
    while lo < hi:  # smallest whole second whose local reading is >= wall
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(lo, UTC)


# --------------------------------------------------------------------------- building from config


_INTERVAL = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_ALLOWED_KEYS = {"name", "timezone", "hours", "holidays_country", "holidays_subdivision", "holidays"}


def _parse_interval(key: str, text: Any) -> tuple[time, time]:
    if not isinstance(text, str):
        raise CalendarError(key, f"expected a string like '09:00-17:00', got {text!r}")
    m = _INTERVAL.match(text)
    if not m:
        raise CalendarError(key, f"malformed interval {text!r}; expected 'HH:MM-HH:MM' such as '09:00-17:00'")
    sh, sm, eh, em = (int(g) for g in m.groups())
    if not (0 <= sh <= 23 and 0 <= sm <= 59):
        raise CalendarError(key, f"bad start time in {text!r}; expected 00:00 to 23:59")
    if (eh, em) == (24, 0):
        end = time(0)
    elif 0 <= eh <= 23 and 0 <= em <= 59:
        end = time(eh, em)
    else:
        raise CalendarError(key, f"bad end time in {text!r}; expected 00:00 to 24:00")
    return time(sh, sm), end


def _parse_date(key: str, value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CalendarError(key, f"bad date {value!r}; expected YYYY-MM-DD")


def _parse_holidays(values: Any) -> frozenset[date]:
    if not isinstance(values, (list, tuple)):
        raise CalendarError("holidays", "expected a list of dates 'YYYY-MM-DD' or ranges 'YYYY-MM-DD..YYYY-MM-DD'")
    days: set[date] = set()
    for i, value in enumerate(values):
        key = f"holidays[{i}]"
        if isinstance(value, str) and ".." in value:
            first_text, _, last_text = value.partition("..")
            first = _parse_date(key, first_text)
            last = _parse_date(key, last_text)
            if last < first:
                raise CalendarError(key, f"range {value!r} ends before it starts; expected FIRST..LAST with FIRST <= LAST")
            if (last - first).days > 3660:
                raise CalendarError(key, f"range {value!r} spans more than ten years; expected a holiday range")
            days.update(first + timedelta(days=n) for n in range((last - first).days + 1))
        else:
            days.add(_parse_date(key, value))
    return frozenset(days)


def build_calendar(name: str, spec: Mapping[str, Any]) -> BusinessCalendar:
    """Build a calendar from its config-table form, e.g.::

        {"timezone": "Europe/Berlin",
         "hours": {"mon": ["09:00-12:00", "13:00-17:00"], "tue": ["09:00-17:00"]},
         "holidays_country": "DE", "holidays_subdivision": "BE",
         "holidays": ["2026-12-24", "2026-12-27..2026-12-31"]}

    Raises :class:`CalendarError` whose ``key`` is relative to the table.
    """
    if not isinstance(spec, Mapping):
        raise CalendarError("calendar", "expected a table")
    for key in spec:
        if key not in _ALLOWED_KEYS:
            raise CalendarError(str(key), f"unknown key; expected one of: {', '.join(sorted(_ALLOWED_KEYS))}")

    zone = spec.get("timezone")
    if not isinstance(zone, str) or not zone.strip():
        raise CalendarError("timezone", "missing; expected an IANA time zone name such as 'Europe/Berlin'")

    raw_hours = spec.get("hours")
    if raw_hours is None:
        raise CalendarError("hours", "missing; expected a table like { mon = ['09:00-17:00'], ... }")
    if not isinstance(raw_hours, Mapping):
        raise CalendarError("hours", "expected a table of day name to a list of 'HH:MM-HH:MM' intervals")
    hours: dict[int, tuple[tuple[time, time], ...]] = {}
    for day_name, intervals in raw_hours.items():
        index = _DAY_INDEX.get(str(day_name).strip().lower())
        if index is None:
            raise CalendarError(f"hours.{day_name}", "unknown day; expected one of: " + ", ".join(DAY_NAMES))
        if index in hours:
            raise CalendarError(f"hours.{day_name}", f"{DAY_NAMES[index]} is given twice")
        key = f"hours.{DAY_NAMES[index]}"
        if isinstance(intervals, str):
            intervals = [intervals]
        if not isinstance(intervals, (list, tuple)):
            raise CalendarError(key, "expected a list of intervals like ['09:00-12:00', '13:00-17:00']")
        hours[index] = tuple(_parse_interval(f"{key}[{i}]", text) for i, text in enumerate(intervals))
    if not any(hours.values()):
        raise CalendarError("hours", "no open hours on any day; expected at least one interval such as mon = ['09:00-17:00']")

    country = spec.get("holidays_country")
    subdivision = spec.get("holidays_subdivision")
    lookup: CountryHolidays | None = None
    if subdivision is not None and country is None:
        raise CalendarError("holidays_subdivision", "given without holidays_country; expected both, e.g. 'DE' and 'BE'")
    if subdivision is not None and not isinstance(subdivision, str):
        raise CalendarError("holidays_subdivision", f"expected a string such as 'BE', got {subdivision!r}")
    if country is not None:
        if not isinstance(country, str):
            raise CalendarError("holidays_country", f"expected a string such as 'DE', got {country!r}")
        lookup = CountryHolidays(country, subdivision)

    dates = _parse_holidays(spec.get("holidays", []))
    return BusinessCalendar(
        name=name,
        timezone=zone.strip(),
        hours=hours,
        holiday_dates=dates,
        holiday_lookup=lookup,
    )


# --------------------------------------------------------------------------- arithmetic


def _utc(instant: datetime, what: str = "instant") -> datetime:
    if not isinstance(instant, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(instant).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {instant.isoformat()}")
    return instant.astimezone(UTC)


def _iter_spans(cal: BusinessCalendar, start: datetime, until: datetime | None = None) -> Iterator[Span]:
    """Open spans in order, clipped to begin no earlier than ``start`` (UTC).

    Stops once shifts can no longer begin before ``until``; without
    ``until``, after SEARCH_LIMIT_DAYS consecutive days without a shift, so
    the caller learns the calendar does not open again.
    """
    if not cal.ever_open:
        return
    tz = cal._tz
    try:
        # Shifts last at most 24 h, so one started two local days earlier
        # can still cover ``start``; begin there.
        day = start.astimezone(tz).date() - 2 * _DAY
        # A shift starting on a later local date starts after ``until`` (one
        # spare day absorbs clocks going back).
        last_day = until.astimezone(tz).date() + _DAY if until is not None else date.max
    except OverflowError:
        return
    closed_days = 0
    while day <= last_day:
        for s, e in cal._spans(day):
            if e > start:
                yield (s if s > start else start), e
                closed_days = -1
        closed_days += 1
        if until is None and closed_days > SEARCH_LIMIT_DAYS:
            return
        if day == date.max:
            return
        day += _DAY


def _never_open(cal: BusinessCalendar, start: datetime) -> CalendarError:
    return CalendarError(
        "hours",
        f"calendar {cal.name!r} has no business hours within {SEARCH_LIMIT_DAYS} days after "
        f"{start.isoformat()}; expected weekly hours that are not all closed by holidays",
    )


def is_holiday(cal: BusinessCalendar, day: date) -> bool:
    """Whether the local date ``day`` is a holiday in ``cal``."""
    return cal.is_holiday(day)


def is_open(cal: BusinessCalendar, instant: datetime) -> bool:
    """Whether ``instant`` falls inside business hours (spans are half-open:
    open at the opening instant, closed at the closing instant)."""
    t = _utc(instant)
    for s, _e in _iter_spans(cal, t, until=t):
        return s <= t
    return False


def next_open(cal: BusinessCalendar, instant: datetime) -> datetime:
    """``instant`` itself (in UTC) if open, else the next opening instant.

    Raises CalendarError if the calendar does not open within about 3 years.
    """
    t = _utc(instant)
    for s, _e in _iter_spans(cal, t):
        return s
    raise _never_open(cal, t)


def open_spans(cal: BusinessCalendar, start: datetime, end: datetime) -> Iterator[Span]:
    """The open ``(from, to)`` spans in UTC between ``start`` and ``end``,
    clipped to that window: for timelines and "open hours" displays."""
    a, b = _utc(start, "start"), _utc(end, "end")
    if b <= a:
        return
    for s, e in _iter_spans(cal, a, until=b):
        if s >= b:
            return
        yield s, (e if e < b else b)


def business_minutes_between(cal: BusinessCalendar, a: datetime, b: datetime) -> float:
    """Business minutes in ``[a, b)``; 0 if ``b <= a``."""
    total = timedelta(0)
    for s, e in open_spans(cal, a, b):
        total += e - s
    return total / timedelta(minutes=1)


def add_business_minutes(cal: BusinessCalendar, start: datetime, minutes: float) -> datetime:
    """The instant (UTC) at which ``minutes`` of business time have elapsed
    after ``start``. Counting begins at the next opening if ``start`` is
    outside hours; a due time that falls exactly at closing time is that
    closing time, not the next opening. ``minutes == 0`` returns ``start``
    (as UTC) even outside hours.

    Raises ValueError for negative or non-finite ``minutes``, and
    CalendarError if the calendar never opens (searched ~3 years ahead).
    """
    t = _utc(start, "start")
    if isinstance(minutes, bool) or not isinstance(minutes, numbers.Real):
        raise TypeError(f"minutes must be a number, got {minutes!r}")
    if not isinstance(minutes, int):
        minutes = float(minutes)
    if not math.isfinite(minutes):
        raise ValueError(f"minutes must be finite, got {minutes!r}")
    if minutes < 0:
        raise ValueError(f"minutes must not be negative, got {minutes!r}")
    remaining = timedelta(minutes=minutes)
    if not remaining:
        return t
    for s, e in _iter_spans(cal, t):
        length = e - s
        if remaining <= length:
            return s + remaining
        remaining -= length
    raise _never_open(cal, t)
