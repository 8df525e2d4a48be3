"""How the generated batches reach a database, one sink per family and one transaction per
load: PostgreSQL by binary COPY, SQLite by the raw driver's ``executemany``, any other dialect
through SQLAlchemy's ``insert()``. Each creates the reference tables, continues the sequential
ids, and builds the deferred keys and indexes once the rows are in.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from llm_observatory.synthetic.columns import _fixed_width_strings
from llm_observatory.synthetic.pg_copy import (
    _PG_COPY_HEADER,
    _PG_COPY_TRAILER,
    _decimal_unscaled,
    _pg_copy_binary,
    _table_columns,
)
from llm_observatory.synthetic.schema import LOGS, METADATA, REFERENCE_METADATA, TABLE_NAMES
from llm_observatory.synthetic.spec import _US_PER_DAY, _US_PER_HOUR, _US_PER_SECOND


class _Sink(Protocol):
    """How batches reach one kind of database, inside one transaction."""

    def prepare(self, replace: bool) -> tuple[int, int]:
        """Open the transaction, create the tables; return the next metadata_id and log_id."""

    def encode(self, table: str, rows: pa.Table) -> Any:
        """Turn ``rows`` into what :meth:`write` sends; runs in the generator's thread."""

    def write(self, table: str, payload: Any) -> None: ...

    def finish(self) -> None:
        """Build deferred indexes, commit, refresh the planner's statistics."""

    def abort(self) -> None: ...


def _quoted_columns(table: sa.Table, dialect: sa.Dialect) -> str:
    preparer = dialect.identifier_preparer
    return ", ".join(preparer.quote(column.name) for column in table.columns)


def _reference_tables() -> list[sa.Table]:
    return [REFERENCE_METADATA.tables[name] for name in TABLE_NAMES]


def _next_ids(connection: sa.Connection) -> tuple[int, int]:
    """One past the largest existing ids, so appended rows never collide."""
    metadata_table = REFERENCE_METADATA.tables[METADATA]
    logs_table = REFERENCE_METADATA.tables[LOGS]
    last_metadata = connection.execute(sa.select(sa.func.max(metadata_table.c.metadata_id)))
    last_log = connection.execute(sa.select(sa.func.max(logs_table.c.log_id)))
    return (last_metadata.scalar() or 0) + 1, (last_log.scalar() or 0) + 1


def _create_tables(connection: sa.Connection, replace: bool) -> bool:
    """Create the reference tables; return whether their secondary indexes are still to build.

    Replacing drops and recreates the tables without secondary indexes, which are built once
    after the load (one sort instead of millions of B-tree insertions); appending creates only
    what is missing, indexes included.
    """
    if not replace:
        REFERENCE_METADATA.create_all(connection, tables=_reference_tables(), checkfirst=True)
        return False
    for table in reversed(_reference_tables()):
        table.drop(connection, checkfirst=True)
    for table in _reference_tables():
        connection.execute(CreateTable(table))
    return True


def _create_indexes(connection: sa.Connection) -> None:
    for table in _reference_tables():
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            connection.execute(CreateIndex(index))


