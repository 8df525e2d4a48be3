"""Spot check: random source records of a day, compared on every column with the lake.

The sample is drawn inside the source without sorting (or hashing) the day: a seeded walk over
the event-time index. The seed gives instants spread at random over the day; for each, the
source seeks the first event time at or after it and, among the rows sharing that instant,
takes the one whose seeded hash of the key is lowest (index seeks only, a few rows hashed).
The same seed and day give the same sample. A row's chance is the time since the row before it
(its share of the day), split evenly among rows of the same instant, so every row, a missing
one included, can be drawn; a day with no more rows than the sample is read whole. Only the
sampled rows cross the network.

On the lake side, finding 10,000 sampled keys in bronze's day meant reading the day whole: on
ADLS, a download of about half of what the backfill had just stored (the largest share of its
traffic back over the link). So the instants are drawn inside the event-time ranges of
SAMPLED_ROW_GROUPS row groups of bronze's day, chosen by the seed from the files' footers,
and the lake reads only the row groups whose range may hold a sampled row's event time:
every copy of a sampled row is found wherever it sits, so a row missing from the lake or a
differing value is still caught, and a day written in event-time order costs a few groups'
bytes. A day with no more row groups than that (or groups without statistics) is sampled
over the whole day, as before.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import random

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from llm_observatory.fingerprint import seeded_hash
from llm_observatory.io.delta_lake import RowGroupSpan, row_group_spans, scan_row_groups
from llm_observatory.layout import bronze_location, day_filter
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.odbc import parameter_text
from llm_observatory.resources.source import (
    SourceDatabase,
    SourceTable,
)
from llm_observatory.tables import TableSpec

SPOT_CHECK = "spot_check_matches_source"
SHOWN_MISMATCHES = 20
VALUE_SHOWN = 100
# The share of bronze's row groups of a day the sample is drawn in (at least one): about 3 %
# of the day's bytes read back, and each run's new seed draws other groups.
SAMPLED_ROW_GROUP_SHARE = 1 / 32
ONE_MICROSECOND = dt.timedelta(microseconds=1)

# Half-open [start, end) ranges of event time the instants are drawn in.
Windows = list[tuple[dt.datetime, dt.datetime]]


def sample_positions(
    day: dt.date, rows: int, seed: str, windows: Windows | None = None
) -> list[dt.datetime]:
    """`rows` instants of the day drawn from `seed` (the same seed, the same instants), spread
    over the `windows` in proportion to their length (the whole day when None)."""
    start, end = day_window(day)
    lengths = [
        (low, int((high - low) / ONE_MICROSECOND)) for low, high in (windows or [(start, end)])
    ]
    lengths = [(low, length) for low, length in lengths if length > 0]
    if not lengths:
        return []
    total = sum(length for _, length in lengths)
    draw = random.Random(f"{day.isoformat()}:{seed}")  # noqa: S311 - a sample, not a secret
    positions = []
    for _ in range(rows):
        offset = draw.randrange(total)
        for low, length in lengths:
            if offset < length:
                positions.append(low + dt.timedelta(microseconds=offset))
                break
            offset -= length
    return sorted(positions)


def _utc(moment: dt.datetime) -> dt.datetime:
    """Aware UTC (a naive event time is UTC in the lake and the source alike)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def sampled_windows(spans: list[RowGroupSpan], day: dt.date, seed: str) -> Windows | None:
    """The event-time ranges, within the day, of the row groups of bronze's day the seed
    chooses (SAMPLED_ROW_GROUP_SHARE of them, at least one); None (sample the whole day) when
    the day has no row group or one lacks statistics."""
    if not spans or any(span.low is None for span in spans):
        return None
    start, end = day_window(day)
    ordered = sorted(spans, key=lambda span: (span.path, span.index))
    chosen = max(1, math.ceil(len(ordered) * SAMPLED_ROW_GROUP_SHARE))
    draw = random.Random(f"{day.isoformat()}:{seed}:row groups")  # noqa: S311 - a sample
    windows = []
    for span in draw.sample(ordered, chosen):
        low = max(_utc(span.low), start)
        high = min(_utc(span.high) + ONE_MICROSECOND, end)
        if low < high:
            windows.append((low, high))
    return windows or None


def _spans_holding(spans: list[RowGroupSpan], moments: list[dt.datetime]) -> list[RowGroupSpan]:
    """The row groups whose event-time range may hold one of `moments` (sorted, aware)."""
    holding = []
    for span in spans:
        if span.low is None or span.high is None:
            holding.append(span)
            continue
        first = bisect.bisect_left(moments, _utc(span.low))
        if first < len(moments) and moments[first] <= _utc(span.high):
            holding.append(span)
    return holding


