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

The measurements live beside this file, one module per concern: ``measuring`` (what they all
share), ``children`` (a worker in its own interpreter, py-spy profiles), ``source_db`` (the
source databases), ``floor_reads`` (the floor, the read paths, the spot check's query),
``lake_runs`` (bronze, bronze + silver + gold, the backfill command), ``reconcile_cost``,
``sync_cost``, ``departure_cost``, ``month_history``, ``dlt_compare``, ``wire_cost`` (around
``wire_bytes``), ``machine_load`` and ``summary`` (the table and its aims). This file parses the
command line, runs a worker (``--worker``) or the sizes and the once-per-run measurements, and
writes the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# This script's folder holds the modules below: on sys.path when it runs as a script, and put
# there when it is loaded by its path (the tests).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from children import ServerCpu, profile_summary, run_child
from departure_cost import DEPARTURE_ROWS, departure_lines, measure_departure_cost
from dlt_compare import worker_dlt
from floor_reads import (
    READ_PATHS,
    read_path_summary,
    spot_check_cost,
    spot_check_lines,
    worker_floor,
    worker_read,
)
from lake_runs import worker_backfill, worker_materialize
from machine_load import machine, other_load, other_load_line
from measuring import AIM_RSS_MIB, MIB, REPO_ROOT, TABLE, best, sa_url_without_password, say
from month_history import (
    HISTORY_DAYS,
    HISTORY_ROWS_PER_DAY,
    QUICK_HISTORY_DAYS,
    QUICK_HISTORY_ROWS_PER_DAY,
    history_lines,
    measure_history,
    worker_history_full,
    worker_history_sync,
)
from reconcile_cost import AIM_RECONCILE_SHARE, say_differences, worker_reconcile
from source_db import Sources, busiest_day, describe_source, prepare_source
from summary import AIM_RATIO, format_table, summarize
from sync_cost import AIM_SYNC_SHARE, change_source_for_sync, sync_summary, worker_sync
from wire_cost import measure_wire, wire_aims, wire_lines

# The workers import the project's packages (and llm_observatory_tests), from the checkout.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
RESULTS_DIR = REPO_ROOT / "bench" / "results"


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
    }.get(args.worker, worker_materialize)
    figures = worker(args)
    Path(args.result).write_text(json.dumps(figures, indent=2, default=str))
    return 0


class SizeChildren:
    """Runs the measurement workers of one size (one source day), each in its own process,
    and says each one's rows/s and peak memory as it finishes."""

    def __init__(self, url: str, day: str, workdir: Path, tag: str, server_cpu: ServerCpu):
        self.url, self.day, self.workdir, self.tag = url, day, workdir, tag
        self.server_cpu = server_cpu

    def __call__(self, kind: str, label: str, **options) -> dict:
        figures = run_child(
            kind,
            self.url,
            self.day,
            self.workdir,
            f"{self.tag}-{label}",
            self.server_cpu,
            **options,
        )
        say(
            f"{label}: {figures['rows'] / figures['seconds']:,.0f} rows/s, "
            f"peak RSS {figures['peak_rss_bytes'] / MIB:,.0f} MiB"
        )
        return figures


def _source_of_size(sources: Sources, rows: int | None, args: argparse.Namespace) -> tuple:
    """The source day to measure: the given database's, or one generated; its URL and facts."""
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
    return url, day, source


def _measure_reads(child: SizeChildren, args: argparse.Namespace) -> dict:
    """The floor and bronze, each read path, parallel streams and dlt."""
    reads: dict = {"floors": [], "bronzes": [], "read_paths": {}, "streamed": {}, "dlts": {}}
    for round_number in range(1, args.repeats + 1):
        reads["floors"].append(child("floor", f"floor-{round_number}"))
        reads["bronzes"].append(child("bronze", f"bronze-{round_number}"))
    for round_number in range(1, 1 if args.skip_read_paths else args.repeats + 1):
        for path in READ_PATHS:
            figures = child(f"read-{path}", f"read-{path}-{round_number}")
            reads["read_paths"].setdefault(path, []).append(figures)
    for count in () if args.skip_streams else (2, 4):
        reads["streamed"][count] = child("bronze", f"bronze-{count}-streams", streams=count)
    if args.skip_dlt:
        return reads
    if importlib.util.find_spec("dlt") is None:
        say("dlt is not installed (the `bench` dependency group): its rows are skipped")
        return reads
    for kind in ("dlt-connectorx", "dlt-pyarrow"):
        reads["dlts"][kind] = child(kind, kind)
    return reads


def _measure_reconcile(child: SizeChildren, args: argparse.Namespace, lake: Path) -> list[dict]:
    """Reconciliation against a full run's lake (its silver + quarantine are the day's rows)."""
    reconciles = []
    for round_number in range(1, args.repeats + 1):
        figures = child("reconcile", f"reconcile-{round_number}", lake=lake)
        say(
            f"reconcile-{round_number}: {figures['seconds']:,.2f} s, "
            f"{figures['source_queries']} source queries, "
            f"{'matches' if figures['matches'] else 'DOES NOT MATCH'} the source"
        )
        if not figures["matches"]:
            say_differences(figures)
        reconciles.append(figures)
    return reconciles


