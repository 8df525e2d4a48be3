"""Idempotent SQL scripts for the incremental-load preparation, generated from the declarations.

Two scripts per dialect (``mssql``, ``postgresql``, ``sqlite``), committed under ``sql/`` and
regenerated with ``python -m llm_observatory.sql_scripts sql/`` (a test fails when they are stale):

- ``control_<dialect>.sql``: the control table ``migration_watermark`` (the columns of
  :mod:`llm_observatory.resources.control`), its index on ``(table_name, status, id)``, the
  procedure ``usp_update_watermark`` (a plpgsql function on PostgreSQL; SQLite has none) and the
  view ``current_watermark``, the latest COMPLETED row of every table; then ``migration_lease``
  and ``migration_reconciliation``, compiled from their declarations in that module.
- ``prepare_source_<dialect>.sql``: the migration guide's preparation of every source table in
  :data:`llm_observatory.tables.TABLES`: the change column (``last_modified``) if missing, a
  trigger that sets it on every UPDATE, and its index, and the index on the event-time column
  that every range query needs (on SQL Server each index online where the edition allows it,
  and only where no index leads with the column yet); then the departure capture
  (:func:`departure_capture_ddl`): the ``migration_departures`` table of
  :mod:`llm_observatory.resources.departures` and, per table, the trigger(s) that record in it
  every deleted row and every row an UPDATE moves to another event time or key, which a
  watermark on ``last_modified`` cannot see.

Every statement is guarded (``IF NOT EXISTS``, ``CREATE OR ALTER``/``CREATE OR REPLACE``,
``COL_LENGTH``/``sys.indexes`` checks), so running a script again changes nothing.
:func:`statements` splits a script into what a driver executes one at a time, and
:func:`apply_script` runs them in one transaction through SQLAlchemy;
:func:`install_departure_capture` applies the departure capture alone (tests, the synthetic
source).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, postgresql, sqlite

from llm_observatory.resources.control import migration_lease, migration_reconciliation
from llm_observatory.resources.departures import (
    DELETE,
    DEPARTURES_INDEX,
    DEPARTURES_TABLE,
    KEY_TEXT_LENGTH,
    MOVE,
    departure_triggers,
    migration_departures,
)
from llm_observatory.tables import TABLES, TableSpec

DIALECTS: tuple[str, ...] = ("mssql", "postgresql", "sqlite")

WATERMARK_TABLE = "migration_watermark"
# Names as in llm_observatory/resources/control.py, so either path makes the same objects.
WATERMARK_INDEX = "ix_migration_watermark_table_status"
WATERMARK_STATUS_CHECK = "ck_migration_watermark_status"
WATERMARK_PROCEDURE = "usp_update_watermark"
WATERMARK_VIEW = "current_watermark"
STATUSES: tuple[str, ...] = ("STARTED", "COMPLETED", "FAILED")

# Columns of migration_watermark after `id`, in order: (name, kind, nullable). The kinds map to a
# type per dialect in _TYPES. run_id and lake_versions (JSON text) came after the first release:
# the PostgreSQL and SQL Server scripts add them to a table created without them.
WATERMARK_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("table_name", "name", False),
    ("last_extracted_timestamp", "instant", True),
    ("last_modified_timestamp", "instant", True),
    ("extraction_start_time", "instant", True),
    ("extraction_end_time", "instant", True),
    ("rows_extracted", "count", True),
    ("rows_validated", "count", True),
    ("status", "status", False),
    ("error_message", "text", True),
    ("run_id", "run_id", True),
    ("lake_versions", "text", True),
)
ADDED_WATERMARK_COLUMNS: tuple[str, ...] = ("run_id", "lake_versions")
WATERMARK_COLUMN_NAMES: tuple[str, ...] = ("id", *(name for name, _, _ in WATERMARK_COLUMNS))

_TYPES: dict[str, dict[str, str]] = {
    "mssql": {
        "id": "BIGINT IDENTITY(1,1) NOT NULL CONSTRAINT pk_migration_watermark PRIMARY KEY",
        "name": "NVARCHAR(128)",
        "instant": "DATETIME2(6)",
        "count": "BIGINT",
        "status": "NVARCHAR(16)",
        "text": "NVARCHAR(MAX)",
        "run_id": "NVARCHAR(64)",
    },
    "postgresql": {
        "id": "BIGSERIAL CONSTRAINT pk_migration_watermark PRIMARY KEY",
        "name": "VARCHAR(128)",
        "instant": "TIMESTAMP WITH TIME ZONE",
        "count": "BIGINT",
        "status": "VARCHAR(16)",
        "text": "TEXT",
        "run_id": "VARCHAR(64)",
    },
    "sqlite": {
        "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "name": "VARCHAR(128)",
        "instant": "DATETIME",
        "count": "BIGINT",
        "status": "VARCHAR(16)",
        "text": "TEXT",
        "run_id": "VARCHAR(64)",
    },
}

_SA_DIALECTS = {
    "mssql": mssql.dialect(),
    "postgresql": postgresql.dialect(),
    "sqlite": sqlite.dialect(),
}
_PREPARERS = {name: dialect.identifier_preparer for name, dialect in _SA_DIALECTS.items()}
# Type names SQLAlchemy does not treat as reserved but that read badly unquoted (`timestamp` is a
# type in T-SQL and PostgreSQL): always quoted, as in the reference DDL.
_ALWAYS_QUOTED = frozenset({"timestamp", "date", "time", "datetime", "text"})


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"no SQL scripts for dialect {dialect!r}; one of {list(DIALECTS)}")


def quote(dialect: str, name: str) -> str:
    """``name`` as an identifier of ``dialect``, quoted when it is a keyword or needs it."""
    _check_dialect(dialect)
    preparer = _PREPARERS[dialect]
    if name.lower() in _ALWAYS_QUOTED:
        return preparer.quote_identifier(name)
    return preparer.quote(name)


def _literal(text: str) -> str:
    """A T-SQL unicode string literal."""
    return "N'" + text.replace("'", "''") + "'"


def _string(dialect: str, text: str) -> str:
    """A string literal of ``dialect`` (unicode on T-SQL)."""
    return _literal(text) if dialect == "mssql" else "'" + text.replace("'", "''") + "'"


def _header(title: str, dialect: str, notes: tuple[str, ...] = ()) -> str:
    lines = [
        f"-- {title}, {dialect}.",
        "-- Generated from llm_observatory/sql_scripts.py by",
        "--   python -m llm_observatory.sql_scripts sql/",
        "-- Do not edit by hand: edit sql_scripts.py and regenerate."
        " Idempotent: safe to run again.",
    ]
    lines += [f"-- {note}" if note else "--" for note in notes]
    return "\n".join(lines) + "\n"


def _script(header: str, parts: list[str]) -> str:
    body = "\n\n".join(part.strip("\n") for part in parts)
    return header + "\n" + "\n".join(line.rstrip() for line in body.splitlines()) + "\n"


# --------------------------------------------------------------------------- control database


def _watermark_table(dialect: str, if_not_exists: bool) -> str:
    types = _TYPES[dialect]
    table = f"dbo.{WATERMARK_TABLE}" if dialect == "mssql" else WATERMARK_TABLE
    null = " NULL" if dialect == "mssql" else ""
    lines = [f"    id {types['id']},"]
    for name, kind, nullable in WATERMARK_COLUMNS:
        nullability = null if nullable else " NOT NULL"
        lines.append(f"    {quote(dialect, name)} {types[kind]}{nullability},")
    statuses = ", ".join(f"'{status}'" for status in STATUSES)
    lines.append(f"    CONSTRAINT {WATERMARK_STATUS_CHECK} CHECK (status IN ({statuses}))")
    exists = " IF NOT EXISTS" if if_not_exists else ""
    return f"CREATE TABLE{exists} {table} (\n" + "\n".join(lines) + "\n);"


# Control tables compiled from their declarations in resources/control.py, so the scripts and
# `ControlDatabase.ensure_schema` make the same; each with the comment that introduces it.
_DECLARED_CONTROL_TABLES: tuple[tuple[sa.Table, str], ...] = (
    (migration_lease, "Leases: one writer per day of a table, one sync cycle per table."),
    (
        migration_reconciliation,
        "The last reconciliation of each day of each table that matched the source (or was\n"
        "repaired until it did): what the cutover report checks the rotation against.",
    ),
)


def _declared_table(dialect: str, table: sa.Table, comment: str) -> str:
    """``CREATE TABLE`` of ``table`` compiled for ``dialect``, created only when missing."""
    create = sa.schema.CreateTable(table, if_not_exists=dialect != "mssql")
    ddl = str(create.compile(dialect=_SA_DIALECTS[dialect])).strip()
    comment = "".join(f"-- {line}\n" for line in comment.splitlines())
    if dialect == "mssql":
        return (
            f"{comment}IF OBJECT_ID({_literal('dbo.' + table.name)}, N'U') IS NULL\n"
            f"BEGIN\n{ddl};\nEND;\nGO"
        )
    return f"{comment}{ddl};"


def _declared_tables(dialect: str) -> list[str]:
    return [_declared_table(dialect, table, comment) for table, comment in _DECLARED_CONTROL_TABLES]


def _watermark_view(dialect: str, create: str) -> str:
    table = f"dbo.{WATERMARK_TABLE}" if dialect == "mssql" else WATERMARK_TABLE
    completed = "N'COMPLETED'" if dialect == "mssql" else "'COMPLETED'"
    columns = ",\n    ".join(f"w.{quote(dialect, name)}" for name in WATERMARK_COLUMN_NAMES)
    return (
        f"{create}\nAS\n"
        f"SELECT\n    {columns}\n"
        f"FROM {table} AS w\n"
        f"WHERE w.status = {completed}\n"
        "  AND w.id = (\n"
        f"      SELECT MAX(c.id) FROM {table} AS c\n"
        f"      WHERE c.table_name = w.table_name AND c.status = {completed}\n"
        "  );"
    )


# Values a COMPLETED or FAILED call may give; a NULL argument keeps what STARTED stored.
_FINISH_VALUES = (
    "last_extracted_timestamp",
    "last_modified_timestamp",
    "rows_extracted",
    "rows_validated",
    "error_message",
)


def _kept_unless_given(parameter_prefix: str, column_prefix: str) -> str:
    return ",\n            ".join(
        f"{name} = COALESCE({parameter_prefix}{name}, {column_prefix}{name})"
        for name in _FINISH_VALUES
    )


def _control_mssql() -> str:
    table = f"dbo.{WATERMARK_TABLE}"
    parts = [
        "-- The watermark table: one row per incremental cycle and table.\n"
        f"IF OBJECT_ID({_literal(table)}, N'U') IS NULL\nBEGIN\n"
        f"{_watermark_table('mssql', if_not_exists=False)}\nEND;\nGO",
    ]
    types = _TYPES["mssql"]
    kinds = {name: kind for name, kind, _ in WATERMARK_COLUMNS}
    for name in ADDED_WATERMARK_COLUMNS:
        parts.append(
            f"IF COL_LENGTH({_literal(table)}, {_literal(name)}) IS NULL\n"
            f"    ALTER TABLE {table} ADD {quote('mssql', name)} {types[kinds[name]]} NULL;\nGO"
        )
    parts.append(
        "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = "
        f"{_literal(WATERMARK_INDEX)} AND object_id = OBJECT_ID({_literal(table)}))\n"
        f"    CREATE INDEX {WATERMARK_INDEX} ON {table} (table_name, status, id);\nGO"
    )
    parts.append(
        f"""
