"""The operator's switches before and after cutover, through the command line on the demo:
`pause` / `resume` (seen by the daemon's own view of the workspace) and `rollback` with its
round trip: roll the lake back past a sync, then the next sync brings the change back."""

import datetime as dt
import json
import os
import time
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable

from llm_observatory_tests.test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    completed = run_cli(["demo", "--days", "2", "--rows-per-day", "200"], home)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    first = run_cli(["sync"], home)
    assert first.returncode == 0, first.stdout + first.stderr
    return home


def daemon_view(home: Path) -> dict[str, str]:
    """Schedule and sensor states as the daemon reads them: the workspace.yaml location,
    loaded the way `dagster dev` loads it, against the same instance."""
    import dagster as dg
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    from llm_observatory.operate.automation_state import _status

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    states = {}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with (
            dg.DagsterInstance.get() as instance,
            WorkspaceProcessContext(
                instance, WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])
            ) as process,
        ):
            context = process.create_request_context()
            [entry] = context.get_code_location_entries().values()
            assert entry.load_error is None, entry.load_error
            [repository] = entry.code_location.get_repositories().values()
            for kind, items in (
                ("schedule", repository.get_schedules()),
                ("sensor", repository.get_sensors()),
            ):
                for item in items:
                    stored = instance.get_instigator_state(
                        item.get_remote_origin_id(), item.selector_id
                    )
                    states[f"{kind}:{item.name}"] = _status(
                        item.get_current_instigator_state(stored).status
                    )
    finally:
        os.chdir(cwd)
        os.environ.pop("DAGSTER_HOME", None)
    return states


def test_pause_and_resume_switch_every_schedule_and_sensor_as_the_daemon_sees_them(demo):
    lake_before = sorted((demo / "lake").rglob("*"))
    resumed = run_cli(["resume"], demo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "schedule daily_sync_2200_utc: STOPPED -> RUNNING" in resumed.stdout
    assert "sensor source_changes: STOPPED -> RUNNING" in resumed.stdout
    assert daemon_view(demo) == {
        "schedule:daily_sync_2200_utc": "RUNNING",
        "schedule:weekly_compaction_sunday_0300_utc": "RUNNING",
        "schedule:daily_tiering_0400_utc": "RUNNING",
        "schedule:daily_query_monitoring_0600_utc": "RUNNING",
        "schedule:weekly_departure_purge_sunday_0500_utc": "RUNNING",
        "schedule:source_health_every_10_minutes": "RUNNING",
        "sensor:source_changes": "RUNNING",
    }

    paused = run_cli(["pause"], demo)
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "sensor source_changes: RUNNING -> STOPPED" in paused.stdout
    assert "no run in progress" in paused.stdout
    # Where things stand: the watermark of every table and the lake's versions.
    assert "llm_interactions: 20" in paused.stdout
    assert "silver/llm_interactions: v" in paused.stdout
    assert set(daemon_view(demo).values()) == {"STOPPED"}
    again = run_cli(["pause"], demo)
    assert again.returncode == 0 and "STOPPED -> STOPPED" in again.stdout
    # Neither touched the lake.
    assert sorted((demo / "lake").rglob("*")) == lake_before

    # The same from the UI: the `resume_migration` and `pause_migration` jobs.
    assert run_job(demo, "resume_migration").success
    assert set(daemon_view(demo).values()) == {"RUNNING"}
    paused_by_job = run_job(demo, "pause_migration")
    assert paused_by_job.success
    assert set(daemon_view(demo).values()) == {"STOPPED"}
    [output] = [e for e in paused_by_job.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    switched = output.step_output_data.metadata["switched"].value
    assert switched["sensor:source_changes"] == "RUNNING -> STOPPED"


def run_job(home: Path, name: str, run_config: dict | None = None):
    """A job of the definitions run as the UI's launch would, on the demo's instance."""
    import dagster as dg

    from llm_observatory.definitions import build_resources, defs

    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "LLM_OBS_HOME")}
    os.environ.update(DAGSTER_HOME=str(home / "dagster"), LLM_OBS_HOME=str(home))
    try:
        job = defs.resolve_job_def(name)
        with dg.DagsterInstance.get() as instance:
            return job.execute_in_process(
                instance=instance,
                resources=build_resources(),
                raise_on_error=False,
                run_config=run_config,
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def silver_latency(home: Path, key: str) -> int:
    silver = pl.read_delta(str(home / "lake" / "silver" / "llm_interactions"))
    return silver.filter(pl.col("interaction_id") == key)["latency_ms"].item()


def versions(home: Path) -> dict[str, int]:
    found = {}
    for log in (home / "lake").rglob("_delta_log"):
        table = log.parent
        if "_evidence" in table.parts:
            continue  # the files' evidence: append-only, never rolled back
        found[str(table.relative_to(home / "lake"))] = DeltaTable(str(table)).version()
    return found


def watermark_rows(home: Path) -> list[dict]:
    engine = sa.create_engine(f"sqlite:///{home / 'control.sqlite'}")
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT * FROM migration_watermark ORDER BY id")
        ).mappings()
        result = [dict(row) for row in rows]
    engine.dispose()
    return result


