"""Compaction merges a day's small files without changing a row, keeps every file's SHA-256 in
the log, leaves compact days alone, yields to a writer that changed the day meanwhile, and
vacuum keeps what the retention promises."""

import datetime as dt
import hashlib
import json

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from llm_observatory.io import delta_lake
from llm_observatory.io.delta_lake import COMMIT_METADATA_PREFIX, DeltaPartitionWriter
from llm_observatory.operate import compaction
from llm_observatory.operate.compaction import compact_day, compact_tables
from llm_observatory.operate.rollback import select_tables
from llm_observatory.resources.lake import LakeResource
from llm_observatory_tests.test_delta_writer import lake

__all__ = ["lake"]  # the local / Azurite lake fixture, shared with the writer's tests

DAY = dt.date(2026, 11, 3)
SCHEMA = pa.schema(
    [
        ("interaction_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),
        ("latency_ms", pa.int64()),
        ("prompt", pa.large_string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("cost_usd", pa.decimal128(12, 6)),
        ("date", pa.date32()),
    ]
)


def batch_of(start: int, count: int, day: dt.date = DAY) -> pa.Table:
    moment = dt.datetime.combine(day, dt.time(), dt.UTC)
    return pa.table(
        {
            "interaction_id": [f"k{i:06d}" for i in range(start, start + count)],
            "timestamp": [
                moment + dt.timedelta(seconds=(i * 7919) % 86_400)
                for i in range(start, start + count)
            ],
            "model_name": [
                ("grok", "ollama", "gemini")[i % 3] for i in range(start, start + count)
            ],
            "latency_ms": list(range(start, start + count)),
            "prompt": [f"prompt {i} é世" * 3 for i in range(start, start + count)],
            "last_modified": [moment] * count,
            "cost_usd": [None] * count,
            "date": [day] * count,
        },
        schema=SCHEMA,
    )


def append(lake: LakeResource, table: pa.Table) -> None:
    writer = DeltaPartitionWriter(
        lake.location("bronze", "llm_interactions"), SCHEMA, ["date"], replace=None
    )
    writer.write(table)
    writer.commit({"partition": DAY.isoformat()})


def rows(location, version=None) -> list:
    table = DeltaTable(
        location.uri, version=version, storage_options=location.storage_options or None
    ).to_pyarrow_table()
    return sorted(map(repr, table.to_pylist()))


def test_small_files_of_a_day_become_one_with_every_row_and_checksum(lake):
    for start in range(0, 600, 100):
        append(lake, batch_of(start, 100))
    append(lake, batch_of(10_000, 50, DAY + dt.timedelta(days=1)))  # another day: untouched
    [bronze] = select_tables(lake, ["bronze/llm_interactions"])
    location = bronze.location
    before = rows(location)
    version_before = DeltaTable(location.uri, storage_options=location.storage_options or None)
    version_before = version_before.version()

    [result] = compact_tables([bronze], [DAY], retention_days=30)
    assert result.days_compacted == [DAY.isoformat()]
    assert (result.files_before, result.files_after, result.rows) == (6, 1, 600)
    assert rows(location) == before
    table = DeltaTable(location.uri, storage_options=location.storage_options or None)
    files = dict(delta_lake.current_files(table, [("date", "=", DAY.isoformat())]))
    assert len(files) == 1
    # The new file's SHA-256 is in the commit, and matches the bytes in storage.
    entry = table.history(1)[0]
    [written] = json.loads(entry[f"{COMMIT_METADATA_PREFIX}files"])
    with location.filesystem.open(f"{location.fs_path}/{written['path']}", "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == written["sha256"]
    assert entry[f"{COMMIT_METADATA_PREFIX}operation"] == "compaction"
    # Rows of the row group are clustered: model, then time.
    compacted = DeltaTable(location.uri, storage_options=location.storage_options or None)
    data = compacted.to_pyarrow_table(partitions=[("date", "=", DAY.isoformat())])
    pairs = list(zip(data["model_name"].to_pylist(), data["timestamp"].to_pylist()))
    assert pairs == sorted(pairs)
    # Earlier versions still read as they were (rollback reaches them).
    assert rows(location, version_before) == before

    # A compact day is left alone: no new version.
    [again] = compact_tables([bronze], [DAY], retention_days=30)
    assert (
        again.days_compacted == []
        and compacted.version()
        == DeltaTable(location.uri, storage_options=location.storage_options or None).version()
    )


def test_a_concurrent_writer_to_the_same_day_loses_nothing(tmp_path, monkeypatch):
    lake = LakeResource(url=str(tmp_path / "lake"))
    for start in range(0, 300, 100):
        append(lake, batch_of(start, 100))
    [bronze] = select_tables(lake, ["bronze/llm_interactions"])
    real_scan = compaction.scan_partition
    concurrent = {}

    def scan_while_another_writer_commits(*args, **kwargs):
        yield from real_scan(*args, **kwargs)
        concurrent["write"]()

    monkeypatch.setattr(compaction, "scan_partition", scan_while_another_writer_commits)

    # A sync appends new versions to the day while it is compacted: the compaction only
    # replaces the files it read, so the appended file stays beside the compacted one.
    concurrent["write"] = lambda: append(lake, batch_of(5_000, 10))
    result = compact_day(bronze, DAY)
    assert result.days_compacted == [DAY.isoformat()]
    assert len(rows(bronze.location)) == 310

    # A backfill rewrites the day while it is compacted: the backfill's day stands, the
    # compaction is skipped and its own files are removed.
    for start in range(1_000, 1_300, 100):
        append(lake, batch_of(start, 100))

    def rewrite_the_day():
        writer = DeltaPartitionWriter(
            bronze.location, SCHEMA, ["date"], replace=[("date", "=", DAY.isoformat())]
        )
        writer.write(batch_of(7_000, 5))
        writer.commit({"partition": DAY.isoformat()})

    concurrent["write"] = rewrite_the_day
    earlier = {path.name for path in (tmp_path / "lake").rglob("compact-*.parquet")}
    result = compact_day(bronze, DAY)
    assert result.days_skipped_conflict == [DAY.isoformat()] and not result.days_compacted
    assert rows(bronze.location) == sorted(map(repr, batch_of(7_000, 5).to_pylist()))
    table = DeltaTable(bronze.location.uri)
    live = {path.rsplit("/", 1)[-1] for path, _ in delta_lake.current_files(table, None)}
    on_disk = {path.name for path in (tmp_path / "lake").rglob("compact-*.parquet")}
    assert on_disk - earlier <= live  # files of the refused compaction were deleted


def data_files(folder) -> list:
    """The tables' Parquet data files (not those of their `_evidence` tables)."""
    return [path for path in folder.rglob("*.parquet") if "_evidence" not in path.parts]


def test_vacuum_keeps_replaced_files_inside_the_retention(tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"))
    for start in range(0, 300, 100):
        append(lake, batch_of(start, 100))
    [bronze] = select_tables(lake, ["bronze/llm_interactions"])
    compact_tables([bronze], [DAY], retention_days=30)
    files_on_disk = len(data_files(tmp_path / "lake"))
    assert files_on_disk == 4  # 3 replaced + 1 current: kept for 30 days
    # Vacuum never runs under Delta's safety minimum of 7 days: a clear error, nothing deleted.
    with pytest.raises(ValueError, match="retention of 0 day.*minimum of 7"):
        compact_tables([bronze], [DAY], retention_days=0)
    assert len(data_files(tmp_path / "lake")) == files_on_disk
    assert len(rows(bronze.location)) == 300
