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
5. a table with rows/s, MB/s (of source data, sized by the binary COPY stream), peak RSS, the
   ratio to the floor and lake bytes / source bytes, with the aims (>= 70 % of the floor, peak
   RSS < 512 MiB) marked met or missed; everything goes to a JSON file in ``bench/results/``.

Peak RSS is the child's own high-water mark (``VmHWM`` in /proc/self/status; ``ru_maxrss``
would inherit the parent's across fork+exec), the Python interpreter and its imports included.

Examples::

    make bench                                  # 1M rows
    make bench BENCH_ARGS="--sizes 1000000,5000000"
    .venv/bin/python bench/run.py --quick       # 100k rows, one round
    .venv/bin/python bench/run.py --source-url postgresql+psycopg://u@host/db --day 2026-11-01

A worker can be run alone, e.g. under a profiler:
``BENCH_SOURCE_URL=URL bench/run.py --worker bronze --day D --lake DIR --result out.json``
(``--worker floor`` reads ``BENCH_DSN``, a libpq URL).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
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
MIB = 1024 * 1024
MB = 1_000_000
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WORKER_TIMEOUT_S = 3600
RSS_SAMPLE_S = 0.1


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

    from llm_observatory.assets.bronze import bronze_assets, bronze_key
    from llm_observatory.assets.gold import gold_assets
    from llm_observatory.assets.silver import silver_assets, silver_key
    from llm_observatory.layout import (
        bronze_location,
        daily_metrics_location,
        quarantine_location,
        silver_location,
    )
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import LLM_INTERACTIONS

    assets = [a for a in bronze_assets if bronze_key(LLM_INTERACTIONS) in a.keys]
    if args.worker == "full":
        assets += [a for a in silver_assets if silver_key(LLM_INTERACTIONS) in a.keys]
        assets += list(gold_assets)
    lake = LakeResource(url=args.lake)
    source_url = args.source_url or os.environ["BENCH_SOURCE_URL"]
    resources = {"source": SourceDatabase(url=source_url), "lake": lake}
    instance = dg.DagsterInstance.ephemeral()

    rss_before = _status_kib("VmRSS") * 1024
    cpu_before = os.times()
    with RssSampler() as sampler:
        started = time.perf_counter()
        result = dg.materialize(
            assets,
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


def run_worker(args: argparse.Namespace) -> int:
    worker = worker_floor if args.worker == "floor" else worker_materialize
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

    def new_database(self, rows: int) -> str:
        import psycopg
        from psycopg import sql

        name = f"bench_{rows}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return with_database(self.admin_url, name)

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


def sa_url_without_password(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def run_child(
    kind: str, url: str, day: str, workdir: Path, label: str, server_cpu: ServerCpu
) -> dict:
    """One worker in its own interpreter; its figures, or SystemExit with its log's tail."""
    result_file = workdir / f"{label}.json"
    log_file = workdir / f"{label}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--day", day,
               "--result", str(result_file)]
    # Connection URLs go through the environment: a password stays out of `ps`.
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    if kind == "floor":
        env["BENCH_DSN"] = libpq_url(url)
    else:
        env["BENCH_SOURCE_URL"] = url
        command += ["--lake", str(workdir / f"lake-{label}")]
    env.pop("DAGSTER_HOME", None)
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
    if kind != "floor" and not os.environ.get("BENCH_KEEP_LAKES"):
        shutil.rmtree(workdir / f"lake-{label}", ignore_errors=True)
    return figures


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

    def child(kind: str, label: str) -> dict:
        figures = run_child(kind, url, day, workdir, f"{tag}-{label}", server_cpu)
        say(
            f"{label}: {figures['rows'] / figures['seconds']:,.0f} rows/s, "
            f"peak RSS {figures['peak_rss_bytes'] / MIB:,.0f} MiB"
        )
        return figures

    for round_number in range(1, args.repeats + 1):
        floors.append(child("floor", f"floor-{round_number}"))
        bronzes.append(child("bronze", f"bronze-{round_number}"))
    if not args.skip_full:
        for round_number in range(1, args.full_repeats + 1):
            fulls.append(child("full", f"bronze+silver+gold-{round_number}"))
    return summarize(source, warmup, floors, bronzes, fulls)


def summarize(source: dict, warmup: dict, floors: list, bronzes: list, fulls: list) -> dict:
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
        aims["full_peak_rss_mib"] = {
            "aim": f"< {AIM_RSS_MIB} MiB",
            "value": lines[-1]["peak_rss_mib"],
            "met": lines[-1]["peak_rss_mib"] < AIM_RSS_MIB,
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
    for name, aim in result["aims"].items():
        value = aim["value"]
        shown = f"{value:.0%}" if "ratio" in name else f"{value:,.0f} MiB"
        lines.append(f"aim {name}: {aim['aim']}: {shown} -> {'met' if aim['met'] else 'MISSED'}")
    return "\n".join(lines)


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
    parser.add_argument("--skip-full", action="store_true", help="skip bronze+silver+gold")
    parser.add_argument("--keep", action="store_true",
                        help="keep the PostgreSQL server / databases and the workers' logs")
    parser.add_argument("--output", help="JSON file (default bench/results/bench-<timestamp>.json)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when an aim is missed (by default the bench only reports)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS:,} rows and one round (for the test suite)")
    # Internal: one measured child.
    parser.add_argument("--worker", choices=("floor", "bronze", "full"), help=argparse.SUPPRESS)
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
        "aims": {"ratio_to_floor": AIM_RATIO, "peak_rss_mib": AIM_RSS_MIB},
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
            result = measure_size(sources, size, args, workdir)
            report["results"].append(result)
            table = format_table(result)
            tables.append(table)
            print("\n" + table + "\n", flush=True)
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
    )
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
