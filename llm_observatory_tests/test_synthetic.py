"""The synthetic source database: exact, reproducible, and faithful on every dialect.

Most tests share one small SQLite database (3 days x 500 interactions, default defects) and
check the database itself against the returned summary, so that the pipeline's tests can trust
the summary's counts. The PostgreSQL tests use the session's throwaway server (``conftest.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from llm_observatory.synthetic import (
    ALLOWED_MODELS,
    INTERACTIONS,
    LOGS,
    MAX_LATENCY_MS,
    METADATA,
    REFERENCE_METADATA,
    TABLE_NAMES,
    DefectRates,
    SyntheticSummary,
    ddl_script,
    generate_batches,
    generate_source,
)
from llm_observatory.synthetic.pg_copy import _pg_copy_binary

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2024, 1, 1)
DAYS = 3
ROWS_PER_DAY = 500
EVENT_TIME = {INTERACTIONS: '"timestamp"', METADATA: "created_at", LOGS: "created_at"}
KEY = {INTERACTIONS: "interaction_id", METADATA: "metadata_id", LOGS: "log_id"}


def _generate(path: Path, **overrides) -> SyntheticSummary:
    arguments = {"start_date": START, "days": DAYS, "rows_per_day": ROWS_PER_DAY, "seed": 7}
    arguments.update(overrides)
    return generate_source(f"sqlite:///{path}", **arguments)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSummary]:
    path = tmp_path_factory.mktemp("synthetic") / "source.db"
    return path, _generate(path)


@pytest.fixture(scope="module")
def db(source: tuple[Path, SyntheticSummary]) -> sqlite3.Connection:
    connection = sqlite3.connect(source[0])
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def summary(source: tuple[Path, SyntheticSummary]) -> SyntheticSummary:
    return source[1]


def _all_rows(path: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(path)) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY {KEY[table]}").fetchall()
            for table in TABLE_NAMES
        }


# --- schema and DDL scripts -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mssql"])
def test_committed_ddl_scripts_are_generated_from_the_schema(dialect: str) -> None:
    committed = (REPO / "sql" / f"source_{dialect}.sql").read_text(encoding="utf-8")
    assert committed == ddl_script(dialect), (
        "regenerate with: python -m llm_observatory.synthetic --write-ddl sql/"
    )


def _reference_columns() -> dict[str, list[str]]:
    return {name: [c.name for c in REFERENCE_METADATA.tables[name].columns] for name in TABLE_NAMES}


def _reference_indexes() -> dict[str, set[str]]:
    return {
        name: {index.name for index in REFERENCE_METADATA.tables[name].indexes}
        for name in TABLE_NAMES
    }


def test_sqlite_script_creates_the_reference_tables_and_is_idempotent() -> None:
    script = (REPO / "sql" / "source_sqlite.sql").read_text(encoding="utf-8")
    connection = sqlite3.connect(":memory:")
    connection.executescript(script)
    connection.executescript(script)  # a second run changes nothing
    for table, columns in _reference_columns().items():
        info = connection.execute(f"PRAGMA table_info({table})").fetchall()
        assert [row[1] for row in info] == columns
        assert [row[1] for row in info if row[5]] == [KEY[table]]  # the primary key
        indexes = {row[1] for row in connection.execute(f"PRAGMA index_list({table})")}
        assert _reference_indexes()[table] <= indexes


def test_postgresql_script_creates_the_reference_tables_and_is_idempotent(
    postgres_url: str,
) -> None:
    script = (REPO / "sql" / "source_postgresql.sql").read_text(encoding="utf-8")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(script)
            connection.exec_driver_sql(script)
        inspector = sa.inspect(engine)
        for table, columns in _reference_columns().items():
            assert [c["name"] for c in inspector.get_columns(table)] == columns
            assert inspector.get_pk_constraint(table)["constrained_columns"] == [KEY[table]]
            assert {i["name"] for i in inspector.get_indexes(table)} == _reference_indexes()[table]
        types = {c["name"]: c["type"] for c in inspector.get_columns(INTERACTIONS)}
        assert isinstance(types["timestamp"], sa.DateTime) and types["timestamp"].timezone
        assert (types["cost_usd"].precision, types["cost_usd"].scale) == (12, 6)
    finally:
        engine.dispose()


# --- determinism ----------------------------------------------------------------------------


def test_same_arguments_give_identical_rows(tmp_path: Path, source) -> None:
    again = tmp_path / "again.db"
    _generate(again)
    assert _all_rows(again) == _all_rows(source[0])


def test_another_seed_gives_other_rows(tmp_path: Path, source) -> None:
    other = tmp_path / "other.db"
    _generate(other, seed=8)
    first, second = _all_rows(source[0]), _all_rows(other)
    assert first[INTERACTIONS][0][0] != second[INTERACTIONS][0][0]


def test_a_days_rows_do_not_depend_on_the_other_days(tmp_path: Path, source) -> None:
    later = tmp_path / "later.db"
    _generate(later, start_date=START + dt.timedelta(days=2), days=1)
    with closing(sqlite3.connect(later)) as connection:
        alone = connection.execute("SELECT * FROM llm_interactions ORDER BY 1").fetchall()
    with closing(sqlite3.connect(source[0])) as connection:
        within = connection.execute(
            "SELECT * FROM llm_interactions WHERE timestamp >= '2024-01-03' ORDER BY 1"
        ).fetchall()
    assert alone == within


# --- counts, boundaries, gaps ---------------------------------------------------------------


def test_rows_per_table_and_day_equal_the_summary(db: sqlite3.Connection, summary) -> None:
    for table in TABLE_NAMES:
        per_day = dict(
            db.execute(
                f"SELECT substr({EVENT_TIME[table]}, 1, 10), count(*) FROM {table} GROUP BY 1"
            ).fetchall()
        )
        assert {dt.date.fromisoformat(day): n for day, n in per_day.items()} == (
            summary.rows_by_day[table]
        )
        assert sum(per_day.values()) == summary.rows[table]
    assert set(summary.rows_by_day[INTERACTIONS].values()) == {ROWS_PER_DAY}
    assert 0.9 * ROWS_PER_DAY * DAYS < summary.rows[METADATA] < 1.2 * ROWS_PER_DAY * DAYS
    assert 1.0 * ROWS_PER_DAY * DAYS < summary.rows[LOGS] < 3.0 * ROWS_PER_DAY * DAYS


def test_every_day_has_rows_on_both_boundaries(db: sqlite3.Connection) -> None:
    for offset in range(DAYS):
        day = START + dt.timedelta(days=offset)
        for table in TABLE_NAMES:
            for instant in (f"{day} 00:00:00.000000", f"{day} 23:59:59.999999"):
                found = db.execute(
                    f"SELECT count(*) FROM {table} WHERE {EVENT_TIME[table]} = ?", (instant,)
                ).fetchone()[0]
                assert found >= 1, f"{table} has no row at {instant}"
    # The boundary interactions are clean and sit on the edges of the valid latency range.
    edges = db.execute(
        "SELECT latency_ms, model_name FROM llm_interactions "
        "WHERE substr(timestamp, 12) IN ('00:00:00.000000', '23:59:59.999999')"
    ).fetchall()
    assert {latency for latency, _ in edges} == {0, MAX_LATENCY_MS}
    assert all(model in ALLOWED_MODELS for _, model in edges)


def test_the_missing_hour_has_no_rows_in_any_table(db: sqlite3.Connection, summary) -> None:
    gap = summary.missing_hour
    assert gap == dt.datetime(2024, 1, 2, 13, tzinfo=dt.UTC)
    bounds = (f"{gap:%Y-%m-%d %H}:00:00.000000", f"{gap:%Y-%m-%d %H}:59:59.999999")
    for table in TABLE_NAMES:
        inside = db.execute(
            f"SELECT count(*) FROM {table} WHERE {EVENT_TIME[table]} BETWEEN ? AND ?",
            bounds,
        ).fetchone()[0]
        assert inside == 0, table
        before = db.execute(
            f"SELECT count(*) FROM {table} WHERE substr({EVENT_TIME[table]}, 1, 13) = ?",
            (f"{gap:%Y-%m-%d} 12",),
        ).fetchone()[0]
        assert before > 0, table  # the hours around the gap are populated


def test_children_fall_on_their_interactions_day(db: sqlite3.Connection) -> None:
    for table in (METADATA, LOGS):
        crossing = db.execute(
            f"SELECT count(*) FROM {table} c JOIN llm_interactions i USING (interaction_id) "
            "WHERE substr(c.created_at, 1, 10) <> substr(i.timestamp, 1, 10) "
            "OR c.created_at < i.timestamp"
        ).fetchone()[0]
        assert crossing == 0, table
    orphans = db.execute("SELECT count(*) FROM logs WHERE interaction_id IS NULL").fetchone()[0]
    assert orphans > 0


def test_last_modified_is_never_before_the_event_time(db: sqlite3.Connection) -> None:
    for table in TABLE_NAMES:
        early = db.execute(
            f"SELECT count(*) FROM {table} WHERE last_modified < {EVENT_TIME[table]}"
        ).fetchone()[0]
        assert early == 0, table


# --- defects and quality rules --------------------------------------------------------------


def _first_broken_rule(model: str | None, latency: int | None) -> str | None:
    """tables.py's interaction rules, in their order."""
    if model is None:
        return "required:model_name"
    if latency is None:
        return "required:latency_ms"
    if not 0 <= latency <= MAX_LATENCY_MS:
        return "range:latency_ms"
    if model not in ALLOWED_MODELS:
        return "allowed:model_name"
    return None


