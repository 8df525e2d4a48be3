#!/usr/bin/env python
"""`make bench`: bronze extraction from PostgreSQL against the raw COPY floor, same run.

For each size (default 1M rows, all in ONE UTC day, so one partition holds all of them):

1. a throwaway PostgreSQL (``llm_observatory_tests.services.start_postgres``), or a server or
   database you name, gets the synthetic source (``generate_source(days=1, rows_per_day=N)``),
   then ``VACUUM ANALYZE``; the table's size and the generation time are recorded;
2. a warm-up read of the day, so the OS page cache is equally warm for everything after it;
3. interleaved, each in its own subprocess so its peak RSS is its own (floor, ours, floor,
   ours, ...; best of the rounds):
   - floor: psycopg 3 ``COPY (SELECT * ... day ...) TO STDOUT (FORMAT binary)``, read block by
     block and discarded;
   - bronze: ``dagster.materialize`` of the bronze asset of ``llm_interactions`` for the day,
     exactly as a run does it (source -> Arrow -> Parquet zstd -> one Delta commit + its
     row-count check);
4. then bronze + silver + gold of ``llm_interactions`` for the day (the ``migrate`` path);
5. then ``reconcile_day`` of the same day against that run's lake (silver + quarantine), as
   many rounds as step 3 (issue 4): its time beside the bronze extraction's (aim: at most
   half), whether it matches, and the bytes that crossed from the source for it: the growth
   of the loopback interface's counters in /proc/net/dev across the call (the bench runs one
   thing at a time, so that is this worker's traffic with PostgreSQL; on ``lo`` rx == tx,
   each byte is counted in both, so one counter is the traffic) and, immune to other traffic,
   TCP_INFO payload bytes of the worker's own connections; beside the table's size;
6. a table with rows/s, MB/s (of source data, sized by the binary COPY stream), peak RSS, the
   ratio to the floor and lake bytes / source bytes, with the aims (>= 70 % of the floor, peak
   RSS < 512 MiB, reconcile <= 0.5 x bronze seconds and matching) marked met or missed;
   everything goes to a JSON file in ``bench/results/``.

Once per run, after the sizes, the departure trigger cost (issue 13; ``--skip-departures``): a
source of ``--departure-rows`` interactions (default 100,000, one day) is generated once, and
copied (``CREATE DATABASE ... TEMPLATE``) for each round, with and without
``install_departure_capture``; on each copy a DELETE of 10 % of the rows, an UPDATE moving
another 10 % a day later and an UPDATE of other columns of another 10 % are timed (autocommit:
the commit is in), and the rows/s with the trigger are set beside those without (best of the
rounds, interleaved).

Once per run, after that, a month of small days (issue 13; ``--skip-history``): a fresh
database with ``--history-days`` days (default 30; 3 with ``--quick``) of
``--history-rows-per-day`` interactions (default 20,000; 500 with ``--quick``) and their metadata
and logs, ending yesterday (UTC), with ``install_departure_capture``. In one worker, the full
load as a user runs it (one ``dagster.materialize`` per day, oldest first, of bronze and silver of
every table and gold, with their checks): wall time and peak RSS. Then 0.1 % of every table's
rows deleted (md5 prefix of the key: spread evenly over the days) and, in another worker, one
daily cycle per table (``run_cycle`` with ``SyncSettings()``: the 2 recent days and the 30-day
rotation's slot, which is the history's first day); its time beside the full load's, peak RSS,
keys deleted, departures read, days rewritten and reconciled. The parent then checks the lake:
bronze and silver + quarantine hold the source's rows, no deleted key is left, ``_deleted``
holds exactly the deleted keys, gold's requests equal silver's rows; a mismatch is printed.

Peak RSS is the child's own high-water mark (``VmHWM`` in /proc/self/status; ``ru_maxrss``
would inherit the parent's across fork+exec), the Python interpreter and its imports included.

Examples::

    make bench                                  # 1M rows
    make bench BENCH_ARGS="--sizes 1000000,5000000"
    .venv/bin/python bench/run.py --quick       # 100k rows, one round
    .venv/bin/python bench/run.py --source-url postgresql+psycopg://u@host/db --day 2026-11-01

A worker can be run alone, e.g. under a profiler:
``BENCH_SOURCE_URL=URL bench/run.py --worker bronze --day D --lake DIR --result out.json``
(``--worker floor`` reads ``BENCH_DSN``, a libpq URL; ``--worker reconcile`` needs ``--lake``
holding a full run's lake: ``BENCH_KEEP_LAKES=1`` with ``--keep`` leaves them in place).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TABLE = "llm_interactions"
EVENT_TIME = "timestamp"
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
AIM_RATIO = 0.70
AIM_RSS_MIB = 512
AIM_RECONCILE_SHARE = 0.5
AIM_SYNC_SHARE = 0.05
AIM_VS_DLT_SPEED = 1.2
AIM_VS_DLT_MEMORY = 0.25
# Issue 15: bytes read back from ADLS per byte the lake stores.
AIM_BACKFILL_DOWN_PER_STORED = 0.05
AIM_REPORT_DOWN_PER_STORED = 0.01
# The change synced after the full load: this share of the day's rows updated (spread over
# every hour), and as many new rows on the next day. md5 prefixes pick them, deterministic.
SYNC_UPDATE_BELOW = "0147ae"  # 0x0147ae / 0x1000000 = 0.5 %
SYNC_INSERT_BELOW = "028f5c"  # the next 0.5 %
# The spot check's sample size in a run (TableSpec.spot_check_rows' default).
SPOT_CHECK_ROWS = 10_000
# The departure trigger cost: rows of one day, rounds (fresh copies each), and the statements.
# uuid4 keys are uniform hex, so each key range holds 10 % of the rows (0x1999999a / 2**32).
DEPARTURE_ROWS = 100_000
DEPARTURE_ROUNDS = 3
DEPARTURE_STATEMENTS = (
    ("delete", "DELETE of 10 %",
     "DELETE FROM llm_interactions WHERE interaction_id >= %s AND interaction_id < %s",
     ("00000000", "1999999a")),
    ("move", "UPDATE moving 10 % a day later",
     'UPDATE llm_interactions SET "timestamp" = "timestamp" + interval \'1 day\' '
     "WHERE interaction_id >= %s AND interaction_id < %s",
     ("1999999a", "33333334")),
    ("other", "UPDATE of other columns of 10 %",
     "UPDATE llm_interactions SET latency_ms = latency_ms + 1 "
     "WHERE interaction_id >= %s AND interaction_id < %s",
     ("33333334", "4ccccccd")),
)
# The month of small days (issue 13): days of history ending yesterday (UTC), a full load of
# every day, then 0.1 % of each table's rows deleted (md5 prefix of the key, so spread evenly
# over the days) and one daily sync cycle per table.
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 20_000
QUICK_HISTORY_DAYS = 3
QUICK_HISTORY_ROWS_PER_DAY = 500
HISTORY_DELETE_BELOW = "004189"  # 0x004189 / 0x1000000 = 0.1 %
MIB = 1024 * 1024
MB = 1_000_000
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WORKER_TIMEOUT_S = 3600
RSS_SAMPLE_S = 0.1
PROFILE_RATE_HZ = 100
# Samples of threads only waiting: py-spy drops idle threads, but with native frames a thread
# blocked on a lock (a full read-ahead queue, the RSS sampler's sleep) still shows, inside
# libc, under one of these Python waits.
PROFILE_IDLE_FRAMES = ("epoll_wait", "futex_wait", "pthread_cond_wait", "poll (")
PROFILE_WAITS = ("Condition.wait (threading.py", "Event.wait (threading.py",
                 "Queue.get (queue.py", "Queue.put (queue.py", "RssSampler._run")
# Phases by the innermost frame that names one: native symbols of the libraries doing the
# work, or our own functions around them.
PROFILE_PHASES = (
    ("SHA-256 of the files", ("sha256", "SHA256", "_HashingSink.write", "read_back_sha256")),
    ("zstd compression", ("ZSTD_compress", "ZSTD_c")),
    ("zstd decompression", ("ZSTD_decompress", "ZSTD_d", "HUF_decompress")),
    ("Parquet encoding", ("parquet::", "write_table", "ParquetWriter")),
    ("source read (libpq, COPY decoding)", ("libpq", "pqGet", "PQgetCopyData", "adbc",
                                            "Adbc", "PostgresCopy", "read_ahead", "recv")),
    ("Arrow compute (casts, splits, stats)", ("arrow::compute", "_column_stats",
                                              "_MergedStats", "_split_by_partition")),
    ("memory (page faults, copies)", ("memcpy", "memmove", "page_fault", "clear_page",
                                      "__memset", "mmap", "munmap")),
    ("Python garbage collection", ("gc_collect",)),
    ("process start-up (imports, before the clock starts)",
     ("_compile_bytecode", "_call_with_frames_removed", "<module> (")),
    ("Dagster and Python bookkeeping", ("dagster", "_bootstrap", "logging")),
)


# ============================================================================================
# Children: each measures itself and writes one JSON file.


def _status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmHWM: this process image's peak RSS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples this process's RSS in a thread, so a peak can be placed in time (or a step)."""

    def __init__(self, every: float = RSS_SAMPLE_S) -> None:
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), _status_kib("VmRSS") * 1024))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        return max(inside, default=0)


def _process_figures(wall: float, cpu_before: os.times_result, rss_before: int) -> dict:
    import resource

    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "cpu_cores_used": cpu / wall if wall > 0 else 0.0,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": _status_kib("VmHWM") * 1024,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def worker_floor(args: argparse.Namespace) -> dict:
    """The raw floor: binary COPY of the day's rows, read and discarded."""
    import psycopg
    from psycopg import sql

    start, end = day_bounds(args.day)
    statement = sql.SQL(
        "COPY (SELECT * FROM {table} WHERE {column} >= {start} AND {column} < {end}) "
        "TO STDOUT (FORMAT binary)"
    ).format(
        table=sql.Identifier(TABLE),
        column=sql.Identifier(EVENT_TIME),
        start=sql.Literal(start),
        end=sql.Literal(end),
    )
    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    started = time.perf_counter()
    nbytes = blocks = 0
    dsn = args.dsn or os.environ["BENCH_DSN"]
    with psycopg.connect(dsn, autocommit=True) as connection, connection.cursor() as cursor:
        with cursor.copy(statement) as copy:
            for block in copy:
                nbytes += len(block)
                blocks += 1
        rows = cursor.rowcount
    wall = time.perf_counter() - started
    return {
        "path": "floor",
        "rows": rows,
        "copy_bytes": nbytes,
        "copy_blocks": blocks,
        **_process_figures(wall, cpu_before, rss_before),
    }


# What a user runs: the backfill command for the day, every check included (issue 15's aim).
BACKFILL_LINE = "backfill command: bronze+silver+gold+every check"
AIM_BACKFILL_RATIO = 0.45

# The source read paths `make bench` compares on the same day: ADBC (PostgreSQL's own), ODBC
# (SQL Server's, here through Debian's PostgreSQL ODBC driver) and SQLAlchemy (row by row).
READ_PATHS = ("adbc", "odbc", "sqlalchemy")
AIM_ODBC_SHARE_OF_ADBC = 0.9


def worker_read(args: argparse.Namespace) -> dict:
    """The day streamed through one read path of the source resource, batches discarded: the
    read as bronze does it (conformed to the lake's schema), without the writer."""
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import table_spec

    reader = args.worker.removeprefix("read-")
    source = SourceDatabase(url=os.environ["BENCH_SOURCE_URL"], reader=reader)
    described = source.describe_table(table_spec(TABLE))
    start, end = day_bounds(args.day)
    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    started = time.perf_counter()
    rows = batches = 0
    for batch in source.stream_range(described, start, end):
        rows += batch.num_rows
        batches += 1
    wall = time.perf_counter() - started
    source.dispose()
    return {
        "path": args.worker,
        "rows": rows,
        "batches": batches,
        **_process_figures(wall, cpu_before, rss_before),
    }


TREE_SAMPLE_S = 0.05


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


