"""Spot check: random source records of a day, compared on every column with the lake.

The sample is drawn inside the source without sorting (or hashing) the day: a seeded walk over
the event-time index. The seed gives instants spread at random over the day; for each, the
source seeks the first event time at or after it and, among the rows sharing that instant,
takes the one whose seeded hash of the key is lowest (index seeks only, a few rows hashed).
The same seed and day give the same sample. A row's chance is the time since the row before it
(its share of the day), split evenly among rows of the same instant, so every row, a missing
one included, can be drawn; a day with no more rows than the sample is read whole. Only the
sampled rows cross the network.
"""

from __future__ import annotations

import datetime as dt
import math
import random

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from llm_observatory.io.delta_lake import scan_partition
from llm_observatory.layout import bronze_location, day_filter
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import (
    SQLITE_HASH_FUNCTION,
    SourceDatabase,
    SourceTable,
)
from llm_observatory.tables import TableSpec

SPOT_CHECK = "spot_check_matches_source"
SHOWN_MISMATCHES = 20
VALUE_SHOWN = 100


class seeded_hash(FunctionElement):  # noqa: N801 - SQL function names are lower case
    """md5 of `column || seed` in the source's own SQL: a repeatable pseudo-random order."""

    type = sa.String()
    inherit_cache = True
    name = "seeded_hash"


@compiles(seeded_hash, "postgresql")
def _seeded_hash_postgresql(element, compiler, **kw):
    column, seed = list(element.clauses)
    return f"md5(CAST({compiler.process(column, **kw)} AS TEXT) || {compiler.process(seed, **kw)})"


@compiles(seeded_hash, "mssql")
def _seeded_hash_mssql(element, compiler, **kw):
    column, seed = list(element.clauses)
    return (
        f"HASHBYTES('MD5', CONCAT(CAST({compiler.process(column, **kw)} AS NVARCHAR(400)), "
        f"{compiler.process(seed, **kw)}))"
    )


@compiles(seeded_hash)
def _seeded_hash_default(element, compiler, **kw):
    # SQLite has no hash function: the source resource registers this one on each connection.
    column, seed = list(element.clauses)
    return (
        f"{SQLITE_HASH_FUNCTION}(CAST({compiler.process(column, **kw)} AS TEXT) || "
        f"{compiler.process(seed, **kw)})"
    )


# Walk positions per statement: well below SQL Server's 2,100 parameters (one each, plus two).
POSITIONS_PER_QUERY = 200


def sample_positions(day: dt.date, rows: int, seed: str) -> list[dt.datetime]:
    """`rows` instants of the day drawn from `seed` (the same seed, the same instants)."""
    start, end = day_window(day)
    span_us = int((end - start) / dt.timedelta(microseconds=1))
    draw = random.Random(f"{day.isoformat()}:{seed}")  # noqa: S311 - a sample, not a secret
    return sorted(start + dt.timedelta(microseconds=draw.randrange(span_us)) for _ in range(rows))


def sample_query(
    source: SourceDatabase, described: SourceTable, day: dt.date, positions: list[dt.datetime],
    seed: str,
) -> sa.CompoundSelect | sa.Select:
    """One statement for `positions` (at most POSITIONS_PER_QUERY): per instant, the row at
    the first event time at or after it (before the day's end), the lowest seeded hash of the
    key among that instant's rows. Index seeks on the event-time index; bound parameters."""
    table, event_time = described.table, described.event_time
    _, end = day_window(day)
    day_end = sa.bindparam("range_end", source.bind_time(end))
    order = seeded_hash(table.c[described.spec.key], sa.bindparam("seed", seed))
    picks = []
    for n, position in enumerate(positions):
        first_at_or_after = (
            sa.select(sa.func.min(event_time))
            .where(
                event_time >= sa.bindparam(f"position_{n}", source.bind_time(position)),
                event_time < day_end,
            )
            .correlate(None)
            .scalar_subquery()
        )
        pick = sa.select(*table.c).where(event_time == first_at_or_after).order_by(order).limit(1)
        picks.append(sa.select(pick.subquery(f"pick_{n}")))
    return picks[0] if len(picks) == 1 else sa.union_all(*picks)


def sample_rows(
    source: SourceDatabase, described: SourceTable, day: dt.date, rows: int, seed: str
) -> pa.Table:
    """The seeded sample of the day from the source (the whole day when it holds no more than
    `rows`, counted on the event-time index)."""
    schema = described.arrow_schema
    start, end = day_window(day)
    if source.count_rows(described, start, end) <= rows:
        queries = [source.range_query(described, start, end)]
    else:
        positions = sample_positions(day, rows, seed)
        queries = [
            sample_query(source, described, day, positions[n : n + POSITIONS_PER_QUERY], seed)
            for n in range(0, len(positions), POSITIONS_PER_QUERY)
        ]
    batches = [batch for query in queries for batch in source.stream_query(query, schema)]
    return pa.Table.from_batches(batches, schema=schema)


def same_value(lake_value, source_value) -> bool:
    """Equal values, NaN being equal to NaN (a float column's NaN is copied, not a mismatch)."""
    if isinstance(lake_value, float) and isinstance(source_value, float):
        return lake_value == source_value or (math.isnan(lake_value) and math.isnan(source_value))
    return lake_value == source_value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN] + "…"


def spot_check_result(
    table: TableSpec,
    source: SourceDatabase,
    described: SourceTable,
    lake: LakeResource,
    day: dt.date,
    rows: int,
    seed: str,
) -> dg.AssetCheckResult:
    sampled = sample_rows(source, described, day, rows, seed)
    sample_by_key = {row[table.key]: row for row in sampled.to_pylist()}
    keys = pa.array(list(sample_by_key), type=described.arrow_schema.field(table.key).type)
    lake_by_key: dict = {}
    for batch in scan_partition(
        bronze_location(lake, table), day_filter(day), described.arrow_schema.names
    ):
        chosen = batch.filter(pc.is_in(batch.column(table.key), value_set=keys))
        for row in chosen.to_pylist():
            lake_by_key.setdefault(row[table.key], []).append(row)

    mismatches, missing, duplicated = [], [], []
    for key, source_row in sample_by_key.items():
        copies = lake_by_key.get(key)
        if not copies:
            missing.append(key)
            continue
        if len(copies) > 1:
            duplicated.append(key)
        # After incremental loads bronze holds several versions: compare with the latest.
        lake_row = max(
            copies, key=lambda row: (row[table.change_column] is not None, row[table.change_column])
        )
        for column, source_value in source_row.items():
            if not same_value(lake_row.get(column), source_value):
                mismatches.append(
                    {
                        "key": key,
                        "column": column,
                        "source": _shown(source_value),
                        "lake": _shown(lake_row.get(column)),
                    }
                )
    passed = not (mismatches or missing)
    description = None
    if not passed:
        description = (
            f"partition {day}: {len(missing)} sampled row(s) missing from bronze, "
            f"{len(mismatches)} differing value(s)"
        )
    return dg.AssetCheckResult(
        check_name=SPOT_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "partition": day.isoformat(),
            "sampled_rows": len(sample_by_key),
            "sample_size": rows,
            "seed": seed,
            "missing_keys": dg.MetadataValue.json([str(k) for k in missing[:SHOWN_MISMATCHES]]),
            "mismatches": dg.MetadataValue.json(
                [{**m, "key": str(m["key"])} for m in mismatches[:SHOWN_MISMATCHES]]
            ),
            "keys_with_several_versions": len(duplicated),
        },
    )
