"""The load the source may see: every step that queries it sits in the `llm_obs_source` pool,
streams x the pool limit is held to LLM_OBS_SOURCE_MAX_QUERIES at start-up (one line, no
traceback) and again by each copy against the limit in force, and the changes sensor, which
runs outside any step, does not query while the pool is full."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from llm_observatory import settings
from llm_observatory.assets.migration import migration_asset
from llm_observatory.assets.monitoring import source_health
from llm_observatory.automation import source_changes_sensor
from llm_observatory.checks.spot_check import sample_rows
from llm_observatory.definitions import defs
from llm_observatory.layout import bronze_key, bronze_location
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.resources.source_load import (
    SOURCE_POOL,
    activity_query,
    configured_pool_limit,
    probe_latency,
    source_activity,
)
from llm_observatory.synthetic.generator import generate_source
from llm_observatory.tables import LLM_INTERACTIONS, LOGS
from llm_observatory_tests.helpers import control_beside

REPO = Path(__file__).resolve().parents[1]
DOWN_SOURCE = "postgresql+psycopg://nobody:pw@127.0.0.1:1/none"
DAY = dt.date(2026, 11, 1)


def test_every_step_that_queries_the_source_is_in_the_pool():
    steps = {}
    for job in defs.resolve_all_job_defs():
        for node in job.graph.iterate_op_defs():
            if "source" in node.required_resource_keys:
                steps[node.name] = node.pool
    # Copies, sync cycles, both layers' checks (spot checks, hour gaps, reconciliation), the
    # report's recount, query monitoring, the departure purge.
    names = " ".join(steps)
    for expected in (
        "migrate_logs",
        "sync__logs",
        "bronze_logs_integrity",
        "silver_logs_integrity",
        "cutover_report",
        "query_latency",
        "purge_spent_departures",
    ):
        assert expected in names, names
    assert {name: pool for name, pool in steps.items() if pool != SOURCE_POOL} == {}


def _instance_yaml(home: Path, limit: int | None) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    text = "telemetry:\n  enabled: false\n"
    if limit is not None:
        text += f"concurrency:\n  pools:\n    default_limit: {limit}\n"
    (home / "dagster.yaml").write_text(text)
    return home


def test_the_deployed_instance_s_limit_is_read():
    assert configured_pool_limit(REPO / "deploy") == 4


def test_start_up_holds_streams_times_the_pool_limit_to_the_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(_instance_yaml(tmp_path / "dagster", 4)))
    monkeypatch.delenv("LLM_OBS_SOURCE_MAX_QUERIES", raising=False)
    monkeypatch.delenv("LLM_OBS_SOURCE_STREAMS", raising=False)
    assert settings.source_streams() == 1  # 1 x 4 = the default cap
    monkeypatch.setenv("LLM_OBS_SOURCE_STREAMS", "2")
    with pytest.raises(ValueError) as refused:
        settings.source_streams()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("LLM_OBS_SOURCE_STREAMS=2 x the llm_obs_source pool limit 4")
    assert "= 8 concurrent source queries" in message
    assert "LLM_OBS_SOURCE_MAX_QUERIES=4" in message
    monkeypatch.setenv("LLM_OBS_SOURCE_MAX_QUERIES", "8")
    assert settings.source_streams() == 2
    for name, bad in (("LLM_OBS_SOURCE_MAX_QUERIES", "0"), ("LLM_OBS_SOURCE_STREAMS", "two")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=f"^{name}='{bad}' must be a whole number >= 1$"):
            settings.source_streams()
        monkeypatch.setenv(name, "2")
    # An instance without a limit (the CLI's own: one in-process step per command) counts 1.
    monkeypatch.setenv("DAGSTER_HOME", str(_instance_yaml(tmp_path / "bare", None)))
    monkeypatch.setenv("LLM_OBS_SOURCE_MAX_QUERIES", "4")
    monkeypatch.setenv("LLM_OBS_SOURCE_STREAMS", "4")
    assert settings.source_streams() == 4
    monkeypatch.setenv("LLM_OBS_SOURCE_STREAMS", "5")
    with pytest.raises(ValueError, match=r"pool \(no limit: one step\).* = 5 concurrent"):
        settings.source_streams()


def test_a_command_refuses_too_many_streams_in_one_line(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    env.update(
        LLM_OBS_HOME=str(home),
        DAGSTER_HOME=str(_instance_yaml(home / "dagster", 4)),
        LLM_OBS_SOURCE_STREAMS="3",
    )
    completed = subprocess.run(
        [sys.executable, "-m", "llm_observatory.cli", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert lines[0].startswith("error: LLM_OBS_SOURCE_STREAMS=3 x the llm_obs_source pool limit")


def test_a_copy_refuses_a_pool_limit_raised_past_the_cap_since_start_up(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_OBS_SOURCE_MAX_QUERIES", raising=False)
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=200, seed=5)
    lake = LakeResource(url=str(tmp_path / "lake"))
    resources = {"source": SourceDatabase(url=url), "lake": lake, "control": control_beside(lake)}
    with dg.instance_for_test() as instance:

        def copy() -> dg.ExecuteInProcessResult:
            return dg.materialize(
                [migration_asset(LOGS)],
                selection=[bronze_key(LOGS)],
                partition_key=DAY.isoformat(),
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )

        # `dagster instance concurrency set llm_obs_source 8`, after the code location loaded.
        instance.event_log_storage.set_concurrency_slots(SOURCE_POOL, 8)
        refused = copy()
        assert not refused.success
        [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
        message = failure.step_failure_data.error.message
        assert "pool limit 8 (in force in the instance) = 8 concurrent source queries" in message
        assert "LLM_OBS_SOURCE_MAX_QUERIES=4" in message
        assert not (Path(bronze_location(lake, LOGS).uri) / "_delta_log").exists()

        instance.event_log_storage.set_concurrency_slots(SOURCE_POOL, 4)
        assert copy().success


def test_the_changes_sensor_does_not_query_while_the_pool_is_full():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(SOURCE_POOL, 1)
        instance.event_log_storage.claim_concurrency_slot(SOURCE_POOL, "run-a", "migrate_logs")
        context = dg.build_sensor_context(
            instance=instance, resources={"source": SourceDatabase(url=DOWN_SOURCE)}
        )
        skipped = source_changes_sensor(context)
        assert "every llm_obs_source slot is taken" in skipped.skip_message
        instance.event_log_storage.free_concurrency_slot_for_step("run-a", "migrate_logs")
        context = dg.build_sensor_context(
            instance=instance, resources={"source": SourceDatabase(url=DOWN_SOURCE)}
        )
        # With a free slot it queries (and finds this source down).
        assert "source unreachable" in source_changes_sensor(context).skip_message


def test_the_spot_check_walk_reaches_every_row_and_those_sharing_an_instant(tmp_path):
    """Drawn by index seeks (no ordering of the day), yet over seeds every row comes up: rows
    sharing one instant are chosen among by the seeded hash of their key."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=200, seed=9)
    source = SourceDatabase(url=url)
    described = source.describe_table(LLM_INTERACTIONS)
    table = described.table
    with source.engine.begin() as connection:
        keys = (
            connection.execute(
                sa.select(table.c.interaction_id).order_by(table.c.interaction_id).limit(5)
            )
            .scalars()
            .all()
        )
        instant = dt.datetime(2026, 11, 1, 12, 0, 0)
        connection.execute(
            sa.update(table).where(table.c.interaction_id.in_(keys)).values(timestamp=instant)
        )
        everyone = set(connection.execute(sa.select(table.c.interaction_id)).scalars())
    drawn: set = set()
    for n in range(200):
        sample = sample_rows(source, described, DAY, 40, f"seed-{n}")
        assert sample.num_rows <= 40
        drawn.update(sample.column("interaction_id").to_pylist())
    assert sample_rows(source, described, DAY, 40, "x").equals(
        sample_rows(source, described, DAY, 40, "x")
    )
    assert set(keys) <= drawn
    assert len(drawn) >= 0.9 * len(everyone)
    source.dispose()


