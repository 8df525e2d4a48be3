"""Incremental cycles against a live-changing source (SQLite and PostgreSQL): updates to old
rows, new rows, late commits and deletes reach the lake; re-running changes nothing; a failure at
any step leaves the watermark and the lake as they were, and the next cycle converges."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import time
import uuid
from collections import defaultdict
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable

from llm_observatory.assets.migration import migration_asset, migration_assets
from llm_observatory.incremental import cycle as cycle_module
from llm_observatory.incremental.cycle import SyncSettings, run_cycle
from llm_observatory.io import delta_lake
from llm_observatory.layout import (
    daily_metrics_location,
    deleted_location,
    lake_locations,
    quarantine_location,
    silver_key,
    silver_location,
)
from llm_observatory.quality import rule_violations
from llm_observatory.resources.control import COMPLETED, FAILED, STARTED, ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.leases import LeaseHeldError, Leases, sync_resource
from llm_observatory.resources.source import SourceDatabase, SourceError
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS, TABLES
from llm_observatory.transform.metrics import daily_metrics

START = dt.date(2026, 11, 1)
DAYS = 3
ROWS_PER_DAY = 150
HISTORY_ASSETS = migration_assets
DEFECTS = DefectRates(
    latency_null=0.02,
    latency_out_of_range=0.02,
    unknown_model=0.02,
    model_null=0.01,
    invalid_json=0.03,
    missing_hour=None,
)
# Every cycle in these tests re-proves every day.
EVERY_DAY = SyncSettings(reconcile_recent_days=1, rotation_period_days=1, first_day=START)


class Migration:
    """A source, a backfilled lake and a control database, with helpers to change the source."""

    def __init__(self, source_url: str, folder) -> None:
        self.url = source_url
        self.source = SourceDatabase(url=source_url)
        self.lake = LakeResource(url=str(folder / "lake"))
        self.control = ControlDatabase(url=f"sqlite:///{folder / 'control.sqlite'}")
        self.engine = sa.create_engine(source_url)
        self.meta = sa.MetaData()
        self.meta.reflect(self.engine)

    def backfill(self, start: dt.date = START, days: int = DAYS) -> None:
        """Bronze, silver and gold of every day, with their checks, as a backfill runs them."""
        instance = dg.DagsterInstance.ephemeral()
        for offset in range(days):
            result = dg.materialize(
                HISTORY_ASSETS,
                partition_key=(start + dt.timedelta(days=offset)).isoformat(),
                resources={"source": self.source, "lake": self.lake, "control": self.control},
                instance=instance,
            )
            assert result.success

    def cycle(self, table=LLM_INTERACTIONS, settings=EVERY_DAY, **kwargs):
        return run_cycle(table, self.source, self.lake, self.control, settings, **kwargs)

    def source_now(self) -> dt.datetime:
        """The source's newest change plus a second: 'now' as the source's clock has it."""
        newest = self.source.latest_change(self.source.describe_table(LLM_INTERACTIONS))
        return newest + dt.timedelta(seconds=1)

    def execute(self, statement) -> None:
        with self.engine.begin() as connection:
            connection.execute(statement)

    def interactions(self) -> sa.Table:
        return self.meta.tables["llm_interactions"]

    def source_rows(self, table_name: str) -> dict:
        table = self.meta.tables[table_name]
        key = {t.name: t.key for t in TABLES}[table_name]
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(table)).mappings().all()
        return {row[key]: _normal(dict(row)) for row in rows}

    def lake_state(self) -> dict:
        """Every lake table of the interactions, as sorted rows: for 'nothing changed' (a table
        that does not exist holds no rows, like an empty one)."""
        state = {}
        for name, location in lake_locations(self.lake, LLM_INTERACTIONS).items():
            table = delta_lake.open_table(location)
            if table is None:
                state[name] = []
                continue
            rows = table.to_pyarrow_table().to_pylist()
            state[name] = sorted(json.dumps(row, default=str, sort_keys=True) for row in rows)
        return state

    def versions(self) -> dict:
        return {
            name: delta_lake.table_version(location)
            for name, location in lake_locations(self.lake, LLM_INTERACTIONS).items()
        }


def _normal(row: dict) -> dict:
    return {
        name: (
            (value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC))
            if isinstance(value, dt.datetime)
            else value
        )
        for name, value in row.items()
    }


def read_all(location) -> list[dict]:
    return _delta(location).to_pyarrow_table().to_pylist()


def _delta(location) -> DeltaTable:
    """The table at a lake location, local or on Azurite."""
    return DeltaTable(location.uri, storage_options=location.storage_options or None)


def _lake_rows(location, key: str) -> dict:
    if delta_lake.open_table(location) is None:
        return {}  # a table with nothing to quarantine may have no _quarantine table
    rows = read_all(location)
    keyed = {row[key]: row for row in rows}
    assert len(keyed) == len(rows), "a key appears twice"
    return keyed


def _passes_rules(row: dict, table) -> bool:
    import pyarrow as pa

    for rule in table.rules:
        values = pa.array([row[rule.column]])
        if rule.kind == "range" and isinstance(row[rule.column], Decimal):
            values = pa.array([row[rule.column]], pa.decimal128(12, 6))
        if rule_violations(rule, values).to_pylist()[0]:
            return False
    return True


def assert_lake_matches_source(migration: Migration, table=LLM_INTERACTIONS) -> None:
    """Silver holds exactly the passing source rows and quarantine the others, value by value;
    gold equals metrics recomputed from the source."""
    source = migration.source_rows(table.name)
    silver = _lake_rows(silver_location(migration.lake, table), table.key)
    quarantined = _lake_rows(quarantine_location(migration.lake, table), table.key)
    assert not set(silver) & set(quarantined)
    assert set(silver) | set(quarantined) == set(source)
    for key, row in source.items():
        lake_row = silver.get(key) or quarantined[key]
        assert (key in silver) == _passes_rules(row, table), key
        for column, value in row.items():
            assert lake_row[column] == value, (key, column, lake_row[column], value)
        assert lake_row["date"] == row[table.event_time].date()
    if table is LLM_INTERACTIONS:
        by_day = defaultdict(list)
        for key in silver:
            by_day[source[key]["timestamp"].date()].append(source[key])
        gold = _delta(daily_metrics_location(migration.lake)).to_pyarrow_table()
        for day, rows in by_day.items():
            expected = daily_metrics(pl.DataFrame(rows, infer_schema_length=None), day)
            lake_day = [r for r in gold.to_pylist() if r["date"] == day]
            assert sorted(lake_day, key=lambda r: r["model"]) == expected.to_pylist(), day
        assert {r["date"] for r in gold.to_pylist()} == set(by_day)


@pytest.fixture(params=["sqlite", "postgresql"])
def migration(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    generate_source(
        url, start_date=START, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=5, defects=DEFECTS
    )
    migration = Migration(url, tmp_path)
    migration.backfill()
    yield migration
    migration.engine.dispose()


def test_changes_reach_silver_and_gold_and_rerunning_changes_nothing(migration):
    first = migration.cycle()
    assert first.changes.upserted_rows == 0 and first.days_changed == []
    assert_lake_matches_source(migration)
    interactions = migration.interactions()
    now = migration.source_now()
    with migration.engine.connect() as connection:
        keys = (
            connection.execute(
                sa.select(interactions.c.interaction_id).order_by(interactions.c.interaction_id)
            )
            .scalars()
            .all()
        )
    # Old rows corrected: a latency, a model (moves model partition), an event time (moves day),
    # a row fixed so that it now passes the rules, and a row broken so that it is quarantined.
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[0])
        .values(latency_ms=4321, last_modified=now)
    )
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[1])
        .values(model_name="grok", latency_ms=10, last_modified=now)
    )
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[2])
        .values(
            timestamp=dt.datetime(2026, 11, 3, 5, 6, 7, 123456, tzinfo=dt.UTC),
            last_modified=now,
        )
    )
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[3])
        .values(latency_ms=None, last_modified=now)
    )
    new_key = str(uuid.uuid4())
    migration.execute(
        sa.insert(interactions).values(
            interaction_id=new_key,
            timestamp=now - dt.timedelta(seconds=1),
            model_name="gemini",
            latency_ms=250,
            prompt="héllo ✓",
            response="réponse",
            prompt_tokens=3,
            completion_tokens=4,
            status="success",
            cost_usd=Decimal("0.001234"),
            user_id="u",
            session_id="s",
            last_modified=now,
        )
    )
    migration.execute(sa.delete(interactions).where(interactions.c.interaction_id == keys[4]))
    # A correction that dates a row months back: a day the lake never had.
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[5])
        .values(
            timestamp=dt.datetime(2026, 8, 15, 23, 59, 59, 999999, tzinfo=dt.UTC),
            last_modified=now,
        )
    )

    second = migration.cycle()
    assert second.changes.upserted_rows == 6
    assert "2026-08-15" in second.days_changed
    assert second.deleted_keys == 1
    assert_lake_matches_source(migration)
    deleted = read_all(deleted_location(migration.lake, LLM_INTERACTIONS))
    assert [row["interaction_id"] for row in deleted] == [keys[4]]
    row = migration.control.completed_watermark("llm_interactions")
    assert row.id == second.cycle_id and row.status == COMPLETED
    assert row.last_extracted_timestamp == now

    # A transaction that began before the last cycle's high-water mark and committed after it:
    # its last_modified is older than the watermark, inside the overlap.
    late_key = str(uuid.uuid4())
    migration.execute(
        sa.insert(interactions).values(
            interaction_id=late_key,
            timestamp=now - dt.timedelta(minutes=3),
            model_name="ollama",
            latency_ms=99,
            status="success",
            last_modified=now - dt.timedelta(minutes=2),
        )
    )
    third = migration.cycle()
    silver = _lake_rows(silver_location(migration.lake, LLM_INTERACTIONS), "interaction_id")
    assert late_key in silver
    assert third.changes.upserted_rows == 1
    assert_lake_matches_source(migration)

    before = migration.versions()
    fourth = migration.cycle()
    assert fourth.changes.upserted_rows == 0 and fourth.rows_extracted >= 1
    assert migration.versions() == before


def change_some_rows(migration: Migration) -> dict:
    """An update of an old row, a new row and a delete: work for a cycle that then fails."""
    interactions = migration.interactions()
    now = migration.source_now()
    with migration.engine.connect() as connection:
        keys = (
            connection.execute(
                sa.select(interactions.c.interaction_id).order_by(interactions.c.interaction_id)
            )
            .scalars()
            .all()
        )
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[10])
        .values(latency_ms=777, status="timeout", last_modified=now)
    )
    migration.execute(
        sa.insert(interactions).values(
            interaction_id=str(uuid.uuid4()),
            timestamp=now,
            model_name="ollama",
            latency_ms=5,
            status="success",
            last_modified=now,
        )
    )
    migration.execute(sa.delete(interactions).where(interactions.c.interaction_id == keys[11]))
    return {"updated": keys[10], "deleted": keys[11]}


def assert_failed_cycle_changed_nothing(migration: Migration, before: dict, watermark) -> None:
    latest = migration.control.latest_cycle("llm_interactions")
    assert latest.status == FAILED and latest.error_message
    in_force = migration.control.completed_watermark("llm_interactions")
    assert in_force.id == watermark.id
    assert migration.lake_state() == before


def test_source_down_mid_read_leaves_watermark_and_lake_and_next_cycle_converges(
    migration, monkeypatch
):
    watermark = migration.cycle()
    watermark = migration.control.completed_watermark("llm_interactions")
    change_some_rows(migration)
    before = migration.lake_state()
    real_stream = SourceDatabase.stream_changes

    def dies_after_first_batch(self, *args, **kwargs):
        for batch in real_stream(self, *args, **kwargs):
            yield batch
            raise SourceError("source database at db:1433 (mssql): connection reset by peer")

    monkeypatch.setattr(SourceDatabase, "stream_changes", dies_after_first_batch)
    with pytest.raises(SourceError):
        migration.cycle()
    assert "connection reset" in migration.control.latest_cycle("llm_interactions").error_message
    assert_failed_cycle_changed_nothing(migration, before, watermark)

    monkeypatch.setattr(SourceDatabase, "stream_changes", real_stream)
    migration.cycle()
    assert_lake_matches_source(migration)


@pytest.mark.parametrize("failing_layer", ["silver", "gold", "deleted"])
def test_lake_write_failing_is_undone_and_next_cycle_converges(
    migration, monkeypatch, failing_layer
):
    migration.cycle()
    watermark = migration.control.completed_watermark("llm_interactions")
    change_some_rows(migration)
    before = migration.lake_state()
    failing = lake_locations(migration.lake, LLM_INTERACTIONS)[failing_layer].uri
    real_commit = delta_lake.DeltaPartitionWriter.commit

    def commit(self, custom_metadata=None):
        if self.location.uri == failing:
            self.abort()
            raise delta_lake.LakeWriteError(f"injected: storage refused {failing}")
        return real_commit(self, custom_metadata)

    monkeypatch.setattr(delta_lake.DeltaPartitionWriter, "commit", commit)
    with pytest.raises(delta_lake.LakeWriteError):
        migration.cycle()
    assert_failed_cycle_changed_nothing(migration, before, watermark)
    assert "undone" in migration.control.latest_cycle("llm_interactions").error_message

    monkeypatch.setattr(delta_lake.DeltaPartitionWriter, "commit", real_commit)
    migration.cycle()
    assert_lake_matches_source(migration)


def _crash_before_completed(source_url: str, folder: str) -> None:
    """Runs in a child process: a cycle whose process dies right before COMPLETED."""
    from pathlib import Path

    def die(*_args, **_kwargs):
        os._exit(17)

    ControlDatabase.complete_cycle = die
    Migration(source_url, Path(folder)).cycle(run_id="run-that-dies")


def test_crash_before_completed_is_undone_by_the_next_cycle(migration, tmp_path, monkeypatch):
    migration.cycle()
    watermark = migration.control.completed_watermark("llm_interactions")
    changed = change_some_rows(migration)
    before = migration.lake_state()

    child = multiprocessing.get_context("spawn").Process(
        target=_crash_before_completed, args=(migration.url, str(tmp_path))
    )
    child.start()
    child.join(timeout=300)
    assert child.exitcode == 17
    crashed = migration.control.latest_cycle("llm_interactions")
    assert crashed.status == STARTED and crashed.run_id == "run-that-dies"
    assert migration.control.completed_watermark("llm_interactions").id == watermark.id
    # The dead cycle had committed its merge: the lake is ahead of the watermark.
    assert migration.lake_state() != before

    # The next cycle first undoes the dead one (then, here, fails at once: source down), so
    # the lake is exactly as before the crash.
    def source_down(self, *_args, **_kwargs):
        raise SourceError("source database at db:1433 (mssql): login timeout")

    monkeypatch.setattr(SourceDatabase, "latest_change", source_down)
    with pytest.raises(SourceError):
        migration.cycle()
    assert migration.lake_state() == before
    cycles = migration.control.cycles("llm_interactions", limit=2)
    assert [c.status for c in cycles] == [FAILED, FAILED]
    assert "abandoned" in cycles[1].error_message

    monkeypatch.undo()
    result = migration.cycle()
    assert result.changes.upserted_rows == 2 and result.deleted_keys == 1
    silver = _lake_rows(silver_location(migration.lake, LLM_INTERACTIONS), "interaction_id")
    assert silver[changed["updated"]]["latency_ms"] == 777
    assert changed["deleted"] not in silver
    assert_lake_matches_source(migration)


def test_a_running_cycle_is_not_disturbed(migration):
    """A cycle whose holder is alive (here: this process, under another owner) is neither
    joined nor undone: the second is refused at once, naming the holder."""
    migration.cycle()
    with Leases(migration.control, "sync of llm_interactions (run live-run)") as live:
        live.take([sync_resource("llm_interactions")])
        started = migration.control.start_cycle("llm_interactions", None, "live-run", {})
        with pytest.raises(cycle_module.CycleInProgressError, match="run live-run"):
            migration.cycle()
    assert migration.control.latest_cycle("llm_interactions").id == started
    assert migration.control.latest_cycle("llm_interactions").status == STARTED


# ------------------------------------------------------------------ Dagster: job, sensor, schedule


def test_sync_job_records_a_cycle_per_table_with_watermark_metadata(migration):
    from llm_observatory.assets.sync import sync_assets, sync_op_name

    change_some_rows(migration)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        sync_assets,
        resources={
            "source": migration.source,
            "lake": migration.lake,
            "control": migration.control,
        },
        instance=instance,
        run_config={
            "ops": {
                sync_op_name(table): {
                    "config": {"reconcile_recent_days": 1, "rotation_period_days": 1}
                }
                for table in TABLES
            }
        },
    )
    assert result.success
    by_table = {
        event.asset_key.path[-1]: event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert set(by_table) == {table.name for table in TABLES}
    interactions = by_table["llm_interactions"]
    assert interactions["changes_upserted_rows"].value >= 2
    assert interactions["lag_seconds"].value == 0
    assert interactions["deleted_keys"].value == 1
    assert len(interactions["days_reconciled"].value) == 4
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(check.passed for check in checks)
    for table in TABLES:
        row = migration.control.completed_watermark(table.name)
        assert row is not None and row.run_id == result.run_id
    assert_lake_matches_source(migration)


def test_sensor_requests_a_run_only_when_the_source_moved(migration):
    from llm_observatory.automation import source_changes_sensor

    instance = dg.DagsterInstance.ephemeral()

    def evaluate(cursor):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"source": migration.source}
        )
        return source_changes_sensor(context), context.cursor

    first, cursor = evaluate(None)
    assert isinstance(first, dg.RunRequest)
    assert {key.path[-1] for key in first.asset_selection} == {t.name for t in TABLES}
    unchanged, same_cursor = evaluate(cursor)
    assert isinstance(unchanged, dg.SkipReason) and same_cursor == cursor

    change_some_rows(migration)
    moved, new_cursor = evaluate(cursor)
    assert isinstance(moved, dg.RunRequest)
    assert [key.path[-1] for key in moved.asset_selection] == ["llm_interactions"]
    assert moved.run_key != first.run_key
    config = moved.run_config["ops"]["sync__llm_interactions"]["config"]
    assert config["reconcile_recent_days"] == 0
    again, _ = evaluate(new_cursor)
    assert isinstance(again, dg.SkipReason)


def test_schedule_runs_the_closed_day_and_a_full_cycle_at_2200_utc():
    from llm_observatory.automation import DAILY_CYCLE_JOB, daily_sync_schedule
    from llm_observatory.definitions import defs

    assert daily_sync_schedule.cron_schedule == "0 22 * * *"
    assert daily_sync_schedule.execution_timezone == "UTC"
    assert daily_sync_schedule.job_name == DAILY_CYCLE_JOB
    moment = dt.datetime(2026, 11, 24, 22, 0, tzinfo=dt.UTC)
    request = daily_sync_schedule(dg.build_schedule_context(scheduled_execution_time=moment))
    assert request.partition_key == "2026-11-23"
    assert request.run_key == "daily-2026-11-23"
    job = defs.resolve_job_def(DAILY_CYCLE_JOB)
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    for table in TABLES:
        assert {f"bronze/{table.name}", f"silver/{table.name}", f"sync/{table.name}"} <= selected
    assert "gold/daily_metrics" in selected
    too_early = daily_sync_schedule(
        dg.build_schedule_context(scheduled_execution_time=dt.datetime(2020, 1, 1, 22))
    )
    assert isinstance(too_early, dg.SkipReason)


def test_updates_stamped_by_the_source_trigger_are_captured(postgres_url, tmp_path):
    """With `sql/prepare_source_postgresql.sql` applied, an application's UPDATE that does not
    touch last_modified is still seen: the trigger stamps it with the source's clock."""
    from pathlib import Path

    from llm_observatory.sql_scripts import apply_script

    generate_source(
        postgres_url, start_date=START, days=1, rows_per_day=60, seed=3, defects=DEFECTS
    )
    engine = sa.create_engine(postgres_url)
    script = Path(__file__).resolve().parents[1] / "sql" / "prepare_source_postgresql.sql"
    apply_script(engine, script.read_text())
    apply_script(engine, script.read_text())  # idempotent
    engine.dispose()
    migration = Migration(postgres_url, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(
        HISTORY_ASSETS,
        partition_key=START.isoformat(),
        resources={
            "source": migration.source,
            "lake": migration.lake,
            "control": migration.control,
        },
        instance=instance,
    ).success
    migration.cycle()
    interactions = migration.interactions()
    with migration.engine.connect() as connection:
        key = connection.execute(sa.select(sa.func.min(interactions.c.interaction_id))).scalar()
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == key)
        .values(response="corrected by the application")
    )
    result = migration.cycle()
    assert result.changes.upserted_rows == 1
    silver = _lake_rows(silver_location(migration.lake, LLM_INTERACTIONS), "interaction_id")
    quarantine = quarantine_location(migration.lake, LLM_INTERACTIONS)
    quarantined = _lake_rows(quarantine, "interaction_id")
    lake_row = {**silver, **quarantined}[key]
    assert lake_row["response"] == "corrected by the application"
    watermark = migration.control.completed_watermark("llm_interactions")
    assert watermark.last_extracted_timestamp == lake_row["last_modified"]
    assert watermark.last_extracted_timestamp > dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    migration.engine.dispose()


