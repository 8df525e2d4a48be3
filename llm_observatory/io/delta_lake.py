"""The one writer of every lake table: streamed Parquet files, committed to Delta atomically.

delta-rs' own `write_deltalake` buffers a whole partition (1.5-2.5 GiB for a 1M-row day, over
5 GiB laid out by model/date/hour), so we write the Parquet files ourselves with pyarrow's
streaming `ParquetWriter`, hash every byte as it goes out (SHA-256 per file), and then commit
the new files together with the removal of the replaced partitions' old files in one Delta
transaction. A reader sees the old partition or the new one, never a mix; a run that fails
before the commit leaves only unreferenced files behind (and deletes them when it can).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import decimal
import hashlib
import itertools
import json
import logging
import math
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from llm_observatory.io.evidence import read_evidence, record_evidence
from llm_observatory.io.uploads import StoredBlob, open_upload, stored_blob
from llm_observatory.native_memory import release_large_blocks_eagerly
from llm_observatory.resources.lake import CHECKPOINT_INTERVAL, LakeLocation

logger = logging.getLogger(__name__)

# A Parquet row group closes at this many rows or bytes, whichever comes first: large enough
# for zstd to compress text well, small enough that buffering one stays cheap.
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 16 * 1024 * 1024
# A new data file starts past this size, so no single file becomes unwieldy to re-read.
TARGET_FILE_BYTES = 256 * 1024 * 1024
# Rows buffered across all open partitions before the largest buffer is flushed early.
BUFFERED_BYTES_LIMIT = 24 * 1024 * 1024
# Data files a writer keeps open at once (see DeltaPartitionWriter.max_open_files): more than
# one day of silver holds (24 hours x the models), so a day's rows in any order never split a
# partition's file; a sync over many days finishes the files of the days it has left.
MAX_OPEN_FILES = 256
# Batches read back from the lake hold about this much decoded data (a read-validate-write loop
# keeps a few copies of one batch alive), however wide the rows are.
SCAN_BATCH_BYTES = 8 * 1024 * 1024
MIN_SCAN_BATCH_ROWS = 64
# Strings longer than this get no min/max statistics: they would copy whole prompts into the log.
STATS_STRING_LIMIT = 64
COMMIT_METADATA_PREFIX = "llm_observatory."
COMMIT_RETRIES = 5
# Every write carries an application transaction `txn.appId` of this prefix and its write id.
APP_ID_PREFIX = "llm_observatory:"
# Commits searched, newest first, for the version a write that landed ambiguously created.
LANDED_SEARCH_COMMITS = 50


class LakeWriteError(RuntimeError):
    """A lake write could not be committed; the table is as it was before."""


class CommitOutcomeUnknownError(LakeWriteError):
    """A commit was requested and the log cannot be read to say whether it landed; the
    written files are kept (a version may reference them)."""


class ReadBackMismatchError(LakeWriteError):
    """A file read back from storage does not hash to what was written (on Azure: the service
    reports another size, Content-MD5 or ETag than the upload got); nothing was committed.

    The assets write the partition again from the start on it, a bounded number of times
    (`assets/retries.write_with_read_back_retries`), before the run fails.
    """


READ_BACK_CHUNK_BYTES = 8 * 1024 * 1024


def read_back_sha256(location: LakeLocation, relative_path: str) -> tuple[str, int]:
    """SHA-256 and size of a file as storage returns it now."""
    digest = hashlib.sha256()
    size = 0
    with location.filesystem.open(f"{location.fs_path}/{relative_path}", "rb") as handle:
        while chunk := handle.read(READ_BACK_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class WrittenFile:
    """A data file as committed: what the checksum checks verify later."""

    path: str
    partition: dict[str, str | None]
    rows: int
    bytes: int
    sha256: str
    # On Azure, from the upload (io/uploads.py): the file's MD5 (hex), checked block by block
    # by the service on receipt, and the ETag the service gave the blob; None on a local lake.
    md5: str | None = None
    etag: str | None = None


@dataclass
class CommitSummary:
    table_uri: str
    version: int
    files: list[WrittenFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(written.rows for written in self.files)

    @property
    def bytes(self) -> int:
        return sum(written.bytes for written in self.files)


class _HashingSink:
    """A write-only file that hashes what passes through on its way to the real file."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.bytes_written = 0
        self.closed = False
        self.abandoned = False

    @property
    def handle(self):
        return self._handle

    def abandon(self) -> None:
        """The failure path: later bytes are dropped and an upload is never committed."""
        self.abandoned = True
        abort = getattr(self._handle, "abort", None)
        if abort is not None:
            abort()

    def write(self, data) -> int:
        view = memoryview(data)
        if self.abandoned:
            return view.nbytes
        self._digest.update(view)
        self._handle.write(view)
        self.bytes_written += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self._handle.flush()

    def tell(self) -> int:
        return self.bytes_written

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
            self.closed = True

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def partition_path(partition: dict[str, str | None]) -> str:
    """Hive-style folder of a partition, e.g. `model=ollama/date=2026-11-01/hour=13`."""
    parts = []
    for name, value in partition.items():
        text = "__HIVE_DEFAULT_PARTITION__" if value is None else quote(value, safe="")
        parts.append(f"{name}={text}")
    return "/".join(parts)


def _stat_value(value, data_type: pa.DataType, bound: str):
    """A file's min or max as the Delta log holds it, or None where no bound can be written
    that is true for every reader (the file then carries no min/max for the column)."""
    if value is None:
        return None
    if pa.types.is_timestamp(data_type):
        # Readers parse these at millisecond precision: widen to whole milliseconds.
        micro = value.microsecond % 1000
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if bound == "min":
            value = value - dt.timedelta(microseconds=micro)
        elif micro:
            if value > dt.datetime.max.replace(microsecond=999_000, tzinfo=dt.UTC):
                return None  # 9999-12-31 23:59:59.999xxx: no whole millisecond above it
            value = value + dt.timedelta(microseconds=1000 - micro)
        # isoformat, not strftime, which writes the year 1 as "1", not "0001".
        moment = value.astimezone(dt.UTC).replace(tzinfo=None)
        return moment.isoformat(timespec="milliseconds") + "Z"
    if pa.types.is_date(data_type):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        # The log holds a JSON number: only where it spells the decimal exactly (up to ~15
        # digits) is it a true bound; decimal(38, s) values past that get none.
        number = float(value)
        return number if math.isfinite(number) and decimal.Decimal(repr(number)) == value else None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities have no JSON spelling
    if isinstance(value, (bytes, bytearray)):
        return None
    return value


