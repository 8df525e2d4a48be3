"""The generated control and source-preparation SQL scripts: committed files up to date, and on
SQLite and a real PostgreSQL idempotent, constrained, and with working procedure, view and
change-column triggers. SQL Server cannot run here: its scripts are checked as text."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from llm_observatory.resources.control import migration_watermark
from llm_observatory.sql_scripts import (
    DIALECTS,
    WATERMARK_COLUMN_NAMES,
    apply_script,
    control_ddl,
    source_preparation,
    statements,
    write_scripts,
)
from llm_observatory.tables import TABLES

REPO = Path(__file__).resolve().parents[1]
SQL = REPO / "sql"
OLD = "2026-01-01 00:00:00.000000"
INTERACTION_ID = "00000000-0000-0000-0000-000000000001"


def _scripts(dialect: str) -> list[str]:
    return [control_ddl(dialect), source_preparation(dialect)]


# --- committed files ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("stem", ["control", "prepare_source"])
def test_committed_scripts_are_generated_from_the_declarations(stem: str, dialect: str) -> None:
    render = control_ddl if stem == "control" else source_preparation
    committed = (SQL / f"{stem}_{dialect}.sql").read_text(encoding="utf-8")
    assert committed == render(dialect), (
        "regenerate with: python -m llm_observatory.sql_scripts sql/"
    )


def test_the_command_writes_six_scripts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm_observatory.sql_scripts", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == sorted(
        f"{stem}_{dialect}.sql" for stem in ("control", "prepare_source") for dialect in DIALECTS
    )
    assert len(result.stdout.splitlines()) == 6
    assert [path.name for path in write_scripts(tmp_path / "again")] == [
        f"{stem}_{dialect}.sql" for dialect in DIALECTS for stem in ("control", "prepare_source")
    ]


def test_every_script_says_where_it_comes_from() -> None:
    for dialect in DIALECTS:
        for script in _scripts(dialect):
            assert script.startswith("-- ")
            assert "python -m llm_observatory.sql_scripts sql/" in script
            assert "Idempotent: safe to run again." in script


def test_the_watermark_columns_are_those_the_pipeline_declares() -> None:
    assert set(WATERMARK_COLUMN_NAMES) == {column.name for column in migration_watermark.columns}


def test_unknown_dialect_is_refused() -> None:
    for function in (control_ddl, source_preparation):
        with pytest.raises(ValueError, match="oracle"):
            function("oracle")
    with pytest.raises(ValueError, match="oracle"):
        statements("SELECT 1;", "oracle")


# --- splitting ----------------------------------------------------------------------------------


def test_postgresql_splitting_keeps_dollar_quoted_bodies_whole() -> None:
    script = (
        "-- header;\n"
        "CREATE TABLE a (x INT);\n"
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "    NEW.x := 1;\n"
        "    RETURN NEW;\n"
        "END;\n"
        "$$;\n"
        "DO $body$ BEGIN PERFORM 1; END; $body$;\n"
        "-- trailing comment\n"
    )
    parts = statements(script, "postgresql")
    assert parts == [
        "CREATE TABLE a (x INT);",
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        "    NEW.x := 1;\n    RETURN NEW;\nEND;\n$$;",
        "DO $body$ BEGIN PERFORM 1; END; $body$;",
    ]


def test_sqlite_splitting_keeps_trigger_bodies_whole() -> None:
    parts = statements(source_preparation("sqlite"), "sqlite")
    # Per table: last_modified trigger and index, the event-time index, two departure triggers;
    # the departures table and its index once.
    assert len(parts) == 5 * len(TABLES) + 2
    triggers = [part for part in parts if part.startswith("CREATE TRIGGER")]
    assert len(triggers) == 3 * len(TABLES)
    assert all(part.endswith("END;") and part.count("BEGIN") == 1 for part in triggers)
    last_modified = [part for part in triggers if "_last_modified" in part.splitlines()[0]]
    assert len(last_modified) == len(TABLES)
    assert all("UPDATE" in part for part in last_modified)


def test_mssql_batches_are_non_empty_and_mention_the_essentials() -> None:
    control, preparation = _scripts("mssql")
    for script in (control, preparation):
        batches = statements(script, "mssql")
        assert batches
        assert all(batch.strip() for batch in batches)
        assert not any(re.search(r"^\s*GO\s*$", batch, re.MULTILINE | re.I) for batch in batches)
        for batch in batches:  # CREATE PROCEDURE/TRIGGER/VIEW must open their batch
            creates = re.findall(r"^CREATE OR ALTER (?:PROCEDURE|TRIGGER|VIEW)", batch, re.M)
            assert not creates or batch.startswith(creates[0])
            assert len(creates) <= 1
    # Per table: change column, default, trigger, its index, the event-time index, departure
    # trigger; the departures table and its index once.
    assert len(statements(preparation, "mssql")) == 6 * len(TABLES) + 2
    for word in ("SYSUTCDATETIME", "usp_update_watermark", "THROW", "current_watermark"):
        assert word in control
    for word in ("SYSUTCDATETIME", "TRIGGER_NESTLEVEL", "COL_LENGTH"):
        assert word in preparation
    for table in TABLES:
        assert f"CREATE OR ALTER TRIGGER dbo.trg_{table.name}_last_modified" in preparation
        assert f"ON t.{table.key} = i.{table.key}" in preparation
        assert f"ix_{table.name}_last_modified" in preparation


def test_mssql_indexes_are_built_online_where_the_edition_allows_and_nothing_else() -> None:
    preparation = source_preparation("mssql")
    batches = statements(preparation, "mssql")
    creates = [batch for batch in batches if "CREATE INDEX" in batch]
    # Both indexes of every table (change column, event time) and the departures' one.
    assert len(creates) == 2 * len(TABLES) + 1
    for batch in creates:
        online, offline = re.findall(r"^\s*(CREATE INDEX .*);$", batch, re.M)
        assert online == offline + " WITH (ONLINE = ON)"
        # The online build only on Enterprise/Developer (3), Azure SQL Database (5) and
        # Managed Instance (8); Standard and Express build offline.
        assert "IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)" in batch
        assert batch.index(online) < batch.index("ELSE") < batch.rindex(offline)
    for table in TABLES:
        for column in (table.change_column, table.event_time):
            (batch,) = [b for b in creates if f"CREATE INDEX ix_{table.name}_{column} " in b]
            # Skipped where any index already leads with the column, whatever its name.
            assert "ic.key_ordinal = 1" in batch
            assert f"N'{column}', 'ColumnId')" in batch
    # Nothing else: no index rebuilt or dropped, no database or statistics option changed.
    for word in ("DROP ", "REBUILD", "REORGANIZE", "ALTER DATABASE", "ALTER INDEX", "DBCC"):
        assert word not in preparation
    assert "maintenance window" in preparation


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_the_other_dialects_create_the_event_time_index_too(dialect: str) -> None:
    preparation = source_preparation(dialect)
    for table in TABLES:
        assert f"CREATE INDEX IF NOT EXISTS ix_{table.name}_{table.event_time} ON " in preparation


# --- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_source(tmp_path: Path) -> sa.Engine:
    path = tmp_path / "source.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript((SQL / "source_sqlite.sql").read_text(encoding="utf-8"))
    engine = sa.create_engine(f"sqlite:///{path}")
    for _ in range(2):  # idempotent
        for script in _scripts("sqlite"):
            assert apply_script(engine, script) == len(statements(script, "sqlite"))
    yield engine
    engine.dispose()


def test_sqlite_control_table_has_every_column_and_checks_the_status(sqlite_source) -> None:
    with sqlite_source.connect() as connection:
        columns = [
            row[1] for row in connection.exec_driver_sql("PRAGMA table_info(migration_watermark)")
        ]
        assert columns == list(WATERMARK_COLUMN_NAMES)
    with pytest.raises(sa.exc.IntegrityError, match="CHECK"), sqlite_source.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO migration_watermark (table_name, status) VALUES ('logs', 'BOGUS')"
        )


def test_sqlite_current_watermark_is_the_latest_completed_row(sqlite_source) -> None:
    with sqlite_source.begin() as connection:
        for status in ("COMPLETED", "COMPLETED", "FAILED", "STARTED"):
            connection.exec_driver_sql(
                "INSERT INTO migration_watermark (table_name, status) VALUES ('logs', ?)",
                (status,),
            )
        rows = connection.exec_driver_sql("SELECT id, status FROM current_watermark").all()
    assert rows == [(2, "COMPLETED")]


def test_sqlite_update_moves_last_modified_forward(sqlite_source) -> None:
    with sqlite_source.begin() as connection:
        connection.exec_driver_sql(
            'INSERT INTO llm_interactions (interaction_id, "timestamp", last_modified) '
            "VALUES (?, ?, ?)",
            (INTERACTION_ID, OLD, OLD),
        )
        connection.exec_driver_sql(
            "UPDATE llm_interactions SET latency_ms = 5 WHERE interaction_id = ?",
            (INTERACTION_ID,),
        )
        (moved,) = connection.exec_driver_sql("SELECT last_modified FROM llm_interactions").one()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", moved)
    parsed = dt.datetime.fromisoformat(moved)
    assert moved > OLD
    assert abs(parsed - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(minutes=5)

    explicit = "2030-01-01 00:00:00.000000"
    with sqlite_source.begin() as connection:
        connection.exec_driver_sql("UPDATE llm_interactions SET last_modified = ?", (explicit,))
        (kept,) = connection.exec_driver_sql("SELECT last_modified FROM llm_interactions").one()
    assert kept == explicit


def test_apply_script_is_one_transaction_on_sqlite(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    script = "CREATE TABLE first_one (x INTEGER);\nINSERT INTO missing_table VALUES (1);\n"
    with pytest.raises(sa.exc.OperationalError, match="missing_table"):
        apply_script(engine, script)
    assert "first_one" not in sa.inspect(engine).get_table_names()
    engine.dispose()


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def postgres_source(postgres_url: str) -> sa.Engine:
    engine = sa.create_engine(postgres_url)
    apply_script(engine, (SQL / "source_postgresql.sql").read_text(encoding="utf-8"))
    for _ in range(2):  # idempotent
        for script in _scripts("postgresql"):
            assert apply_script(engine, script) == len(statements(script, "postgresql"))
    yield engine
    engine.dispose()


def _watermark(connection, status: str, **arguments) -> int:
    names = ["p_table_name", "p_status", *arguments]
    call = ", ".join(f"{name} => :{name}" for name in names)
    values = {"p_table_name": "logs", "p_status": status, **arguments}
    return connection.execute(sa.text(f"SELECT usp_update_watermark({call})"), values).scalar_one()


def test_postgresql_watermark_function_and_view(postgres_source) -> None:
    engine = postgres_source
    with engine.connect() as connection:
        columns = [
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'migration_watermark' ORDER BY ordinal_position"
            )
        ]
    assert columns == list(WATERMARK_COLUMN_NAMES)

    high = dt.datetime(2026, 11, 2, 12, 30, 0, 123456, tzinfo=dt.UTC)
    with engine.begin() as connection:
        first = _watermark(connection, "STARTED")
        completed = _watermark(
            connection,
            "COMPLETED",
            p_watermark_id=first,
            p_last_extracted_timestamp=high,
            p_last_modified_timestamp=high,
            p_rows_extracted=10,
            p_rows_validated=9,
        )
        assert completed == first
        failed = _watermark(connection, "STARTED")
        _watermark(connection, "FAILED", p_watermark_id=failed, p_error_message="boom")
        _watermark(connection, "STARTED")  # still running: not the watermark in force
    with engine.connect() as connection:
        row = connection.exec_driver_sql("SELECT * FROM current_watermark").mappings().one()
        failed_row = connection.execute(
            sa.text("SELECT status, error_message FROM migration_watermark WHERE id = :id"),
            {"id": failed},
        ).one()
    assert row["id"] == first and row["table_name"] == "logs" and row["status"] == "COMPLETED"
    assert row["last_extracted_timestamp"] == high and row["last_modified_timestamp"] == high
    assert (row["rows_extracted"], row["rows_validated"]) == (10, 9)
    assert row["extraction_start_time"] <= row["extraction_end_time"]
    assert tuple(failed_row) == ("FAILED", "boom")

    with pytest.raises(sa.exc.DBAPIError, match="unknown status BOGUS"), engine.begin() as c:
        _watermark(c, "BOGUS")
    with pytest.raises(sa.exc.DBAPIError, match="no STARTED watermark row"), engine.begin() as c:
        _watermark(c, "COMPLETED", p_watermark_id=first)  # already finished
    bogus = "INSERT INTO migration_watermark (table_name, status) VALUES ('logs', 'BOGUS')"
    with pytest.raises(sa.exc.IntegrityError, match="ck_migration_watermark"), engine.begin() as c:
        c.exec_driver_sql(bogus)


def test_postgresql_update_moves_last_modified_forward(postgres_source) -> None:
    engine = postgres_source
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO logs (log_id, created_at, level, last_modified) "
                "VALUES (1, :old, 'INFO', :old)"
            ),
            {"old": old},
        )
        # The change column now has a default: an INSERT may leave it out.
        connection.exec_driver_sql(
            "INSERT INTO logs (log_id, created_at, level) VALUES (2, now(), 'INFO')"
        )
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE logs SET level = 'WARN' WHERE log_id = 1")
        moved, now = connection.exec_driver_sql(
            "SELECT last_modified, statement_timestamp() FROM logs WHERE log_id = 1"
        ).one()
    assert old < moved <= now
    with engine.connect() as connection:
        triggers = connection.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"
        ).scalars()
        assert sorted(triggers) == sorted(
            f"trg_{table.name}_{suffix}"
            for table in TABLES
            for suffix in ("last_modified", "departures")
        )


def test_postgresql_preparation_adds_the_missing_event_time_index(postgres_url) -> None:
    engine = sa.create_engine(postgres_url)
    reference = (SQL / "source_postgresql.sql").read_text(encoding="utf-8")
    # A source made without its event-time indexes (only the tables and change-column ones).
    without = "\n".join(
        line
        for line in reference.splitlines()
        if not any(f"ix_{t.name}_{t.event_time} " in line for t in TABLES)
    )
    apply_script(engine, without)

    def event_time_indexes() -> set[str]:
        with engine.connect() as connection:
            return {
                table.name
                for table in TABLES
                if connection.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_index i JOIN pg_attribute a "
                        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                        "WHERE i.indrelid = CAST(:table AS regclass) AND a.attname = :column"
                    ),
                    {"table": table.name, "column": table.event_time},
                ).scalar_one()
            }

    try:
        assert event_time_indexes() == set()
        apply_script(engine, source_preparation("postgresql"))
        assert event_time_indexes() == {table.name for table in TABLES}
    finally:
        engine.dispose()


def test_postgresql_control_script_upgrades_a_table_made_without_the_new_columns(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE migration_watermark (id SERIAL PRIMARY KEY, "
            "table_name VARCHAR(128) NOT NULL, last_extracted_timestamp TIMESTAMPTZ, "
            "last_modified_timestamp TIMESTAMPTZ, extraction_start_time TIMESTAMPTZ, "
            "extraction_end_time TIMESTAMPTZ, rows_extracted BIGINT, rows_validated BIGINT, "
            "status VARCHAR(16) NOT NULL, error_message TEXT)"
        )
    apply_script(engine, control_ddl("postgresql"))
    columns = {column["name"] for column in sa.inspect(engine).get_columns("migration_watermark")}
    assert columns == set(WATERMARK_COLUMN_NAMES)
    with engine.begin() as connection:
        started = _watermark(connection, "STARTED")
        _watermark(connection, "COMPLETED", p_watermark_id=started)
        in_force = connection.exec_driver_sql("SELECT id FROM current_watermark").scalar_one()
    assert in_force == started
    engine.dispose()


def test_control_scripts_accept_the_table_the_pipeline_creates(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'control.db'}")
    migration_watermark.metadata.create_all(engine)
    apply_script(engine, control_ddl("sqlite"))
    with engine.begin() as connection:
        row = {"table_name": "logs", "status": "COMPLETED"}
        connection.execute(migration_watermark.insert(), row)
        in_force = connection.exec_driver_sql("SELECT table_name FROM current_watermark").one()
    assert tuple(in_force) == ("logs",)
    engine.dispose()
