"""The database being migrated: read-only, one streaming range query per partition.

Every query is a SQLAlchemy construct with bound parameters over a half-open range
`[start, end)` of the event-time column, so an index on that column serves it on every
database (never `DATE(col)`, which defeats the index) and the same statement compiles for SQL
Server. PostgreSQL is read through ADBC, whose `fetch_record_batch` hands Arrow batches
straight from libpq's COPY-like binary protocol; other databases stream through SQLAlchemy
with server-side cursors and are converted to Arrow batch by batch.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import arrow_odbc
import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.dialects import postgresql

from llm_observatory.fingerprint import register_sqlite_functions
from llm_observatory.native_memory import release_large_blocks_eagerly
from llm_observatory.resources.departures import CaptureStatus, capture_status, migration_departures
from llm_observatory.resources.odbc import (
    DEFAULT_FETCH_BYTES,
    DEFAULT_VALUE_BYTES,
    ISOLATION_LEVELS,
    OVERSIZED_KEYS_PER_QUERY,
    SET_ISOLATION,
    OdbcRead,
    odbc_target,
)
from llm_observatory.resources.source_types import UnsupportedTypeError, lake_schema
from llm_observatory.resources.source_types import arrow_type_for as arrow_type_for
from llm_observatory.resources.urls import display_url, redact
from llm_observatory.tables import TableSpec

DEFAULT_BATCH_ROWS = 16_384
# How partitions are read: "auto" picks ADBC for PostgreSQL, ODBC (arrow-odbc) for SQL Server and
# SQLAlchemy for the rest; any of them may be forced (CI runs PostgreSQL and SQLite over ODBC).
READ_PATHS = ("auto", "adbc", "odbc", "sqlalchemy")
_AUTO_READ_PATHS = {"postgresql": "adbc", "mssql": "odbc"}


def checked_reader(reader: str | None) -> str:
    """A read path's name as configured, or a one-line error naming LLM_OBS_SOURCE_READER."""
    chosen = (reader or "auto").strip().lower()
    if chosen not in READ_PATHS:
        raise ValueError(f"LLM_OBS_SOURCE_READER={reader!r} is not one of {', '.join(READ_PATHS)}")
    return chosen


# Keys per lookup query: well below SQL Server's 2,100 parameters per statement.
KEYS_PER_QUERY = 1_000
# ADBC's PostgreSQL batches: big enough to amortise per-batch work, small enough that a few
# queued ones stay far below the memory budget.
ADBC_BATCH_BYTES = 16 * 1024 * 1024


class SourceError(RuntimeError):
    """The source cannot be read; the message names the host, never the password."""


class MissingColumnsError(SourceError):
    """A source table lacks a column the migration needs; raised before any data moves."""


class UnsupportedColumnError(SourceError):
    """A source column has a type the lake cannot hold (`source_types.py`); raised before any
    data moves, naming the table and the column."""


@dataclass(frozen=True)
class SourceTable:
    """A reflected source table with the Arrow schema the lake will hold it in."""

    spec: TableSpec
    table: sa.Table
    arrow_schema: pa.Schema

    @property
    def event_time(self) -> sa.Column:
        return self.table.c[self.spec.event_time]


