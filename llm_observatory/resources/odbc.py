"""Arrow-native reads over ODBC: SQL Server at full speed, with bounded memory.

SQL Server is read through `arrow-odbc` (Rust, over Microsoft's ODBC Driver 18): the driver
fills column-wise buffers that become Arrow arrays without a Python object per value. The same
code path reads PostgreSQL (Debian's `odbc-postgresql`) and SQLite (`libsqliteodbc`) through
their ODBC drivers, which is how CI exercises it without a SQL Server.

Bulk fetching needs an upper bound for every value of a column, and `nvarchar(max)`,
`varbinary(max)`, `text` and `bytea` have none. Each such column is read as
`CASE WHEN byte_length(col) <= limit THEN col END` beside a flag saying the row held a larger
value; flagged rows are dropped from the bulk stream and read again by key through SQLAlchemy
(a seek per row on the primary key, the window's predicate repeated). So a single value larger
than the whole batch budget is copied exactly, the transfer buffers stay at the budget, and the
source is never scanned twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import arrow_odbc
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

# Microsoft's driver on a worker; Debian's PostgreSQL and SQLite drivers in CI.
DEFAULT_DRIVERS = {
    "mssql": "ODBC Driver 18 for SQL Server",
    "postgresql": "PostgreSQL Unicode",
    "sqlite": "SQLite3",
}
# The flag column of rows holding a value above the bulk limit (read again by key).
OVERSIZED = "llm_obs_oversized"
# A value up to this many bytes travels in the bulk stream; larger ones are read by key.
DEFAULT_VALUE_BYTES = 64 * 1024
# Transfer buffer of one fetch.
DEFAULT_FETCH_BYTES = 32 * 1024 * 1024
# Rows are handed on in batches of about this many bytes (what ADBC's PostgreSQL batches hold):
# enough to amortise the writer's per-batch work, few enough that a queue of them stays small.
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
# Rows of an oversized read: one query per few rows keeps a huge value's memory to itself.
OVERSIZED_KEYS_PER_QUERY = 8

# Connection options for every statement of a read, fixed text per dialect (never formatted).
_SESSION = {
    "postgresql": ("SET TIME ZONE 'UTC'",),
}
# One fixed statement per isolation level and dialect, no text ever formatted in (ADBC's
# PostgreSQL reads run the same ones). SQL Server names; PostgreSQL runs SNAPSHOT as REPEATABLE
# READ, which is its snapshot isolation, and SQLite always reads one consistent snapshot.
ISOLATION_LEVELS = (
    "READ UNCOMMITTED",
    "READ COMMITTED",
    "REPEATABLE READ",
    "SNAPSHOT",
    "SERIALIZABLE",
)
SET_ISOLATION = {
    "mssql": {level: "SET TRANSACTION ISOLATION LEVEL " + level for level in ISOLATION_LEVELS},
    "postgresql": {
        level: "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL " + level
        for level in ISOLATION_LEVELS
        if level != "SNAPSHOT"
    },
}
# The dialects a statement is compiled with for ODBC: `?` placeholders for every driver.
_COMPILERS = {
    "mssql": mssql.pyodbc.dialect(paramstyle="qmark"),
    "postgresql": postgresql.psycopg2.dialect(paramstyle="qmark"),
    "sqlite": sqlite.pysqlite.dialect(paramstyle="qmark"),
}


class OdbcUnsupportedError(RuntimeError):
    """The source's dialect has no ODBC driver this reader knows."""


