"""An analyst's own assets beside ours: they load silver through the lake IO manager and are
written back into the lake by it, with the pipeline's checksummed, atomic writer."""

import datetime as dt

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from llm_observatory.assets.migration import migration_assets
from llm_observatory.io.delta_lake import current_files, open_table, read_back_sha256
from llm_observatory.io.lake_io_manager import (
    LAKE_IO_MANAGER_KEY,
    LakeIOError,
    LakeIOManager,
    lake_location,
)
from llm_observatory.layout import silver_key
from llm_observatory.partitions import daily_partitions
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS
from llm_observatory_tests.helpers import control_beside

DAYS = [dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
SLOW_CALLS = dg.AssetKey(["gold", "slow_calls"])
SLOW_MS = 2_000


@dg.asset(
    key=SLOW_CALLS,
    partitions_def=daily_partitions,
    io_manager_key=LAKE_IO_MANAGER_KEY,
    ins={
        "silver": dg.AssetIn(
            key=silver_key(LLM_INTERACTIONS), input_manager_key=LAKE_IO_MANAGER_KEY
        )
    },
)
def slow_calls(silver: pl.LazyFrame) -> pa.RecordBatchReader:
    """The day's interactions slower than 2 s, streamed back as Arrow batches."""
    slow = silver.filter(pl.col("latency_ms") > SLOW_MS).select(
        "interaction_id", "model_name", "latency_ms"
    )
    return slow.collect().to_arrow().to_reader(max_chunksize=50)


@dg.asset(
    key=["gold", "slow_calls_per_model"],
    partitions_def=daily_partitions,
    io_manager_key=LAKE_IO_MANAGER_KEY,
    ins={"slow": dg.AssetIn(key=SLOW_CALLS)},
)
def slow_calls_per_model(slow: ds.Dataset) -> pa.Table:
    """Downstream of the analyst's own asset, read as an Arrow dataset."""
    return (
        slow.to_table(columns=["model_name"]).group_by("model_name").aggregate([([], "count_all")])
    )


@pytest.fixture(params=["local", "azurite"])
def migrated(tmp_path, request):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(
        url,
        start_date=DAYS[0],
        days=2,
        rows_per_day=400,
        seed=3,
        defects=DefectRates(missing_hour=None),
    )
    if request.param == "azurite":
        azurite = request.getfixturevalue("azurite")
        container = request.getfixturevalue("azurite_container")
        lake = LakeResource(
            url=azurite.abfs_url(container, "lake"),
            azure_storage_connection_string=azurite.connection_string,
        )
    else:
        lake = LakeResource(url=str(tmp_path / "lake"))
    control = control_beside(lake, tmp_path)
    resources = {"source": SourceDatabase(url=url), "lake": lake, "control": control}
    for day in DAYS:
        result = dg.materialize(
            migration_assets,
            partition_key=day.isoformat(),
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
    return url, lake, resources


def _with_io_manager(resources: dict, lake: LakeResource) -> dict:
    return {**resources, LAKE_IO_MANAGER_KEY: LakeIOManager(lake=lake)}


def test_a_users_asset_reads_a_silver_partition_and_is_written_to_the_lake(migrated):
    url, lake, resources = migrated
    instance = dg.DagsterInstance.ephemeral()
    day = DAYS[1]
    result = dg.materialize(
        [*migration_assets, slow_calls, slow_calls_per_model],
        selection=[SLOW_CALLS, dg.AssetKey(["gold", "slow_calls_per_model"])],
        partition_key=day.isoformat(),
        resources=_with_io_manager(resources, lake),
        instance=instance,
    )
    assert result.success

    # Exactly the source's slow calls of that day (silver: valid rows), value by value.
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    with sa.create_engine(url).connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT interaction_id, model_name, latency_ms FROM llm_interactions "
                "WHERE latency_ms > :slow AND latency_ms <= 120000 "
                "AND model_name IN ('ollama', 'gemini', 'grok') "
                "AND timestamp >= :start AND timestamp < :end"
            ),
            {
                "slow": SLOW_MS,
                "start": start.strftime("%Y-%m-%d %H:%M:%S"),
                "end": (start + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
            },
        ).all()
    expected = {row.interaction_id: (row.model_name, row.latency_ms) for row in rows}
    assert expected, "the generated day has slow calls"
    location = lake_location(lake, SLOW_CALLS)
    written = open_table(location).to_pyarrow_table()
    assert set(pc.unique(written.column("date")).to_pylist()) == {day}
    assert {
        row["interaction_id"]: (row["model_name"], row["latency_ms"]) for row in written.to_pylist()
    } == expected

    # Written by the pipeline's writer: every file's SHA-256 is recorded and true.
    [materialization] = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == SLOW_CALLS
    ]
    recorded = materialization.metadata["sha256"].value
    files = current_files(open_table(location), None)
    assert {path for path, _ in files} == set(recorded)
    for path, _ in files:
        assert read_back_sha256(location, path)[0] == recorded[path]
    assert materialization.metadata["dagster/row_count"].value == len(expected)

    per_model = open_table(
        lake_location(lake, dg.AssetKey(["gold", "slow_calls_per_model"]))
    ).to_pyarrow_table()
    counts = dict(
        zip(per_model.column("model_name").to_pylist(), per_model.column("count_all").to_pylist())
    )
    models = [model for model, _ in expected.values()]
    assert counts == {model: models.count(model) for model in set(models)}

    # Re-running the day replaces its partition; another day's partition is left as it was.
    again = dg.materialize(
        [*migration_assets, slow_calls],
        selection=[SLOW_CALLS],
        partition_key=DAYS[0].isoformat(),
        resources=_with_io_manager(resources, lake),
        instance=instance,
    )
    assert again.success
    both = open_table(location).to_pyarrow_table()
    assert set(pc.unique(both.column("date")).to_pylist()) == set(DAYS)
    assert both.filter(pc.equal(both.column("date"), day)).num_rows == len(expected)


def test_the_pipelines_own_tables_are_refused_and_bad_types_named(migrated):
    _, lake, resources = migrated

    @dg.asset(
        key=["silver", "logs"], partitions_def=daily_partitions, io_manager_key=LAKE_IO_MANAGER_KEY
    )
    def overwrites_silver() -> pa.Table:
        return pa.table({"x": [1]})

    @dg.asset(
        key=["gold", "wants_pandas"],
        partitions_def=daily_partitions,
        io_manager_key=LAKE_IO_MANAGER_KEY,
        ins={
            "silver": dg.AssetIn(
                key=silver_key(LLM_INTERACTIONS), input_manager_key=LAKE_IO_MANAGER_KEY
            )
        },
    )
    def wants_pandas(silver: list) -> None:
        return None

    for asset, message in (
        (overwrites_silver, "silver/logs is written by the pipeline's own steps"),
        (wants_pandas, "annotate the parameter with one of them"),
    ):
        result = dg.materialize(
            [*migration_assets, asset] if asset is wants_pandas else [asset],
            selection=[asset.key],
            partition_key=DAYS[0].isoformat(),
            resources=_with_io_manager(resources, lake),
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert not result.success
        [failure] = result.get_step_failure_events()
        error, chain = failure.step_failure_data.error, []
        while error is not None:
            chain.append(error)
            error = error.cause
        [refusal] = [e for e in chain if e.cls_name == LakeIOError.__name__]
        assert message in refusal.message
    # The refused write left silver/logs as the pipeline wrote it.
    silver_logs = open_table(lake.location("silver", "logs")).to_pyarrow_table()
    assert "x" not in silver_logs.column_names and silver_logs.num_rows > 0