def _column_stats(table: pa.Table, long_text: set[str]) -> dict:
    """Delta statistics: row count, nulls everywhere, min/max where they are short.

    Text columns found longer than the limit once are remembered in `long_text` and not
    measured again (prompts and responses would cost a full pass per row group for nothing).
    """
    minimums, maximums, nulls = {}, {}, {}
    for name, column in zip(table.column_names, table.columns):
        nulls[name] = column.null_count
        data_type = column.type
        if column.null_count == len(column) or name in long_text:
            continue
        if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
            if pc.max(pc.binary_length(column)).as_py() > STATS_STRING_LIMIT:
                long_text.add(name)
                continue
        elif not (
            pa.types.is_integer(data_type)
            or pa.types.is_floating(data_type)
            or pa.types.is_decimal(data_type)
            or pa.types.is_timestamp(data_type)
            or pa.types.is_date(data_type)
            or pa.types.is_boolean(data_type)
        ):
            continue
        try:
            extremes = pc.min_max(column).as_py()
            low = _stat_value(extremes["min"], data_type, "min")
            high = _stat_value(extremes["max"], data_type, "max")
        except (ArithmeticError, ValueError, pa.ArrowException) as error:
            raise LakeWriteError(
                f"column {name!r} ({data_type}): its values cannot be bounded for the Delta "
                f"statistics: {error}"
            ) from None
        if low is not None and high is not None:
            minimums[name], maximums[name] = low, high
    return {"minValues": minimums, "maxValues": maximums, "nullCount": nulls}


class _MergedStats:
    """Statistics of a file built up row group by row group."""

    def __init__(self, long_text: set[str]) -> None:
        self.long_text = long_text
        self.rows = 0
        self.minimums: dict = {}
        self.maximums: dict = {}
        self.nulls: dict = {}
        self.unbounded: set[str] = set()

    def add(self, table: pa.Table) -> None:
        stats = _column_stats(table, self.long_text)
        self.rows += table.num_rows
        for name, count in stats["nullCount"].items():
            self.nulls[name] = self.nulls.get(name, 0) + count
            all_null = count == table.num_rows
            if name not in stats["minValues"] and not all_null:
                self.unbounded.add(name)
        for name, low in stats["minValues"].items():
            self.minimums[name] = (
                low if name not in self.minimums else min(self.minimums[name], low)
            )
        for name, high in stats["maxValues"].items():
            self.maximums[name] = (
                high if name not in self.maximums else max(self.maximums[name], high)
            )

    def to_json(self) -> str:
        skipped = self.unbounded | self.long_text
        bounded = {k: v for k, v in self.minimums.items() if k not in skipped}
        return json.dumps(
            {
                "numRecords": self.rows,
                "minValues": bounded,
                "maxValues": {k: v for k, v in self.maximums.items() if k in bounded},
                "nullCount": self.nulls,
            },
            default=str,
        )


class _PartitionFiles:
    """The open data file of one partition, rolled over past the target size."""

    def __init__(self, writer: DeltaPartitionWriter, partition: dict[str, str | None]) -> None:
        self.writer = writer
        self.partition = partition
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self._sink: _HashingSink | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._relative_path = ""
        self._stats = _MergedStats(writer.long_text_columns)

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if (
            self.pending_rows >= self.writer.row_group_rows
            or self.pending_bytes >= self.writer.row_group_bytes
        ):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending, schema=self.writer.file_schema)
        if self.writer.sort_by:
            table = table.sort_by(self.writer.sort_by)
        self.writer.buffered_bytes -= self.pending_bytes
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        if self._parquet is None:
            self._open()
        self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))
        try:
            self._stats.add(table)
        except LakeWriteError as error:
            raise LakeWriteError(f"{self.writer.location.uri}: {error}") from None
        self.writer.open_files.move_to_end(id(self))
        if self._sink.bytes_written >= self.writer.target_file_bytes:
            self.close()

    def _open(self) -> None:
        folder = partition_path(self.partition)
        unique = f"{self.writer.write_id}-{uuid.uuid4().hex[:12]}"
        name = f"{self.writer.file_prefix}-{unique}.zstd.parquet"
        self._relative_path = f"{folder}/{name}" if folder else name
        location = self.writer.location
        if not self.writer.container_ready:
            ensure_container(location)
            self.writer.container_ready = True
        full_path = f"{location.fs_path.rstrip('/')}/{self._relative_path}"
        self.writer.started_paths.append(full_path)
        # On Azure each block carries its MD5 and the service checks it on receipt.
        handle = open_upload(location, full_path)
        self._sink = _HashingSink(handle)
        self._parquet = pq.ParquetWriter(
            self._sink,
            self.writer.file_schema,
            compression="zstd",
            compression_level=self.writer.compression_level,
            write_statistics=self.writer.parquet_statistics_columns,
            use_dictionary=self.writer.dictionary_columns,
        )
        self._stats = _MergedStats(self.writer.long_text_columns)
        self.writer.file_opened(self)

    def close(self) -> None:
        self.flush()
        if self._parquet is None:
            return
        self._parquet.close()
        self._sink.close()
        self.writer.finished.append(
            (
                WrittenFile(
                    path=self._relative_path,
                    partition=dict(self.partition),
                    rows=self._stats.rows,
                    bytes=self._sink.bytes_written,
                    sha256=self._sink.sha256,
                    md5=getattr(self._sink.handle, "md5", None),
                    etag=getattr(self._sink.handle, "etag", None),
                ),
                self._stats.to_json(),
            )
        )
        self._parquet, self._sink = None, None
        self.writer.open_files.pop(id(self), None)


