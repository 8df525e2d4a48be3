"""Gold: per day and model metrics over silver, rebuilt whole for each day it covers."""

import dagster as dg

from llm_observatory.assets.progress import Throughput
from llm_observatory.io.delta_lake import (
    DeltaPartitionWriter,
    count_partition_rows,
)
from llm_observatory.layout import (
    DAILY_METRICS_KEY,
    daily_metrics_location,
    day_filter,
    silver_location,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import LLM_INTERACTIONS
from llm_observatory.transform.metrics import DAILY_METRICS_SCHEMA, DayMetrics, day_metrics

GOLD_REQUESTS_CHECK = "requests_match_silver"


def gold_day(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    day,
    streamed: DayMetrics | None = None,
) -> tuple[dg.MaterializeResult, dg.AssetCheckResult]:
    """Replaces the day of gold: with the metrics accumulated while silver was written
    (`streamed`, the one pass), or read from silver (a repair of gold, or a silver built
    from bronze)."""
    progress = Throughput(log=context.log, label=f"gold/daily_metrics {day}")
    silver = silver_location(lake, LLM_INTERACTIONS)
    metrics, interactions = streamed.table() if streamed is not None else day_metrics(lake, day)
    progress.add(interactions, 0)
    writer = DeltaPartitionWriter(
        daily_metrics_location(lake), DAILY_METRICS_SCHEMA, ["date"], replace=day_filter(day)
    )
    writer.write(metrics)
    summary = writer.commit(
        {"layer": "gold", "partition": day.isoformat(), "run_id": context.run_id}
    )
    materialization = dg.MaterializeResult(
        asset_key=DAILY_METRICS_KEY,
        metadata={
            "dagster/row_count": metrics.num_rows,
            **progress.metadata(),
            "interactions": interactions,
            "computed_from": "the source stream" if streamed is not None else "silver",
            "lake_bytes": summary.bytes,
            "models": dg.MetadataValue.json(metrics.column("model").to_pylist()),
            "delta_version": summary.version,
            "table_uri": dg.MetadataValue.path(summary.table_uri),
        },
    )
    # Counted from silver's log, not from the stream: the check compares two records.
    silver_rows = count_partition_rows(silver, day_filter(day))
    gold_requests_total = sum(metrics.column("requests").to_pylist())
    check = dg.AssetCheckResult(
        asset_key=DAILY_METRICS_KEY,
        check_name=GOLD_REQUESTS_CHECK,
        passed=gold_requests_total == silver_rows,
        metadata={"silver_rows": silver_rows, "gold_requests": gold_requests_total},
    )
    return materialization, check
