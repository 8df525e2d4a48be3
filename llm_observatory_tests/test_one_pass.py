"""A day is read from the source once: bronze, silver, quarantine and gold come from that one
stream (assets/migration.py), never from the lake read back; a day whose rows repeat a key, and
a repair of silver alone, are built from bronze, where the latest version is chosen."""

import datetime as dt
import decimal
from pathlib import Path
from traceback import extract_stack

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable

from llm_observatory import reconcile as reconcile_module
from llm_observatory.assets import silver as silver_module
from llm_observatory.assets.migration import migration_asset, migration_assets
from llm_observatory.checks import quality as quality_module
from llm_observatory.checks import timestamps as timestamps_module
from llm_observatory.checks.day_profile import COMMITS_SEARCHED, recorded_profile
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.checks.quality import lake_rule_tally
from llm_observatory.checks.timestamps import lake_event_profile
from llm_observatory.io import delta_lake
from llm_observatory.layout import (
    DAILY_METRICS_KEY,
    bronze_location,
    daily_metrics_location,
    quarantine_location,
    silver_location,
)
from llm_observatory.reconcile import lake_hourly_fingerprints, reconcile_day
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS, LOGS
from llm_observatory.transform import dedup as dedup_module
from llm_observatory.transform import metrics as metrics_module
from llm_observatory.transform.metrics import (
    DAILY_METRICS_SCHEMA,
    DayMetrics,
    daily_metrics,
    day_metrics,
)
from llm_observatory_tests.helpers import control_beside, materialize_silver_alone

DAY = dt.date(2026, 11, 2)
DEFECTS = DefectRates(
    latency_null=0.03, unknown_model=0.03, model_null=0.02, invalid_json=0.03, missing_hour=None
)


@pytest.fixture
def source_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=600, seed=21, defects=DEFECTS)
    return url