@pytest.fixture
def locked_logs(postgres_url, tmp_path, monkeypatch):
    """A PostgreSQL source with a day of rows, a lake, and a function that takes an ACCESS
    EXCLUSIVE lock on `logs` from a second connection (what a DBA's long ALTER would hold)."""
    generate_source(postgres_url, start_date=DAY, days=1, rows_per_day=300, seed=6)
    monkeypatch.setenv("LLM_OBS_SOURCE_LATENCY_LIMIT_MS", "300")
    lake = LakeResource(url=str(tmp_path / "lake"))
    resources = {
        "source": SourceDatabase(url=postgres_url),
        "lake": lake,
        "control": control_beside(lake),
    }
    locker = sa.create_engine(postgres_url)
    connections = []

    def lock():
        connection = locker.connect()
        connection.exec_driver_sql("BEGIN")
        connection.exec_driver_sql("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")
        connections.append(connection)
        return connection

    yield resources, lake, lock
    for connection in connections:
        connection.close()
    locker.dispose()


def _copy_logs(resources) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [migration_asset(LOGS)],
        selection=[bronze_key(LOGS)],
        partition_key=DAY.isoformat(),
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_partition_is_held_back_while_the_source_is_locked(locked_logs, monkeypatch):
    resources, lake, lock = locked_logs
    monkeypatch.setenv("LLM_OBS_SOURCE_HOLD_SECONDS", "120")
    held = lock()
    outcome: dict = {}
    copying = threading.Thread(target=lambda: outcome.update(result=_copy_logs(resources)))
    copying.start()
    time.sleep(6)
    # Held back while the lock stands: nothing read, nothing written.
    assert copying.is_alive()
    assert not (Path(bronze_location(lake, LOGS).uri) / "_delta_log").exists()
    held.rollback()  # the lock is released
    copying.join(timeout=120)
    assert not copying.is_alive()
    result = outcome["result"]
    assert result.success
    [materialization] = result.asset_materializations_for_node("migrate_logs")
    metadata = materialization.metadata
    source = resources["source"]
    start = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)
    day_rows = source.count_rows(source.describe_table(LOGS), start, start + dt.timedelta(days=1))
    assert metadata["dagster/row_count"].value == day_rows > 0
    assert metadata["held_back_seconds"].value >= 5
    assert metadata["source_probe_ms"].value <= 300