class _PostgresSink:
    """COPY FROM STDIN in PostgreSQL's binary format, one transaction for the whole load.

    Binary COPY spares the server parsing text (timestamps above all) and the client formatting
    it: the stream is computed from the Arrow columns (:func:`_pg_copy_binary`) in the
    generator's thread. Timestamps travel as UTC microseconds, so no session time zone can shift
    them. When replacing, the tables are created in this transaction, which allows
    ``COPY ... FREEZE``: rows land frozen on all-visible pages, so neither the first reader nor
    autovacuum rewrites the whole table afterwards; and the primary keys and indexes are built
    once, by sorting, after the rows are in.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.connection = engine.connect()
        self.replace = False

    def prepare(self, replace: bool) -> tuple[int, int]:
        self.replace = replace
        self.connection.begin()
        # pglz costs as much server CPU as the rest of the load; lz4 (PostgreSQL 14+ built
        # --with-lz4, as Debian's and the official images are) compresses TOASTed text far faster.
        lz4 = self.connection.exec_driver_sql(
            "SELECT 1 FROM pg_settings "
            "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        ).first()
        if lz4:
            self.connection.exec_driver_sql("SET LOCAL default_toast_compression = 'lz4'")
        self.connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        _create_tables(self.connection, replace)
        if replace:
            for table in _reference_tables():
                self.connection.exec_driver_sql(self._primary_key_ddl(table, add=False))
        return _next_ids(self.connection)

    def _primary_key_ddl(self, table: sa.Table, *, add: bool) -> str:
        """``ALTER TABLE`` text for the table's primary key.

        Plain text on purpose: SQLAlchemy's ``AddConstraint``/``DropConstraint`` would also mark
        the shared ``Table``'s key as created separately, dropping it from later ``CREATE TABLE``s.
        """
        preparer = self.engine.dialect.identifier_preparer
        key = table.primary_key
        target = f"ALTER TABLE {preparer.format_table(table)}"
        if not add:
            return f"{target} DROP CONSTRAINT {preparer.format_constraint(key)}"
        columns = ", ".join(preparer.quote(column.name) for column in key.columns)
        return f"{target} ADD CONSTRAINT {preparer.format_constraint(key)} PRIMARY KEY ({columns})"

    def encode(self, table: str, rows: pa.Table) -> memoryview | None:
        return _pg_copy_binary(rows) if rows.num_rows else None

    def write(self, table: str, payload: memoryview | None) -> None:
        if payload is None:
            return
        reference = REFERENCE_METADATA.tables[table]
        target = self.engine.dialect.identifier_preparer.format_table(reference)
        columns = _quoted_columns(reference, self.engine.dialect)
        options = "FORMAT binary, FREEZE" if self.replace else "FORMAT binary"
        statement = f"COPY {target} ({columns}) FROM STDIN WITH ({options})"
        cursor = self.connection.connection.driver_connection.cursor()
        with cursor, cursor.copy(statement) as copy:
            copy.write(_PG_COPY_HEADER)
            copy.write(payload)
            copy.write(_PG_COPY_TRAILER)

    def finish(self) -> None:
        if self.replace:
            for table in _reference_tables():
                self.connection.exec_driver_sql(self._primary_key_ddl(table, add=True))
            _create_indexes(self.connection)
        self.connection.commit()
        self.connection.close()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in _reference_tables():
                target = self.engine.dialect.identifier_preparer.format_table(table)
                connection.exec_driver_sql(f"ANALYZE {target}")

    def abort(self) -> None:
        self.connection.rollback()
        self.connection.close()


_DIGITS = np.arange(ord("0"), ord("9") + 1, dtype=np.uint8)


def _utc_text(column: pa.Array) -> list[str]:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) for each timestamp: SQLAlchemy's SQLite storage format.

    Computed with integer arithmetic on the microseconds: Arrow's ``strftime`` goes through the
    time zone database per value and is some fifty times slower.
    """
    micros = column.cast(pa.int64()).to_numpy()
    days, in_day = np.divmod(micros, _US_PER_DAY)
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    fields = (
        (dates.astype("datetime64[Y]").astype(np.int64) + 1970, 4, 0),
        (months.astype(np.int64) % 12 + 1, 2, 5),
        ((dates - months).astype(np.int64) + 1, 2, 8),
        (in_day // _US_PER_HOUR, 2, 11),
        (in_day // (60 * _US_PER_SECOND) % 60, 2, 14),
        (in_day // _US_PER_SECOND % 60, 2, 17),
        (in_day % _US_PER_SECOND, 6, 20),
    )
    chars = np.frombuffer(b"0000-00-00 00:00:00.000000", dtype=np.uint8)
    chars = np.tile(chars, (len(micros), 1))
    for values, width, position in fields:
        for digit in range(width):
            chars[:, position + width - 1 - digit] = _DIGITS[values // 10**digit % 10]
    return _fixed_width_strings(chars).to_pylist()


class _SqliteSink:
    """The raw ``sqlite3`` connection's ``executemany``, all in one transaction.

    Values are bound as SQLAlchemy binds them (timestamps as UTC text with microseconds,
    decimals as floats), so SQLAlchemy reads the rows back exactly. Loading runs with
    ``synchronous=OFF`` and builds the secondary indexes at the end. The database is put in WAL
    mode (persistent), so readers and a writer (the incremental tests) can share it.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.dialect = engine.dialect
        self.proxy = engine.raw_connection()
        self.raw = self.proxy.driver_connection
        self.saved_isolation = self.raw.isolation_level
        self.replace = False
        self.statements = {
            table.name: "INSERT INTO {} ({}) VALUES ({})".format(
                self.dialect.identifier_preparer.format_table(table),
                _quoted_columns(table, self.dialect),
                ", ".join("?" * len(table.columns)),
            )
            for table in _reference_tables()
        }

    def _ddl(self, statement: sa.schema.ExecutableDDLElement) -> None:
        self.raw.execute(str(statement.compile(dialect=self.dialect)))

    def prepare(self, replace: bool) -> tuple[int, int]:
        self.replace = replace
        self.raw.isolation_level = None  # autocommit mode: the explicit BEGIN/COMMIT rule
        # Switching needs the database to itself (unless it is in WAL mode already); if another
        # connection holds it, load in its current journal mode.
        with suppress(sqlite3.OperationalError):
            self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=OFF")
        self.raw.execute("PRAGMA cache_size=-131072")  # 128 MiB while loading
        self.raw.execute("BEGIN")
        for table in reversed(_reference_tables()) if replace else ():
            self._ddl(sa.schema.DropTable(table, if_exists=True))
        for table in _reference_tables():
            self._ddl(CreateTable(table, if_not_exists=True))
            for index in () if replace else table.indexes:
                self._ddl(CreateIndex(index, if_not_exists=True))
        ((next_metadata,),) = self.raw.execute(
            "SELECT coalesce(max(metadata_id), 0) + 1 FROM metadata"
        )
        ((next_log,),) = self.raw.execute("SELECT coalesce(max(log_id), 0) + 1 FROM logs")
        return next_metadata, next_log

    def encode(self, table: str, rows: pa.Table) -> list[tuple[Any, ...]]:
        columns: list[list[Any]] = []
        for column in _table_columns(rows):
            if pa.types.is_timestamp(column.type):
                columns.append(_utc_text(column))
            elif pa.types.is_decimal(column.type):
                # micros / 1e6 is the correctly rounded double, as float(Decimal) gives;
                # Arrow's decimal-to-float cast is not always.
                floats = (_decimal_unscaled(column) / 1e6).tolist()
                valid = column.is_valid().to_pylist()
                columns.append([f if ok else None for f, ok in zip(floats, valid, strict=True)])
            else:
                columns.append(column.to_pylist())
        return list(zip(*columns, strict=True))

    def write(self, table: str, payload: list[tuple[Any, ...]]) -> None:
        self.raw.executemany(self.statements[table], payload)

    def finish(self) -> None:
        if self.replace:
            for table in _reference_tables():
                for index in sorted(table.indexes, key=lambda index: index.name or ""):
                    self._ddl(CreateIndex(index))
        self.raw.execute("COMMIT")
        self.raw.execute("ANALYZE")
        self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # best effort: skipped while read
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self._close()

    def abort(self) -> None:
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")
        self._close()

    def _close(self) -> None:
        self.raw.isolation_level = self.saved_isolation
        self.proxy.close()


class _SqlAlchemySink:
    """Any other dialect (SQL Server among them): ``insert()`` executemany per batch.

    Slow next to COPY, but it goes through the dialect's own type handling, so aware UTC
    datetimes and ``Decimal`` values land as each driver expects.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.connection = engine.connect()
        self.deferred_indexes = False

    def prepare(self, replace: bool) -> tuple[int, int]:
        self.connection.begin()
        self.deferred_indexes = _create_tables(self.connection, replace)
        return _next_ids(self.connection)

    def encode(self, table: str, rows: pa.Table) -> list[dict[str, Any]]:
        return rows.to_pylist()

    def write(self, table: str, payload: list[dict[str, Any]]) -> None:
        if payload:
            self.connection.execute(REFERENCE_METADATA.tables[table].insert(), payload)

    def finish(self) -> None:
        if self.deferred_indexes:
            _create_indexes(self.connection)
        self.connection.commit()
        self.connection.close()

    def abort(self) -> None:
        self.connection.rollback()
        self.connection.close()


def _sink_for(engine: sa.Engine) -> _Sink:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return _PostgresSink(engine)
    if engine.dialect.name == "sqlite" and engine.dialect.driver == "pysqlite":
        return _SqliteSink(engine)
    return _SqlAlchemySink(engine)
