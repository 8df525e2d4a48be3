"""The source resource against a real PostgreSQL (and SQLite): exact values in declared Arrow
types, half-open day ranges, SQL Server compilation, and clear errors that hide passwords."""

import datetime as dt
import decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from llm_observatory.partitions import day_window
from llm_observatory.resources.source import MissingColumnsError, SourceDatabase, SourceError
from llm_observatory.synthetic.schema import reference_metadata
from llm_observatory.tables import LLM_INTERACTIONS, TABLES

UTC = dt.UTC
DAY = dt.date(2026, 11, 2)


def interaction(i: int, moment: dt.datetime, **overrides) -> dict:
    row = {
        "interaction_id": f"00000000-0000-0000-0000-{i:012d}",
        "timestamp": moment,
        "model_name": "gemini",
        "latency_ms": 100 + i,
        "prompt": "Grüße, 世界! 🚀 " * (i + 1),
        "response": None if i % 2 else "réponse",
        "prompt_tokens": i,
        "completion_tokens": 2 * i,
        "status": "success",
        "error_message": None,
        "user_id": f"user-{i}",
        "session_id": f"session-{i}",
        "cost_usd": decimal.Decimal("123456.654321") if i == 1 else decimal.Decimal("0.000001"),
        "last_modified": moment + dt.timedelta(seconds=3),
    }
    row.update(overrides)
    return row


BOUNDARY_ROWS = [
    interaction(0, dt.datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=UTC)),  # day before
    interaction(1, dt.datetime(2026, 11, 2, 0, 0, 0, 0, tzinfo=UTC)),  # first instant: in
    interaction(2, dt.datetime(2026, 11, 2, 12, 30, 0, 123456, tzinfo=UTC)),
    interaction(3, dt.datetime(2026, 11, 2, 23, 59, 59, 999999, tzinfo=UTC)),  # last instant: in
    interaction(4, dt.datetime(2026, 11, 3, 0, 0, 0, 0, tzinfo=UTC)),  # next day: out
]


def load_reference_rows(url: str) -> None:
    engine = sa.create_engine(url)
    metadata = reference_metadata()
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(metadata.tables["llm_interactions"].insert(), BOUNDARY_ROWS)
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def source_url(request, tmp_path) -> str:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    load_reference_rows(url)
    return url


def test_a_day_streams_exactly_its_rows_with_values_and_types_kept(source_url):
    source = SourceDatabase(url=source_url, batch_rows=2)
    described = source.describe_table(LLM_INTERACTIONS)
    start, end = day_window(DAY)
    batches = list(source.stream_range(described, start, end))
    assert all(batch.schema.equals(described.arrow_schema) for batch in batches)
    table = pa.Table.from_batches(batches, schema=described.arrow_schema)
    assert described.arrow_schema.field("cost_usd").type == pa.decimal128(12, 6)
    assert described.arrow_schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    got = sorted(table.to_pylist(), key=lambda row: row["interaction_id"])
    assert got == [BOUNDARY_ROWS[1], BOUNDARY_ROWS[2], BOUNDARY_ROWS[3]]
    assert source.count_rows(described, start, end) == 3


def test_latest_event_time_is_utc(source_url):
    source = SourceDatabase(url=source_url)
    newest = source.latest_event_time(source.describe_table(LLM_INTERACTIONS))
    assert newest == dt.datetime(2026, 11, 3, tzinfo=UTC)


def test_every_range_query_compiles_for_sql_server_with_bound_parameters(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    engine = sa.create_engine(url)
    reference_metadata().create_all(engine)
    source = SourceDatabase(url=url)
    start, end = day_window(DAY)
    for table in TABLES:
        described = source.describe_table(table)
        compiled = source.range_query(described, start, end).compile(dialect=mssql.dialect())
        text = str(compiled)
        assert ":range_start" in text and ":range_end" in text
        assert "2026" not in text  # values travel as parameters, never inside the SQL
        assert "DATE(" not in text.upper()
        assert compiled.params["range_start"] == start.replace(tzinfo=None)


def test_a_missing_required_column_fails_before_any_data_moves(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            'CREATE TABLE llm_interactions (interaction_id TEXT, "timestamp" TIMESTAMP, '
            "model_name TEXT, last_modified TIMESTAMP)"
        )
    with pytest.raises(MissingColumnsError, match="latency_ms"):
        SourceDatabase(url=url).describe_table(LLM_INTERACTIONS)


def test_a_missing_table_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    with pytest.raises(MissingColumnsError, match="llm_interactions"):
        SourceDatabase(url=url).describe_table(LLM_INTERACTIONS)


def test_an_unreachable_source_names_the_host_and_hides_the_password(postgres_server):
    from llm_observatory_tests.services import free_port

    port = free_port()
    url = f"postgresql+psycopg://migrator:Sup3r-Secret-pw@127.0.0.1:{port}/llm"
    with pytest.raises(SourceError) as raised:
        SourceDatabase(url=url).describe_table(LLM_INTERACTIONS)
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "Sup3r-Secret-pw" not in message


def test_postgresql_streams_a_day_in_many_batches_not_one_result(postgres_url):
    """libpq returns a parameterised query's whole result at once; the COPY path must not."""
    load_reference_rows(postgres_url)
    engine = sa.create_engine(postgres_url)
    metadata = reference_metadata()
    moments = [
        dt.datetime(2026, 11, 2, tzinfo=UTC) + dt.timedelta(seconds=7 * i) for i in range(3000)
    ]
    with engine.begin() as connection:
        connection.execute(
            metadata.tables["llm_interactions"].insert(),
            [interaction(10 + i, moment) for i, moment in enumerate(moments)],
        )
    engine.dispose()
    source = SourceDatabase(url=postgres_url, adbc_batch_bytes=64 * 1024)
    described = source.describe_table(LLM_INTERACTIONS)
    batches = list(source.stream_range(described, *day_window(DAY)))
    assert len(batches) > 10
    assert max(batch.num_rows for batch in batches) < 1500
    assert sum(batch.num_rows for batch in batches) == 3003


def test_departure_queries_compile_for_sql_server_with_bound_parameters(tmp_path):
    """What a cycle asks `migration_departures` on SQL Server: the newest departure, the
    window's keys cast back to the key's type, the purge; values as parameters only."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    engine = sa.create_engine(url)
    reference_metadata().create_all(engine)
    source = SourceDatabase(url=url)
    after, up_to = day_window(DAY)
    for table in TABLES:
        described = source.describe_table(table)
        compiled = source.departures_query(described, after, up_to).compile(dialect=mssql.dialect())
        text = str(compiled)
        assert "SELECT DISTINCT CAST(migration_departures.key_value AS" in text
        assert ":table_name" in text and ":departed_after" in text and ":departed_up_to" in text
        assert table.name not in text.replace("migration_departures", "")
        assert "2026" not in text
        assert compiled.params["table_name"] == table.name
        assert compiled.params["departed_up_to"] == up_to.replace(tzinfo=None)
    logs_key = str(
        source.departures_query(source.describe_table(TABLES[2]), None, up_to).compile(
            dialect=mssql.dialect()
        )
    )
    assert "AS BIGINT)" in logs_key and ":departed_after" not in logs_key