-- STARTED inserts a row (extraction_start_time = now, UTC) and returns its id in @watermark_id;
-- COMPLETED and FAILED finish that row, which must belong to @table_name and still be STARTED
-- (extraction_end_time = now; a NULL argument keeps the stored value).
CREATE OR ALTER PROCEDURE dbo.{WATERMARK_PROCEDURE}
    @table_name NVARCHAR(128),
    @status NVARCHAR(16),
    @watermark_id BIGINT = NULL OUTPUT,
    @last_extracted_timestamp DATETIME2(6) = NULL,
    @last_modified_timestamp DATETIME2(6) = NULL,
    @rows_extracted BIGINT = NULL,
    @rows_validated BIGINT = NULL,
    @error_message NVARCHAR(MAX) = NULL
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @message NVARCHAR(2048);

    IF @status = N'STARTED'
    BEGIN
        INSERT INTO {table} (
            table_name, status, extraction_start_time, last_extracted_timestamp,
            last_modified_timestamp, rows_extracted, rows_validated, error_message
        )
        VALUES (
            @table_name, N'STARTED', SYSUTCDATETIME(), @last_extracted_timestamp,
            @last_modified_timestamp, @rows_extracted, @rows_validated, @error_message
        );
        SET @watermark_id = CAST(SCOPE_IDENTITY() AS BIGINT);
        RETURN 0;
    END;

    IF @status IN (N'COMPLETED', N'FAILED')
    BEGIN
        UPDATE {table}
        SET status = @status,
            extraction_end_time = SYSUTCDATETIME(),
            {_kept_unless_given("@", "")}
        WHERE id = @watermark_id AND table_name = @table_name AND status = N'STARTED';
        IF @@ROWCOUNT = 0
        BEGIN
            SET @message = CONCAT(
                N'{WATERMARK_PROCEDURE}: no STARTED watermark row ',
                COALESCE(CAST(@watermark_id AS NVARCHAR(20)), N'NULL'),
                N' for table ', @table_name
            );
            THROW 50001, @message, 1;
        END;
        RETURN 0;
    END;

    SET @message = CONCAT(
        N'{WATERMARK_PROCEDURE}: unknown status ', COALESCE(@status, N'NULL'),
        N'; expected STARTED, COMPLETED or FAILED'
    );
    THROW 50000, @message, 1;
