"""Silver: the day's rows that pass every quality rule, one per key, the latest version.

Rows that break a rule are not dropped: they land in `silver/_quarantine/<table>` with the first
rule broken and every reason, so silver + quarantine accounts for every bronze key. Bronze is
read back from the lake in batches; only the keys that occur more than once in a day (change
batches, redeliveries) are held in memory to pick their latest version.
"""

import datetime as dt
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

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
    bronze_location,
    day_filter,
    quarantine_location,
    quarantine_schema,
    silver_location,
    silver_schema,
    source_columns,
    with_event_day,
    with_silver_partitions,
)
from llm_observatory.quality import evaluate
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import TableSpec

# Key hashes held in memory while finding a day's repeated keys, before spilling to disk.
HASH_MEMORY_BYTES = 8 * 1024 * 1024
HASH_BUCKETS = 64


def silver_key(table: TableSpec) -> dg.AssetKey:
    return dg.AssetKey(["silver", table.name])


class LatestVersions:
    """Decides, row by row, whether a bronze row is the one silver keeps for its key.

    Keys seen once in the day (nearly all) pass straight through. For repeated keys the row
    with the greatest change column wins; an exact re-delivery of the winner is kept once.
    """

    def __init__(self, table: TableSpec, repeated: dict[object, object]) -> None:
        self.table = table
        self.winning_version = repeated
        self.emitted: set[object] = set()

    @classmethod
    def scan(
        cls, table: TableSpec, lake: LakeResource, day: dt.date, bronze_table=None
    ) -> tuple["LatestVersions", int, int]:
        """Finds the keys that occur more than once in the day, in memory that stays small.

        A first pass keeps only a 64-bit hash per row (8 bytes, not the key); a second pass
        collects the exact keys and versions of the few rows whose hash repeats. Two different
        keys that happen to share a hash are told apart there, so the distinct count is exact.
        `bronze_table`: bronze already opened (a caller scanning many days reads its log once).
        """
        bronze = bronze_location(lake, table)
        counter = RepeatedHashes()
        for batch in scan_partition(bronze, day_filter(day), [table.key], table=bronze_table):
            counter.add(key_hashes(batch.column(0)))
        rows, distinct, repeated_hashes = counter.result()
        if len(repeated_hashes) == 0:
            return cls(table, {}), rows, distinct

        latest: dict[object, object] = {}
        copies: Counter = Counter()
        for batch in scan_partition(
            bronze, day_filter(day), [table.key, table.change_column], table=bronze_table
        ):
            candidates = np.isin(key_hashes(batch.column(0)), repeated_hashes)
            if not candidates.any():
                continue
            chosen = batch.filter(pa.array(candidates))
            for key, version in zip(chosen.column(0).to_pylist(), chosen.column(1).to_pylist()):
                copies[key] += 1
                if key not in latest or (
                    version is not None and (latest[key] is None or version > latest[key])
                ):
                    latest[key] = version
        # Hash groups held these many distinct keys instead of one each.
        distinct += len(latest) - len(repeated_hashes)
        versions = {key: latest[key] for key, count in copies.items() if count > 1}
        return cls(table, versions), rows, distinct

    def keep(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not self.winning_version:
            return batch
        keys = batch.column(self.table.key)
        repeated_mask = pc.is_in(keys, value_set=pa.array(list(self.winning_version)))
        if not pc.any(repeated_mask).as_py():
            return batch
        key_values = keys.to_pylist()
        change_values = batch.column(self.table.change_column).to_pylist()
        flags = repeated_mask.to_pylist()
        keep = []
        for key, version, is_repeated in zip(key_values, change_values, flags):
            if not is_repeated:
                keep.append(True)
            elif version == self.winning_version[key] and key not in self.emitted:
                self.emitted.add(key)
                keep.append(True)
            else:
                keep.append(False)
        return batch.filter(pa.array(keep))


class RepeatedHashes:
    """Counts distinct 64-bit hashes and finds those seen more than once, in bounded memory.

    Hashes stay in memory up to HASH_MEMORY_BYTES (8 bytes a row: 4M rows). Past that they are
    spilled to temporary files by their top bits, and each bucket, a 1/HASH_BUCKETS share of
    the day, is counted on its own, so a day of any size needs memory for one bucket.
    """

    def __init__(self, memory_bytes: int | None = None, buckets: int | None = None) -> None:
        self.memory_bytes = HASH_MEMORY_BYTES if memory_bytes is None else memory_bytes
        self.buckets = HASH_BUCKETS if buckets is None else buckets
        self.held: list[np.ndarray] = []
        self.held_bytes = 0
        self.rows = 0
        self._spill: tempfile.TemporaryDirectory | None = None
        self._files: list = []

    def add(self, hashes: np.ndarray) -> None:
        self.rows += len(hashes)
        if self._spill is not None:
            self._write_buckets(hashes)
            return
        self.held.append(hashes)
        self.held_bytes += hashes.nbytes
        if self.held_bytes > self.memory_bytes:
            self._spill = tempfile.TemporaryDirectory(prefix="llm-obs-hashes-")
            self._files = [
                open(Path(self._spill.name) / f"{bucket}.u64", "wb")  # noqa: SIM115
                for bucket in range(self.buckets)
            ]
            held, self.held, self.held_bytes = self.held, [], 0
            for part in held:
                self._write_buckets(part)

    def _write_buckets(self, hashes: np.ndarray) -> None:
        bucket_of = (hashes.view(np.uint64) % np.uint64(self.buckets)).astype(np.intp)
        order = np.argsort(bucket_of, kind="stable")
        bounds = np.searchsorted(bucket_of[order], np.arange(self.buckets + 1))
        ordered = hashes[order]
        for bucket, handle in enumerate(self._files):
            ordered[bounds[bucket] : bounds[bucket + 1]].tofile(handle)

    def result(self) -> tuple[int, int, np.ndarray]:
        """(rows, distinct hashes, the hashes seen more than once, sorted)."""
        if self._spill is None:
            parts = [_repeated(np.concatenate(self.held))] if self.held else []
            self.held = []
        else:
            parts = []
            try:
                for handle in self._files:
                    handle.close()
                for bucket in range(self.buckets):
                    path = Path(self._spill.name) / f"{bucket}.u64"
                    parts.append(_repeated(np.fromfile(path, dtype=np.uint64)))
                    path.unlink()
            finally:
                self._spill.cleanup()
        distinct = sum(part[0] for part in parts)
        repeated = (
            np.sort(np.concatenate([part[1] for part in parts]))
            if parts
            else np.empty(0, np.uint64)
        )
        return self.rows, distinct, repeated


def _repeated(hashes: np.ndarray) -> tuple[int, np.ndarray]:
    unique, counts = np.unique(hashes, return_counts=True)
    return len(unique), unique[counts > 1]


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash per key (NULL keys hash too), as a NumPy array."""
    return pl.Series(values=keys).hash(seed=0).to_numpy()


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
        )
        self.quarantine_writer = DeltaPartitionWriter(
            quarantine_location(lake, table),
            quarantine_schema(source_schema),
            ["date"],
            replace=day_filter(day),
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
        verdict = evaluate(batch, self.table.rules)
        self.broken_counts.update(verdict.broken_counts)
        # Most batches break no rule: they go to silver as they are, without a filtered copy.
        passing = batch.filter(verdict.passed) if verdict.failed_rows.num_rows else batch
        self.silver_rows += passing.num_rows
        self.silver_writer.write(with_silver_partitions(passing, self.table))
        self.profile.add_written(passing)
        if verdict.failed_rows.num_rows:
            self.quarantined_rows += verdict.failed_rows.num_rows
            failed = verdict.failed_rows
            failed = with_event_day(failed.select(self.source_schema.names), self.table.event_time)
            failed = failed.append_column(
                "quarantine_rule", verdict.failed_rows.column("quarantine_rule")
            ).append_column("quarantine_reason", verdict.failed_rows.column("quarantine_reason"))
            self.quarantine_writer.write(failed)
            self.profile.add_quarantined(failed)
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
