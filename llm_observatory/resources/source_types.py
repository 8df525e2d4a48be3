"""Source column types: the lake type each one is held in, and SQL Server's text of its value.

Every type a SQL Server table of this kind may hold maps to one Arrow type (the README's type
matrix lists them); the types the lake cannot hold (`sql_variant`, and `geography`,
`hierarchyid` and other CLR types, which SQLAlchemy reflects as `NullType`) are refused before
any data moves, in one line naming the table and the column.

The lake holds instants as UTC microseconds. So that SQL Server's fingerprints (`reconcile.py`)
see the value the lake holds, each time type is first brought to a `datetime2` in UTC the way
its value reaches the lake through the driver: `datetime` (1/300 s ticks) rounded to the
millisecond it is shown and sent as, `datetimeoffset` switched to UTC, `datetime2(7)` kept at
its 100 ns ticks and then truncated to the microsecond, as the driver truncates it.
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

# Collation whose VARCHAR bytes are UTF-8 (SQL Server 2019+): fingerprints hash these bytes.
UTF8_COLLATION = "Latin1_General_100_CI_AS_SC_UTF8"
# MONEY and SMALLMONEY are fixed-point with four decimals.
MONEY_TYPES = {mssql.MONEY: pa.decimal128(19, 4), mssql.SMALLMONEY: pa.decimal128(10, 4)}
_MSSQL_DIALECT = mssql.dialect()


class UnsupportedTypeError(ValueError):
    """A source column of a type the lake cannot hold; names the table and the column."""


def arrow_type_for(column_type: sa.types.TypeEngine) -> pa.DataType | None:
    """The lake type of a source column, None for a type the lake cannot hold.

    Decimals and money stay decimal, instants become UTC microseconds, binary stays binary;
    text, UUIDs, XML and times of day (`HH:MM:SS.ffffff`: Delta has no time type) travel as
    text.
    """
    if isinstance(column_type, (sa.types.NullType, mssql.SQL_VARIANT)):
        return None
    if isinstance(column_type, tuple(MONEY_TYPES)):
        return MONEY_TYPES[type(column_type)]
    if isinstance(column_type, sa.Boolean):
        return pa.bool_()
    if isinstance(column_type, sa.BigInteger):
        return pa.int64()
    if isinstance(column_type, (sa.SmallInteger, mssql.TINYINT)):
        return pa.int16()
    if isinstance(column_type, sa.Integer):
        return pa.int32()
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        precision = column_type.precision or 38
        scale = column_type.scale if column_type.scale is not None else 10
        return pa.decimal128(precision, scale)
    if isinstance(column_type, sa.Float):
        return pa.float64()
    if isinstance(column_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(column_type, sa.Date):
        return pa.date32()
    if isinstance(column_type, sa.Time):
        return pa.string()  # Delta has no time-of-day type: `HH:MM:SS.ffffff`
    if isinstance(column_type, (sa.LargeBinary, sa.types._Binary)):
        return pa.large_binary()
    # Text, strings, UUIDs, XML and JSON travel as text.
    return pa.string()


def lake_schema(table: sa.Table) -> pa.Schema:
    """The Arrow schema of a reflected table; refuses a column the lake cannot hold.

    UUID columns are set to read as text (SQL Server's uppercase spelling, which is also what
    its fingerprints cast them to), times of day as `HH:MM:SS.ffffff`, so rows never carry
    `uuid.UUID` or `datetime.time` objects.
    """
    fields = []
    for column in table.c:
        data_type = arrow_type_for(column.type)
        if data_type is None:
            raise UnsupportedTypeError(
                f"source table {table.name!r} column {column.name!r} has type "
                f"{_type_name(column.type)}, which the lake cannot hold: select it as text "
                "in a view (e.g. CAST(col AS NVARCHAR(MAX)), col.ToString(), col.STAsText()) "
                "and migrate the view"
            )
        if isinstance(column.type, sa.Uuid) and column.type.as_uuid:
            as_text = column.type.copy()
            as_text.as_uuid = False
            column.type = as_text
        if isinstance(column.type, sa.Time):
            column.type = TimeAsText(column.type)
        fields.append(pa.field(column.name, data_type, nullable=True))
    return pa.schema(fields)


class TimeAsText(sa.TypeDecorator):
    """A time-of-day column read as `HH:MM:SS.ffffff` (the source type kept for its SQL)."""

    impl = sa.Time
    cache_ok = True

    def __init__(self, source_type: sa.types.TypeEngine) -> None:
        super().__init__()
        self.impl = source_type

    def process_result_value(self, value, dialect):
        if value is None or isinstance(value, str):
            return value
        return value.isoformat(timespec="microseconds")


def is_time_of_day(column: sa.ColumnElement) -> bool:
    return isinstance(column.type, (sa.Time, TimeAsText))


def _type_name(column_type: sa.types.TypeEngine) -> str:
    if isinstance(column_type, sa.types.NullType):
        return "unknown to SQLAlchemy (geography, geometry, hierarchyid or another CLR type)"
    return type(column_type).__name__.lower()


# ------------------------------------------------------------- SQL Server text of a value


def mssql_type(column: sa.ColumnElement) -> sa.types.TypeEngine:
    """The column's type as SQL Server holds it (a generic type's SQL Server variant)."""
    return column.type.dialect_impl(_MSSQL_DIALECT)


def mssql_utc_datetime2(sql: str, column_type: sa.types.TypeEngine) -> str:
    """A time column as a `datetime2` in UTC, at the precision its value reaches the lake."""
    if isinstance(column_type, mssql.DATETIMEOFFSET):
        return f"CAST(SWITCHOFFSET({sql}, '+00:00') AS DATETIME2(7))"
    if isinstance(column_type, mssql.SMALLDATETIME):
        return f"CAST({sql} AS DATETIME2(0))"
    if isinstance(column_type, mssql.DATETIME2):
        return sql
    if isinstance(column_type, sa.DateTime):
        # `datetime` ticks are 1/300 s; the driver sends them rounded to the millisecond
        # (.003, .007, .010), as the conversion to datetime2(3) rounds them.
        return f"CAST({sql} AS DATETIME2(3))"
    return sql


def mssql_epoch_micros(sql: str, column_type: sa.types.TypeEngine) -> str:
    """Microseconds since 1970-01-01 UTC (100 ns ticks truncated, as the driver truncates)."""
    moment = mssql_utc_datetime2(sql, column_type)
    return f"DATEDIFF_BIG(microsecond, CAST('1970-01-01' AS DATETIME2(7)), {moment})"


def _micro_digits(sql: str) -> str:
    return f"RIGHT(CONCAT('00000', DATEPART(microsecond, {sql})), 6)"


def mssql_timestamp_text(sql: str, column_type: sa.types.TypeEngine) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffff` in UTC, as `reconcile.canonical_text` writes an instant."""
    moment = mssql_utc_datetime2(sql, column_type)
    return f"CONCAT(CONVERT(CHAR(19), {moment}, 126), '.', {_micro_digits(moment)})"


def mssql_time_text(sql: str) -> str:
    """`HH:MM:SS.ffffff`, as `reconcile.canonical_text` writes a time of day."""
    return f"CONCAT(CONVERT(CHAR(8), {sql}, 108), '.', {_micro_digits(sql)})"


def mssql_utf8(nvarchar_sql: str, length: str = "MAX") -> str:
    """Unicode text as UTF-8 bytes: the collation is set on the NVARCHAR value, so the
    conversion to VARCHAR takes UTF-8's code page, never the database's (a CAST to VARCHAR
    first would turn every character outside, e.g., Latin-1 into '?')."""
    text = f"CAST({nvarchar_sql} AS NVARCHAR(MAX)) COLLATE {UTF8_COLLATION}"
    return f"CAST({text} AS VARCHAR({length}))"