class DeltaPartitionWriter:
    """Streams Arrow batches into a Delta table and replaces whole partitions in one commit.

    `replace` lists the partition filters whose current files the commit removes (e.g.
    `[("date", "=", "2026-11-01")]`); every row written must fall inside them. Or `remove`
    names the very files the commit removes (a merge rewriting only the files that hold
    changed keys), the rest of their partitions untouched. Memory is bounded by the row-group
    buffers, whatever the partition's size.
    """

    def __init__(
        self,
        location: LakeLocation,
        schema: pa.Schema,
        partition_by: Sequence[str],
        *,
        replace: list[tuple[str, str, str]] | None,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
        target_file_bytes: int = TARGET_FILE_BYTES,
        compression_level: int = 1,
        verify_read_back: bool = True,
        file_prefix: str = "part",
        read_version: int | None = None,
        data_change: bool = True,
        sort_by: Sequence[str] = (),
        buffered_bytes_limit: int = BUFFERED_BYTES_LIMIT,
        max_open_files: int = MAX_OPEN_FILES,
        remove: Sequence[DataFile] = (),
        categorical_columns: Sequence[str] = (),
    ) -> None:
        release_large_blocks_eagerly()
        if remove and replace is not None:
            raise ValueError("a write removes either whole partitions or named files, not both")
        # Files of the table (as of `read_version`) this write's commit removes, in the same
        # transaction that adds its own.
        self.remove = list(remove)
        # Each open file holds its Parquet writer's state (and, on ADLS, an upload buffer):
        # past this many, the least recently written is finished, and later rows of its
        # partition start a new file. A sync spreading over a month of days touches thousands
        # of silver partitions; memory must not grow with them.
        self.max_open_files = max_open_files
        self.open_files: OrderedDict[int, _PartitionFiles] = OrderedDict()
        # Writers that receive rows partition by partition (a merge re-reading a day file by
        # file) gain nothing from a large buffer; several open at once share the memory.
        self.buffered_bytes_limit = buffered_bytes_limit
        self.file_prefix = file_prefix
        # False for a rewrite of the same rows (compaction): streaming readers skip it.
        self.data_change = data_change
        # Rows of each row group sorted by these columns: tighter min/max per row group for
        # the filters analysts use, in memory bounded by one row group.
        self.sort_by = [(name, "ascending") for name in sort_by]
        # A writer whose rows were derived from the table as of `read_version` (a merge) must
        # not overwrite what another writer committed since: it commits against that version,
        # once, and Delta's conflict check refuses it if the same data changed meanwhile.
        self.read_version = read_version
        self.location = location
        self.schema = schema
        self.partition_by = list(partition_by)
        self.replace = replace
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.target_file_bytes = target_file_bytes
        self.compression_level = compression_level
        self.verify_read_back = verify_read_back
        self.file_schema = pa.schema([f for f in schema if f.name not in self.partition_by])
        self.parquet_statistics_columns = [
            f.name
            for f in self.file_schema
            if not (pa.types.is_large_string(f.type) or pa.types.is_string(f.type))
            or f.name.endswith("_id")
            or f.name in categorical_columns
        ]
        self.dictionary_columns = [
            f.name for f in self.file_schema if f.name in categorical_columns
        ]
        self.write_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.buffered_bytes = 0
        self.long_text_columns: set[str] = set()
        self.container_ready = False
        self.started_paths: list[str] = []
        # Set when a commit naming the files was requested / is known to have landed: from
        # then on the files may be referenced and only the log can release them.
        self.commit_requested = False
        self.committed = False
        self.finished: list[tuple[WrittenFile, str]] = []
        self._partitions: dict[tuple, _PartitionFiles] = {}
        self.rows_written = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Adds rows; they must carry the partition columns, typed as in the schema."""
        if isinstance(batch, pa.Table):
            for piece in batch.to_batches():
                self.write(piece)
            return
        if batch.num_rows == 0:
            return
        batch = batch.select(self.schema.names).cast(self.schema)
        self.rows_written += batch.num_rows
        for partition, rows in self._split_by_partition(batch):
            key = tuple(partition.values())
            files = self._partitions.get(key)
            if files is None:
                files = self._partitions[key] = _PartitionFiles(self, partition)
            data = rows.select(self.file_schema.names)
            self.buffered_bytes += data.nbytes
            files.add(data)
        while self.buffered_bytes > self.buffered_bytes_limit:
            largest = max(self._partitions.values(), key=lambda files: files.pending_bytes)
            if not largest.pending:
                break
            largest.flush()

    def _split_by_partition(
        self, batch: pa.RecordBatch
    ) -> Iterator[tuple[dict[str, str | None], pa.RecordBatch]]:
        if not self.partition_by:
            yield {}, batch
            return
        values = [batch.column(name) for name in self.partition_by]
        if all(pc.count_distinct(v, mode="all").as_py() == 1 for v in values):
            yield self._partition_of(batch, 0), batch
            return
        order = pc.sort_indices(batch, [(name, "ascending") for name in self.partition_by])
        # Runs of equal partition values in sorted order: a row starts a run where any
        # partition column differs from the row before (vectorised, no Python per row).
        starts = None
        for name in self.partition_by:
            column = pc.take(batch.column(name), order)
            previous, current = column.slice(0, len(column) - 1), column.slice(1)
            changed = pc.fill_null(pc.not_equal(previous, current), True)
            changed = pc.or_(changed, pc.xor(pc.is_null(previous), pc.is_null(current)))
            starts = changed if starts is None else pc.or_(starts, changed)
        boundaries = [0, *(pc.indices_nonzero(starts).to_numpy() + 1).tolist(), batch.num_rows]
        for begin, end in itertools.pairwise(boundaries):
            # `take` gives each partition compact buffers of its own: a slice of one sorted
            # batch would keep the whole batch alive while any partition still buffers it.
            piece = batch.take(order.slice(begin, end - begin))
            yield self._partition_of(piece, 0), piece

    def _partition_of(self, batch: pa.RecordBatch, row: int) -> dict[str, str | None]:
        partition = {}
        for name in self.partition_by:
            value = batch.column(name)[row].as_py()
            partition[name] = (
                None
                if value is None
                else (value.isoformat() if isinstance(value, dt.date) else str(value))
            )
        return partition

    def file_opened(self, files: _PartitionFiles) -> None:
        """Registers a partition's newly opened file; finishes the least recently written
        ones beyond `max_open_files`."""
        self.open_files[id(files)] = files
        while len(self.open_files) > self.max_open_files:
            oldest = next(iter(self.open_files.values()))
            if oldest is files:
                break
            oldest.close()

    def _close_files(self) -> None:
        for files in self._partitions.values():
            files.close()
        self._partitions.clear()

    def commit(self, custom_metadata: dict[str, str] | None = None) -> CommitSummary:
        """Closes every file and commits them, replacing the `replace` partitions atomically.

        Raises only when the commit did not land (or its outcome cannot be known): an error
        that arrives after the transaction reached the log (a failed refresh, a lost response)
        is resolved by finding this write's application transaction in the log.
        """
        try:
            self._close_files()
            if self.verify_read_back:
                self._verify_read_back()
            summary = self._commit(custom_metadata or {})
        except BaseException:
            self.abort()
            raise
        self.committed = True
        self.started_paths.clear()
        return summary

    def _verify_read_back(self) -> None:
        """Every file, read back from storage, must hash to what was streamed out.

        An Azure upload is not read back: the service checked every block's MD5 on receipt
        (io/uploads.py), so one properties request per file confirms it holds the blob the
        upload created (size, Content-MD5 and ETag), at no download.
        """
        for written, _ in self.finished:
            if written.etag is not None:
                self._verify_stored(written)
                continue
            try:
                actual, size = read_back_sha256(self.location, written.path)
            except FileNotFoundError:
                actual, size = "missing", 0
            if actual != written.sha256 or size != written.bytes:
                raise ReadBackMismatchError(
                    f"{self.location.uri}/{written.path}: wrote {written.bytes} bytes with "
                    f"SHA-256 {written.sha256}, storage returns {size} bytes with {actual}"
                )

    def _verify_stored(self, written: WrittenFile) -> None:
        try:
            stored = stored_blob(self.location, f"{self.location.fs_path}/{written.path}")
        except FileNotFoundError:
            stored = StoredBlob(size=0, md5=None, etag="missing", last_modified="")
        if (stored.size, stored.md5, stored.etag) != (written.bytes, written.md5, written.etag):
            raise ReadBackMismatchError(
                f"{self.location.uri}/{written.path}: uploaded {written.bytes} bytes with MD5 "
                f"{written.md5} as ETag {written.etag}, the service reports {stored.size} bytes "
                f"with MD5 {stored.md5} as ETag {stored.etag}"
            )

    def _commit(self, custom_metadata: dict[str, str]) -> CommitSummary:
        now_ms = int(time.time() * 1000)
        actions = [
            AddAction(
                # The transaction API URL-encodes the path for the log itself (a folder
                # `model=a%20b` is logged as `model=a%2520b`, as delta-rs writes its own).
                path=written.path,
                size=written.bytes,
                partition_values=written.partition,
                modification_time=now_ms,
                data_change=self.data_change,
                stats=stats,
            )
            for written, stats in self.finished
        ]
        written_files = [written for written, _ in self.finished]
        metadata = {f"{COMMIT_METADATA_PREFIX}{k}": v for k, v in custom_metadata.items()}
        metadata[f"{COMMIT_METADATA_PREFIX}files"] = json.dumps(
            [asdict(written) for written in written_files]
        )
        metadata[f"{COMMIT_METADATA_PREFIX}write_id"] = self.write_id
        table = ensure_table(self.location, self.schema, self.partition_by)
        # The evidence goes first: a commit that lands always has it (see io/evidence.py).
        record_evidence(
            self.location,
            [asdict(written) for written in written_files],
            self.write_id,
            custom_metadata.get("change_high_water"),
        )
        if not actions and self.replace is None and not self.remove:
            # Nothing to append: no empty commit.
            return CommitSummary(table_uri=self.location.uri, version=table.version(), files=[])
        if self.read_version is not None:
            table.load_as_version(self.read_version)
            try:
                version = self._attempt(table, actions, metadata)
            except CommitFailedError as error:
                raise LakeWriteError(
                    f"{self.location.uri} changed since version {self.read_version}, which these "
                    f"rows were derived from (another run wrote it): nothing committed ({error})"
                ) from None
            return CommitSummary(self.location.uri, version, written_files)
        last_error: Exception | None = None
        for attempt in range(COMMIT_RETRIES):
            try:
                table.update_incremental()
                version = self._attempt(table, actions, metadata)
                return CommitSummary(self.location.uri, version, written_files)
            except CommitFailedError as error:
                # Another writer committed another partition first: re-read the log and retry.
                last_error = error
                time.sleep(0.2 * (attempt + 1))
        raise LakeWriteError(
            f"could not commit to {self.location.uri} after {COMMIT_RETRIES} attempts: {last_error}"
        )

    def _attempt(self, table: DeltaTable, actions: list, metadata: dict) -> int:
        """One commit request; returns the version it created.

        From the moment the request is made the files may be referenced by the log, so they
        are never deleted unless the log shows that this write's transaction is absent. Any
        error after the request (the commit conflicting with itself after a lost response, a
        failed refresh, storage answering late) is resolved by reading the log.
        """
        self.commit_requested = True
        try:
            self._transact(table, actions, metadata)
            table.update_incremental()
            return table.version()
        except Exception as error:
            landed = self.landed_version()
            if landed is None:
                raise
            logger.warning(
                "%s: the commit request failed (%s) but the log holds this write (version %s)",
                self.location.uri,
                error,
                landed,
            )
            return landed

    def _transact(self, table: DeltaTable, actions: list, metadata: dict) -> None:
        """One Delta transaction: the new files, the removal of the `replace` partitions (or
        of the `remove` files), and this write's application transaction (`txn`), by which its
        outcome can be looked up. Removing named files is an append with remove actions: Delta's
        conflict check then refuses it when a concurrent commit removed any file it read."""
        now_ms = int(time.time() * 1000)
        removals = [
            RemoveAction(
                path=gone.path,
                data_change=self.data_change,
                deletion_timestamp=now_ms,
                size=gone.size,
                partition_values=gone.partition,
            )
            for gone in self.remove
        ]
        table.create_write_transaction(
            [*actions, *removals],
            mode="overwrite" if self.replace is not None else "append",
            schema=self.schema,
            partition_by=self.partition_by or None,
            partition_filters=self.replace or None,
            commit_properties=CommitProperties(
                custom_metadata=metadata,
                app_transactions=[
                    Transaction(self.app_id, 1, last_updated=int(time.time() * 1000))
                ],
            ),
        )

    @property
    def app_id(self) -> str:
        """This write's application id in the Delta log (`txn.appId`): unique per writer."""
        return f"{APP_ID_PREFIX}{self.write_id}"

    def landed_version(self) -> int | None:
        """The table version holding this write, None when the log shows it never landed.

        Read from the log as storage holds it now (application transactions survive
        checkpoints). Raises `CommitOutcomeUnknownError` when the log cannot be read: then
        nobody can say whether the files are referenced, and they are kept.
        """
        try:
            table = open_table_now(self.location)
            if table is None or table.transaction_version(self.app_id) is None:
                return None
            for entry in table.history(limit=LANDED_SEARCH_COMMITS):
                if entry.get(f"{COMMIT_METADATA_PREFIX}write_id") == self.write_id:
                    return int(entry["version"])
            return table.version()
        except Exception as error:
            raise CommitOutcomeUnknownError(
                f"{self.location.uri}: cannot read the log to learn whether write "
                f"{self.write_id} landed ({error}); its files are kept"
            ) from error

    def abort(self) -> None:
        """Drops files that no version of the table can reference; keeps every other one.

        Before a commit was requested nothing references the files. After it, only the log
        can say: they are deleted only when this write's transaction is absent from it. A
        writer that committed keeps its files, whatever later steps of the run do.
        """
        for files in self._partitions.values():
            try:
                if files._parquet is not None:
                    files._sink.abandon()
                    files._parquet.close()
                    files._sink.close()
            except Exception as error:  # noqa: BLE001 - best effort on the failure path
                logger.warning("could not close an uncommitted file: %s", error)
        self._partitions.clear()
        if self.committed:
            return
        if self.commit_requested:
            try:
                landed = self.landed_version()
            except CommitOutcomeUnknownError as error:
                logger.warning("%s", error)
                return
            if landed is not None:
                self.committed = True
                self.started_paths.clear()
                return
        for path in self.started_paths:
            try:
                self.location.filesystem.rm(path)
            except FileNotFoundError:
                continue
            except Exception as error:  # noqa: BLE001 - unreferenced files harm no reader
                logger.warning("could not delete uncommitted file %s: %s", path, error)
        self.started_paths.clear()
        self.finished.clear()


