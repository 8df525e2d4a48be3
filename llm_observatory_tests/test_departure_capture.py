"""The departure capture of the preparation scripts (issue 13), on SQLite and a real PostgreSQL:
one `migration_departures` row per deleted row and per row an UPDATE moves to another event
time or key, with the old key, the old event time (same UTC instant) and the source's clock;
nothing for other updates; `capture_status` says whether it is on. SQL Server cannot run here:
its trigger is checked as text."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from llm_observatory.resources.departures import (
    DEPARTURES_TABLE,
    capture_status,
    departure_triggers,
    migration_departures,
)
from llm_observatory.sql_scripts import (
    DIALECTS,
    apply_script,
    departure_capture_ddl,
    install_departure_capture,
    source_preparation,
    statements,
)
from llm_observatory.tables import LLM_INTERACTIONS, LOGS, TABLES

SQL = Path(__file__).resolve().parents[1] / "sql"
INTERACTION_ID = "00000000-0000-0000-0000-0000000000aa"
# 23:30 at +02:00 is 21:30 UTC: the departure must keep the instant, not the wall time.
EVENT_TIME = dt.datetime(2026, 11, 2, 23, 30, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
CHANGED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SQLITE_TEXT_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def _utc(moment) -> dt.datetime:
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _bound(engine: sa.Engine, moment: dt.datetime) -> dt.datetime:
    """An instant as the source's column takes it: SQLite stores naive UTC text."""
    moment = moment.astimezone(dt.UTC)
    return moment.replace(tzinfo=None) if engine.dialect.name == "sqlite" else moment


def _reference_source(dialect: str, tmp_path: Path, postgres_url: str | None) -> sa.Engine:
    """The reference schema (sql/source_<dialect>.sql), nothing else."""
    if dialect == "sqlite":
        path = tmp_path / "source.db"
        with closing(sqlite3.connect(path)) as connection:
            connection.executescript((SQL / "source_sqlite.sql").read_text(encoding="utf-8"))
        return sa.create_engine(f"sqlite:///{path}")
    engine = sa.create_engine(postgres_url)
    apply_script(engine, (SQL / "source_postgresql.sql").read_text(encoding="utf-8"))
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def source(request, tmp_path: Path) -> sa.Engine:
    """A reference source prepared with the committed script, applied twice (idempotent)."""
    dialect = request.param
    postgres_url = request.getfixturevalue("postgres_url") if dialect == "postgresql" else None
    engine = _reference_source(dialect, tmp_path, postgres_url)
    script = (SQL / f"prepare_source_{dialect}.sql").read_text(encoding="utf-8")
    for _ in range(2):
        assert apply_script(engine, script) == len(statements(script, dialect))
    yield engine
    engine.dispose()


def _tables(engine: sa.Engine) -> sa.MetaData:
    meta = sa.MetaData()
    meta.reflect(engine, only=[LLM_INTERACTIONS.name, LOGS.name])
    return meta


def _insert_interaction(engine: sa.Engine, interaction_id: str = INTERACTION_ID) -> None:
    table = _tables(engine).tables[LLM_INTERACTIONS.name]
    with engine.begin() as connection:
        connection.execute(
            table.insert(),
            {
                "interaction_id": interaction_id,
                "timestamp": _bound(engine, EVENT_TIME),
                "latency_ms": 10,
                "last_modified": _bound(engine, CHANGED),
            },
        )


def _insert_logs(engine: sa.Engine, count: int) -> dict[int, dt.datetime]:
    """Logs 1..count, a minute apart from EVENT_TIME; their event times by key."""
    table = _tables(engine).tables[LOGS.name]
    times = {log_id: EVENT_TIME + dt.timedelta(minutes=log_id) for log_id in range(1, count + 1)}
    rows = [
        {
            "log_id": log_id,
            "created_at": _bound(engine, moment),
            "level": "INFO",
            "last_modified": _bound(engine, CHANGED),
        }
        for log_id, moment in times.items()
    ]
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    return times


def _departures(engine: sa.Engine) -> list[dict]:
    order = migration_departures.c.departure_id
    with engine.connect() as connection:
        rows = connection.execute(sa.select(migration_departures).order_by(order)).mappings()
        return [dict(row) for row in rows]


def _clock_bounds(connection, engine: sa.Engine) -> tuple[dt.datetime, dt.datetime] | None:
    """PostgreSQL: the transaction's start and now, on the server's clock."""
    if engine.dialect.name != "postgresql":
        return None
    return tuple(
        connection.exec_driver_sql("SELECT transaction_timestamp(), clock_timestamp()").one()
    )


