"""OFAC report deadlines: 10 US federal business days after the decision's date in Washington, ending at midnight
Eastern time. The federal calendar (the `holidays` package) is checked against the statute's rules written out
here independently (5 U.S.C. 6103 with the observed-day rule), and the deadline against a day-by-day count."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aml_screener.reporting.deadlines import (
    EASTERN,
    add_business_days,
    business_days_left,
    due_date,
    eastern_date,
    is_business_day,
    report_due,
)

MONDAY, THURSDAY, SATURDAY, SUNDAY = 0, 3, 5, 6


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = date(year, month + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _statutory_holidays(year: int) -> list[date]:
    """5 U.S.C. 6103(a), as it stands (Juneteenth since 2021)."""
    days = [
        date(year, 1, 1),  # New Year's Day
        _nth_weekday(year, 1, MONDAY, 3),  # Birthday of Martin Luther King, Jr.
        _nth_weekday(year, 2, MONDAY, 3),  # Washington's Birthday
        _last_weekday(year, 5, MONDAY),  # Memorial Day
        date(year, 7, 4),  # Independence Day
        _nth_weekday(year, 9, MONDAY, 1),  # Labor Day
        _nth_weekday(year, 10, MONDAY, 2),  # Columbus Day
        date(year, 11, 11),  # Veterans Day
        _nth_weekday(year, 11, THURSDAY, 4),  # Thanksgiving Day
        date(year, 12, 25),  # Christmas Day
    ]
    if year >= 2021:
        days.append(date(year, 6, 19))  # Juneteenth National Independence Day
    return days


def _observed(day: date) -> date:
    """A holiday on a Saturday is observed on the Friday before, on a Sunday on the Monday after (5 U.S.C. 6103(b),
    Executive Order 11582)."""
    if day.weekday() == SATURDAY:
        return day - timedelta(days=1)
    if day.weekday() == SUNDAY:
        return day + timedelta(days=1)
    return day


def _days_off(year: int) -> set[date]:
    return {_observed(day) for y in (year - 1, year, year + 1) for day in _statutory_holidays(y)}


def _oracle_business_day(day: date) -> bool:
    return day.weekday() < SATURDAY and day not in _days_off(day.year)


days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 1), timezones=st.just(UTC))


# No per-example deadline: the first example of a year builds that year's holiday calendar, which took 293 ms on
# the shared 2-core machine (Hypothesis' default deadline is 200 ms); speed is not what these tests check.
@settings(max_examples=2000, deadline=None)
@given(days)
def test_business_days_follow_the_statute_and_the_observed_day_rule(day: date) -> None:
    assert is_business_day(day) == _oracle_business_day(day), day


@pytest.mark.parametrize(
    ("day", "why"),
    [
        (date(2021, 12, 31), "New Year's Day 2022 fell on a Saturday: observed on Friday in the year before"),
        (date(2021, 6, 18), "Juneteenth 2021 fell on a Saturday: observed on the Friday"),
        (date(2022, 6, 20), "Juneteenth 2022 fell on a Sunday: observed on the Monday"),
        (date(2026, 7, 3), "Independence Day 2026 falls on a Saturday"),
        (date(2027, 12, 24), "Christmas Day 2027 falls on a Saturday"),
        (date(2023, 1, 2), "New Year's Day 2023 fell on a Sunday"),
        (date(2025, 11, 27), "Thanksgiving"),
    ],
)
def test_observed_holidays_are_days_off(day: date, why: str) -> None:
    assert not is_business_day(day), why


def test_juneteenth_is_a_business_day_before_it_became_a_holiday() -> None:
    assert is_business_day(date(2020, 6, 19))
    assert not is_business_day(date(2024, 6, 19))


@settings(max_examples=1000, deadline=None)
@given(moments)
def test_report_is_due_at_the_end_of_the_tenth_business_day_after_the_decision_date(decided_at: datetime) -> None:
    due = report_due(decided_at)
    decided_day = eastern_date(decided_at)
    last_day = due.astimezone(EASTERN).date()
    # Counted day by day with the statute's calendar: the decision date is day 0, never counted.
    counted = sum(
        1 for n in range(1, (last_day - decided_day).days + 1) if _oracle_business_day(decided_day + timedelta(n))
    )
    assert counted == 10
    assert _oracle_business_day(last_day), "a report is never due on a weekend or a holiday"
    # Midnight in Washington, EST or EDT, whichever is in force on that day (the UTC hour follows DST).
    local = due.astimezone(EASTERN)
    assert local.time() == time(23, 59, 59, 999_999)
    assert due.utcoffset() == timedelta(0)
    # Two working weeks: at the least from late on a Sunday to the end of the Friday 12 days later (less an hour
    # when DST begins in between).
    assert due - decided_at > timedelta(days=11, hours=23)


@settings(max_examples=500, deadline=None)
@given(moments, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)))
def test_a_later_decision_is_never_due_earlier(decided_at: datetime, later_by: timedelta) -> None:
    assert report_due(decided_at + later_by) >= report_due(decided_at)


@settings(max_examples=500)
@given(days)
def test_a_decision_on_a_day_off_is_due_when_one_on_the_business_day_before_it_is(day: date) -> None:
    """Day 0 counts nothing either way: deciding on Saturday gives the Friday's deadline."""
    previous = day - timedelta(days=1)
    while not is_business_day(previous):
        previous -= timedelta(days=1)
    noon = datetime.combine(day, time(12), tzinfo=EASTERN)
    if not is_business_day(day):
        assert due_date(noon) == due_date(datetime.combine(previous, time(12), tzinfo=EASTERN))
    else:
        assert due_date(noon) == add_business_days(previous, 11)