def _json_broken(text: str | None) -> bool:
    if text is None:
        return False
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def test_defect_counts_in_the_database_equal_the_summary(db: sqlite3.Connection, summary) -> None:
    def count(sql: str) -> int:
        return db.execute(sql).fetchone()[0]

    assert (
        count("SELECT count(*) FROM llm_interactions WHERE latency_ms IS NULL")
        == (summary.defects["latency_null"])
    )
    assert (
        count(
            "SELECT count(*) FROM llm_interactions "
            f"WHERE latency_ms < 0 OR latency_ms > {MAX_LATENCY_MS}"
        )
        == summary.defects["latency_out_of_range"]
    )
    allowed = ", ".join(f"'{model}'" for model in ALLOWED_MODELS)
    assert (
        count(f"SELECT count(*) FROM llm_interactions WHERE model_name NOT IN ({allowed})")
        == summary.defects["unknown_model"]
    )
    assert (
        count("SELECT count(*) FROM llm_interactions WHERE model_name IS NULL")
        == (summary.defects["model_null"])
    )
    attributes = [row[0] for row in db.execute("SELECT attributes FROM metadata")]
    assert sum(map(_json_broken, attributes)) == summary.defects["invalid_json"]
    assert any(text is None for text in attributes)  # NULL is allowed, and present
    assert all(summary.defects[name] > 0 for name in summary.defects)  # every kind injected


