"""Row-count checks: nothing lost between the source, bronze, silver and quarantine.

Counts are exact by default. Each result says what was compared (expected, actual, the
difference), so the check report shows the evidence, not only a verdict.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from llm_observatory.io.delta_lake import count_partition_rows
from llm_observatory.layout import (
    bronze_location,
    day_filter,
    quarantine_location,
    silver_location,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase, SourceTable
from llm_observatory.tables import TableSpec

BRONZE_ROWS_CHECK = "bronze_rows_match_source"
SILVER_ROWS_CHECK = "silver_plus_quarantine_match_bronze"


def within_tolerance(actual: int, expected: int, tolerance: float) -> bool:
    """Exact at tolerance 0 (the default), else |actual - expected| <= tolerance x expected."""
    if tolerance <= 0:
        return actual == expected
    return abs(actual - expected) <= tolerance * expected


def bronze_matches_source(
    table: TableSpec,
    source: SourceDatabase,
    described: SourceTable,
    lake: LakeResource,
    start: dt.datetime,
    end: dt.datetime,
) -> dg.AssetCheckResult:
    """Re-counts both sides independently of the copy: the source by query, bronze by its files."""
    source_rows = source.count_rows(described, start, end)
    bronze_rows = count_partition_rows(bronze_location(lake, table), day_filter(start.date()))
    return dg.AssetCheckResult(
        check_name=BRONZE_ROWS_CHECK,
        passed=within_tolerance(bronze_rows, source_rows, table.row_count_tolerance),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "source_rows": source_rows,
            "bronze_rows": bronze_rows,
            "difference": bronze_rows - source_rows,
            "tolerance": table.row_count_tolerance,
            "range": f"[{start.isoformat()}, {end.isoformat()})",
        },
    )


def silver_accounts_for_bronze(
    table: TableSpec, lake: LakeResource, day: dt.date, bronze_keys: int, bronze_rows: int
) -> dg.AssetCheckResult:
    """Every bronze key of the day is in silver or in quarantine, exactly once."""
    silver_rows = count_partition_rows(silver_location(lake, table), day_filter(day))
    quarantined = count_partition_rows(quarantine_location(lake, table), day_filter(day))
    return dg.AssetCheckResult(
        check_name=SILVER_ROWS_CHECK,
        passed=within_tolerance(silver_rows + quarantined, bronze_keys, table.row_count_tolerance),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "bronze_rows": bronze_rows,
            "bronze_distinct_keys": bronze_keys,
            "silver_rows": silver_rows,
            "quarantined_rows": quarantined,
            "difference": silver_rows + quarantined - bronze_keys,
            "tolerance": table.row_count_tolerance,
        },
    )