@pytest.mark.parametrize("level", ["SNAPSHOT", "READ UNCOMMITTED", "nolock"])
def test_reads_at_a_configured_isolation_level_stream_every_row(postgres_url, level):
    generate_source(
        postgres_url, start_date=START, days=1, rows_per_day=80, seed=9, defects=DEFECTS
    )
    plain = SourceDatabase(url=postgres_url)
    isolated = SourceDatabase(url=postgres_url, isolation_level=level)
    described = plain.describe_table(LLM_INTERACTIONS)
    start = dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)

    def keys(source, batches):
        return sorted(key for batch in batches for key in batch.column(0).to_pylist())

    expected = keys(plain, plain.stream_range(described, start, end))
    assert len(expected) == 80
    assert keys(isolated, isolated.stream_range(described, start, end)) == expected
    high_water = isolated.latest_change(described)
    assert keys(isolated, isolated.stream_changes(described, None, high_water)) == expected
    plain.dispose()
    isolated.dispose()


def test_a_concurrent_rewrite_makes_the_cycle_fail_safely_and_the_next_converge(
    migration, monkeypatch
):
    """A backfill run rewrites a day of silver after a cycle read the lake's versions but
    before it leased the days it merges: the cycle's commits, made against the versions it
    read, are refused; what it had committed is undone, the backfill's rewrite stays, and the
    next cycle converges."""
    from llm_observatory.incremental import merge

    migration.cycle()
    watermark = migration.control.completed_watermark("llm_interactions")
    change_some_rows(migration)
    real_lake_versions = merge.lake_versions_of
    rewritten = []

    def backfill_before_the_days_are_leased(*args, **kwargs):
        if not rewritten:
            day = START.isoformat()
            result = dg.materialize(
                [migration_asset(LLM_INTERACTIONS)],
                selection=[silver_key(LLM_INTERACTIONS)],
                partition_key=day,
                resources={
                    "source": migration.source,
                    "lake": migration.lake,
                    "control": migration.control,
                },
                instance=dg.DagsterInstance.ephemeral(),
            )
            assert result.success
            rewritten.append(day)
        return real_lake_versions(*args, **kwargs)

    monkeypatch.setattr(merge, "lake_versions_of", backfill_before_the_days_are_leased)
    silver_version = delta_lake.table_version(silver_location(migration.lake, LLM_INTERACTIONS))
    with pytest.raises(delta_lake.LakeWriteError, match="changed since version"):
        migration.cycle()
    assert migration.control.completed_watermark("llm_interactions").id == watermark.id
    # The backfill's silver commit is the newest content of silver; nothing of the cycle's.
    silver = delta_lake.open_table(silver_location(migration.lake, LLM_INTERACTIONS))
    assert silver.version() == silver_version + 1
    assert "cycle_id" not in json.dumps(silver.history(1)[0])

    monkeypatch.setattr(merge, "lake_versions_of", real_lake_versions)
    migration.cycle()
    assert_lake_matches_source(migration)


