"""Bronze: the exact source rows of one UTC day, all columns, types kept.

The copy streams from the source in Arrow batches straight into Parquet files and replaces the
day's partition in one Delta commit, so a re-run gives the same rows and a failed run changes
nothing. Its row-count check against the source is blocking: silver never builds on a short copy.
"""

import dagster as dg

from llm_observatory import settings
from llm_observatory.assets.blocking_checks import put_back_if_failed
from llm_observatory.assets.partition_lease import day_lease
from llm_observatory.assets.progress import Throughput
from llm_observatory.assets.retries import write_with_read_back_retries
from llm_observatory.checks.row_counts import BRONZE_ROWS_CHECK, bronze_matches_source
from llm_observatory.io.delta_lake import DeltaPartitionWriter, snapshot_partition
from llm_observatory.layout import bronze_location, bronze_schema, day_filter, with_event_day
from llm_observatory.partitions import daily_partitions
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.resources.source_load import (
    SOURCE_POOL,
    SourceSlowError,
    check_source_load,
    hold_while_slow,
    pool_limit_in_force,
)
from llm_observatory.tables import TABLES, TableSpec


def bronze_key(table: TableSpec) -> dg.AssetKey:
    return dg.AssetKey(["bronze", table.name])


def bronze_asset(table: TableSpec) -> dg.AssetsDefinition:
    key = bronze_key(table)

    @dg.asset(
        key=key,
        partitions_def=daily_partitions,
        group_name="bronze",
        kinds={"delta", "parquet"},
        description=f"Exact copy of source `{table.name}` for one UTC day. {table.description}",
        pool=SOURCE_POOL,
        check_specs=[
            dg.AssetCheckSpec(
                BRONZE_ROWS_CHECK,
                asset=key,
                blocking=True,
                partitions_def=daily_partitions,
                description="Bronze holds exactly the source's rows of the day (half-open range).",
            )
        ],
    )
    def _bronze(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        lake: LakeResource,
        control: ControlDatabase,
    ):
        window = context.partition_time_window
        day = window.start.date()
        # The limit in force now (`dagster instance concurrency set` may have changed it since
        # start-up): streams x limit within LLM_OBS_SOURCE_MAX_QUERIES, else nothing is read.
        try:
            check_source_load(
                source.streams,
                pool_limit_in_force(context.instance),
                settings.source_max_queries(),
                "in force in the instance",
            )
        except ValueError as error:
            raise dg.Failure(str(error)) from None
        with day_lease(context, control, table.name, day):
            described = source.describe_table(table)
            # A struggling source gets no new partition: the copy waits (bounded) while the
            # latency probe is over its limit, before its first query on the table's rows.
            try:
                health = hold_while_slow(
                    source,
                    described,
                    settings.source_latency_limit_ms(),
                    settings.source_hold_seconds(),
                    context.log,
                    f"bronze/{table.name} {day}",
                )
            except SourceSlowError as error:
                raise dg.Failure(str(error)) from None
            location = bronze_location(lake, table)
            # Read before the copy: every change after the copy began lies above it, so the first
            # incremental cycle starts from the oldest of these over the copied days.
            change_high_water = source.latest_change(described)

            def copy_day():
                progress = Throughput(log=context.log, label=f"bronze/{table.name} {day}")
                writer = DeltaPartitionWriter(
                    location,
                    bronze_schema(described.arrow_schema),
                    ["date"],
                    replace=day_filter(day),
                )
                try:
                    for batch in source.stream_range(described, window.start, window.end):
                        writer.write(with_event_day(batch, table.event_time))
                        progress.add(batch.num_rows, batch.nbytes)
                    summary = writer.commit(
                        {
                            "layer": "bronze",
                            "partition": day.isoformat(),
                            "run_id": context.run_id,
                            "change_high_water": (
                                change_high_water.isoformat() if change_high_water else ""
                            ),
                        }
                    )
                except BaseException:
                    writer.abort()
                    raise
                return summary, progress

            previous = snapshot_partition(location, day_filter(day))
            summary, progress = write_with_read_back_retries(
                copy_day, context.log, f"bronze/{table.name} {day}"
            )
            context.log.info(progress.describe())
            check, put_back = put_back_if_failed(
                bronze_matches_source(table, source, described, lake, window.start, window.end),
                [previous],
                context.log,
            )
            yield dg.MaterializeResult(
                metadata={
                    "dagster/row_count": summary.rows,
                    **progress.metadata(),
                    "source_bytes_read": progress.bytes,
                    **health,
                    "lake_bytes": summary.bytes,
                    "files": len(summary.files),
                    "delta_version": summary.version,
                    "table_uri": dg.MetadataValue.path(location.uri),
                    "sha256": dg.MetadataValue.json(
                        {written.path: written.sha256 for written in summary.files[:20]}
                    ),
                    **put_back,
                }
            )
            yield check

    return _bronze


bronze_assets = [bronze_asset(table) for table in TABLES]
