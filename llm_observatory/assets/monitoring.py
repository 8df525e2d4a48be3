"""Query monitoring: the questions analysts ask, timed against the lake and against the source.

The migration guide asks to watch query performance before and after the move. The asset
`monitoring/query_latency` runs a fixed set of typical queries against the lake's Delta tables
(Polars, reading the Delta log and only the files the filters need) and the same questions
against the source (SQLAlchemy, bound parameters), each several times, and records p50/p95 per
query and side as numeric metadata: the asset's page in the UI plots every figure over its
materializations. After cutover the source may be gone: its side is then skipped, not failed.
"""

import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from llm_observatory import settings
from llm_observatory.io.delta_lake import current_files, open_table
from llm_observatory.layout import silver_key, silver_location
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase, SourceError, SourceTable
from llm_observatory.resources.source_load import (
    SOURCE_POOL,
    probe_latency,
    source_activity,
)
from llm_observatory.tables import LLM_INTERACTIONS

QUERY_LATENCY_KEY = dg.AssetKey(["monitoring", "query_latency"])
ANSWERED_CHECK = "every_query_answered_on_the_lake"
SOURCE_HEALTH_KEY = dg.AssetKey(["monitoring", "source_health"])
PROBE_WITHIN_LIMIT_CHECK = "source_probe_within_latency_limit"
WEEK_DAYS = 7


@dataclass(frozen=True)
class QueryParameters:
    """What the queries ask about: the latest day the lake has, its week and month, one id."""

    day: dt.date
    interaction_id: str

    @property
    def week(self) -> tuple[dt.date, dt.date]:
        return self.day - dt.timedelta(days=WEEK_DAYS - 1), self.day

    @property
    def month(self) -> tuple[dt.date, dt.date]:
        first = self.day.replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return first, following - dt.timedelta(days=1)


def pick_parameters(lake: LakeResource) -> QueryParameters | None:
    """The newest day of silver interactions and the first key in its first file."""
    location = silver_location(lake, LLM_INTERACTIONS)
    table = open_table(location)
    if table is None:
        return None
    files = current_files(table, None)
    if not files:
        return None
    newest = max(str(partition["date"]) for _, partition in files)
    day = dt.date.fromisoformat(newest)
    path = next(path for path, partition in files if str(partition["date"]) == newest)
    with location.filesystem.open(f"{location.fs_path}/{path}", "rb") as handle:
        first = pq.ParquetFile(handle).read_row_group(0, columns=[LLM_INTERACTIONS.key])
    return QueryParameters(day=day, interaction_id=first.column(0)[0].as_py())


# The lake's side: Polars over the Delta table; `date`, `hour` and `model` are partition columns.


def _scan(lake: LakeResource) -> pl.LazyFrame:
    location = silver_location(lake, LLM_INTERACTIONS)
    return pl.scan_delta(location.uri, storage_options=location.storage_options or None)


def _between(column: str, first: dt.date, last: dt.date) -> pl.Expr:
    return pl.col(column).is_between(first, last, closed="both")


def lake_model_latency(lake: LakeResource, p: QueryParameters) -> int:
    latency = pl.col("latency_ms").cast(pl.Float64)
    frame = (
        _scan(lake)
        .filter(pl.col("date") == p.day)
        .group_by("model")
        .agg(
            pl.len().alias("requests"),
            latency.quantile(0.5, interpolation="linear").alias("p50"),
            latency.quantile(0.95, interpolation="linear").alias("p95"),
            latency.quantile(0.99, interpolation="linear").alias("p99"),
        )
        .collect()
    )
    return frame.height


def lake_hourly_errors(lake: LakeResource, p: QueryParameters) -> int:
    frame = (
        _scan(lake)
        .filter(_between("date", *p.week))
        .group_by("date", "hour")
        .agg(pl.len().alias("requests"), (pl.col("status") == "error").sum().alias("errors"))
        .with_columns((pl.col("errors") / pl.col("requests")).alias("error_rate"))
        .collect()
    )
    return frame.height


def lake_one_interaction(lake: LakeResource, p: QueryParameters) -> int:
    frame = _scan(lake).filter(pl.col(LLM_INTERACTIONS.key) == p.interaction_id).collect()
    return frame.height


def lake_month_cost(lake: LakeResource, p: QueryParameters) -> int:
    frame = (
        _scan(lake)
        .filter(_between("date", *p.month))
        .group_by("model")
        .agg(pl.col("cost_usd").sum())
        .collect()
    )
    return frame.height


