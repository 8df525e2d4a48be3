"""The operator command line end to end, as a user runs it: a subprocess per command, sharing
one LLM_OBS_HOME and Dagster instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

CLI = [sys.executable, "-m", "llm_observatory.cli"]


def run_cli(args, home: Path, **extra_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    env.update({"LLM_OBS_HOME": str(home), **extra_env})
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    home = tmp_path_factory.mktemp("home")
    completed = run_cli(["demo", "--days", "2", "--rows-per-day", "300"], home)
    return home, completed


def test_demo_migrates_every_day_and_says_go(demo_home):
    home, completed = demo_home
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Verdict: GO" in completed.stdout
    assert "[2/2] 2026-11-02 ok" in completed.stdout
    assert (home / "lake" / "gold" / "cutover_report" / "report.md").exists()
    interactions = pl.read_delta(str(home / "lake" / "silver" / "llm_interactions"))
    assert interactions["date"].n_unique() == 2


def test_runs_and_check_results_are_in_the_shared_dagster_instance(demo_home):
    home, _ = demo_home
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster")))
    runs = instance.get_runs()
    partitions = {run.tags.get("dagster/partition") for run in runs}
    assert {"2026-11-01", "2026-11-02"} <= partitions
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    from llm_observatory.assets.report import migration_check_keys

    infos = instance.event_log_storage.get_asset_check_partition_info(migration_check_keys())
    assert {info.partition_key for info in infos} == {"2026-11-01", "2026-11-02"}
    failed = {
        (info.check_key.asset_key.to_user_string(), info.check_key.name, info.partition_key)
        for info in infos
        if info.latest_execution_status.value != "SUCCEEDED"
    }
    # The demo source's empty hour (day 2, 13:00) is a WARN in every table, nothing else fails.
    assert failed == {
        (f"bronze/{table}", "hour_gaps_explained_by_source", "2026-11-02")
        for table in ("llm_interactions", "metadata", "logs")
    }


def test_report_prints_the_verdict_and_exits_zero_on_go(demo_home):
    home, _ = demo_home
    completed = run_cli(["report"], home)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Verdict: GO" in completed.stdout
    assert "| llm_interactions |" in completed.stdout


def test_report_full_re_reads_every_file(demo_home):
    home, _ = demo_home
    completed = run_cli(["report", "--full"], home)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Every file re-read in full" in completed.stdout


def test_report_says_no_go_when_a_day_is_missing_from_the_lake(demo_home, tmp_path):
    home, _ = demo_home
    # A fresh lake over the same source: nothing migrated, so nothing is accounted for.
    completed = run_cli(["report"], home, LLM_OBS_LAKE_URL=str(tmp_path / "empty_lake"))
    assert completed.returncode == 1
    assert "NO-GO" in completed.stdout


def test_backfill_of_one_table_and_day_succeeds(demo_home):
    home, _ = demo_home
    completed = run_cli(
        ["backfill", "--start", "2026-11-02", "--end", "2026-11-02", "--table", "logs"], home
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1/1 day(s) ok" in completed.stdout


def test_backfill_outside_the_partitions_is_a_usage_error(demo_home):
    home, _ = demo_home
    completed = run_cli(["backfill", "--start", "2025-01-01", "--end", "2025-01-02"], home)
    assert completed.returncode == 2
    assert "not partitions" in completed.stderr


def test_backfill_of_an_unknown_table_is_a_usage_error(demo_home):
    home, _ = demo_home
    completed = run_cli(
        ["backfill", "--start", "2026-11-01", "--end", "2026-11-01", "--table", "users"], home
    )
    assert completed.returncode == 2
    assert "unknown table 'users'" in completed.stderr


def test_backfill_against_a_down_source_fails_without_showing_the_password(demo_home):
    from llm_observatory_tests.services import free_port

    home, _ = demo_home
    port = free_port()
    completed = run_cli(
        ["backfill", "--start", "2026-11-01", "--end", "2026-11-01"],
        home,
        LLM_OBS_SOURCE_URL=f"postgresql+psycopg://migrator:Top-Secret-77@127.0.0.1:{port}/prod",
    )
    assert completed.returncode == 1
    assert "FAILED" in completed.stdout
    assert "Top-Secret-77" not in completed.stdout + completed.stderr
    # The lake still holds what the demo migrated.
    interactions = pl.read_delta(str(home / "lake" / "bronze" / "llm_interactions"))
    assert interactions["date"].n_unique() == 2


def test_verify_reports_no_difference_on_the_demo_lake(demo_home):
    home, _ = demo_home
    for extra in ([], ["--deep"]):
        completed = run_cli(
            ["verify", "--start", "2026-11-01", "--end", "2026-11-02", *extra], home
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "verify: 0 table-day(s) differ" in completed.stdout


def test_verify_lists_a_row_deleted_from_the_source_and_exits_one(demo_home, tmp_path):
    import shutil
    import sqlite3

    home, _ = demo_home
    # Work on a copy of the demo source so the other tests keep theirs.
    copy = tmp_path / "source.sqlite"
    shutil.copy(home / "demo_source.sqlite", copy)
    with sqlite3.connect(copy) as connection:
        (key,) = connection.execute(
            "SELECT log_id FROM logs ORDER BY created_at LIMIT 1 OFFSET 10"
        ).fetchone()
        connection.execute("DELETE FROM logs WHERE log_id = ?", (key,))
    completed = run_cli(
        ["verify", "--start", "2026-11-01", "--end", "2026-11-01", "--table", "logs"],
        home,
        LLM_OBS_SOURCE_URL=f"sqlite:///{copy}",
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"key {key}: extra" in completed.stdout