def _measure_full(child: SizeChildren, args: argparse.Namespace) -> dict:
    """The whole path (materialize, then the backfill command), reconciliation and a sync on
    its lake."""
    full: dict = {"fulls": [], "backfills": [], "reconciles": [], "synced": None}
    if args.skip_full:
        if not args.skip_reconcile:
            say("--skip-full: no silver to reconcile, reconciliation skipped")
        return full
    reconciling = not args.skip_reconcile or not args.skip_sync
    full_lakes = []
    for round_number in range(1, args.full_repeats + 1):
        label = f"bronze+silver+gold-{round_number}"
        full["fulls"].append(child("full", label, keep_lake=reconciling))
        full_lakes.append(child.workdir / f"lake-{child.tag}-{label}")
    for round_number in range(1, args.full_repeats + 1):
        full["backfills"].append(child("backfill", f"backfill-{round_number}"))
    if not args.skip_reconcile:
        full["reconciles"] = _measure_reconcile(child, args, full_lakes[-1])
    if not args.skip_sync and args.source_url:
        say("--source-url: the sync bench changes the source, so it is skipped here")
    elif not args.skip_sync:
        changed = change_source_for_sync(child.url, child.day)
        say(
            f"source changed after the full load: {changed['updated']:,} rows updated over "
            f"the day, {changed['inserted']:,} new rows on the next day"
        )
        full["synced"] = child("sync", "sync", lake=full_lakes[-1])
        full["synced"]["source_change"] = changed
    if reconciling and not os.environ.get("BENCH_KEEP_LAKES"):
        for folder in full_lakes:
            shutil.rmtree(folder, ignore_errors=True)
    return full


def _add_profiles(result: dict, child: SizeChildren) -> None:
    """Extra runs, never the measured ones: sampling slows a worker down a little."""
    result["profiles"] = {}
    for kind in ("bronze", "full"):
        path = child.workdir / f"{child.tag}-{kind}-profile.txt"
        say(f"profiling {kind} with py-spy")
        child(kind, f"{kind}-profiled", profile=path)
        result["profiles"][kind] = profile_summary(path)


def _add_sync(result: dict, synced: dict, fulls: list[dict]) -> None:
    result["sync"] = sync_summary(synced, best(fulls))
    result["aims"]["sync_share_of_full_seconds"] = {
        "aim": f"1 % change synced in <= {AIM_SYNC_SHARE:.0%} of the full load's seconds",
        "value": result["sync"]["share_of_full_seconds"],
        "shown": f"{result['sync']['share_of_full_seconds']:.1%}",
        "met": result["sync"]["share_of_full_seconds"] <= AIM_SYNC_SHARE,
    }