# The source's side: the same questions in SQL the source's own dialect runs.


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _window(source: SourceDatabase, table: SourceTable, first: dt.date, last: dt.date):
    return (
        table.event_time >= sa.bindparam("window_start", source.bind_time(_day_start(first))),
        table.event_time
        < sa.bindparam("window_end", source.bind_time(_day_start(last + dt.timedelta(days=1)))),
    )


def _hour_bucket(source: SourceDatabase, column: sa.Column):
    """The hour an event falls in, in each dialect's own terms."""
    if source.dialect_name == "postgresql":
        return sa.func.date_trunc("hour", column)
    if source.dialect_name == "mssql":
        return sa.func.dateadd(
            sa.literal_column("hour"), sa.func.datediff(sa.literal_column("hour"), 0, column), 0
        )
    return sa.func.strftime("%Y-%m-%d %H", column)


def source_model_latency(source: SourceDatabase, table: SourceTable, p: QueryParameters):
    c = table.table.c
    columns = [c.model_name, sa.func.count().label("requests")]
    if source.dialect_name == "postgresql":
        columns += [
            sa.func.percentile_cont(q).within_group(c.latency_ms).label(f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ]
    else:  # SQL Server's PERCENTILE_CONT is a window function, SQLite has none
        columns += [sa.func.avg(c.latency_ms), sa.func.max(c.latency_ms)]
    return sa.select(*columns).where(*_window(source, table, p.day, p.day)).group_by(c.model_name)


def source_hourly_errors(source: SourceDatabase, table: SourceTable, p: QueryParameters):
    c = table.table.c
    bucket = _hour_bucket(source, table.event_time).label("hour")
    errors = sa.func.sum(sa.case((c.status == sa.bindparam("error_status", "error"), 1), else_=0))
    return (
        sa.select(bucket, sa.func.count().label("requests"), errors.label("errors"))
        .where(*_window(source, table, *p.week))
        .group_by(bucket)
    )


def source_one_interaction(source: SourceDatabase, table: SourceTable, p: QueryParameters):
    key = table.table.c[LLM_INTERACTIONS.key]
    return sa.select(table.table).where(key == sa.bindparam("key", p.interaction_id))


def source_month_cost(source: SourceDatabase, table: SourceTable, p: QueryParameters):
    c = table.table.c
    return (
        sa.select(c.model_name, sa.func.sum(c.cost_usd).label("cost_usd"))
        .where(*_window(source, table, *p.month))
        .group_by(c.model_name)
    )


@dataclass(frozen=True)
class AnalystQuery:
    name: str
    question: str
    lake: Callable[[LakeResource, QueryParameters], int]
    source: Callable[[SourceDatabase, SourceTable, QueryParameters], sa.Select]


QUERIES = (
    AnalystQuery(
        "model_latency_day",
        "latency percentiles per model for one day",
        lake_model_latency,
        source_model_latency,
    ),
    AnalystQuery(
        "error_rate_by_hour_week",
        "error rate by hour over a week",
        lake_hourly_errors,
        source_hourly_errors,
    ),
    AnalystQuery(
        "interaction_by_id",
        "one interaction by its id",
        lake_one_interaction,
        source_one_interaction,
    ),
    AnalystQuery(
        "cost_by_model_month", "a month's cost by model", lake_month_cost, source_month_cost
    ),
)


@dataclass
class Timing:
    seconds: list[float]
    rows: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.seconds, 95, method="linear")) * 1000


def timed(run: Callable[[], int], repeats: int) -> Timing:
    seconds, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        seconds.append(time.perf_counter() - started)
    return Timing(seconds, rows)


def measure(
    lake: LakeResource,
    source: SourceDatabase | None,
    parameters: QueryParameters,
    repeats: int,
    log=None,
) -> dict[str, dict[str, Timing]]:
    """Every query on the lake and (when reachable) on the source, `repeats` times each."""
    results: dict[str, dict[str, Timing]] = {}
    described = None
    if source is not None:
        try:
            described = source.describe_table(LLM_INTERACTIONS)
        except SourceError as error:
            if log:
                log.warning(f"source not reachable, timing the lake only: {error}")
    for query in QUERIES:
        results[query.name] = {"lake": timed(lambda q=query: q.lake(lake, parameters), repeats)}
        if described is not None:
            statement = query.source(source, described, parameters)

            def run_on_source(statement=statement) -> int:
                with source.engine.connect() as connection:
                    return len(connection.execute(statement).fetchall())

            results[query.name]["source"] = timed(run_on_source, repeats)
    return results


