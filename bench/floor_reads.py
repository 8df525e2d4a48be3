"""The floor and the source read paths: the day's binary COPY read and discarded (what no
extraction can beat), the day streamed through each read path of the source resource (ADBC,
ODBC, SQLAlchemy), and the spot check's source query timed beside the day's copy read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

from measuring import EVENT_TIME, MIB, TABLE, best, day_bounds, process_figures, status_kib

# The spot check's sample size in a run (TableSpec.spot_check_rows' default).
SPOT_CHECK_ROWS = 10_000


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
    rss_before = status_kib("VmRSS") * 1024
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
        **process_figures(wall, cpu_before, rss_before),
    }


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
    rss_before = status_kib("VmRSS") * 1024
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
        **process_figures(wall, cpu_before, rss_before),
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
