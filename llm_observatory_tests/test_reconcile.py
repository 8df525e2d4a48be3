"""Reconciliation against the source: equal fingerprints on a clean lake, and the exact keys
of every difference (missing, extra, stale) after tampering with either side."""

import datetime as dt

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable
from sqlalchemy.dialects import mssql

from llm_observatory.assets.migration import migration_assets
from llm_observatory.io.delta_lake import current_files
from llm_observatory.layout import day_filter, silver_location
from llm_observatory.reconcile import (
    LEAF_ROWS,
    hourly_fingerprint_query,
    lake_fingerprint,
    lake_versions_by_hour,
    reconcile_day,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS, LOGS, TABLES
from llm_observatory_tests.helpers import control_beside

DAY = dt.date(2026, 11, 1)


def migrate(url: str, lake_root) -> tuple[SourceDatabase, LakeResource]:
    source = SourceDatabase(url=url)
    lake = LakeResource(url=str(lake_root))
    result = dg.materialize(
        migration_assets,
        partition_key=DAY.isoformat(),
        resources={"source": source, "lake": lake, "control": control_beside(lake)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    return source, lake


@pytest.fixture
def postgres_lake(postgres_url, tmp_path):
    generate_source(
        postgres_url,
        start_date=DAY,
        days=1,
        rows_per_day=2000,
        seed=9,
        defects=DefectRates(missing_hour=(0, 5)),
    )
    return (postgres_url, *migrate(postgres_url, tmp_path / "lake"))


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_a_clean_lake_reconciles_hour_by_hour(postgres_lake, table):
    _, source, lake = postgres_lake
    result = reconcile_day(table, source, lake, DAY)
    assert result.matches, [d.describe() for d in result.differences]
    assert result.source_rows == result.lake_rows > 0
    assert result.source_queries == 1  # one aggregate query for the whole day


def test_source_and_lake_fingerprints_agree_value_for_value(postgres_lake):
    _, source, lake = postgres_lake
    from llm_observatory.reconcile import SourceSide

    side = SourceSide(source, source.describe_table(LLM_INTERACTIONS))
    lake_hours = lake_versions_by_hour(LLM_INTERACTIONS, lake, DAY)
    source_hours = side.hourly(DAY)
    assert 5 not in source_hours and 5 not in lake_hours  # the missing hour
    for hour, fingerprint in source_hours.items():
        assert fingerprint == lake_fingerprint(lake_hours[hour])


def test_every_kind_of_difference_is_found_by_key(postgres_lake):
    url, source, lake = postgres_lake
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        keys = [
            k
            for (k,) in connection.execute(
                sa.text(
                    'SELECT interaction_id FROM llm_interactions WHERE "timestamp" >= :s '
                    'AND "timestamp" < :e ORDER BY interaction_id LIMIT 3'
                ),
                {
                    "s": dt.datetime(2026, 11, 1, 9, tzinfo=dt.timezone.utc),
                    "e": dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc),
                },
            )
        ]
        deleted, updated, _ = keys
        connection.execute(
            sa.text("DELETE FROM llm_interactions WHERE interaction_id = :k"), {"k": deleted}
        )
        connection.execute(
            sa.text(
                "UPDATE llm_interactions SET last_modified = last_modified"
                " + interval '1 microsecond'"
                " WHERE interaction_id = :k"
            ),
            {"k": updated},
        )
    engine.dispose()
    # And a row lost from the lake: removed from its silver file in storage.
    location = silver_location(lake, LLM_INTERACTIONS)
    table = DeltaTable(location.uri)
    path, _ = next(p for p in current_files(table, day_filter(DAY)) if "hour=14" in p[0])
    data = pq.read_table(f"{location.fs_path}/{path}")
    lost = data.column("interaction_id")[0].as_py()
    pq.write_table(
        data.filter(pc.not_equal(data.column("interaction_id"), lost)), f"{location.fs_path}/{path}"
    )

    result = reconcile_day(LLM_INTERACTIONS, source, lake, DAY)
    found = {(d.key, d.kind, d.hour) for d in result.differences}
    assert found == {(deleted, "extra", 9), (updated, "stale", 9), (lost, "missing", 14)}
    assert sorted(result.hours_differing) == [9, 14]
    # Narrowing asks the source for fingerprints and a few small key sets, never the table.
    assert result.source_queries < 40


def test_bisection_reaches_single_keys_in_a_large_hour(postgres_url, tmp_path):
    generate_source(
        postgres_url,
        start_date=DAY,
        days=1,
        rows_per_day=12 * LEAF_ROWS * 24,
        seed=4,
        defects=DefectRates.none(),
    )
    source, lake = migrate(postgres_url, tmp_path / "lake")
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("DELETE FROM logs WHERE log_id = (SELECT max(log_id) FROM logs)")
        )
    engine.dispose()
    result = reconcile_day(LOGS, source, lake, DAY)
    assert [d.kind for d in result.differences] == ["extra"]
    assert result.source_queries < 30


def test_sqlite_sources_reconcile_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'src.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=300, seed=2)
    source, lake = migrate(url, tmp_path / "lake")
    for table in TABLES:
        result = reconcile_day(table, source, lake, DAY)
        assert result.matches, [d.describe() for d in result.differences]


def test_the_fingerprint_query_compiles_for_sql_server():
    from llm_observatory.synthetic.schema import reference_metadata

    metadata = reference_metadata()
    import pyarrow as pa

    from llm_observatory.resources.source import SourceTable, arrow_type_for

    table = metadata.tables["llm_interactions"]
    described = SourceTable(
        LLM_INTERACTIONS, table, pa.schema([(c.name, arrow_type_for(c.type)) for c in table.c])
    )
    source = SourceDatabase(url="mssql+pyodbc://reader@sqlprod/llm?driver=ODBC+Driver+18")
    text = str(hourly_fingerprint_query(source, described, DAY).compile(dialect=mssql.dialect()))
    assert "HASHBYTES('MD5'" in text and "DATEDIFF_BIG(microsecond" in text
    assert "DATEPART(hour" in text and "GROUP BY" in text


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_deep_mode_matches_a_clean_lake_on_every_column(postgres_lake, table):
    _, source, lake = postgres_lake
    result = reconcile_day(table, source, lake, DAY, deep=True)
    assert result.matches, [d.describe() for d in result.differences[:5]]
    assert result.source_rows == result.lake_rows > 0


def test_deep_mode_finds_a_value_changed_in_the_lake_by_key(postgres_lake):
    _, source, lake = postgres_lake
    location = silver_location(lake, LLM_INTERACTIONS)
    path, _ = current_files(DeltaTable(location.uri), day_filter(DAY))[0]
    data = pq.read_table(f"{location.fs_path}/{path}")
    key = data.column("interaction_id")[0].as_py()
    responses = data.column("response").to_pylist()
    responses[0] = (responses[0] or "") + "·"
    data = data.set_column(
        data.schema.get_field_index("response"),
        "response",
        pa.array(responses, data.schema.field("response").type),
    )
    pq.write_table(data, f"{location.fs_path}/{path}")

    assert reconcile_day(LLM_INTERACTIONS, source, lake, DAY).matches  # key and version agree
    deep = reconcile_day(LLM_INTERACTIONS, source, lake, DAY, deep=True)
    assert [(d.key, d.kind) for d in deep.differences] == [(key, "changed")]


def test_deep_mode_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'src.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=200, seed=12)
    source, lake = migrate(url, tmp_path / "lake")
    for table in TABLES:
        result = reconcile_day(table, source, lake, DAY, deep=True)
        assert result.matches, [d.describe() for d in result.differences[:5]]


def test_deep_fingerprint_compiles_for_sql_server():
    import pyarrow as pa

    from llm_observatory.resources.source import SourceTable, arrow_type_for
    from llm_observatory.synthetic.schema import reference_metadata

    table = reference_metadata().tables["llm_interactions"]
    described = SourceTable(
        LLM_INTERACTIONS, table, pa.schema([(c.name, arrow_type_for(c.type)) for c in table.c])
    )
    source = SourceDatabase(url="mssql+pyodbc://reader@sqlprod/llm?driver=ODBC+Driver+18")
    text = str(
        hourly_fingerprint_query(source, described, DAY, deep=True).compile(dialect=mssql.dialect())
    )
    assert "CONCAT_WS(NCHAR(31)" in text and "UTF8 AS VARCHAR(MAX))" in text
    assert "CONVERT(CHAR(19), llm_interactions.last_modified, 126)" in text
