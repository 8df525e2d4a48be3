"""Timestamps: every row sits in its partition's UTC day, and empty hours are explained.

An hour without rows in the lake is a loss unless the source has no rows in that hour either
(then it is a fact of the data: the hour gap is reported as a WARN, never as a failure of the
migration).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.io.delta_lake import scan_partition
from llm_observatory.layout import day_filter
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeLocation
from llm_observatory.resources.source import SourceDatabase, SourceTable
from llm_observatory.tables import TableSpec

IN_PARTITION_CHECK = "event_times_inside_partition_day"
HOUR_GAPS_CHECK = "hour_gaps_explained_by_source"
SHOWN_KEYS = 20


class EventTimes:
    """Rows per UTC hour inside a day, and the rows outside it (their count, the first keys),
    accumulated batch by batch: from the lake's files, or from the rows as they are written."""

    def __init__(self, day: dt.date) -> None:
        start, end = day_window(day)
        self.start = pa.scalar(start, pa.timestamp("us", tz="UTC"))
        self.end = pa.scalar(end, pa.timestamp("us", tz="UTC"))
        self.per_hour = [0] * 24
        self.outside_keys: list = []
        self.outside = 0

    def add(self, keys: pa.Array, times: pa.Array) -> None:
        if times.type.tz is None:
            times = pc.assume_timezone(times, "UTC")
        times = pc.cast(times, pa.timestamp("us", tz="UTC"))
        inside = pc.and_(pc.greater_equal(times, self.start), pc.less(times, self.end))
        inside = pc.fill_null(inside, False)
        outside_mask = pc.invert(inside)
        count_outside = pc.sum(outside_mask).as_py() or 0
        if count_outside:
            self.outside += count_outside
            if len(self.outside_keys) < SHOWN_KEYS:
                shown = keys.filter(outside_mask).to_pylist()
                self.outside_keys.extend(shown[: SHOWN_KEYS - len(self.outside_keys)])
        hours = pc.hour(times.filter(inside))
        for hour, count in zip(*pc.value_counts(hours).flatten()):
            self.per_hour[hour.as_py()] += count.as_py()

    def result(self) -> tuple[list[int], list, int]:
        return self.per_hour, self.outside_keys, self.outside


def lake_event_profile(
    location: LakeLocation, table: TableSpec, day: dt.date
) -> tuple[list[int], list, int]:
    """Rows per UTC hour inside the day, keys of rows outside it, and their count."""
    profile = EventTimes(day)
    for batch in scan_partition(location, day_filter(day), [table.key, table.event_time]):
        profile.add(batch.column(0), batch.column(1))
    return profile.result()


def source_rows_per_hour(source: SourceDatabase, described: SourceTable, day: dt.date) -> list[int]:
    """One indexed range count per hour (24 small queries, never a scan or `DATEPART`)."""
    start, _ = day_window(day)
    return [
        source.count_rows(
            described, start + dt.timedelta(hours=hour), start + dt.timedelta(hours=hour + 1)
        )
        for hour in range(24)
    ]


def timestamp_results(
    table: TableSpec,
    location: LakeLocation,
    day: dt.date,
    source: SourceDatabase | None = None,
    described: SourceTable | None = None,
    recorded: tuple[list[int], list, int] | None = None,
) -> list[dg.AssetCheckResult]:
    """`recorded`: the profile the one pass recorded with the commit of the day's current
    files (checks/day_profile.py), else the files are read."""
    per_hour, outside_keys, outside = recorded or lake_event_profile(location, table, day)
    results = [
        dg.AssetCheckResult(
            check_name=IN_PARTITION_CHECK,
            passed=outside == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if outside == 0
            else f"partition {day}: {outside} row(s) with an event time outside the day",
            metadata={
                "partition": day.isoformat(),
                "rows_outside_day": outside,
                "first_keys_outside": dg.MetadataValue.json(outside_keys),
            },
        )
    ]
    if source is None or described is None:
        return results
    empty_in_lake = [hour for hour, count in enumerate(per_hour) if count == 0]
    # The source is asked only when the lake has an empty hour: a full day costs nothing.
    source_hours = source_rows_per_hour(source, described, day) if empty_in_lake else []
    lost = [hour for hour in empty_in_lake if source_hours[hour] > 0]
    in_source_too = [hour for hour in empty_in_lake if hour not in lost]
    if lost:
        passed, severity = False, dg.AssetCheckSeverity.ERROR
        description = (
            f"partition {day}: hour(s) {lost} are empty in the lake but hold rows in the source"
        )
    elif in_source_too and len(in_source_too) < 24:  # a day without rows is no gap
        passed, severity = False, dg.AssetCheckSeverity.WARN
        description = f"partition {day}: hour(s) {in_source_too} have no rows in the source either"
    else:
        passed, severity, description = True, dg.AssetCheckSeverity.WARN, None
    results.append(
        dg.AssetCheckResult(
            check_name=HOUR_GAPS_CHECK,
            passed=passed,
            severity=severity,
            description=description,
            metadata={
                "partition": day.isoformat(),
                "lake_rows_per_hour": dg.MetadataValue.json(per_hour),
                "source_rows_per_hour": dg.MetadataValue.json(source_hours),
                "gaps_lost_in_lake": dg.MetadataValue.json(lost),
                "gaps_in_source_too": dg.MetadataValue.json(in_source_too),
            },
        )
    )
    return results