END;
GO""",
    )
    parts.append(
        "-- The watermark in force per table: its latest COMPLETED row.\n"
        + _watermark_view("mssql", f"CREATE OR ALTER VIEW dbo.{WATERMARK_VIEW}")
        + "\nGO"
    )
    parts += _declared_tables("mssql")
    notes = ("Needs SQL Server 2016 SP1 or later (CREATE OR ALTER). Batches end with GO.",)
    header = _header("Control database of llm-observatory", "mssql", notes)
    return _script(header, parts)


def _control_postgresql() -> str:
    types = _TYPES["postgresql"]
    kinds = {name: kind for name, kind, _ in WATERMARK_COLUMNS}
    parts = [
        "-- The watermark table: one row per incremental cycle and table.\n"
        + _watermark_table("postgresql", if_not_exists=True),
        "\n".join(
            f"ALTER TABLE {WATERMARK_TABLE} ADD COLUMN IF NOT EXISTS "
            f"{quote('postgresql', name)} {types[kinds[name]]};"
            for name in ADDED_WATERMARK_COLUMNS
        ),
        f"CREATE INDEX IF NOT EXISTS {WATERMARK_INDEX} "
        f"ON {WATERMARK_TABLE} (table_name, status, id);",
        f"""
-- STARTED inserts a row (extraction_start_time = now) and returns its id; COMPLETED and FAILED
-- finish row p_watermark_id, which must belong to p_table_name and still be STARTED
-- (extraction_end_time = now; a NULL argument keeps the stored value), and return its id.
-- Call: SELECT {WATERMARK_PROCEDURE}(p_table_name => 'logs', p_status => 'STARTED');
CREATE OR REPLACE FUNCTION {WATERMARK_PROCEDURE}(
    p_table_name VARCHAR,
    p_status VARCHAR,
    p_watermark_id BIGINT DEFAULT NULL,
    p_last_extracted_timestamp TIMESTAMP WITH TIME ZONE DEFAULT NULL,
    p_last_modified_timestamp TIMESTAMP WITH TIME ZONE DEFAULT NULL,
    p_rows_extracted BIGINT DEFAULT NULL,
    p_rows_validated BIGINT DEFAULT NULL,
    p_error_message TEXT DEFAULT NULL
) RETURNS BIGINT
LANGUAGE plpgsql
AS $$
DECLARE
    v_id BIGINT;