def run_backfill_command(args: argparse.Namespace, first: str, last: str,
                         tables: list[str], home: Path | None = None) -> dict:
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
    command = [sys.executable, "-m", "llm_observatory.cli", "backfill", "--start", first,
               "--end", last]
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
    with subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as child:
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
        days[match.group(1)] = {"seconds": moment - previous, "status": match.group(2),
                                "rows": int(match.group(3).replace(",", "")),
                                "peak_rss_bytes_sampled": peak_of_day,
                                "own_peak_rss_bytes": max(
                                    (peak for at, peak in own_peaks if at <= moment), default=0)}
        previous = moment
    failed = [line.strip() for _, line in lines if "failing checks" in line or "run failed" in line]
    step_seconds = backfill_step_seconds(home / "dagster")
    if not keep_home:
        shutil.rmtree(home, ignore_errors=True)
    cpu = (cpu_after.children_user - cpu_before.children_user) + (
        cpu_after.children_system - cpu_before.children_system
    )
    return {"seconds": wall, "cpu_seconds": cpu, "cpu_cores_used": cpu / wall if wall else 0.0,
            "peak_rss_bytes": peak, "days": days, "failed_checks": failed,
            "step_seconds": step_seconds, "exit_code": child.returncode,
            "child_processes": sorted(children_seen), "own_peak_rss_bytes": own_peak,
            "output_tail": text[-2000:]}


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
            for step, times in _step_times(instance, run.run_id).items():
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
    lake_bytes = {name: _lake_files_bytes(location)[0] for name, location in tables.items()}
    rows = open_table(tables["bronze"]).to_pyarrow_dataset().count_rows()
    return {
        "path": "backfill",
        "rows": rows,
        "lake_bytes": sum(lake_bytes.values()),
        "lake_bytes_by_table": lake_bytes,
        **{name: ran[name] for name in ("seconds", "cpu_seconds", "cpu_cores_used",
                                        "peak_rss_bytes", "step_seconds", "output_tail")},
    }


def _lake_files_bytes(location) -> tuple[int, int]:
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


def _step_times(instance, run_id: str) -> dict[str, dict[str, float]]:
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

    from llm_observatory.assets.bronze import bronze_key
    from llm_observatory.assets.gold import DAILY_METRICS_KEY
    from llm_observatory.assets.migration import migration_asset
    from llm_observatory.assets.silver import silver_key
    from llm_observatory.layout import (
        bronze_location,
        daily_metrics_location,
        quarantine_location,
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

    rss_before = _status_kib("VmRSS") * 1024
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
    figures = _process_figures(wall, cpu_before, rss_before)
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
    for step, times in _step_times(instance, result.run_id).items():
        begin, end = times.get("start", 0.0), times.get("end", 0.0)
        steps[step] = {"seconds": end - begin,
                       "peak_rss_bytes_sampled": sampler.peak_between(begin, end)}
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
        lake_bytes[name], lake_files[name] = _lake_files_bytes(location)
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


# Reconciliation: the worker measures the traffic with the source two ways. /proc/net/dev's
# `lo` line is what the issue asks for; on loopback every byte is counted once as transmitted
# and once as received, so the traffic is the growth of one counter (rx == tx), and it holds
# everyone's loopback traffic in the window. TCP_INFO of the worker's own connections to the
# source counts only their payload, by direction, whatever else runs on the machine.
TCP_INFO_BYTES_ACKED = 120  # struct tcp_info: __u64 tcpi_bytes_acked (sent and acknowledged)
TCP_INFO_BYTES_RECEIVED = 128  # __u64 tcpi_bytes_received
SHOWN_DIFFERENCES = 20


def interface_bytes(name: str = "lo") -> dict[str, int] | None:
    """Received and transmitted byte and packet counters of one interface, from /proc/net/dev."""
    try:
        with open("/proc/net/dev") as dev:
            for line in dev:
                interface, _, counters = line.partition(":")
                if interface.strip() == name and counters:
                    fields = [int(part) for part in counters.split()]
                    return {"rx_bytes": fields[0], "rx_packets": fields[1],
                            "tx_bytes": fields[8], "tx_packets": fields[9]}
    except (OSError, ValueError, IndexError):
        pass
    return None


def tcp_payload_bytes(fd: int) -> tuple[int, int] | None:
    """(received, sent and acknowledged) payload bytes of a TCP socket, from TCP_INFO."""
    import socket
    import struct

    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET,
                                                                      socket.AF_INET6):
                return None
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < TCP_INFO_BYTES_RECEIVED + 8:
        return None
    (sent,) = struct.unpack_from("=Q", info, TCP_INFO_BYTES_ACKED)
    (received,) = struct.unpack_from("=Q", info, TCP_INFO_BYTES_RECEIVED)
    return received, sent


class SourceSockets:
    """Payload bytes of every pooled connection SQLAlchemy opens in this process (to the source)."""

    def __init__(self) -> None:
        self.open: dict[int, object] = {}
        self.closed = [0, 0]
        self.connections = 0

    @staticmethod
    def _fd(dbapi_connection) -> int | None:
        for get in (lambda c: c.fileno(), lambda c: c.pgconn.socket):
            try:
                return int(get(dbapi_connection))
            except Exception:  # noqa: BLE001, S112 - drivers differ; no fd means not counted
                continue
        return None

    def install(self) -> None:
        import sqlalchemy as sa

        sa.event.listen(sa.pool.Pool, "connect", self._on_connect)
        sa.event.listen(sa.pool.Pool, "close", self._on_close)
        sa.event.listen(sa.pool.Pool, "close_detached", self._on_close)

    def _on_connect(self, dbapi_connection, record=None) -> None:
        self.connections += 1
        self.open[id(dbapi_connection)] = dbapi_connection

    def _on_close(self, dbapi_connection, record=None) -> None:
        if self.open.pop(id(dbapi_connection), None) is not None:
            counted = self._count(dbapi_connection)
            if counted:
                self.closed[0] += counted[0]
                self.closed[1] += counted[1]

    def _count(self, dbapi_connection) -> tuple[int, int] | None:
        fd = self._fd(dbapi_connection)
        return None if fd is None else tcp_payload_bytes(fd)

    def totals(self) -> dict[str, int | None]:
        received, sent = self.closed
        measured = True
        for connection in self.open.values():
            counted = self._count(connection)
            if counted is None:
                measured = False
                continue
            received, sent = received + counted[0], sent + counted[1]
        if self.connections == 0:
            measured = False
        return {"connections": self.connections,
                "received_bytes": received if measured else None,
                "sent_bytes": sent if measured else None}


class PhaseTimes:
    """Wall seconds and calls of named functions, by wrapping them in this process only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, attribute: str, phase: str) -> None:
        import functools

        original = getattr(owner, attribute, None)
        if original is None:
            return  # renamed upstream: the phase is simply not shown
        self.seconds.setdefault(phase, 0.0)
        self.calls.setdefault(phase, 0)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1

        setattr(owner, attribute, timed)


def loopback_host(sqlalchemy_url: str) -> bool:
    """Whether the source is reached over TCP on this machine's loopback interface."""
    import ipaddress

    import sqlalchemy as sa

    host = sa.make_url(sqlalchemy_url).host
    if not host or host.startswith("/"):
        return False  # a Unix socket: nothing crosses `lo`
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def worker_reconcile(args: argparse.Namespace) -> dict:
    """`reconcile_day` of llm_interactions for the day against a lake silver was written to."""
    import warnings

    warnings.filterwarnings("ignore")
    from llm_observatory import reconcile
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import LLM_INTERACTIONS

    source_url = args.source_url or os.environ["BENCH_SOURCE_URL"]
    source = SourceDatabase(url=source_url)
    lake = LakeResource(url=args.lake)
    day = dt.date.fromisoformat(args.day)

    # Where the time goes, without a profiler's overhead: the few calls reconcile_day makes.
    phases = PhaseTimes()
    phases.wrap(SourceDatabase, "describe_table", "source: reflect the table")
    phases.wrap(
        reconcile.SourceSide, "_run", "source: queries (fingerprints, bisection; overlaps)"
    )
    # The lake side reads and hashes while the source query runs in a thread: they overlap.
    phases.wrap(
        reconcile, "lake_hourly_fingerprints", "lake: read + hash silver and quarantine (overlaps)"
    )
    sockets = SourceSockets()
    sockets.install()

    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    lo_before = interface_bytes("lo")
    started = time.perf_counter()
    result = reconcile.reconcile_day(LLM_INTERACTIONS, source, lake, day)
    wall = time.perf_counter() - started
    lo_after = interface_bytes("lo")
    figures = _process_figures(wall, cpu_before, rss_before)
    socket_bytes = sockets.totals()
    source.engine.dispose()

    loopback = None
    if lo_before and lo_after:
        loopback = {name: lo_after[name] - lo_before[name] for name in lo_before}
        loopback["rx_plus_tx_bytes"] = loopback["rx_bytes"] + loopback["tx_bytes"]
    accounted = sum(phases.seconds.values())
    return {
        "path": "reconcile",
        "rows": result.source_rows,
        "source_rows": result.source_rows,
        "lake_rows": result.lake_rows,
        "matches": result.matches,
        "source_queries": result.source_queries,
        "hours_compared": result.hours_compared,
        "hours_differing": result.hours_differing,
        "difference_count": len(result.differences),
        "differences": [d.describe() for d in result.differences[:SHOWN_DIFFERENCES]],
        "source_on_loopback": loopback_host(source_url),
        "loopback": loopback,
        # The traffic on `lo` in the window: rx == tx there, each byte is counted in both.
        "loopback_bytes": None if loopback is None else loopback["rx_bytes"],
        "source_socket_bytes": socket_bytes,
        "phases": {
            name: {"seconds": seconds, "calls": phases.calls[name]}
            for name, seconds in phases.seconds.items()
        },
        "phases_unaccounted_seconds": wall - accounted,
        **figures,
    }


def worker_sync(args: argparse.Namespace) -> dict:
    """Incremental cycles of llm_interactions against the full run's lake, after the parent
    changed 1 % of the source: a changes-only cycle (the sensor's), then a daily one that also
    reconciles the recent days (nothing left to repair if the first was right)."""
    import warnings

    warnings.filterwarnings("ignore")
    from llm_observatory.incremental.cycle import SyncSettings, run_cycle
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import LLM_INTERACTIONS

    source_url = args.source_url or os.environ["BENCH_SOURCE_URL"]
    source = SourceDatabase(url=source_url)
    lake = LakeResource(url=args.lake)
    control = ControlDatabase(url=f"sqlite:///{Path(args.result).with_suffix('.control.sqlite')}")
    day = dt.date.fromisoformat(args.day)
    cycles = {}
    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    with RssSampler() as sampler:
        started = time.perf_counter()
        for name, settings in (
            ("changes", SyncSettings(reconcile_recent_days=0)),
            # Every day from the loaded one to the high-water mark's (today's): the rotation
            # slot of a 1-day period covers them all.
            ("daily", SyncSettings(reconcile_recent_days=1, rotation_period_days=1,
                                   first_day=day)),
        ):
            begin = time.time()
            if os.environ.get("BENCH_PROFILE"):
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                result = profiler.runcall(
                    run_cycle, LLM_INTERACTIONS, source, lake, control, settings
                )
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
            else:
                result = run_cycle(LLM_INTERACTIONS, source, lake, control, settings)
            end = time.time()
            cycles[name] = {
                "seconds": end - begin,
                "peak_rss_bytes_sampled": sampler.peak_between(begin, end),
                "rows_extracted": result.rows_extracted,
                "upserted_rows": result.changes.upserted_rows,
                "unchanged_rows": result.changes.unchanged_rows,
                "days_rewritten": result.days_changed,
                "days_reconciled": result.days_reconciled,
                "deleted_keys": result.deleted_keys,
                "moved_keys": result.moved_keys,
                "repaired_keys": result.repaired_keys,
            }
        wall = time.perf_counter() - started
    figures = _process_figures(wall, cpu_before, rss_before)
    source.engine.dispose()
    return {
        "path": "sync",
        "rows": cycles["changes"]["rows_extracted"],
        "cycles": cycles,
        **figures,
    }


def history_days(args: argparse.Namespace) -> list[str]:
    first = dt.date.fromisoformat(args.day)
    return [(first + dt.timedelta(days=offset)).isoformat() for offset in range(args.history_days)]


def worker_history_full(args: argparse.Namespace) -> dict:
    """The month's full load as a user runs it: `llm-observatory backfill` over every day of
    every table, every check included (see run_backfill_command); its home is the lake's
    folder, so the sync that follows continues from its control database."""
    from llm_observatory.io.delta_lake import open_table
    from llm_observatory.layout import (
        bronze_location,
        daily_metrics_location,
        quarantine_location,
        silver_location,
    )
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.tables import TABLES

    days = history_days(args)
    # Home beside the lake: the sync that follows reads this load's control database there.
    ran = run_backfill_command(args, days[0], days[-1], [table.name for table in TABLES],
                               home=Path(args.lake).parent)
    lake = LakeResource(url=args.lake)
    lake_bytes, rows = {}, {}
    for table in TABLES:
        for layer, location in (("bronze", bronze_location(lake, table)),
                                ("silver", silver_location(lake, table)),
                                ("quarantine", quarantine_location(lake, table))):
            lake_bytes[f"{layer}/{table.name}"] = _lake_files_bytes(location)[0]
        rows[table.name] = open_table(bronze_location(lake, table)).to_pyarrow_dataset(
        ).count_rows()
    lake_bytes["gold/daily_metrics"] = _lake_files_bytes(daily_metrics_location(lake))[0]
    return {
        "path": "history-full",
        "rows": sum(rows.values()),
        "rows_by_table": rows,
        "lake_bytes_by_table": lake_bytes,
        **{name: ran[name] for name in ("seconds", "cpu_seconds", "cpu_cores_used",
                                        "peak_rss_bytes", "days", "failed_checks",
                                        "step_seconds", "child_processes",
                                        "own_peak_rss_bytes")},
    }


