"""Applying changed and removed rows to the lake's tables, one atomic commit per table.

A cycle hands over the rows it captured (spilled to a local Parquet file, never held whole in
memory) and, from reconciliation, the keys to remove from some days. The merge:

- keeps, per key, the latest captured version; a version the lake already holds (a re-delivery
  from the overlap window) or one older than the lake's is dropped, so re-running a cycle
  changes nothing;
- rewrites, in the affected days of silver and quarantine, only the data files that hold a
  changed or removed key, without those keys (a row whose event time or model changed moves
  partition), and adds the new versions, validated; the days' other files stay as they are;
- appends the new versions to bronze inside their event day, and removes deleted keys from it
  (again rewriting only the files that hold them);
- records deletions under `silver/_deleted/<table>`; rebuilds gold for exactly those days;
- and, before returning, proves from the committed files' footers that every affected day
  holds what was meant (rows kept + rows added) and that gold counts silver's rows.

Which files hold a key is found by reading only the key column of the day's files (one
column, a few per cent of a day's bytes; a file whose logged min/max of the key excludes every
key is not read at all): no index to keep in step with the lake. Each table's commit removes
exactly the files rewritten and adds their rewritten versions with the new rows, in one Delta
transaction made against the version read (a concurrent rewrite makes it fail, nothing lost).

Every commit carries the cycle's id, so an interrupted cycle can be found and undone.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from llm_observatory.io.delta_lake import (
    DataFile,
    DeltaPartitionWriter,
    count_partition_rows,
    data_files,
    file_rows,
    open_table,
    open_table_now,
    scan_file,
    table_schema,
)
from llm_observatory.layout import (
    BRONZE,
    DATE_FIELD,
    QUARANTINE,
    SILVER,
    bronze_location,
    bronze_schema,
    categorical_columns,
    daily_metrics_location,
    day_filter,
    deleted_location,
    deleted_schema,
    quarantine_location,
    quarantine_schema,
    silver_location,
    silver_schema,
    utc_day,
    with_event_day,
    with_silver_partitions,
)
from llm_observatory.resources.lake import LakeLocation, LakeResource
from llm_observatory.resources.leases import Leases, day_resource
from llm_observatory.resources.source import read_ahead
from llm_observatory.tables import TableSpec
from llm_observatory.transform.metrics import gold_requests, rebuild_daily_metrics
from llm_observatory.transform.routing import route

SPILL_BATCH_ROWS = 16_384
# Kept rows are re-read in small batches: with a few in flight (read-ahead) and the writer's
# buffers, memory stays bounded whatever the day's size.
REWRITE_BATCH_ROWS = 4_096
# The merge's three writers (bronze, quarantine, silver) are open together and receive kept rows
# partition by partition: a small buffer each is enough.
MERGE_WRITER_BUFFER_BYTES = 8 * 1024 * 1024
# Files whose key column is read at once to find the ones holding changed keys (on ADLS each
# read is a couple of requests: a few in flight hide their latency).
KEY_READ_THREADS = 4
KEY_READ_BATCH_ROWS = 65_536
EPOCH_DAY = dt.date(1970, 1, 1)


class SyncCheckError(RuntimeError):
    """A cycle's own checks found the lake not as intended; the cycle is undone."""


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash per key (the same as silver's de-duplication uses)."""
    return pl.Series(values=keys).hash(seed=0).to_numpy()


def version_micros(versions: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Change-column values as epoch microseconds; NULL (never expected) sorts first."""
    as_int = pc.cast(pc.cast(versions, pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.fill_null(as_int, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)


def day_numbers(event_time: pa.Array | pa.ChunkedArray) -> np.ndarray:
    days = pc.cast(utc_day(event_time), pa.int32())
    return pc.fill_null(days, -1).to_numpy(zero_copy_only=False)


def as_day(number: int) -> dt.date:
    return EPOCH_DAY + dt.timedelta(days=int(number))


@dataclass
class CapturedRows:
    """Rows captured from the source, spilled to a local Parquet file, with their keys, versions
    (µs) and event days in memory: about 60 bytes a row, whatever the rows' width."""

    path: Path
    schema: pa.Schema
    key_name: str
    key_chunks: list = field(default_factory=list)
    versions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    days: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    @property
    def rows(self) -> int:
        return len(self.versions)

    @property
    def keys(self) -> pa.Array:
        """Every captured key as one Arrow array (compact: no Python object per key)."""
        if not self.key_chunks:
            return pa.array([], self.schema.field(self.key_name).type)
        if len(self.key_chunks) > 1:
            self.key_chunks = [pa.concat_arrays(self.key_chunks)]
        return self.key_chunks[0]

    @classmethod
    def capture(
        cls, batches: Iterable[pa.RecordBatch], table: TableSpec, schema: pa.Schema, path: Path
    ) -> CapturedRows:
        captured = cls(path=path, schema=schema, key_name=table.key)
        versions, days = [], []
        with pq.ParquetWriter(path, schema, compression="zstd", compression_level=1) as writer:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                writer.write_batch(batch)
                # A copy: a column imported from the driver shares one owner with the whole
                # batch, so keeping the column itself would keep every row's text alive.
                keys = batch.column(table.key)
                captured.key_chunks.append(keys.take(pa.array(np.arange(len(keys)))))
                versions.append(version_micros(batch.column(table.change_column)))
                days.append(day_numbers(batch.column(table.event_time)))
        if versions:
            captured.versions = np.concatenate(versions)
            captured.days = np.concatenate(days)
        return captured

    def batches(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(offset of the first row, batch) over the spilled rows, in capture order."""
        if not self.path.exists():
            return
        offset = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=SPILL_BATCH_ROWS):
            yield offset, batch
            offset += batch.num_rows

    def latest_per_key(self) -> np.ndarray:
        """Row positions of each key's latest captured version (the first of equal ones)."""
        if not self.rows:
            return np.empty(0, np.int64)
        frame = pl.DataFrame(
            {
                "row": np.arange(self.rows, dtype=np.int64),
                "key": pl.Series(values=pa.array(self.keys)),
                "version": self.versions,
            }
        )
        winners = (
            frame.sort(["version", "row"], descending=[True, False])
            .unique("key", keep="first", maintain_order=True)
            .get_column("row")
            .to_numpy()
        )
        return np.sort(winners)


@dataclass
class MergeOutcome:
    captured_rows: int = 0
    upserted_rows: int = 0
    unchanged_rows: int = 0
    silver_rows_added: int = 0
    quarantined_rows_added: int = 0
    removed_keys: int = 0
    deleted_recorded: int = 0
    # Data files replaced by a rewrite without the changed keys, and the rows carried over.
    files_rewritten: int = 0
    rows_carried: int = 0
    days: list[str] = field(default_factory=list)
    broken_counts: Counter = field(default_factory=Counter)

    def to_metadata(self) -> dict:
        return {
            "captured_rows": self.captured_rows,
            "upserted_rows": self.upserted_rows,
            "unchanged_rows": self.unchanged_rows,
            "silver_rows_added": self.silver_rows_added,
            "quarantined_rows_added": self.quarantined_rows_added,
            "removed_keys": self.removed_keys,
            "deleted_recorded": self.deleted_recorded,
            "days_rewritten": len(self.days),
            "files_rewritten": self.files_rewritten,
            "rows_carried": self.rows_carried,
        }


@dataclass
class KeySet:
    """Exact key membership with a vectorised 64-bit hash pre-filter."""

    keys: set

    def __post_init__(self) -> None:
        self.hashes = np.unique(key_hashes(pa.array(list(self.keys)))) if self.keys else None
        self._ordered: list | None = None

    def any_within(self, low, high) -> bool:
        """False only when no key can lie in [low, high] (a file's logged min/max of the key);
        True when the bounds are unknown or not comparable with the keys."""
        if not self.keys:
            return False
        if low is None or high is None:
            return True
        try:
            if self._ordered is None:
                self._ordered = sorted(self.keys)
            if not all(type(bound) is type(self._ordered[0]) for bound in (low, high)):
                return True
            position = bisect.bisect_left(self._ordered, low)
            return position < len(self._ordered) and self._ordered[position] <= high
        except TypeError:
            return True

    def mask(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if self.hashes is None or len(keys) == 0:
            return np.zeros(len(keys), dtype=bool)
        # `hashes` is sorted and unique: a binary search per key, no re-sorting per batch
        # (np.isin sorts both sides on every call).
        probes = key_hashes(keys)
        positions = np.searchsorted(self.hashes, probes)
        candidates = self.hashes[np.minimum(positions, len(self.hashes) - 1)] == probes
        if not candidates.any():
            return candidates
        positions = np.flatnonzero(candidates)
        values = pc.take(keys, pa.array(positions)).to_pylist()
        exact = np.fromiter((value in self.keys for value in values), bool, len(values))
        candidates[positions[~exact]] = False
        return candidates


def lake_versions_of(
    table: TableSpec,
    lake: LakeResource,
    days: Iterable[dt.date],
    wanted: KeySet,
    *,
    tables: dict[str, DeltaTable | None] | None = None,
    found_in: dict[tuple[str, dt.date], dict[str, set]] | None = None,
) -> dict[object, list[tuple[dt.date, int]]]:
    """Where (day, version µs) the lake's silver and quarantine hold any of the wanted keys.

    `tables`: silver and quarantine already opened (at the merge's read version). `found_in`
    receives, per (table URI, day), every file of the day with the wanted keys it holds: the
    merge then knows which files to rewrite without reading their keys again."""
    found: dict[object, list[tuple[dt.date, int]]] = defaultdict(list)
    days = list(days)
    if not days:
        return found
    # Each table opened once (an opening reads the log), not once per day.
    tables = tables or {}
    locations = [
        (location, tables[name] if name in tables else open_table(location))
        for name, location in (
            ("silver", silver_location(lake, table)),
            ("quarantine", quarantine_location(lake, table)),
        )
    ]
    columns = [table.key, table.change_column]
    for location, delta in locations:
        if delta is None:
            continue
        candidates, files_of_day = [], {}
        for day in days:
            files = files_of_day[day] = {}
            for entry in data_files(delta, day_filter(day), bounds_of=table.key):
                files[entry.path] = set()
                if wanted.any_within(entry.minimum, entry.maximum):
                    candidates.append((day, entry))

        def versions_in(candidate: tuple[dt.date, DataFile], location=location) -> list:
            held = []
            for batch in scan_file(location, candidate[1].path, columns, KEY_READ_BATCH_ROWS):
                hits = wanted.mask(batch.column(0))
                if hits.any():
                    chosen = batch.filter(pa.array(hits))
                    held += zip(
                        chosen.column(0).to_pylist(), version_micros(chosen.column(1)).tolist()
                    )
            return held

        with ThreadPoolExecutor(KEY_READ_THREADS) as pool:
            for (day, entry), held in zip(candidates, pool.map(versions_in, candidates)):
                for key, version in held:
                    found[key].append((day, version))
                    files_of_day[day][entry.path].add(key)
        if found_in is not None:
            for day, files in files_of_day.items():
                found_in[(location.uri, day)] = files
    return found


@dataclass
class KeyLookup:
    """Which files of which days were read for which keys: `found_in` as `lake_versions_of`
    fills it (per table URI and day, every file of the day with the looked-up keys it holds).
    A merge whose keys to drop on a day were all looked up there knows the files to rewrite
    without reading their keys again. Files are immutable, so a lookup made on another
    version of the table still describes every file it lists."""

    keys: set
    found_in: dict[tuple[str, dt.date], dict[str, set]] = field(default_factory=dict)


def _known_files(
    uri: str, day: dt.date, drop: set, lookups: Iterable[KeyLookup]
) -> dict[str, set] | None:
    """Per file of the day, the keys to drop it holds, when the lookups that read the day
    covered every key in `drop`; a file missing from one of them is left out (read again)."""
    used = [lookup.found_in[(uri, day)] for lookup in lookups if (uri, day) in lookup.found_in]
    covered = set().union(*(lookup.keys for lookup in lookups if (uri, day) in lookup.found_in))
    if not used or not drop <= covered:
        return None
    paths = set(used[0]).intersection(*used[1:])
    return {path: set().union(*(files[path] for files in used)) for path in paths}


def files_holding(
    location: LakeLocation,
    delta: DeltaTable | None,
    drops: dict[dt.date, KeySet],
    key: str,
    known: dict[dt.date, dict[str, set]] | None = None,
) -> tuple[list[tuple[dt.date, DataFile]], Counter]:
    """The data files of `drops`' days (as `delta`, opened at the merge's read version, holds
    them) that hold any of the day's keys to drop, found by reading only their key column;
    and, per day, the rows of its other files, which stay as they are.

    `known`: for some days, the keys each file holds among a set that includes every key to
    drop that day (from `lake_versions_of`): those files are not read again."""
    untouched: Counter = Counter()
    if delta is None:
        return [], untouched
    known = known or {}
    candidates, hits = [], []
    for day, drop in sorted(drops.items()):
        for entry in data_files(delta, day_filter(day), bounds_of=key):
            held = known.get(day, {}).get(entry.path)
            if held is not None:
                if any(found in drop.keys for found in held):
                    hits.append((day, entry))
                else:
                    untouched[day] += _rows_of(location, entry)
            elif drop.any_within(entry.minimum, entry.maximum):
                candidates.append((day, entry))
            else:
                untouched[day] += _rows_of(location, entry)

    def holds_any(candidate: tuple[dt.date, DataFile]) -> bool:
        day, entry = candidate
        for batch in scan_file(location, entry.path, [key], KEY_READ_BATCH_ROWS):
            if drops[day].mask(batch.column(0)).any():
                return True
        return False

    with ThreadPoolExecutor(KEY_READ_THREADS) as pool:
        held = list(pool.map(holds_any, candidates))
    for (day, entry), holds in zip(candidates, held):
        if holds:
            hits.append((day, entry))
        else:
            untouched[day] += _rows_of(location, entry)
    return hits, untouched


def _rows_of(location: LakeLocation, entry: DataFile) -> int:
    return entry.rows if entry.rows is not None else file_rows(location, entry.path)


def _kept_rows(
    location: LakeLocation,
    hits: list[tuple[dt.date, DataFile]],
    table: TableSpec,
    drops: dict[dt.date, KeySet],
    columns: list[str],
) -> Iterator[tuple[dt.date, pa.RecordBatch]]:
    """The rows of the files to rewrite without the dropped keys (file columns only), with
    their day; files are decoded in a thread ahead of the consumer, which encodes (pyarrow
    releases the GIL)."""
    for day, entry in hits:
        drop = drops[day]
        batches = scan_file(location, entry.path, columns, REWRITE_BATCH_ROWS)
        for batch in read_ahead(batches, depth=2):
            dropped = drop.mask(batch.column(table.key))
            yield day, batch.filter(pa.array(~dropped)) if dropped.any() else batch


def apply_changes(
    table: TableSpec,
    lake: LakeResource,
    source_schema: pa.Schema,
    captured: CapturedRows | None,
    removals: dict[dt.date, set] | None,
    deleted: dict[dt.date, set] | None,
    cycle_id: str,
    detected_at: dt.datetime | None = None,
    *,
    leases: Leases | None = None,
    looked_up: KeyLookup | None = None,
) -> MergeOutcome:
    """Merges captured rows and removes keys; see the module docstring for the guarantees.

    `removals` are keys to take out of given days (deleted from the source, or moved away);
    `deleted` is the subset to record under `silver/_deleted`. `looked_up`: where the caller
    already found keys among them (the departures it checked), not read again.
    """
    outcome = MergeOutcome()
    # Everything below is derived from these versions; the commits are made against them, so
    # a concurrent rewrite of the same table makes this merge fail instead of undoing it.
    # Objects of the merge's own (`open_table_now`): a table shared for reading is brought up
    # to date by whoever asks for it next.
    opened = {
        "bronze": open_table_now(bronze_location(lake, table)),
        "silver": open_table_now(silver_location(lake, table)),
        "quarantine": open_table_now(quarantine_location(lake, table)),
    }
    read_versions = {
        name: None if delta is None else delta.version() for name, delta in opened.items()
    }
    removals = {day: set(keys) for day, keys in (removals or {}).items() if keys}
    deleted = deleted or {}

    # 1. The latest captured version per key, minus what the lake already holds.
    upserts, winner_rows, winner_keys = _latest_captured(captured, outcome)
    candidate_days = {day for _, day in upserts.values()}
    # Which files of those days hold the keys, from the same read: no second pass over them.
    own_lookup = KeyLookup(set(upserts))
    in_lake = lake_versions_of(
        table,
        lake,
        sorted(candidate_days),
        KeySet(own_lookup.keys),
        tables={name: opened[name] for name in ("silver", "quarantine")},
        found_in=own_lookup.found_in,
    )
    lookups = [own_lookup] + ([looked_up] if looked_up is not None else [])
    stale_days = _drop_versions_held(in_lake, upserts, outcome)
    outcome.upserted_rows = len(upserts)
    upsert_days = {day for _, day in upserts.values()}
    days = sorted(upsert_days | set(stale_days) | set(removals))
    if not days:
        return outcome
    outcome.days = [day.isoformat() for day in days]
    if leases is not None:
        # One writer per day: a backfill writing one of these days refuses this merge (or is
        # refused while it runs); the commits below are also made against the versions read.
        leases.take(day_resource(table.name, day) for day in days)
    outcome.removed_keys = sum(len(keys) for keys in removals.values())

    keep_rows = np.zeros(captured.rows if captured else 0, dtype=bool)
    for row, key in zip(winner_rows.tolist(), winner_keys):
        keep_rows[row] = key in upserts

    commit_metadata = {
        "operation": "sync",
        "cycle_id": cycle_id,
        "days": json.dumps(outcome.days),
    }

    # 2. The files holding a key to drop, per table: only they are rewritten (without it).
    bronze = bronze_location(lake, table)
    silver = silver_location(lake, table)
    quarantine = quarantine_location(lake, table)
    # Moved keys leave their old day in bronze too, or a rebuild of that day would bring
    # them back.
    bronze_removals: dict[dt.date, set] = defaultdict(set)
    for day, keys in [*removals.items(), *stale_days.items()]:
        bronze_removals[day] |= keys
    bronze_drops = {day: KeySet(keys) for day, keys in bronze_removals.items()}
    bronze_hits, _ = files_holding(bronze, opened["bronze"], bronze_drops, table.key)
    changed = KeySet(set(upserts))
    drops = {
        day: KeySet(set(upserts) | removals[day]) if removals.get(day) else changed for day in days
    }

    def known(location: LakeLocation) -> dict[dt.date, dict[str, set]]:
        # Days whose keys to drop were all looked up there (by this merge or its caller).
        files = {day: _known_files(location.uri, day, drops[day].keys, lookups) for day in days}
        return {day: held for day, held in files.items() if held is not None}

    silver_hits, expected_rows = files_holding(
        silver, opened["silver"], drops, table.key, known(silver)
    )
    quarantine_hits, quarantine_untouched = files_holding(
        quarantine, opened["quarantine"], drops, table.key, known(quarantine)
    )
    expected_rows.update(quarantine_untouched)
    outcome.files_rewritten = len(bronze_hits) + len(silver_hits) + len(quarantine_hits)
    # Gold reads again only the models whose silver rows change: those of the files rewritten
    # and of the rows added.
    touched_models: dict[dt.date, set] = {day: set() for day in days}
    for day, entry in silver_hits:
        touched_models[day].add(entry.partition.get("model"))

    # 3. Bronze: new versions appended in their day; removed keys taken out of theirs.
    bronze_writer = _merge_writer(
        bronze,
        bronze_schema(source_schema),
        ["date"],
        bronze_hits,
        read_versions["bronze"],
        categorical_columns(table, BRONZE.role),
    )
    silver_writer = _merge_writer(
        silver,
        silver_schema(table, source_schema),
        table.silver_partition_by,
        silver_hits,
        read_versions["silver"],
        categorical_columns(table, SILVER.role),
    )
    quarantine_writer = _merge_writer(
        quarantine,
        quarantine_schema(source_schema),
        ["date"],
        quarantine_hits,
        read_versions["quarantine"],
        categorical_columns(table, QUARANTINE.role),
    )
    writers = [bronze_writer, quarantine_writer, silver_writer]
    try:
        for _, batch in _kept_rows(bronze, bronze_hits, table, bronze_drops, source_schema.names):
            bronze_writer.write(with_event_day(batch.cast(source_schema), table.event_time))
            outcome.rows_carried += batch.num_rows

        if captured is not None:
            new_rows = _NewRows(
                table, source_schema, bronze_writer, silver_writer, quarantine_writer, outcome
            )
            new_rows.write(captured, keep_rows, expected_rows, touched_models)

        for day, batch in _kept_rows(silver, silver_hits, table, drops, source_schema.names):
            silver_writer.write(with_silver_partitions(batch.cast(source_schema), table))
            expected_rows[day] += batch.num_rows
            outcome.rows_carried += batch.num_rows
        _carry_quarantine(
            table, quarantine, quarantine_hits, drops, quarantine_writer, expected_rows, outcome
        )

        # 4. Commits: bronze first (extra versions there are harmless), silver last.
        if leases is not None:
            leases.ensure_held()
        bronze_writer.commit({"layer": "bronze", **commit_metadata})
        quarantine_writer.commit({"layer": "silver_quarantine", **commit_metadata})
        silver_writer.commit({"layer": "silver", **commit_metadata})
    except BaseException:
        for writer in writers:
            writer.abort()
        raise

    recorded = {day: keys for day, keys in deleted.items() if keys}
    outcome.deleted_recorded = _record_deleted(
        table, lake, source_schema, recorded, commit_metadata, detected_at
    )
    if table.silver_model_column and table.feeds_daily_metrics:
        rebuild_daily_metrics(lake, days, commit_metadata, touched_models)

    _check_days(table, lake, days, expected_rows)
    return outcome


def _carry_quarantine(
    table: TableSpec,
    quarantine: LakeLocation,
    hits: list[tuple[dt.date, DataFile]],
    drops: dict[dt.date, KeySet],
    writer: DeltaPartitionWriter,
    expected_rows: Counter,
    outcome: MergeOutcome,
) -> None:
    """The rows of the quarantine files rewritten that keep their place (all columns, the
    rule and reason included), into the new files."""
    columns = _file_columns(quarantine)
    if not columns:
        return
    for day, batch in _kept_rows(quarantine, hits, table, drops, columns):
        writer.write(with_event_day(batch, table.event_time))
        expected_rows[day] += batch.num_rows
        outcome.rows_carried += batch.num_rows


def _latest_captured(
    captured: CapturedRows | None, outcome: MergeOutcome
) -> tuple[dict[object, tuple[int, dt.date]], np.ndarray, list]:
    """Per captured key, its latest version and its day; and which captured rows hold them
    (positions, keys)."""
    upserts: dict[object, tuple[int, dt.date]] = {}
    if captured is None or not captured.rows:
        return upserts, np.empty(0, np.int64), []
    outcome.captured_rows = captured.rows
    winner_rows = captured.latest_per_key()
    winner_keys = captured.keys.take(pa.array(winner_rows)).to_pylist()
    for row, key in zip(winner_rows.tolist(), winner_keys):
        upserts[key] = (int(captured.versions[row]), as_day(captured.days[row]))
    return upserts, winner_rows, winner_keys


def _drop_versions_held(
    in_lake: dict, upserts: dict[object, tuple[int, dt.date]], outcome: MergeOutcome
) -> dict[dt.date, set]:
    """Takes out of `upserts` the keys the lake already holds at that version (or newer) on
    their day; returns, per other day, the keys the lake holds there too (moved rows)."""
    stale_days: dict[dt.date, set] = defaultdict(set)
    for key, places in in_lake.items():
        version, day = upserts[key]
        if any(place == day and held >= version for place, held in places):
            del upserts[key]
            outcome.unchanged_rows += 1
            continue
        for place, _ in places:
            if place != day:
                stale_days[place].add(key)
    return stale_days


def _merge_writer(
    location: LakeLocation,
    schema: pa.Schema,
    partition_by: list[str] | tuple[str, ...],
    hits: list[tuple[dt.date, DataFile]],
    read_version: int | None,
    categorical: tuple[str, ...],
) -> DeltaPartitionWriter:
    """A writer that adds the merge's files and removes the files it rewrites (`hits`), in one
    commit against the version the merge read."""
    return DeltaPartitionWriter(
        location,
        schema,
        partition_by,
        replace=None,
        remove=[entry for _, entry in hits],
        file_prefix="sync",
        buffered_bytes_limit=MERGE_WRITER_BUFFER_BYTES,
        read_version=read_version,
        categorical_columns=categorical,
    )


@dataclass
class _NewRows:
    """The captured rows the merge keeps, into bronze (every one) and, routed by the rules,
    into silver or quarantine; counted per day for the check after the commits."""

    table: TableSpec
    source_schema: pa.Schema
    bronze_writer: DeltaPartitionWriter
    silver_writer: DeltaPartitionWriter
    quarantine_writer: DeltaPartitionWriter
    outcome: MergeOutcome

    def write(
        self,
        captured: CapturedRows,
        keep_rows: np.ndarray,
        expected_rows: Counter,
        touched_models: dict[dt.date, set],
    ) -> None:
        table, outcome = self.table, self.outcome
        for offset, batch in captured.batches():
            mask = keep_rows[offset : offset + batch.num_rows]
            if not mask.any():
                continue
            batch = batch.filter(pa.array(mask)).cast(self.source_schema)
            self.bronze_writer.write(with_event_day(batch, table.event_time))
            routed = route(batch, table, self.source_schema)
            passing = with_silver_partitions(routed.passing, table)
            outcome.broken_counts.update(routed.broken_counts)
            self.silver_writer.write(passing)
            outcome.silver_rows_added += passing.num_rows
            _count_by_day(passing, expected_rows)
            if table.silver_model_column:
                _models_by_day(passing, touched_models)
            if routed.quarantined.num_rows:
                self.quarantine_writer.write(routed.quarantined)
                outcome.quarantined_rows_added += routed.quarantined.num_rows
                _count_by_day(routed.quarantined, expected_rows)


def _models_by_day(rows: pa.RecordBatch | pa.Table, models: dict[dt.date, set]) -> None:
    """Adds the `model` partition values of silver rows to `models`, per `date` partition."""
    if not rows.num_rows:
        return
    pairs = (
        pa.table({"day": pc.cast(rows.column("date"), pa.int32()), "model": rows.column("model")})
        .group_by(["day", "model"])
        .aggregate([])
    )
    for day_number, model in zip(
        pairs.column("day").to_pylist(), pairs.column("model").to_pylist()
    ):
        models.setdefault(as_day(day_number), set()).add(model)


def _count_by_day(rows: pa.RecordBatch | pa.Table, counts: Counter) -> None:
    """Adds the rows' number per `date` partition to `counts`."""
    for day_number, count in Counter(pc.cast(rows.column("date"), pa.int32()).to_pylist()).items():
        counts[as_day(day_number)] += count


def _file_columns(location: LakeLocation) -> list[str] | None:
    schema = table_schema(location)
    if schema is None:
        return None
    return [name for name in schema.names if name != DATE_FIELD.name]


def _record_deleted(
    table: TableSpec,
    lake: LakeResource,
    source_schema: pa.Schema,
    deleted: dict[dt.date, set],
    commit_metadata: dict,
    detected_at: dt.datetime | None,
) -> int:
    """Lists the deleted keys under `silver/_deleted` (nothing written when there are none)."""
    if not deleted:
        return 0
    detected_at = detected_at or dt.datetime.now(dt.UTC)
    schema = deleted_schema(table, source_schema)
    keys, days = [], []
    for day, day_keys in sorted(deleted.items()):
        for key in sorted(day_keys, key=str):
            keys.append(key)
            days.append(day)
    rows = pa.table(
        {
            table.key: pa.array(keys, schema.field(table.key).type),
            "date": pa.array(days, pa.date32()),
            "deleted_detected_at": pa.array([detected_at] * len(keys), pa.timestamp("us", "UTC")),
        },
        schema=schema,
    )
    writer = DeltaPartitionWriter(
        deleted_location(lake, table), schema, ["date"], replace=None, file_prefix="sync"
    )
    writer.write(rows)
    writer.commit({"layer": "silver_deleted", **commit_metadata})
    return rows.num_rows


def _check_days(
    table: TableSpec, lake: LakeResource, days: list[dt.date], expected_rows: Counter
) -> None:
    """Re-counts every rewritten day from the committed files' footers."""
    problems = []
    silver, quarantine = silver_location(lake, table), quarantine_location(lake, table)
    silver_table, quarantine_table = open_table(silver), open_table(quarantine)
    gold_table = open_table(daily_metrics_location(lake)) if table.feeds_daily_metrics else None
    for day in days:
        silver_rows = count_partition_rows(silver, day_filter(day), silver_table)
        quarantined = (
            0
            if quarantine_table is None
            else count_partition_rows(quarantine, day_filter(day), quarantine_table)
        )
        if silver_rows + quarantined != expected_rows[day]:
            problems.append(
                f"{day}: silver {silver_rows} + quarantine {quarantined} != "
                f"{expected_rows[day]} rows written"
            )
        if table.feeds_daily_metrics:
            requests = gold_requests(lake, day, gold_table)
            if requests != silver_rows:
                problems.append(f"{day}: gold requests {requests} != silver rows {silver_rows}")
    if problems:
        raise SyncCheckError(f"{table.name}: " + "; ".join(problems))
