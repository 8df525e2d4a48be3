"""The SQL Server type matrix (README, "SQL Server types") row by row, and values at the edges.

Per type: the lake type it maps to, the canonical text both sides of a fingerprint write for a
value of it, the SQL Server SQL that writes that text (compiled with SQLAlchemy's mssql dialect:
no SQL Server runs here), and the writer round trip of the value. Values at the edges (years 1
and 9999, NaN and infinities, decimal(38, 10), a text larger than every batch budget) go
through the real read path, writer, spot check and reconciliation on PostgreSQL and SQLite.
"""

import datetime as dt
import decimal
import json
import math

import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from llm_observatory.checks.spot_check import spot_check_result
from llm_observatory.fingerprint import canonical_text, column_kind
from llm_observatory.io.delta_lake import DeltaPartitionWriter, scan_partition
from llm_observatory.layout import bronze_location, bronze_schema, day_filter, silver_location
from llm_observatory.partitions import day_window
from llm_observatory.reconcile import hourly_fingerprint_query, reconcile_day
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase, SourceTable, UnsupportedColumnError
from llm_observatory.resources.source_types import (
    UTF8_COLLATION,
    UnsupportedTypeError,
    arrow_type_for,
    lake_schema,
)
from llm_observatory.tables import TableSpec

UTC = dt.UTC
DAY = dt.date(2026, 11, 2)
MSSQL_URL = "mssql+pyodbc://reader@sqlprod/llm?driver=ODBC+Driver+18"
UTF8_VARCHAR = f"COLLATE {UTF8_COLLATION} AS VARCHAR(MAX))"
MICROS = "RIGHT(CONCAT('00000', DATEPART(microsecond, "