def worker_history_sync(args: argparse.Namespace) -> dict:
    """One daily sync cycle per table (`SyncSettings()`: the 2 recent days reconciled and the
    30-day rotation's slot) against the month's lake, after the parent deleted 0.1 % of every
    table's rows across the month; the control database is the full load's."""
    import warnings

    warnings.filterwarnings("ignore")
    from llm_observatory.incremental.cycle import SyncSettings, run_cycle
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import TABLES

    source = SourceDatabase(url=args.source_url or os.environ["BENCH_SOURCE_URL"])
    lake = LakeResource(url=args.lake)
    control = ControlDatabase(url=f"sqlite:///{Path(args.lake).parent / 'control.sqlite'}")
    cycles = {}
    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    with RssSampler() as sampler:
        started = time.perf_counter()
        for table in TABLES:
            begin = time.time()
            if os.environ.get("BENCH_PROFILE"):
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                result = profiler.runcall(run_cycle, table, source, lake, control, SyncSettings())
                print(f"=== {table.name}", file=sys.stderr)
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
            else:
                result = run_cycle(table, source, lake, control, SyncSettings())
            end = time.time()
            cycles[table.name] = {
                "seconds": end - begin,
                "peak_rss_bytes_sampled": sampler.peak_between(begin, end),
                "rows_extracted": result.rows_extracted,
                "upserted_rows": result.changes.upserted_rows,
                "unchanged_rows": result.changes.unchanged_rows,
                "departure_capture": result.departure_capture,
                "departures_read": result.departures_read,
                "deleted_keys": result.deleted_keys,
                "moved_keys": result.moved_keys,
                "repaired_keys": result.repaired_keys,
                "days_rewritten": result.days_changed,
                "days_reconciled": result.days_reconciled,
                "differences_by_day": {
                    day.isoformat(): count for day, count in result.differences_by_day.items()
                },
                "watermark_before": _iso_or_none(result.watermark_before),
                "high_water": _iso_or_none(result.high_water),
            }
        wall = time.perf_counter() - started
    figures = _process_figures(wall, cpu_before, rss_before)
    source.engine.dispose()
    return {"path": "history-sync", "rows": 0, "cycles": cycles, **figures}


def _iso_or_none(moment) -> str | None:
    return None if moment is None else moment.isoformat()


DLT_CHUNK_ROWS = 100_000


def worker_dlt(args: argparse.Namespace) -> dict:
    """dlt 1.x `sql_table` of the day's rows into Parquet (zstd) on a local filesystem
    destination: `--worker dlt-connectorx` (its fastest: connectorx returning an Arrow stream in
    large chunks) or `dlt-pyarrow` (its default pyarrow backend)."""
    import warnings

    warnings.filterwarnings("ignore")
    backend = "connectorx" if args.worker == "dlt-connectorx" else "pyarrow"
    # dlt reads its configuration from the environment: zstd Parquet wherever it writes.
    for section in ("DATA_WRITER", "NORMALIZE__DATA_WRITER", "EXTRACT__DATA_WRITER"):
        os.environ[f"{section}__COMPRESSION"] = "zstd"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    import dlt
    import pyarrow.parquet as pq
    from dlt.sources.sql_database import sql_table

    source_url = os.environ["BENCH_SOURCE_URL"]
    start, end = day_bounds(args.day)
    destination_folder = Path(args.lake)
    destination_folder.mkdir(parents=True, exist_ok=True)

    def only_the_day(query, table):
        return query.where(table.c[EVENT_TIME] >= start, table.c[EVENT_TIME] < end)

    backend_kwargs = {}
    if backend == "connectorx":
        backend_kwargs = {
            "conn": libpq_url(source_url),
            "return_type": "arrow_stream",
            "batch_size": DLT_CHUNK_ROWS,
        }
    resource = sql_table(
        credentials=source_url,
        table=TABLE,
        backend=backend,
        chunk_size=DLT_CHUNK_ROWS,
        query_adapter_callback=only_the_day,
        backend_kwargs=backend_kwargs or None,
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        destination=dlt.destinations.filesystem(bucket_url=destination_folder.as_uri()),
        dataset_name="bench",
        pipelines_dir=str(destination_folder.parent / f"dlt-pipelines-{destination_folder.name}"),
    )
    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    started = time.perf_counter()
    pipeline.run(resource, loader_file_format="parquet")
    wall = time.perf_counter() - started
    figures = _process_figures(wall, cpu_before, rss_before)
    files = [path for path in destination_folder.rglob("*.parquet") if TABLE in str(path)]
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    codecs = sorted({
        pq.ParquetFile(path).metadata.row_group(0).column(0).compression for path in files[:3]
    })
    return {
        "path": args.worker,
        "rows": rows,
        "lake_bytes": sum(path.stat().st_size for path in files),
        "files": len(files),
        "compression": codecs,
        "dlt_version": dlt.__version__,
        **figures,
    }


def run_worker(args: argparse.Namespace) -> int:
    worker = {
        "floor": worker_floor,
        "backfill": worker_backfill,
        "reconcile": worker_reconcile,
        "sync": worker_sync,
        "history-full": worker_history_full,
        "history-sync": worker_history_sync,
        "dlt-connectorx": worker_dlt,
        "dlt-pyarrow": worker_dlt,
        **{f"read-{path}": worker_read for path in READ_PATHS},
    }.get(
        args.worker, worker_materialize
    )
    figures = worker(args)
    Path(args.result).write_text(json.dumps(figures, indent=2, default=str))
    return 0


# ============================================================================================
# The parent: sources, rounds, table.