def _assert_source_clock(engine: sa.Engine, departed_at, bounds) -> None:
    """departed_at is the source's UTC clock during the statement (PostgreSQL: within the
    transaction; SQLite: UTC text like last_modified, close to now)."""
    if bounds is not None:
        began, after = bounds
        assert began <= departed_at <= after
        return
    with engine.connect() as connection:
        (raw,) = connection.exec_driver_sql(f"SELECT departed_at FROM {DEPARTURES_TABLE}").first()
    assert SQLITE_TEXT_TIME.fullmatch(raw), raw
    now = dt.datetime.now(dt.UTC)
    assert abs(_utc(departed_at) - now) < dt.timedelta(minutes=5)


# --- what is recorded ---------------------------------------------------------------------------


def test_a_delete_records_one_departure_with_the_old_key_and_instant(source) -> None:
    _insert_interaction(source)
    with source.begin() as connection:
        connection.execute(
            sa.text("DELETE FROM llm_interactions WHERE interaction_id = :id"),
            {"id": INTERACTION_ID},
        )
        bounds = _clock_bounds(connection, source)
    (departure,) = _departures(source)
    assert departure["table_name"] == LLM_INTERACTIONS.name
    assert departure["key_value"] == INTERACTION_ID
    assert departure["kind"] == "delete"
    assert _utc(departure["old_event_time"]) == EVENT_TIME
    _assert_source_clock(source, departure["departed_at"], bounds)


def test_an_update_moving_the_event_time_records_the_old_one(source) -> None:
    _insert_interaction(source)
    table = _tables(source).tables[LLM_INTERACTIONS.name]
    with source.begin() as connection:
        connection.execute(
            sa.update(table)
            .where(table.c.interaction_id == INTERACTION_ID)
            .values(timestamp=_bound(source, EVENT_TIME + dt.timedelta(days=1)))
        )
        bounds = _clock_bounds(connection, source)
    (departure,) = _departures(source)  # one, though last_modified's trigger updates the row too
    assert (departure["key_value"], departure["kind"]) == (INTERACTION_ID, "move")
    assert _utc(departure["old_event_time"]) == EVENT_TIME
    _assert_source_clock(source, departure["departed_at"], bounds)


def test_an_update_of_other_columns_records_nothing(source) -> None:
    _insert_interaction(source)
    with source.begin() as connection:
        connection.exec_driver_sql("UPDATE llm_interactions SET latency_ms = latency_ms + 1")
        # Setting the key and the event time to what they are moves nothing either.
        connection.exec_driver_sql(
            'UPDATE llm_interactions SET "timestamp" = "timestamp", interaction_id = interaction_id'
        )
    assert _departures(source) == []


def test_an_update_of_the_key_records_the_old_key(source) -> None:
    times = _insert_logs(source, 2)
    with source.begin() as connection:
        connection.exec_driver_sql("UPDATE logs SET log_id = 100 WHERE log_id = 1")
    (departure,) = _departures(source)
    assert (departure["table_name"], departure["key_value"], departure["kind"]) == (
        LOGS.name,
        "1",
        "move",
    )
    assert _utc(departure["old_event_time"]) == times[1]


def test_a_multi_row_delete_records_every_row(source) -> None:
    times = _insert_logs(source, 50)
    with source.begin() as connection:
        deleted = connection.exec_driver_sql("DELETE FROM logs WHERE log_id <= 30").rowcount
    assert deleted == 30
    departures = _departures(source)
    assert sorted(int(row["key_value"]) for row in departures) == list(range(1, 31))
    assert {row["kind"] for row in departures} == {"delete"}
    assert {row["table_name"] for row in departures} == {LOGS.name}
    for row in departures:
        assert _utc(row["old_event_time"]) == times[int(row["key_value"])]


def test_postgresql_keeps_the_instant_of_an_event_time_without_zone(postgres_url) -> None:
    """A `timestamp without time zone` event time is UTC by convention: the trigger function
    runs with TimeZone UTC, whatever the deleting session's zone."""
    engine = sa.create_engine(postgres_url)
    apply_script(engine, (SQL / "source_postgresql.sql").read_text(encoding="utf-8"))
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "ALTER TABLE logs ALTER COLUMN created_at TYPE TIMESTAMP WITHOUT TIME ZONE "
            "USING created_at AT TIME ZONE 'UTC'"
        )
        connection.exec_driver_sql(
            "INSERT INTO logs (log_id, created_at, level, last_modified) "
            "VALUES (1, '2026-11-02 21:30:00.123456', 'INFO', now())"
        )
    install_departure_capture(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL TimeZone = 'Asia/Tokyo'")
        connection.exec_driver_sql("DELETE FROM logs")
    (departure,) = _departures(engine)
    assert _utc(departure["old_event_time"]) == EVENT_TIME
    engine.dispose()


# --- installing the capture alone ---------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_install_departure_capture_adds_only_the_capture(dialect, request, tmp_path) -> None:
    postgres_url = request.getfixturevalue("postgres_url") if dialect == "postgresql" else None
    engine = _reference_source(dialect, tmp_path, postgres_url)
    expected = len(statements(departure_capture_ddl(dialect), dialect))
    assert install_departure_capture(engine) == expected
    assert install_departure_capture(engine) == expected  # idempotent
    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    }[dialect]
    with engine.connect() as connection:
        triggers = set(connection.exec_driver_sql(query).scalars())
    assert triggers == {
        name for table in TABLES for name in departure_triggers(dialect, table.name)
    }
    assert {column["name"] for column in sa.inspect(engine).get_columns(DEPARTURES_TABLE)} == {
        column.name for column in migration_departures.columns
    }
    _insert_logs(engine, 3)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM logs WHERE log_id = 2")
    assert [row["key_value"] for row in _departures(engine)] == ["2"]
    engine.dispose()