def test_expected_quarantine_matches_the_rules_per_day(db: sqlite3.Connection, summary) -> None:
    for offset in range(DAYS):
        day = START + dt.timedelta(days=offset)
        rows = db.execute(
            "SELECT model_name, latency_ms FROM llm_interactions "
            "WHERE substr(timestamp, 1, 10) = ?",
            (day.isoformat(),),
        ).fetchall()
        by_rule: dict[str, int] = {}
        for model, latency in rows:
            rule = _first_broken_rule(model, latency)
            if rule:
                by_rule[rule] = by_rule.get(rule, 0) + 1
        assert by_rule == summary.expected_quarantine_by_rule(INTERACTIONS, day)
        attributes = db.execute(
            "SELECT attributes FROM metadata WHERE substr(created_at, 1, 10) = ?",
            (day.isoformat(),),
        ).fetchall()
        assert sum(_json_broken(text) for (text,) in attributes) == (
            summary.expected_quarantine(METADATA, day)
        )
    assert summary.expected_quarantine(LOGS) == 0


def test_clean_data_has_no_defects_and_no_gap(tmp_path: Path) -> None:
    clean = _generate(tmp_path / "clean.db", defects=DefectRates.none(), days=2)
    assert set(clean.defects.values()) == {0}
    assert clean.missing_hour is None
    assert all(clean.expected_quarantine(table) == 0 for table in TABLE_NAMES)
    with closing(sqlite3.connect(tmp_path / "clean.db")) as connection:
        hours = connection.execute(
            "SELECT count(DISTINCT substr(timestamp, 1, 13)) FROM llm_interactions"
        ).fetchone()[0]
    assert hours == 48


