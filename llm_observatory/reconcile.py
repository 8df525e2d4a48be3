"""Reconciliation against the source: fingerprints per hour, then bisection down to the keys.

Each row's fingerprint is the MD5 of `key|change-column-in-epoch-microseconds`; an hour's
fingerprint is (rows, sum of the hash's first 32 bits, sum of its next 32 bits): order
independent, computed inside the source with one aggregate query per table and day, and the
same way from the lake (silver plus quarantine: the lake's one row per key). Only where an hour
differs is it narrowed down, by halving key ranges and comparing their fingerprints, until the
differing keys can be listed (missing from the lake, extra in the lake, or a stale version), the
way data-diff/reladiff compare two databases. Only fingerprints and small key sets cross the
network.

SQL Server computes the same fingerprint with `HASHBYTES('MD5', …)` over the key as UTF-8
VARCHAR and `DATEDIFF_BIG(microsecond, '1970-01-01', change)` on the change column brought to
UTC at the precision the lake holds (`source_types.py`); SQLite, which has no hash function,
through a function the source resource registers on each connection.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from llm_observatory.fingerprint import (
    EPOCH,
    Fingerprint,
    HourlyFingerprints,
    column_kind,
    deep_hash_part,
    deep_row_hash_parts,
    hours_and_micros,
    micros,
    row_hash64,
    row_hash_part,
    row_hash_parts,
    utc_hour,
)
from llm_observatory.io.delta_lake import scan_partition
from llm_observatory.layout import day_filter, quarantine_location, silver_location
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import (
    SourceDatabase,
    SourceError,
    SourceTable,
    describe_error,
)
from llm_observatory.tables import TableSpec

RECONCILED_CHECK = "reconciles_with_source"
SHOWN_DIFFERENCES = 20
# Ranges with at most this many rows on each side are compared key by key.
LEAF_ROWS = 256


@dataclass(frozen=True)
class Difference:
    table: str
    day: str
    hour: int
    key: str
    kind: str  # missing | extra | stale
    source_version: str | None
    lake_version: str | None
    raw_key: object = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        text = f"{self.table} {self.day} {self.hour:02d}h key {self.key}: {self.kind}"
        if self.kind == "stale":
            text += f" (source {self.source_version}, lake {self.lake_version})"
        return text


@dataclass
class DayReconciliation:
    table: str
    day: str
    source_rows: int = 0
    lake_rows: int = 0
    hours_compared: int = 0
    hours_differing: list[int] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    source_queries: int = 0

    @property
    def matches(self) -> bool:
        return not self.hours_differing and not self.differences

    def to_dict(self) -> dict:
        data = asdict(self)
        for difference in data["differences"]:
            difference.pop("raw_key", None)
        data["matches"] = self.matches
        return data


# ------------------------------------------------------------------------------- source side


def _hash_parts(described: SourceTable, deep: bool):
    """The two 32-bit halves of each row's fingerprint as SQL expressions."""
    if deep:
        kinds = [column_kind(f.type) for f in described.arrow_schema]
        columns = list(described.table.c)
        return deep_hash_part(columns, kinds, 0), deep_hash_part(columns, kinds, 1)
    key = described.table.c[described.spec.key]
    change = described.table.c[described.spec.change_column]
    return (
        row_hash_part(key, change, sa.literal(0, literal_execute=True)),
        row_hash_part(key, change, sa.literal(1, literal_execute=True)),
    )


def _fingerprint_columns(described: SourceTable, deep: bool = False):
    low, high = _hash_parts(described, deep)
    return [
        sa.func.count().label("rows"),
        sa.func.sum(low).label("low"),
        sa.func.sum(high).label("high"),
    ]


def hourly_fingerprint_query(
    source: SourceDatabase, described: SourceTable, day: dt.date, deep: bool = False
) -> sa.Select:
    start, end = day_window(day)
    in_day = sa.and_(
        described.event_time >= sa.bindparam("range_start", source.bind_time(start)),
        described.event_time < sa.bindparam("range_end", source.bind_time(end)),
    )
    if source.dialect_name == "postgresql" and not deep:
        return _hourly_fingerprint_postgresql(described, in_day)
    hour = utc_hour(described.event_time).label("hour")
    return sa.select(hour, *_fingerprint_columns(described, deep)).where(in_day).group_by(hour)