def test_a_partition_held_back_too_long_fails_in_one_line_unread(locked_logs, monkeypatch):
    resources, lake, lock = locked_logs
    monkeypatch.setenv("LLM_OBS_SOURCE_HOLD_SECONDS", "3")
    lock()
    result = _copy_logs(resources)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "bronze/logs 2026-11-01 held back" in message and "\n" not in message.strip()
    assert "over LLM_OBS_SOURCE_LATENCY_LIMIT_MS=300" in message
    assert not (Path(bronze_location(lake, LOGS).uri) / "_delta_log").exists()


def test_the_health_of_the_source_names_the_migration_login_s_sessions(locked_logs):
    resources, _, lock = locked_logs
    source = resources["source"]
    lock()
    blocked = threading.Thread(
        target=lambda: probe_latency(source, source.describe_table(LOGS), 3_000)
    )
    blocked.start()
    time.sleep(1)
    activity = source_activity(source)
    blocked.join()
    # The locker idles in its transaction; the probe waits on the lock.
    states = {(row["state"], row["waiting_on"]) for row in activity}
    assert ("idle in transaction", "Client") in states
    assert ("active", "Lock") in states
    assert all(row["sessions"] >= 1 for row in activity)
    compiled = str(activity_query("mssql").compile(dialect=mssql.dialect()))
    assert "sys.dm_exec_requests" in compiled and "suser_sname()" in compiled


def test_the_source_health_asset_records_the_probe_and_the_sessions(locked_logs):
    resources, _, lock = locked_logs
    source = resources["source"]
    healthy = dg.materialize([source_health], resources={"source": source})
    assert healthy.success
    [check] = healthy.get_asset_check_evaluations()
    assert check.passed
    lock().exec_driver_sql("LOCK TABLE llm_interactions IN ACCESS EXCLUSIVE MODE")
    slow = dg.materialize([source_health], resources={"source": source})
    [check] = slow.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    [materialization] = slow.asset_materializations_for_node("monitoring__source_health")
    assert materialization.metadata["source_probe_ms"].value >= 300
    assert materialization.metadata["migration_sessions"].value >= 1