def migrate(url: str, lake: LakeResource, assets=None, selection=None):
    return dg.materialize(
        assets or migration_assets,
        selection=selection,
        partition_key=DAY.isoformat(),
        resources={
            "source": SourceDatabase(url=url),
            "lake": lake,
            "control": control_beside(lake),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def rows_by_key(location, key: str, columns: list[str]) -> dict:
    table = DeltaTable(location.uri).to_pyarrow_table(columns=[key, *columns])
    return {row[key]: row for row in table.to_pylist()}


def source_rows(url: str, table: str, key: str) -> dict:
    with sa.create_engine(url).connect() as connection:
        result = connection.execute(sa.text(f"SELECT * FROM {table}"))  # noqa: S608 - test
        return {row[key]: row for row in result.mappings()}


def quarantined_rows(lake: LakeResource, table) -> int:
    uri = quarantine_location(lake, table).uri
    return DeltaTable(uri).to_pyarrow_table().num_rows if DeltaTable.is_deltatable(uri) else 0


def unreferenced_files(location) -> list[str]:
    """Data files in the table's folder that no version of its log ever added (the folders
    beginning with `_` hold the log and the evidence table, not the table's data)."""
    table = DeltaTable(location.uri)
    logged = set()
    for version in range(table.version() + 1):
        table.load_as_version(version)
        logged.update(table.file_uris())
    root = Path(location.uri)
    on_disk = {
        str(path)
        for path in root.rglob("*.parquet")
        if not any(part.startswith("_") for part in path.relative_to(root).parts)
    }
    return sorted(on_disk - {str(Path(uri.removeprefix("file://"))) for uri in logged})


def test_one_pass_reads_the_source_once_and_never_reads_the_lake_back(
    source_url, tmp_path, monkeypatch
):
    lake = LakeResource(url=str(tmp_path / "lake"))
    streams = []
    real_stream = SourceDatabase.stream_range

    def counted(self, described, start, end):
        streams.append(described.spec.name)
        yield from real_stream(self, described, start, end)

    def no_read_back(location, *args, **kwargs):
        raise AssertionError(f"{location.uri} was read back during the one pass")

    monkeypatch.setattr(SourceDatabase, "stream_range", counted)
    # Silver from bronze and gold from silver are the only readers of a layer's rows.
    monkeypatch.setattr(silver_module, "scan_partition", no_read_back)
    monkeypatch.setattr(dedup_module, "scan_partition", no_read_back)
    monkeypatch.setattr(metrics_module, "scan_partition", no_read_back)
    result = migrate(source_url, lake)
    assert result.success, result.get_step_failure_events()
    assert sorted(streams) == ["llm_interactions", "logs", "metadata"]

    # Every source row is in silver or quarantine, value by value, exactly once.
    source = source_rows(source_url, "llm_interactions", "interaction_id")
    columns = ["latency_ms", "model_name", "status", "cost_usd", "prompt_tokens"]
    silver = rows_by_key(silver_location(lake, LLM_INTERACTIONS), "interaction_id", columns)
    quarantined = rows_by_key(
        quarantine_location(lake, LLM_INTERACTIONS), "interaction_id", columns
    )
    assert quarantined and not set(silver) & set(quarantined)
    assert set(silver) | set(quarantined) == set(source)
    for key, row in silver.items():
        expected = source[key]
        assert row["latency_ms"] == expected["latency_ms"]
        assert row["model_name"] == expected["model_name"]
        assert row["prompt_tokens"] == expected["prompt_tokens"]
        assert row["cost_usd"] == decimal.Decimal(str(expected["cost_usd"])).quantize(
            row["cost_usd"]
        )

    # Gold from the stream equals gold computed from silver as committed.
    [gold_event] = [
        e.materialization
        for e in (ev.step_materialization_data for ev in result.get_asset_materialization_events())
        if e.materialization.asset_key == DAILY_METRICS_KEY
    ]
    assert gold_event.metadata["computed_from"].value == "the source stream"
    monkeypatch.undo()
    streamed = DeltaTable(daily_metrics_location(lake).uri).to_pyarrow_table().sort_by("model")
    recomputed, interactions = day_metrics(lake, DAY)
    assert interactions == len(silver)
    assert streamed.column("model").to_pylist() == recomputed.column("model").to_pylist()
    for name in DAILY_METRICS_SCHEMA.names[2:]:
        got, want = streamed.column(name).to_pylist(), recomputed.column(name).to_pylist()
        if DAILY_METRICS_SCHEMA.field(name).type == pa.float64():
            # A mean or percentile may differ in its last bits (another order of additions).
            assert got == pytest.approx(want, rel=1e-12), name
        else:  # counts, tokens and the decimal cost: exactly
            assert got == want, name
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_key_twice_in_the_day_builds_silver_from_bronze_with_the_latest_version(
    source_url, tmp_path
):
    """A source table without a primary key holds a key twice (a redelivery with a newer
    version): bronze keeps both rows, silver only the latest, chosen from bronze."""
    engine = sa.create_engine(source_url)
    with engine.begin() as connection:
        ddl = connection.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'logs'")
        ).scalar_one()
        without_key = ddl.replace("CONSTRAINT pk_logs PRIMARY KEY (log_id)", "").rstrip()
        without_key = without_key.rstrip(")").rstrip().rstrip(",") + "\n)"
        connection.execute(sa.text("ALTER TABLE logs RENAME TO logs_keyed"))
        connection.execute(sa.text(without_key))
        connection.execute(sa.text("INSERT INTO logs SELECT * FROM logs_keyed"))
        connection.execute(sa.text("DROP TABLE logs_keyed"))
        first = (
            connection.execute(sa.text("SELECT * FROM logs ORDER BY log_id LIMIT 1"))
            .mappings()
            .one()
        )
        newer = dict(first)
        newer["message"] = "redelivered, newer"
        newer["last_modified"] = "2026-11-30 00:00:00.000000"
        columns = ", ".join(newer)
        values = ", ".join(f":{name}" for name in newer)
        connection.execute(sa.text(f"INSERT INTO logs ({columns}) VALUES ({values})"), newer)

    lake = LakeResource(url=str(tmp_path / "lake"))
    result = migrate(source_url, lake, [migration_asset(LOGS)])
    assert result.success, result.get_step_failure_events()
    bronze = DeltaTable(bronze_location(lake, LOGS).uri).to_pyarrow_table()
    silver = DeltaTable(silver_location(lake, LOGS).uri).to_pyarrow_table()
    quarantined = quarantined_rows(lake, LOGS)
    keys = bronze.column("log_id").to_pylist()
    assert len(keys) == len(set(keys)) + 1
    assert silver.num_rows + quarantined == len(set(keys))
    [kept] = [row for row in silver.to_pylist() if row["log_id"] == first["log_id"]]
    assert kept["message"] == "redelivered, newer"
    assert all(e.passed for e in result.get_asset_check_evaluations())
    # Nothing the discarded same-pass writer uploaded stays behind.
    assert unreferenced_files(silver_location(lake, LOGS)) == []


def test_a_short_bronze_commits_no_silver_and_leaves_no_files(source_url, tmp_path, monkeypatch):
    lake = LakeResource(url=str(tmp_path / "lake"))
    assert migrate(source_url, lake).success
    silver = silver_location(lake, LLM_INTERACTIONS)
    silver_version = DeltaTable(silver.uri).version()
    real_stream = SourceDatabase.stream_range

    def loses_a_batch(self, described, start, end):
        for number, batch in enumerate(real_stream(self, described, start, end)):
            if number == 0 and described.spec.name == LLM_INTERACTIONS.name:
                batch = batch.slice(1)
            yield batch

    monkeypatch.setattr(SourceDatabase, "stream_range", loses_a_batch)
    result = migrate(source_url, lake, [migration_asset(LLM_INTERACTIONS)])
    assert not result.success
    assert DeltaTable(silver.uri).version() == silver_version
    assert unreferenced_files(silver) == []
    assert unreferenced_files(quarantine_location(lake, LLM_INTERACTIONS)) == []
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["bronze_rows_match_source"]


def test_a_silver_upload_that_does_not_read_back_is_built_again_from_bronze(
    source_url, tmp_path, monkeypatch
):
    lake = LakeResource(url=str(tmp_path / "lake"))
    real_read_back = delta_lake.read_back_sha256
    spoiled = []

    def spoils_silvers_first_file(location, relative_path):
        digest, size = real_read_back(location, relative_path)
        if "/silver/logs" in location.uri and not spoiled:
            spoiled.append(relative_path)
            return "0" * 64, size
        return digest, size

    monkeypatch.setattr(delta_lake, "read_back_sha256", spoils_silvers_first_file)
    result = migrate(source_url, lake, [migration_asset(LOGS)])
    assert result.success, result.get_step_failure_events()
    assert spoiled
    silver = DeltaTable(silver_location(lake, LOGS).uri).to_pyarrow_table()
    source = source_rows(source_url, "logs", "log_id")
    quarantined = quarantined_rows(lake, LOGS)
    assert silver.num_rows + quarantined == len(source)
    assert unreferenced_files(silver_location(lake, LOGS)) == []


def test_silver_alone_is_rebuilt_from_bronze_without_touching_the_source(source_url, tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"))
    assert migrate(source_url, lake).success
    silver = silver_location(lake, LOGS)
    before = sorted(DeltaTable(silver.uri).to_pyarrow_table().column("log_id").to_pylist())
    version = DeltaTable(silver.uri).version()
    # The stand-in source of materialize_silver_alone is an empty in-memory database: any
    # query on it would fail the run.
    result = materialize_silver_alone(LOGS, DAY, lake, control_beside(lake))
    assert result.success, result.get_step_failure_events()
    assert DeltaTable(silver.uri).version() > version
    after = sorted(DeltaTable(silver.uri).to_pyarrow_table().column("log_id").to_pylist())
    assert after == before
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey(["silver", "logs"])}


def test_an_error_routing_silver_commits_nothing(source_url, tmp_path, monkeypatch):
    """An error while silver is routed in the pass fails it before either layer is committed,
    and the files bronze and silver had written are deleted."""
    lake = LakeResource(url=str(tmp_path / "lake"))
    assert migrate(source_url, lake).success
    bronze, silver = (
        bronze_location(lake, LLM_INTERACTIONS),
        silver_location(lake, LLM_INTERACTIONS),
    )
    versions = (DeltaTable(bronze.uri).version(), DeltaTable(silver.uri).version())
    real_add = silver_module.DayValidator.add

    def fails_on_the_leg(self, batch, latest=None):
        if self.table.name == LLM_INTERACTIONS.name:
            raise RuntimeError("simulated: the silver leg failed")
        return real_add(self, batch, latest)

    monkeypatch.setattr(silver_module.DayValidator, "add", fails_on_the_leg)
    result = migrate(source_url, lake, [migration_asset(LLM_INTERACTIONS)])
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    assert "simulated: the silver leg failed" in error.to_string()
    assert (DeltaTable(bronze.uri).version(), DeltaTable(silver.uri).version()) == versions
    assert unreferenced_files(bronze) == [] and unreferenced_files(silver) == []


def test_streamed_metrics_spill_latencies_to_disk_and_stay_exact(monkeypatch):
    """A model's latencies past the memory cap go to a temporary file; the percentiles and the
    mean are those of every latency, as DuckDB's quantile_cont would give."""
    monkeypatch.setattr(metrics_module, "LATENCY_MEMORY_BYTES", 1024)  # 128 latencies
    rows = 5_000
    batch = pa.record_batch(
        {
            "model_name": [("gpt-4o", "claude-3-5-sonnet")[i % 2] for i in range(rows)],
            "status": [("success", "error", "timeout")[i % 3] for i in range(rows)],
            "latency_ms": [None if i % 97 == 0 else (i * 7919) % 30_000 for i in range(rows)],
            "prompt_tokens": [i % 500 for i in range(rows)],
            "completion_tokens": [i % 300 for i in range(rows)],
            "cost_usd": pa.array(
                [decimal.Decimal(i % 1000) / 1000 for i in range(rows)], pa.decimal128(12, 6)
            ),
        }
    )
    streamed = DayMetrics(DAY)
    for offset in range(0, rows, 250):
        streamed.add(batch.slice(offset, 250))
    assert all(metrics._spilled is not None for metrics in streamed.models.values())
    table, total = streamed.table()
    expected = daily_metrics(pl.from_arrow(pa.Table.from_batches([batch])), DAY)
    assert total == rows
    assert table.column("model").to_pylist() == expected.column("model").to_pylist()
    for name in DAILY_METRICS_SCHEMA.names[2:]:
        got, want = table.column(name).to_pylist(), expected.column(name).to_pylist()
        if isinstance(want[0], float):
            assert got == pytest.approx(want, rel=1e-12), name
        else:
            assert got == want, name


def test_bronze_and_gold_without_silver_build_gold_from_silver_as_it_is(source_url, tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"))
    assert migrate(source_url, lake).success
    result = migrate(
        source_url,
        lake,
        [migration_asset(LLM_INTERACTIONS)],
        selection=[dg.AssetKey(["bronze", "llm_interactions"]), DAILY_METRICS_KEY],
    )
    assert result.success, result.get_step_failure_events()
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey(["bronze", "llm_interactions"]), DAILY_METRICS_KEY}
    [gold] = [
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == DAILY_METRICS_KEY
    ]
    assert gold.metadata["computed_from"].value == "silver"


def test_each_check_step_reads_each_tables_log_once(source_url, tmp_path, monkeypatch):
    """The integrity checks of a day (checksums, timestamps, spot check, rules, reconciliation)
    share one opening of each table per step: every opening replays the log, which on ADLS is
    a listing, the last checkpoint and every commit since."""
    lake = LakeResource(url=str(tmp_path / "lake"))
    by_checks: dict[str, int] = {}

    class Counting(delta_lake.DeltaTable):
        def __init__(self, uri, *args, **kwargs):
            # Only the openings made by the check steps (the one pass opens its own to write).
            if any(frame.filename.endswith("checks/factory.py") for frame in extract_stack()):
                by_checks[uri] = by_checks.get(uri, 0) + 1
            super().__init__(uri, *args, **kwargs)

    monkeypatch.setattr(delta_lake, "DeltaTable", Counting)
    checks = [c for c in integrity_checks if "llm_interactions" in str(c.node_def.name)]
    result = migrate(source_url, lake, assets=[migration_asset(LLM_INTERACTIONS), *checks])
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 9
    assert all(e.passed for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR)
    bronze = bronze_location(lake, LLM_INTERACTIONS).uri
    silver = silver_location(lake, LLM_INTERACTIONS).uri
    # Two steps (bronze's checks, silver's): one opening of a table in each that reads it.
    assert by_checks[bronze] == 1 and by_checks[silver] == 1, by_checks
    assert max(by_checks.values()) == 1, by_checks


def test_checks_use_the_profile_recorded_with_the_commit_while_the_files_are_those_it_wrote(
    source_url, tmp_path, monkeypatch
):
    """The one pass records, with each commit, the hours, rows outside the day and (silver)
    the fingerprints of silver and quarantine; the checks use it instead of downloading the
    day again, and it equals what reading the files gives. Once the day's files change (here a
    row deleted from silver, then from quarantine), the profile is no longer used: the checks
    read the files and the reconciliation finds the row that is gone."""
    lake = LakeResource(url=str(tmp_path / "lake"))
    assert migrate(source_url, lake).success
    table = LLM_INTERACTIONS
    bronze, silver = bronze_location(lake, table), silver_location(lake, table)
    quarantine = quarantine_location(lake, table)
    for location in (bronze, silver):
        recorded = recorded_profile(table, location, DAY, quarantine)
        assert recorded is not None
        assert recorded.events == lake_event_profile(location, table, DAY)
    recorded = recorded_profile(table, silver, DAY, quarantine)
    assert sum(recorded.events[0]) == DeltaTable(silver.uri).to_pyarrow_table().num_rows
    assert recorded.fingerprints == lake_hourly_fingerprints(table, lake, DAY)
    assert recorded.rules.to_json() == lake_rule_tally(table, lake, DAY).to_json()
    assert recorded.rules.quarantined == quarantined_rows(lake, table) > 0
    assert sum(f.rows for f in recorded.fingerprints.values()) == 600
    # Silver's fingerprints need quarantine's day as the same pass committed it.
    assert recorded_profile(table, silver, DAY) is None

    def no_reading(location, *args, **kwargs):
        raise AssertionError(f"{location.uri} was read although its profile was recorded")

    checks = [c for c in integrity_checks if table.name in str(c.node_def.name)]
    monkeypatch.setattr(timestamps_module, "scan_partition", no_reading)
    monkeypatch.setattr(reconcile_module, "scan_partition", no_reading)
    monkeypatch.setattr(quality_module, "scan_partition", no_reading)
    result = migrate(source_url, lake, assets=[migration_asset(table), *checks])
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["reconciles_with_source"].passed
    assert evaluations["event_times_inside_partition_day"].passed
    assert evaluations["silver_rows_pass_every_rule"].passed
    monkeypatch.undo()

    gone = DeltaTable(silver.uri).to_pyarrow_table(columns=[table.key]).column(0)[0].as_py()
    DeltaTable(silver.uri).delete(f"{table.key} = '{gone}'")
    assert recorded_profile(table, silver, DAY, quarantine) is None
    assert recorded_profile(table, bronze, DAY) is not None
    reconciliation = reconcile_day(table, SourceDatabase(url=source_url), lake, DAY)
    assert not reconciliation.matches
    assert [d.key for d in reconciliation.differences] == [gone]

    assert migrate(source_url, lake).success  # the day written again, profile and all
    assert recorded_profile(table, silver, DAY, quarantine) is not None
    quarantined_keys = DeltaTable(quarantine.uri).to_pyarrow_table(columns=[table.key])
    DeltaTable(quarantine.uri).delete(f"{table.key} = '{quarantined_keys.column(0)[0]}'")
    assert recorded_profile(table, silver, DAY, quarantine) is None


def test_a_profile_is_found_behind_other_days_commits_and_not_beyond_the_search(
    source_url, tmp_path
):
    """Runs of other days commit to the same table between a day's pass and its checks (a
    parallel backfill): the day's profile is found behind a few of them; behind more than the
    search reaches, the checks read the files (a profile is never guessed)."""
    lake = LakeResource(url=str(tmp_path / "lake"))
    assert migrate(source_url, lake).success
    table = LLM_INTERACTIONS
    bronze = bronze_location(lake, table)
    schema = DeltaTable(bronze.uri).schema().to_arrow()

    def other_day_commits(count: int) -> None:
        for n in range(count):
            other = DAY + dt.timedelta(days=1 + n)
            writer = delta_lake.DeltaPartitionWriter(
                bronze, pa.schema(schema), ["date"], replace=[("date", "=", other.isoformat())]
            )
            writer.commit({"partition": other.isoformat()})

    other_day_commits(3)
    assert recorded_profile(table, bronze, DAY) is not None
    other_day_commits(COMMITS_SEARCHED[-1])
    assert recorded_profile(table, bronze, DAY) is None