BEGIN
    IF p_status = 'STARTED' THEN
        INSERT INTO {WATERMARK_TABLE} (
            table_name, status, extraction_start_time, last_extracted_timestamp,
            last_modified_timestamp, rows_extracted, rows_validated, error_message
        )
        VALUES (
            p_table_name, 'STARTED', clock_timestamp(), p_last_extracted_timestamp,
            p_last_modified_timestamp, p_rows_extracted, p_rows_validated, p_error_message
        )
        RETURNING id INTO v_id;
        RETURN v_id;
    ELSIF p_status IN ('COMPLETED', 'FAILED') THEN
        UPDATE {WATERMARK_TABLE} AS w
        SET status = p_status,
            extraction_end_time = clock_timestamp(),
            {_kept_unless_given("p_", "w.")}
        WHERE w.id = p_watermark_id AND w.table_name = p_table_name AND w.status = 'STARTED'
        RETURNING w.id INTO v_id;
        IF v_id IS NULL THEN
            RAISE EXCEPTION '{WATERMARK_PROCEDURE}: no STARTED watermark row % for table %',
                COALESCE(p_watermark_id::TEXT, 'NULL'), p_table_name
                USING ERRCODE = 'no_data_found';
        END IF;
        RETURN v_id;
    END IF;
    RAISE EXCEPTION
        '{WATERMARK_PROCEDURE}: unknown status %; expected STARTED, COMPLETED or FAILED',
        COALESCE(p_status, 'NULL')
        USING ERRCODE = 'invalid_parameter_value';
END;
$$;""",
        "-- The watermark in force per table: its latest COMPLETED row.\n"
        + _watermark_view("postgresql", f"CREATE OR REPLACE VIEW {WATERMARK_VIEW}"),
    ]
    parts += _declared_tables("postgresql")
    header = _header("Control database of llm-observatory", "postgresql")
    return _script(header, parts)


def _control_sqlite() -> str:
    parts = [
        "-- The watermark table: one row per incremental cycle and table.\n"
        + _watermark_table("sqlite", if_not_exists=True),
        f"CREATE INDEX IF NOT EXISTS {WATERMARK_INDEX} "
        f"ON {WATERMARK_TABLE} (table_name, status, id);",
        "-- The watermark in force per table: its latest COMPLETED row.\n"
        + _watermark_view("sqlite", f"CREATE VIEW IF NOT EXISTS {WATERMARK_VIEW}"),
    ]
    notes = (
        f"SQLite has no stored procedures: no {WATERMARK_PROCEDURE} here; the pipeline writes",
        "watermark rows itself (llm_observatory/resources/control.py).",
        "SQLite has no ADD COLUMN IF NOT EXISTS: a migration_watermark created before run_id and",
        "lake_versions existed needs `ALTER TABLE migration_watermark ADD COLUMN run_id",
        "VARCHAR(64)` and `... ADD COLUMN lake_versions TEXT` once, by hand. CREATE VIEW IF NOT",
        f"EXISTS keeps an older {WATERMARK_VIEW}: drop it first to pick up a changed definition.",
    )
    parts += _declared_tables("sqlite")
    header = _header("Control database of llm-observatory", "sqlite", notes)
    return _script(header, parts)


def control_ddl(dialect: str) -> str:
    """The control script of ``dialect``: watermark table, index, procedure and view, lease
    and reconciliation tables."""
    _check_dialect(dialect)
    return {
        "mssql": _control_mssql,
        "postgresql": _control_postgresql,
        "sqlite": _control_sqlite,
    }[dialect]()


# --------------------------------------------------------------------------- source preparation


def _names(table: TableSpec) -> tuple[str, str, str]:
    """Trigger, index and default-constraint names of ``table``'s change column."""
    column = table.change_column
    return (
        f"trg_{table.name}_{column}",
        f"ix_{table.name}_{column}",
        f"df_{table.name}_{column}",
    )


def _set_function(column: str) -> str:
    """The PostgreSQL trigger function that sets ``column``, shared by the tables that have it."""
    return f"llm_obs_set_{column}"


def _prepare_mssql(table: TableSpec) -> list[str]:
    trigger, index, default = _names(table)
    name = f"dbo.{quote('mssql', table.name)}"
    column = quote("mssql", table.change_column)
    key = quote("mssql", table.key)
    column_id = (
        f"COLUMNPROPERTY(OBJECT_ID({_literal(name)}), {_literal(table.change_column)}, 'ColumnId')"
    )
    return [
        f"-- {table.name}: {table.change_column}, set on INSERT (default) and UPDATE (trigger).\n"
        f"IF COL_LENGTH({_literal(name)}, {_literal(table.change_column)}) IS NULL\n"
        f"    ALTER TABLE {name} ADD {column} DATETIME2(6) NOT NULL\n"
        f"        CONSTRAINT {default} DEFAULT SYSUTCDATETIME();\nGO",
        "IF NOT EXISTS (SELECT 1 FROM sys.default_constraints WHERE parent_object_id = "
        f"OBJECT_ID({_literal(name)})\n"
        f"    AND parent_column_id = {column_id})\n"
        f"    ALTER TABLE {name} ADD CONSTRAINT {default}\n"
        f"        DEFAULT SYSUTCDATETIME() FOR {column};\nGO",
        f"CREATE OR ALTER TRIGGER dbo.{trigger}\n"
        f"ON {name}\n"
        "AFTER UPDATE\n"
        "AS\n"
        "BEGIN\n"
        "    SET NOCOUNT ON;\n"
        "    IF TRIGGER_NESTLEVEL(@@PROCID) > 1 RETURN;\n"
        "    UPDATE t\n"
        f"    SET {column} = SYSUTCDATETIME()\n"
        f"    FROM {name} AS t\n"
        f"    INNER JOIN inserted AS i ON t.{key} = i.{key};\n"
        "END;\nGO",
        _mssql_index(table.name, index, table.change_column, "what the watermark reads"),
        _mssql_index(
            table.name,
            _event_time_index(table),
            table.event_time,
            "what every day's copy, check and reconciliation reads",
        ),
    ]


