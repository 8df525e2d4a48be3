"""Spot check: random source records of a day, compared on every column with the lake.

The sample is drawn inside the source, ordered by a seeded hash of the key (the same seed and
day give the same sample), so a row missing from the lake is as likely to be drawn as any
other. Only the sampled rows cross the network.
"""

from __future__ import annotations

import datetime as dt
import math

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


def sample_query(
    source: SourceDatabase, described: SourceTable, day: dt.date, rows: int, seed: str
) -> sa.Select:
    start, end = day_window(day)
    order = seeded_hash(described.table.c[described.spec.key], sa.bindparam("seed", seed))
    return source.range_query(described, start, end).order_by(order).limit(rows)


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
    query = sample_query(source, described, day, rows, seed)
    sampled = pa.Table.from_batches(
        list(source.stream_query(query, described.arrow_schema)), schema=described.arrow_schema
    )
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
