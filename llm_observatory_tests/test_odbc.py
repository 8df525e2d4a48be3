"""The ODBC read path (SQL Server's, through arrow-odbc) against real databases: PostgreSQL and
SQLite through their Debian ODBC drivers return exactly what ADBC and SQLAlchemy return, value
by value, on the synthetic source's nasty rows and on values larger than the whole transfer
budget; the SQL Server statement is checked as the mssql dialect compiles it."""

import datetime as dt
import subprocess

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from llm_observatory.resources import odbc
from llm_observatory.resources.source import SourceDatabase, SourceTable, arrow_type_for
from llm_observatory.synthetic.generator import generate_source
from llm_observatory.tables import LLM_INTERACTIONS, TABLES
from llm_observatory_tests import services
from llm_observatory_tests.test_cli import run_cli

UTC = dt.UTC
DAY = dt.date(2026, 3, 2)
START = dt.datetime(2026, 3, 2, tzinfo=UTC)
END = START + dt.timedelta(days=1)


def _installed_odbc_drivers() -> str:
    try:
        return subprocess.run(
            ["odbcinst", "-q", "-d"], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def odbc_drivers() -> None:
    """Debian's unixODBC with its PostgreSQL and SQLite drivers (`make test` installs them as
    root); a skip on a laptop without them, a failure in CI."""
    drivers = _installed_odbc_drivers()
    missing = [
        name for name in (odbc.DEFAULT_DRIVERS["postgresql"], "SQLite3") if name not in drivers
    ]
    if missing:
        reason = f"ODBC driver(s) {', '.join(missing)} not installed (apt-get install unixodbc "
        reason += "odbc-postgresql libsqliteodbc, as `make test` does as root)"
        if services.running_in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _read_all(source: SourceDatabase, spec, changes: bool = False) -> pa.Table:
    described = source.describe_table(spec)
    if changes:
        batches = source.stream_changes(described, None, END)
    else:
        batches = source.stream_range(described, START, END)
    return pa.Table.from_batches(list(batches), schema=described.arrow_schema).sort_by(spec.key)


def _assert_same_rows(left: pa.Table, right: pa.Table, table: str) -> None:
    assert left.num_rows == right.num_rows, table
    for name in left.column_names:
        assert left[name].equals(right[name]), f"{table}.{name} differs"


HUGE = 3 * 1024 * 1024  # one value, three times the fetch budget below


@pytest.fixture(scope="module")
def nasty_postgres(postgres_server) -> str:
    """A day of the synthetic source with its defects, plus rows whose values exceed the bulk
    limit (one larger than the whole transfer buffer), NULLs in every nullable column, and
    text in many scripts."""
    url = postgres_server.create_database("odbc_nasty")
    generate_source(url, start_date=DAY, days=1, rows_per_day=3_000)
    engine = sa.create_engine(url)
    table = sa.Table("llm_interactions", sa.MetaData(), autoload_with=engine)
    moment = START + dt.timedelta(hours=5, microseconds=123_457)
    extra = [
        {"prompt": "Ж" * HUGE, "response": None},
        {"prompt": "x" * 70_000, "response": "🚀" * 20_000},
        {"prompt": None, "response": "end of day", "timestamp": END - dt.timedelta(microseconds=1)},
    ]
    with engine.begin() as connection:
        for n, values in enumerate(extra):
            connection.execute(
                table.insert().values(
                    interaction_id=f"ffffffff-0000-0000-0000-{n:012d}",
                    timestamp=values.get("timestamp", moment),
                    model_name=None,
                    latency_ms=None,
                    prompt=values["prompt"],
                    response=values["response"],
                    status=None,
                    cost_usd=None,
                    last_modified=moment,
                )
            )
    engine.dispose()
    return url


def test_odbc_reads_exactly_what_adbc_reads_on_the_nasty_rows(odbc_drivers, nasty_postgres):
    adbc = SourceDatabase(url=nasty_postgres, reader="adbc")
    # A small bulk limit sends many rows through the by-key route, and a 1 MiB transfer buffer
    # is a third of the largest value.
    over_odbc = SourceDatabase(
        url=nasty_postgres,
        reader="odbc",
        odbc_value_bytes=4096,
        odbc_fetch_bytes=1024 * 1024,
    )
    for spec in TABLES:
        expected = _read_all(adbc, spec)
        assert expected.num_rows > 0
        _assert_same_rows(_read_all(over_odbc, spec), expected, spec.name)
    rows = _read_all(over_odbc, LLM_INTERACTIONS)
    prompts = dict(zip(rows["interaction_id"].to_pylist(), rows["prompt"].to_pylist()))
    assert len(prompts["ffffffff-0000-0000-0000-000000000000"]) == HUGE


def test_odbc_reads_changes_exactly_as_adbc_does(odbc_drivers, nasty_postgres):
    adbc = SourceDatabase(url=nasty_postgres, reader="adbc")
    over_odbc = SourceDatabase(url=nasty_postgres, reader="odbc", odbc_value_bytes=4096)
    for spec in TABLES:
        expected = _read_all(adbc, spec, changes=True)
        _assert_same_rows(_read_all(over_odbc, spec, changes=True), expected, spec.name)


def test_odbc_in_hourly_streams_reads_every_row_once(odbc_drivers, nasty_postgres):
    adbc = SourceDatabase(url=nasty_postgres, reader="adbc")
    streams = SourceDatabase(url=nasty_postgres, reader="odbc", streams=3)
    expected = _read_all(adbc, LLM_INTERACTIONS)
    _assert_same_rows(_read_all(streams, LLM_INTERACTIONS), expected, "llm_interactions")


def test_sqlite_over_odbc_reads_what_sqlalchemy_reads(odbc_drivers, tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=2_000)
    for spec in TABLES:
        expected = _read_all(SourceDatabase(url=url, reader="sqlalchemy"), spec)
        assert expected.num_rows > 0
        _assert_same_rows(
            _read_all(SourceDatabase(url=url, reader="odbc"), spec), expected, spec.name
        )


def test_the_isolation_level_and_utc_apply_on_the_odbc_connection(odbc_drivers, postgres_url):
    source = SourceDatabase(url=postgres_url, reader="odbc", isolation_level="SNAPSHOT")
    read = odbc.OdbcRead(
        target=odbc.odbc_target(source.sa_url),
        isolation_level=source.dialect_isolation_level(),
        batch_rows=10,
    )
    read.open()
    try:
        query = sa.select(
            sa.func.current_setting("transaction_isolation").label("isolation"),
            sa.func.current_setting("TimeZone").label("zone"),
            sa.literal_column("1", sa.Integer).label("k"),
        )
        schema = pa.schema([("isolation", pa.string()), ("zone", pa.string()), ("k", pa.int32())])
        [(batch, oversized)] = list(read.batches(query, "k", schema))
    finally:
        read.close()
    assert batch.to_pylist() == [{"isolation": "repeatable read", "zone": "UTC", "k": 1}]
    assert oversized == []


def test_a_down_source_over_odbc_names_the_host_and_hides_the_password(odbc_drivers):
    port = services.free_port()
    source = SourceDatabase(
        url=f"postgresql+psycopg://migrator:Top-Secret-77@127.0.0.1:{port}/prod", reader="odbc"
    )
    described = SourceTable(
        spec=LLM_INTERACTIONS,
        table=sa.Table(
            "llm_interactions",
            sa.MetaData(),
            sa.Column("interaction_id", sa.String(36)),
            sa.Column("timestamp", sa.DateTime(timezone=True)),
        ),
        arrow_schema=pa.schema(
            [("interaction_id", pa.string()), ("timestamp", pa.timestamp("us"))]
        ),
    )
    with pytest.raises(Exception) as raised:
        list(source.stream_range(described, START, END))
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "Top-Secret-77" not in message


# ------------------------------------------------------------------ SQL Server, compiled


def _sql_server_table() -> SourceTable:
    table = sa.Table(
        "llm_interactions",
        sa.MetaData(),
        sa.Column("interaction_id", mssql.NVARCHAR(36), primary_key=True),
        sa.Column("timestamp", mssql.DATETIME()),
        sa.Column("prompt", mssql.NVARCHAR(None)),
        sa.Column("payload", mssql.VARBINARY(None)),
        sa.Column("seen_at", mssql.DATETIMEOFFSET(7)),
        sa.Column("request_id", mssql.UNIQUEIDENTIFIER()),
        sa.Column("last_modified", mssql.DATETIME2(7)),
    )
    schema = pa.schema([pa.field(c.name, arrow_type_for(c.type)) for c in table.c])
    return SourceTable(spec=LLM_INTERACTIONS, table=table, arrow_schema=schema)


def test_the_sql_server_statement_is_bounded_and_binds_every_value():
    source = SourceDatabase(url="mssql+pyodbc://migrator:pw@sqlhost:1433/prod?driver=X")
    described = _sql_server_table()
    query = source.range_query(described, START, END)
    bounded, flagged = odbc.bounded_select(query, "mssql", odbc.DEFAULT_VALUE_BYTES)
    sql, parameters = odbc.compiled_statement(bounded, "mssql")
    assert flagged
    # (max) columns are cut at the bulk limit and flagged; a bounded key is read as it is.
    assert "CASE WHEN (DATALENGTH(llm_interactions.prompt) <= 65536)" in sql
    assert "DATALENGTH(llm_interactions.payload) > 65536" in sql
    assert "DATALENGTH(llm_interactions.interaction_id)" not in sql
    assert f"AS {odbc.OVERSIZED}" in sql
    # datetimeoffset travels as its UTC datetime2.
    assert "CAST(switchoffset(llm_interactions.seen_at, '+00:00') AS DATETIME2(7))" in sql
    # A uniqueidentifier as SQL Server spells it, which its fingerprint hashes.
    assert "CAST(llm_interactions.request_id AS VARCHAR(36)) AS request_id" in sql
    # Bounds are `?` parameters, as ISO 8601 text SQL Server reads in any language; the
    # `datetime` column's at milliseconds, which is all `datetime` accepts.
    assert "2026" not in sql
    assert sql.count("?") == 2
    assert parameters == ["2026-03-02T00:00:00.000", "2026-03-03T00:00:00.000"]
    changes = source.changes_query(described, START + dt.timedelta(microseconds=123_456), END)
    _, change_parameters = odbc.compiled_statement(changes, "mssql")
    assert change_parameters == ["2026-03-02T00:00:00.123456", "2026-03-03T00:00:00.000000"]


def test_sql_server_isolation_is_set_on_the_session():
    assert odbc.session_statements("mssql", "SNAPSHOT") == (
        "SET TRANSACTION ISOLATION LEVEL SNAPSHOT",
    )
    assert odbc.session_statements("mssql", None) == ()
    assert odbc.session_statements("postgresql", "REPEATABLE READ") == (
        "SET TIME ZONE 'UTC'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    )


def test_sql_server_text_arrives_as_utf16_whatever_the_worker_locale():
    assert odbc.payload_encoding("mssql") == odbc.arrow_odbc.TextEncoding.UTF16


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "mssql+pyodbc://migrator:S3cret%40pw@sqlhost:1433/prod"
            "?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes",
            "Driver={ODBC Driver 18 for SQL Server};Server=sqlhost,1433;Database=prod;"
            "TrustServerCertificate=yes;",
        ),
        (
            "mssql+pyodbc://migrator:S3cret%40pw@sqlhost/prod",
            "Driver={ODBC Driver 18 for SQL Server};Server=sqlhost;Database=prod;",
        ),
        (
            "mssql+pyodbc:///?odbc_connect=Driver%3D%7BODBC+Driver+18+for+SQL+Server%7D%3B"
            "Server%3Dsqlhost%3BAuthentication%3DActiveDirectoryMsi%3B",
            "Driver={ODBC Driver 18 for SQL Server};Server=sqlhost;"
            "Authentication=ActiveDirectoryMsi;",
        ),
    ],
)
def test_sql_server_urls_become_odbc_connection_strings_without_the_password(url, expected):
    target = odbc.odbc_target(sa.make_url(url))
    assert target.connection_string == expected
    assert "S3cret" not in target.connection_string
    assert "S3cret" not in repr(target)
    if "migrator" in url:
        assert (target.user, target.password) == ("migrator", "S3cret@pw")


