"""Bronze, silver and gold materialized through Dagster from a real PostgreSQL source into a
Delta lake on a local folder and on Azurite; the lake is compared with the source value by value."""

import datetime as dt
import math
from collections import Counter, defaultdict

import dagster as dg
import pyarrow as pa
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable

from llm_observatory.assets.migration import migration_assets
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.layout import (
    bronze_location,
    daily_metrics_location,
    quarantine_location,
    silver_location,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS, MODELS, TABLES
from llm_observatory_tests.helpers import control_beside

START = dt.date(2026, 11, 1)
DAYS = 3
ROWS_PER_DAY = 400
MIGRATION_ASSETS = [*migration_assets, *integrity_checks]
# High enough that every defect occurs on every day even with a few hundred rows.
DEFECTS = DefectRates(
    latency_null=0.02,
    latency_out_of_range=0.02,
    unknown_model=0.02,
    model_null=0.01,
    invalid_json=0.03,
    missing_hour=(1, 13),
)


def partition_keys() -> list[str]:
    return [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]


def materialize_days(resources: dict, instance: dg.DagsterInstance, keys=None, assets=None):
    results = []
    for key in keys or partition_keys():
        results.append(
            dg.materialize(
                assets or MIGRATION_ASSETS,
                partition_key=key,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
        )
    return results


def read_table(location) -> list[dict]:
    table = DeltaTable(location.uri, storage_options=location.storage_options or None)
    return table.to_pyarrow_table().to_pylist()


def source_rows(url: str, table_name: str) -> list[dict]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        table = sa.Table(table_name, sa.MetaData(), autoload_with=connection)
        rows = [dict(row) for row in connection.execute(sa.select(table)).mappings()]
    engine.dispose()
    return rows


def normalized(row: dict) -> dict:
    """Source rows as the lake must hold them: instants in UTC."""
    return {
        name: value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value
        for name, value in row.items()
    }


@pytest.fixture(scope="module")
def postgres_source(postgres_server):
    url = postgres_server.create_database("pipeline_source")
    summary = generate_source(
        url, start_date=START, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=11, defects=DEFECTS
    )
    return url, summary


@pytest.fixture(scope="module")
def migrated_local(postgres_source, tmp_path_factory):
    url, summary = postgres_source
    lake = LakeResource(url=str(tmp_path_factory.mktemp("lake")))
    resources = {"source": SourceDatabase(url=url), "lake": lake, "control": control_beside(lake)}
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_days(resources, instance)
    return url, summary, lake, resources, instance, results


def test_every_run_and_check_succeeds(migrated_local):
    *_, results = migrated_local
    for result in results:
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        # 7 inside the assets; per table 4 on bronze and 5 on silver.
        assert len(evaluations) == 7 + 3 * 4 + 3 * 5
        partition = result.dagster_run.tags["dagster/partition"]
        # The synthetic source leaves one hour empty on the second day: a WARN, not a loss.
        expected_warnings = (
            {("hour_gaps_explained_by_source", table.name) for table in TABLES}
            if partition == partition_keys()[1]
            else set()
        )
        # DEFECTS quarantine 7 % of interactions, above the 5 % warning threshold.
        expected_warnings.add(("quarantine_share_below_threshold", "llm_interactions"))
        failed = {(e.check_name, e.asset_key.path[-1]) for e in evaluations if not e.passed}
        assert failed == expected_warnings, [
            (e.asset_key, e.check_name, e.metadata) for e in evaluations if not e.passed
        ]
        for evaluation in evaluations:
            if not evaluation.passed:
                assert evaluation.severity == dg.AssetCheckSeverity.WARN
            if not evaluation.passed and evaluation.check_name == "hour_gaps_explained_by_source":
                assert evaluation.metadata["gaps_in_source_too"].value == [13]
        assert {e.partition for e in evaluations} == {result.dagster_run.tags["dagster/partition"]}


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_bronze_equals_the_source_value_by_value(migrated_local, table):
    url, _, lake, *_ = migrated_local
    expected = sorted(
        (normalized(row) for row in source_rows(url, table.name)), key=lambda row: row[table.key]
    )
    bronze = sorted(read_table(bronze_location(lake, table)), key=lambda row: row[table.key])
    assert len(bronze) == len(expected)
    for lake_row, source_row in zip(bronze, expected):
        assert lake_row["date"] == source_row[table.event_time].date()
        assert {name: lake_row[name] for name in source_row} == source_row


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_silver_and_quarantine_account_for_every_source_row(migrated_local, table):
    url, summary, lake, *_ = migrated_local
    silver = read_table(silver_location(lake, table))
    quarantine = read_table(quarantine_location(lake, table)) if table.rules else []
    source_by_key = {row[table.key]: normalized(row) for row in source_rows(url, table.name)}

    silver_keys = [row[table.key] for row in silver]
    quarantine_keys = [row[table.key] for row in quarantine]
    assert len(set(silver_keys)) == len(silver_keys), "silver holds one row per key"
    assert set(silver_keys).isdisjoint(quarantine_keys)
    assert sorted(silver_keys + quarantine_keys) == sorted(source_by_key)

    for row in silver:
        source_row = source_by_key[row[table.key]]
        assert {name: row[name] for name in source_row} == source_row
        assert row["date"] == source_row[table.event_time].date()
        if table.silver_model_column:
            assert row["model"] == row["model_name"] and row["model"] in MODELS
            assert row["hour"] == source_row[table.event_time].hour
            assert 0 <= row["latency_ms"] <= 120_000

    by_rule = Counter(row["quarantine_rule"] for row in quarantine)
    assert dict(by_rule) == summary.expected_quarantine_by_rule(table.name)
    for row in quarantine:
        source_row = source_by_key[row[table.key]]
        assert {name: row[name] for name in source_row} == source_row
        assert row["quarantine_reason"].startswith(row["quarantine_rule"])


def test_silver_interactions_are_laid_out_by_model_date_hour(migrated_local):
    _, _, lake, *_ = migrated_local
    table = DeltaTable(silver_location(lake, LLM_INTERACTIONS).uri)
    assert table.metadata().partition_columns == ["model", "date", "hour"]
    actions = pa.table(table.get_add_actions(flatten=True))
    partitions = set(
        zip(
            actions.column("partition.model").to_pylist(),
            actions.column("partition.hour").to_pylist(),
        )
    )
    assert {model for model, _ in partitions} == set(MODELS)


def _quantile_linear(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_gold_metrics_match_an_independent_computation_from_the_source(migrated_local):
    url, _, lake, *_ = migrated_local
    valid = defaultdict(list)
    for row in map(normalized, source_rows(url, "llm_interactions")):
        latency = row["latency_ms"]
        if row["model_name"] in MODELS and latency is not None and 0 <= latency <= 120_000:
            valid[(row["timestamp"].date(), row["model_name"])].append(row)
    gold = {(row["date"], row["model"]): row for row in read_table(daily_metrics_location(lake))}
    assert set(gold) == set(valid)
    for key, rows in valid.items():
        metrics = gold[key]
        latencies = [float(row["latency_ms"]) for row in rows]
        assert metrics["requests"] == len(rows)
        assert metrics["successes"] == sum(row["status"] == "success" for row in rows)
        assert metrics["errors"] == sum(row["status"] == "error" for row in rows)
        assert metrics["timeouts"] == sum(row["status"] == "timeout" for row in rows)
        for name, q in (
            ("latency_p50_ms", 0.5),
            ("latency_p95_ms", 0.95),
            ("latency_p99_ms", 0.99),
        ):
            assert metrics[name] == pytest.approx(_quantile_linear(latencies, q))
        assert metrics["latency_mean_ms"] == pytest.approx(sum(latencies) / len(latencies))
        assert metrics["prompt_tokens"] == sum(row["prompt_tokens"] for row in rows)
        assert metrics["completion_tokens"] == sum(row["completion_tokens"] for row in rows)
        assert metrics["cost_usd"] == sum(row["cost_usd"] for row in rows)


def test_the_missing_hour_has_no_rows_in_the_lake(migrated_local):
    _, summary, lake, *_ = migrated_local
    hour = summary.missing_hour
    assert hour is not None
    for table in TABLES:
        for row in read_table(bronze_location(lake, table)):
            assert not (hour <= row[table.event_time] < hour + dt.timedelta(hours=1))


def test_rerunning_a_partition_gives_the_same_rows(migrated_local):
    _, _, lake, resources, instance, _ = migrated_local
    locations = [bronze_location(lake, t) for t in TABLES] + [
        silver_location(lake, t) for t in TABLES
    ]
    locations.append(daily_metrics_location(lake))
    before = {loc.uri: sorted(map(repr, read_table(loc))) for loc in locations}
    versions = {loc.uri: DeltaTable(loc.uri).version() for loc in locations}
    [result] = materialize_days(resources, instance, keys=[partition_keys()[1]])
    assert result.success
    for loc in locations:
        assert DeltaTable(loc.uri).version() == versions[loc.uri] + 1, "a new commit was made"
        assert sorted(map(repr, read_table(loc))) == before[loc.uri]


def test_an_unreachable_source_fails_the_run_and_changes_nothing(migrated_local):
    from llm_observatory_tests.services import free_port

    _, _, lake, _, instance, _ = migrated_local
    down = SourceDatabase(
        url=f"postgresql+psycopg://migrator:Secret-Pw-1@127.0.0.1:{free_port()}/x"
    )
    location = bronze_location(lake, LLM_INTERACTIONS)
    version = DeltaTable(location.uri).version()
    [result] = materialize_days(
        {"source": down, "lake": lake, "control": control_beside(lake)},
        instance,
        keys=[partition_keys()[0]],
        assets=[migration_assets[0]],
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    text = failure.to_string()
    assert "127.0.0.1" in text and "Secret-Pw-1" not in text
    assert DeltaTable(location.uri).version() == version


def test_the_lake_on_azurite_holds_the_same_rows(postgres_source, azurite, tmp_path):
    url, summary = postgres_source
    lake = LakeResource(
        url="abfs://{layer}@devstoreaccount1.dfs.core.windows.net/" + azurite.create_container("p"),
        azure_storage_connection_string=azurite.connection_string,
    )
    key = partition_keys()[0]
    [result] = materialize_days(
        {
            "source": SourceDatabase(url=url),
            "lake": lake,
            "control": control_beside(lake, tmp_path),
        },
        dg.DagsterInstance.ephemeral(),
        keys=[key],
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 7 + 3 * 4 + 3 * 5  # checksums re-read every file through adlfs
    assert {e.check_name for e in evaluations if not e.passed} == {
        "quarantine_share_below_threshold"  # DEFECTS' 7 % of interactions: a WARN
    }
    day = dt.date.fromisoformat(key)
    for table in TABLES:
        expected = sorted(
            (
                normalized(r)
                for r in source_rows(url, table.name)
                if r[table.event_time].astimezone(dt.UTC).date() == day
            ),
            key=lambda r: r[table.key],
        )
        bronze = sorted(read_table(bronze_location(lake, table)), key=lambda r: r[table.key])
        assert [{n: r[n] for n in expected[0]} for r in bronze] == expected
        silver = read_table(silver_location(lake, table))
        assert len(silver) == summary.rows_by_day[table.name][day] - summary.expected_quarantine(
            table.name, day
        )
    assert lake.location("bronze", "x").uri.startswith("abfs://bronze@")

    # Query monitoring reads the same Delta tables on Azurite through Polars.
    from llm_observatory.assets.monitoring import QUERIES, query_latency

    monitored = dg.materialize(
        [query_latency],
        resources={"source": SourceDatabase(url=url), "lake": lake},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"monitoring__query_latency": {"config": {"repeats": 1}}}},
    )
    assert monitored.success
    [event] = monitored.get_asset_materialization_events()
    metadata = event.step_materialization_data.materialization.metadata
    assert metadata["lake_interaction_by_id_rows"].value == 1
    assert all(f"lake_{query.name}_p50_ms" in metadata for query in QUERIES)


def test_query_monitoring_times_every_query_on_the_lake_and_the_source(migrated_local):
    from llm_observatory.assets.monitoring import QUERIES, query_latency

    url, _, lake, resources, instance, _ = migrated_local
    run_config = {"ops": {"monitoring__query_latency": {"config": {"repeats": 2}}}}
    result = dg.materialize(
        [query_latency], resources=resources, instance=instance, run_config=run_config
    )
    assert result.success
    [answered] = result.get_asset_check_evaluations()
    assert answered.passed, answered.metadata
    [event] = result.get_asset_materialization_events()
    metadata = event.step_materialization_data.materialization.metadata
    for query in QUERIES:
        for side in ("lake", "source"):
            p50 = metadata[f"{side}_{query.name}_p50_ms"].value
            p95 = metadata[f"{side}_{query.name}_p95_ms"].value
            assert 0 < p50 <= p95, (side, query.name)
    # The same question has the same answer size on both sides where validation cannot differ.
    assert metadata["lake_interaction_by_id_rows"].value == 1
    assert metadata["source_interaction_by_id_rows"].value == 1
    assert metadata["lake_model_latency_day_rows"].value == len(MODELS)
    assert "| model_latency_day |" in metadata["latencies"].value

    # After cutover the source may be gone: the lake is still timed, the run succeeds.
    gone = {
        **resources,
        "source": SourceDatabase(url="postgresql+psycopg://u:secret@127.0.0.1:9/x"),
    }
    lake_only = dg.materialize(
        [query_latency], resources=gone, instance=instance, run_config=run_config
    )
    assert lake_only.success
    [event] = lake_only.get_asset_materialization_events()
    names = set(event.step_materialization_data.materialization.metadata)
    assert "lake_cost_by_model_month_p50_ms" in names
    assert not any(name.startswith("source_") for name in names)