def day_bounds(day: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def libpq_url(sqlalchemy_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq (psycopg, ADBC) takes it."""
    import sqlalchemy as sa

    return sa.make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


def with_database(sqlalchemy_url: str, database: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(sqlalchemy_url).set(database=database).render_as_string(hide_password=False)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class ServerCpu:
    """CPU seconds spent by a local PostgreSQL (postmaster, its live and its reaped children)."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.pid = postmaster_pid

    def total(self) -> float | None:
        if self.pid is None:
            return None
        try:
            import psutil

            postmaster = psutil.Process(self.pid)
            times = postmaster.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in postmaster.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
                except psutil.Error:
                    pass
            return total
        except Exception:  # noqa: BLE001 - best effort only
            return None


class Sources:
    """Where the source databases come from: ours, a server we were given, or one database."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = None
        self.admin_url: str | None = args.pg_admin_url
        self.created: list[str] = []
        self.postmaster_pid: int | None = None
        self.server_version = ""

    def start(self) -> None:
        if self.args.source_url or self.admin_url:
            return
        from llm_observatory_tests import services

        say("starting a throwaway PostgreSQL")
        self.server = services.start_postgres()
        self.admin_url = self.server.admin_url
        self.server_version = self.server.version
        pid_file = self.server.data_dir / "postmaster.pid"
        try:
            self.postmaster_pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            self.postmaster_pid = None
        say(f"PostgreSQL on 127.0.0.1:{self.server.port} ({self.server.version})")

    def new_database(self, rows: int, template: str | None = None) -> str:
        """A new database (a copy of `template`, if given); its URL."""
        import psycopg
        from psycopg import sql

        name = f"bench_{rows}_{uuid.uuid4().hex[:8]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(statement)
        self.created.append(name)
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database `new_database` made, now (copies would otherwise pile up)."""
        import psycopg
        import sqlalchemy as sa
        from psycopg import sql

        name = sa.make_url(url).database
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self.created.remove(name)

    def cleanup(self) -> None:
        if self.args.keep:
            if self.server is not None:
                say(
                    f"--keep: PostgreSQL left running at {self.server.admin_url} "
                    f"(folder {self.server.workdir}); stop it with "
                    f"pg_ctl -D {self.server.data_dir} stop; its owner (this process) is gone, so "
                    "the next start_postgres() anywhere (a test session) will clean it up"
                )
            elif self.created:
                say(f"--keep: databases left in place: {', '.join(self.created)}")
            return
        if self.server is not None:
            self.server.stop()
            return
        if self.admin_url and self.created:
            import psycopg
            from psycopg import sql

            with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
                for name in self.created:
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )


def describe_source(url: str, day: str) -> dict:
    import psycopg

    start, end = day_bounds(day)
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        total, table, heap, rows_all = connection.execute(
            "SELECT pg_total_relation_size(%(t)s), pg_table_size(%(t)s), pg_relation_size(%(t)s),"
            " (SELECT count(*) FROM llm_interactions)",
            {"t": TABLE},
        ).fetchone()
        day_rows = connection.execute(
            'SELECT count(*) FROM llm_interactions WHERE "timestamp" >= %s AND "timestamp" < %s',
            (start, end),
        ).fetchone()[0]
        version = connection.execute("SHOW server_version").fetchone()[0]
        shared_buffers = connection.execute("SHOW shared_buffers").fetchone()[0]
    return {
        "table": TABLE,
        "rows_in_table": rows_all,
        "rows_in_day": day_rows,
        "pg_total_relation_size": total,
        "pg_table_size": table,
        "pg_relation_size": heap,
        "avg_row_bytes_table": table / rows_all if rows_all else 0.0,
        "avg_row_bytes_total": total / rows_all if rows_all else 0.0,
        "server_version": version,
        "shared_buffers": shared_buffers,
    }


def busiest_day(url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        found = connection.execute(
            "SELECT (\"timestamp\" AT TIME ZONE 'UTC')::date AS d, count(*) FROM llm_interactions "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
    if found is None:
        raise SystemExit(f"{TABLE} is empty at the given --source-url")
    return found[0].isoformat()


def prepare_source(sources: Sources, rows: int, day: str) -> dict:
    """A fresh database holding `rows` interactions on `day`, vacuumed and analyzed."""
    import psycopg

    from llm_observatory.synthetic.generator import generate_source

    url = sources.new_database(rows)
    say(f"generating {rows:,} rows of {TABLE} (+ metadata, logs) on {day}")
    started = time.perf_counter()
    summary = generate_source(
        url,
        start_date=dt.date.fromisoformat(day),
        days=1,
        rows_per_day=rows,
        seed=sources.args.seed,
    )
    generated = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(f"VACUUM ANALYZE {TABLE}")
    vacuumed = time.perf_counter() - started
    say(f"generated in {generated:.1f} s, VACUUM ANALYZE in {vacuumed:.1f} s")
    return {
        "url": sa_url_without_password(url),
        "generated_rows": dict(summary.rows),
        "generation_seconds": generated,
        "vacuum_analyze_seconds": vacuumed,
        "_url": url,
    }


def measure_departure_cost(sources: Sources, args: argparse.Namespace) -> dict:
    """What the departure capture costs the source's writers: the same DELETE and UPDATEs on
    copies of one generated source, with and without `install_departure_capture`."""
    import psycopg
    import sqlalchemy as sa

    from llm_observatory.sql_scripts import install_departure_capture
    from llm_observatory.synthetic.generator import generate_source

    rows = args.departure_rows
    base = sources.new_database(rows)
    say(f"departure trigger cost: generating {rows:,} rows of {TABLE} on {args.day}")
    generate_source(base, start_date=dt.date.fromisoformat(args.day), days=1,
                    rows_per_day=rows, seed=args.seed)
    with psycopg.connect(libpq_url(base), autocommit=True) as connection:
        connection.execute(f"VACUUM ANALYZE {TABLE}")
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for _ in range(DEPARTURE_ROUNDS):
        for variant in runs:
            copy = sources.new_database(rows, template=sa.make_url(base).database)
            try:
                if variant == "with":
                    engine = sa.create_engine(copy)
                    install_departure_capture(engine)
                    engine.dispose()
                runs[variant].append(time_departure_statements(copy, variant == "with"))
            finally:
                sources.drop_database(copy)
    sources.drop_database(base)
    statements = {}
    for name, label, _, _ in DEPARTURE_STATEMENTS:
        without = max(run[name]["rows_per_second"] for run in runs["without"])
        with_capture = max(run[name]["rows_per_second"] for run in runs["with"])
        statements[name] = {
            "label": label,
            "rows": runs["without"][0][name]["rows"],
            "without_rows_per_second": without,
            "with_rows_per_second": with_capture,
            "ratio": with_capture / without if without else 0.0,
        }
    recorded = {run["departures_recorded"] for run in runs["with"]}
    expected = statements["delete"]["rows"] + statements["move"]["rows"]
    return {
        "rows_in_table": rows,
        "rounds": DEPARTURE_ROUNDS,
        "statements": statements,
        # Every deleted and moved row, none of the other update: the trigger did its work.
        "departures_recorded": sorted(recorded),
        "departures_expected": expected,
        "runs": runs,
    }


def time_departure_statements(url: str, captured: bool) -> dict:
    """Each of DEPARTURE_STATEMENTS once on `url`, autocommit, timed by this client; with the
    capture installed (`captured`), how many departures it recorded."""
    import psycopg

    figures: dict = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for name, _, statement, bounds in DEPARTURE_STATEMENTS:
            started = time.perf_counter()
            rows = connection.execute(statement, bounds).rowcount
            seconds = time.perf_counter() - started
            figures[name] = {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds}
        if captured:
            figures["departures_recorded"] = connection.execute(
                "SELECT count(*) FROM migration_departures"
            ).fetchone()[0]
    return figures


def departure_lines(cost: dict) -> list[str]:
    parts = [
        f"{figures['label']} ({figures['rows']:,} rows): "
        f"{figures['without_rows_per_second']:,.0f} rows/s without, "
        f"{figures['with_rows_per_second']:,.0f} with ({figures['ratio']:.2f}x)"
        for figures in cost["statements"].values()
    ]
    recorded = cost["departures_recorded"]
    return [
        f"departure trigger cost ({cost['rows_in_table']:,}-row {TABLE}, PostgreSQL, best of "
        f"{cost['rounds']}): " + "; ".join(parts),
        f"departures recorded per round: {', '.join(f'{count:,}' for count in recorded)} "
        f"(expected {cost['departures_expected']:,}: every deleted and moved row)",
    ]


def history_first_day(days: int, today: dt.date | None = None) -> dt.date:
    """The first of `days` days of history ending yesterday (UTC): the daily cycle's recent
    days then hold a real day, as in production, and its rotation slot is the first day."""
    today = today or dt.datetime.now(dt.UTC).date()
    return today - dt.timedelta(days=days)


def measure_history(sources: Sources, args: argparse.Namespace, workdir: Path) -> dict:
    """A month of small days: generated with the departure capture, fully loaded as a user
    runs it, then 0.1 % of every table's rows deleted across all the days and one daily sync
    cycle per table; the lake checked against the source and the deleted keys afterwards."""
    import psycopg
    import sqlalchemy as sa

    from llm_observatory.sql_scripts import install_departure_capture
    from llm_observatory.synthetic.generator import generate_source
    from llm_observatory.tables import TABLES

    days, per_day = args.history_days, args.history_rows_per_day
    first = history_first_day(days)
    last = first + dt.timedelta(days=days - 1)
    url = sources.new_database(days * per_day)
    say(f"month of small days: generating {days} x {per_day:,} rows of {TABLE} (+ metadata, "
        f"logs), {first}..{last}, with the departure capture")
    started = time.perf_counter()
    summary = generate_source(url, start_date=first, days=days, rows_per_day=per_day,
                              seed=args.seed)
    generated = time.perf_counter() - started
    engine = sa.create_engine(url)
    try:
        install_departure_capture(engine)
    finally:
        engine.dispose()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for table in TABLES:
            connection.execute(f"VACUUM ANALYZE {table.name}")
    say(f"generated {sum(summary.rows.values()):,} rows in {generated:.1f} s")
    folder = workdir / "history"
    folder.mkdir(exist_ok=True)
    lake = folder / "lake"
    server_cpu = ServerCpu(sources.postmaster_pid)
    options = {
        "lake": lake,
        "extra_args": ["--history-days", str(days)],
        # The workers' partitions and the cycles' rotation start on the history's first day.
        "extra_env": {"LLM_OBS_START_DATE": first.isoformat()},
    }
    try:
        say(f"full load of the {days} days: llm-observatory backfill (every table, every check; "
            "one run a day)")
        full = run_child("history-full", url, first.isoformat(), workdir, "history-full",
                         server_cpu, **options)
        say(f"full load: {full['seconds']:,.1f} s, peak RSS {full['peak_rss_bytes'] / MIB:,.0f} "
            f"MiB, {full['rows']:,} rows")
        if full.get("child_processes"):
            say("processes the command started (their resident memory is in its peak): "
                + "; ".join(full["child_processes"]))
        if full["failed_checks"]:
            say(f"FAILED CHECKS in the full load: {'; '.join(full['failed_checks'][:10])}")
        deleted = delete_history_rows(url)
        say("deleted " + ", ".join(
            f"{name} {figures['rows']:,} over {len(figures['by_day'])} day(s)"
            for name, figures in deleted.items()))
        synced = run_child("history-sync", url, first.isoformat(), workdir, "history-sync",
                           server_cpu, **options)
        say(f"sync: {synced['seconds']:,.1f} s, peak RSS "
            f"{synced['peak_rss_bytes'] / MIB:,.0f} MiB")
        verification = verify_history(lake, deleted)
    finally:
        if not args.keep:
            sources.drop_database(url)
        if not os.environ.get("BENCH_KEEP_LAKES"):
            shutil.rmtree(folder, ignore_errors=True)
    return history_summary(days, per_day, first, last, summary, generated, full, deleted, synced,
                           verification)


def delete_history_rows(url: str) -> dict[str, dict]:
    """0.1 % of every table's rows deleted, picked by the md5 of the key (uniform, so spread
    evenly over the days); SQLAlchemy constructs, one transaction. Per table: the deleted keys
    (as text), their count per UTC day, and the rows left."""
    import sqlalchemy as sa

    from llm_observatory.tables import TABLES

    engine = sa.create_engine(url)
    deleted: dict[str, dict] = {}
    try:
        with engine.begin() as connection:
            for spec in TABLES:
                table = sa.Table(spec.name, sa.MetaData(), autoload_with=connection)
                key, event_time = table.c[spec.key], table.c[spec.event_time]
                chosen = sa.func.md5(sa.cast(key, sa.Text)) < HISTORY_DELETE_BELOW
                gone = connection.execute(
                    sa.delete(table).where(chosen).returning(key, event_time)
                ).all()
                by_day: dict[str, int] = {}
                for _, moment in gone:
                    day = moment.astimezone(dt.UTC).date().isoformat()
                    by_day[day] = by_day.get(day, 0) + 1
                left = connection.execute(
                    sa.select(sa.func.count()).select_from(table)
                ).scalar_one()
                deleted[spec.name] = {
                    "rows": len(gone),
                    "by_day": dict(sorted(by_day.items())),
                    "rows_left": left,
                    "keys": {str(row[0]) for row in gone},
                }
    finally:
        engine.dispose()
    return deleted


def verify_history(lake_folder: Path, deleted: dict[str, dict]) -> dict:
    """The lake after the sync, per table: bronze and silver + quarantine hold the source's
    rows, no deleted key is left in silver or quarantine, `_deleted` holds exactly the deleted
    keys; gold's requests equal silver's interactions. Mismatches are listed, never hidden."""
    import pyarrow.compute as pc

    from llm_observatory.io.delta_lake import open_table, rows_per_day
    from llm_observatory.layout import (
        bronze_location,
        daily_metrics_location,
        deleted_location,
        quarantine_location,
        silver_location,
    )
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.tables import TABLES

    lake = LakeResource(url=str(lake_folder))

    def keys_of(location, column: str) -> set[str]:
        table = open_table(location)
        if table is None:
            return set()
        values = table.to_pyarrow_dataset().to_table(columns=[column]).column(column)
        return {str(value) for value in values.to_pylist()}

    tables: dict[str, dict] = {}
    mismatches: list[str] = []
    for spec in TABLES:
        expected = deleted[spec.name]
        source_rows = expected["rows_left"]
        bronze = sum(rows_per_day(bronze_location(lake, spec)).values())
        silver = sum(rows_per_day(silver_location(lake, spec)).values())
        quarantine = sum(rows_per_day(quarantine_location(lake, spec)).values())
        left = (keys_of(silver_location(lake, spec), spec.key)
                | keys_of(quarantine_location(lake, spec), spec.key)) & expected["keys"]
        recorded = keys_of(deleted_location(lake, spec), spec.key)
        figures = {
            "source_rows": source_rows,
            "bronze_rows": bronze,
            "silver_rows": silver,
            "quarantine_rows": quarantine,
            "deleted_keys_left": len(left),
            "deleted_table_rows": len(recorded),
            "deleted_in_source": expected["rows"],
        }
        if silver + quarantine != source_rows:
            mismatches.append(f"{spec.name}: silver {silver:,} + quarantine {quarantine:,} = "
                              f"{silver + quarantine:,} rows, the source holds {source_rows:,}")
        if bronze != source_rows:
            mismatches.append(f"{spec.name}: bronze holds {bronze:,} rows, the source "
                              f"{source_rows:,}")
        if left:
            mismatches.append(f"{spec.name}: {len(left):,} deleted key(s) still in silver or "
                              f"quarantine, e.g. {sorted(left)[:3]}")
        if recorded != expected["keys"]:
            mismatches.append(
                f"{spec.name}: _deleted holds {len(recorded):,} key(s), {expected['rows']:,} "
                f"deleted; {len(expected['keys'] - recorded):,} deleted key(s) missing there, "
                f"{len(recorded - expected['keys']):,} there and never deleted")
        if spec.silver_model_column:
            gold = open_table(daily_metrics_location(lake))
            requests = 0 if gold is None else int(pc.sum(
                gold.to_pyarrow_dataset().to_table(columns=["requests"]).column("requests")
            ).as_py() or 0)
            figures["gold_requests"] = requests
            if requests != silver:
                mismatches.append(f"gold: {requests:,} requests, silver {spec.name} holds "
                                  f"{silver:,} rows")
        tables[spec.name] = figures
    return {"matches": not mismatches, "mismatches": mismatches, "tables": tables}


def history_summary(
    days: int, per_day: int, first: dt.date, last: dt.date, summary, generated: float,
    full: dict, deleted: dict, synced: dict, verification: dict,
) -> dict:
    cycles = synced["cycles"]
    rewritten = sorted({day for cycle in cycles.values() for day in cycle["days_rewritten"]})
    deleted_rows = sum(figures["rows"] for figures in deleted.values())
    result = {
        "days": days,
        "rows_per_day": per_day,
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "generated_rows": dict(summary.rows),
        "generation_seconds": generated,
        "delete_share": int(HISTORY_DELETE_BELOW, 16) / 0x1000000,
        # The counts; the keys themselves were for the verification.
        "deleted": {name: {field: value for field, value in figures.items() if field != "keys"}
                    for name, figures in deleted.items()},
        "deleted_rows": deleted_rows,
        "full": full,
        "sync": {
            "seconds": synced["seconds"],
            "share_of_full_seconds": synced["seconds"] / full["seconds"],
            "peak_rss_bytes": synced["peak_rss_bytes"],
            "deleted_keys": sum(cycle["deleted_keys"] for cycle in cycles.values()),
            "departures_read": sum(cycle["departures_read"] for cycle in cycles.values()),
            "days_rewritten": rewritten,
            "cycles": cycles,
            "process": {name: synced[name] for name in
                        ("cpu_seconds", "cpu_cores_used", "rss_before_bytes", "load_average",
                         "server_cpu_seconds") if name in synced},
        },
        "verification": verification,
    }
    result["aims"] = {
        name: {
            "aim": f"peak RSS < {AIM_RSS_MIB} MiB",
            "value": figures["peak_rss_bytes"] / MIB,
            "shown": f"{figures['peak_rss_bytes'] / MIB:,.0f} MiB",
            "met": figures["peak_rss_bytes"] < AIM_RSS_MIB * MIB,
        }
        for name, figures in (("full_load_peak_rss_mib", full),
                              ("sync_peak_rss_mib", result["sync"]))
    }
    result["aims"]["sync_leaves_the_lake_as_the_source"] = {
        "aim": "after the sync the lake holds the source's rows, no deleted key, and _deleted "
               "exactly the deleted keys",
        "value": verification["matches"],
        "shown": "yes" if verification["matches"] else "; ".join(verification["mismatches"]),
        "met": verification["matches"] and not full["failed_checks"],
    }
    return result


def history_lines(history: dict) -> list[str]:
    full, sync = history["full"], history["sync"]
    lines = [
        f"month of small days ({history['days']} x {history['rows_per_day']:,} rows of "
        f"{TABLE}, + metadata and logs: {full['rows']:,} rows): full load "
        f"{full['seconds']:,.1f} s, peak RSS {full['peak_rss_bytes'] / MIB:,.0f} MiB; "
        f"sync after {history['delete_share'] * 100:.1f} % deletes over {history['days']} days "
        f"({history['deleted_rows']:,} rows deleted): {sync['seconds']:,.1f} s "
        f"(= {sync['share_of_full_seconds'] * 100:.1f} % of the full load), peak RSS "
        f"{sync['peak_rss_bytes'] / MIB:,.0f} MiB, {sync['deleted_keys']:,} deleted, "
        f"{len(sync['days_rewritten'])} days rewritten, {sync['departures_read']:,} departures "
        "read",
    ]
    per_day = list(full["days"].values())
    if per_day:
        seconds = [figures["seconds"] for figures in per_day]
        peaks = [figures["peak_rss_bytes_sampled"] for figures in per_day]
        lines.append(
            f"  full load (`llm-observatory backfill`, every check): {min(seconds):,.1f}.."
            f"{max(seconds):,.1f} s a day (median {statistics.median(seconds):,.1f} s); "
            f"process tree peak on the first day {peaks[0] / MIB:,.0f} MiB, on the last "
            f"{peaks[-1] / MIB:,.0f} MiB"
        )
        own = [figures.get("own_peak_rss_bytes", 0) for figures in per_day]
        if any(own):
            lines.append(
                "  the command's own peak (VmHWM) after the first day "
                f"{own[0] / MIB:,.0f} MiB, after the 10th {own[min(9, len(own) - 1)] / MIB:,.0f}"
                f" MiB, after the last {own[-1] / MIB:,.0f} MiB; the rest of the tree is "
                "Dagster's output mirroring (a `tail` and a watcher interpreter per stream)"
            )
    steps = full.get("step_seconds") or {}
    if steps:
        lines.append(
            "  its steps: " + "; ".join(
                f"{kind} {seconds:,.1f} s ({seconds / len(per_day or [1]):,.2f} s a day)"
                for kind, seconds in sorted(steps.items()))
            + f"; the rest (start-up, Dagster's runs and events, leases) "
            f"{full['seconds'] - sum(steps.values()):,.1f} s"
        )
    for name, cycle in sync["cycles"].items():
        reconciled = cycle["days_reconciled"]
        lines.append(
            f"  {name}: {cycle['seconds']:,.1f} s, peak RSS "
            f"{cycle['peak_rss_bytes_sampled'] / MIB:,.0f} MiB (sampled); "
            f"{history['deleted'][name]['rows']:,} deleted in the source, "
            f"{cycle['departures_read']:,} departures read ({cycle['departure_capture']}), "
            f"{cycle['deleted_keys']:,} deleted, {cycle['moved_keys']:,} moved, "
            f"{cycle['repaired_keys']:,} repaired, {cycle['rows_extracted']:,} changed rows "
            f"re-read (overlap); {len(cycle['days_rewritten'])} day(s) rewritten; reconciled "
            f"{len(reconciled)} day(s): {', '.join(reconciled) or 'none'}"
        )
    if full["failed_checks"]:
        lines.append(f"  FULL LOAD CHECKS FAILED: {'; '.join(full['failed_checks'])}")
    verification = history["verification"]
    if verification["matches"]:
        lines.append(
            "  lake after the sync: bronze and silver + quarantine hold the source's rows, no "
            "deleted key left, _deleted holds exactly the deleted keys ("
            + ", ".join(f"{name} {figures['deleted_table_rows']:,}"
                        for name, figures in verification["tables"].items())
            + "), gold's requests = silver's rows"
        )
    else:
        lines.append("  MISMATCH after the sync: " + "; ".join(verification["mismatches"]))
    lines.append("  aims: " + "; ".join(
        f"{name} {aim['shown']} ({'met' if aim['met'] else 'MISSED'})"
        for name, aim in history["aims"].items()))
    if history.get("other_load"):
        lines.append(other_load_line(history["other_load"]) + " (before the month)")
    return lines


def sa_url_without_password(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def run_child(
    kind: str,
    url: str,
    day: str,
    workdir: Path,
    label: str,
    server_cpu: ServerCpu,
    lake: Path | None = None,
    keep_lake: bool = False,
    streams: int | None = None,
    profile: Path | None = None,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """One worker in its own interpreter; its figures, or SystemExit with its log's tail.

    `profile`: sampled by py-spy (Python and native frames, every thread) into that file, in
    its raw collapsed-stack format, which `profile_summary` reads.

    Materializing workers write into `lake-<label>`, removed afterwards unless `keep_lake`
    (or BENCH_KEEP_LAKES); `lake` names another run's lake instead (reconcile reads one).
    `extra_args` go on the worker's command line, `extra_env` into its environment.
    """
    result_file = workdir / f"{label}.json"
    log_file = workdir / f"{label}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--day", day,
               "--result", str(result_file), *(extra_args or [])]
    # Connection URLs go through the environment: a password stays out of `ps`.
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    if kind == "floor":
        env["BENCH_DSN"] = libpq_url(url)
    else:
        env["BENCH_SOURCE_URL"] = url
        command += ["--lake", str(lake or workdir / f"lake-{label}")]
    env.pop("DAGSTER_HOME", None)
    env.update(extra_env or {})
    if streams:
        env["BENCH_STREAMS"] = str(streams)
    if profile is not None:
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--rate",
                   str(PROFILE_RATE_HZ), "--native", "--format", "raw", "--output",
                   str(profile), "--", *command]
    cpu_before = server_cpu.total()
    load_before = os.getloadavg()[0]
    with open(log_file, "wb") as log:
        completed = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
            timeout=WORKER_TIMEOUT_S, check=False,
        )
    time.sleep(0.2)  # let the postmaster reap the backend, so its CPU is counted
    cpu_after = server_cpu.total()
    if completed.returncode != 0 or not result_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"worker {label} failed (exit {completed.returncode}); log tail:\n{tail}")
    figures = json.loads(result_file.read_text())
    # Other work on the machine shows here (1-minute load average, before and after).
    figures["load_average"] = [load_before, os.getloadavg()[0]]
    if cpu_before is not None and cpu_after is not None:
        figures["server_cpu_seconds"] = cpu_after - cpu_before
    if lake is None and kind != "floor" and not keep_lake and not os.environ.get(
        "BENCH_KEEP_LAKES"
    ):
        shutil.rmtree(workdir / f"lake-{label}", ignore_errors=True)
    return figures


def profile_summary(path: Path, top: int = 12) -> dict:
    """Where the worker's busy samples went, from py-spy's collapsed stacks: by the innermost
    frame (self time), and by phase: the frames of ours or of the libraries that own the work
    (Parquet encoding, the source read, hashing, Dagster's own bookkeeping)."""
    by_leaf: dict[str, int] = {}
    by_phase: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(idle in leaf for idle in PROFILE_IDLE_FRAMES):
            continue
        python_frames = [frame for frame in frames if ".py:" in frame]
        if python_frames and any(wait in python_frames[-1] for wait in PROFILE_WAITS):
            continue  # the innermost Python frame is a wait: the native frames below idle
        total += count
        short = leaf.split(" (")[0] + (
            " (" + leaf.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in leaf else ""
        )
        by_leaf[short] = by_leaf.get(short, 0) + count
        phase = _profile_phase(frames)
        by_phase[phase] = by_phase.get(phase, 0) + count
    def shares(counts: dict[str, int]) -> list[list]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [[name, count / total if total else 0.0] for name, count in ranked]
    return {"busy_samples": total, "rate_hz": PROFILE_RATE_HZ,
            "busy_seconds": total / PROFILE_RATE_HZ,
            "by_phase": shares(by_phase), "by_leaf": shares(by_leaf), "file": str(path)}


def _profile_phase(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in PROFILE_PHASES:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def profile_lines(label: str, summary: dict) -> list[str]:
    lines = [f"where {label} spends its busy CPU (py-spy, {summary['busy_seconds']:.1f} "
             f"busy thread-seconds, every thread):"]
    lines.append("  by phase: " + "; ".join(
        f"{name} {share:.0%}" for name, share in summary["by_phase"]))
    lines.append("  hottest frames: " + "; ".join(
        f"{name} {share:.0%}" for name, share in summary["by_leaf"][:8]))
    return lines


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["seconds"])


def measure_size(
    sources: Sources, rows: int | None, args: argparse.Namespace, workdir: Path
) -> dict:
    if args.source_url:
        url = args.source_url
        day = args.day or busiest_day(url)
        prepared = {"url": sa_url_without_password(url), "generation_seconds": None}
    else:
        day = args.day
        prepared = prepare_source(sources, rows, day)
        url = prepared.pop("_url")
    source = {**prepared, **describe_source(url, day), "day": day}
    say(
        f"{TABLE} on {day}: {source['rows_in_day']:,} rows; "
        f"table {source['pg_table_size'] / MIB:,.0f} MiB "
        f"(with indexes {source['pg_total_relation_size'] / MIB:,.0f} MiB), "
        f"{source['avg_row_bytes_table']:,.0f} B/row"
    )
    server_cpu = ServerCpu(sources.postmaster_pid)
    tag = f"{source['rows_in_day']}"

    say("warm-up read (floor, discarded)")
    warmup = run_child("floor", url, day, workdir, f"{tag}-warmup", server_cpu)
    floors: list[dict] = []
    bronzes: list[dict] = []
    fulls: list[dict] = []
    backfills: list[dict] = []
    reconciles: list[dict] = []
    synced: dict | None = None

    def child(kind: str, label: str, **options) -> dict:
        figures = run_child(kind, url, day, workdir, f"{tag}-{label}", server_cpu, **options)
        say(
            f"{label}: {figures['rows'] / figures['seconds']:,.0f} rows/s, "
            f"peak RSS {figures['peak_rss_bytes'] / MIB:,.0f} MiB"
        )
        return figures

    for round_number in range(1, args.repeats + 1):
        floors.append(child("floor", f"floor-{round_number}"))
        bronzes.append(child("bronze", f"bronze-{round_number}"))
    read_paths: dict[str, list[dict]] = {}
    for round_number in range(1, 1 if args.skip_read_paths else args.repeats + 1):
        for path in READ_PATHS:
            figures = child(f"read-{path}", f"read-{path}-{round_number}")
            read_paths.setdefault(path, []).append(figures)
    streamed: dict[int, dict] = {}
    for count in () if args.skip_streams else (2, 4):
        streamed[count] = child("bronze", f"bronze-{count}-streams", streams=count)
    dlts: dict[str, dict] = {}
    if not args.skip_dlt:
        if importlib.util.find_spec("dlt") is None:
            say("dlt is not installed (the `bench` dependency group): its rows are skipped")
        else:
            for kind in ("dlt-connectorx", "dlt-pyarrow"):
                dlts[kind] = child(kind, kind)
    if not args.skip_full:
        reconciling = not args.skip_reconcile or not args.skip_sync
        full_lakes = []
        for round_number in range(1, args.full_repeats + 1):
            label = f"bronze+silver+gold-{round_number}"
            fulls.append(child("full", label, keep_lake=reconciling))
            full_lakes.append(workdir / f"lake-{tag}-{label}")
        for round_number in range(1, args.full_repeats + 1):
            backfills.append(child("backfill", f"backfill-{round_number}"))
        if not args.skip_reconcile:
            # Against the last full run's lake: its silver + quarantine are the day's rows.
            for round_number in range(1, args.repeats + 1):
                figures = child("reconcile", f"reconcile-{round_number}", lake=full_lakes[-1])
                say(
                    f"reconcile-{round_number}: {figures['seconds']:,.2f} s, "
                    f"{figures['source_queries']} source queries, "
                    f"{'matches' if figures['matches'] else 'DOES NOT MATCH'} the source"
                )
                if not figures["matches"]:
                    say_differences(figures)
                reconciles.append(figures)
        if not args.skip_sync and args.source_url:
            say("--source-url: the sync bench changes the source, so it is skipped here")
        elif not args.skip_sync:
            changed = change_source_for_sync(url, day)
            say(
                f"source changed after the full load: {changed['updated']:,} rows updated over "
                f"the day, {changed['inserted']:,} new rows on the next day"
            )
            synced = child("sync", "sync", lake=full_lakes[-1])
            synced["source_change"] = changed
        if reconciling and not os.environ.get("BENCH_KEEP_LAKES"):
            for folder in full_lakes:
                shutil.rmtree(folder, ignore_errors=True)
    elif not args.skip_reconcile:
        say("--skip-full: no silver to reconcile, reconciliation skipped")
    result = summarize(
        source, warmup, floors, bronzes, fulls, reconciles, dlts, streamed, backfills
    )
    if read_paths:
        result["read_paths"] = read_path_summary(read_paths, floors)
        result["aims"]["odbc_share_of_adbc_rows_per_second"] = result["read_paths"]["aim"]
    result["spot_check"] = spot_check_cost(url, day)
    say(spot_check_lines(result["spot_check"])[0])
    if args.profile:
        # Extra runs, never the measured ones: sampling slows a worker down a little.
        result["profiles"] = {}
        for kind in ("bronze", "full"):
            path = workdir / f"{tag}-{kind}-profile.txt"
            say(f"profiling {kind} with py-spy")
            child(kind, f"{kind}-profiled", profile=path)
            result["profiles"][kind] = profile_summary(path)
    if not args.skip_wire:
        result["wire"] = measure_wire(url, day, workdir)
        print("\n".join(wire_lines(result["wire"])) + "\n", flush=True)
        result["aims"].update(wire_aims(result["wire"]))
    if synced is not None:
        result["sync"] = sync_summary(synced, best(fulls))
        result["aims"]["sync_share_of_full_seconds"] = {
            "aim": f"1 % change synced in <= {AIM_SYNC_SHARE:.0%} of the full load's seconds",
            "value": result["sync"]["share_of_full_seconds"],
            "shown": f"{result['sync']['share_of_full_seconds']:.1%}",
            "met": result["sync"]["share_of_full_seconds"] <= AIM_SYNC_SHARE,
        }
    return result


def _wire_bytes_module():
    """bench/wire_bytes.py (Azurite, the counting proxy, the access log's reading), loaded by
    path: this file also runs loaded by path, without bench/ on sys.path."""
    spec = importlib.util.spec_from_file_location("wire_bytes", REPO_ROOT / "bench" /
                                                  "wire_bytes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_wire(url: str, day: str, workdir: Path) -> dict:
    """The day's backfill (every table, every check), a changes-only sync, then the cutover
    report, with the lake on Azurite behind a counting proxy and each run as users run it: the
    bytes sent up and read back, per byte of the lake's current data files. A worker beside
    SQL Server pays both directions on its link to ADLS; on a local lake there is no wire."""
    wire = _wire_bytes_module()
    work = workdir / "wire"
    work.mkdir(exist_ok=True)
    root = "lake"
    say("bytes on the wire: the day's backfill, a sync and the report, lake on Azurite")
    with wire.running_azurite(work) as (port, log_path), wire.CountingProxy(port) as proxy:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LLM_OBS_", "DAGSTER_", "AZURE_"))}
        env.update(
            LLM_OBS_HOME=str(work / "home"),
            LLM_OBS_SOURCE_URL=url,
            LLM_OBS_LAKE_URL=wire.lake_url(root),
            LLM_OBS_START_DATE=day,
            AZURE_STORAGE_CONNECTION_STRING=wire.connection_string(proxy.port),
            DAGSTER_DISABLE_TELEMETRY="true",
        )
        figures: dict = {}
        for name, arguments in (("backfill", ["backfill", "--start", day, "--end", day]),
                                ("sync", ["sync", "--changes-only"]),
                                ("report", ["report"])):
            figures[name] = wire.run_measured(arguments, env, REPO_ROOT, proxy, log_path)
            if name == "backfill":
                figures["stored_after_backfill"] = wire.stored_bytes(
                    wire.storage_options(port), root)
                wire.per_byte_stored(figures[name], figures["stored_after_backfill"])
        figures["stored_bytes"] = wire.stored_bytes(wire.storage_options(port), root)
        for name in ("sync", "report"):
            wire.per_byte_stored(figures[name], figures["stored_bytes"])
        figures["report"]["checks"] = wire.report_checks(wire.connection_string(port), root)
    return figures


def wire_lines(wire: dict) -> list[str]:
    lines = [f"bytes on the wire, lake on Azurite (through a counting proxy; the lake stores "
             f"{wire['stored_bytes'] / 1e6:,.1f} MB of current data files):"]
    for name in ("backfill", "sync", "report"):
        figures = wire[name]
        down = figures["downloaded"]
        lines.append(
            f"  {name}: {figures['seconds']:,.1f} s (exit {figures['exit']}), up "
            f"{figures['uploaded_bytes'] / 1e6:,.1f} MB ({figures['all_up_per_byte_stored']:.2f}"
            f" per byte stored), down {figures['downloaded_bytes'] / 1e6:,.1f} MB "
            f"({figures['all_down_per_byte_stored']:.2f}; GETs of data files "
            f"{down['data_files'] / 1e6:,.1f} MB, Delta log {down['delta_log'] / 1e6:,.1f} MB, "
            f"evidence {down['evidence'] / 1e6:,.1f} MB, {down['requests']:,} requests)"
        )
        if figures.get("stderr"):
            lines.append(f"    failed: {figures['stderr'][-300:]}")
    checks = wire["report"].get("checks") or {}
    if checks:
        lines.append(
            f"  the report verified {checks.get('files_verified')} files: "
            f"{checks.get('files_by_metadata')} by the service's MD5, "
            f"{checks.get('files_reread')} re-read ({(checks.get('bytes_reread') or 0) / 1e6:,.1f}"
            f" MB, its seeded sample); mode {checks.get('checksum_mode')}"
        )
    return lines


def wire_aims(wire: dict) -> dict:
    stored = wire["stored_bytes"] or 1
    sample = (wire["report"].get("checks") or {}).get("bytes_reread") or 0
    report_aim = AIM_REPORT_DOWN_PER_STORED + sample / stored
    backfill = wire["backfill"]["all_down_per_byte_stored"]
    report = wire["report"]["all_down_per_byte_stored"]
    return {
        "wire_backfill_down_per_byte_stored": {
            "aim": f"the backfill reads back <= {AIM_BACKFILL_DOWN_PER_STORED:.0%} of the bytes "
                   "it stores (data files, Delta log and evidence, headers included)",
            "value": backfill, "shown": f"{backfill:.1%}",
            "met": backfill <= AIM_BACKFILL_DOWN_PER_STORED,
        },
        "wire_report_down_per_byte_stored": {
            "aim": f"the report reads back <= {AIM_REPORT_DOWN_PER_STORED:.0%} of the lake plus "
                   "its seeded sample",
            "value": report, "shown": f"{report:.1%} (aim {report_aim:.1%})",
            "met": report <= report_aim,
        },
    }


def spot_check_cost(url: str, day: str, rows: int = SPOT_CHECK_ROWS, seed: str = "bench") -> dict:
    """The spot check's source query (the seeded walk of `checks/spot_check.py`, `rows`
    instants) timed beside the same day's copy read (every row of the day, as bronze streams
    it), in this process, one after the other on the same source."""
    from llm_observatory.checks.spot_check import sample_rows
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import table_spec

    source = SourceDatabase(url=url)
    try:
        described = source.describe_table(table_spec(TABLE))
        start, end = day_bounds(day)
        started = time.perf_counter()
        sampled = sample_rows(source, described, dt.date.fromisoformat(day), rows, seed).num_rows
        sample_seconds = time.perf_counter() - started
        started = time.perf_counter()
        copied = sum(batch.num_rows for batch in source.stream_range(described, start, end))
        copy_seconds = time.perf_counter() - started
    finally:
        source.dispose()
    return {
        "sample_size": rows,
        "sampled_rows": sampled,
        "sample_seconds": sample_seconds,
        "copied_rows": copied,
        "copy_seconds": copy_seconds,
        "share_of_copy_seconds": sample_seconds / max(copy_seconds, 1e-9),
    }


def read_path_summary(runs: dict[str, list[dict]], floors: list[dict]) -> dict:
    """Best rows/s and worst peak RSS per read path, beside the floor of the same run."""
    summary = {}
    for path, figures in {"floor": floors, **runs}.items():
        fastest = best(figures)
        summary[path] = {
            "rows": fastest["rows"],
            "rows_per_second": fastest["rows"] / fastest["seconds"],
            "peak_rss_bytes": max(item["peak_rss_bytes"] for item in figures),
        }
    share = summary["odbc"]["rows_per_second"] / summary["adbc"]["rows_per_second"]
    return {
        "paths": summary,
        "aim": {
            "aim": f"ODBC reads >= {AIM_ODBC_SHARE_OF_ADBC:.0%} of ADBC's rows/s at no more memory",
            "value": share,
            "shown": f"{share:.0%}, peak {summary['odbc']['peak_rss_bytes'] / MIB:,.0f} MiB vs "
            f"{summary['adbc']['peak_rss_bytes'] / MIB:,.0f} MiB",
            "met": share >= AIM_ODBC_SHARE_OF_ADBC
            and summary["odbc"]["peak_rss_bytes"] <= summary["adbc"]["peak_rss_bytes"],
        },
    }


def read_path_lines(read_paths: dict) -> list[str]:
    paths = read_paths["paths"]
    floor = paths["floor"]["rows_per_second"]
    return [
        "source read paths (the day streamed and discarded, best round; ODBC through Debian's "
        "PostgreSQL driver, not SQL Server's): "
        + "; ".join(
            f"{path} {figures['rows_per_second']:,.0f} rows/s "
            f"({figures['rows_per_second'] / floor:.0%} of the floor), "
            f"peak {figures['peak_rss_bytes'] / MIB:,.0f} MiB"
            for path, figures in paths.items()
        )
    ]


def spot_check_lines(cost: dict) -> list[str]:
    return [
        f"spot check on the source: {cost['sampled_rows']:,} rows sampled ({cost['sample_size']:,}"
        f" seeded instants) in {cost['sample_seconds']:,.2f} s, beside the day's copy read of "
        f"{cost['copied_rows']:,} rows in {cost['copy_seconds']:,.2f} s "
        f"({cost['share_of_copy_seconds']:.1%} of it)"
    ]


def change_source_for_sync(url: str, day: str) -> dict:
    """0.5 % of the day's rows updated (latency and last_modified) and 0.5 % copied as new rows
    on the next day, picked by md5 prefix; SQLAlchemy constructs, the source's own clock."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    start, end = day_bounds(day)
    try:
        table = sa.Table(TABLE, sa.MetaData(), autoload_with=engine)
        in_day = sa.and_(table.c.timestamp >= start, table.c.timestamp < end)
        digest = sa.func.md5(table.c.interaction_id)
        with engine.begin() as connection:
            updated = connection.execute(
                sa.update(table)
                .where(in_day, digest < SYNC_UPDATE_BELOW)
                .values(
                    latency_ms=table.c.latency_ms + 1,
                    last_modified=sa.func.clock_timestamp(),
                )
            ).rowcount
            columns = [column.name for column in table.c]
            values = []
            for column in table.c:
                if column.name == "interaction_id":
                    values.append(sa.func.md5(sa.func.concat(column, "new")))
                elif column.name == "timestamp":
                    values.append(column + sa.func.make_interval(0, 0, 0, 1))
                elif column.name == "last_modified":
                    values.append(sa.func.clock_timestamp())
                else:
                    values.append(column)
            chosen = sa.and_(in_day, digest >= SYNC_UPDATE_BELOW, digest < SYNC_INSERT_BELOW)
            connection.execute(
                sa.insert(table).from_select(columns, sa.select(*values).where(chosen))
            )
            inserted = connection.execute(
                sa.select(sa.func.count()).select_from(table).where(chosen)
            ).scalar_one()
    finally:
        engine.dispose()
    return {"updated": updated, "inserted": inserted}


def sync_summary(synced: dict, full: dict) -> dict:
    changes = synced["cycles"]["changes"]
    return {
        "seconds": changes["seconds"],
        "full_seconds": full["seconds"],
        "share_of_full_seconds": changes["seconds"] / full["seconds"],
        "peak_rss_bytes": changes["peak_rss_bytes_sampled"],
        "process_peak_rss_bytes": synced["peak_rss_bytes"],
        "source_change": synced.get("source_change"),
        "cycles": synced["cycles"],
    }


def sync_lines(sync: dict) -> list[str]:
    changes, daily = sync["cycles"]["changes"], sync["cycles"]["daily"]
    change = sync.get("source_change") or {}
    return [
        f"sync after the full load ({change.get('updated', 0):,} rows updated over the day, "
        f"{change.get('inserted', 0):,} new on the next day): changes-only cycle "
        f"{changes['seconds']:,.2f} s = {sync['share_of_full_seconds']:.1%} of the full load's "
        f"{sync['full_seconds']:,.2f} s, peak RSS {sync['peak_rss_bytes'] / MIB:,.0f} MiB; "
        f"{changes['rows_extracted']:,} rows extracted, {changes['upserted_rows']:,} merged, "
        f"{changes['unchanged_rows']:,} already in the lake (overlap), "
        f"{len(changes['days_rewritten'])} day(s) rewritten",
        f"daily cycle after it (reconciles {len(daily['days_reconciled'])} day(s) "
        f"{daily['days_reconciled'][0]}..{daily['days_reconciled'][-1]}): "
        f"{daily['seconds']:,.2f} s, peak RSS {daily['peak_rss_bytes_sampled'] / MIB:,.0f} MiB; "
        f"found {daily['deleted_keys']} deleted, {daily['moved_keys']} moved, "
        f"{daily['repaired_keys']} missing or stale (0 = the changes cycle left nothing behind)",
    ]


def say_differences(figures: dict) -> None:
    say(
        f"reconciliation found {figures['difference_count']:,} difference(s) in hour(s) "
        f"{figures['hours_differing']} (source {figures['source_rows']:,} rows, lake "
        f"{figures['lake_rows']:,}); the first:"
    )
    for description in figures["differences"]:
        say(f"  {description}")


def summarize(
    source: dict,
    warmup: dict,
    floors: list,
    bronzes: list,
    fulls: list,
    reconciles: list | None = None,
    dlts: dict | None = None,
    streamed: dict | None = None,
    backfills: list | None = None,
) -> dict:
    floor = best(floors)
    floor_rate = floor["rows"] / floor["seconds"]
    copy_bytes_per_row = floor["copy_bytes"] / floor["rows"] if floor["rows"] else 0.0
    source_bytes = source["pg_table_size"]

    def line(path: str, run: dict, seconds: float, peak: int, lake_bytes: int | None) -> dict:
        rate = run["rows"] / seconds if seconds > 0 else 0.0
        return {
            "path": path,
            "rows": run["rows"],
            "seconds": seconds,
            "rows_per_second": rate,
            "mb_per_second": rate * copy_bytes_per_row / MB,
            "peak_rss_mib": peak / MIB,
            "ratio_to_floor": rate / floor_rate if floor_rate else 0.0,
            "lake_to_source_bytes": (
                lake_bytes / source_bytes if lake_bytes and source_bytes else None
            ),
            "cpu_cores_used": run.get("cpu_cores_used"),
            "server_cpu_cores_used": (run["server_cpu_seconds"] / run["seconds"])
            if run.get("server_cpu_seconds") is not None and run["seconds"] > 0 else None,
        }

    bronze = best(bronzes)
    bronze_peak = max(run["peak_rss_bytes"] for run in bronzes)
    lines = [
        line("floor: COPY binary (psycopg)", floor, floor["seconds"],
             max(run["peak_rss_bytes"] for run in floors), None),
        line("bronze: dagster materialize", bronze, bronze["seconds"], bronze_peak,
             bronze["lake_bytes"]),
    ]
    copy_best = min(bronzes, key=lambda run: run["copy_seconds"] or float("inf"))
    if copy_best["copy_seconds"]:
        lines.append(line("bronze: copy loop only", copy_best, copy_best["copy_seconds"],
                          bronze_peak, copy_best["lake_bytes"]))
    if fulls:
        full = best(fulls)
        lines.append(line("bronze+silver+gold", full, full["seconds"],
                          max(run["peak_rss_bytes"] for run in fulls), full["lake_bytes"]))
    if backfills:
        backfill = best(backfills)
        lines.append(line(BACKFILL_LINE, backfill, backfill["seconds"],
                          max(run["peak_rss_bytes"] for run in backfills),
                          backfill["lake_bytes"]))
    for count, run in (streamed or {}).items():
        lines.append(line(f"bronze: {count} parallel streams (hourly slices)", run,
                          run["seconds"], run["peak_rss_bytes"], run["lake_bytes"]))
    for kind, run in (dlts or {}).items():
        label = {"dlt-connectorx": "dlt sql_table: connectorx arrow_stream",
                 "dlt-pyarrow": "dlt sql_table: pyarrow (default)"}[kind]
        lines.append(line(label, run, run["seconds"], run["peak_rss_bytes"], run["lake_bytes"]))
    reconciles = reconciles or []
    if reconciles:
        reconciled = best(reconciles)
        lines.append(line("reconcile: fingerprints + bisection", reconciled,
                          reconciled["seconds"],
                          max(run["peak_rss_bytes"] for run in reconciles), None))
    bronze_line = lines[1]
    aims = {
        "bronze_ratio_to_floor": {
            "aim": f">= {AIM_RATIO:.0%} of the floor",
            "value": bronze_line["ratio_to_floor"],
            "met": bronze_line["ratio_to_floor"] >= AIM_RATIO,
        },
        "bronze_peak_rss_mib": {
            "aim": f"< {AIM_RSS_MIB} MiB",
            "value": bronze_line["peak_rss_mib"],
            "met": bronze_line["peak_rss_mib"] < AIM_RSS_MIB,
        },
    }
    if len(lines) > 2 and lines[2]["path"].endswith("copy loop only"):
        aims["bronze_copy_loop_ratio_to_floor"] = {
            "aim": f">= {AIM_RATIO:.0%} of the floor (informative: no dagster run overhead)",
            "value": lines[2]["ratio_to_floor"],
            "met": lines[2]["ratio_to_floor"] >= AIM_RATIO,
        }
    if fulls:
        full_line = next(item for item in lines if item["path"] == "bronze+silver+gold")
        aims["full_peak_rss_mib"] = {
            "aim": f"< {AIM_RSS_MIB} MiB",
            "value": full_line["peak_rss_mib"],
            "met": full_line["peak_rss_mib"] < AIM_RSS_MIB,
        }
    if backfills:
        backfill_line = next(item for item in lines if item["path"] == BACKFILL_LINE)
        aims["backfill_ratio_to_floor"] = {
            "aim": f">= {AIM_BACKFILL_RATIO:.0%} of the floor (the command, every check included)",
            "value": backfill_line["ratio_to_floor"],
            "met": backfill_line["ratio_to_floor"] >= AIM_BACKFILL_RATIO,
        }
        aims["backfill_peak_rss_mib"] = {
            "aim": f"< {AIM_RSS_MIB} MiB for the whole process tree",
            "value": backfill_line["peak_rss_mib"],
            "met": backfill_line["peak_rss_mib"] < AIM_RSS_MIB,
        }
    dlt_lines = [item for item in lines if item["path"].startswith("dlt")]
    if dlt_lines:
        fastest = max(dlt_lines, key=lambda item: item["rows_per_second"])
        aims["bronze_vs_dlt_rows_per_s"] = {
            "aim": f">= {AIM_VS_DLT_SPEED}x the rows/s of dlt's best ({fastest['path']})",
            "value": bronze_line["rows_per_second"] / fastest["rows_per_second"],
            "shown": f"{bronze_line['rows_per_second'] / fastest['rows_per_second']:.2f}x",
            "met": bronze_line["rows_per_second"]
            >= AIM_VS_DLT_SPEED * fastest["rows_per_second"],
        }
        aims["bronze_vs_dlt_peak_rss"] = {
            "aim": f"<= {AIM_VS_DLT_MEMORY:.0%} of the peak RSS of dlt's best",
            "value": bronze_line["peak_rss_mib"] / fastest["peak_rss_mib"],
            "shown": f"{bronze_line['peak_rss_mib'] / fastest['peak_rss_mib']:.0%}",
            "met": bronze_line["peak_rss_mib"] <= AIM_VS_DLT_MEMORY * fastest["peak_rss_mib"],
        }
    reconciliation = None
    if reconciles:
        reconciliation = reconciliation_summary(reconciles, bronze, copy_best, floor, source)
        aims["reconcile_seconds_vs_bronze"] = {
            "aim": f"reconcile seconds <= {AIM_RECONCILE_SHARE} x bronze extraction seconds",
            "value": reconciliation["share_of_bronze_seconds"],
            "met": reconciliation["share_of_bronze_seconds"] <= AIM_RECONCILE_SHARE,
            "shown": (
                f"{reconciliation['seconds']:,.2f} s vs {bronze['seconds']:,.2f} s = "
                f"{reconciliation['share_of_bronze_seconds']:.2f} x"
            ),
        }
        worst = [run for run in reconciles if not run["matches"]]
        shown = worst[0] if worst else reconciles[0]
        aims["reconcile_matches"] = {
            "aim": "every hour's fingerprint equals the source's, in every round",
            "value": not worst,
            "met": not worst,
            "shown": (
                f"{shown['source_rows']:,} source rows = {shown['lake_rows']:,} lake rows, "
                f"{shown['hours_compared']} hours equal"
                if not worst
                else f"{shown['difference_count']:,} difference(s) in hour(s) "
                f"{shown['hours_differing']}"
            ),
        }
    return {
        "rows": source["rows_in_day"],
        "source": source,
        "copy_bytes_per_row": copy_bytes_per_row,
        "lines": lines,
        "aims": aims,
        "floor": {"runs": floors, "best": floor, "warmup": warmup},
        "bronze": {"runs": bronzes, "best": bronze},
        "full": {"runs": fulls, "best": best(fulls) if fulls else None},
        "backfill": {"runs": backfills, "best": best(backfills)} if backfills else None,
        "dlt": dlts or None,
        "streams": streamed or None,
        "reconcile": {"runs": reconciles, "best": best(reconciles), **reconciliation}
        if reconciles else None,
    }


def reconciliation_summary(
    reconciles: list, bronze: dict, copy_best: dict, floor: dict, source: dict
) -> dict:
    """Reconciliation beside the extraction of the same rows: time, and bytes from the source."""
    run = best(reconciles)
    sockets = run.get("source_socket_bytes") or {}
    return {
        "seconds": run["seconds"],
        "bronze_seconds": bronze["seconds"],
        "share_of_bronze_seconds": run["seconds"] / bronze["seconds"],
        "share_of_bronze_copy_loop_seconds": (
            run["seconds"] / copy_best["copy_seconds"] if copy_best.get("copy_seconds") else None
        ),
        "matches": all(item["matches"] for item in reconciles),
        "source_queries": run["source_queries"],
        "source_on_loopback": run["source_on_loopback"],
        # Traffic on `lo` in the call's window (both directions; rx == tx on loopback).
        "loopback_bytes": run["loopback_bytes"],
        "loopback_bytes_by_round": [item["loopback_bytes"] for item in reconciles],
        # The worker's own connections only: payload bytes by direction.
        "socket_bytes_from_source": sockets.get("received_bytes"),
        "socket_bytes_to_source": sockets.get("sent_bytes"),
        "source_connections": sockets.get("connections"),
        "pg_table_size": source["pg_table_size"],
        "pg_total_relation_size": source["pg_total_relation_size"],
        # What extraction moves for the same rows: the floor's binary COPY stream.
        "extraction_copy_bytes": floor["copy_bytes"],
        "phases": run["phases"],
        "phases_unaccounted_seconds": run["phases_unaccounted_seconds"],
        "assumption": (
            "loopback_bytes is the growth of /proc/net/dev's lo counters across the call, so "
            "it holds any other loopback traffic of the machine in that window; the bench runs "
            "one thing at a time, so it is this worker's traffic with PostgreSQL unless "
            "something else runs. socket_bytes_* count only the worker's own connections "
            "(TCP_INFO payload bytes)."
        ),
    }


def format_table(result: dict) -> str:
    headers = ["path", "rows", "seconds", "rows/s", "MB/s", "peak RSS MiB", "ratio to floor",
               "lake/source bytes"]
    body = []
    for item in result["lines"]:
        body.append([
            item["path"],
            f"{item['rows']:,}",
            f"{item['seconds']:,.2f}",
            f"{item['rows_per_second']:,.0f}",
            f"{item['mb_per_second']:,.1f}",
            f"{item['peak_rss_mib']:,.0f}",
            f"{item['ratio_to_floor']:.0%}",
            "-" if item["lake_to_source_bytes"] is None else f"{item['lake_to_source_bytes']:.2f}",
        ])
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]

    def render(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    source = result["source"]
    lines = [
        f"{result['rows']:,} rows of {source['table']} in one day ({source['day']}); table "
        f"{source['pg_table_size'] / MIB:,.0f} MiB without indexes, "
        f"{source['pg_total_relation_size'] / MIB:,.0f} MiB with "
        f"({source['avg_row_bytes_table']:,.0f} B/row on disk, "
        f"{result['copy_bytes_per_row']:,.0f} B/row in binary COPY)"
        + (f"; generated in {source['generation_seconds']:,.1f} s"
           if source.get("generation_seconds") else ""),
        render(headers),
        rule,
        *(render(row) for row in body),
        "MB/s: source data (binary COPY bytes) per second; lake/source: committed Parquet bytes "
        "/ pg_table_size; best of the rounds; peak RSS is the worst round's.",
    ]
    cores = [
        f"{item['path']}: client {item['cpu_cores_used']:.2f}"
        + (f", server {item['server_cpu_cores_used']:.2f}" if item["server_cpu_cores_used"] else "")
        for item in result["lines"] if item.get("cpu_cores_used") is not None
    ]
    lines.append("CPU cores busy: " + "; ".join(cores))
    if result.get("other_load"):
        lines.append(other_load_line(result["other_load"]) + " (before this size)")
    for name, aim in result["aims"].items():
        value = aim["value"]
        shown = aim.get("shown") or (f"{value:.0%}" if "ratio" in name else f"{value:,.0f} MiB")
        lines.append(f"aim {name}: {aim['aim']}: {shown} -> {'met' if aim['met'] else 'MISSED'}")
    if result.get("backfill"):
        lines.extend(backfill_step_lines(result["backfill"]["best"]))
    if result.get("reconcile"):
        lines.extend(reconciliation_lines(result["reconcile"]))
    if result.get("read_paths"):
        lines.extend(read_path_lines(result["read_paths"]))
    if result.get("spot_check"):
        lines.extend(spot_check_lines(result["spot_check"]))
    if result.get("sync"):
        lines.extend(sync_lines(result["sync"]))
    if result.get("wire"):
        lines.extend(wire_lines(result["wire"]))
    for label, summary in result.get("profiles", {}).items():
        lines.extend(profile_lines(label, summary))
    return "\n".join(lines)


def backfill_step_lines(run: dict) -> list[str]:
    """Where the backfill command's time went: its one pass, its integrity checks (what they
    cost beside the copy), the rest (start-up, Dagster's run and events, leases)."""
    steps = run.get("step_seconds") or {}
    if not steps:
        return []
    rest = run["seconds"] - sum(steps.values())
    return ["backfill command's time: " + "; ".join(
        f"{kind} {seconds:,.2f} s ({seconds / run['seconds']:.0%})"
        for kind, seconds in sorted(steps.items()))
        + f"; the rest (start-up, Dagster's run and events, leases) {rest:,.2f} s "
        f"({rest / run['seconds']:.0%})"]


def _kb(value: int | None) -> str:
    return "not measured" if value is None else f"{value / 1000:,.1f} KB"


def reconciliation_lines(reconciliation: dict) -> list[str]:
    table = reconciliation["pg_table_size"]
    lo = reconciliation["loopback_bytes"]
    received = reconciliation["socket_bytes_from_source"]
    lines = [
        f"reconcile bytes from source: {_kb(lo)} on lo (both directions; growth of "
        "/proc/net/dev lo rx == tx across the call, so any other loopback traffic in that "
        "window counts too: the bench assumes it runs alone"
        + ("" if reconciliation["source_on_loopback"] else
           "; the source is NOT on loopback here, so this is not its traffic")
        + f"); own connections: {_kb(received)} from source, "
        f"{_kb(reconciliation['socket_bytes_to_source'])} to it "
        f"({reconciliation['source_connections']} connection(s), "
        f"{reconciliation['source_queries']} fingerprint queries) vs table {table / 1000:,.0f} KB "
        f"(pg_table_size"
        + (f"; {received / table:.4%} of it" if received is not None and table else "")
        + f") and extraction's binary COPY "
        f"{reconciliation['extraction_copy_bytes'] / 1000:,.0f} KB",
    ]
    phases = reconciliation.get("phases") or {}
    if phases:
        parts = [f"{name} {phase['seconds']:,.2f} s ({phase['calls']}x)"
                 for name, phase in phases.items()]
        parts.append(f"other {reconciliation['phases_unaccounted_seconds']:,.2f} s")
        lines.append("reconcile time: " + "; ".join(parts))
    return lines


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("pyarrow", "deltalake", "dagster", "psycopg", "adbc-driver-postgresql",
                    "polars", "sqlalchemy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001 - informative only
        memory = None
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def other_load(window_s: float = 1.0) -> dict:
    """What else the machine is doing, measured before a size is timed: the 1-minute load
    average and the CPU the processes outside this bench's own tree used over `window_s`
    (the busiest named), so a figure taken beside a test session says so."""
    import psutil

    own = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    before = {}
    for process in psutil.process_iter(["pid", "name"]):
        if process.pid in own:
            continue
        try:
            times = process.cpu_times()
            before[process.pid] = (process.info["name"], times.user + times.system)
        except psutil.Error:
            continue
    time.sleep(window_s)
    busy: dict[str, float] = {}
    for pid, (name, cpu) in before.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used = times.user + times.system - cpu
        if used > 0:
            busy[name] = busy.get(name, 0.0) + used / window_s
    top = sorted(busy.items(), key=lambda item: -item[1])[:3]
    return {
        "load_average_1m": os.getloadavg()[0],
        "other_cores_busy": sum(busy.values()),
        "busiest": [{"name": name, "cores": round(cores, 2)} for name, cores in top],
    }


def other_load_line(load: dict) -> str:
    busiest = ", ".join(f"{item['name']} {item['cores']:.2f}" for item in load["busiest"])
    return (f"other load on the machine: load average {load['load_average_1m']:.2f} (1 min), "
            f"other processes {load['other_cores_busy']:.2f} cores busy"
            + (f" ({busiest})" if busiest else ""))


def parse_sizes(args: argparse.Namespace) -> list[int]:
    if args.sizes:
        sizes = [int(part.replace("_", "")) for part in args.sizes.split(",") if part.strip()]
    else:
        sizes = [args.rows if args.rows else (QUICK_ROWS if args.quick else DEFAULT_ROWS)]
        sizes += args.also_rows or []
    if any(size <= 0 for size in sizes):
        raise SystemExit("row counts must be positive")
    return sorted(dict.fromkeys(sizes))


def default_day() -> str:
    from llm_observatory.partitions import start_date

    return start_date().isoformat()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Bronze extraction from PostgreSQL vs the binary COPY floor "
        "(rows/s, peak RSS).",
    )
    parser.add_argument("--rows", type=int, default=None,
                        help=f"rows in the one day partition (default {DEFAULT_ROWS:,}; "
                             f"{QUICK_ROWS:,} with --quick)")
    parser.add_argument("--also-rows", type=int, action="append", metavar="N",
                        help="another size to measure (repeatable), e.g. --also-rows 5000000")
    parser.add_argument("--sizes", help="comma-separated sizes, e.g. 1000000,5000000 "
                                        "(replaces --rows/--also-rows)")
    parser.add_argument("--source-url",
                        help="an existing source database (SQLAlchemy URL) holding "
                             "llm_interactions; nothing is generated, --day (default: its "
                             "busiest day) is measured")
    parser.add_argument("--pg-admin-url",
                        help="an existing PostgreSQL server (SQLAlchemy URL of a maintenance "
                             "database) to create the bench databases in, instead of starting one")
    parser.add_argument("--day", help="the UTC day to generate and measure (default: the first "
                                      "day of the partitions)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved floor/bronze rounds, best taken "
                             "(default 2, 1 with --quick)")
    parser.add_argument("--full-repeats", type=int, default=1,
                        help="bronze+silver+gold runs (default 1)")
    parser.add_argument("--skip-full", action="store_true",
                        help="skip bronze+silver+gold (and the reconciliation, which reads its "
                             "silver)")
    parser.add_argument("--skip-reconcile", action="store_true",
                        help="skip the reconciliation against the source")
    parser.add_argument("--skip-streams", action="store_true",
                        help="skip bronze with 2 and 4 parallel source streams")
    parser.add_argument("--skip-dlt", action="store_true",
                        help="skip dlt's sql_database (connectorx and pyarrow backends)")
    parser.add_argument("--skip-read-paths", action="store_true",
                        help="skip the source read paths (ADBC, ODBC, SQLAlchemy) on the day")
    parser.add_argument("--skip-sync", action="store_true",
                        help="skip the incremental sync of a 1 %% change after the full load "
                             "(it changes the source, so it runs last)")
    parser.add_argument("--skip-departures", action="store_true",
                        help="skip the departure trigger cost (DELETE and UPDATE rows/s with and "
                             "without the capture, on its own copies of a generated source)")
    parser.add_argument("--departure-rows", type=int, default=DEPARTURE_ROWS,
                        help=f"rows of the departure-cost source (default {DEPARTURE_ROWS:,})")
    parser.add_argument("--skip-wire", action="store_true",
                        help="skip the bytes on the wire (the day's backfill, a sync and the "
                             "report with the lake on Azurite behind a counting proxy)")
    parser.add_argument("--skip-history", action="store_true",
                        help="skip the month of small days (a full load of --history-days days "
                             "ending yesterday, then a daily sync after 0.1 %% deletes spread "
                             "over all of them)")
    parser.add_argument("--history-days", type=int, default=None,
                        help=f"days of that history (default {HISTORY_DAYS}; "
                             f"{QUICK_HISTORY_DAYS} with --quick)")
    parser.add_argument("--history-rows-per-day", type=int, default=None,
                        help=f"interactions per day of that history (default "
                             f"{HISTORY_ROWS_PER_DAY:,}; {QUICK_HISTORY_ROWS_PER_DAY:,} with "
                             "--quick), with their metadata and logs")
    parser.add_argument("--profile", action="store_true",
                        help="one more bronze and full run each under py-spy (bench group): "
                             "where the CPU goes, by phase and hottest frame")
    parser.add_argument("--keep", action="store_true",
                        help="keep the PostgreSQL server / databases and the workers' logs")
    parser.add_argument("--output", help="JSON file (default bench/results/bench-<timestamp>.json)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when an aim is missed (by default the bench only reports)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS:,} rows and one round (for the test suite)")
    # Internal: one measured child.
    parser.add_argument("--worker", choices=("floor", "bronze", "full", "backfill", "reconcile",
                                             "sync",
                                             "history-full", "history-sync",
                                             "dlt-connectorx", "dlt-pyarrow",
                                             *(f"read-{path}" for path in READ_PATHS)),
                        help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.source_url and args.pg_admin_url:
        raise SystemExit("--source-url and --pg-admin-url exclude each other")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if args.departure_rows < 1:
        raise SystemExit("--departure-rows must be positive")
    if args.history_days is None:
        args.history_days = QUICK_HISTORY_DAYS if args.quick else HISTORY_DAYS
    if args.history_rows_per_day is None:
        args.history_rows_per_day = (
            QUICK_HISTORY_ROWS_PER_DAY if args.quick else HISTORY_ROWS_PER_DAY
        )
    if args.history_days < 1 or args.history_rows_per_day < 1:
        raise SystemExit("--history-days and --history-rows-per-day must be positive")
    sizes = [None] if args.source_url else parse_sizes(args)
    if not args.source_url and not args.day:
        args.day = default_day()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = Path(args.output) if args.output else RESULTS_DIR / f"bench-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="llm-obs-bench-"))

    report = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "command": [sys.executable, *sys.argv],
        "machine": machine(),
        "aims": {"ratio_to_floor": AIM_RATIO, "peak_rss_mib": AIM_RSS_MIB,
                 "reconcile_share_of_bronze_seconds": AIM_RECONCILE_SHARE,
                 "sync_share_of_full_seconds": AIM_SYNC_SHARE},
        "options": {k: v for k, v in vars(args).items() if k not in ("dsn", "lake", "result")},
        "results": [],
    }
    if args.source_url:
        report["options"]["source_url"] = sa_url_without_password(args.source_url)
    if args.pg_admin_url:
        report["options"]["pg_admin_url"] = sa_url_without_password(args.pg_admin_url)
    sources = Sources(args)
    tables = []
    try:
        sources.start()
        for size in sizes:
            load = other_load()
            say(other_load_line(load))
            result = measure_size(sources, size, args, workdir)
            result["other_load"] = load
            report["results"].append(result)
            table = format_table(result)
            tables.append(table)
            print("\n" + table + "\n", flush=True)
            output.write_text(json.dumps(report, indent=2, default=str))
        if not args.skip_departures and args.source_url:
            say("--source-url: no server to make copies in, the departure trigger cost is skipped")
        elif not args.skip_departures:
            report["departures"] = measure_departure_cost(sources, args)
            print("\n".join(departure_lines(report["departures"])) + "\n", flush=True)
            output.write_text(json.dumps(report, indent=2, default=str))
        if not args.skip_history and args.source_url:
            say("--source-url: the month of small days generates and changes its own source, "
                "so it is skipped")
        elif not args.skip_history:
            load = other_load()
            say(other_load_line(load))
            report["history"] = measure_history(sources, args, workdir)
            report["history"]["other_load"] = load
            print("\n" + "\n".join(history_lines(report["history"])) + "\n", flush=True)
            output.write_text(json.dumps(report, indent=2, default=str))
    finally:
        sources.cleanup()
        if args.keep:
            say(f"--keep: workers' logs and results in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
    report["all_aims_met"] = all(
        aim["met"]
        for result in report["results"]
        for name, aim in result["aims"].items()
        if not name.startswith("bronze_copy_loop")
    ) and all(aim["met"] for aim in report.get("history", {}).get("aims", {}).values())
    output.write_text(json.dumps(report, indent=2, default=str))
    if len(tables) > 1:
        print("\n\n".join(tables))
    say(f"results: {output}")
    if args.strict and not report["all_aims_met"]:
        say("--strict: an aim was missed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
