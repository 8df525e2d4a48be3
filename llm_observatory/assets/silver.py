"""Silver: the day's rows that pass every quality rule, one per key, the latest version.

Rows that break a rule are not dropped: they land in `silver/_quarantine/<table>` with the first
rule broken and every reason, so silver + quarantine accounts for every bronze key. Bronze is
read back from the lake in batches; only the keys that occur more than once in a day (change
batches, redeliveries) are held in memory to pick their latest version.
"""

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from llm_observatory.assets.blocking_checks import put_back_if_failed
from llm_observatory.assets.progress import Throughput
from llm_observatory.assets.retries import write_with_read_back_retries
from llm_observatory.checks.day_profile import DayProfile
from llm_observatory.checks.row_counts import silver_accounts_for_bronze
from llm_observatory.io.delta_lake import (
    CommitSummary,
    DeltaPartitionWriter,
    LakeWriteError,
    restore_partition,
    scan_partition,
    snapshot_partition,
    table_schema,
)
from llm_observatory.layout import (
    QUARANTINE,
    SILVER,
    bronze_location,
    categorical_columns,
    day_filter,
    quarantine_location,
    quarantine_schema,
    silver_key,
    silver_location,
    silver_schema,
    source_columns,
    with_silver_partitions,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import TableSpec
from llm_observatory.transform.dedup import LatestVersions
from llm_observatory.transform.routing import route


@dataclass
class ValidatedDay:
    progress: Throughput
    summary: CommitSummary
    silver_rows: int
    quarantined_rows: int
    broken_counts: Counter


class DayValidator:
    """Routes a day's rows through the table's rules into silver and quarantine, batch by batch.

    The one home of the routing for a day's partition: fed from bronze read back from the lake
    (a silver repair) or from the source stream bronze is being written from (the one pass of
    `assets/migration.py`). `accept` is told which rows silver keeps (`LatestVersions`); rows
    that break a rule go to quarantine with the first rule broken and every reason.
    """

    def __init__(
        self,
        table: TableSpec,
        lake: LakeResource,
        day: dt.date,
        source_schema: pa.Schema,
        progress: Throughput,
    ) -> None:
        self.table = table
        self.lake = lake
        self.day = day
        self.source_schema = source_schema
        self.progress = progress
        self.silver_writer = DeltaPartitionWriter(
            silver_location(lake, table),
            silver_schema(table, source_schema),
            table.silver_partition_by,
            replace=day_filter(day),
            categorical_columns=categorical_columns(table, SILVER.role),
        )
        self.quarantine_writer = DeltaPartitionWriter(
            quarantine_location(lake, table),
            quarantine_schema(source_schema),
            ["date"],
            replace=day_filter(day),
            categorical_columns=categorical_columns(table, QUARANTINE.role),
        )
        self.broken_counts: Counter = Counter()
        self.silver_rows = self.quarantined_rows = 0
        self.profile = DayProfile(table, day, silver=True)

    def add(self, batch: pa.RecordBatch, latest: LatestVersions | None = None) -> pa.RecordBatch:
        """Routes one batch of source columns; returns the rows silver keeps."""
        batch = batch.cast(self.source_schema)
        self.progress.add(batch.num_rows, batch.nbytes)
        if latest is not None:
            batch = latest.keep(batch)
        routed = route(batch, self.table, self.source_schema)
        self.broken_counts.update(routed.broken_counts)
        passing = routed.passing
        self.silver_rows += passing.num_rows
        self.silver_writer.write(with_silver_partitions(passing, self.table))
        self.profile.add_written(passing)
        if routed.quarantined.num_rows:
            self.quarantined_rows += routed.quarantined.num_rows
            self.quarantine_writer.write(routed.quarantined)
            self.profile.add_quarantined(routed.quarantined)
        return passing

    def commit(self, run_id: str) -> ValidatedDay:
        """Commits quarantine, then silver (quarantine put back if silver's commit fails)."""
        commit_metadata = {"partition": self.day.isoformat(), "run_id": run_id}
        try:
            # Two tables cannot change in one Delta commit: quarantine goes first, and is put
            # back as it was if the silver commit then fails, so a failed run changes nothing.
            quarantine = quarantine_location(self.lake, self.table)
            previous_quarantine = snapshot_partition(quarantine, day_filter(self.day))
            if self.quarantined_rows or previous_quarantine.table_existed:
                self.quarantine_writer.commit({"layer": "silver_quarantine", **commit_metadata})
                self.profile.quarantine_files = [
                    written.path for written, _ in self.quarantine_writer.finished
                ]
            else:
                self.quarantine_writer.abort()
            try:
                summary = self.silver_writer.commit(
                    {"layer": "silver", **commit_metadata, **self.profile.metadata()}
                )
            except BaseException as error:
                # Put back the day's quarantine as it was: its files (a table created by this
                # run has none) are re-committed; the new ones stay until a vacuum.
                restore_partition(previous_quarantine, f"silver commit failed: {error}")
                raise
        except BaseException:
            self.abort()
            raise
        return ValidatedDay(
            self.progress, summary, self.silver_rows, self.quarantined_rows, self.broken_counts
        )

    def abort(self) -> None:
        """Deletes the files written so far; nothing was committed."""
        self.silver_writer.abort()
        self.quarantine_writer.abort()


def validate_day(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    lake: LakeResource,
    day: dt.date,
    source_schema: pa.Schema,
    latest: LatestVersions,
    bronze_rows: int,
) -> ValidatedDay:
    """Streams the day's bronze rows through the rules into silver and quarantine, and commits
    both (quarantine first, put back if silver's commit fails)."""
    progress = Throughput(
        log=context.log, label=f"silver/{table.name} {day}", expected_rows=bronze_rows
    )
    validator = DayValidator(table, lake, day, source_schema, progress)
    try:
        bronze = bronze_location(lake, table)
        for batch in scan_partition(bronze, day_filter(day), source_schema.names):
            validator.add(batch, latest)
    except BaseException:
        validator.abort()
        raise
    return validator.commit(context.run_id)


def silver_result(
    table: TableSpec,
    outcome: ValidatedDay,
    bronze_rows: int,
    bronze_keys: int,
    check: dg.AssetCheckResult,
    put_back: dict,
) -> tuple[dg.MaterializeResult, dg.AssetCheckResult]:
    """Silver's materialization of a day and its blocking check, however the day was built."""
    summary = outcome.summary
    materialization = dg.MaterializeResult(
        asset_key=silver_key(table),
        metadata={
            "dagster/row_count": outcome.silver_rows,
            **outcome.progress.metadata(),
            "bronze_rows": bronze_rows,
            "bronze_distinct_keys": bronze_keys,
            "superseded_versions_dropped": bronze_rows - bronze_keys,
            "silver_rows": outcome.silver_rows,
            "quarantined_rows": outcome.quarantined_rows,
            "quarantined_by_rule": dg.MetadataValue.json(dict(outcome.broken_counts)),
            "lake_bytes": summary.bytes,
            "files": len(summary.files),
            "delta_version": summary.version,
            "table_uri": dg.MetadataValue.path(summary.table_uri),
            **put_back,
        },
    )
    return materialization, check


def silver_snapshots(lake: LakeResource, table: TableSpec, day: dt.date) -> list:
    """Silver's and quarantine's day as they are, to put back if silver's check fails."""
    return [
        snapshot_partition(silver_location(lake, table), day_filter(day)),
        snapshot_partition(quarantine_location(lake, table), day_filter(day)),
    ]


def checked_silver(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    lake: LakeResource,
    day: dt.date,
    outcome: ValidatedDay,
    bronze_rows: int,
    bronze_keys: int,
    previous: list,
) -> tuple[dg.MaterializeResult, dg.AssetCheckResult]:
    """Runs silver's blocking check on a committed day (putting the day back if it fails)."""
    context.log.info(outcome.progress.describe())
    check, put_back = put_back_if_failed(
        silver_accounts_for_bronze(table, lake, day, bronze_keys, bronze_rows),
        previous,
        context.log,
        silver_key(table),
    )
    return silver_result(table, outcome, bronze_rows, bronze_keys, check, put_back)


def silver_from_bronze(
    context: dg.AssetExecutionContext, table: TableSpec, lake: LakeResource, day: dt.date
) -> tuple[dg.MaterializeResult, dg.AssetCheckResult]:
    """Builds a day of silver from bronze read back from the lake: a repair of silver alone,
    or a day whose bronze holds a key more than once (the latest version is chosen here)."""
    bronze = bronze_location(lake, table)
    bronze_table_schema = table_schema(bronze)
    if bronze_table_schema is None:
        raise LakeWriteError(
            f"bronze/{table.name} does not exist yet at {bronze.uri}: materialize bronze first"
        )
    source_schema = pa.schema(
        [bronze_table_schema.field(name) for name in source_columns(bronze_table_schema)]
    )
    latest, bronze_rows, bronze_keys = LatestVersions.scan(table, lake, day)
    previous = silver_snapshots(lake, table, day)
    outcome = write_with_read_back_retries(
        lambda: validate_day(context, table, lake, day, source_schema, latest, bronze_rows),
        context.log,
        f"silver/{table.name} {day}",
    )
    return checked_silver(context, table, lake, day, outcome, bronze_rows, bronze_keys, previous)