@pytest.mark.parametrize("streams", [2, 4, 30])
def test_a_day_read_in_parallel_streams_gives_every_row_once(postgres_url, tmp_path, streams):
    generate_source(
        postgres_url, start_date=START, days=1, rows_per_day=500, seed=12, defects=DEFECTS
    )
    sqlite_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(sqlite_url, start_date=START, days=1, rows_per_day=500, seed=12)
    start = dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    for url in (postgres_url, sqlite_url):
        one = SourceDatabase(url=url)
        many = SourceDatabase(url=url, streams=streams)
        described = one.describe_table(LLM_INTERACTIONS)

        def rows(source, described=described):
            return sorted(
                json.dumps(row, default=str, sort_keys=True)
                for batch in source.stream_range(described, start, end)
                for row in batch.to_pylist()
            )

        expected = rows(one)
        assert len(expected) == 500
        assert rows(many) == expected
        one.dispose()
        many.dispose()


def test_an_error_in_one_parallel_stream_reaches_the_reader(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=START, days=1, rows_per_day=100, seed=12)
    source = SourceDatabase(url=url, streams=3)
    described = source.describe_table(LLM_INTERACTIONS)
    real = SourceDatabase._stream_sqlalchemy
    calls = []

    def second_stream_fails(self, queries, schema):
        calls.append(1)
        if len(calls) == 2:
            raise SourceError("source database at db:1433 (mssql): stream 2 lost its connection")
        yield from real(self, queries, schema)

    monkeypatch.setattr(SourceDatabase, "_stream_sqlalchemy", second_stream_fails)
    start = dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC)
    with pytest.raises(SourceError, match="stream 2"):
        list(source.stream_range(described, start, start + dt.timedelta(days=1)))


