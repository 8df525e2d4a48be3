"""The incremental sync after the full load: 1 % of the day changed in the source (updates
over the day, new rows on the next day), then a changes-only cycle and a daily one, timed in a
worker; the changes-only cycle's seconds set beside the full load's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

from measuring import MIB, TABLE, RssSampler, day_bounds, process_figures, status_kib

AIM_SYNC_SHARE = 0.05


# The change synced after the full load: this share of the day's rows updated (spread over
# every hour), and as many new rows on the next day. md5 prefixes pick them, deterministic.
SYNC_UPDATE_BELOW = "0147ae"  # 0x0147ae / 0x1000000 = 0.5 %
SYNC_INSERT_BELOW = "028f5c"  # the next 0.5 %


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
    rss_before = status_kib("VmRSS") * 1024
    cpu_before = os.times()
    with RssSampler() as sampler:
        started = time.perf_counter()
        for name, settings in (
            ("changes", SyncSettings(reconcile_recent_days=0)),
            # Every day from the loaded one to the high-water mark's (today's): the rotation
            # slot of a 1-day period covers them all.
            ("daily", SyncSettings(reconcile_recent_days=1, rotation_period_days=1, first_day=day)),
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
    figures = process_figures(wall, cpu_before, rss_before)
    source.engine.dispose()
    return {
        "path": "sync",
        "rows": cycles["changes"]["rows_extracted"],
        "cycles": cycles,
        **figures,
    }


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