def open_table(location: LakeLocation) -> DeltaTable | None:
    """The Delta table at `location` as its log stands now, or None when nothing was
    committed there yet. Inside `reusing_opened_tables()` a table opened before is brought up
    to date instead of opened again."""
    opened = _OPENED_TABLES.get()
    if opened is None:
        return open_table_now(location)
    key = (location.uri, tuple(sorted((location.storage_options or {}).items())))
    table = opened.get(key)
    if table is not None:
        table.update_incremental()
        return table
    table = open_table_now(location)
    if table is not None:
        opened[key] = table
    return table


def open_table_now(location: LakeLocation) -> DeltaTable | None:
    """A table object of its own (a writer's read version, a snapshot it moves to an older
    version), never one shared through `reusing_opened_tables()`."""
    try:
        return DeltaTable(location.uri, storage_options=location.storage_options or None)
    except TableNotFoundError:
        return None
    except OSError:
        # On Azure, a layer whose container was never created fails the listing itself.
        if location.is_azure and not location.filesystem.exists(location.fs_path.split("/")[0]):
            return None
        raise


# Tables opened by read-only work that asks for the same tables many times (a check step
# verifies a day of bronze, silver and quarantine in five or six checks). Opening replays the
# log: 30-115 ms on a local lake with a month of commits, and on ADLS a listing, the last
# checkpoint (megabytes for a table of thousands of files) and every commit since; bringing an
# opened table up to date reads only the commits since (3-6 ms locally).
_OPENED_TABLES: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "llm_observatory_opened_tables", default=None
)