def test_rollback_round_trip_and_refusals(demo):
    engine = sa.create_engine(f"sqlite:///{demo / 'demo_source.sqlite'}")
    interactions = sa.Table("llm_interactions", sa.MetaData(), autoload_with=engine)
    with engine.connect() as connection:
        key, latency = connection.execute(
            sa.select(interactions.c.interaction_id, interactions.c.latency_ms)
            .where(interactions.c.model_name == "ollama", interactions.c.latency_ms > 5)
            .order_by(interactions.c.interaction_id)
            .limit(1)
        ).one()
    assert silver_latency(demo, key) == latency
    time.sleep(1.1)
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    time.sleep(2.1)
    before_versions = versions(demo)
    watermarks_before = watermark_rows(demo)

    with engine.begin() as connection:
        connection.execute(
            sa.update(interactions)
            .where(interactions.c.interaction_id == key)
            .values(latency_ms=3, last_modified=dt.datetime.now(dt.UTC).replace(tzinfo=None))
        )
    engine.dispose()
    synced = run_cli(["sync", "--changes-only"], demo)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert silver_latency(demo, key) == 3
    after_sync = versions(demo)
    assert after_sync != before_versions
    marks_after_sync = watermark_rows(demo)

    target = moment.isoformat().replace("+00:00", "Z")
    # Refusals change nothing.
    for args, message in (
        (["rollback", "--to", "2001-01-01T00:00:00Z"], "before the lake existed"),
        (["rollback", "--to", target, "--table", "silver/nope"], "unknown table"),
        (["rollback", "--to", "3"], "exactly one lake table"),
        (["rollback", "--to", "999", "--table", "silver/llm_interactions"], "no version 999"),
        (["rollback", "--to", "yesterday"], "neither a Delta version"),
    ):
        refused = run_cli(args, demo)
        assert refused.returncode != 0, refused.stdout
        assert message in refused.stderr and "nothing changed" in refused.stderr
    # A retention under Delta's 7-day minimum is refused, naming the variable (a target past
    # the retention is refused too: test_rollback.py).
    short = run_cli(["rollback", "--to", target], demo, LLM_OBS_LAKE_RETENTION_DAYS="0")
    assert short.returncode != 0
    assert "LLM_OBS_LAKE_RETENTION_DAYS=0: must be at least 7 days" in short.stderr
    dry = run_cli(["rollback", "--to", target, "--dry-run"], demo)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "silver/llm_interactions: v" in dry.stdout and "watermark llm_interactions" in dry.stdout
    assert versions(demo) == after_sync and watermark_rows(demo) == marks_after_sync

    rolled = run_cli(["rollback", "--to", target], demo)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "Verdict:" in rolled.stdout  # the cutover report was regenerated
    assert silver_latency(demo, key) == latency
    # Every table reads as it did at the moment, value by value.
    for name, version in before_versions.items():
        now = DeltaTable(str(demo / "lake" / name)).to_pyarrow_table().to_pylist()
        then = DeltaTable(str(demo / "lake" / name), version=version).to_pyarrow_table()
        assert sorted(map(repr, now)) == sorted(map(repr, then.to_pylist())), name
    rows = watermark_rows(demo)
    rewind = rows[-1]
    assert rewind["status"] == "COMPLETED" and rewind["error_message"].startswith("rollback")
    in_force_before = [
        r
        for r in watermarks_before
        if r["table_name"] == "llm_interactions" and r["status"] == "COMPLETED"
    ][-1]
    assert rewind["last_extracted_timestamp"] == in_force_before["last_extracted_timestamp"]
    history = DeltaTable(str(demo / "lake" / "silver" / "llm_interactions")).history(1)[0]
    assert history["operation"] == "RESTORE"
    assert json.dumps(history).count("rollback") >= 1

    # Roll forward again: the next sync re-applies the change that was rolled back.
    resynced = run_cli(["sync", "--changes-only"], demo)
    assert resynced.returncode == 0, resynced.stdout + resynced.stderr
    assert silver_latency(demo, key) == 3
    report = run_cli(["report"], demo)
    assert report.returncode == 0 and "Verdict: GO" in report.stdout