def instants_table(
    source: SourceDatabase, event_time: sa.Column, positions: list[dt.datetime]
) -> tuple[sa.FromClause, sa.ColumnElement]:
    """The instants as a table from ONE bound parameter, and its column typed as the event
    time: an array unnested on PostgreSQL, a JSON array through OPENJSON on SQL Server (2016 or
    later) and json_each on SQLite. A statement of any number of instants stays one small plan
    (a UNION ALL per instant spent 80 ms planning per 200 on PostgreSQL)."""
    bound = [source.bind_time(position) for position in positions]
    if source.dialect_name == "postgresql":
        array = sa.bindparam("positions", bound, type_=postgresql.ARRAY(event_time.type))
        table = sa.func.unnest(array).table_valued("position").render_derived(name="instants")
        return table, table.c.position
    texts = [parameter_text(moment, event_time.type, source.dialect_name) for moment in bound]
    listing = sa.bindparam("positions", json.dumps(texts))
    if source.dialect_name == "sqlite":
        # SQLite compares the event time's stored text; a CAST would make it a number.
        table = sa.func.json_each(listing).table_valued("value").alias("instants")
        return table, table.c.value
    table = sa.func.openjson(listing).table_valued("value").alias("instants")
    return table, sa.cast(table.c.value, event_time.type)


def sample_query(
    source: SourceDatabase,
    described: SourceTable,
    day: dt.date,
    positions: list[dt.datetime],
    seed: str,
) -> sa.Select:
    """One statement for all `positions`, one row each: the key of the row at the first event
    time at or after the instant (before the day's end), the one with the lowest seeded hash
    of its key among that instant's rows. Two index seeks per instant, correlated to the
    instants' table; the rows themselves are then read by key. Bound parameters only."""
    table, event_time = described.table, described.event_time
    key_name = described.spec.key
    _, end = day_window(day)
    instants, position = instants_table(source, event_time, positions)
    seeking = table.alias("seeking")
    first_at_or_after = (
        sa.select(sa.func.min(seeking.c[event_time.name]))
        .where(
            seeking.c[event_time.name] >= position,
            seeking.c[event_time.name] < sa.bindparam("range_end", source.bind_time(end)),
        )
        .correlate(instants)
        .scalar_subquery()
    )
    picking = table.alias("picking")
    order = seeded_hash(picking.c[key_name], sa.bindparam("seed", seed))
    picked = (
        sa.select(picking.c[key_name])
        .where(picking.c[event_time.name] == first_at_or_after)
        .order_by(order)
        .limit(1)
        .correlate(instants)
        .scalar_subquery()
    )
    return sa.select(picked.label(key_name)).select_from(instants)


def sample_rows(
    source: SourceDatabase,
    described: SourceTable,
    day: dt.date,
    rows: int,
    seed: str,
    windows: Windows | None = None,
) -> pa.Table:
    """The seeded sample of the day from the source, in the order of its instants (the whole
    day when it holds no more than `rows`, counted on the event-time index); the instants are
    drawn inside `windows` when given (see the module's docstring)."""
    schema = described.arrow_schema
    start, end = day_window(day)
    if source.count_rows(described, start, end) <= rows:
        query = source.range_query(described, start, end)
        return pa.Table.from_batches(list(source.stream_query(query, schema)), schema=schema)
    positions = sample_positions(day, rows, seed, windows)
    query = sample_query(source, described, day, positions, seed)
    key_schema = pa.schema([schema.field(described.spec.key)])
    batches = source.stream_query(query, key_schema)
    picks = (key for batch in batches for key in batch.column(0).to_pylist())
    picked = dict.fromkeys(key for key in picks if key is not None)
    keys = list(picked)
    found = pa.Table.from_batches(list(source.rows_by_keys(described, keys)), schema=schema)
    position = {key: n for n, key in enumerate(keys)}
    order = pa.array([position[key] for key in found.column(described.spec.key).to_pylist()])
    return found.take(pc.sort_indices(order))


def same_value(lake_value, source_value) -> bool:
    """Equal values, NaN being equal to NaN (a float column's NaN is copied, not a mismatch)."""
    if isinstance(lake_value, float) and isinstance(source_value, float):
        return lake_value == source_value or (math.isnan(lake_value) and math.isnan(source_value))
    return lake_value == source_value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN] + "…"


