"""Deduplication: silver keeps one row per key, the latest version.

Only the keys that occur more than once in a day (change batches, redeliveries) are held in
memory, found by hashing every key into buckets that spill to disk past a memory budget; the
one pass and a silver repair from bronze decide each row's fate the same way.
"""

import datetime as dt
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.io.delta_lake import scan_partition
from llm_observatory.layout import bronze_location, day_filter
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import TableSpec

# Key hashes held in memory while finding a day's repeated keys, before spilling to disk.
HASH_MEMORY_BYTES = 8 * 1024 * 1024
HASH_BUCKETS = 64


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
