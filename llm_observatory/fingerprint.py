"""Every hash the source and the lake must agree on, in Python and in each source's SQL.

The reconciliation's row fingerprint is the MD5 of `key|change-column-in-epoch-microseconds`;
an hour's fingerprint is (rows, sum of the hash's first 32 bits, sum of its next 32 bits):
order independent, so the source computes it with one aggregate query per table and day and the
lake the same way from its files (or while the one pass writes them). Deep mode hashes every
column's canonical text instead. The spot check orders a day's rows by a seeded MD5 of the key.

Each hash is written here once per side: Python (`row_hash_parts`, `deep_row_hash_parts`,
`HourlyFingerprints`) and a SQLAlchemy function element compiled per dialect (PostgreSQL's
`md5`, SQL Server's `HASHBYTES('MD5', …)` over UTF-8 text, SQLite through the Python functions
the source resource registers on each connection, `register_sqlite_functions`). Keeping both
sides in one module is what keeps them equal; `test_reconcile.py` holds them to it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import math
import struct
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from llm_observatory.resources.source_types import (
    is_time_of_day,
    mssql_epoch_micros,
    mssql_time_text,
    mssql_timestamp_text,
    mssql_type,
    mssql_utc_datetime2,
    mssql_utf8,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Fingerprint:
    rows: int = 0
    low: int = 0
    high: int = 0

    def __add__(self, other: Fingerprint) -> Fingerprint:
        return Fingerprint(self.rows + other.rows, self.low + other.low, self.high + other.high)


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


class HourlyFingerprints:
    """Per-hour sums of the `key|micros` MD5 halves, added batch by batch (from the lake's
    files, or from silver's and quarantine's rows as the one pass writes them)."""

    def __init__(self) -> None:
        self.sums: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(self, keys: pa.Array, times: pa.Array, changes: pa.Array) -> None:
        self.add_hours(keys, *hours_and_micros(times, changes))

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


def hours_and_micros(times: pa.Array, changes: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The UTC hour of each event time and the change column in epoch microseconds."""
    if times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    hours = pc.hour(pc.cast(times, pa.timestamp("us", tz="UTC")))
    changes = pc.cast(changes, pa.timestamp("us", tz="UTC"))
    return hours, pc.cast(changes, pa.int64())


# SQLite has no hash function; checks that order or fingerprint rows in SQL call this one.
SQLITE_HASH_FUNCTION = "llm_obs_md5"


def _md5_text(value) -> str | None:
    return None if value is None else hashlib.md5(str(value).encode()).hexdigest()  # noqa: S324


SQLITE_ROW_HASH_FUNCTION = "llm_obs_row_hash"
SQLITE_DEEP_HASH_FUNCTION = "llm_obs_deep_hash"


def _deep_hash_part(part: int, kinds: str, *values) -> int:
    return deep_row_hash_parts(list(values), kinds.split("|"))[part]


def _row_hash_part(key, change, part: int) -> int | None:
    """The reconciliation fingerprint of one row (see `reconcile.py`), for SQLite."""
    moment = None
    if change is not None:
        moment = dt.datetime.fromisoformat(change) if isinstance(change, str) else change
    return row_hash_parts(key, micros(moment))[part]


def register_sqlite_functions(dbapi_connection, _record) -> None:
    dbapi_connection.create_function(SQLITE_HASH_FUNCTION, 1, _md5_text, deterministic=True)
    dbapi_connection.create_function(
        SQLITE_ROW_HASH_FUNCTION, 3, _row_hash_part, deterministic=True
    )
    dbapi_connection.create_function(
        SQLITE_DEEP_HASH_FUNCTION, -1, _deep_hash_part, deterministic=True
    )


# --------------------------------------------------------------- the spot check's order


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