# SERVERPROPERTY('EngineEdition') of the servers that build an index online: 3 Enterprise
# (Developer and Evaluation report 3 too), 5 Azure SQL Database, 8 Azure SQL Managed Instance.
ONLINE_INDEX_EDITIONS = (3, 5, 8)


def _event_time_index(table: TableSpec) -> str:
    return f"ix_{table.name}_{table.event_time}"


def _mssql_index(table_name: str, index: str, column_name: str, why: str) -> str:
    """``CREATE INDEX`` on ``column_name`` unless an index already leads with it (whatever its
    name: the DBA's own serves as well), online where the edition can."""
    name = f"dbo.{quote('mssql', table_name)}"
    column = quote("mssql", column_name)
    create = f"CREATE INDEX {index} ON {name} ({column})"
    return (
        f"-- {table_name}: an index leading with {column_name} ({why}).\n"
        "-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.\n"
        "-- Standard and Express build it offline, blocking writes to the table meanwhile:\n"
        "-- run the script there in a maintenance window.\n"
        "IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic\n"
        "    INNER JOIN sys.indexes AS ix\n"
        "        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id\n"
        f"    WHERE ic.object_id = OBJECT_ID({_literal(name)}) AND ic.key_ordinal = 1\n"
        f"    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID({_literal(name)}), "
        f"{_literal(column_name)}, 'ColumnId')\n"
        "    AND ix.is_hypothetical = 0)\n"
        f"{_online_where_possible(create)}\nGO"
    )


def _online_where_possible(create: str) -> str:
    """``create`` (a CREATE INDEX) WITH (ONLINE = ON) on the editions that have it, as is
    elsewhere: one BEGIN ... END block."""
    editions = ", ".join(str(edition) for edition in ONLINE_INDEX_EDITIONS)
    return (
        "BEGIN\n"
        f"    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN ({editions})\n"
        f"        {create} WITH (ONLINE = ON);\n"
        "    ELSE\n"
        f"        {create};\n"
        "END;"
    )


def _prepare_postgresql(table: TableSpec) -> list[str]:
    trigger, index, _ = _names(table)
    name = quote("postgresql", table.name)
    column = quote("postgresql", table.change_column)
    return [
        f"-- {table.name}: {table.change_column}, set on INSERT (default) and UPDATE (trigger).\n"
        f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {column} TIMESTAMPTZ NOT NULL "
        "DEFAULT statement_timestamp();\n"
        f"ALTER TABLE {name} ALTER COLUMN {column} SET DEFAULT statement_timestamp();",
        f"CREATE OR REPLACE TRIGGER {trigger} BEFORE UPDATE ON {name}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {_set_function(table.change_column)}();",
        f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({column});",
        f"CREATE INDEX IF NOT EXISTS {_event_time_index(table)} ON {name} "
        f"({quote('postgresql', table.event_time)});",
    ]


def _prepare_sqlite(table: TableSpec) -> list[str]:
    trigger, index, _ = _names(table)
    name = quote("sqlite", table.name)
    column = quote("sqlite", table.change_column)
    return [
        f"-- {table.name}: {table.change_column} set by every UPDATE that does not set it.\n"
        f"CREATE TRIGGER IF NOT EXISTS {trigger}\n"
        f"AFTER UPDATE ON {name}\n"
        "FOR EACH ROW\n"
        f"WHEN NEW.{column} IS OLD.{column}\n"
        "BEGIN\n"
        f"    UPDATE {name} SET {column} = strftime('%Y-%m-%d %H:%M:%f000', 'now')\n"
        "    WHERE rowid = NEW.rowid;\n"
        "END;",
        f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({column});",
        f"CREATE INDEX IF NOT EXISTS {_event_time_index(table)} ON {name} "
        f"({quote('sqlite', table.event_time)});",
    ]


# --------------------------------------------------------------------------- departure capture

_DEPARTURE_COLUMNS = "table_name, key_value, old_event_time, departed_at, kind"
# The source's clock in UTC, as the change column gets it (see _prepare_* above).
_NOW = {
    "mssql": "SYSUTCDATETIME()",
    "postgresql": "statement_timestamp()",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now')",
}


