"""The one daily partitioning every historical asset shares: UTC days of the event time."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

# The synthetic demo database starts here; it is the default first partition (LLM_OBS_START_DATE).
DEMO_START_DATE = dt.date(2026, 11, 1)
DEMO_DAYS = 7


def start_date() -> dt.date:
    configured = os.environ.get("LLM_OBS_START_DATE")
    if not configured:
        return DEMO_START_DATE
    try:
        return dt.date.fromisoformat(configured)
    except ValueError:
        raise ValueError(
            f"LLM_OBS_START_DATE must be a day as YYYY-MM-DD, got {configured!r}"
        ) from None


daily_partitions = dg.DailyPartitionsDefinition(
    start_date=start_date().isoformat(), timezone="UTC", fmt="%Y-%m-%d"
)


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Half-open UTC range [day 00:00, next day 00:00) of one partition."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from `first` to `last`, both included."""
    if last < first:
        raise ValueError(f"the end day {last} is before the start day {first}")
    return [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
