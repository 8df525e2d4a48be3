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
import decimal
import hashlib
import math
import struct
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from llm_observatory.io.delta_lake import scan_partition
from llm_observatory.layout import day_filter, quarantine_location, silver_location
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import (
    SQLITE_DEEP_HASH_FUNCTION,
    SQLITE_ROW_HASH_FUNCTION,
    SourceDatabase,
    SourceError,
    SourceTable,
)
from llm_observatory.resources.source_types import (
    is_time_of_day,
    mssql_epoch_micros,
    mssql_time_text,
    mssql_timestamp_text,
    mssql_type,
    mssql_utc_datetime2,
    mssql_utf8,
)
from llm_observatory.tables import TableSpec

RECONCILED_CHECK = "reconciles_with_source"
SHOWN_DIFFERENCES = 20
# Ranges with at most this many rows on each side are compared key by key.
LEAF_ROWS = 256
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Fingerprint:
    rows: int = 0
    low: int = 0
    high: int = 0

    def __add__(self, other: Fingerprint) -> Fingerprint:
        return Fingerprint(self.rows + other.rows, self.low + other.low, self.high + other.high)


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


# ---------------------------------------------------------------------------------- row hashes


def micros(moment: dt.datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def row_hash_parts(key, change_micros: int | None) -> tuple[int, int]:
    """The two 32-bit halves that both sides sum; NULL versions hash as the empty string."""
    text = f"{key}|{'' if change_micros is None else change_micros}"
    digest = hashlib.md5(text.encode("utf-8")).digest()  # noqa: S324 - a fingerprint, not security
    first_eight = int.from_bytes(digest[:8], "big")
    return first_eight >> 32, first_eight & 0xFFFFFFFF


class row_hash_part(FunctionElement):  # noqa: N801 - SQL function names are lower case
    """One 32-bit half (`part` 0 or 1) of a row's MD5 fingerprint, in the source's SQL."""

    type = sa.BigInteger()
    inherit_cache = True
    name = "row_hash_part"


def _parts(element):
    key, change, part = list(element.clauses)
    return key, change, int(part.value)


def _key_version_text_postgresql(key_sql: str, change_sql: str) -> str:
    """`key|epoch-microseconds` (empty version for NULL), as `row_hash_parts` spells it."""
    return (
        f"CAST({key_sql} AS TEXT) || '|' || COALESCE(CAST(CAST(EXTRACT(EPOCH FROM {change_sql}) "
        f"* 1000000 AS BIGINT) AS TEXT), '')"
    )


@compiles(row_hash_part, "postgresql")
def _row_hash_postgresql(element, compiler, **kw):
    key, change, part = _parts(element)
    key_sql, change_sql = compiler.process(key, **kw), compiler.process(change, **kw)
    text = _key_version_text_postgresql(key_sql, change_sql)
    return (
        f"CAST(('x' || lpad(substr(md5({text}), {1 + 8 * part}, 8), 16, '0')) AS BIT(64))::BIGINT"
    )


@compiles(row_hash_part, "mssql")
def _row_hash_mssql(element, compiler, **kw):
    key, change, part = _parts(element)
    key_sql, change_sql = compiler.process(key, **kw), compiler.process(change, **kw)
    micros_sql = mssql_epoch_micros(change_sql, mssql_type(change))
    text = mssql_utf8(
        f"CONCAT(CAST({key_sql} AS NVARCHAR(400)), N'|', CAST({micros_sql} AS NVARCHAR(20)))",
        "1700",
    )
    return f"CAST(SUBSTRING(HASHBYTES('MD5', {text}), {1 + 4 * part}, 4) AS BIGINT)"


@compiles(row_hash_part)
def _row_hash_default(element, compiler, **kw):
    key, change, part = _parts(element)
    return (
        f"{SQLITE_ROW_HASH_FUNCTION}({compiler.process(key, **kw)}, "
        f"{compiler.process(change, **kw)}, {part})"
    )


class utc_hour(FunctionElement):  # noqa: N801
    """Hour of day (0-23, UTC) of a timestamp column, for grouping within one day's range."""

    type = sa.Integer()
    inherit_cache = True
    name = "utc_hour"


@compiles(utc_hour, "postgresql")
def _utc_hour_postgresql(element, compiler, **kw):
    (column,) = list(element.clauses)
    return (
        f"CAST(EXTRACT(HOUR FROM {compiler.process(column, **kw)} AT TIME ZONE 'UTC') AS INTEGER)"
    )


@compiles(utc_hour, "mssql")
def _utc_hour_mssql(element, compiler, **kw):
    (column,) = list(element.clauses)
    moment = mssql_utc_datetime2(compiler.process(column, **kw), mssql_type(column))
    return f"DATEPART(hour, {moment})"


@compiles(utc_hour)
def _utc_hour_default(element, compiler, **kw):
    (column,) = list(element.clauses)
    return f"CAST(strftime('%H', {compiler.process(column, **kw)}) AS INTEGER)"


# ------------------------------------------------------------------ deep mode: every column

FIELD_SEPARATOR = "\x1f"
NULL_TEXT = "\\N"


def column_kind(data_type: pa.DataType) -> str:
    """How a column is written canonically: the same text on both sides of the comparison."""
    if pa.types.is_timestamp(data_type):
        return "ts"
    if pa.types.is_decimal(data_type):
        return f"d{data_type.scale}"
    if pa.types.is_boolean(data_type):
        return "b"
    if pa.types.is_floating(data_type):
        return "f"
    if pa.types.is_integer(data_type):
        return "i"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return "x"
    return "s"


def canonical_text(value, kind: str) -> str:
    """NULL as \\N, decimals at their scale, instants to the microsecond in UTC (four-digit
    years), floats as their IEEE 754 bits in hex (NaN as `NaN`: no database spells a float's
    shortest text the same), binary in lower-case hex, text as is."""
    if value is None:
        return NULL_TEXT
    if kind == "ts":
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        # isoformat, not strftime: strftime writes the year 1 as "1", not "0001".
        return value.isoformat(timespec="microseconds")
    if kind == "date":
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    if kind[1:].isdigit():
        return format(decimal.Decimal(str(value)), f".{int(kind[1:])}f")
    if kind == "b":
        return "true" if value else "false"
    if kind == "f":
        value = float(value)
        return "NaN" if math.isnan(value) else struct.pack(">d", value).hex()
    if kind == "x":
        return bytes(value).hex()
    return str(value)


def deep_row_hash_parts(values: list, kinds: list[str]) -> tuple[int, int]:
    text = FIELD_SEPARATOR.join(canonical_text(v, k) for v, k in zip(values, kinds))
    digest = hashlib.md5(text.encode("utf-8")).digest()  # noqa: S324 - a fingerprint
    return int.from_bytes(digest[0:4], "big"), int.from_bytes(digest[4:8], "big")


class deep_hash_part(FunctionElement):  # noqa: N801
    """One 32-bit half of the MD5 of a row's canonical text over every column."""

    type = sa.BigInteger()
    inherit_cache = False
    name = "deep_hash_part"

    def __init__(self, columns, kinds: list[str], part: int) -> None:
        self.kinds = list(kinds)
        self.part = part
        super().__init__(*columns)


def _canonical_postgresql(sql: str, column, kind: str) -> str:
    if kind == "ts":
        text = f"to_char({sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    elif kind == "b":
        text = f"CASE WHEN {sql} THEN 'true' WHEN NOT {sql} THEN 'false' END"
    elif kind == "f":
        text = (
            f"CASE WHEN {sql} = 'NaN' THEN 'NaN' "
            f"ELSE encode(float8send(CAST({sql} AS FLOAT8)), 'hex') END"
        )
    elif is_time_of_day(column):
        text = f"to_char(DATE '2000-01-01' + {sql}, 'HH24:MI:SS.US')"
    elif kind == "x":
        text = f"encode({sql}, 'hex')"
    elif kind[1:].isdigit():
        text = f"CAST(ROUND({sql}, {int(kind[1:])}) AS TEXT)"
    else:
        text = f"CAST({sql} AS TEXT)"
    return f"COALESCE({text}, '{NULL_TEXT}')"


@compiles(deep_hash_part, "postgresql")
def _deep_hash_postgresql(element, compiler, **kw):
    pieces = [
        _canonical_postgresql(compiler.process(column, **kw), column, kind)
        for column, kind in zip(element.clauses, element.kinds)
    ]
    text = " || chr(31) || ".join(pieces)
    start = 1 + 8 * element.part
    return f"CAST(('x' || lpad(substr(md5({text}), {start}, 8), 16, '0')) AS BIT(64))::BIGINT"


@compiles(deep_hash_part, "mssql")
def _deep_hash_mssql(element, compiler, **kw):
    pieces = [
        f"ISNULL({_canonical_mssql(compiler.process(column, **kw), column, kind)}, '{NULL_TEXT}')"
        for column, kind in zip(element.clauses, element.kinds)
    ]
    # UTF-8 bytes, as the lake side hashes them (SQL Server 2019+ UTF-8 collation).
    text = mssql_utf8(f"CONCAT_WS(NCHAR(31), {', '.join(pieces)})")
    return f"CAST(SUBSTRING(HASHBYTES('MD5', {text}), {1 + 4 * element.part}, 4) AS BIGINT)"


def _canonical_mssql(sql: str, column, kind: str) -> str:
    """A column's value as `canonical_text` writes it, in SQL Server's SQL, per its type."""
    if kind == "ts":
        return mssql_timestamp_text(sql, mssql_type(column))
    if is_time_of_day(column):
        return mssql_time_text(sql)
    if kind == "date":
        return f"CONVERT(CHAR(10), {sql}, 23)"
    if kind == "b":
        return f"CASE WHEN {sql} = 1 THEN 'true' WHEN {sql} = 0 THEN 'false' END"
    if kind == "f":  # SQL Server holds no NaN or infinity
        return f"LOWER(CONVERT(CHAR(16), CAST(CAST({sql} AS FLOAT) AS BINARY(8)), 2))"
    if kind == "x":
        return f"LOWER(CONVERT(VARCHAR(MAX), {sql}, 2))"
    if kind[1:].isdigit():
        return f"CAST(CAST({sql} AS DECIMAL(38, {int(kind[1:])})) AS VARCHAR(48))"
    return f"CAST({sql} AS NVARCHAR(MAX))"


@compiles(deep_hash_part)
def _deep_hash_default(element, compiler, **kw):
    columns = ", ".join(compiler.process(column, **kw) for column in element.clauses)
    kinds = "|".join(element.kinds)
    return f"{SQLITE_DEEP_HASH_FUNCTION}({element.part}, '{kinds}', {columns})"


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


class row_hash64(FunctionElement):  # noqa: N801
    """PostgreSQL: the first 64 bits of the row's MD5 as one (signed) BIGINT."""

    type = sa.BigInteger()
    inherit_cache = True
    name = "row_hash64"


@compiles(row_hash64, "postgresql")
def _row_hash64_postgresql(element, compiler, **kw):
    key, change = list(element.clauses)
    key_sql, change_sql = compiler.process(key, **kw), compiler.process(change, **kw)
    text = _key_version_text_postgresql(key_sql, change_sql)
    return f"CAST(('x' || substr(md5({text}), 1, 16)) AS BIT(64))::BIGINT"


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
            from llm_observatory.resources.source import describe_error

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
            hours, change_micros = _hours_and_micros(batch.column(1), batch.column(2))
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


class HourlyFingerprints:
    """Per-hour sums of the `key|micros` MD5 halves, added batch by batch (from the lake's
    files, or from silver's and quarantine's rows as the one pass writes them)."""

    def __init__(self) -> None:
        self.sums: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(self, keys: pa.Array, times: pa.Array, changes: pa.Array) -> None:
        self.add_hours(keys, *_hours_and_micros(times, changes))

    def add_hours(self, keys: pa.Array, hours: pa.Array, change_micros: pa.Array) -> None:
        """`key|micros` texts built by Arrow; Python only runs MD5 on them."""
        texts = pc.binary_join_element_wise(
            pc.fill_null(pc.cast(keys, pa.string()), ""),
            pc.fill_null(pc.cast(change_micros, pa.string()), ""),
            "|",
        )
        md5 = hashlib.md5
        sums = self.sums
        for hour, text in zip(hours.to_pylist(), texts.to_pylist()):
            first_eight = int.from_bytes(md5(text.encode()).digest()[:8], "big")
            total = sums[hour]
            total[0] += 1
            total[1] += first_eight >> 32
            total[2] += first_eight & 0xFFFFFFFF

    def result(self) -> dict[int, Fingerprint]:
        return {hour: Fingerprint(*total) for hour, total in self.sums.items()}


def _hours_and_micros(times: pa.Array, changes: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The UTC hour of each event time and the change column in epoch microseconds."""
    if times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    hours = pc.hour(pc.cast(times, pa.timestamp("us", tz="UTC")))
    changes = pc.cast(changes, pa.timestamp("us", tz="UTC"))
    return hours, pc.cast(changes, pa.int64())


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