def _departures_table(dialect: str) -> list[str]:
    """`migration_departures` and its index, compiled from the declaration in
    resources/departures.py (on SQL Server in dbo, where the triggers write)."""
    table = migration_departures
    if dialect == "mssql":
        table = migration_departures.to_metadata(sa.MetaData(), schema="dbo")
    (index,) = table.indexes
    guarded = dialect != "mssql"
    engine_dialect = _SA_DIALECTS[dialect]
    create = str(
        sa.schema.CreateTable(table, if_not_exists=guarded).compile(dialect=engine_dialect)
    ).strip()
    create_index = str(
        sa.schema.CreateIndex(index, if_not_exists=guarded).compile(dialect=engine_dialect)
    ).strip()
    comment = (
        f"-- {DEPARTURES_TABLE}: one row per row that left its place (kind '{DELETE}' or "
        f"'{MOVE}'),\n-- read by the sync in its window and purged once every watermark "
        "is past it.\n"
    )
    if dialect != "mssql":
        return [f"{comment}{create};", f"{create_index};"]
    name = f"dbo.{DEPARTURES_TABLE}"
    return [
        f"{comment}IF OBJECT_ID({_literal(name)}, N'U') IS NULL\nBEGIN\n{create};\nEND;\nGO",
        "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = "
        f"{_literal(DEPARTURES_INDEX)} AND object_id = OBJECT_ID({_literal(name)}))\n"
        f"{_online_where_possible(create_index)}\nGO",
    ]


def _departure_comment(table: TableSpec) -> str:
    return (
        f"-- {table.name}: a {DEPARTURES_TABLE} row per deleted row ('{DELETE}') and per row an\n"
        f"-- UPDATE gives another {table.event_time} or {table.key} ('{MOVE}'): the old key and "
        "old event time.\n"
    )


def _departures_mssql(table: TableSpec) -> list[str]:
    """One set-based trigger for UPDATE and DELETE. `deleted` LEFT JOIN `inserted` on the key:
    a deleted row without a match was deleted, or its key changed (a move of the old key); a
    match whose event time differs moved. An UPDATE that sets neither column returns at once."""
    (trigger,) = departure_triggers("mssql", table.name)
    name = f"dbo.{quote('mssql', table.name)}"
    key = quote("mssql", table.key)
    event_time = quote("mssql", table.event_time)
    return [
        f"{_departure_comment(table)}"
        f"CREATE OR ALTER TRIGGER dbo.{trigger}\n"
        f"ON {name}\n"
        "AFTER UPDATE, DELETE\n"
        "AS\n"
        "BEGIN\n"
        "    SET NOCOUNT ON;\n"
        f"    DECLARE @kind NVARCHAR(8) = {_literal(DELETE)};\n"
        "    IF EXISTS (SELECT 1 FROM inserted)\n"
        "    BEGIN\n"
        f"        IF NOT (UPDATE({event_time}) OR UPDATE({key})) RETURN;\n"
        f"        SET @kind = {_literal(MOVE)};\n"
        "    END;\n"
        f"    INSERT INTO dbo.{DEPARTURES_TABLE} ({_DEPARTURE_COLUMNS})\n"
        f"    SELECT {_literal(table.name)},\n"
        f"        CONVERT(NVARCHAR({KEY_TEXT_LENGTH}), d.{key}),\n"
        "        -- UTC: a DATETIMEOFFSET keeps its instant, a DATETIME2 is UTC already.\n"
        f"        CONVERT(DATETIME2(6), SWITCHOFFSET(d.{event_time}, '+00:00')),\n"
        f"        {_NOW['mssql']},\n"
        "        @kind\n"
        "    FROM deleted AS d\n"
        f"    LEFT JOIN inserted AS i ON i.{key} = d.{key}\n"
        "    -- No match: deleted, or its key changed (recorded as a move of the old key).\n"
        f"    WHERE i.{key} IS NULL\n"
        f"        OR EXISTS (SELECT d.{event_time} EXCEPT SELECT i.{event_time});\n"
        "END;\nGO",
    ]


def _departure_function(table: TableSpec) -> str:
    """The PostgreSQL trigger function recording ``table``'s departures (one per table: the
    key and event-time columns differ)."""
    return f"llm_obs_record_departure_{table.name}"


def _departures_postgresql(table: TableSpec) -> list[str]:
    """A row trigger on DELETE and on an UPDATE that sets the key or the event time; the
    function compares them null-safely. It runs with TimeZone UTC, so an event time without a
    zone (UTC by the project's convention) becomes the same instant."""
    (trigger,) = departure_triggers("postgresql", table.name)
    name = quote("postgresql", table.name)
    key = quote("postgresql", table.key)
    event_time = quote("postgresql", table.event_time)
    function = _departure_function(table)
    return [
        f"{_departure_comment(table)}"
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\n"
        "LANGUAGE plpgsql\n"
        "SET TimeZone = 'UTC'\n"
        "AS $$\n"
        "DECLARE\n"
        f"    v_kind TEXT := {_string('postgresql', DELETE)};\n"
        "BEGIN\n"
        "    IF TG_OP = 'UPDATE' THEN\n"
        f"        IF OLD.{event_time} IS NOT DISTINCT FROM NEW.{event_time}\n"
        f"           AND OLD.{key} IS NOT DISTINCT FROM NEW.{key} THEN\n"
        "            RETURN NULL;\n"
        "        END IF;\n"
        f"        v_kind := {_string('postgresql', MOVE)};\n"
        "    END IF;\n"
        f"    INSERT INTO {DEPARTURES_TABLE} ({_DEPARTURE_COLUMNS})\n"
        f"    VALUES ({_string('postgresql', table.name)}, OLD.{key}::TEXT, OLD.{event_time},\n"
        f"            {_NOW['postgresql']}, v_kind);\n"
        "    RETURN NULL;\n"
        "END;\n"
        "$$;",
        f"CREATE OR REPLACE TRIGGER {trigger}\n"
        f"    AFTER DELETE OR UPDATE OF {event_time}, {key} ON {name}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {function}();",
    ]