def measure_size(
    sources: Sources, rows: int | None, args: argparse.Namespace, workdir: Path
) -> dict:
    url, day, source = _source_of_size(sources, rows, args)
    server_cpu = ServerCpu(sources.postmaster_pid)
    tag = f"{source['rows_in_day']}"
    say("warm-up read (floor, discarded)")
    warmup = run_child("floor", url, day, workdir, f"{tag}-warmup", server_cpu)
    child = SizeChildren(url, day, workdir, tag, server_cpu)
    reads = _measure_reads(child, args)
    full = _measure_full(child, args)
    result = summarize(
        source,
        warmup,
        reads["floors"],
        reads["bronzes"],
        full["fulls"],
        full["reconciles"],
        reads["dlts"],
        reads["streamed"],
        full["backfills"],
    )
    if reads["read_paths"]:
        result["read_paths"] = read_path_summary(reads["read_paths"], reads["floors"])
        result["aims"]["odbc_share_of_adbc_rows_per_second"] = result["read_paths"]["aim"]
    result["spot_check"] = spot_check_cost(url, day)
    say(spot_check_lines(result["spot_check"])[0])
    if args.profile:
        _add_profiles(result, child)
    if not args.skip_wire:
        result["wire"] = measure_wire(url, day, workdir)
        print("\n".join(wire_lines(result["wire"])) + "\n", flush=True)
        result["aims"].update(wire_aims(result["wire"]))
    if full["synced"] is not None:
        _add_sync(result, full["synced"], full["fulls"])
    return result


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
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"rows in the one day partition (default {DEFAULT_ROWS:,}; "
        f"{QUICK_ROWS:,} with --quick)",
    )
    parser.add_argument(
        "--also-rows",
        type=int,
        action="append",
        metavar="N",
        help="another size to measure (repeatable), e.g. --also-rows 5000000",
    )
    parser.add_argument(
        "--sizes", help="comma-separated sizes, e.g. 1000000,5000000 (replaces --rows/--also-rows)"
    )
    parser.add_argument(
        "--source-url",
        help="an existing source database (SQLAlchemy URL) holding "
        "llm_interactions; nothing is generated, --day (default: its "
        "busiest day) is measured",
    )
    parser.add_argument(
        "--pg-admin-url",
        help="an existing PostgreSQL server (SQLAlchemy URL of a maintenance "
        "database) to create the bench databases in, instead of starting one",
    )
    parser.add_argument(
        "--day",
        help="the UTC day to generate and measure (default: the first day of the partitions)",
    )
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved floor/bronze rounds, best taken (default 2, 1 with --quick)",
    )
    parser.add_argument(
        "--full-repeats", type=int, default=1, help="bronze+silver+gold runs (default 1)"
    )
    parser.add_argument(
        "--skip-full",
        action="store_true",
        help="skip bronze+silver+gold (and the reconciliation, which reads its silver)",
    )
    parser.add_argument(
        "--skip-reconcile", action="store_true", help="skip the reconciliation against the source"
    )
    parser.add_argument(
        "--skip-streams",
        action="store_true",
        help="skip bronze with 2 and 4 parallel source streams",
    )
    parser.add_argument(
        "--skip-dlt",
        action="store_true",
        help="skip dlt's sql_database (connectorx and pyarrow backends)",
    )
    parser.add_argument(
        "--skip-read-paths",
        action="store_true",
        help="skip the source read paths (ADBC, ODBC, SQLAlchemy) on the day",
    )
    parser.add_argument(
        "--skip-sync",
        action="store_true",
        help="skip the incremental sync of a 1 %% change after the full load "
        "(it changes the source, so it runs last)",
    )
    parser.add_argument(
        "--skip-departures",
        action="store_true",
        help="skip the departure trigger cost (DELETE and UPDATE rows/s with and "
        "without the capture, on its own copies of a generated source)",
    )
    parser.add_argument(
        "--departure-rows",
        type=int,
        default=DEPARTURE_ROWS,
        help=f"rows of the departure-cost source (default {DEPARTURE_ROWS:,})",
    )
    parser.add_argument(
        "--skip-wire",
        action="store_true",
        help="skip the bytes on the wire (the day's backfill, a sync and the "
        "report with the lake on Azurite behind a counting proxy)",
    )
    parser.add_argument(
        "--skip-history",
        action="store_true",
        help="skip the month of small days (a full load of --history-days days "
        "ending yesterday, then a daily sync after 0.1 %% deletes spread "
        "over all of them)",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=None,
        help=f"days of that history (default {HISTORY_DAYS}; {QUICK_HISTORY_DAYS} with --quick)",
    )
    parser.add_argument(
        "--history-rows-per-day",
        type=int,
        default=None,
        help=f"interactions per day of that history (default "
        f"{HISTORY_ROWS_PER_DAY:,}; {QUICK_HISTORY_ROWS_PER_DAY:,} with "
        "--quick), with their metadata and logs",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more bronze and full run each under py-spy (bench group): "
        "where the CPU goes, by phase and hottest frame",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the PostgreSQL server / databases and the workers' logs",
    )
    parser.add_argument("--output", help="JSON file (default bench/results/bench-<timestamp>.json)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when an aim is missed (by default the bench only reports)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROWS:,} rows and one round (for the test suite)",
    )
    # Internal: one measured child.
    parser.add_argument(
        "--worker",
        choices=(
            "floor",
            "bronze",
            "full",
            "backfill",
            "reconcile",
            "sync",
            "history-full",
            "history-sync",
            "dlt-connectorx",
            "dlt-pyarrow",
            *(f"read-{path}" for path in READ_PATHS),
        ),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def settle_options(args: argparse.Namespace) -> None:
    """Defaults that depend on other options (--quick), and the options' limits."""
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
    if not args.source_url and not args.day:
        args.day = default_day()


def measure_beyond_sizes(
    report: dict, sources: Sources, args: argparse.Namespace, workdir: Path, output: Path
) -> None:
    """The departure trigger's cost and the month of small days, after the sizes."""
    if not args.skip_departures and args.source_url:
        say("--source-url: no server to make copies in, the departure trigger cost is skipped")
    elif not args.skip_departures:
        report["departures"] = measure_departure_cost(sources, args)
        print("\n".join(departure_lines(report["departures"])) + "\n", flush=True)
        output.write_text(json.dumps(report, indent=2, default=str))
    if not args.skip_history and args.source_url:
        say(
            "--source-url: the month of small days generates and changes its own source, "
            "so it is skipped"
        )
    elif not args.skip_history:
        load = other_load()
        say(other_load_line(load))
        report["history"] = measure_history(sources, args, workdir)
        report["history"]["other_load"] = load
        print("\n" + "\n".join(history_lines(report["history"])) + "\n", flush=True)
        output.write_text(json.dumps(report, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args)
    settle_options(args)
    sizes = [None] if args.source_url else parse_sizes(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = Path(args.output) if args.output else RESULTS_DIR / f"bench-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="llm-obs-bench-"))

    report = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "command": [sys.executable, *sys.argv],
        "machine": machine(),
        "aims": {
            "ratio_to_floor": AIM_RATIO,
            "peak_rss_mib": AIM_RSS_MIB,
            "reconcile_share_of_bronze_seconds": AIM_RECONCILE_SHARE,
            "sync_share_of_full_seconds": AIM_SYNC_SHARE,
        },
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
        measure_beyond_sizes(report, sources, args, workdir, output)
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
