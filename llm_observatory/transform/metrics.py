"""Gold's metrics: per day and model, requests, outcomes, latency percentiles, tokens and cost
over the silver rows of LLM calls.

Shared by the one pass (`DayMetrics`, accumulated as silver's rows stream by), a repair of gold
from silver (`day_metrics`) and the sync (`rebuild_daily_metrics`, only the models whose rows
changed): one definition of each figure, whichever path computes it.
"""

import decimal
import tempfile

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from llm_observatory.io.delta_lake import (
    DeltaPartitionWriter,
    current_files,
    open_table,
    scan_partition,
)
from llm_observatory.layout import daily_metrics_location, day_filter, silver_location
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import LLM_INTERACTIONS

DAILY_METRICS_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32()),
        pa.field("model", pa.string()),
        pa.field("requests", pa.int64()),
        pa.field("successes", pa.int64()),
        pa.field("errors", pa.int64()),
        pa.field("timeouts", pa.int64()),
        pa.field("latency_p50_ms", pa.float64()),
        pa.field("latency_p95_ms", pa.float64()),
        pa.field("latency_p99_ms", pa.float64()),
        pa.field("latency_mean_ms", pa.float64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("cost_usd", pa.decimal128(38, 6)),
    ]
)
METRIC_INPUT_COLUMNS = [
    "model_name",
    "status",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
]


def daily_metrics(interactions: pl.DataFrame, day) -> pa.Table:
    """Metrics of one day's silver interactions; latency percentiles interpolate linearly
    between ranks, as DuckDB's `quantile_cont` does."""
    latency = pl.col("latency_ms").cast(pl.Float64)
    grouped = (
        interactions.group_by("model_name")
        .agg(
            pl.len().cast(pl.Int64).alias("requests"),
            (pl.col("status") == "success").sum().cast(pl.Int64).alias("successes"),
            (pl.col("status") == "error").sum().cast(pl.Int64).alias("errors"),
            (pl.col("status") == "timeout").sum().cast(pl.Int64).alias("timeouts"),
            latency.quantile(0.50, interpolation="linear").alias("latency_p50_ms"),
            latency.quantile(0.95, interpolation="linear").alias("latency_p95_ms"),
            latency.quantile(0.99, interpolation="linear").alias("latency_p99_ms"),
            latency.mean().alias("latency_mean_ms"),
            pl.col("prompt_tokens").cast(pl.Int64).sum().alias("prompt_tokens"),
            pl.col("completion_tokens").cast(pl.Int64).sum().alias("completion_tokens"),
            pl.col("cost_usd").cast(pl.Decimal(38, 6)).sum().alias("cost_usd"),
        )
        .rename({"model_name": "model"})
        .with_columns(pl.lit(day).cast(pl.Date).alias("date"))
        .sort("model")
    )
    return grouped.select(DAILY_METRICS_SCHEMA.names).to_arrow().cast(DAILY_METRICS_SCHEMA)


# Latencies a model holds in memory while its day streams by; past this they go to a temporary
# file, so a day's metrics take the same memory at any day size (the one pass builds every
# model at once; the percentiles then need one model's latencies at a time).
LATENCY_MEMORY_BYTES = 4 * 1024 * 1024


class ModelDayMetrics:
    """One model's metrics over a day, accumulated batch by batch: never the day's rows, and
    the latencies (8 bytes a row, for the exact percentiles) in memory up to
    LATENCY_MEMORY_BYTES, on local disk past it."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.requests = self.successes = self.errors = self.timeouts = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.cost = decimal.Decimal(0)
        self.latencies: list[np.ndarray] = []
        self.held_bytes = 0
        self._spilled = None  # a temporary file of float64 latencies, once memory is full

    def add(self, batch: pa.RecordBatch) -> None:
        self.requests += batch.num_rows
        status = batch.column("status")
        for outcome, attribute in (
            ("success", "successes"),
            ("error", "errors"),
            ("timeout", "timeouts"),
        ):
            matches = pc.sum(pc.equal(status, outcome)).as_py() or 0
            setattr(self, attribute, getattr(self, attribute) + matches)
        self.prompt_tokens += _int_sum(batch.column("prompt_tokens"))
        self.completion_tokens += _int_sum(batch.column("completion_tokens"))
        self.cost += pc.sum(batch.column("cost_usd")).as_py() or decimal.Decimal(0)
        latency = pc.drop_null(batch.column("latency_ms"))
        values = pc.cast(latency, pa.float64()).to_numpy(zero_copy_only=False)
        self.latencies.append(values)
        self.held_bytes += values.nbytes
        if self.held_bytes > LATENCY_MEMORY_BYTES:
            if self._spilled is None:
                self._spilled = tempfile.TemporaryFile(prefix="llm-obs-latencies-")  # noqa: SIM115
            for held in self.latencies:
                held.tofile(self._spilled)
            self.latencies, self.held_bytes = [], 0

    def _all_latencies(self) -> np.ndarray:
        parts = []
        if self._spilled is not None:
            self._spilled.seek(0)
            parts.append(np.fromfile(self._spilled, dtype=np.float64))
            self._spilled.close()
            self._spilled = None
        parts.extend(self.latencies)
        self.latencies, self.held_bytes = [], 0
        return np.concatenate(parts) if parts else np.empty(0, np.float64)

    def row(self, day) -> dict:
        latencies = pl.Series("latency_ms", self._all_latencies(), pl.Float64)

        def quantile(q: float):
            return latencies.quantile(q, interpolation="linear") if len(latencies) else None

        return {
            "date": day,
            "model": self.model,
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "latency_p50_ms": quantile(0.50),
            "latency_p95_ms": quantile(0.95),
            "latency_p99_ms": quantile(0.99),
            "latency_mean_ms": latencies.mean() if len(latencies) else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost,
        }


def _int_sum(column) -> int:
    return pc.sum(pc.cast(column, pa.int64())).as_py() or 0


def silver_models(table: DeltaTable | None, day) -> set[str]:
    """The models silver holds on a day (from the log: its `model=` folders)."""
    models = set()
    if table is not None:
        for _, partition in current_files(table, day_filter(day)):
            if partition.get("model") is not None:  # silver never holds a NULL model
                models.add(str(partition["model"]))
    return models


def day_metrics(
    lake: LakeResource,
    day,
    silver_table: DeltaTable | None = None,
    models: set[str] | None = None,
) -> tuple[pa.Table, int]:
    """Gold's rows of one day and the silver rows they summarise, one model at a time (silver
    is laid out by model), streamed: memory holds one model's latencies, not the day's rows.
    `silver_table`: silver already opened (a rebuild of many days opens it once); `models`:
    only these models' rows (default: every model of the day)."""
    silver = silver_location(lake, LLM_INTERACTIONS)
    table = silver_table if silver_table is not None else open_table(silver)
    found = silver_models(table, day)
    rows, total = [], 0
    for model in sorted(found if models is None else found & set(models)):
        metrics = ModelDayMetrics(model)
        filters = [*day_filter(day), ("model", "=", model)]
        for batch in scan_partition(silver, filters, METRIC_INPUT_COLUMNS[1:], table=table):
            metrics.add(batch)
        if metrics.requests:
            total += metrics.requests
            rows.append(metrics.row(day))
    return pa.Table.from_pylist(rows, schema=DAILY_METRICS_SCHEMA), total