def _departures_sqlite(table: TableSpec) -> list[str]:
    """Two row triggers: one per DELETE, one per UPDATE of the key or the event time that
    changes either (`IS NOT`: null-safe)."""
    on_delete, on_move = departure_triggers("sqlite", table.name)
    name = quote("sqlite", table.name)
    key = quote("sqlite", table.key)
    event_time = quote("sqlite", table.event_time)

    def insert(kind: str) -> str:
        return (
            f"    INSERT INTO {DEPARTURES_TABLE} ({_DEPARTURE_COLUMNS})\n"
            f"    VALUES ({_string('sqlite', table.name)}, CAST(OLD.{key} AS TEXT), "
            f"OLD.{event_time},\n"
            f"            {_NOW['sqlite']}, {_string('sqlite', kind)});\n"
        )

    return [
        f"{_departure_comment(table)}"
        f"CREATE TRIGGER IF NOT EXISTS {on_delete}\n"
        f"AFTER DELETE ON {name}\n"
        "FOR EACH ROW\n"
        "BEGIN\n"
        f"{insert(DELETE)}"
        "END;",
        f"CREATE TRIGGER IF NOT EXISTS {on_move}\n"
        f"AFTER UPDATE OF {event_time}, {key} ON {name}\n"
        "FOR EACH ROW\n"
        f"WHEN OLD.{event_time} IS NOT NEW.{event_time} OR OLD.{key} IS NOT NEW.{key}\n"
        "BEGIN\n"
        f"{insert(MOVE)}"
        "END;",
    ]


_DEPARTURE_TRIGGERS = {
    "mssql": _departures_mssql,
    "postgresql": _departures_postgresql,
    "sqlite": _departures_sqlite,
}

_DEPARTURE_NOTES: tuple[str, ...] = (
    "",
    "Departures: a watermark on last_modified sees inserts and updates, never a deleted row,",
    "nor the old day of a row an UPDATE moved to another event time (or key). The triggers",
    f"record each such row in {DEPARTURES_TABLE} (old key as text, old event time in UTC, the",
    "source's UTC clock, the kind); the next sync takes those keys out of the day they left",
    "unless the source holds them there now. What bypasses row triggers records nothing:",
)
_DEPARTURE_BYPASSES = {
    "mssql": (
        "TRUNCATE TABLE, ALTER TABLE ... SWITCH (a partition switched out), a disabled trigger",
        "(DISABLE TRIGGER). The sync's reconciliation rotation is the safety net for those.",
    ),
    "postgresql": (
        "TRUNCATE, a disabled trigger, session_replication_role = replica. The sync's",
        "reconciliation rotation is the safety net for those.",
    ),
    "sqlite": (
        "INSERT OR REPLACE deleting a conflicting row (DELETE triggers fire on it only with",
        "PRAGMA recursive_triggers on). The sync's reconciliation rotation is the safety net.",
    ),
}


def _departure_notes(dialect: str) -> tuple[str, ...]:
    return _DEPARTURE_NOTES + _DEPARTURE_BYPASSES[dialect]


def _departure_parts(dialect: str) -> list[str]:
    parts = _departures_table(dialect)
    for table in TABLES:
        parts += _DEPARTURE_TRIGGERS[dialect](table)
    return parts


def departure_capture_ddl(dialect: str) -> str:
    """The departure capture of ``dialect`` alone: ``migration_departures``, its index, and the
    triggers (with their functions on PostgreSQL) of every table in :data:`TABLES`. The
    preparation script holds the same statements after its change-column part."""
    _check_dialect(dialect)
    title = "Departure capture of the llm-observatory source tables"
    notes = {
        "mssql": ("Needs SQL Server 2016 SP1 or later (CREATE OR ALTER). Batches end with GO.",),
        "postgresql": ("Needs PostgreSQL 14 or later (CREATE OR REPLACE TRIGGER).",),
        "sqlite": (
            "CREATE TRIGGER IF NOT EXISTS keeps an older trigger: drop it to pick up a change.",
        ),
    }[dialect]
    header = _header(title, dialect, notes + _departure_notes(dialect))
    return _script(header, _departure_parts(dialect))


def install_departure_capture(engine: sa.Engine) -> int:
    """Apply :func:`departure_capture_ddl` of ``engine``'s dialect (one transaction); return how
    many statements ran. For sources whose change column is kept otherwise (the synthetic
    generator sets it), so the last_modified triggers are not wanted."""
    return apply_script(engine, departure_capture_ddl(engine.dialect.name))


