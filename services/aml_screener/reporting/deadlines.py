"""When an OFAC report is due: US federal business days and the 10-business-day deadline (pure, no I/O).

31 CFR 501.603(b)(1)(i) (blocked property) and 501.604 (rejected transactions) give 10 business days "from the date
that property becomes blocked" / "of the rejected transaction". Read here (docs/reporting.md explains the reading):

- a business day is a weekday that is not a US federal holiday, with the federal observed-day rules (a holiday on a
  Saturday is observed on the Friday before, on a Sunday on the Monday after: 5 U.S.C. 6103 and Executive Order
  11582), from the `holidays` package's US calendar;
- the date of the decision is day 0, whatever day it is (it is not counted even when it is a business day); the
  deadline is the end of the 10th business day after it;
- dates are US Eastern dates (OFAC is in Washington, DC): a decision at 02:00 UTC on a Tuesday was made on the
  Monday in Washington, and the deadline ends at midnight Eastern time (EST or EDT, whichever is in force that day).

Closures ordered ad hoc (a national day of mourning, an extra day before Christmas by executive order) are not in
the calendar, so they are counted as business days: the computed deadline can only be earlier than the real one,
never later.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

EASTERN = ZoneInfo("America/New_York")
REPORT_BUSINESS_DAYS = 10
# The last representable instant of a day: a deadline "at the end of" a date is this time, Eastern.
_END_OF_DAY = time(23, 59, 59, 999_999)
_SATURDAY = 5


@functools.cache
def _federal_holidays(year: int) -> frozenset[date]:
    """Federal holidays and their observed days that fall in `year` (an observed day can fall in the year before
    its holiday: New Year's Day 2022, a Saturday, was observed on Friday 31 December 2021, so the next year's
    calendar is consulted too)."""
    calendar = holidays.country_holidays("US", years=(year, year + 1), observed=True)
    return frozenset(day for day in calendar if day.year == year)


def federal_holiday(day: date) -> bool:
    """A US federal holiday or the day it is observed on."""
    return day in _federal_holidays(day.year)


def is_business_day(day: date) -> bool:
    """Monday to Friday, and not a federal holiday (observed days included)."""
    return day.weekday() < _SATURDAY and not federal_holiday(day)


def add_business_days(start: date, count: int) -> date:
    """The `count`-th business day after `start` (`start` itself is never counted; count >= 1)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    day = start
    remaining = count
    while remaining:
        day += timedelta(days=1)
        if is_business_day(day):
            remaining -= 1
    return day


def business_days_between(start: date, end: date) -> int:
    """Business days in (start, end]: after `start`, up to and including `end` (0 when end <= start)."""
    count = 0
    day = start
    while day < end:
        day += timedelta(days=1)
        if is_business_day(day):
            count += 1
    return count


def eastern_date(moment: datetime) -> date:
    """The calendar date in Washington, DC at `moment` (which must carry a time zone)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in time: give it a time zone (UTC)")
    return moment.astimezone(EASTERN).date()


def end_of_day(day: date) -> datetime:
    """The last instant of `day` in US Eastern time, in UTC."""
    return datetime.combine(day, _END_OF_DAY, tzinfo=EASTERN).astimezone(UTC)


def due_date(decided_at: datetime, business_days: int = REPORT_BUSINESS_DAYS) -> date:
    """The US Eastern date by whose end a report on a decision made at `decided_at` is due."""
    return add_business_days(eastern_date(decided_at), business_days)


def report_due(decided_at: datetime, business_days: int = REPORT_BUSINESS_DAYS) -> datetime:
    """The deadline of the report on a decision made at `decided_at`: the end of the 10th business day after the
    decision's US Eastern date, in US Eastern time, as a UTC datetime."""
    return end_of_day(due_date(decided_at, business_days))


def business_days_left(due: datetime, now: datetime) -> int:
    """Business days left until `due`, today included when it is one: 2 on the day before a due date (both
    business days), 1 on the due date itself (and on a weekend before a Monday due date), 0 once `due` passed."""
    if now > due:
        return 0
    return business_days_between(eastern_date(now) - timedelta(days=1), eastern_date(due))
