"""The pieces of an incremental cycle that need no database: query slicing, isolation levels,
the rotation of reconciled days, and the SQL Server form of the change query."""

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from llm_observatory.incremental.cycle import SyncSettings
from llm_observatory.incremental.merge import CapturedRows
from llm_observatory.resources.source import SourceDatabase, SourceTable
from llm_observatory.tables import LLM_INTERACTIONS

UTC = dt.UTC


def moment(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_recent_changes_are_read_an_hour_at_a_time_and_older_ones_in_one_query():
    source = SourceDatabase(url="sqlite://", recent_days=1)
    slices = source.change_slices(moment(1, 0), moment(20, 10, 30))
    assert slices[0] == (moment(1, 0), moment(19, 10))
    hot = slices[1:]
    assert hot[0] == (moment(19, 10), moment(19, 11))
    assert hot[-1] == (moment(20, 10), moment(20, 10, 30))
    assert all(high - low <= dt.timedelta(hours=1) for low, high in hot)
    # Contiguous, (low, high] slices covering the whole range exactly once.
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    assert source.change_slices(None, moment(20, 10))[0][0] is None
    quiet = source.change_slices(moment(20, 9, 55), moment(20, 10, 5))
    assert quiet == [(moment(20, 9, 55), moment(20, 10)), (moment(20, 10), moment(20, 10, 5))]


def test_backfill_of_a_recent_day_is_cut_into_hours():
    source = SourceDatabase(url="sqlite://", recent_days=2)
    now = moment(25, 18)
    old = source.range_slices(moment(1, 0), moment(2, 0), now=now)
    assert old == [(moment(1, 0), moment(2, 0))]
    recent = source.range_slices(moment(24, 0), moment(25, 0), now=now)
    assert len(recent) == 24 and recent[0] == (moment(24, 0), moment(24, 1))


@pytest.mark.parametrize(
    ("url", "configured", "expected"),
    [
        ("mssql+pyodbc://u@h/db", "SNAPSHOT", "SNAPSHOT"),
        ("mssql+pyodbc://u@h/db", "nolock", "READ UNCOMMITTED"),
        ("postgresql+psycopg://u@h/db", "snapshot", "REPEATABLE READ"),
        ("postgresql+psycopg://u@h/db", None, None),
        ("sqlite://", "SNAPSHOT", None),
    ],
)
def test_isolation_levels_map_to_each_database(url, configured, expected):
    assert SourceDatabase(url=url, isolation_level=configured).dialect_isolation_level() == expected


def test_an_unknown_isolation_level_is_refused():
    with pytest.raises(ValueError, match="isolation level 'CHAOS'"):
        source = SourceDatabase(url="mssql+pyodbc://u@h/db", isolation_level="CHAOS")
        source.dialect_isolation_level()


def test_the_change_query_compiles_for_sql_server_with_bound_parameters():
    table = sa.Table(
        "llm_interactions",
        sa.MetaData(),
        sa.Column("interaction_id", sa.String(36)),
        sa.Column("timestamp", sa.DateTime),
        sa.Column("last_modified", sa.DateTime),
    )
    described = SourceTable(LLM_INTERACTIONS, table, pa.schema([]))
    source = SourceDatabase(url="mssql+pyodbc://u@h/db")
    query = source.changes_query(described, moment(1, 0), moment(2, 0))
    compiled = query.compile(dialect=mssql.dialect())
    text = str(compiled)
    assert "last_modified > :changed_after" in text
    assert "last_modified <= :changed_up_to" in text
    assert set(compiled.params) == {"changed_after", "changed_up_to"}
    lookup = sa.select(table.c.interaction_id).where(
        table.c.interaction_id.in_(sa.bindparam("keys", ["a", "b"], expanding=True))
    )
    assert "IN" in str(lookup.compile(dialect=mssql.dialect()))


def test_every_day_is_reconciled_once_per_rotation_period():
    settings = SyncSettings(
        reconcile_recent_days=2, rotation_period_days=7, first_day=dt.date(2026, 1, 1)
    )
    seen: set[dt.date] = set()
    newest = dt.date(2026, 3, 1)
    for offset in range(7):
        days = settings.days_to_reconcile(newest + dt.timedelta(days=offset))
        assert newest + dt.timedelta(days=offset) in days
        seen.update(days)
    first = dt.date(2026, 1, 1)
    history = {first + dt.timedelta(days=n) for n in range((newest - first).days)}
    assert history <= seen
    changes_only = SyncSettings(reconcile_recent_days=0, rotation_period_days=7)
    assert changes_only.days_to_reconcile(newest) == []


def test_the_latest_captured_version_of_each_key_wins(tmp_path):
    schema = pa.schema(
        [
            ("interaction_id", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("last_modified", pa.timestamp("us", tz="UTC")),
        ]
    )
    batch = pa.record_batch(
        [
            pa.array(["a", "b", "a", "c", "b"]),
            pa.array([moment(1, 1)] * 5, pa.timestamp("us", tz="UTC")),
            pa.array(
                [moment(2, 1), moment(2, 5), moment(2, 3), moment(2, 1), moment(2, 5)],
                pa.timestamp("us", tz="UTC"),
            ),
        ],
        schema=schema,
    )
    captured = CapturedRows.capture([batch], LLM_INTERACTIONS, schema, tmp_path / "c.parquet")
    assert captured.rows == 5
    # a: the later of two versions; b: an exact re-delivery is kept once; c alone.
    assert captured.latest_per_key().tolist() == [1, 2, 3]


def test_the_monitoring_queries_compile_for_sql_server_with_bound_parameters():
    from llm_observatory.assets.monitoring import QUERIES, QueryParameters

    table = sa.Table(
        "llm_interactions",
        sa.MetaData(),
        sa.Column("interaction_id", sa.String(36)),
        sa.Column("timestamp", sa.DateTime),
        sa.Column("model_name", sa.String(50)),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("status", sa.String(20)),
        sa.Column("cost_usd", sa.Numeric(12, 6)),
        sa.Column("last_modified", sa.DateTime),
    )
    described = SourceTable(LLM_INTERACTIONS, table, pa.schema([]))
    source = SourceDatabase(url="mssql+pyodbc://u@h/db")
    parameters = QueryParameters(day=dt.date(2026, 11, 3), interaction_id="x'; DROP TABLE t --")
    for query in QUERIES:
        compiled = query.source(source, described, parameters).compile(dialect=mssql.dialect())
        text = str(compiled)
        assert "DROP" not in text and "2026" not in text, text  # values are bound, not inlined
        assert compiled.params, query.name
    hourly = str(QUERIES[1].source(source, described, parameters).compile(dialect=mssql.dialect()))
    assert "dateadd(hour, datediff(hour" in hourly.lower()