def describe_error(url: sa.URL, error: BaseException) -> str:
    """An error message that names the database host and hides every secret of the URL."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = display_url(url).split("://", 1)[1].rstrip("/").split("/")[0] or url.database or "?"
    return f"source database at {where} ({url.get_backend_name()}): {redact(message, url)}"


class SourceDatabase(dg.ConfigurableResource):
    """The production database being migrated (SQL Server; PostgreSQL or SQLite in tests/demo).

    Only ever reads. Connections open lazily, so Dagster loads the definitions with the source
    down.
    """

    url: str
    batch_rows: int = DEFAULT_BATCH_ROWS
    adbc_batch_bytes: int = ADBC_BATCH_BYTES
    # None keeps the database's default (READ COMMITTED on SQL Server and PostgreSQL).
    # SNAPSHOT (needs ALLOW_SNAPSHOT_ISOLATION on SQL Server) reads a consistent picture without
    # blocking writers; READ UNCOMMITTED (NOLOCK) never blocks but may read rows that are later
    # rolled back (dirty reads), which the watermark would then never revisit.
    isolation_level: str | None = None
    # Concurrent queries one partition is read with (hourly slices spread over them). The
    # source sees at most `streams` x the `llm_obs_source` pool's limit queries at once.
    streams: int = 1
    # Days before now whose rows are read in hourly slices, so no query holds more than an hour
    # of the hot end of a table.
    recent_days: int = 2
    # How partitions and changes are read (READ_PATHS); "auto" by the database.
    reader: str = "auto"
    # ODBC reads: values up to this many bytes travel in bulk (larger ones are read by key),
    # and the transfer buffer of one fetch.
    odbc_value_bytes: int = DEFAULT_VALUE_BYTES
    odbc_fetch_bytes: int = DEFAULT_FETCH_BYTES

    _engine: sa.Engine | None = PrivateAttr(default=None)
    _described: dict = PrivateAttr(default_factory=dict)
    _dialect_name: str | None = PrivateAttr(default=None)

    @property
    def sa_url(self) -> sa.URL:
        return sa.make_url(self.url)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.sa_url, pool_pre_ping=True)
            if self.dialect_name == "sqlite":
                sa.event.listen(self._engine, "connect", register_sqlite_functions)
        return self._engine

    def stream_query(self, query: sa.Select, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """A small query's rows as Arrow batches in `schema` (samples, key lists), any database."""
        for batch in self._stream_sqlalchemy([query], schema):
            yield conform_batch(batch, schema)

    @property
    def dialect_name(self) -> str:
        """Parsed once: the spot check binds thousands of instants, each asking (parsing the
        URL each time cost 0.2 s per 10,000 instants)."""
        if self._dialect_name is None:
            self._dialect_name = self.sa_url.get_backend_name()
        return self._dialect_name

    def describe_table(self, spec: TableSpec) -> SourceTable:
        """Reflects the table and fails before any data moves if a needed column is missing.

        Reflected once per resource instance (one run): checks and reconciliation ask again.
        """
        cached = self._described.get(spec.name)
        if cached is not None:
            return cached
        described = self._describe_table(spec)
        self._described[spec.name] = described
        return described

    def _describe_table(self, spec: TableSpec) -> SourceTable:
        try:
            table = sa.Table(spec.name, sa.MetaData(), autoload_with=self.engine)
        except sa.exc.NoSuchTableError:
            raise MissingColumnsError(
                describe_error(self.sa_url, LookupError(f"table {spec.name!r} does not exist"))
            ) from None
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.sa_url, error)) from None
        missing = [column for column in spec.required_columns if column not in table.c]
        if missing:
            raise MissingColumnsError(
                f"source table {spec.name!r} lacks the required column(s) {', '.join(missing)}; "
                f"it has {', '.join(table.c.keys())}"
            )
        try:
            schema = lake_schema(table)
        except UnsupportedTypeError as error:
            raise UnsupportedColumnError(str(error)) from None
        return SourceTable(spec=spec, table=table, arrow_schema=schema)

    def bind_time(self, moment: dt.datetime) -> dt.datetime:
        """UTC instants bind as aware values where the column has a zone, naive UTC elsewhere."""
        moment = moment.astimezone(dt.UTC)
        if self.dialect_name == "postgresql":
            return moment
        return moment.replace(tzinfo=None)

    def range_query(
        self, source: SourceTable, start: dt.datetime, end: dt.datetime, columns=None
    ) -> sa.Select:
        """All rows with `start <= event_time < end`, as a bound-parameter select."""
        selected = [source.table.c[name] for name in columns] if columns else list(source.table.c)
        return sa.select(*selected).where(
            source.event_time >= self.time_bound("range_start", start, source.event_time),
            source.event_time < self.time_bound("range_end", end, source.event_time),
        )

    def time_bound(self, name: str, moment: dt.datetime, column: sa.Column) -> sa.BindParameter:
        """A time bound typed as the column it is compared with (ODBC binds text, and SQL
        Server's `datetime` takes it at millisecond precision only; see `odbc.py`)."""
        return sa.bindparam(name, self.bind_time(moment), type_=column.type)

    def count_rows(self, source: SourceTable, start: dt.datetime, end: dt.datetime) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(source.table)
            .where(
                source.event_time >= sa.bindparam("range_start", self.bind_time(start)),
                source.event_time < sa.bindparam("range_end", self.bind_time(end)),
            )
        )
        try:
            with self.engine.connect() as connection:
                return int(connection.execute(query).scalar_one())
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.sa_url, error)) from None

    def latest_event_time(self, source: SourceTable) -> dt.datetime | None:
        """Newest event time in the table, as a UTC instant (an index lookup, never a scan)."""
        return self._scalar_time(sa.select(sa.func.max(source.event_time)))

    def stream_range(
        self, source: SourceTable, start: dt.datetime, end: dt.datetime
    ) -> Iterator[pa.RecordBatch]:
        """Rows of `[start, end)` as Arrow batches in the declared schema, read ahead in a thread.

        The reader thread keeps at most a few batches queued, so fetching from the database
        overlaps converting and compressing downstream while memory stays bounded.
        """
        release_large_blocks_eagerly()
        streams = max(1, self.streams)
        windows = self.range_slices(start, end) if streams == 1 else self.hour_slices(start, end)
        # Stream n reads windows n, n + streams, ... on its own connection: every hour of
        # the day is read once, by one of `streams` concurrent queries.
        producers = [
            self._stream_select(
                (self.range_query(source, low, high) for low, high in windows[n::streams]),
                source,
            )
            for n in range(min(streams, len(windows)))
        ]
        for batch in read_ahead_merged(producers, depth=2 * len(producers)):
            yield conform_batch(batch, source.arrow_schema)

    @staticmethod
    def hour_slices(start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        slices = []
        lower = start
        while lower < end:
            upper = min(lower + dt.timedelta(hours=1), end)
            slices.append((lower, upper))
            lower = upper
        return slices

    def range_slices(
        self, start: dt.datetime, end: dt.datetime, now: dt.datetime | None = None
    ) -> list[tuple[dt.datetime, dt.datetime]]:
        """`[start, end)` as one query, or hour by hour when it reaches into the recent days
        (the hot end of a live table, where a day-long query would hold locks or versions)."""
        now = now or dt.datetime.now(dt.UTC)
        if end <= now - dt.timedelta(days=self.recent_days):
            return [(start, end)]
        return self.hour_slices(start, end)

    def _stream_adbc_postgresql(self, queries: Iterable[sa.Select]) -> Iterator[pa.RecordBatch]:
        """The queries' rows, one after the other on one connection, each in its own
        transaction (a slice never holds a snapshot longer than its own read)."""
        import adbc_driver_postgresql.dbapi as adbc_pg

        uri = self.sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            connection = adbc_pg.connect(uri)
        except Exception as error:  # noqa: BLE001 - ADBC raises its own hierarchy
            raise SourceError(describe_error(self.sa_url, error)) from None
        try:
            level = self.dialect_isolation_level()
            if level is not None:
                with connection.cursor() as cursor:
                    cursor.execute(SET_ISOLATION["postgresql"][level])
                connection.commit()  # the level applies from the next transaction on
            for query in queries:
                # PostgreSQL streams a result only through COPY, and COPY takes no server-side
                # parameters (psycopg binds client-side for it too); with `$1` parameters libpq
                # hands the whole result over at once (4.6 GiB for a 1M-row day). So the window
                # bounds, which are datetimes this module made, never user text, are rendered
                # by SQLAlchemy's own typed literal processors into the statement run as COPY.
                sql = str(
                    query.compile(
                        dialect=postgresql.psycopg.dialect(),
                        compile_kwargs={"literal_binds": True},
                    )
                )
                cursor = connection.cursor()
                cursor.adbc_statement.set_options(
                    **{"adbc.postgresql.batch_size_hint_bytes": str(self.adbc_batch_bytes)}
                )
                try:
                    cursor.execute(sql)
                    reader = cursor.fetch_record_batch()
                except Exception as error:  # noqa: BLE001
                    raise SourceError(describe_error(self.sa_url, error)) from None
                for batch in reader:
                    if batch.num_rows:
                        yield batch
                cursor.close()
                connection.commit()
        finally:
            connection.close()

    def _stream_sqlalchemy(
        self, queries: Iterable[sa.Select], schema: pa.Schema, rows_per_batch: int | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The queries' rows on one connection, each query in its own transaction, in batches
        of `rows_per_batch` (the resource's `batch_rows` by default)."""
        per_batch = rows_per_batch or self.batch_rows
        try:
            with self.engine.connect() as connection:
                connection = self._isolated(connection)
                for query in queries:
                    result = connection.execution_options(
                        stream_results=True, yield_per=per_batch
                    ).execute(query)
                    for rows in result.partitions(per_batch):
                        columns = list(zip(*rows)) if rows else [[] for _ in schema]
                        yield pa.record_batch(
                            [
                                pa.array(values, type=field.type)
                                for values, field in zip(columns, schema)
                            ],
                            schema=schema,
                        )
                    result.close()
                    connection.commit()
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.sa_url, error)) from None

    def _isolated(self, connection: sa.Connection) -> sa.Connection:
        """The connection at the configured isolation level (validated, dialect-mapped)."""
        level = self.dialect_isolation_level()
        if level is None:
            return connection
        return connection.execution_options(isolation_level=level)

    def dialect_isolation_level(self) -> str | None:
        if self.isolation_level is None:
            return None
        level = self.isolation_level.strip().upper().replace("_", " ")
        if level == "NOLOCK":
            level = "READ UNCOMMITTED"
        if level not in ISOLATION_LEVELS:
            raise ValueError(
                f"isolation level {self.isolation_level!r} is not one of "
                f"{', '.join(ISOLATION_LEVELS)}"
            )
        if self.dialect_name == "sqlite":
            return None  # SQLite readers always see one committed snapshot
        if self.dialect_name == "postgresql" and level == "SNAPSHOT":
            return "REPEATABLE READ"
        return level

    # ------------------------------------------------------------------ incremental reads

    def latest_change(self, source: SourceTable) -> dt.datetime | None:
        """The newest change-column value: the high-water mark of a cycle, read from the source
        (never the clock of the machine running the job). An index seek, never a scan."""
        column = source.table.c[source.spec.change_column]
        return self._scalar_time(sa.select(sa.func.max(column)))

    def _scalar_time(self, query: sa.Select) -> dt.datetime | None:
        """A query's one time value as a UTC instant (None when the table is empty)."""
        try:
            with self.engine.connect() as connection:
                value = connection.execute(query).scalar_one_or_none()
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.sa_url, error)) from None
        if value is None:
            return None
        if isinstance(value, str):  # SQLite without declared types hands back text
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def changes_query(
        self, source: SourceTable, after: dt.datetime | None, up_to: dt.datetime
    ) -> sa.Select:
        """Rows whose change column lies in `(after, up_to]` (all up to `up_to` without `after`)."""
        column = source.table.c[source.spec.change_column]
        conditions = [column <= self.time_bound("changed_up_to", up_to, column)]
        if after is not None:
            conditions.insert(0, column > self.time_bound("changed_after", after, column))
        return sa.select(*source.table.c).where(*conditions)

    def change_slices(
        self, after: dt.datetime | None, up_to: dt.datetime, now: dt.datetime | None = None
    ) -> list[tuple[dt.datetime | None, dt.datetime]]:
        """`(after, up_to]` cut so that the recent part is read an hour at a time.

        Everything older than `recent_days` before the newest change goes in one query (the
        table's cold part); the rest in hourly `(a, b]` slices on the change column.
        """
        hot_start = (now or up_to) - dt.timedelta(days=self.recent_days)
        hot_start = hot_start.replace(minute=0, second=0, microsecond=0)
        slices: list[tuple[dt.datetime | None, dt.datetime]] = []
        lower = after
        if lower is None or lower < hot_start:
            if hot_start >= up_to:
                return [(lower, up_to)]
            slices.append((lower, hot_start))
            lower = hot_start
        while lower < up_to:
            upper = min(
                lower.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1), up_to
            )
            slices.append((lower, upper))
            lower = upper
        return slices

    def stream_changes(
        self, source: SourceTable, after: dt.datetime | None, up_to: dt.datetime
    ) -> Iterator[pa.RecordBatch]:
        """Every row changed in `(after, up_to]`, in the declared schema, slice by slice."""
        release_large_blocks_eagerly()

        queries = (
            self.changes_query(source, low, high) for low, high in self.change_slices(after, up_to)
        )
        for batch in read_ahead(self._stream_select(queries, source), depth=2):
            yield conform_batch(batch, source.arrow_schema)

    def read_path(self) -> str:
        """The reader partitions and changes go through: ADBC, ODBC or SQLAlchemy."""
        chosen = checked_reader(self.reader)
        if chosen == "auto":
            return _AUTO_READ_PATHS.get(self.dialect_name, "sqlalchemy")
        if chosen == "adbc" and self.dialect_name != "postgresql":
            raise ValueError(
                f"LLM_OBS_SOURCE_READER=adbc reads PostgreSQL only, not {self.dialect_name}"
            )
        return chosen

    def _stream_select(
        self, queries: Iterable[sa.Select], source: SourceTable
    ) -> Iterator[pa.RecordBatch]:
        path = self.read_path()
        if path == "adbc":
            return self._stream_adbc_postgresql(queries)
        if path == "odbc":
            return self._stream_odbc(queries, source)
        return self._stream_sqlalchemy(queries, source.arrow_schema)

    def _stream_odbc(
        self, queries: Iterable[sa.Select], source: SourceTable
    ) -> Iterator[pa.RecordBatch]:
        """The queries' rows over ODBC on one connection, each in its own transaction.

        Rows holding a value above `odbc_value_bytes` come out of the bulk stream and are read
        again by key, with the query's own predicate, a few at a time (`odbc.py`)."""
        read = OdbcRead(
            target=odbc_target(self.sa_url, self.odbc_value_bytes),
            isolation_level=self.dialect_isolation_level(),
            batch_rows=self.batch_rows,
            value_bytes=self.odbc_value_bytes,
            fetch_bytes=self.odbc_fetch_bytes,
            batch_bytes=self.adbc_batch_bytes,
        )
        key = source.table.c[source.spec.key]
        try:
            read.open()
            for query in queries:
                oversized: list = []
                for batch, keys in read.batches(query, source.spec.key, source.arrow_schema):
                    oversized.extend(keys)
                    if batch.num_rows:
                        yield batch
                for start in range(0, len(oversized), OVERSIZED_KEYS_PER_QUERY):
                    chunk = oversized[start : start + OVERSIZED_KEYS_PER_QUERY]
                    keys = sa.bindparam("oversized", chunk, expanding=True)
                    yield from self._stream_sqlalchemy(
                        [query.where(key.in_(keys))], source.arrow_schema, rows_per_batch=1
                    )
        except arrow_odbc.Error as error:
            raise SourceError(describe_error(self.sa_url, error)) from None
        finally:
            read.close()

    def rows_by_keys(self, source: SourceTable, keys: list) -> Iterator[pa.RecordBatch]:
        """The current rows of the given keys (primary-key lookups, bound parameters)."""
        key = source.table.c[source.spec.key]
        for start in range(0, len(keys), KEYS_PER_QUERY):
            chunk = keys[start : start + KEYS_PER_QUERY]
            query = sa.select(*source.table.c).where(
                key.in_(sa.bindparam("keys", chunk, expanding=True))
            )
            for batch in self._stream_sqlalchemy([query], source.arrow_schema):
                yield conform_batch(batch, source.arrow_schema)

    def existing_keys(self, source: SourceTable, keys: list) -> set:
        """Which of the keys the source still has, wherever their event time now lies."""
        key = source.table.c[source.spec.key]
        found: set = set()
        try:
            with self.engine.connect() as connection:
                for start in range(0, len(keys), KEYS_PER_QUERY):
                    chunk = keys[start : start + KEYS_PER_QUERY]
                    query = sa.select(key).where(
                        key.in_(sa.bindparam("keys", chunk, expanding=True))
                    )
                    found.update(connection.execute(query).scalars())
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.sa_url, error)) from None
        return found

    # ------------------------------------------------------------------ departures

    def departure_capture(self, spec: TableSpec) -> CaptureStatus:
        """Whether the source records the table's deletes and moves (`migration_departures` and
        its trigger, enabled); the reason either way, for the cycle's output."""
        return capture_status(self.engine, spec)

    def latest_departure(self, source: SourceTable) -> dt.datetime | None:
        """The newest `departed_at` of the table in `migration_departures` (see
        `departures.py`): a delete moves no `last_modified`, so a cycle's high-water mark is the
        later of the two. An index seek on (table_name, departed_at)."""
        departures = migration_departures.c
        query = sa.select(sa.func.max(departures.departed_at)).where(
            departures.table_name == sa.bindparam("table_name", source.spec.name)
        )
        return self._scalar_time(query)

    def departures_query(
        self, source: SourceTable, after: dt.datetime | None, up_to: dt.datetime
    ) -> sa.Select:
        """The distinct (key, old event time) pairs of the table's departures in `(after,
        up_to]`, the key cast back from text to the key column's type."""
        departures = migration_departures.c
        key_type = source.table.c[source.spec.key].type
        conditions = [
            departures.table_name == sa.bindparam("table_name", source.spec.name),
            departures.departed_at <= sa.bindparam("departed_up_to", self.bind_time(up_to)),
        ]
        if after is not None:
            conditions.append(
                departures.departed_at > sa.bindparam("departed_after", self.bind_time(after))
            )
        return (
            sa.select(
                sa.cast(departures.key_value, key_type).label("key"), departures.old_event_time
            )
            .where(*conditions)
            .distinct()
        )

    def departures(
        self, source: SourceTable, after: dt.datetime | None, up_to: dt.datetime
    ) -> pa.Table:
        """Every key that left its place in `(after, up_to]` (deleted, or moved to another day
        or key), with the event time it had: columns `key` (the key column's type) and
        `old_event_time`, one row per distinct pair. A key per departure, never a row: small
        beside the changes, and read in batches."""
        schema = pa.schema(
            [
                pa.field("key", source.arrow_schema.field(source.spec.key).type),
                pa.field("old_event_time", pa.timestamp("us", tz="UTC")),
            ]
        )
        batches = self.stream_query(self.departures_query(source, after, up_to), schema)
        return pa.Table.from_batches(list(batches), schema=schema)

    def purge_departures(self, spec: TableSpec, before: dt.datetime) -> int:
        """Deletes the table's departure records from before `before`; returns how many. Only
        records every cycle has read may go: see `operate/departures.py`."""
        departures = migration_departures.c
        statement = sa.delete(migration_departures).where(
            departures.table_name == sa.bindparam("table_name", spec.name),
            departures.departed_at < sa.bindparam("purge_before", self.bind_time(before)),
        )
        try:
            with self.engine.begin() as connection:
                return connection.execute(statement).rowcount
        except sa.exc.SQLAlchemyError as error:
            raise SourceError(describe_error(self.sa_url, error)) from None

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Casts a batch to the declared schema (ADBC hands `numeric` over as opaque text)."""
    if batch.schema.equals(schema):
        return batch
    arrays = []
    for field in schema:
        column = batch.column(batch.schema.get_field_index(field.name))
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        if pa.types.is_string(field.type) and column.type == pa.binary(16):
            column = uuid_text(column)  # PostgreSQL's uuid through ADBC: 16 raw bytes
        timestamps = pa.types.is_timestamp(field.type) and pa.types.is_timestamp(column.type)
        if timestamps and column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        if not column.type.equals(field.type):
            column = pc.cast(column, field.type)
        arrays.append(column)
    return pa.record_batch(arrays, schema=schema)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype="S1")
# Where the dashes go in a UUID's 36 characters, and where each of its 32 hex digits goes.
_UUID_DIGIT_POSITIONS = [n for n in range(36) if n not in (8, 13, 18, 23)]


def uuid_text(raw: pa.Array | pa.ChunkedArray) -> pa.Array:
    """16-byte UUIDs as their canonical lower-case text (`8-4-4-4-12`), NULLs kept; vectorised,
    no Python object per value."""
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    data = np.frombuffer(raw.buffers()[1], dtype=np.uint8, count=16 * (raw.offset + len(raw)))
    octets = data.reshape(-1, 16)[raw.offset :]
    digits = np.empty((len(raw), 32), dtype="S1")
    digits[:, 0::2] = _HEX_DIGITS[octets >> 4]
    digits[:, 1::2] = _HEX_DIGITS[octets & 0x0F]
    text = np.full((len(raw), 36), b"-", dtype="S1")
    text[:, _UUID_DIGIT_POSITIONS] = digits
    values = pa.array(text.view("S36").ravel(), type=pa.binary(36)).cast(pa.string())
    return pc.if_else(pc.is_valid(raw), values, pa.scalar(None, pa.string()))


_END = object()


def read_ahead(batches: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """Runs `batches` in a thread, `depth` batches ahead; re-raises its error in the consumer."""
    return read_ahead_merged([batches], depth)


def read_ahead_merged(
    producers: list[Iterator[pa.RecordBatch]], depth: int
) -> Iterator[pa.RecordBatch]:
    """Runs each iterator in its own thread, all feeding one queue of `depth` batches (memory
    stays bounded whatever their number); batches come in arrival order. The first error of
    any of them is re-raised in the consumer, and every thread stops when the consumer does."""
    buffer: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce(batches: Iterator[pa.RecordBatch]) -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        buffer.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    close = getattr(batches, "close", None)
                    if close is not None:
                        close()
                    return
            buffer.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            buffer.put(error)

    readers = [
        threading.Thread(target=produce, args=(batches,), name=f"source-read-{n}", daemon=True)
        for n, batches in enumerate(producers)
    ]
    for reader in readers:
        reader.start()
    running = len(readers)
    try:
        while running:
            item = buffer.get()
            if item is _END:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        for reader in readers:
            while reader.is_alive():
                try:
                    buffer.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.2)