def _hourly_fingerprint_postgresql(described: SourceTable, in_day) -> sa.Select:
    """MD5 once per row: the two halves are split from one 64-bit value. `OFFSET 0` keeps the
    planner from inlining the subquery (which would evaluate `md5()` once per half)."""
    key = described.table.c[described.spec.key]
    change = described.table.c[described.spec.change_column]
    rows = (
        sa.select(utc_hour(described.event_time).label("hour"), row_hash64(key, change).label("h"))
        .where(in_day)
        .offset(0)
        .subquery("hashed_rows")
    )
    mask = sa.literal(0xFFFFFFFF, sa.BigInteger, literal_execute=True)
    shift = sa.literal(32, sa.Integer, literal_execute=True)
    return sa.select(
        rows.c.hour,
        sa.func.count().label("rows"),
        sa.func.sum(rows.c.h.op(">>")(shift).op("&")(mask)).label("low"),
        sa.func.sum(rows.c.h.op("&")(mask)).label("high"),
    ).group_by(rows.c.hour)


def _range_filter(source, described, start, end, low_key, high_key):
    key = described.table.c[described.spec.key]
    conditions = [
        described.event_time >= sa.bindparam("range_start", source.bind_time(start)),
        described.event_time < sa.bindparam("range_end", source.bind_time(end)),
    ]
    if low_key is not None:
        conditions.append(key >= sa.bindparam("low_key", low_key))
    if high_key is not None:
        conditions.append(key < sa.bindparam("high_key", high_key))
    return sa.and_(*conditions)


