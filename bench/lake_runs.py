"""Our runs of the day, measured: bronze (or bronze + silver + gold) through
`dagster.materialize` inside the worker, and the backfill command as a user runs it, with the
whole process tree's peak memory and where its time went (the one pass, the integrity checks).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from measuring import REPO_ROOT, TABLE, RssSampler, process_figures, status_kib

# What a user runs: the backfill command for the day, every check included (issue 15's aim).
BACKFILL_LINE = "backfill command: bronze+silver+gold+every check"
AIM_BACKFILL_RATIO = 0.45

TREE_SAMPLE_S = 0.05
# What a worker passes on of run_backfill_command's figures, first of all.
COMMAND_FIGURES = ("seconds", "cpu_seconds", "cpu_cores_used", "peak_rss_bytes")


def _tree_rss_bytes(root, children_seen: set[str] | None = None) -> int:
    """Resident bytes of a process and every process below it (a run's step processes, the
    `tail` and watcher processes Dagster starts to mirror a run's output). A child that has
    forked and not yet exec'd a new program (its command line is still its parent's) shares
    its parent's pages and is left out, or one sample would count them twice. The command lines
    of the processes below go to `children_seen`."""
    import psutil

    total = 0
    try:
        root_command = root.cmdline()
    except psutil.Error:
        return 0
    for process in [root, *root.children(recursive=True)]:
        try:
            if process is not root:
                command = process.cmdline()
                if command == root_command:
                    continue
                if children_seen is not None:
                    children_seen.add(" ".join(command)[:200] or process.name())
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def _own_peak_rss_bytes(pid: int) -> int:
    """The process's own high-water mark (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_backfill_command(
    args: argparse.Namespace, first: str, last: str, tables: list[str], home: Path | None = None
) -> dict:
    """`llm-observatory backfill --start first --end last [--table T ...]`, run as a user runs
    it, in its own process with its own home (Dagster instance, control database): bronze,
    silver and gold with every check a backfill runs. Peak memory is the whole process tree's;
    each day's seconds and peak come from the moment its progress line arrived; the steps'
    times (one pass per table, integrity checks) from the runs' event logs."""
    import psutil

    keep_home = home is not None
    home = home or Path(args.lake).with_name(Path(args.lake).name + "-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    env.update(
        LLM_OBS_HOME=str(home),
        LLM_OBS_SOURCE_URL=args.source_url or os.environ["BENCH_SOURCE_URL"],
        LLM_OBS_LAKE_URL=args.lake,
        LLM_OBS_START_DATE=first,
        DAGSTER_DISABLE_TELEMETRY="true",
    )
    command = [
        sys.executable,
        "-m",
        "llm_observatory.cli",
        "backfill",
        "--start",
        first,
        "--end",
        last,
    ]
    for table in tables:
        command += ["--table", table]
    cpu_before = os.times()
    started = time.perf_counter()
    peak = 0
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, int]] = []
    children_seen: set[str] = set()
    own_peak = 0
    own_peaks: list[tuple[float, int]] = []
    with subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as child:

        def read() -> None:
            for line in child.stdout:
                lines.append((time.perf_counter(), line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        root = psutil.Process(child.pid)
        while child.poll() is None:
            rss = _tree_rss_bytes(root, children_seen)
            own_peak = max(own_peak, _own_peak_rss_bytes(child.pid))
            samples.append((time.perf_counter(), rss))
            own_peaks.append((time.perf_counter(), own_peak))
            peak = max(peak, rss)
            time.sleep(TREE_SAMPLE_S)
        reader.join()
    wall = time.perf_counter() - started
    cpu_after = os.times()
    text = "".join(line for _, line in lines)
    if child.returncode not in (0, 1):
        raise RuntimeError(f"backfill exited {child.returncode}:\n{text[-3000:]}")
    days: dict[str, dict] = {}
    previous = started
    for moment, line in lines:
        match = re.match(r"\s+\[\d+/\d+\] (\d{4}-\d\d-\d\d) (\w+): ([\d,]+) rows", line)
        if not match:
            continue
        peak_of_day = max((rss for at, rss in samples if previous <= at <= moment), default=0)
        days[match.group(1)] = {
            "seconds": moment - previous,
            "status": match.group(2),
            "rows": int(match.group(3).replace(",", "")),
            "peak_rss_bytes_sampled": peak_of_day,
            "own_peak_rss_bytes": max((peak for at, peak in own_peaks if at <= moment), default=0),
        }
        previous = moment
    failed = [line.strip() for _, line in lines if "failing checks" in line or "run failed" in line]
    step_seconds = backfill_step_seconds(home / "dagster")
    if not keep_home:
        shutil.rmtree(home, ignore_errors=True)
    cpu = (cpu_after.children_user - cpu_before.children_user) + (
        cpu_after.children_system - cpu_before.children_system
    )
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "cpu_cores_used": cpu / wall if wall else 0.0,
        "peak_rss_bytes": peak,
        "days": days,
        "failed_checks": failed,
        "step_seconds": step_seconds,
        "exit_code": child.returncode,
        "child_processes": sorted(children_seen),
        "own_peak_rss_bytes": own_peak,
        "output_tail": text[-2000:],
    }


def backfill_step_seconds(dagster_home: Path) -> dict[str, float]:
    """Seconds the backfill's runs spent in each kind of step: the one pass per table
    (`migrate_<table>`: source read, bronze, silver, gold, their blocking checks) and the
    integrity checks (`<layer>_<table>_integrity`: checksums, timestamps, spot check,
    rules, reconciliation), summed over the runs."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    totals: dict[str, float] = {}
    try:
        for run in instance.get_runs():
            for step, times in step_times(instance, run.run_id).items():
                if "start" in times and "end" in times:
                    kind = "checks" if step.endswith("_integrity") else "one pass"
                    totals[kind] = totals.get(kind, 0.0) + times["end"] - times["start"]
    finally:
        instance.dispose()
    return totals


def worker_backfill(args: argparse.Namespace) -> dict:
    """`llm-observatory backfill --start D --end D --table llm_interactions`, as a user runs
    it (see run_backfill_command)."""
    from llm_observatory.io.delta_lake import open_table
    from llm_observatory.layout import (
        bronze_location,
        daily_metrics_location,
        quarantine_location,
        silver_location,
    )
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.tables import LLM_INTERACTIONS

    ran = run_backfill_command(args, args.day, args.day, [TABLE])
    if ran["exit_code"] != 0:
        raise RuntimeError(f"backfill failed:\n{ran['output_tail']}")
    lake = LakeResource(url=args.lake)
    tables = {
        "bronze": bronze_location(lake, LLM_INTERACTIONS),
        "silver": silver_location(lake, LLM_INTERACTIONS),
        "quarantine": quarantine_location(lake, LLM_INTERACTIONS),
        "gold": daily_metrics_location(lake),
    }
    lake_bytes = {name: lake_files_bytes(location)[0] for name, location in tables.items()}
    rows = open_table(tables["bronze"]).to_pyarrow_dataset().count_rows()
    return {
        "path": "backfill",
        "rows": rows,
        "lake_bytes": sum(lake_bytes.values()),
        "lake_bytes_by_table": lake_bytes,
        **{name: ran[name] for name in (*COMMAND_FIGURES, "step_seconds", "output_tail")},
    }


def lake_files_bytes(location) -> tuple[int, int]:
    """(bytes, files) of the data files in the current version of a Delta table."""
    from llm_observatory.io.delta_lake import open_table

    table = open_table(location)
    if table is None:
        return 0, 0
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0, 0
    return int(sum(actions.column("size_bytes").to_pylist())), actions.num_rows


def step_times(instance, run_id: str) -> dict[str, dict[str, float]]:
    """Wall-clock start and end of every step of a run, from its event log."""
    steps: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            steps.setdefault(event.step_key, {})["start"] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps.setdefault(event.step_key, {})["end"] = entry.timestamp
    return steps


def worker_materialize(args: argparse.Namespace) -> dict:
    """Bronze (or bronze + silver + gold) of llm_interactions for the day, via dagster."""
    import warnings

    warnings.filterwarnings("ignore")
    import dagster as dg

    from llm_observatory.assets.migration import migration_asset
    from llm_observatory.layout import (
        DAILY_METRICS_KEY,
        bronze_key,
        bronze_location,
        daily_metrics_location,
        quarantine_location,
        silver_key,
        silver_location,
    )
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import LLM_INTERACTIONS

    # One step reads the source once for the layers selected (assets/migration.py).
    assets = [migration_asset(LLM_INTERACTIONS)]
    selection = [bronze_key(LLM_INTERACTIONS)]
    if args.worker == "full":
        selection += [silver_key(LLM_INTERACTIONS), DAILY_METRICS_KEY]
    lake = LakeResource(url=args.lake)
    source_url = args.source_url or os.environ["BENCH_SOURCE_URL"]
    streams = int(os.environ.get("BENCH_STREAMS", "1"))
    resources = {
        "source": SourceDatabase(url=source_url, streams=streams),
        "lake": lake,
        # The day leases the history assets take (one writer per partition).
        "control": ControlDatabase(url=f"sqlite:///{Path(args.lake).parent / 'control.sqlite'}"),
    }
    instance = dg.DagsterInstance.ephemeral()

    rss_before = status_kib("VmRSS") * 1024
    cpu_before = os.times()
    with RssSampler() as sampler:
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            selection=selection,
            partition_key=args.day,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
    figures = process_figures(wall, cpu_before, rss_before)
    if not result.success:
        failures = [
            str(event.step_failure_data.error.message if event.step_failure_data.error else event)
            for event in result.all_events
            if event.event_type_value == "STEP_FAILURE"
        ]
        raise RuntimeError(f"materialization failed: {' | '.join(failures) or 'see the log'}")

    metadata: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata["/".join(materialization.asset_key.path)] = {
            name: getattr(value, "value", value)
            for name, value in materialization.metadata.items()
            if isinstance(getattr(value, "value", value), (int, float, str))
        }
    checks = {
        f"{'/'.join(evaluation.asset_key.path)}:{evaluation.check_name}": evaluation.passed
        for evaluation in result.get_asset_check_evaluations()
    }
    steps = {}
    for step, times in step_times(instance, result.run_id).items():
        begin, end = times.get("start", 0.0), times.get("end", 0.0)
        steps[step] = {
            "seconds": end - begin,
            "peak_rss_bytes_sampled": sampler.peak_between(begin, end),
        }
    bronze_meta = metadata.get(f"bronze/{TABLE}", {})
    tables = {"bronze": bronze_location(lake, LLM_INTERACTIONS)}
    if args.worker == "full":
        tables.update(
            silver=silver_location(lake, LLM_INTERACTIONS),
            quarantine=quarantine_location(lake, LLM_INTERACTIONS),
            gold=daily_metrics_location(lake),
        )
    lake_bytes = {}
    lake_files = {}
    for name, location in tables.items():
        lake_bytes[name], lake_files[name] = lake_files_bytes(location)
    return {
        "path": args.worker,
        "rows": int(bronze_meta.get("dagster/row_count", bronze_meta.get("rows", 0))),
        "copy_seconds": float(bronze_meta.get("seconds", 0.0)),
        "lake_bytes": sum(lake_bytes.values()),
        "lake_bytes_by_table": lake_bytes,
        "lake_files_by_table": lake_files,
        "checks": checks,
        "steps": steps,
        "metadata": metadata,
        **figures,
    }


def backfill_step_lines(run: dict) -> list[str]:
    """Where the backfill command's time went: its one pass, its integrity checks (what they
    cost beside the copy), the rest (start-up, Dagster's run and events, leases)."""
    steps = run.get("step_seconds") or {}
    if not steps:
        return []
    rest = run["seconds"] - sum(steps.values())
    return [
        "backfill command's time: "
        + "; ".join(
            f"{kind} {seconds:,.2f} s ({seconds / run['seconds']:.0%})"
            for kind, seconds in sorted(steps.items())
        )
        + f"; the rest (start-up, Dagster's run and events, leases) {rest:,.2f} s "
        f"({rest / run['seconds']:.0%})"
    ]