@contextlib.contextmanager
def reusing_opened_tables() -> Iterator[None]:
    """Within the block, `open_table` opens each table once and reuses it. Only for code that
    reads: writers and snapshots open their own objects (`open_table_now`)."""
    token = _OPENED_TABLES.set({})
    try:
        yield
    finally:
        _OPENED_TABLES.reset(token)


def ensure_container(location: LakeLocation) -> None:
    """Creates the blob container of an Azure location (one per layer) when it is missing."""
    if not location.is_azure:
        return
    container = location.fs_path.split("/")[0]
    if location.filesystem.exists(container):
        return
    try:
        location.filesystem.mkdir(container)
    except Exception:
        if not location.filesystem.exists(container):
            raise


def ensure_table(
    location: LakeLocation, schema: pa.Schema, partition_by: Sequence[str]
) -> DeltaTable:
    """Opens the table, creating it empty first; safe when parallel runs race to create it."""
    existing = open_table_now(location)
    if existing is not None:
        return existing
    ensure_container(location)
    try:
        return DeltaTable.create(
            location.uri,
            schema,
            mode="ignore",
            partition_by=list(partition_by) or None,
            storage_options=location.storage_options or None,
            configuration=retention_properties(location.retention_days),
        )
    except Exception:
        table = open_table_now(location)
        if table is None:
            raise
        return table


def scan_partition(
    location: LakeLocation,
    filters: list[tuple[str, str, object]] | None,
    columns: Sequence[str] | None = None,
    batch_rows: int = 16_384,
    with_partition_values: bool = False,
    table: DeltaTable | None = None,
) -> Iterator[pa.RecordBatch]:
    """Streams the current rows of matching partitions (an absent table has none).

    `table`: the location's table already opened (a caller scanning many partitions opens it
    once: each opening reads the log, about 50 ms on a local lake with a month of commits).

    Files are read one after the other, row group by row group, without pre-buffering: a
    dataset scan reads ahead across files and row groups and holds gigabytes while a slow
    consumer (silver's validation) catches up. Partition columns are not in the data files;
    callers that need them derive them again from the data, or ask for them
    (`with_partition_values`: appended from the log, typed as in the table's schema).
    """
    release_large_blocks_eagerly()
    if table is None:
        table = open_table(location)
    if table is None:
        return
    schema = pa.schema(table.schema().to_arrow()) if with_partition_values else None
    for relative_path, partition in current_files(table, filters):
        for batch in scan_file(location, relative_path, columns, batch_rows):
            if schema is not None:
                for name, value in partition.items():
                    field = schema.field(name)
                    constant = (
                        pa.scalar(None, field.type)
                        if value is None
                        else pa.scalar(value).cast(field.type)
                    )
                    batch = batch.append_column(field, pa.repeat(constant, batch.num_rows))
            yield batch