# (SQL Server type, lake type, a value as the driver hands it over, its canonical text, what
# the SQL Server side of the fingerprint writes for the column `c`).
MATRIX = [
    # datetime: 1/300 s ticks; the driver sends .00333 s as .003, as datetime2(3) rounds it.
    (
        mssql.DATETIME(),
        pa.timestamp("us", tz="UTC"),
        dt.datetime(2026, 11, 2, 12, 30, 0, 3000),
        "2026-11-02T12:30:00.003000",
        "CONVERT(CHAR(19), CAST([c] AS DATETIME2(3)), 126)",
    ),
    *[
        # datetime2(7): 100 ns ticks, truncated to the microsecond by the driver and by
        # DATEPART(microsecond) alike; never CAST to datetime2(6), which would round.
        (
            mssql.DATETIME2(precision=p),
            pa.timestamp("us", tz="UTC"),
            dt.datetime(
                2026, 11, 2, 12, 30, 0, 123456 // 10 ** max(0, 6 - p) * 10 ** max(0, 6 - p)
            ),
            "2026-11-02T12:30:00." + f"{123456 // 10 ** max(0, 6 - p) * 10 ** max(0, 6 - p):06d}",
            f"CONCAT(CONVERT(CHAR(19), [c], 126), '.', {MICROS}[c])), 6))",
        )
        for p in range(8)
    ],
    (
        mssql.SMALLDATETIME(),
        pa.timestamp("us", tz="UTC"),
        dt.datetime(2026, 11, 2, 12, 30),
        "2026-11-02T12:30:00.000000",
        "CAST([c] AS DATETIME2(0))",
    ),
    (
        mssql.DATETIMEOFFSET(),
        pa.timestamp("us", tz="UTC"),
        dt.datetime(2026, 11, 2, 14, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "2026-11-02T12:30:00.000005",
        "CAST(SWITCHOFFSET([c], '+00:00') AS DATETIME2(7))",
    ),
    (mssql.DATE(), pa.date32(), dt.date(1, 1, 1), "0001-01-01", "CONVERT(CHAR(10), [c], 23)"),
    (
        mssql.TIME(),
        pa.string(),  # Delta has no time of day: read as text
        "23:59:59.999999",
        "23:59:59.999999",
        f"CONCAT(CONVERT(CHAR(8), [c], 108), '.', {MICROS}[c])), 6))",
    ),
    (
        mssql.UNIQUEIDENTIFIER(),
        pa.string(),
        "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        "CAST([c] AS NVARCHAR(MAX))",
    ),
    (mssql.BIT(), pa.bool_(), False, "false", "WHEN [c] = 0 THEN 'false' END"),
    (mssql.TINYINT(), pa.int16(), 255, "255", "CAST([c] AS NVARCHAR(MAX))"),
    (mssql.SMALLINT(), pa.int16(), -32768, "-32768", "CAST([c] AS NVARCHAR(MAX))"),
    (mssql.INTEGER(), pa.int32(), 2**31 - 1, "2147483647", "CAST([c] AS NVARCHAR(MAX))"),
    (mssql.BIGINT(), pa.int64(), -(2**63), str(-(2**63)), "CAST([c] AS NVARCHAR(MAX))"),
    (
        mssql.DECIMAL(38, 10),
        pa.decimal128(38, 10),
        decimal.Decimal("-9999999999999999999999999999.9999999999"),
        "-9999999999999999999999999999.9999999999",
        "CAST(CAST([c] AS DECIMAL(38, 10)) AS VARCHAR(48))",
    ),
    (
        mssql.NUMERIC(12, 6),
        pa.decimal128(12, 6),
        decimal.Decimal("0.000001"),
        "0.000001",
        "CAST(CAST([c] AS DECIMAL(38, 6)) AS VARCHAR(48))",
    ),
    # money: four decimals (CAST(money AS NVARCHAR) would write two).
    (
        mssql.MONEY(),
        pa.decimal128(19, 4),
        decimal.Decimal("-922337203685477.5808"),
        "-922337203685477.5808",
        "CAST(CAST([c] AS DECIMAL(38, 4)) AS VARCHAR(48))",
    ),
    (
        mssql.SMALLMONEY(),
        pa.decimal128(10, 4),
        decimal.Decimal("214748.3647"),
        "214748.3647",
        "CAST(CAST([c] AS DECIMAL(38, 4)) AS VARCHAR(48))",
    ),
    # float: its IEEE 754 bits (SQL Server writes floats to six digits, PostgreSQL shortest).
    (
        mssql.FLOAT(),
        pa.float64(),
        0.1,
        "3fb999999999999a",
        "LOWER(CONVERT(CHAR(16), CAST(CAST([c] AS FLOAT) AS BINARY(8)), 2))",
    ),
    (
        mssql.REAL(),
        pa.float64(),
        0.10000000149011612,  # real 0.1, widened exactly to a double
        "3fb99999a0000000",
        "LOWER(CONVERT(CHAR(16), CAST(CAST([c] AS FLOAT) AS BINARY(8)), 2))",
    ),
    (mssql.CHAR(10), pa.string(), "abc       ", "abc       ", "CAST([c] AS NVARCHAR(MAX))"),
    (
        mssql.VARCHAR(20, collation="Cyrillic_General_CI_AS"),
        pa.string(),
        "Привет",
        "Привет",
        "CAST([c] AS NVARCHAR(MAX))",
    ),
    (mssql.NCHAR(4), pa.string(), "Grüß", "Grüß", "CAST([c] AS NVARCHAR(MAX))"),
    (
        mssql.NVARCHAR(collation="Japanese_CI_AS"),
        pa.string(),
        "世界 🚀",
        "世界 🚀",
        "CAST([c] AS NVARCHAR(MAX))",
    ),
    (mssql.NTEXT(), pa.string(), "ü", "ü", "CAST([c] AS NVARCHAR(MAX))"),
    (
        mssql.VARBINARY("max"),
        pa.large_binary(),
        b"\x00\xff\x10",
        "00ff10",
        "LOWER(CONVERT(VARCHAR(MAX), [c], 2))",
    ),
    (mssql.XML(), pa.string(), '<a b="1"/>', '<a b="1"/>', "CAST([c] AS NVARCHAR(MAX))"),
]


def _id(sql_type) -> str:
    return sql_type.compile(dialect=mssql.dialect()).split(" COLLATE")[0].replace(" ", "")


ROWS = [pytest.param(*row, id=_id(row[0])) for row in MATRIX]


@pytest.mark.parametrize(("sql_type", "lake_type", "value", "text", "mssql_sql"), ROWS)
def test_each_sql_server_type_maps_to_its_lake_type(sql_type, lake_type, value, text, mssql_sql):
    assert arrow_type_for(sql_type) == lake_type


@pytest.mark.parametrize(("sql_type", "lake_type", "value", "text", "mssql_sql"), ROWS)
def test_each_sql_server_type_has_one_canonical_text(sql_type, lake_type, value, text, mssql_sql):
    assert canonical_text(value, column_kind(lake_type)) == text
    # The lake hands the value back in its own type: the same text again.
    lake_value = pa.array([value], lake_type)[0].as_py()
    assert canonical_text(lake_value, column_kind(lake_type)) == text


def _mssql_table(**columns) -> SourceTable:
    table = sa.Table(
        "typed",
        sa.MetaData(),
        sa.Column("id", mssql.BIGINT(), primary_key=True),
        sa.Column("event_time", mssql.DATETIME2(7)),
        sa.Column("last_modified", mssql.DATETIME2(7)),
        *(sa.Column(name, sql_type) for name, sql_type in columns.items()),
    )
    spec = TableSpec("typed", key="id", event_time="event_time")
    return SourceTable(spec, table, lake_schema(table))


def _mssql_text(described: SourceTable, deep: bool) -> str:
    source = SourceDatabase(url=MSSQL_URL)
    query = hourly_fingerprint_query(source, described, DAY, deep=deep)
    return str(query.compile(dialect=mssql.dialect()))


@pytest.mark.parametrize(("sql_type", "lake_type", "value", "text", "mssql_sql"), ROWS)
def test_each_sql_server_type_is_fingerprinted_by_its_own_sql(
    sql_type, lake_type, value, text, mssql_sql
):
    sql = _mssql_text(_mssql_table(c=sql_type), deep=True)
    assert mssql_sql.replace("[c]", "typed.c") in sql, sql
    # All pieces are joined as NVARCHAR and only then made UTF-8 VARCHAR.
    assert "CONCAT_WS(NCHAR(31), " in sql and UTF8_VARCHAR in sql


@pytest.mark.parametrize(("sql_type", "lake_type", "value", "text", "mssql_sql"), ROWS)
def test_each_sql_server_type_is_written_and_read_back_unchanged(
    sql_type, lake_type, value, text, mssql_sql, tmp_path
):
    location = LakeResource(url=str(tmp_path / "lake")).location("bronze", "typed")
    schema = pa.schema([("c", lake_type), ("date", pa.date32())])
    writer = DeltaPartitionWriter(location, schema, ["date"], replace=[("date", "=", "2026-11-02")])
    writer.write(pa.table({"c": pa.array([value, None], lake_type), "date": [DAY, DAY]}))
    writer.commit()
    (batch,) = scan_partition(location, day_filter(DAY), ["c"])
    expected = pa.array([value], lake_type)[0].as_py()
    assert batch.column(0).to_pylist() == [expected, None]


@pytest.mark.parametrize(
    ("sql_type", "name"),
    [
        (mssql.SQL_VARIANT(), "sql_variant"),
        (sa.types.NullType(), "geography"),
        (sa.types.NullType(), "hierarchyid"),
    ],
)
def test_types_the_lake_cannot_hold_are_refused_naming_table_and_column(sql_type, name):
    table = sa.Table(
        "places", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column(name, sql_type)
    )
    with pytest.raises(UnsupportedTypeError) as raised:
        lake_schema(table)
    message = str(raised.value)
    assert "'places'" in message and f"'{name}'" in message and "\n" not in message


def test_a_reflected_column_of_an_unknown_type_fails_before_any_data_moves(postgres_url):
    """PostgreSQL stands in for SQL Server: a type SQLAlchemy does not know (as geography and
    hierarchyid are to its mssql dialect) reflects as NullType."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TYPE hierarchyid AS (path TEXT)")
        connection.exec_driver_sql(
            "CREATE TABLE places (id INTEGER PRIMARY KEY, event_time TIMESTAMPTZ, "
            "last_modified TIMESTAMPTZ, node hierarchyid)"
        )
    engine.dispose()
    spec = TableSpec("places", key="id", event_time="event_time")
    with pytest.warns(sa.exc.SAWarning), pytest.raises(UnsupportedColumnError) as raised:
        SourceDatabase(url=postgres_url).describe_table(spec)
    assert str(raised.value).startswith("source table 'places' column 'node' has type unknown")
    assert "\n" not in str(raised.value)


# ------------------------------------------------- fingerprints in SQL Server's own SQL


def test_sql_server_fingerprints_datetime_offsets_and_collations_as_the_lake_holds_them():
    """datetime at the millisecond it reaches the lake, datetimeoffset in UTC (hour and
    version), an nvarchar key in a non-UTF-8 collation hashed as UTF-8, never as its code page."""
    table = sa.Table(
        "typed",
        sa.MetaData(),
        sa.Column("id", mssql.NVARCHAR(64, collation="Cyrillic_General_CI_AS"), primary_key=True),
        sa.Column("event_time", mssql.DATETIMEOFFSET(7)),
        sa.Column("last_modified", mssql.DATETIME()),
    )
    described = SourceTable(
        TableSpec("typed", key="id", event_time="event_time"), table, lake_schema(table)
    )
    quick = _mssql_text(described, deep=False)
    assert "DATEPART(hour, CAST(SWITCHOFFSET(typed.event_time, '+00:00') AS DATETIME2(7)))" in quick
    assert (
        "DATEDIFF_BIG(microsecond, CAST('1970-01-01' AS DATETIME2(7)), "
        "CAST(typed.last_modified AS DATETIME2(3)))" in quick
    )
    assert "CAST(CAST(CONCAT(CAST(typed.id AS NVARCHAR(400)), N'|', " in quick
    assert f"COLLATE {UTF8_COLLATION} AS VARCHAR(1700))" in quick
    assert "AS VARCHAR(400)" not in quick  # the key never passes through its own code page
    deep = _mssql_text(described, deep=True)
    assert (
        "CONVERT(CHAR(19), CAST(SWITCHOFFSET(typed.event_time, '+00:00') AS DATETIME2(7)), 126)"
        in deep
    )
    assert "CONVERT(CHAR(19), CAST(typed.last_modified AS DATETIME2(3)), 126)" in deep
    assert "CONVERT(VARCHAR(26)" not in deep  # style 126 drops a zero fraction and keeps offsets


# ------------------------------------------------------------------ values at the edges

EDGE_SPEC = TableSpec("edge_values", key="id", event_time="event_time", change_column="changed")
BIG_TEXT_BYTES = 9 * 1024 * 1024  # above the ADBC batch, row group, buffer and scan budgets


def _edge_table(dialect: str) -> sa.Table:
    moment = sa.DateTime(timezone=True)
    return sa.Table(
        EDGE_SPEC.name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event_time", moment, nullable=False),
        sa.Column("changed", moment),
        sa.Column("far", moment),
        sa.Column("day", sa.Date),
        sa.Column("at", sa.Time),
        sa.Column("ratio", sa.Float(53)),
        sa.Column("amount", sa.Numeric(38, 10) if dialect == "postgresql" else sa.Numeric(12, 6)),
        sa.Column("flag", sa.Boolean),
        sa.Column("body", sa.LargeBinary),
        sa.Column("note", sa.UnicodeText),
    )


def _edge_rows(dialect: str) -> list[dict]:
    start = dt.datetime(2026, 11, 2, tzinfo=UTC)
    last = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    first = dt.datetime(1, 1, 1, tzinfo=UTC)
    floats = [math.inf, -math.inf, 0.1, 1e308, 5e-324]
    if dialect == "postgresql":  # SQLite stores NaN as NULL and -0.0 as 0
        floats += [-0.0, math.nan]
    amounts = (
        ["9999999999999999999999999999.9999999999", "-0.0000000001", "12345678901234567890.5"]
        if dialect == "postgresql"
        else ["123456.654321", "-0.000001"]
    )
    rows = []
    for i in range(12):
        rows.append(
            {
                "id": i,
                "event_time": start + dt.timedelta(hours=2 * i, microseconds=i),
                "changed": [last, first, None][i % 3],
                "far": [first, last, start][i % 3],
                "day": [dt.date(1, 1, 1), dt.date(9999, 12, 31), None][i % 3],
                "at": [dt.time(0), dt.time(23, 59, 59, 999999), None][i % 3],
                "ratio": floats[i % len(floats)],
                "amount": decimal.Decimal(amounts[i % len(amounts)]),
                "flag": [True, False, None][i % 3],
                "body": [b"\x00\xff", b"", None][i % 3],
                "note": "é世🚀" * (BIG_TEXT_BYTES // 9) if i == 5 else f"Grüße {i}",
            }
        )
    return rows


@pytest.fixture(params=["postgresql", "sqlite"])
def edge_source(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'edge.sqlite'}"
    engine = sa.create_engine(url)
    table = _edge_table(request.param)
    table.metadata.create_all(engine)
    rows = _edge_rows(request.param)
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    engine.dispose()
    source = SourceDatabase(url=url, batch_rows=4, adbc_batch_bytes=1024 * 1024)
    return source, rows


def _same(left, right) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, float) and isinstance(right, float) and left == 0 == right:
        return math.copysign(1, left) == math.copysign(1, right)
    return left == right


def _write(lake, location, described, batches) -> None:
    schema = bronze_schema(described.arrow_schema)
    writer = DeltaPartitionWriter(
        location,
        schema,
        ["date"],
        replace=day_filter(DAY),
        row_group_bytes=1024 * 1024,
        buffered_bytes_limit=1024 * 1024,
    )
    for batch in batches:
        writer.write(batch.append_column("date", pa.array([DAY] * batch.num_rows, pa.date32())))
    writer.commit()


def test_values_at_the_edges_are_written_verified_and_fingerprinted(edge_source, tmp_path):
    source, rows = edge_source
    lake = LakeResource(url=str(tmp_path / "lake"))
    described = source.describe_table(EDGE_SPEC)
    start, end = day_window(DAY)
    batches = list(source.stream_range(described, start, end))
    for location in (bronze_location(lake, EDGE_SPEC), silver_location(lake, EDGE_SPEC)):
        _write(lake, location, described, batches)

    names = described.arrow_schema.names
    lake_rows = [
        row
        for batch in scan_partition(bronze_location(lake, EDGE_SPEC), day_filter(DAY), names)
        for row in batch.to_pylist()
    ]
    assert len(lake_rows) == len(rows)
    for expected, found in zip(rows, sorted(lake_rows, key=lambda row: row["id"])):
        for name in names:
            value = expected[name]
            if isinstance(value, dt.time):  # times of day are held as text
                value = value.isoformat(timespec="microseconds")
            assert _same(found[name], value), (expected["id"], name, found[name])

    spot = spot_check_result(EDGE_SPEC, source, described, lake, DAY, rows=100, seed="edges")
    assert spot.passed, spot.metadata["mismatches"]
    for deep in (False, True):
        result = reconcile_day(EDGE_SPEC, source, lake, DAY, deep=deep)
        assert result.matches, [d.describe() for d in result.differences]
        assert result.source_rows == result.lake_rows == len(rows)


def test_a_changed_edge_value_is_still_found_by_the_deep_fingerprint(postgres_url, tmp_path):
    engine = sa.create_engine(postgres_url)
    table = _edge_table("postgresql")
    table.metadata.create_all(engine)
    rows = _edge_rows("postgresql")
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    source = SourceDatabase(url=postgres_url)
    lake = LakeResource(url=str(tmp_path / "lake"))
    described = source.describe_table(EDGE_SPEC)
    start, end = day_window(DAY)
    _write(
        lake,
        silver_location(lake, EDGE_SPEC),
        described,
        source.stream_range(described, start, end),
    )
    with engine.begin() as connection:  # NaN becomes another NaN-free value, year 1 a second on
        connection.execute(table.update().where(table.c.id == 6).values(ratio=0.5))
        connection.execute(
            table.update()
            .where(table.c.id == 1)
            .values(far=dt.datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC))
        )
    engine.dispose()
    result = reconcile_day(EDGE_SPEC, source, lake, DAY, deep=True)
    assert sorted((d.key, d.kind) for d in result.differences) == [
        ("1", "changed"),
        ("6", "changed"),
    ]


def test_statistics_at_the_edges_bound_only_what_they_can_and_readers_still_find_every_row(
    tmp_path,
):
    location = LakeResource(url=str(tmp_path / "lake")).location("bronze", "edges")
    last = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    first = dt.datetime(1, 1, 1, tzinfo=UTC)
    schema = pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("ratio", pa.float64()),
            ("wide", pa.decimal128(38, 10)),
            ("cost", pa.decimal128(12, 6)),
            ("date", pa.date32()),
        ]
    )
    data = pa.table(
        {
            "ts": [first, last],
            "ratio": [math.nan, math.inf],
            "wide": [
                decimal.Decimal("-9999999999999999999999999999.9999999999"),
                decimal.Decimal(1),
            ],
            "cost": [decimal.Decimal("0.000001"), decimal.Decimal("123456.654321")],
            "date": [DAY, DAY],
        },
        schema=schema,
    )
    writer = DeltaPartitionWriter(location, schema, ["date"], replace=day_filter(DAY))
    writer.write(data)
    writer.commit()
    (stats,) = [
        json.loads(action["add"]["stats"])
        for log in sorted((tmp_path / "lake" / "bronze" / "edges" / "_delta_log").glob("*.json"))
        for action in map(json.loads, log.read_text().splitlines())
        if "add" in action
    ]
    assert stats["minValues"] == {"cost": 1e-06}
    assert stats["maxValues"] == {"cost": 123456.654321}
    frame = pl.scan_delta(location.uri)
    late = dt.datetime(9999, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)
    assert frame.filter(pl.col("ts") > late).collect().height == 1
    early = dt.datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert frame.filter(pl.col("ts") < early).collect().height == 1