class SourceSide:
    """Fingerprints and small key sets from the source, counting the queries it sends."""

    def __init__(self, source: SourceDatabase, described: SourceTable, deep: bool = False) -> None:
        self.source = source
        self.described = described
        self.deep = deep
        self.queries = 0

    def _run(self, query):
        self.queries += 1
        try:
            with self.source.engine.connect() as connection:
                return connection.execute(query).all()
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.source.sa_url, error)) from None

    def hourly(self, day: dt.date) -> dict[int, Fingerprint]:
        rows = self._run(hourly_fingerprint_query(self.source, self.described, day, self.deep))
        return {
            int(hour): Fingerprint(int(count), int(low or 0), int(high or 0))
            for hour, count, low, high in rows
        }

    def range_fingerprint(self, start, end, low_key, high_key) -> Fingerprint:
        query = sa.select(*_fingerprint_columns(self.described, self.deep)).where(
            _range_filter(self.source, self.described, start, end, low_key, high_key)
        )
        count, low, high = self._run(query)[0]
        return Fingerprint(int(count), int(low or 0), int(high or 0))

    def versions(self, start, end, low_key, high_key) -> dict:
        """{key: version} of a small range; in deep mode the version carries the row's hash."""
        table = self.described.table
        selected = [table.c[self.described.spec.key], table.c[self.described.spec.change_column]]
        if self.deep:
            selected += list(_hash_parts(self.described, deep=True))
        query = sa.select(*selected).where(
            _range_filter(self.source, self.described, start, end, low_key, high_key)
        )
        if not self.deep:
            return {key: micros(_as_utc(version)) for key, version in self._run(query)}
        return {
            key: (micros(_as_utc(version)), int(low), int(high))
            for key, version, low, high in self._run(query)
        }

    def versions_of(self, keys: list, start, end) -> dict:
        if not keys:
            return {}
        table = self.described.table
        key_column = table.c[self.described.spec.key]
        query = sa.select(key_column, table.c[self.described.spec.change_column]).where(
            _range_filter(self.source, self.described, start, end, None, None),
            key_column.in_(sa.bindparam("keys", list(keys), expanding=True)),
        )
        return {key: micros(_as_utc(version)) for key, version in self._run(query)}

    def median_key(self, start, end, low_key, high_key, rows: int):
        key = self.described.table.c[self.described.spec.key]
        query = (
            sa.select(key)
            .where(_range_filter(self.source, self.described, start, end, low_key, high_key))
            .order_by(key)
            .offset(rows // 2)
            .limit(1)
        )
        found = self._run(query)
        return found[0][0] if found else None


def _as_utc(value):
    if isinstance(value, str):  # SQLite hands back text when types are not declared
        value = dt.datetime.fromisoformat(value)
    return value


# --------------------------------------------------------------------------------- lake side


def _lake_batches(
    table: TableSpec,
    lake: LakeResource,
    day: dt.date,
    deep_schema: pa.Schema | None,
    hours_wanted: set[int] | None = None,
):
    """(hours, change micros, batch) of the lake's day (silver + quarantine), streamed."""
    columns = [table.key, table.event_time, table.change_column]
    if deep_schema is not None:
        columns += [name for name in deep_schema.names if name not in columns]
    for location in (silver_location(lake, table), quarantine_location(lake, table)):
        for batch in scan_partition(location, day_filter(day), columns):
            hours, change_micros = hours_and_micros(batch.column(1), batch.column(2))
            if hours_wanted is not None:
                wanted = pc.is_in(hours, value_set=pa.array(sorted(hours_wanted), hours.type))
                batch, hours = batch.filter(wanted), hours.filter(wanted)
                change_micros = change_micros.filter(wanted)
                if batch.num_rows == 0:
                    continue
            yield hours, change_micros, batch


def _lake_rows(
    table: TableSpec,
    lake: LakeResource,
    day: dt.date,
    deep_schema: pa.Schema | None,
    hours_wanted: set[int] | None = None,
):
    """(hour, key, version) of the lake's rows of the day (silver + quarantine), streamed.

    The version is the change column in epoch microseconds; with `deep_schema` (the source's
    columns) it is (micros, row hash halves) over every column's canonical text.
    """
    if deep_schema is not None:
        kinds = [column_kind(field.type) for field in deep_schema]
    for hours, change_micros, batch in _lake_batches(table, lake, day, deep_schema, hours_wanted):
        keys = batch.column(0).to_pylist()
        if deep_schema is None:
            yield from zip(hours.to_pylist(), keys, change_micros.to_pylist())
            continue
        rows = batch.select(deep_schema.names).to_pylist()
        for hour, key, version, row in zip(
            hours.to_pylist(), keys, change_micros.to_pylist(), rows
        ):
            yield hour, key, (version, *deep_row_hash_parts(list(row.values()), kinds))


def lake_versions_by_hour(
    table: TableSpec,
    lake: LakeResource,
    day: dt.date,
    deep_schema: pa.Schema | None = None,
    hours: set[int] | None = None,
) -> dict[int, dict]:
    """{hour: {key: version}} for the given hours (all by default); only differing hours need
    their keys in memory, so reconciliation builds this for those alone."""
    by_hour: dict[int, dict] = defaultdict(dict)
    for hour, key, version in _lake_rows(table, lake, day, deep_schema, hours):
        by_hour[hour][key] = version
    return by_hour


def lake_hourly_fingerprints(
    table: TableSpec, lake: LakeResource, day: dt.date, deep_schema: pa.Schema | None = None
) -> dict[int, Fingerprint]:
    """Per-hour fingerprints of the lake's day in one streaming pass, keeping only the sums."""
    if deep_schema is None:
        fingerprints = HourlyFingerprints()
        for hours, change_micros, batch in _lake_batches(table, lake, day, None):
            fingerprints.add_hours(batch.column(0), hours, change_micros)
        return fingerprints.result()
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for hour, key, version in _lake_rows(table, lake, day, deep_schema):
        if isinstance(version, tuple):
            _, low, high = version
        else:
            low, high = row_hash_parts(key, version)
        total = sums[hour]
        total[0] += 1
        total[1] += low
        total[2] += high
    return {hour: Fingerprint(*total) for hour, total in sums.items()}


def lake_fingerprint(versions: dict, low_key=None, high_key=None) -> Fingerprint:
    rows = low = high = 0
    for key, version in versions.items():
        if (low_key is not None and key < low_key) or (high_key is not None and key >= high_key):
            continue
        if isinstance(version, tuple):  # deep mode: the row's own hash
            _, part_low, part_high = version
        else:
            part_low, part_high = row_hash_parts(key, version)
        rows, low, high = rows + 1, low + part_low, high + part_high
    return Fingerprint(rows, low, high)


# ----------------------------------------------------------------------------------- compare


def reconcile_day(
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    day: dt.date,
    deep: bool = False,
    recorded: dict[int, Fingerprint] | None = None,
) -> DayReconciliation:
    """Compares the day hour by hour; `deep` fingerprints every column, not only key and
    version, so a value changed in transit is found too. `recorded`: the lake side's
    fingerprints as the one pass recorded them with the commit of the day's current files
    (checks/day_profile.py); the files are read only to narrow down an hour that differs."""
    described = source.describe_table(table)
    side = SourceSide(source, described, deep)
    deep_schema = described.arrow_schema if deep else None
    result = DayReconciliation(table=table.name, day=day.isoformat())
    # The source aggregates while the lake side reads and hashes: the two overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-fingerprints") as pool:
        source_future = pool.submit(side.hourly, day)
        lake_fingerprints = (
            recorded
            if recorded is not None and not deep
            else lake_hourly_fingerprints(table, lake, day, deep_schema)
        )
        source_hours = source_future.result()
    result.source_rows = sum(fp.rows for fp in source_hours.values())
    result.lake_rows = sum(fp.rows for fp in lake_fingerprints.values())
    result.hours_compared = 24
    result.hours_differing = [
        hour
        for hour in range(24)
        if source_hours.get(hour, Fingerprint()) != lake_fingerprints.get(hour, Fingerprint())
    ]
    # Only the differing hours' keys are held in memory, to narrow them down.
    lake_hours = (
        lake_versions_by_hour(table, lake, day, deep_schema, set(result.hours_differing))
        if result.hours_differing
        else {}
    )
    day_start, _ = day_window(day)
    for hour in result.hours_differing:
        lake_versions = lake_hours.get(hour, {})
        start = day_start + dt.timedelta(hours=hour)
        end = start + dt.timedelta(hours=1)
        found = _narrow(table, side, lake_versions, start, end, None, None, day, hour)
        # Keys the lake holds in this hour that the source has elsewhere or not at all.
        extra_candidates = [d.raw_key for d in found if d.kind == "extra"]
        if extra_candidates:
            still_there = side.versions_of(extra_candidates, start, end)
            found = [d for d in found if d.kind != "extra" or d.raw_key not in still_there]
        result.differences.extend(found)
    result.source_queries = side.queries
    return result


def _narrow(table, side, lake_versions, start, end, low_key, high_key, day, hour):
    source_fp = side.range_fingerprint(start, end, low_key, high_key)
    lake_fp = lake_fingerprint(lake_versions, low_key, high_key)
    if source_fp == lake_fp:
        return []
    if source_fp.rows <= LEAF_ROWS and lake_fp.rows <= LEAF_ROWS:
        source_versions = side.versions(start, end, low_key, high_key)
        lake_in_range = {
            key: version
            for key, version in lake_versions.items()
            if (low_key is None or key >= low_key) and (high_key is None or key < high_key)
        }
        return _differences(table, day, hour, source_versions, lake_in_range, lake_versions)
    middle = side.median_key(start, end, low_key, high_key, source_fp.rows)
    if middle is None or middle == low_key:
        ordered = sorted(
            k
            for k in lake_versions
            if (low_key is None or k >= low_key) and (high_key is None or k < high_key)
        )
        middle = ordered[len(ordered) // 2] if ordered else None
    if middle is None or middle == low_key:
        source_versions = side.versions(start, end, low_key, high_key)
        return _differences(table, day, hour, source_versions, {}, lake_versions)
    return _narrow(table, side, lake_versions, start, end, low_key, middle, day, hour) + _narrow(
        table, side, lake_versions, start, end, middle, high_key, day, hour
    )


def _differences(table, day, hour, source_versions, lake_in_range, lake_hour) -> list[Difference]:
    found = []
    for key, version in source_versions.items():
        if key not in lake_hour:
            kind = "missing"
        elif lake_hour[key] == version:
            continue
        elif _version_of(lake_hour[key]) != _version_of(version):
            kind = "stale"
        else:
            kind = "changed"  # same version, other values: altered in transit or storage
        found.append(
            Difference(
                table.name,
                day.isoformat(),
                hour,
                str(key),
                kind,
                _shown(version),
                _shown(lake_hour.get(key)),
                raw_key=key,
            )
        )
    for key, version in lake_in_range.items():
        if key not in source_versions:
            found.append(
                Difference(
                    table.name,
                    day.isoformat(),
                    hour,
                    str(key),
                    "extra",
                    None,
                    _shown(version),
                    raw_key=key,
                )
            )
    return found


def _version_of(version):
    return version[0] if isinstance(version, tuple) else version


def _shown(version) -> str | None:
    version_micros = _version_of(version)
    if version_micros is None:
        return None
    return (EPOCH + dt.timedelta(microseconds=version_micros)).isoformat()


def reconciliation_result(result: DayReconciliation) -> dg.AssetCheckResult:
    """The day's reconciliation as an ERROR check naming the partition and the keys."""
    return dg.AssetCheckResult(
        check_name=RECONCILED_CHECK,
        passed=result.matches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if result.matches
        else (
            f"partition {result.day}: {len(result.differences)} difference(s) in hour(s) "
            f"{result.hours_differing}"
        ),
        metadata={
            "partition": result.day,
            "source_rows": result.source_rows,
            "lake_rows": result.lake_rows,
            "hours_differing": dg.MetadataValue.json(result.hours_differing),
            "differences": dg.MetadataValue.json(
                [d.describe() for d in result.differences[:SHOWN_DIFFERENCES]]
            ),
            "source_queries": result.source_queries,
        },
    )
