"""The code location loads without any service, exposes the documented asset keys, and every
asset carries checks."""

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pytest

from llm_observatory.assets.monitoring import QUERY_LATENCY_KEY, SOURCE_HEALTH_KEY
from llm_observatory.definitions import CUTOVER_REPORT_JOB, MIGRATE_HISTORY_JOB, defs
from llm_observatory.native_memory import (
    DELTA_RS_ALLOCATOR_SETTINGS,
    DELTA_RS_ALLOCATOR_VARIABLE,
)
from llm_observatory.operate.jobs import MONITORING_JOB, SOURCE_HEALTH_JOB, SOURCE_HEALTH_SCHEDULE
from llm_observatory.partitions import daily_partitions


def test_contract_asset_keys_exist():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for table in ("llm_interactions", "metadata", "logs"):
        assert f"bronze/{table}" in keys
        assert f"silver/{table}" in keys
    assert {"gold/daily_metrics", "gold/cutover_report"} <= keys


def test_every_asset_has_a_check_and_history_is_daily_partitioned():
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    for key in graph.get_all_asset_keys():
        assert key in checked, f"{key.to_user_string()} has no asset check"
        node = graph.get(key)
        if key.path[0] in ("bronze", "silver") or key.path[-1] == "daily_metrics":
            assert node.partitions_def == daily_partitions


def test_jobs_resolve():
    assert defs.resolve_job_def(MIGRATE_HISTORY_JOB).partitions_def == daily_partitions
    assert defs.resolve_job_def(CUTOVER_REPORT_JOB) is not None


def test_definitions_load_with_the_source_down_and_validate(tmp_path):
    env = {
        "LLM_OBS_SOURCE_URL": "postgresql+psycopg://nobody:pw@127.0.0.1:1/none",
        "LLM_OBS_HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "llm_observatory.definitions",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_secrets_from_the_environment_are_not_in_the_resource_config(monkeypatch):
    monkeypatch.setenv("LLM_OBS_SOURCE_URL", "postgresql+psycopg://u:Hidden-Pass@db:5432/x")
    from llm_observatory.definitions import build_resources

    source = build_resources()["source"]
    # Dagster resolves the EnvVar at run time; the UI and run config only see its name.
    assert isinstance(source.url, dg.EnvVar)
    assert source.url == "LLM_OBS_SOURCE_URL"


def test_source_health_has_its_own_job_and_schedule_and_monitoring_stays_on_the_lake():
    """`monitor --lake-only` must not query the source, and the source's health is recorded
    every 10 minutes once its schedule is on, by a job that materializes nothing else."""
    repository = defs.get_repository_def()
    assert repository.get_job(SOURCE_HEALTH_JOB).asset_layer.executable_asset_keys == {
        SOURCE_HEALTH_KEY
    }
    assert repository.get_job(MONITORING_JOB).asset_layer.executable_asset_keys == {
        QUERY_LATENCY_KEY
    }
    schedule = defs.get_schedule_def(SOURCE_HEALTH_SCHEDULE)
    assert schedule.cron_schedule == "*/10 * * * *"
    assert schedule.job_name == SOURCE_HEALTH_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    moment = dt.datetime(2026, 12, 4, 17, 40, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=moment) as context:
        [request] = list(schedule.evaluate_tick(context).run_requests)
    assert request.run_key == "source-health-20261204T1740"


@pytest.mark.parametrize("preset", [None, "dirty_decay_ms:1000"])
def test_delta_rs_allocator_settings_are_in_place_before_deltalake_loads(preset):
    """delta-rs' jemalloc reads `_RJEM_MALLOC_CONF` once, at its first allocation: importing
    the package sets it (a value the operator set is kept) before deltalake is loaded. Polars,
    imported later, puts its own defaults in front; jemalloc takes an option's last value."""
    variable = DELTA_RS_ALLOCATOR_VARIABLE
    env = {k: v for k, v in os.environ.items() if k != variable}
    if preset is not None:
        env[variable] = preset
    probe = (
        "import os, sys\n"
        "import llm_observatory\n"
        "loaded_before = 'deltalake' in sys.modules\n"
        "import llm_observatory.definitions\n"
        f"print(loaded_before, 'deltalake' in sys.modules, os.environ['{variable}'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    loaded_before, loaded_after, settings = done.stdout.split()
    assert (loaded_before, loaded_after) == ("False", "True")
    effective = dict(option.split(":") for option in settings.split(",") if option)
    expected = dict(
        option.split(":") for option in (preset or DELTA_RS_ALLOCATOR_SETTINGS).split(",")
    )
    assert {name: effective[name] for name in expected} == expected


def test_freed_pages_are_handed_back_between_runs():
    """A backfill runs day after day in one process; what glibc freed in the middle of an arena
    (here: blocks freed by a worker thread, every 64th kept) stays resident until
    `return_freed_pages()`, which the command calls after each day's run."""
    probe = (
        "import ctypes, threading\n"
        "from llm_observatory.native_memory import return_freed_pages\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.malloc.argtypes = [ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "def resident():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "def fragment():\n"
        "    blocks = [libc.malloc(4000) for _ in range(20_000)]\n"
        "    for block in blocks:\n"
        "        ctypes.memset(block, 1, 4000)\n"
        "    for position, block in enumerate(blocks):\n"
        "        if position % 64:\n"
        "            libc.free(block)\n"
        "worker = threading.Thread(target=fragment)\n"
        "worker.start()\n"
        "worker.join()\n"
        "before = resident()\n"
        "print(return_freed_pages(), before, resident())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    returned, before, after = done.stdout.split()
    assert returned == "True"
    assert int(before) - int(after) > 60 * 2**20, done.stdout