@pytest.mark.parametrize(
    ("decided_at", "due", "due_utc"),
    [
        # Friday before Christmas 2025: Dec 25 and Jan 1 are skipped.
        (datetime(2025, 12, 19, 15, 0, tzinfo=UTC), date(2026, 1, 6), datetime(2026, 1, 7, 4, 59, 59, 999_999)),
        # 02:30 UTC on Tuesday 6 Jan 2026 is still Monday 5 Jan in Washington (EST): day 0 is the Monday.
        (datetime(2026, 1, 6, 2, 30, tzinfo=UTC), date(2026, 1, 20), datetime(2026, 1, 21, 4, 59, 59, 999_999)),
        # ... and 05:30 UTC is Tuesday there. Jan 19 2026 is Martin Luther King Jr. Day.
        (datetime(2026, 1, 6, 5, 30, tzinfo=UTC), date(2026, 1, 21), datetime(2026, 1, 22, 4, 59, 59, 999_999)),
        # Decided in winter, due after DST began (Sunday 8 March 2026): midnight EDT is 04:00 UTC.
        (datetime(2026, 2, 27, 18, 0, tzinfo=UTC), date(2026, 3, 13), datetime(2026, 3, 14, 3, 59, 59, 999_999)),
        # Decided in summer, due after DST ended (Sunday 1 November 2026): midnight EST is 05:00 UTC again.
        (datetime(2026, 10, 23, 18, 0, tzinfo=UTC), date(2026, 11, 6), datetime(2026, 11, 7, 4, 59, 59, 999_999)),
        # Independence Day 2026 is a Saturday, observed on Friday 3 July.
        (datetime(2026, 6, 26, 12, 0, tzinfo=UTC), date(2026, 7, 13), datetime(2026, 7, 14, 3, 59, 59, 999_999)),
    ],
)
def test_worked_examples(decided_at: datetime, due: date, due_utc: datetime) -> None:
    assert due_date(decided_at) == due
    assert report_due(decided_at) == due_utc.replace(tzinfo=UTC)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        report_due(datetime(2026, 1, 5, 12, 0))


def test_business_days_left_counts_today_and_the_due_date() -> None:
    due = report_due(datetime(2026, 2, 27, 18, 0, tzinfo=UTC))  # due Friday 13 March 2026, end of day EDT

    def at(day: int, hour: int = 9) -> datetime:
        return datetime(2026, 3, day, hour, tzinfo=EASTERN)

    assert business_days_left(due, at(11)) == 3  # Wednesday: Wed, Thu, Fri
    assert business_days_left(due, at(12)) == 2  # Thursday
    assert business_days_left(due, at(13, 23)) == 1  # the due date itself, until midnight
    assert business_days_left(due, at(14, 0)) == 0  # overdue
    # Over a weekend before a Monday deadline: only the Monday is left.
    monday_due = report_due(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))  # Mon 2 March -> Mon 16 March
    assert monday_due.astimezone(EASTERN).date() == date(2026, 3, 16)
    assert business_days_left(monday_due, at(13)) == 2  # Friday: Fri, Mon
    assert business_days_left(monday_due, at(14)) == 1  # Saturday
    assert business_days_left(monday_due, at(15)) == 1  # Sunday