def _same_values(source: pa.ChunkedArray, lake: pa.ChunkedArray) -> pa.Array:
    """Row by row, whether the lake holds the source's value: equal, both NULL, or both NaN.
    Vectorised where both sides have one type; value by value (as Python sees them) else."""
    if source.type != lake.type:
        return pa.array(
            [same_value(a, b) for a, b in zip(lake.to_pylist(), source.to_pylist())], pa.bool_()
        )
    try:
        equal = pc.fill_null(pc.equal(source, lake), False)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [same_value(a, b) for a, b in zip(lake.to_pylist(), source.to_pylist())], pa.bool_()
        )
    same = pc.or_(equal, pc.and_(pc.is_null(source), pc.is_null(lake)))
    if pa.types.is_floating(source.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(source), pc.is_nan(lake)), False))
    return pc.fill_null(same, False)


def _latest_copies(
    lake_rows: pa.Table, key: str, change_column: str
) -> tuple[dict[object, int], int]:
    """Per key, the position of its latest version among the lake's rows (after incremental
    loads bronze holds several; one whose version is NULL is older than any other), and how
    many keys have more than one row."""
    latest: dict[object, int] = {}
    copies: dict[object, int] = {}
    versions = lake_rows.column(change_column).to_pylist()
    for position, row_key in enumerate(lake_rows.column(key).to_pylist()):
        copies[row_key] = copies.get(row_key, 0) + 1
        best = latest.get(row_key)
        version = versions[position]
        if best is None or (
            version is not None and (versions[best] is None or version > versions[best])
        ):
            latest[row_key] = position
    return latest, sum(1 for count in copies.values() if count > 1)


def spot_check_result(
    table: TableSpec,
    source: SourceDatabase,
    described: SourceTable,
    lake: LakeResource,
    day: dt.date,
    rows: int,
    seed: str,
) -> dg.AssetCheckResult:
    """The seeded sample against bronze, column by column in Arrow: only the keys (and the
    values that differ) become Python objects, so a day read whole costs little."""
    location = bronze_location(lake, table)
    spans = row_group_spans(location, day_filter(day), described.event_time.name)
    # A day with no more rows than the sample is read whole from the source (sample_rows).
    windows = sampled_windows(spans, day, seed) if sum(s.rows for s in spans) > rows else None
    sampled = sample_rows(source, described, day, rows, seed, windows)
    source_keys = sampled.column(table.key).to_pylist()
    keys = pa.array(source_keys, type=described.arrow_schema.field(table.key).type)
    moments = sorted(
        _utc(moment)
        for moment in sampled.column(described.event_time.name).to_pylist()
        if moment is not None
    )
    holding = _spans_holding(spans, moments)
    chosen = [
        batch.filter(pc.is_in(batch.column(table.key), value_set=keys))
        for batch in scan_row_groups(location, holding, described.arrow_schema.names)
    ]
    lake_rows = (
        pa.Table.from_batches(chosen)
        if chosen
        else pa.Table.from_batches([], schema=described.arrow_schema)
    )
    latest, duplicated = _latest_copies(lake_rows, table.key, table.change_column)
    positions = [latest.get(key) for key in source_keys]
    missing = [key for key, position in zip(source_keys, positions) if position is None]
    present = pa.array([position is not None for position in positions], pa.bool_())
    aligned = lake_rows.take(pa.array(positions, pa.int64()))

    found = []  # (sample position, column position, mismatch), listed in that order
    for number, column in enumerate(sampled.column_names):
        source_values, lake_values = sampled.column(column), aligned.column(column)
        differing = pc.and_(pc.invert(_same_values(source_values, lake_values)), present)
        for row in pc.indices_nonzero(differing).to_pylist():
            mismatch = {
                "key": source_keys[row],
                "column": column,
                "source": _shown(source_values[row].as_py()),
                "lake": _shown(lake_values[row].as_py()),
            }
            found.append((row, number, mismatch))
    mismatches = [mismatch for _, _, mismatch in sorted(found, key=lambda item: item[:2])]
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
            "sampled_rows": len(source_keys),
            "sample_size": rows,
            "seed": seed,
            "missing_keys": dg.MetadataValue.json([str(k) for k in missing[:SHOWN_MISMATCHES]]),
            "mismatches": dg.MetadataValue.json(
                [{**m, "key": str(m["key"])} for m in mismatches[:SHOWN_MISMATCHES]]
            ),
            "keys_with_several_versions": duplicated,
            "sampled_in": (
                "the whole day"
                if windows is None
                else f"{len(windows)} of {len(spans)} row groups' event-time ranges"
            ),
            "row_groups_read": f"{len(holding)} of {len(spans)}",
        },
    )