# ------------------------------------------- a backfill and a sync meeting on one day (issue 12)


def _backfill_day(migration: Migration, day: dt.date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        HISTORY_ASSETS,
        partition_key=day.isoformat(),
        resources={
            "source": migration.source,
            "lake": migration.lake,
            "control": migration.control,
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_backfill_and_a_sync_of_one_day_at_once_end_equal_to_the_source(migration):
    """A sensor fires during a UI backfill: both touch the same day, again and again. Each
    either completes or is refused cleanly (the day's lease names the holder); after the loser
    is re-run, the lake equals the source every time."""
    import threading

    migration.cycle()
    interactions = migration.interactions()
    for round_number in range(4):
        now = migration.source_now()
        with migration.engine.connect() as connection:
            keys = (
                connection.execute(
                    sa.select(interactions.c.interaction_id)
                    .where(interactions.c.timestamp < dt.datetime(2026, 11, 2))
                    .order_by(interactions.c.interaction_id)
                    .limit(3)
                    .offset(round_number * 3)
                )
                .scalars()
                .all()
            )
        migration.execute(
            sa.update(interactions)
            .where(interactions.c.interaction_id.in_(keys))
            .values(latency_ms=1000 + round_number, last_modified=now)
        )
        outcomes: dict[str, object] = {}

        def backfill(outcomes=outcomes):
            outcomes["backfill"] = _backfill_day(migration, START)

        def sync(outcomes=outcomes):
            try:
                outcomes["sync"] = migration.cycle()
            except Exception as error:  # noqa: BLE001 - the loser's error is the outcome
                outcomes["sync"] = error

        threads = [threading.Thread(target=backfill), threading.Thread(target=sync)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        backfilled, synced = outcomes["backfill"], outcomes["sync"]
        if not backfilled.success:
            failure = backfilled.get_step_failure_events()[0].event_specific_data.error.message
            assert "another run is writing this day" in failure, failure
            assert _backfill_day(migration, START).success
        if isinstance(synced, Exception):
            # Refused, naming the holder: the cycle's lease, a day's lease (taken at the same
            # moment by the backfill: "was just taken by"), or a commit against a newer version.
            assert isinstance(
                synced,
                (cycle_module.CycleInProgressError, delta_lake.LakeWriteError, LeaseHeldError),
            ) or "held by" in str(synced), synced
            migration.cycle()
        assert_lake_matches_source(migration)


def test_a_completed_update_that_reached_the_database_is_not_undone(migration, monkeypatch):
    """The COMPLETED update lands but the client sees an error (a connection dropped on the
    reply): the watermark moved, so the lake commits stand."""
    migration.cycle()
    changed = change_some_rows(migration)
    real_complete = ControlDatabase.complete_cycle

    def completes_then_connection_drops(self, *args, **kwargs):
        real_complete(self, *args, **kwargs)
        raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(ControlDatabase, "complete_cycle", completes_then_connection_drops)
    result = migration.cycle()
    monkeypatch.undo()
    assert migration.control.latest_cycle("llm_interactions").status == COMPLETED
    assert result.changes.upserted_rows == 2
    silver = _lake_rows(silver_location(migration.lake, LLM_INTERACTIONS), "interaction_id")
    assert silver[changed["updated"]]["latency_ms"] == 777
    assert_lake_matches_source(migration)
    assert migration.cycle().changes.upserted_rows == 0


def _crash_on_another_host(source_url: str, folder: str) -> None:
    """Runs in a child process: a cycle of a worker on another machine that dies before
    COMPLETED (this host cannot see that its process is gone)."""
    import socket
    from pathlib import Path

    socket.gethostname = lambda: "db-worker-2"

    def die(*_args, **_kwargs):
        os._exit(17)

    ControlDatabase.complete_cycle = die
    migration = Migration(source_url, Path(folder))
    migration.control = ControlDatabase(url=migration.control.url, lease_seconds=4)
    migration.cycle(run_id="run-on-worker-2")


def test_a_cycle_killed_on_another_host_is_undone_only_after_its_lease_expires(migration):
    migration.cycle()
    watermark = migration.control.completed_watermark("llm_interactions")
    change_some_rows(migration)
    child = multiprocessing.get_context("spawn").Process(
        target=_crash_on_another_host, args=(migration.url, str(migration_folder(migration)))
    )
    child.start()
    child.join(timeout=300)
    assert child.exitcode == 17
    crashed = migration.control.latest_cycle("llm_interactions")
    assert crashed.status == STARTED
    # Its lease is live for a few seconds: the next cycle is refused, nothing undone.
    with pytest.raises(cycle_module.CycleInProgressError, match="db-worker-2"):
        migration.cycle()
    assert migration.control.latest_cycle("llm_interactions").status == STARTED
    deadline = time.monotonic() + 30
    while True:
        try:
            result = migration.cycle()
            break
        except cycle_module.CycleInProgressError:
            assert time.monotonic() < deadline, "the dead worker's lease never expired"
            time.sleep(0.5)
    assert result.abandoned_cycles_undone == [crashed.id]
    assert migration.control.completed_watermark("llm_interactions").id != watermark.id
    assert_lake_matches_source(migration)


def migration_folder(migration: Migration):
    from pathlib import Path

    return Path(migration.control.url.removeprefix("sqlite:///")).parent


def _sync_in_its_own_instance(source_url: str, folder: str, home: str, queue) -> None:
    """Runs in a child process: the sync job of a Dagster instance of its own (its own
    DAGSTER_HOME), sharing only the control database and the lake with the other."""
    import traceback
    from pathlib import Path

    from llm_observatory.assets.sync import sync_assets

    try:
        migration = Migration(source_url, Path(folder))
        Path(home).mkdir(parents=True, exist_ok=True)
        with dg.DagsterInstance.local_temp(home) as instance:
            result = dg.materialize(
                sync_assets,
                resources={
                    "source": migration.source,
                    "lake": migration.lake,
                    "control": migration.control,
                },
                instance=instance,
                raise_on_error=False,
            )
            errors = [
                event.event_specific_data.error.to_string()
                for event in result.get_step_failure_events()
            ]
        queue.put((result.success, errors))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put((False, [traceback.format_exc()]))


def test_two_instances_sharing_one_control_database_both_syncing(migration, tmp_path):
    """The deployed daemon and a terminal with its own DAGSTER_HOME sync at once, again and
    again: per table one cycle runs and the other is refused at once naming it; no live cycle
    is ever undone as abandoned; the lake ends equal to the source."""
    context = multiprocessing.get_context("spawn")
    folder = str(migration_folder(migration))
    for round_number in range(3):
        change_some_rows(migration)
        queue = context.Queue()
        children = [
            context.Process(
                target=_sync_in_its_own_instance,
                args=(migration.url, folder, str(tmp_path / f"home-{round_number}-{n}"), queue),
            )
            for n in range(2)
        ]
        for child in children:
            child.start()
        outcomes = [queue.get(timeout=300) for _ in children]
        for child in children:
            child.join(timeout=60)
        for _, errors in outcomes:
            for error in errors:
                assert "another sync cycle is running" in error, error
        assert any(success for success, _ in outcomes) or all(errors for _, errors in outcomes), (
            outcomes
        )
        migration.cycle()  # the refused tables catch up
        for table in TABLES:
            assert not migration.control.open_cycles(table.name)
        abandoned = [
            row
            for table in TABLES
            for row in migration.control.cycles(table.name, limit=50)
            if row.error_message and "abandoned" in row.error_message
        ]
        assert not abandoned, abandoned
        assert_lake_matches_source(migration)