def test_the_departure_capture_is_the_end_of_the_preparation_script() -> None:
    for dialect in DIALECTS:
        capture = statements(departure_capture_ddl(dialect), dialect)
        preparation = statements(source_preparation(dialect), dialect)
        assert preparation[-len(capture) :] == capture


# --- capture_status -----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_capture_status_follows_the_catalog(dialect, request, tmp_path) -> None:
    postgres_url = request.getfixturevalue("postgres_url") if dialect == "postgresql" else None
    engine = _reference_source(dialect, tmp_path, postgres_url)

    before = capture_status(engine, LOGS)
    assert not before.active
    assert f"no {DEPARTURES_TABLE} table" in before.reason
    assert "reconciliation rotation" in before.reason

    install_departure_capture(engine)
    for table in TABLES:
        status = capture_status(engine, table)
        assert status.active, status.reason
        assert all(name in status.reason for name in departure_triggers(dialect, table.name))

    if dialect == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE logs DISABLE TRIGGER trg_logs_departures")
        disabled = capture_status(engine, LOGS)
        assert not disabled.active
        assert "trigger trg_logs_departures is disabled" in disabled.reason
        assert capture_status(engine, LLM_INTERACTIONS).active  # the others still on
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE logs ENABLE TRIGGER trg_logs_departures")
        assert capture_status(engine, LOGS).active
        dropped = "DROP TRIGGER trg_logs_departures ON logs"
    else:
        dropped = "DROP TRIGGER trg_logs_departures_move"
    with engine.begin() as connection:
        connection.exec_driver_sql(dropped)
    missing = capture_status(engine, LOGS)
    assert not missing.active
    assert "missing on logs" in missing.reason
    engine.dispose()


def test_capture_status_reports_an_unreadable_catalog_instead_of_raising(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'source.db'}")
    status = capture_status(engine, LOGS)
    assert not status.active
    assert "could not read the source's triggers" in status.reason
    engine.dispose()


# --- SQL Server, as text ------------------------------------------------------------------------


def test_mssql_departure_capture_batches() -> None:
    batches = statements(departure_capture_ddl("mssql"), "mssql")
    assert len(batches) == 2 + len(TABLES)
    table, index, *triggers = batches
    assert table.startswith("IF OBJECT_ID(N'dbo.migration_departures', N'U') IS NULL")
    assert "CREATE TABLE dbo.migration_departures" in table
    for column in ("key_value NVARCHAR(450)", "old_event_time DATETIME2(6)", "departed_at"):
        assert column in table
    assert index.startswith("IF NOT EXISTS (SELECT 1 FROM sys.indexes")
    assert "ON dbo.migration_departures (table_name, departed_at)" in index
    for spec, trigger in zip(TABLES, triggers, strict=True):
        key = spec.key
        event_time = f"[{spec.event_time}]" if spec.event_time == "timestamp" else spec.event_time
        assert trigger.startswith(f"CREATE OR ALTER TRIGGER dbo.trg_{spec.name}_departures\n")
        assert f"ON dbo.{spec.name}\nAFTER UPDATE, DELETE\n" in trigger
        assert "SET NOCOUNT ON;" in trigger
        assert "CURSOR" not in trigger.upper()
        assert f"IF NOT (UPDATE({event_time}) OR UPDATE({key})) RETURN;" in trigger
        assert f"LEFT JOIN inserted AS i ON i.{key} = d.{key}" in trigger
        assert f"WHERE i.{key} IS NULL" in trigger
        assert f"EXISTS (SELECT d.{event_time} EXCEPT SELECT i.{event_time})" in trigger
        assert f"SWITCHOFFSET(d.{event_time}, '+00:00')" in trigger
        assert f"CONVERT(NVARCHAR(450), d.{key})" in trigger
        assert "SYSUTCDATETIME()" in trigger
    preparation = (SQL / "prepare_source_mssql.sql").read_text(encoding="utf-8")
    for spec in TABLES:
        assert f"CREATE OR ALTER TRIGGER dbo.trg_{spec.name}_departures" in preparation