def source_preparation(dialect: str) -> str:
    """The preparation script of ``dialect`` for every table in :data:`TABLES`: the change
    column's part, then the departure capture."""
    _check_dialect(dialect)
    title = "Incremental-load preparation of the llm-observatory source tables"
    parts: list[str] = []
    notes: tuple[str, ...] = ()
    if dialect == "mssql":
        notes = (
            "Needs SQL Server 2016 SP1 or later (CREATE OR ALTER). Batches end with GO.",
            "Indexes are built WITH (ONLINE = ON) on Enterprise, Developer and Azure SQL",
            "(SERVERPROPERTY('EngineEdition') 3, 5, 8); elsewhere (Standard, Express) offline,",
            "blocking writes to the table while each builds: run it in a maintenance window.",
            "Nothing else is touched: an index that already leads with the column is kept.",
        )
        for table in TABLES:
            parts += _prepare_mssql(table)
    elif dialect == "postgresql":
        notes = ("Needs PostgreSQL 14 or later (CREATE OR REPLACE TRIGGER).",)
        for column in dict.fromkeys(table.change_column for table in TABLES):
            parts.append(
                f"-- Sets {column} to the statement's start time on every UPDATE.\n"
                f"CREATE OR REPLACE FUNCTION {_set_function(column)}() RETURNS trigger\n"
                "LANGUAGE plpgsql\n"
                "AS $$\n"
                "BEGIN\n"
                f"    NEW.{quote('postgresql', column)} := statement_timestamp();\n"
                "    RETURN NEW;\n"
                "END;\n"
                "$$;"
            )
        for table in TABLES:
            parts += _prepare_postgresql(table)
    else:
        notes = (
            "SQLite cannot add a NOT NULL column with a non-constant default (and has no ADD",
            "COLUMN IF NOT EXISTS): the change column comes with the reference DDL",
            "(sql/source_sqlite.sql), so this script only adds the triggers and the indexes.",
            "Timestamps are text YYYY-MM-DD HH:MM:SS.ffffff in UTC, as SQLAlchemy stores DATETIME.",
            "CREATE TRIGGER IF NOT EXISTS keeps an older trigger: drop it to pick up a change.",
        )
        for table in TABLES:
            parts += _prepare_sqlite(table)
    parts += _departure_parts(dialect)
    return _script(_header(title, dialect, notes + _departure_notes(dialect)), parts)


# --------------------------------------------------------------------------- files and execution


def write_scripts(folder: Path) -> list[Path]:
    """Write ``control_<dialect>.sql`` and ``prepare_source_<dialect>.sql`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for dialect in DIALECTS:
        for stem, render in (("control", control_ddl), ("prepare_source", source_preparation)):
            path = folder / f"{stem}_{dialect}.sql"
            path.write_text(render(dialect), encoding="utf-8")
            paths.append(path)
    return paths


_DOLLAR_QUOTE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*\$|\$\$")
_CREATE_TRIGGER = re.compile(r"CREATE\s+(?:TEMP(?:ORARY)?\s+)?TRIGGER\b", re.IGNORECASE)


def _is_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("--")


def _finish(lines: list[str], into: list[str]) -> None:
    """Append ``lines`` as one statement, without its leading comments; skip comment-only ones."""
    while lines and _is_comment(lines[0]):
        lines.pop(0)
    text = "\n".join(lines).strip()
    if text:
        into.append(text)


def statements(script: str, dialect: str) -> list[str]:
    """The executable statements of a generated ``script`` (T-SQL: batches), in order.

    ``mssql`` splits on ``GO`` lines; ``postgresql`` on a ``;`` ending a line outside a
    dollar-quoted body; ``sqlite`` on a ``;`` ending a line, except inside a trigger, which ends at
    its ``END;`` line. Comment lines before a statement and comment-only chunks are dropped.
    """
    _check_dialect(dialect)
    result: list[str] = []
    current: list[str] = []
    dollar_tag: str | None = None  # postgresql: inside a body quoted with this tag
    in_trigger: bool | None = None  # sqlite: the current statement creates a trigger
    for line in script.splitlines():
        if dialect == "mssql":
            if line.strip().upper() == "GO":
                _finish(current, result)
                current = []
            else:
                current.append(line)
            continue
        current.append(line)
        if dialect == "postgresql":
            if not (dollar_tag is None and line.lstrip().startswith("--")):
                for tag in _DOLLAR_QUOTE.findall(line):
                    if dollar_tag is None:
                        dollar_tag = tag
                    elif tag == dollar_tag:
                        dollar_tag = None
            ends = dollar_tag is None and not _is_comment(line) and line.rstrip().endswith(";")
        else:
            if in_trigger is None and not _is_comment(line):
                in_trigger = bool(_CREATE_TRIGGER.match(line.strip()))
            if in_trigger:
                ends = line.strip().upper() == "END;"
            else:
                ends = not _is_comment(line) and line.rstrip().endswith(";")
        if ends:
            _finish(current, result)
            current = []
            in_trigger = None
    _finish(current, result)
    return result


def apply_script(engine: sa.Engine, script: str) -> int:
    """Execute the statements of ``script`` in one transaction on ``engine``; return how many.

    The dialect comes from the engine. Statements go to the driver without a parameter list
    (``no_parameters``), so a ``%`` in a body (plpgsql ``RAISE``, SQLite ``strftime``) is not
    taken for a placeholder. On SQLite the transaction is begun explicitly, since the sqlite3
    driver would otherwise run DDL outside one.
    """
    dialect = engine.dialect.name
    parts = statements(script, dialect)
    with engine.begin() as connection:
        if dialect == "sqlite":
            dbapi_connection = connection.connection.dbapi_connection
            if not getattr(dbapi_connection, "in_transaction", True):
                connection.exec_driver_sql("BEGIN")
        for statement in parts:
            connection.exec_driver_sql(statement, execution_options={"no_parameters": True})
    return len(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_observatory.sql_scripts",
        description="Write the control and source-preparation SQL scripts of every dialect.",
    )
    parser.add_argument(
        "folder", type=Path, nargs="?", default=Path("sql"), help="output folder (default sql/)"
    )
    args = parser.parse_args(argv)
    for path in write_scripts(args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