def test_compact_after_syncs_keeps_the_lake_go_with_every_checksum(demo):
    """Syncs appended small files to bronze; compaction merges them, the report (which re-reads
    every file's SHA-256 and recounts every day) stays GO, and a second run changes nothing."""
    before = versions(demo)
    bronze_rows = pl.read_delta(str(demo / "lake" / "bronze" / "llm_interactions")).sort(
        "interaction_id", "last_modified"
    )
    compacted = run_cli(["compact", "--start", "2026-11-01", "--end", "2026-11-02"], demo)
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    assert "bronze/llm_interactions: 1 day(s) compacted, files 2 -> 1" in compacted.stdout
    after = versions(demo)
    assert after["bronze/llm_interactions"] > before["bronze/llm_interactions"]
    assert (
        pl.read_delta(str(demo / "lake" / "bronze" / "llm_interactions"))
        .sort("interaction_id", "last_modified")
        .equals(bronze_rows)
    )
    report = run_cli(["report"], demo)
    assert report.returncode == 0 and "Verdict: GO" in report.stdout, report.stdout
    again = run_cli(["compact", "--start", "2026-11-01", "--end", "2026-11-02"], demo)
    assert again.returncode == 0, again.stdout + again.stderr
    assert versions(demo) == after
    refused = run_cli(["compact", "--table", "nope"], demo)
    assert refused.returncode != 0 and "unknown table" in refused.stderr


def change_latency(home: Path, key: str, latency: int) -> None:
    engine = sa.create_engine(f"sqlite:///{home / 'demo_source.sqlite'}")
    interactions = sa.Table("llm_interactions", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(
            sa.update(interactions)
            .where(interactions.c.interaction_id == key)
            .values(
                latency_ms=latency,
                last_modified=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            )
        )
    engine.dispose()


def test_monitor_and_rollback_from_the_command_line_and_the_ui(demo):
    monitored = run_cli(["monitor", "--repeats", "2"], demo)
    assert monitored.returncode == 0, monitored.stdout + monitored.stderr
    for name in (
        "model_latency_day",
        "error_rate_by_hour_week",
        "interaction_by_id",
        "cost_by_model_month",
    ):
        assert f"| {name} |" in monitored.stdout

    silver = pl.read_delta(str(demo / "lake" / "silver" / "llm_interactions"))
    key = silver.filter(pl.col("latency_ms") > 10)["interaction_id"].sort()[0]
    latency = silver_latency(demo, key)
    time.sleep(1.1)
    moment = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.1)
    change_latency(demo, key, 5)
    assert run_cli(["sync", "--changes-only"], demo).returncode == 0
    assert silver_latency(demo, key) == 5
    changed = versions(demo)

    def rollback_job(**config):
        return run_job(demo, "rollback_lake", {"ops": {"rollback_lake_tables": {"config": config}}})

    dry = rollback_job(to=moment)  # a dry run unless told otherwise
    assert dry.success and versions(demo) == changed
    refused = rollback_job(to="2001-01-01T00:00:00Z", dry_run=False)
    assert not refused.success and versions(demo) == changed
    done = rollback_job(to=moment, dry_run=False)
    assert done.success
    assert silver_latency(demo, key) == latency
    assert run_cli(["sync", "--changes-only"], demo).returncode == 0
    assert silver_latency(demo, key) == 5
