"""The evidence of every data file, kept where Delta log clean-up cannot remove it.

Each file's path, size, rows and SHA-256, and for bronze the source's change high-water mark
read before the copy, must outlive the log: Delta deletes commits older than
`delta.logRetentionDuration` after a checkpoint, and a migration runs for months. Delta's
per-file `tags` would be the natural home, but delta-rs' transaction API (1.6) takes no tags;
the commit's own `commitInfo`, where they lived first, goes with the log, and reading it means
one storage read per commit for ever.

So each lake table has an append-only evidence table of its own, a Delta table in the folder
`_evidence` inside the table's folder (Delta readers and vacuum skip `_`-prefixed folders). The
writer appends the evidence of its files *before* it requests the commit that names them: a
commit that lands always has its evidence, and evidence of a commit that never landed names
files no version references, which nothing looks up. Reading it costs its current files (kept
few by compacting it every `MAX_FILES` appends), not the number of commits.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import TableNotFoundError
from deltalake.schema import Field
from deltalake.transaction import AddAction, RemoveAction

from llm_observatory.io.uploads import open_upload
from llm_observatory.resources.lake import CHECKPOINT_INTERVAL, LakeLocation

logger = logging.getLogger(__name__)

EVIDENCE_FOLDER = "_evidence"
# Every this many appends the evidence table is compacted into one file: reading it stays a
# few GETs however long the migration runs.
MAX_FILES = 32
EVIDENCE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("bytes", pa.int64()),
        ("rows", pa.int64()),
        ("sha256", pa.string()),
        ("partition", pa.string()),
        ("write_id", pa.string()),
        ("change_high_water", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        # Azure only (io/uploads.py): the file's MD5 (hex), which the service checked on
        # receipt and keeps as Content-MD5, and the ETag its upload got. Any later rewrite of
        # the blob changes the ETag, whatever Content-MD5 and size the rewriter sets.
        ("md5", pa.string()),
        ("etag", pa.string()),
    ]
)
# Columns added after evidence tables were first written: added to an older table (as null for
# its rows) before the first append that carries them.
ADDED_COLUMNS = ("md5", "etag")


def evidence_location(location: LakeLocation) -> LakeLocation:
    """The evidence table of a lake table: `_evidence` inside its folder."""
    return LakeLocation(
        uri=f"{location.uri.rstrip('/')}/{EVIDENCE_FOLDER}",
        fs_path=f"{location.fs_path.rstrip('/')}/{EVIDENCE_FOLDER}",
        storage_options=location.storage_options,
        filesystem=location.filesystem,
        retention_days=location.retention_days,
    )


def record_evidence(
    location: LakeLocation,
    files: Sequence[dict],
    write_id: str,
    change_high_water: str | None,
) -> None:
    """Appends one row per file (`path`, `bytes`, `rows`, `sha256`, `partition`).

    Written as one small Parquet file and committed with Delta's transaction API, as the lake's
    own files are: delta-rs' `write_deltalake` would start a query engine (about 20 MiB and a
    dozen threads) in every process that writes to the lake."""
    if not files:
        return
    now = dt.datetime.now(dt.UTC)
    rows = pa.table(
        {
            "path": [entry["path"] for entry in files],
            "bytes": [int(entry["bytes"]) for entry in files],
            "rows": [int(entry["rows"]) for entry in files],
            "sha256": [entry["sha256"] for entry in files],
            "partition": [json.dumps(entry["partition"], sort_keys=True) for entry in files],
            "write_id": [write_id] * len(files),
            "change_high_water": [change_high_water or None] * len(files),
            "recorded_at": [now] * len(files),
            "md5": [entry.get("md5") for entry in files],
            "etag": [entry.get("etag") for entry in files],
        },
        schema=EVIDENCE_SCHEMA,
    )
    evidence = evidence_location(location)
    table = _open(evidence) or _create(evidence)
    table = _with_added_columns(table, evidence)
    _commit(table, evidence, [_put_file(evidence, rows, write_id)])
    if table.version() % MAX_FILES == 0:
        _compact(evidence)


def _open(evidence: LakeLocation) -> DeltaTable | None:
    try:
        return DeltaTable(evidence.uri, storage_options=evidence.storage_options or None)
    except TableNotFoundError:
        return None


def _create(evidence: LakeLocation) -> DeltaTable:
    """Creates the evidence table; safe when two writers race to create it."""
    try:
        return DeltaTable.create(
            evidence.uri,
            EVIDENCE_SCHEMA,
            mode="ignore",
            storage_options=evidence.storage_options or None,
            configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)},
        )
    except Exception:
        table = _open(evidence)
        if table is None:
            raise
        return table


def _with_added_columns(table: DeltaTable, evidence: LakeLocation) -> DeltaTable:
    """The table with every column of EVIDENCE_SCHEMA, adding the newer ones to an old table
    (a writer racing to do the same is harmless: the table is read again)."""
    present = set(table.schema().to_arrow().names)
    missing = [name for name in ADDED_COLUMNS if name not in present]
    if not missing:
        return table
    try:
        table.alter.add_columns([Field(name, "string", nullable=True) for name in missing])
    except Exception:
        table = _open(evidence)
        present = set(table.schema().to_arrow().names)
        if any(name not in present for name in missing):
            raise
    return _open(evidence)


def _put_file(evidence: LakeLocation, rows: pa.Table, label: str) -> AddAction:
    """Writes `rows` as one Parquet file of the evidence table; returns its Add action."""
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, compression="zstd")
    data = sink.getvalue()
    name = f"evidence-{label}-{uuid.uuid4().hex[:12]}.zstd.parquet"
    with open_upload(evidence, f"{evidence.fs_path}/{name}") as handle:
        handle.write(data)
    stats = {"numRecords": rows.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    return AddAction(name, data.size, {}, int(time.time() * 1000), True, json.dumps(stats))


def _commit(table: DeltaTable, evidence: LakeLocation, actions: list, data_change=True) -> None:
    table.create_write_transaction(
        actions,
        mode="append",
        schema=EVIDENCE_SCHEMA,
        commit_properties=CommitProperties(
            custom_metadata={"llm_observatory.operation": "evidence" if data_change else "merge"}
        ),
    )
    table.update_incremental()


def _compact(evidence: LakeLocation) -> None:
    """Merges the evidence table's files into one, every `MAX_FILES` appends: the merged file is
    added and exactly the files it was made of are removed, so an append made meanwhile stays.
    Best effort: a failure leaves more small files, nothing lost."""
    try:
        table = _open(evidence)
        actions = pa.table(table.get_add_actions())
        paths = [unquote(path) for path in actions.column("path").to_pylist()]
        if len(paths) < 2:
            return
        rows = table.to_pyarrow_table()
        merged = _put_file(evidence, rows, "merged")
        now = int(time.time() * 1000)
        removals = [RemoveAction(path, False, now) for path in paths]
        merged = AddAction(
            merged.path, merged.size, {}, merged.modification_time, False, merged.stats
        )
        _commit(table, evidence, [merged, *removals], data_change=False)
    except Exception as error:  # noqa: BLE001 - more small files, nothing lost
        logger.warning("could not compact the evidence table %s: %s", evidence.uri, error)


def read_evidence(location: LakeLocation, paths: Sequence[str] | None = None) -> dict[str, dict]:
    """The evidence of every file ever recorded for the table (or of `paths` only), by path
    (newest row wins). With `paths`, the rows are filtered in Arrow before any becomes a Python
    object: a check of one day turned every file's row of the table's whole history into
    Python, a cost growing with each day (0.24 s for 12,000 rows; 0.05 s filtered)."""
    evidence = evidence_location(location)
    try:
        table = _open(evidence)
    except OSError:
        if not evidence.filesystem.exists(evidence.fs_path):
            return {}
        raise
    if table is None:
        return {}
    rows = table.to_pyarrow_table()
    if paths is not None:
        # Filtered in Arrow, after the read: a dataset filter finds no row at all here (the
        # evidence files' statistics are empty, and delta-rs prunes every file on them).
        wanted = pa.array(sorted(set(paths)), rows.schema.field("path").type)
        rows = rows.filter(pc.is_in(rows.column("path"), value_set=wanted))
    if rows.num_rows == 0:
        return {}
    rows = rows.take(pc.sort_indices(rows, [("recorded_at", "ascending")]))
    recorded = {}
    for entry in rows.to_pylist():
        entry["partition"] = json.loads(entry["partition"]) if entry["partition"] else {}
        recorded[entry["path"]] = entry
    return recorded
