"""File layout upkeep: small files merged into files of a target size, rows clustered for the
filters analysts use, and replaced files vacuumed once they are past the retention.

Sync cycles append a small file per day to bronze at every change batch, and a re-copied or
merged day can leave a partition with several part-sized files; a reader pays per file opened.
Compaction rewrites, day by day, only the partitions holding more than one small file, through
the lake's one writer, so every new file has its SHA-256 in the commit (the checksum check keeps
working), Delta statistics on the key, time and model columns, and rows of each row group
sorted by the table's cluster columns (model, then event time). The commit is marked
`dataChange: false` (same rows, new files), is made against the version it read (a sync that
rewrote the day meanwhile wins and the compaction of that day is skipped), and is idempotent: a
day already compact is left alone.

Vacuum deletes files that left the table more than the retention ago
(`LLM_OBS_LAKE_RETENTION_DAYS`), so `rollback` can reach any version inside it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
from deltalake import DeltaTable

from llm_observatory.io.delta_lake import (
    TARGET_FILE_BYTES,
    DeltaPartitionWriter,
    LakeWriteError,
    open_table,
    scan_partition,
)
from llm_observatory.layout import (
    DAILY_METRICS,
    LakeTable,
    categorical_columns,
    day_filter,
)
from llm_observatory.resources.lake import LakeLocation
from llm_observatory.settings import MINIMUM_VACUUM_RETENTION_DAYS

logger = logging.getLogger(__name__)

# A file below this share of the target size counts as small.
SMALL_FILE_SHARE = 0.5


@dataclass
class TableCompaction:
    table: str
    days_compacted: list[str] = field(default_factory=list)
    days_skipped_conflict: list[str] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rows: int = 0
    vacuumed_files: int = 0
    version: int | None = None

    def metadata(self) -> dict:
        return {
            "days_compacted": len(self.days_compacted),
            "days_skipped_conflict": len(self.days_skipped_conflict),
            "files_before": self.files_before,
            "files_after": self.files_after,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "rows_rewritten": self.rows,
            "vacuumed_files": self.vacuumed_files,
        }

    def describe(self) -> str:
        return (
            f"{self.table}: {len(self.days_compacted)} day(s) compacted, files "
            f"{self.files_before} -> {self.files_after}, bytes {self.bytes_before:,} -> "
            f"{self.bytes_after:,}; {self.vacuumed_files} file(s) vacuumed"
            + (
                f"; skipped (changed meanwhile): {', '.join(self.days_skipped_conflict)}"
                if self.days_skipped_conflict
                else ""
            )
        )


def files_by_partition(table: DeltaTable, day: dt.date) -> dict[tuple, list[tuple[str, int]]]:
    """(path, bytes) of the day's current files, per partition folder."""
    actions = pa.table(table.get_add_actions(flatten=True))
    columns = [name for name in actions.column_names if name.startswith("partition.")]
    found: dict[tuple, list[tuple[str, int]]] = defaultdict(list)
    dates = actions.column("partition.date").to_pylist() if "partition.date" in columns else []
    for row, (path, size) in enumerate(
        zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist())
    ):
        if dates and str(dates[row]) != day.isoformat():
            continue
        key = tuple(actions.column(name)[row].as_py() for name in columns)
        found[key].append((path, int(size)))
    return found


def needs_compaction(partitions: dict[tuple, list[tuple[str, int]]], target: int) -> bool:
    small = SMALL_FILE_SHARE * target
    return any(sum(1 for _, size in files if size < small) >= 2 for files in partitions.values())


def compact_day(
    table: LakeTable,
    day: dt.date,
    target_file_bytes: int = TARGET_FILE_BYTES,
    cluster_by: tuple[str, ...] = (),
    result: TableCompaction | None = None,
) -> TableCompaction:
    """Rewrites the day's partitions into target-size files when it has small ones."""
    result = result or TableCompaction(table.name)
    location = table.location
    delta = open_table(location)
    if delta is None:
        return result
    read_version = delta.version()
    partitions = files_by_partition(delta, day)
    if not needs_compaction(partitions, target_file_bytes):
        return result
    schema = pa.schema(delta.schema().to_arrow())
    partition_by = list(delta.metadata().partition_columns)
    sort_by = [name for name in cluster_by if name in schema.names]
    writer = DeltaPartitionWriter(
        location,
        schema,
        partition_by,
        replace=day_filter(day),
        target_file_bytes=target_file_bytes,
        file_prefix="compact",
        read_version=read_version,
        data_change=False,
        sort_by=sort_by,
        categorical_columns=categorical_columns(table.source_table, table.role),
    )
    rows = 0
    try:
        for batch in scan_partition(location, day_filter(day), with_partition_values=True):
            rows += batch.num_rows
            writer.write(batch)
        summary = writer.commit(
            {"operation": "compaction", "partition": day.isoformat(), "days": f'["{day}"]'}
        )
    except LakeWriteError as error:
        if "changed since version" not in str(error):
            raise
        logger.warning("%s %s changed while compacting, left as it is: %s", table.name, day, error)
        result.days_skipped_conflict.append(day.isoformat())
        return result
    except BaseException:
        writer.abort()
        raise
    result.days_compacted.append(day.isoformat())
    result.files_before += sum(len(files) for files in partitions.values())
    result.bytes_before += sum(size for files in partitions.values() for _, size in files)
    result.files_after += len(summary.files)
    result.bytes_after += summary.bytes
    result.rows += rows
    result.version = summary.version
    return result


def vacuum(location: LakeLocation, retention_days: int) -> int:
    """Deletes files removed from the table more than `retention_days` ago; returns how many.

    Never with less than `MINIMUM_VACUUM_RETENTION_DAYS`: a file replaced minutes ago may still
    be read by a run that started before (or be the target of an undo)."""
    if retention_days < MINIMUM_VACUUM_RETENTION_DAYS:
        raise ValueError(
            f"vacuum of {location.uri} refused: a retention of {retention_days} day(s) is under "
            f"the minimum of {MINIMUM_VACUUM_RETENTION_DAYS} (LLM_OBS_LAKE_RETENTION_DAYS)"
        )
    delta = open_table(location)
    if delta is None:
        return 0
    deleted = delta.vacuum(
        retention_hours=retention_days * 24, dry_run=False, enforce_retention_duration=True
    )
    return len(deleted)


def cluster_columns(table: LakeTable) -> tuple[str, ...]:
    """Model, then event time: what the typical queries filter and range on."""
    if table.role == DAILY_METRICS.role:
        return ("model",)
    spec = table.source_table
    columns = [spec.silver_model_column] if spec.silver_model_column else []
    return (*columns, spec.event_time)


def compact_tables(
    tables: list[LakeTable],
    days: list[dt.date],
    retention_days: int,
    target_file_bytes: int = TARGET_FILE_BYTES,
    cluster: bool = True,
    run_vacuum: bool = True,
) -> list[TableCompaction]:
    results = []
    for table in tables:
        result = TableCompaction(table.name)
        for day in days:
            compact_day(
                table,
                day,
                target_file_bytes,
                cluster_columns(table) if cluster else (),
                result,
            )
        if run_vacuum:
            result.vacuumed_files = vacuum(table.location, retention_days)
        results.append(result)
    return results
