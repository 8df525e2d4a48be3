"""The month of small days (issue 13): a history generated with the departure capture, fully
loaded by the backfill command, then 0.1 % of every table's rows deleted across the days and
one daily sync cycle per table; the lake is checked against the source and the deletes after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from children import ServerCpu, run_child
from lake_runs import COMMAND_FIGURES, lake_files_bytes, run_backfill_command
from machine_load import other_load_line
from measuring import (
    AIM_RSS_MIB,
    MIB,
    TABLE,
    RssSampler,
    libpq_url,
    process_figures,
    say,
    status_kib,
)
from source_db import Sources

# The month of small days (issue 13): days of history ending yesterday (UTC), a full load of
# every day, then 0.1 % of each table's rows deleted (md5 prefix of the key, so spread evenly
# over the days) and one daily sync cycle per table.
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 20_000
QUICK_HISTORY_DAYS = 3
QUICK_HISTORY_ROWS_PER_DAY = 500
HISTORY_DELETE_BELOW = "004189"  # 0x004189 / 0x1000000 = 0.1 %


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
    ran = run_backfill_command(
        args, days[0], days[-1], [table.name for table in TABLES], home=Path(args.lake).parent
    )
    lake = LakeResource(url=args.lake)
    lake_bytes, rows = {}, {}
    for table in TABLES:
        for layer, location in (
            ("bronze", bronze_location(lake, table)),
            ("silver", silver_location(lake, table)),
            ("quarantine", quarantine_location(lake, table)),
        ):
            lake_bytes[f"{layer}/{table.name}"] = lake_files_bytes(location)[0]
        rows[table.name] = (
            open_table(bronze_location(lake, table)).to_pyarrow_dataset().count_rows()
        )
    lake_bytes["gold/daily_metrics"] = lake_files_bytes(daily_metrics_location(lake))[0]
    return {
        "path": "history-full",
        "rows": sum(rows.values()),
        "rows_by_table": rows,
        "lake_bytes_by_table": lake_bytes,
        **{
            name: ran[name]
            for name in (
                *COMMAND_FIGURES,
                "days",
                "failed_checks",
                "step_seconds",
                "child_processes",
                "own_peak_rss_bytes",
            )
        },
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
    rss_before = status_kib("VmRSS") * 1024
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
    figures = process_figures(wall, cpu_before, rss_before)
    source.engine.dispose()
    return {"path": "history-sync", "rows": 0, "cycles": cycles, **figures}


def _iso_or_none(moment) -> str | None:
    return None if moment is None else moment.isoformat()


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
    say(
        f"month of small days: generating {days} x {per_day:,} rows of {TABLE} (+ metadata, "
        f"logs), {first}..{last}, with the departure capture"
    )
    started = time.perf_counter()
    summary = generate_source(
        url, start_date=first, days=days, rows_per_day=per_day, seed=args.seed
    )
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
        say(
            f"full load of the {days} days: llm-observatory backfill (every table, every check; "
            "one run a day)"
        )
        full = run_child(
            "history-full", url, first.isoformat(), workdir, "history-full", server_cpu, **options
        )
        say(
            f"full load: {full['seconds']:,.1f} s, peak RSS {full['peak_rss_bytes'] / MIB:,.0f} "
            f"MiB, {full['rows']:,} rows"
        )
        if full.get("child_processes"):
            say(
                "processes the command started (their resident memory is in its peak): "
                + "; ".join(full["child_processes"])
            )
        if full["failed_checks"]:
            say(f"FAILED CHECKS in the full load: {'; '.join(full['failed_checks'][:10])}")
        deleted = delete_history_rows(url)
        say(
            "deleted "
            + ", ".join(
                f"{name} {figures['rows']:,} over {len(figures['by_day'])} day(s)"
                for name, figures in deleted.items()
            )
        )
        synced = run_child(
            "history-sync", url, first.isoformat(), workdir, "history-sync", server_cpu, **options
        )
        say(f"sync: {synced['seconds']:,.1f} s, peak RSS {synced['peak_rss_bytes'] / MIB:,.0f} MiB")
        verification = verify_history(lake, deleted)
    finally:
        if not args.keep:
            sources.drop_database(url)
        if not os.environ.get("BENCH_KEEP_LAKES"):
            shutil.rmtree(folder, ignore_errors=True)
    return history_summary(
        days, per_day, first, last, summary, generated, full, deleted, synced, verification
    )


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
        left = (
            keys_of(silver_location(lake, spec), spec.key)
            | keys_of(quarantine_location(lake, spec), spec.key)
        ) & expected["keys"]
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
            mismatches.append(
                f"{spec.name}: silver {silver:,} + quarantine {quarantine:,} = "
                f"{silver + quarantine:,} rows, the source holds {source_rows:,}"
            )
        if bronze != source_rows:
            mismatches.append(
                f"{spec.name}: bronze holds {bronze:,} rows, the source {source_rows:,}"
            )
        if left:
            mismatches.append(
                f"{spec.name}: {len(left):,} deleted key(s) still in silver or "
                f"quarantine, e.g. {sorted(left)[:3]}"
            )
        if recorded != expected["keys"]:
            mismatches.append(
                f"{spec.name}: _deleted holds {len(recorded):,} key(s), {expected['rows']:,} "
                f"deleted; {len(expected['keys'] - recorded):,} deleted key(s) missing there, "
                f"{len(recorded - expected['keys']):,} there and never deleted"
            )
        if spec.silver_model_column:
            gold = open_table(daily_metrics_location(lake))
            requests = (
                0
                if gold is None
                else int(
                    pc.sum(
                        gold.to_pyarrow_dataset().to_table(columns=["requests"]).column("requests")
                    ).as_py()
                    or 0
                )
            )
            figures["gold_requests"] = requests
            if requests != silver:
                mismatches.append(
                    f"gold: {requests:,} requests, silver {spec.name} holds {silver:,} rows"
                )
        tables[spec.name] = figures
    return {"matches": not mismatches, "mismatches": mismatches, "tables": tables}


def history_summary(
    days: int,
    per_day: int,
    first: dt.date,
    last: dt.date,
    summary,
    generated: float,
    full: dict,
    deleted: dict,
    synced: dict,
    verification: dict,
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
        "deleted": {
            name: {field: value for field, value in figures.items() if field != "keys"}
            for name, figures in deleted.items()
        },
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
            "process": {
                name: synced[name]
                for name in (
                    "cpu_seconds",
                    "cpu_cores_used",
                    "rss_before_bytes",
                    "load_average",
                    "server_cpu_seconds",
                )
                if name in synced
            },
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
        for name, figures in (
            ("full_load_peak_rss_mib", full),
            ("sync_peak_rss_mib", result["sync"]),
        )
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
            "  its steps: "
            + "; ".join(
                f"{kind} {seconds:,.1f} s ({seconds / len(per_day or [1]):,.2f} s a day)"
                for kind, seconds in sorted(steps.items())
            )
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
            + ", ".join(
                f"{name} {figures['deleted_table_rows']:,}"
                for name, figures in verification["tables"].items()
            )
            + "), gold's requests = silver's rows"
        )
    else:
        lines.append("  MISMATCH after the sync: " + "; ".join(verification["mismatches"]))
    lines.append(
        "  aims: "
        + "; ".join(
            f"{name} {aim['shown']} ({'met' if aim['met'] else 'MISSED'})"
            for name, aim in history["aims"].items()
        )
    )
    if history.get("other_load"):
        lines.append(other_load_line(history["other_load"]) + " (before the month)")
    return lines