def latency_metadata(results: dict[str, dict[str, Timing]]) -> dict:
    metadata: dict = {}
    lines = [
        "| query | lake p50 ms | lake p95 ms | source p50 ms | source p95 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sides in results.items():
        row = [name]
        for side in ("lake", "source"):
            timing = sides.get(side)
            if timing is None:
                row += ["-", "-"]
                continue
            metadata[f"{side}_{name}_p50_ms"] = dg.MetadataValue.float(round(timing.p50_ms, 3))
            metadata[f"{side}_{name}_p95_ms"] = dg.MetadataValue.float(round(timing.p95_ms, 3))
            metadata[f"{side}_{name}_rows"] = timing.rows
            row += [f"{timing.p50_ms:,.1f}", f"{timing.p95_ms:,.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    metadata["latencies"] = dg.MetadataValue.md("\n".join(lines))
    return metadata


class QueryMonitoringConfig(dg.Config):
    repeats: int = 5
    include_source: bool = True


@dg.asset(
    key=QUERY_LATENCY_KEY,
    deps=[silver_key(LLM_INTERACTIONS)],
    group_name="monitoring",
    kinds={"polars", "delta"},
    pool=SOURCE_POOL,
    description=(
        "p50/p95 of typical analyst queries (per-model latency percentiles for a day, error rate "
        "by hour for a week, one interaction by id, a month's cost by model) on the lake and on "
        "the source; plotted over time on this page."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            ANSWERED_CHECK,
            asset=QUERY_LATENCY_KEY,
            description="Every query returned rows from the lake; the id lookup exactly one.",
        )
    ],
)
def query_latency(
    context: dg.AssetExecutionContext,
    config: QueryMonitoringConfig,
    lake: LakeResource,
    source: SourceDatabase,
):
    parameters = pick_parameters(lake)
    if parameters is None:
        raise dg.Failure("silver/llm_interactions has no rows yet: nothing to query")
    results = measure(
        lake, source if config.include_source else None, parameters, config.repeats, context.log
    )
    yield dg.MaterializeResult(
        metadata={
            "day": parameters.day.isoformat(),
            "repeats": config.repeats,
            **latency_metadata(results),
        }
    )
    lake_rows = {name: sides["lake"].rows for name, sides in results.items()}
    yield dg.AssetCheckResult(
        check_name=ANSWERED_CHECK,
        passed=all(rows > 0 for rows in lake_rows.values()) and lake_rows["interaction_by_id"] == 1,
        metadata={"lake_rows": dg.MetadataValue.json(lake_rows)},
    )


@dg.asset(
    key=SOURCE_HEALTH_KEY,
    group_name="monitoring",
    pool=SOURCE_POOL,
    description=(
        "The source's own health while the migration reads it: the latency probe (newest event "
        "time, an index seek) against LLM_OBS_SOURCE_LATENCY_LIMIT_MS, and what the migration "
        "login's sessions are doing (pg_stat_activity; sys.dm_exec_requests on SQL Server) "
        "grouped by state and wait. Materialize it during a backfill (e.g. every few minutes); "
        "each bronze copy records its own probe and how long it was held back."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            PROBE_WITHIN_LIMIT_CHECK,
            asset=SOURCE_HEALTH_KEY,
            description="WARN while the probe exceeds its limit: new partitions are held back.",
        )
    ],
)
def source_health(context: dg.AssetExecutionContext, source: SourceDatabase):
    limit_ms = settings.source_latency_limit_ms()
    probe_ms = probe_latency(source, source.describe_table(LLM_INTERACTIONS), limit_ms)
    activity = source_activity(source)
    yield dg.MaterializeResult(
        metadata={
            "source_probe_ms": dg.MetadataValue.float(round(probe_ms, 1)),
            "latency_limit_ms": limit_ms,
            "migration_sessions": sum(row["sessions"] for row in activity),
            "waiting_sessions": sum(row["sessions"] for row in activity if row["waiting_on"]),
            "activity": dg.MetadataValue.json(activity),
        }
    )
    yield dg.AssetCheckResult(
        check_name=PROBE_WITHIN_LIMIT_CHECK,
        passed=probe_ms <= limit_ms,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"source_probe_ms": round(probe_ms, 1), "latency_limit_ms": limit_ms},
    )


monitoring_assets = [query_latency, source_health]