def test_defect_rates_are_validated() -> None:
    with pytest.raises(ValueError):
        DefectRates(latency_null=1.5)
    with pytest.raises(ValueError):
        DefectRates(latency_null=0.6, unknown_model=0.6)
    with pytest.raises(ValueError):
        DefectRates(missing_hour=(0, 24))


# --- values ---------------------------------------------------------------------------------


def _expected(table: str, **overrides) -> dict:
    """The generator's own rows (Arrow), keyed by the table's key, in SQLAlchemy's types."""
    arguments = {"start_date": START, "days": DAYS, "rows_per_day": ROWS_PER_DAY, "seed": 7}
    arguments.update(overrides)
    rows = {}
    for batch in generate_batches(**arguments):
        for row in batch.table(table).to_pylist():
            rows[row[KEY[table]]] = row
    return rows


def _read(url: str, table: str) -> dict:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execute(sa.select(REFERENCE_METADATA.tables[table]))
            return {row[KEY[table]]: dict(row) for row in result.mappings()}
    finally:
        engine.dispose()


def _naive_utc(row: dict) -> dict:
    return {
        key: value.astimezone(dt.UTC).replace(tzinfo=None)
        if isinstance(value, dt.datetime)
        else value
        for key, value in row.items()
    }


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_sqlite_holds_exactly_the_generated_values(source, table: str) -> None:
    """Unicode, empty strings vs NULLs, microseconds and decimals all survive the load."""
    stored = _read(f"sqlite:///{source[0]}", table)
    expected = {key: _naive_utc(row) for key, row in _expected(table).items()}
    assert stored == expected


def test_text_is_realistic_unicode_without_nul(db: sqlite3.Connection) -> None:
    prompts, responses = zip(*db.execute("SELECT prompt, response FROM llm_interactions"))
    texts = [text for text in prompts + responses if text]
    non_ascii = sum(1 for text in prompts if not text.isascii())
    assert 0.15 < non_ascii / len(prompts) < 0.5
    joined = "".join(texts)
    for sample in ("é", "東京", "🎉", "𠮷", "\r\n", '"', "\\N", "\t"):
        assert sample in joined, sample
    assert "\x00" not in joined
    mean_bytes = sum(len(text.encode()) for text in texts) / len(prompts)
    assert 1_000 < mean_bytes < 3_500  # about 2 KB of text per interaction
    messages = [row[0] for row in db.execute("SELECT message FROM logs")]
    assert any(not message.isascii() for message in messages)


def test_status_error_message_and_response_agree(db: sqlite3.Connection) -> None:
    rows = db.execute("SELECT status, error_message, response FROM llm_interactions").fetchall()
    shares = {
        status: sum(1 for r in rows if r[0] == status) / len(rows)
        for status in ("success", "error", "timeout")
    }
    assert sum(shares.values()) == 1
    assert 0.8 < shares["success"] < 0.97 and shares["error"] > 0 and shares["timeout"] > 0
    for status, error_message, response in rows:
        assert (error_message is None) == (status == "success")
        if status == "error":
            assert response == ""  # an empty answer, not a missing one
        elif status == "timeout":
            assert response is None
        else:
            assert response


def test_decimals_have_six_places(source) -> None:
    costs = [row["cost_usd"] for row in _read(f"sqlite:///{source[0]}", INTERACTIONS).values()]
    assert all(isinstance(cost, Decimal) and cost.as_tuple().exponent == -6 for cost in costs)
    assert all(Decimal(0) <= cost < Decimal(1_000_000) for cost in costs)
    assert any(cost != cost.quantize(Decimal("0.001")) for cost in costs)  # all six places used