@dataclass(frozen=True)
class OdbcTarget:
    """What `arrow_odbc.connect` needs; user and password travel apart from the string, which
    arrow-odbc escapes, so no secret is ever formatted into text that could be shown."""

    dialect_name: str
    connection_string: str = field(repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def connect(self) -> arrow_odbc.Connection:
        return arrow_odbc.connect(
            connection_string=self.connection_string,
            user=self.user,
            password=self.password,
            login_timeout_sec=30,
        )


def _braced(value: str) -> str:
    """An ODBC attribute value, braced when it holds a separator (`}` doubled inside)."""
    if any(character in value for character in ";{}= "):
        return "{" + value.replace("}", "}}") + "}"
    return value


def _attributes(pairs: dict[str, str]) -> str:
    return "".join(f"{key}={_braced(str(value))};" for key, value in pairs.items())


def odbc_target(url: sa.URL, value_bytes: int = DEFAULT_VALUE_BYTES) -> OdbcTarget:
    """The ODBC connection of a SQLAlchemy URL.

    `mssql+pyodbc://user:pw@host:1433/db?driver=...&TrustServerCertificate=yes` keeps its
    query keys as ODBC attributes; `?odbc_connect=<connection string>` is used as it is.
    """
    dialect = url.get_backend_name()
    query = {key: value for key, value in url.query.items() if not isinstance(value, tuple)}
    user = url.username or None
    password = str(url.password) if url.password is not None else None
    if dialect == "mssql":
        if "odbc_connect" in query:
            return OdbcTarget(dialect, query["odbc_connect"], user, password)
        pairs = {"Driver": query.pop("driver", DEFAULT_DRIVERS["mssql"])}
        server = url.host or "localhost"
        pairs["Server"] = f"{server},{url.port}" if url.port else server
        if url.database:
            pairs["Database"] = url.database
        pairs.update(query)
        return OdbcTarget(dialect, _attributes(pairs), user, password)
    if dialect == "postgresql":
        pairs = {
            "Driver": query.pop("driver", DEFAULT_DRIVERS["postgresql"]),
            "Server": url.host or "localhost",
            "Port": str(url.port or 5432),
            "Database": url.database or "postgres",
            # Booleans as booleans; long text bounded like SQL Server's (max) types; rows
            # fetched through a cursor in blocks, not the whole result into the driver.
            "BoolsAsChar": "0",
            "MaxLongVarcharSize": str(value_bytes),
            "UseDeclareFetch": "1",
            "Fetch": "2000",
        }
        if "sslmode" in query:
            pairs["SSLmode"] = query["sslmode"]
        return OdbcTarget(dialect, _attributes(pairs), user, password)
    if dialect == "sqlite":
        pairs = {"Driver": DEFAULT_DRIVERS["sqlite"], "Database": url.database or ":memory:"}
        return OdbcTarget(dialect, _attributes(pairs))
    raise OdbcUnsupportedError(f"no ODBC reader for {dialect} sources")


def session_statements(dialect_name: str, isolation_level: str | None) -> tuple[str, ...]:
    """Statements run once on a read's connection: UTC session time, the isolation level."""
    statements = _SESSION.get(dialect_name, ())
    if isolation_level is not None and dialect_name in SET_ISOLATION:
        statements = (*statements, SET_ISOLATION[dialect_name][isolation_level])
    return statements


class byte_length(FunctionElement):  # noqa: N801 - SQL function names are lower case
    """Stored bytes of a text or binary value (what bounds its transfer buffer)."""

    type = sa.BigInteger()
    inherit_cache = True
    name = "byte_length"


@compiles(byte_length, "mssql")
def _byte_length_mssql(element, compiler, **kw):
    return f"DATALENGTH({compiler.process(element.clauses, **kw)})"


@compiles(byte_length, "postgresql")
def _byte_length_postgresql(element, compiler, **kw):
    return f"octet_length({compiler.process(element.clauses, **kw)})"


@compiles(byte_length)
def _byte_length_default(element, compiler, **kw):
    return f"length(CAST({compiler.process(element.clauses, **kw)} AS BLOB))"


def unbounded(column: sa.ColumnElement, value_bytes: int, dialect_name: str) -> bool:
    """Whether a column's values may exceed the bulk limit (`(max)`, `text`, `bytea`...).

    SQLite's driver bounds every column by its declared type (TEXT: 65,536 bytes) and reports
    any expression as 255 bytes, so its columns are read as they are: the SQLite path exists
    for CI and the demo, and a longer value fails the read with the driver's size in the error.
    """
    if dialect_name == "sqlite":
        return False
    column_type = column.type
    if isinstance(column_type, (sa.String, sa.LargeBinary, sa.types._Binary)):
        length = getattr(column_type, "length", None)
        # A declared length counts characters; four UTF-8 bytes each at most.
        return length is None or length * 4 > value_bytes
    return False


def _projected(column: sa.ColumnElement, dialect_name: str) -> sa.ColumnElement:
    """A column as ODBC reads it: `datetimeoffset` becomes its UTC `datetime2`; a UUID its
    database's own text (ODBC's GUID is upper case, PostgreSQL's `uuid::text` lower case, and
    the fingerprints hash each database's own spelling)."""
    if isinstance(column.type, sa.Uuid):
        return sa.cast(column, sa.String(36)).label(column.name)
    if dialect_name == "mssql" and isinstance(column.type, mssql.DATETIMEOFFSET):
        utc = sa.func.switchoffset(column, sa.literal_column("'+00:00'"))
        return sa.cast(utc, mssql.DATETIME2(7)).label(column.name)
    return column


def bounded_select(query: sa.Select, dialect_name: str, value_bytes: int) -> tuple[sa.Select, bool]:
    """`query` with every unbounded column cut at `value_bytes` and the oversized flag added;
    the flag's presence is the second item."""
    limit = sa.literal_column(str(int(value_bytes)), sa.BigInteger)
    columns, flags = [], []
    for column in query.selected_columns:
        if unbounded(column, value_bytes, dialect_name):
            within = byte_length(column) <= limit
            columns.append(sa.case((within, column), else_=sa.null()).label(column.name))
            flags.append(byte_length(column) > limit)
        else:
            columns.append(_projected(column, dialect_name))
    if not flags:
        return query.with_only_columns(*columns, maintain_column_froms=True), False
    flag = sa.case(
        (sa.or_(*flags), sa.literal_column("1", sa.Integer)),
        else_=sa.literal_column("0", sa.Integer),
    ).label(OVERSIZED)
    return query.with_only_columns(*columns, flag, maintain_column_froms=True), True


def parameter_text(value, bind_type: sa.types.TypeEngine, dialect_name: str) -> str | None:
    """A bound value as the text ODBC binds it (arrow-odbc binds every parameter as VARCHAR).

    Times are ISO 8601 with the `T`, which SQL Server reads the same whatever the session's
    language or DATEFORMAT; `datetime` and `smalldatetime` accept milliseconds at most.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dt.datetime):
        if dialect_name == "postgresql":
            return value.isoformat()
        naive = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
        if dialect_name == "sqlite":
            return naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(bind_type, (mssql.DATETIME2, mssql.DATETIMEOFFSET)):
            return naive.isoformat(timespec="microseconds")
        if isinstance(bind_type, (sa.DateTime, mssql.SMALLDATETIME)):
            return naive.isoformat(timespec="milliseconds")
        return naive.isoformat(timespec="microseconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (int, float, Decimal, str)):
        return str(value)
    raise TypeError(f"cannot bind a {type(value).__name__} over ODBC")


def compiled_statement(query: sa.Select, dialect_name: str) -> tuple[str, list[str | None]]:
    """The statement with `?` placeholders and its parameters as text, in order."""
    compiled = query.compile(dialect=_COMPILERS[dialect_name])
    names = compiled.positiontup or []
    parameters = [
        parameter_text(compiled.params[name], compiled.binds[name].type, dialect_name)
        for name in names
    ]
    return compiled.string, parameters


def payload_encoding(dialect_name: str) -> arrow_odbc.TextEncoding:
    """UTF-16 from SQL Server: its driver converts text to the locale's narrow code page
    otherwise, which mangles anything outside it where the worker's locale is not UTF-8."""
    if dialect_name == "mssql":
        return arrow_odbc.TextEncoding.UTF16
    return arrow_odbc.TextEncoding.AUTO


@dataclass
class OdbcRead:
    """One connection's bulk reads, each statement in its own autocommitted transaction."""

    target: OdbcTarget
    isolation_level: str | None
    batch_rows: int
    value_bytes: int = DEFAULT_VALUE_BYTES
    fetch_bytes: int = DEFAULT_FETCH_BYTES
    batch_bytes: int = DEFAULT_BATCH_BYTES
    _connection: arrow_odbc.Connection | None = field(default=None, repr=False)

    def open(self) -> None:
        self._connection = self.target.connect()
        for statement in session_statements(self.target.dialect_name, self.isolation_level):
            self._connection.execute(statement)

    def close(self) -> None:
        self._connection = None  # arrow-odbc frees the handle with the object

    def batches(
        self, query: sa.Select, key: str, schema: pa.Schema
    ) -> Iterator[tuple[pa.RecordBatch, list]]:
        """The rows of `query` in batches of about `batch_rows`, each with the `key` values of
        its oversized rows, which the batch leaves out (they are to be read by key). `schema`
        is the lake's: times and decimals are fetched at its precision."""
        bounded, flagged = bounded_select(query, self.target.dialect_name, self.value_bytes)
        sql, parameters = compiled_statement(bounded, self.target.dialect_name)
        reader = self._connection.read_arrow_batches(
            query=sql,
            parameters=parameters,
            batch_size=self.batch_rows,
            max_bytes_per_batch=self.fetch_bytes,
            max_text_size=self.value_bytes,
            max_binary_size=self.value_bytes,
            # The source resource already reads in its own thread, ahead of the writer: a
            # second transfer buffer filled concurrently only added memory (150k rows of the
            # bench's table over psqlODBC: 260 MiB peak with it, 206 without) and, on two
            # cores, time.
            fetch_concurrently=False,
            payload_text_encoding=payload_encoding(self.target.dialect_name),
            map_schema=lambda reported: fetched_schema(reported, schema),
        )
        # arrow-odbc's batches are as small as the transfer buffer makes them (a few hundred
        # rows when a row may hold 64 KiB per text column): gathered to `batch_rows` or
        # `batch_bytes`, whichever comes first, for the writer, whose per-batch work would
        # otherwise dominate.
        pending: list[pa.RecordBatch] = []
        rows = size = 0
        for batch in reader:
            if not batch.num_rows:
                continue
            pending.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
            if rows >= self.batch_rows or size >= self.batch_bytes:
                yield split_oversized(pa.concat_batches(pending), key, flagged)
                pending, rows, size = [], 0, 0
        if pending:
            yield split_oversized(pa.concat_batches(pending), key, flagged)


def fetched_schema(reported: pa.Schema, lake: pa.Schema) -> pa.Schema:
    """The driver's schema with times as microseconds (SQLite's driver says seconds, SQL
    Server's `datetime2(7)` nanoseconds, which overflow past 2262) and decimals at the lake's
    precision and scale."""
    fields = []
    for reported_field in reported:
        wanted = lake.field(reported_field.name) if reported_field.name in lake.names else None
        if pa.types.is_timestamp(reported_field.type):
            reported_field = reported_field.with_type(pa.timestamp("us"))
        elif (
            wanted is not None
            and pa.types.is_decimal(wanted.type)
            and pa.types.is_decimal(reported_field.type)
        ):
            reported_field = reported_field.with_type(wanted.type)
        fields.append(reported_field)
    return pa.schema(fields)


def split_oversized(batch: pa.RecordBatch, key: str, flagged: bool) -> tuple[pa.RecordBatch, list]:
    """The batch without its flag and oversized rows, and those rows' keys."""
    if not flagged:
        return batch, []
    flag = pc.fill_null(pc.equal(batch.column(OVERSIZED), 1), False)
    kept = batch.drop_columns([OVERSIZED])
    if not pc.any(flag).as_py():
        return kept, []
    return kept.filter(pc.invert(flag)), batch.column(key).filter(flag).to_pylist()