def test_an_unknown_reader_is_refused_in_one_line():
    source = SourceDatabase(url="sqlite:///x.sqlite", reader="turbo")
    with pytest.raises(ValueError, match="LLM_OBS_SOURCE_READER='turbo' is not one of"):
        source.read_path()
    assert SourceDatabase(url="mssql+pyodbc://h/db").read_path() == "odbc"
    assert SourceDatabase(url="postgresql+psycopg://h/db").read_path() == "adbc"
    assert SourceDatabase(url="sqlite:///x.sqlite").read_path() == "sqlalchemy"


def test_the_demo_and_its_sync_run_through_odbc_and_say_go(odbc_drivers, tmp_path):
    """The whole path a user runs (backfill with every check, sync, report) over ODBC."""
    demo = run_cli(
        ["demo", "--days", "2", "--rows-per-day", "300"], tmp_path, LLM_OBS_SOURCE_READER="odbc"
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    sync = run_cli(["sync"], tmp_path, LLM_OBS_SOURCE_READER="odbc")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    report = run_cli(["report"], tmp_path, LLM_OBS_SOURCE_READER="odbc")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Verdict: GO" in report.stdout


def test_a_uuid_column_reads_as_the_same_text_on_every_path(odbc_drivers, postgres_url):
    """PostgreSQL's `uuid` arrives from ADBC as 16 raw bytes, from psqlODBC as text and from
    psycopg as `uuid.UUID`: the lake holds the same canonical text from each."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE llm_interactions (interaction_id uuid PRIMARY KEY, "
                '"timestamp" timestamptz NOT NULL, session uuid, model_name text, '
                "latency_ms integer, last_modified timestamptz NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO llm_interactions SELECT gen_random_uuid(), :start + n * interval "
                "'1 minute', CASE WHEN n % 3 = 0 THEN NULL ELSE gen_random_uuid() END, 'm', n, "
                ":start "
                "FROM generate_series(0, 99) AS n"
            ),
            {"start": START},
        )
        expected = connection.execute(
            sa.text("SELECT interaction_id::text, session::text FROM llm_interactions")
        ).all()
    engine.dispose()
    for reader in ("adbc", "odbc", "sqlalchemy"):
        rows = _read_all(SourceDatabase(url=postgres_url, reader=reader), LLM_INTERACTIONS)
        got = sorted(zip(rows["interaction_id"].to_pylist(), rows["session"].to_pylist()))
        assert got == sorted(tuple(row) for row in expected), reader