def scan_file(
    location: LakeLocation,
    relative_path: str,
    columns: Sequence[str] | None = None,
    batch_rows: int = 16_384,
    row_groups: Sequence[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Streams the rows of one data file (its file columns), row group by row group; only the
    listed `row_groups` when given. On ADLS only the bytes wanted are downloaded (see
    `_opened_for`)."""
    with _opened_for(location, relative_path, columns, row_groups) as (handle, metadata):
        parquet = pq.ParquetFile(handle, metadata=metadata, pre_buffer=False)
        wanted = list(columns) if columns else None
        if wanted is not None:
            present = set(parquet.schema_arrow.names)
            missing = [name for name in wanted if name not in present]
            if missing:
                raise LakeWriteError(
                    f"{location.uri}/{relative_path} lacks column(s) {', '.join(missing)}"
                )
        rows = _batch_rows_within(parquet, wanted, batch_rows)
        views = any(field.type in _PLAIN_TYPES for field in parquet.schema_arrow)
        for batch in parquet.iter_batches(
            batch_size=rows,
            row_groups=None if row_groups is None else sorted(row_groups),
            columns=wanted,
        ):
            yield _without_view_types(batch) if views else batch


# adlfs reads ahead 50 MiB past every read that misses its cache: reading one column (a sync
# looking for its keys) or one row group (the spot check) of a file downloaded the rest of it
# too (a sync of 100k rows a day read back 0.67 bytes per byte the lake stores). A read of
# chosen row groups, or of less than this share of a file's bytes, fetches each column chunk
# it needs, exactly (a request per chunk: few, for such reads).
SELECTIVE_READ_SHARE = 0.5


@contextlib.contextmanager
def _opened_for(
    location: LakeLocation,
    relative_path: str,
    columns: Sequence[str] | None,
    row_groups: Sequence[int] | None,
) -> Iterator[tuple[object, pq.FileMetaData | None]]:
    """The file opened for reading these columns and row groups, with its footer when it was
    read first. On ADLS the footer (one ranged read) tells how much of the file is wanted: a
    small share (or chosen row groups) is read chunk by chunk without read-ahead, most of it in
    large blocks."""
    path = f"{location.fs_path}/{relative_path}"
    if not location.is_azure or (columns is None and row_groups is None):
        with location.filesystem.open(path, "rb") as handle:
            yield handle, None
        return
    handle = location.filesystem.open(path, "rb", cache_type="none")
    try:
        metadata = footer_metadata(handle)
        if (
            row_groups is None
            and _selected_share(metadata, columns, row_groups) >= SELECTIVE_READ_SHARE
        ):
            handle.close()
            handle = location.filesystem.open(path, "rb")
        yield handle, metadata
    finally:
        handle.close()


def _selected_share(
    metadata: pq.FileMetaData, columns: Sequence[str] | None, row_groups: Sequence[int] | None
) -> float:
    """The share of a file's compressed column bytes that these columns and groups hold."""
    wanted = set(columns) if columns is not None else None
    groups = set(row_groups) if row_groups is not None else None
    total = selected = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for position in range(group.num_columns):
            chunk = group.column(position)
            total += chunk.total_compressed_size
            if (groups is None or index in groups) and (
                wanted is None or chunk.path_in_schema.split(".")[0] in wanted
            ):
                selected += chunk.total_compressed_size
    return selected / total if total else 1.0


# Files written by other engines (delta-rs' own delete and optimize, Spark) may declare text
# and bytes as Arrow's view types, which many compute kernels do not take (a reconciliation
# failed with "array_take has no kernel for string_view"); read back, they are plain again.
_PLAIN_TYPES = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def _without_view_types(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its view-typed columns made plain."""
    fields = [field.with_type(_PLAIN_TYPES.get(field.type, field.type)) for field in batch.schema]
    return batch.cast(pa.schema(fields))


def _batch_rows_within(
    parquet: pq.ParquetFile, columns: Sequence[str] | None, most_rows: int
) -> int:
    """Rows per batch such that a batch of the wanted columns holds about SCAN_BATCH_BYTES.

    A fixed row count would let memory grow with the width of the rows (prompts of megabytes);
    the file's own footer says how wide its rows are, decoded.
    """
    metadata = parquet.metadata
    if metadata.num_rows == 0:
        return most_rows
    wanted = set(columns) if columns is not None else None
    decoded = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if wanted is None or chunk.path_in_schema.split(".")[0] in wanted:
                decoded += chunk.total_uncompressed_size
    bytes_per_row = max(decoded / metadata.num_rows, 1.0)
    return int(min(most_rows, max(MIN_SCAN_BATCH_ROWS, SCAN_BATCH_BYTES // bytes_per_row)))


def current_files(
    table: DeltaTable, filters: list[tuple[str, str, object]] | None
) -> list[tuple[str, dict[str, object]]]:
    """Relative paths (decoded) and partition values of the current version's data files.

    Only equality filters on partition columns are supported, which is all the lake needs.
    """
    wanted = []
    for name, operator, value in filters or []:
        if operator != "=":
            raise ValueError(f"only '=' partition filters are supported, got {operator!r}")
        wanted.append((name, str(value)))
    if wanted:
        # The files of one value of the first filter's column, from an index built once per
        # snapshot: a sync over a month of days asked for one day's files at a time, and each
        # ask compared every file's partition values (4,320 silver files, 261 asks: 0.2 s).
        name, value = wanted[0]
        candidates = _files_by_partition(table, name).get(value, [])
        wanted = wanted[1:]
    else:
        candidates = _indexed_files(table)
    return [
        (path, dict(partition))
        for path, partition, shown in candidates
        if all(shown.get(name) == value for name, value in wanted)
    ]


def _files_by_partition(
    table: DeltaTable, name: str
) -> dict[str | None, list[tuple[str, dict[str, object], dict[str, str]]]]:
    """The current files grouped by their partition value of `name` (as text), each group
    sorted by path."""

    def grouped(_actions: pa.Table) -> dict:
        groups: dict[str | None, list] = {}
        for entry in _indexed_files(table):
            groups.setdefault(entry[2].get(name), []).append(entry)
        return groups

    return _per_snapshot(table, ("by partition", name), grouped)


# What is derived from an opened snapshot's file list, computed once per table object and
# version: a caller that walks a month of days on one opened table (the sync's checks, gold's
# rebuild) asked the log for every file and parsed all of them again per day (2,400 files of
# silver: 5 ms a day, 4 s of a 30-day sync). Keyed by the table object's id and what was
# derived, dropped with the object (DeltaTable is not hashable); an updated table is parsed
# again.
_PER_SNAPSHOT: dict[tuple[int, object], tuple[int, object]] = {}


def _per_snapshot(table: DeltaTable, what: object, derive):
    """`derive(add actions)` of the table's current version, computed once per `what`."""
    version = table.version()
    key = (id(table), what)
    cached = _PER_SNAPSHOT.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    derived = derive(pa.table(table.get_add_actions(flatten=True)))
    if key not in _PER_SNAPSHOT:
        weakref.finalize(table, _PER_SNAPSHOT.pop, key, None)
    _PER_SNAPSHOT[key] = (version, derived)
    return derived


def _indexed_files(table: DeltaTable) -> list[tuple[str, dict[str, object], dict[str, str]]]:
    """(path, partition values, partition values as text) of the table's current files,
    sorted by path."""
    return _per_snapshot(table, "files", _files_of)


def _files_of(actions: pa.Table) -> list[tuple[str, dict[str, object], dict[str, str]]]:
    partition_columns = [n for n in actions.column_names if n.startswith("partition.")]
    values = {
        n.removeprefix("partition."): actions.column(n).to_pylist() for n in partition_columns
    }
    files = []
    for row, raw_path in enumerate(actions.column("path").to_pylist()):
        partition = {name: column[row] for name, column in values.items()}
        shown = {
            name: value.isoformat() if hasattr(value, "isoformat") else str(value)
            for name, value in partition.items()
        }
        files.append((unquote(raw_path), partition, shown))
    files.sort(key=lambda entry: entry[0])
    return files


@dataclass(frozen=True)
class DataFile:
    """A current data file as the log holds it: what a commit needs to remove it, its row
    count and the min/max the log records for one column (None where it records none)."""

    path: str
    partition: dict[str, str | None]
    size: int
    rows: int | None
    minimum: object = None
    maximum: object = None


def data_files(
    table: DeltaTable,
    filters: list[tuple[str, str, object]] | None,
    bounds_of: str | None = None,
) -> list[DataFile]:
    """The current version's data files of the partitions matching `filters` (`=` only, as
    `current_files`), with the log's min/max of the column `bounds_of`."""
    wanted = {str(name): str(value) for name, operator, value in filters or []}
    if any(operator != "=" for _, operator, _ in filters or []):
        raise ValueError("only '=' partition filters are supported")
    return [
        entry
        for entry in _indexed_data_files(table, bounds_of)
        if all(entry.partition.get(name) == value for name, value in wanted.items())
    ]


def _indexed_data_files(table: DeltaTable, bounds_of: str | None) -> list[DataFile]:
    """Every current data file of the table with the log's bounds of `bounds_of`, sorted by
    path."""
    return _per_snapshot(
        table, ("data files", bounds_of), lambda actions: _data_files_of(actions, bounds_of)
    )


def _data_files_of(actions: pa.Table, bounds_of: str | None) -> list[DataFile]:
    names = set(actions.column_names)
    partition_columns = [n for n in actions.column_names if n.startswith("partition.")]

    def text(value) -> str | None:
        if value is None:
            return None
        return value.isoformat() if hasattr(value, "isoformat") else str(value)

    def column(name: str) -> list:
        return actions.column(name).to_pylist() if name in names else [None] * len(actions)

    partitions = {n.removeprefix("partition."): column(n) for n in partition_columns}
    minimums = column(f"min.{bounds_of}") if bounds_of else [None] * len(actions)
    maximums = column(f"max.{bounds_of}") if bounds_of else [None] * len(actions)
    files = [
        DataFile(
            path=unquote(raw_path),
            partition={name: text(values[row]) for name, values in partitions.items()},
            size=size,
            rows=rows,
            minimum=minimums[row],
            maximum=maximums[row],
        )
        for row, (raw_path, size, rows) in enumerate(
            zip(column("path"), column("size_bytes"), column("num_records"))
        )
    ]
    files.sort(key=lambda entry: entry.path)
    return files


def count_partition_rows(
    location: LakeLocation,
    filters: list[tuple[str, str, object]] | None,
    table: DeltaTable | None = None,
) -> int:
    """Rows in the current version of matching partitions, read from the data files' footers
    (`table`: the location's table already opened)."""
    if table is None:
        table = open_table(location)
    if table is None:
        return 0
    return sum(_footers_rows(location, [path for path, _ in current_files(table, filters)]))


def count_rows_by_partition(
    location: LakeLocation, column: str, values: Sequence[str], table: DeltaTable | None = None
) -> dict[str, int]:
    """`count_partition_rows` for many values of one partition column (days), from one
    reading of the log: {value: rows in the current files of that partition}."""
    counts = {value: 0 for value in values}
    if table is None:
        table = open_table(location)
    if table is None:
        return counts
    wanted = [
        (relative_path, shown.get(column))
        for relative_path, _, shown in _indexed_files(table)
        if shown.get(column) in counts
    ]
    for (_, value), rows in zip(wanted, _footers_rows(location, [path for path, _ in wanted])):
        counts[value] += rows
    return counts


def file_rows(location: LakeLocation, relative_path: str) -> int:
    """A data file's row count from its footer as storage holds it now (0 when unreadable)."""
    return _footer_rows(location, relative_path)


def _footer_rows(location: LakeLocation, relative_path: str) -> int:
    """A data file's row count as storage holds it now; an unreadable file holds none."""
    try:
        with location.filesystem.open(f"{location.fs_path}/{relative_path}", "rb") as handle:
            return footer_metadata(handle).num_rows
    except (OSError, pa.ArrowInvalid):
        logger.warning("cannot read %s/%s: its rows count as lost", location.uri, relative_path)
        return 0


# Parquet's reader fetches the last 64 KiB of a file to find its footer: all of a silver file
# of a small day, downloaded again for each count (4.2 MB of 72 files a day on Azurite). The
# footer of the lake's files is a few KiB.
FOOTER_READ_BYTES = 16 * 1024
PARQUET_MAGIC = b"PAR1"
FOOTER_READERS = 8


def footer_metadata(handle) -> pq.FileMetaData:
    """A Parquet file's footer from its last bytes only: one ranged read, a second one when
    the footer is longer than FOOTER_READ_BYTES."""
    size = handle.seek(0, 2)
    handle.seek(max(size - FOOTER_READ_BYTES, 0))
    tail = handle.read()
    if len(tail) < 12 or tail[-4:] != PARQUET_MAGIC:
        raise pa.ArrowInvalid("not a Parquet file (no footer)")
    footer_bytes = int.from_bytes(tail[-8:-4], "little") + 8
    if footer_bytes + 4 > size:
        raise pa.ArrowInvalid("not a Parquet file (footer longer than the file)")
    if footer_bytes > len(tail):
        handle.seek(size - footer_bytes)
        tail = handle.read()
    return pq.read_metadata(pa.BufferReader(PARQUET_MAGIC + tail[-footer_bytes:]))


def _footers_rows(location: LakeLocation, relative_paths: Sequence[str]) -> list[int]:
    """Row counts of many files: the footers read by a few threads (on ADLS each is a request
    or two whose round trip, not their bytes, is the cost)."""
    if len(relative_paths) <= 1:
        return [_footer_rows(location, path) for path in relative_paths]
    with ThreadPoolExecutor(max_workers=FOOTER_READERS, thread_name_prefix="footers") as pool:
        return list(pool.map(lambda path: _footer_rows(location, path), relative_paths))


@dataclass(frozen=True)
class RowGroupSpan:
    """One row group of a data file and the range one column takes in it, from the footer's
    statistics (`low`/`high` None: no statistics, the group may hold any value)."""

    path: str
    index: int
    rows: int
    low: object | None
    high: object | None

    def may_hold(self, value) -> bool:
        return self.low is None or self.high is None or self.low <= value <= self.high


def row_group_spans(
    location: LakeLocation,
    filters: list[tuple[str, str, object]] | None,
    column: str,
    table: DeltaTable | None = None,
) -> list[RowGroupSpan]:
    """The row groups of the matching partitions' current files with `column`'s range in
    each: one footer read per file (a few threads), no data read."""
    if table is None:
        table = open_table(location)
    if table is None:
        return []
    paths = [path for path, _ in current_files(table, filters)]

    def spans_of(path: str) -> list[RowGroupSpan]:
        with location.filesystem.open(f"{location.fs_path}/{path}", "rb") as handle:
            metadata = footer_metadata(handle)
        names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
        position = names.index(column) if column in names else None
        spans = []
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            stats = None if position is None else group.column(position).statistics
            known = stats is not None and stats.has_min_max
            spans.append(
                RowGroupSpan(
                    path,
                    index,
                    group.num_rows,
                    stats.min if known else None,
                    stats.max if known else None,
                )
            )
        return spans

    if len(paths) <= 1:
        return [span for path in paths for span in spans_of(path)]
    with ThreadPoolExecutor(max_workers=FOOTER_READERS, thread_name_prefix="footers") as pool:
        return [span for spans in pool.map(spans_of, paths) for span in spans]


def scan_row_groups(
    location: LakeLocation,
    spans: Sequence[RowGroupSpan],
    columns: Sequence[str] | None = None,
    batch_rows: int = 16_384,
) -> Iterator[pa.RecordBatch]:
    """Streams the rows of exactly these row groups, file by file."""
    by_file: dict[str, list[int]] = {}
    for span in spans:
        by_file.setdefault(span.path, []).append(span.index)
    for path, groups in sorted(by_file.items()):
        yield from scan_file(location, path, columns, batch_rows, row_groups=groups)


def table_version(location: LakeLocation) -> int | None:
    """The table's current version, or None when nothing was committed there yet."""
    table = open_table(location)
    return None if table is None else table.version()


def table_schema(location: LakeLocation) -> pa.Schema | None:
    table = open_table(location)
    if table is None:
        return None
    return pa.schema(table.schema())


def retention_properties(days: int) -> dict[str, str]:
    """Table properties set when a table is created: its log and its replaced files are kept
    as long as `LLM_OBS_LAKE_RETENTION_DAYS` says, so time travel and the rollback window agree
    (Delta's defaults are 30 days of log and 7 of replaced files)."""
    interval = f"interval {days} days"
    return {
        "delta.logRetentionDuration": interval,
        "delta.deletedFileRetentionDuration": interval,
        "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    }


def recorded_files(location: LakeLocation, table: DeltaTable, paths: Sequence[str]) -> dict:
    """The evidence (path, bytes, rows, sha256) of `paths`, by path: from the table's evidence
    table; for files written before it existed, from the commits' metadata (read only then)."""
    recorded = read_evidence(location, paths)
    if any(path not in recorded for path in paths):
        legacy = {entry["path"]: entry for entry in commit_files(table)}
        recorded = {**legacy, **recorded}
    return recorded


def commit_files(table: DeltaTable) -> list[dict]:
    """The files recorded (with SHA-256) in our commits' metadata, newest commit first: the
    record of lakes written before the evidence tables, as far as their log still reaches."""
    recorded = []
    for entry in table.history():
        files = entry.get(f"{COMMIT_METADATA_PREFIX}files")
        if files:
            recorded.extend(json.loads(files))
    return recorded


def rows_per_day(location: LakeLocation, from_footers: bool = True) -> dict[str, int]:
    """Rows per `date` partition of the current version, read from the data files' footers.

    The footers, not the log's statistics: a file changed in storage after its commit shows
    its real row count here. A file that cannot be read counts nothing (its rows are lost).
    `from_footers=False`: from the log's row count of each file (a footer only where the log
    has none), downloading nothing else; for a caller that verifies every file otherwise (the
    report on Azure, which compares each file's ETag with its upload's).
    """
    table = open_table(location)
    if table is None:
        return {}
    if not from_footers:
        return _logged_rows_per_day(location, table)
    totals: dict[str, int] = {}
    for relative_path, partition in current_files(table, None):
        day = partition.get("date")
        key = day.isoformat() if hasattr(day, "isoformat") else str(day)
        totals[key] = totals.get(key, 0) + _footer_rows(location, relative_path)
    return totals


def _logged_rows_per_day(location: LakeLocation, table: DeltaTable) -> dict[str, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return {}
    days = (
        actions.column("partition.date").to_pylist()
        if "partition.date" in actions.column_names
        else [None] * actions.num_rows
    )
    totals: dict[str, int] = {}
    for path, day, rows in zip(
        actions.column("path").to_pylist(), days, actions.column("num_records").to_pylist()
    ):
        key = day.isoformat() if hasattr(day, "isoformat") else str(day)
        if rows is None:
            rows = _footer_rows(location, unquote(path))
        totals[key] = totals.get(key, 0) + rows
    return totals


@dataclass
class PartitionSnapshot:
    """The files that made up some partitions at one moment, enough to put them back.

    A run that commits to two tables (silver and its quarantine) cannot do so atomically; if
    the second commit fails, the first is undone by re-committing these files, which stay in
    the table folder until a vacuum past the retention period.
    """

    location: LakeLocation
    filters: list[tuple[str, str, str]]
    actions: list[AddAction]
    table_existed: bool


def snapshot_partition(
    location: LakeLocation, filters: list[tuple[str, str, object]], version: int | None = None
) -> PartitionSnapshot:
    """The files of the partitions matching `filters` (`=` or `in`), now or at `version`."""
    table = open_table_now(location)
    if table is None or (version is not None and version < 0):
        return PartitionSnapshot(location, filters, [], table_existed=table is not None)
    if version is not None:
        table.load_as_version(version)
    schema = pa.schema(table.schema())
    wanted: dict[str, set[str]] = {}
    for name, operator, value in filters:
        if operator == "=":
            wanted[name] = {str(value)}
        elif operator == "in":
            wanted[name] = {str(item) for item in value}
        else:
            raise ValueError(f"only '=' and 'in' partition filters are supported, got {operator!r}")
    actions = []
    for add in pa.table(table.get_add_actions(flatten=False)).to_pylist():
        partition = {
            name: None
            if value is None
            else (value.isoformat() if hasattr(value, "isoformat") else str(value))
            for name, value in (add["partition"] or {}).items()
        }
        if any(partition.get(name) not in values for name, values in wanted.items()):
            continue
        minimums, maximums = {}, {}
        for name, low in (add["min"] or {}).items():
            high = (add["max"] or {}).get(name)
            if low is None or high is None or name not in schema.names:
                continue
            data_type = schema.field(name).type
            low, high = _stat_value(low, data_type, "min"), _stat_value(high, data_type, "max")
            if low is not None and high is not None:
                minimums[name], maximums[name] = low, high
        stats = {
            "numRecords": add["num_records"],
            "minValues": minimums,
            "maxValues": maximums,
            "nullCount": {k: v for k, v in (add["null_count"] or {}).items() if v is not None},
        }
        actions.append(
            AddAction(
                path=unquote(add["path"]),
                size=add["size_bytes"],
                partition_values=partition,
                modification_time=add["modification_time"],
                data_change=True,
                stats=json.dumps(stats, default=str),
            )
        )
    return PartitionSnapshot(location, filters, actions, table_existed=True)


def restore_partition(snapshot: PartitionSnapshot, reason: str) -> int | None:
    """Commits the snapshot's files back as the partition's content; returns the new version.

    Refused, with nothing changed, when a file it would re-add is gone (vacuumed, deleted in
    storage): committing it would leave the table pointing at nothing."""
    table = open_table_now(snapshot.location)
    if table is None:
        return None
    root = snapshot.location.fs_path.rstrip("/")
    gone = [
        action.path
        for action in snapshot.actions
        if not snapshot.location.filesystem.exists(f"{root}/{action.path}")
    ]
    if gone:
        raise LakeWriteError(
            f"cannot put back {snapshot.location.uri} {snapshot.filters}: {len(gone)} of its "
            f"files are gone from storage (e.g. {gone[0]}); nothing was changed"
        )
    table.create_write_transaction(
        snapshot.actions,
        mode="overwrite",
        schema=table.schema(),
        partition_by=table.metadata().partition_columns or None,
        partition_filters=snapshot.filters,
        commit_properties=CommitProperties(
            custom_metadata={
                f"{COMMIT_METADATA_PREFIX}operation": "undo",
                f"{COMMIT_METADATA_PREFIX}reason": reason[:500],
            }
        ),
    )
    table.update_incremental()
    logger.warning(
        "undid the last change to %s %s: %s", snapshot.location.uri, snapshot.filters, reason
    )
    return table.version()