def test_ids_are_uuid4_text_and_sequential(db: sqlite3.Connection) -> None:
    ids = [row[0] for row in db.execute("SELECT interaction_id FROM llm_interactions")]
    assert all(len(i) == 36 and i[14] == "4" and i[19] in "89ab" for i in ids)
    assert len(set(ids)) == len(ids)
    for table in (METADATA, LOGS):
        keys = [row[0] for row in db.execute(f"SELECT {KEY[table]} FROM {table} ORDER BY 1")]
        assert keys == list(range(1, len(keys) + 1))


# --- appending and failure --------------------------------------------------------------------


def test_append_continues_ids_and_a_failed_load_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "append.db"
    first = _generate(path, days=1)
    second = _generate(path, start_date=START + dt.timedelta(days=1), days=1, replace=False)
    rows = _all_rows(path)
    assert len(rows[INTERACTIONS]) == first.rows[INTERACTIONS] + second.rows[INTERACTIONS]
    assert [row[0] for row in rows[LOGS]] == list(range(1, len(rows[LOGS]) + 1))

    # The same day again: duplicate interaction ids, raised by the driver (raw sqlite3 here).
    with pytest.raises((sqlite3.IntegrityError, sa.exc.IntegrityError)):
        _generate(path, days=1, replace=False)
    assert _all_rows(path) == rows


def test_command_line_prints_the_summary(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_observatory.synthetic",
            "--url",
            f"sqlite:///{tmp_path / 'cli.db'}",
            "--start",
            "2024-03-01",
            "--days",
            "2",
            "--rows-per-day",
            "300",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "llm_interactions" in result.stdout and "600 rows" in result.stdout
    assert "missing hour: 2024-03-02T13:00:00+00:00" in result.stdout


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_postgresql_holds_exactly_the_generated_values(postgres_url: str, table: str) -> None:
    summary = generate_source(postgres_url, start_date=START, days=2, rows_per_day=300, seed=5)
    stored = _read(postgres_url, table)
    expected = _expected(table, days=2, rows_per_day=300, seed=5)
    assert len(stored) == summary.rows[table]
    assert stored == expected  # aware UTC datetimes, Decimals, text: all exact
    # Deferring the primary keys during the load must not alter the shared schema objects.
    assert ddl_script("postgresql") == (REPO / "sql" / "source_postgresql.sql").read_text()


def test_postgresql_copy_encoding_covers_every_type_and_null(postgres_url: str) -> None:
    """The binary COPY encoder on values the generator rarely or never produces."""
    schema = pa.schema(
        [
            ("text", pa.string()),
            ("small", pa.int32()),
            ("big", pa.int64()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("amount", pa.decimal128(12, 6)),
        ]
    )
    values = [
        (
            "",
            0,
            0,
            dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
            Decimal("-123456.654321"),
        ),
        (None, None, None, dt.datetime(2000, 1, 1, tzinfo=dt.UTC), None),
        (
            'Zu\u0308rich 👩‍💻 \\N ,"\n',
            -(2**31),
            2**62,
            dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=dt.UTC),
            Decimal("999999.999999"),
        ),
        ("x", 2**31 - 1, -(2**62), dt.datetime(1970, 1, 1, tzinfo=dt.UTC), Decimal("0.000001")),
    ]
    table = pa.Table.from_pylist([dict(zip(schema.names, row)) for row in values], schema=schema)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE copy_types (text text, small integer, big bigint, "
                "at timestamptz, amount numeric(12, 6))"
            )
            cursor = connection.connection.driver_connection.cursor()
            with cursor, cursor.copy("COPY copy_types FROM STDIN WITH (FORMAT binary)") as copy:
                copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
                copy.write(_pg_copy_binary(table))
                copy.write(b"\xff\xff")
            stored = connection.exec_driver_sql("SELECT * FROM copy_types").fetchall()
    finally:
        engine.dispose()
    assert [tuple(row) for row in stored] == values