def rebuild_daily_metrics(
    lake: LakeResource, days, commit_metadata: dict, models_by_day: dict | None = None
) -> int | None:
    """Recomputes gold for exactly these days from silver, in one commit; returns its version.
    Silver is opened once for all of them, at the version the caller just committed.

    `models_by_day`: for a day listed, only the models whose silver rows changed are read
    again; the day's other gold rows are kept as they are, provided gold holds a row for every
    other model silver has that day, and no other (else the whole day is recomputed)."""
    days = sorted(days)
    if not days:
        return None
    models_by_day = models_by_day or {}
    gold = daily_metrics_location(lake)
    gold_table = open_table(gold) if models_by_day else None
    writer = DeltaPartitionWriter(
        daily_metrics_location(lake),
        DAILY_METRICS_SCHEMA,
        ["date"],
        replace=[("date", "in", [day.isoformat() for day in days])],
        file_prefix="sync",
    )
    try:
        silver_table = open_table(silver_location(lake, LLM_INTERACTIONS))
        for day in days:
            touched = models_by_day.get(day)
            if touched is not None and gold_table is not None:
                kept = _gold_rows_except(gold, gold_table, day, touched)
                untouched = silver_models(silver_table, day) - set(touched)
                if set(kept.column("model").to_pylist()) == untouched:
                    writer.write(kept)
                    writer.write(day_metrics(lake, day, silver_table, touched)[0])
                    continue
            writer.write(day_metrics(lake, day, silver_table)[0])
    except BaseException:
        writer.abort()
        raise
    return writer.commit({"layer": "gold", **commit_metadata}).version


def _gold_rows_except(gold, gold_table: DeltaTable, day, models) -> pa.Table:
    """Gold's current rows of a day but those of `models`."""
    batches = [
        batch
        for batch in scan_partition(
            gold, day_filter(day), with_partition_values=True, table=gold_table
        )
        if batch.num_rows
    ]
    if not batches:
        return DAILY_METRICS_SCHEMA.empty_table()
    rows = pa.Table.from_batches(batches).select(DAILY_METRICS_SCHEMA.names)
    rows = rows.filter(
        pc.invert(pc.is_in(rows.column("model"), pa.array(sorted(models), pa.string())))
    )
    return rows.cast(DAILY_METRICS_SCHEMA)


def gold_requests(lake: LakeResource, day, gold_table: DeltaTable | None = None) -> int:
    """Requests over all models of a day in gold (0 for a day gold does not have);
    `gold_table`: gold already opened (a check of many days opens it once)."""
    total = 0
    location = daily_metrics_location(lake)
    for batch in scan_partition(location, day_filter(day), ["requests"], table=gold_table):
        total += sum(value or 0 for value in batch.column(0).to_pylist())
    return total


class DayMetrics:
    """A day's metrics accumulated from the rows silver keeps, as they stream by (the one
    pass): one `ModelDayMetrics` per model, so memory holds latencies, never rows."""

    def __init__(self, day) -> None:
        self.day = day
        self.models: dict[str, ModelDayMetrics] = {}

    def add(self, silver_rows: pa.RecordBatch) -> None:
        if silver_rows.num_rows == 0:
            return
        # Silver's `model` partition is the model name as text: gold groups by the same value.
        models = pc.cast(silver_rows.column(LLM_INTERACTIONS.silver_model_column), pa.string())
        for model in pc.unique(models).to_pylist():
            rows = silver_rows.filter(pc.equal(models, model))
            metrics = self.models.get(model)
            if metrics is None:
                metrics = self.models[model] = ModelDayMetrics(model)
            metrics.add(rows)

    def table(self) -> tuple[pa.Table, int]:
        """Gold's rows of the day (sorted by model) and the silver rows they summarise."""
        rows = [self.models[model].row(self.day) for model in sorted(self.models)]
        total = sum(metrics.requests for metrics in self.models.values())
        return pa.Table.from_pylist(rows, schema=DAILY_METRICS_SCHEMA), total
