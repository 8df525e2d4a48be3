"""Bronze: the exact source rows of one UTC day, all columns, types kept.

The copy streams from the source in Arrow batches straight into Parquet files and replaces the
day's partition in one Delta commit, so a re-run gives the same rows and a failed run changes
nothing. Its row-count check against the source is blocking: silver never builds on a short copy.
The copy is the first leg of a day's one pass (`assets/migration.py`): the same batches feed
silver, quarantine and gold as they go by.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa

from llm_observatory import settings
from llm_observatory.assets.progress import Throughput
from llm_observatory.io.delta_lake import CommitSummary, DeltaPartitionWriter
from llm_observatory.layout import (
    BRONZE,
    bronze_key,
    bronze_location,
    bronze_schema,
    categorical_columns,
    day_filter,
    with_event_day,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase, SourceTable
from llm_observatory.resources.source_load import (
    SourceSlowError,
    check_source_load,
    hold_while_slow,
    pool_limit_in_force,
)
from llm_observatory.tables import TableSpec


def refuse_if_source_overloaded(context: dg.AssetExecutionContext, source: SourceDatabase) -> None:
    """Streams x the pool limit in force now (`dagster instance concurrency set` may have
    changed it since start-up) must stay within LLM_OBS_SOURCE_MAX_QUERIES, else nothing is
    read."""
    try:
        check_source_load(
            source.streams,
            pool_limit_in_force(context.instance),
            settings.source_max_queries(),
            "in force in the instance",
        )
    except ValueError as error:
        raise dg.Failure(str(error)) from None


def wait_for_healthy_source(
    context: dg.AssetExecutionContext,
    source: SourceDatabase,
    described: SourceTable,
    what: str,
) -> dict:
    """A struggling source gets no new partition: the copy waits (bounded) while the latency
    probe is over its limit, before its first query on the table's rows."""
    try:
        return hold_while_slow(
            source,
            described,
            settings.source_latency_limit_ms(),
            settings.source_hold_seconds(),
            context.log,
            what,
        )
    except SourceSlowError as error:
        raise dg.Failure(str(error)) from None


def bronze_writer(lake: LakeResource, table: TableSpec, described: SourceTable, day: dt.date):
    """The writer replacing the day's bronze partition with the source's rows."""
    return DeltaPartitionWriter(
        bronze_location(lake, table),
        bronze_schema(described.arrow_schema),
        ["date"],
        replace=day_filter(day),
        categorical_columns=categorical_columns(table, BRONZE.role),
    )


def bronze_rows(batch: pa.RecordBatch, table: TableSpec) -> pa.RecordBatch:
    """A source batch as bronze stores it: with its `date` partition column."""
    return with_event_day(batch, table.event_time)


def bronze_commit_metadata(
    day: dt.date, run_id: str, change_high_water: dt.datetime | None
) -> dict[str, str]:
    """Recorded with the commit: the first incremental cycle starts from the oldest
    `change_high_water` over the copied days (read before the copy began)."""
    return {
        "layer": "bronze",
        "partition": day.isoformat(),
        "run_id": run_id,
        "change_high_water": change_high_water.isoformat() if change_high_water else "",
    }


def bronze_result(
    table: TableSpec,
    summary: CommitSummary,
    progress: Throughput,
    health: dict,
    put_back: dict,
) -> dg.MaterializeResult:
    location_uri = summary.table_uri
    return dg.MaterializeResult(
        asset_key=bronze_key(table),
        metadata={
            "dagster/row_count": summary.rows,
            **progress.metadata(),
            "source_bytes_read": progress.bytes,
            **health,
            "lake_bytes": summary.bytes,
            "files": len(summary.files),
            "delta_version": summary.version,
            "table_uri": dg.MetadataValue.path(location_uri),
            "sha256": dg.MetadataValue.json(
                {written.path: written.sha256 for written in summary.files[:20]}
            ),
            **put_back,
        },
    )
