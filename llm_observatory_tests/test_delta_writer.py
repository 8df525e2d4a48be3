"""The lake writer on a local folder and on Azurite: atomic partition replacement, checksums,
bounded statistics, and no trace of a failed write."""

import datetime as dt
import decimal
import hashlib
import io
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from llm_observatory.io.delta_lake import (
    COMMIT_METADATA_PREFIX,
    FOOTER_READ_BYTES,
    DeltaPartitionWriter,
    commit_files,
    count_partition_rows,
    count_rows_by_partition,
    current_files,
    data_files,
    footer_metadata,
    open_table,
    open_table_now,
    reusing_opened_tables,
    rows_per_day,
    table_version,
)
from llm_observatory.io.evidence import evidence_location, read_evidence
from llm_observatory.layout import categorical_columns
from llm_observatory.resources.lake import CHECKPOINT_INTERVAL, LakeResource
from llm_observatory.tables import LOGS

UTC = dt.UTC
SCHEMA = pa.schema(
    [
        ("key", pa.large_string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("cost", pa.decimal128(12, 6)),
        ("prompt", pa.large_string()),
        ("model", pa.large_string()),
        ("date", pa.date32()),
        ("hour", pa.int32()),
    ]
)
PARTITION_BY = ["model", "date", "hour"]


def rows_for(day: int, count: int, tag: str = "v1") -> pa.Table:
    moments = [
        dt.datetime(2026, 11, day, tzinfo=UTC) + dt.timedelta(minutes=37 * i) for i in range(count)
    ]
    moments = [m for m in moments if m.day == day]
    models = ["ollama", "gemini", "grok"]
    return pa.table(
        {
            "key": [f"{tag}-{day}-{i}" for i in range(len(moments))],
            "ts": moments,
            "cost": [decimal.Decimal(i) / 1_000_000 for i in range(len(moments))],
            "prompt": ["é世🚀 " * 100 for _ in moments],
            "model": [models[i % 3] for i in range(len(moments))],
            "date": [m.date() for m in moments],
            "hour": [m.hour for m in moments],
        },
        schema=SCHEMA,
    )


def write_day(location, day: int, table: pa.Table, **kwargs):
    writer = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", f"2026-11-{day:02d}")], **kwargs
    )
    writer.write(table)
    return writer.commit({"partition": f"2026-11-{day:02d}"})


@pytest.fixture(params=["local", "azurite"])
def lake(request, tmp_path) -> LakeResource:
    if request.param == "local":
        return LakeResource(url=str(tmp_path / "lake"))
    azurite = request.getfixturevalue("azurite")
    container = request.getfixturevalue("azurite_container")
    return LakeResource(
        url=azurite.abfs_url(container, "lake"),
        azure_storage_connection_string=azurite.connection_string,
    )


def read(location) -> pl.DataFrame:
    return pl.read_delta(location.uri, storage_options=location.storage_options or None)


def test_replacing_a_partition_leaves_the_others_and_drops_old_rows(lake):
    location = lake.location("silver", "t")
    write_day(location, 1, rows_for(1, 40))
    write_day(location, 2, rows_for(2, 30))
    write_day(location, 1, rows_for(1, 10, tag="v2"))

    frame = read(location).sort("key")
    day_one = frame.filter(pl.col("date") == dt.date(2026, 11, 1))
    assert day_one["key"].to_list() == sorted(f"v2-1-{i}" for i in range(10))
    assert frame.filter(pl.col("date") == dt.date(2026, 11, 2)).height == 30
    assert count_partition_rows(location, [("date", "=", "2026-11-01")]) == 10
    assert rows_per_day(location) == {"2026-11-01": 10, "2026-11-02": 30}
    # Values round-trip exactly: unicode, decimals, microsecond UTC timestamps.
    expected = pl.from_arrow(rows_for(1, 10, tag="v2")).sort("key")
    assert day_one.select(expected.columns).equals(expected)


def test_each_committed_file_carries_the_sha256_of_its_bytes(lake):
    location = lake.location("bronze", "t")
    summary = write_day(location, 3, rows_for(3, 39))
    assert summary.rows == 39
    table = DeltaTable(location.uri, storage_options=location.storage_options or None)
    recorded = commit_files(table)
    assert {f["path"] for f in recorded} == {f.path for f in summary.files}
    for entry in recorded:
        with location.filesystem.open(f"{location.fs_path}/{entry['path']}", "rb") as handle:
            content = handle.read()
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]
        assert len(content) == entry["bytes"]


def test_statistics_skip_long_text_but_bound_keys_and_times(tmp_path):
    location = LakeResource(url=str(tmp_path)).location("silver", "t")
    write_day(location, 4, rows_for(4, 10))
    table = DeltaTable(location.uri)
    actions = pa.table(table.get_add_actions(flatten=True))
    # Whole prompts never go into the log; keys and times are bounded for pruning.
    if "min.prompt" in actions.column_names:
        assert actions.column("min.prompt").null_count == actions.num_rows
    assert actions.column("min.key").null_count == 0
    assert actions.column("min.ts").null_count == 0
    log_text = "".join(p.read_text() for p in (tmp_path / "silver/t/_delta_log").glob("*.json"))
    assert "é世🚀 é世🚀" not in log_text


def test_a_failed_write_leaves_the_table_as_it_was(lake):
    location = lake.location("silver", "t")
    write_day(location, 5, rows_for(5, 20))
    version_before = DeltaTable(
        location.uri, storage_options=location.storage_options or None
    ).version()

    writer = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", "2026-11-05")], row_group_rows=4
    )
    writer.write(rows_for(5, 12, tag="broken"))  # some files are already being written
    writer._partitions[next(iter(writer._partitions))].flush()
    assert writer.started_paths
    writer.abort()

    table = DeltaTable(location.uri, storage_options=location.storage_options or None)
    assert table.version() == version_before
    assert sorted(read(location)["key"].to_list()) == sorted(f"v1-5-{i}" for i in range(20))
    for path in writer.started_paths:
        assert not location.filesystem.exists(path)


def test_an_empty_day_replaces_the_partition_with_nothing(tmp_path):
    location = LakeResource(url=str(tmp_path)).location("gold", "t")
    write_day(location, 6, rows_for(6, 10))
    writer = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", "2026-11-06")]
    )
    writer.commit()
    assert count_partition_rows(location, [("date", "=", "2026-11-06")]) == 0


def test_commit_metadata_is_kept_in_the_delta_history(tmp_path):
    location = LakeResource(url=str(tmp_path)).location("bronze", "t")
    write_day(location, 7, rows_for(7, 5))
    history = DeltaTable(location.uri).history(1)[0]
    assert history[f"{COMMIT_METADATA_PREFIX}partition"] == "2026-11-07"
    files = json.loads(history[f"{COMMIT_METADATA_PREFIX}files"])
    assert sum(f["rows"] for f in files) == 5


def test_large_partition_rolls_into_several_bounded_files(tmp_path):
    location = LakeResource(url=str(tmp_path)).location("bronze", "t")
    schema = pa.schema([("key", pa.large_string()), ("date", pa.date32())])
    writer = DeltaPartitionWriter(
        location,
        schema,
        ["date"],
        replace=[("date", "=", "2026-11-08")],
        row_group_rows=1000,
        target_file_bytes=20_000,
    )
    for chunk in range(10):
        writer.write(
            pa.table(
                {
                    "key": [
                        hashlib.sha256(f"{chunk}-{i}".encode()).hexdigest() for i in range(1000)
                    ],
                    "date": [dt.date(2026, 11, 8)] * 1000,
                },
                schema=schema,
            )
        )
    summary = writer.commit()
    assert summary.rows == 10_000
    assert len(summary.files) > 1
    assert count_partition_rows(location, None) == 10_000


def test_partition_values_with_special_characters_round_trip(tmp_path):
    location = LakeResource(url=str(tmp_path)).location("silver", "t")
    table = rows_for(9, 6)
    table = table.set_column(
        table.schema.get_field_index("model"), "model", pa.array(["a b", "c%d", "e/f"] * 2)
    )
    write_day(location, 9, table)
    frame = read(location)
    assert sorted(frame["model"].to_list()) == sorted(["a b", "c%d", "e/f"] * 2)
    assert count_partition_rows(location, [("model", "=", "e/f")]) == 2


def test_batches_read_back_hold_a_bounded_number_of_bytes_however_wide_the_rows(tmp_path):
    from llm_observatory.io import delta_lake

    location = LakeResource(url=str(tmp_path / "lake")).location("silver", "wide")
    schema = pa.schema([("key", pa.int64()), ("prompt", pa.large_string()), ("date", pa.date32())])
    rows = 1_000
    wide = pa.table(
        {
            "key": list(range(rows)),
            # Distinct values, so neither dictionary nor compression makes them small on disk.
            "prompt": [f"{i:06d}" + "x" * 20_000 for i in range(rows)],
            "date": [dt.date(2026, 11, 3)] * rows,
        },
        schema=schema,
    )
    writer = DeltaPartitionWriter(location, schema, ["date"], replace=None)
    writer.write(wide)
    writer.commit()
    batches = list(delta_lake.scan_partition(location, [("date", "=", "2026-11-03")]))
    assert sum(batch.num_rows for batch in batches) == rows
    assert len(batches) > 1
    assert all(batch.nbytes <= 2 * delta_lake.SCAN_BATCH_BYTES for batch in batches)
    # The narrow key column alone of the same rows comes in one batch.
    narrow = list(delta_lake.scan_partition(location, [("date", "=", "2026-11-03")], ["key"]))
    assert [batch.num_rows for batch in narrow] == [rows]


def test_a_writer_touching_many_partitions_keeps_only_a_few_files_open(lake):
    """A month of days x hours x models in one commit (what a sync spread over the history
    writes): never more than `max_open_files` open at once; a partition written again after
    its file was finished gets another file; every row lands once, with its checksums."""
    location = lake.location("silver", "t")
    days = list(range(1, 8))
    writer = DeltaPartitionWriter(
        location,
        SCHEMA,
        PARTITION_BY,
        replace=[("date", "in", [f"2026-11-{day:02d}" for day in days])],
        max_open_files=5,
        buffered_bytes_limit=64 * 1024,
    )
    most_open = 0
    expected = []
    for tag in ("a", "b"):  # every partition twice, far apart
        for day in days:
            rows = rows_for(day, 60, tag=tag)
            expected.append(rows)
            for batch in rows.to_batches(max_chunksize=7):
                writer.write(batch)
                most_open = max(most_open, len(writer.open_files))
    summary = writer.commit({"partition": "many"})
    assert most_open <= 5
    frame = read(location)
    assert frame.height == sum(table.num_rows for table in expected)
    assert frame["key"].n_unique() == frame.height
    partitions = frame.select(PARTITION_BY).unique().height
    assert len(summary.files) > partitions, "partitions reopened after their file finished"
    for written in summary.files:
        with location.filesystem.open(f"{location.fs_path}/{written.path}", "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == written.sha256


def test_an_opened_table_lists_its_files_as_of_its_own_version(tmp_path):
    """The file list is parsed once per opened table and version (the sync walks a month of
    days on one opened table); an object brought to a newer version lists the new files, and
    one still at the old version keeps listing the old ones."""
    location = LakeResource(url=str(tmp_path / "lake")).location("silver", "t")
    write_day(location, 1, rows_for(1, 40))
    write_day(location, 2, rows_for(2, 30))
    kept, moved = open_table(location), open_table(location)
    day_one = [("date", "=", "2026-11-01")]
    before = current_files(kept, day_one)
    assert before == current_files(moved, day_one) and before
    assert {entry.path for entry in data_files(kept, day_one)} == {p for p, _ in before}
    assert count_rows_by_partition(location, "date", ["2026-11-01", "2026-11-02"], kept) == {
        "2026-11-01": rows_for(1, 40).num_rows,
        "2026-11-02": 30,
    }

    write_day(location, 1, rows_for(1, 10, tag="v2"))
    moved.update_incremental()
    after = current_files(moved, day_one)
    assert not {p for p, _ in after} & {p for p, _ in before}
    assert {entry.path for entry in data_files(moved, day_one)} == {p for p, _ in after}
    assert current_files(kept, day_one) == before
    assert count_rows_by_partition(location, "date", ["2026-11-01", "2026-11-03"], moved) == {
        "2026-11-01": 10,
        "2026-11-03": 0,
    }
    # A partition dict handed out is the caller's own: changing it changes no later answer.
    after[0][1]["date"] = "changed"
    assert current_files(moved, day_one) == current_files(open_table(location), day_one)


def test_reused_tables_are_opened_once_and_still_show_the_latest_commit(tmp_path):
    """Inside `reusing_opened_tables()` a table is opened once and brought up to date on each
    later request, so a reader still sees a commit made in between; writers and snapshots get
    objects of their own, and outside the block every request opens the table again."""
    location = LakeResource(url=str(tmp_path / "lake")).location("silver", "t")
    write_day(location, 1, rows_for(1, 40))
    day_two = [("date", "=", "2026-11-02")]
    with reusing_opened_tables():
        first = open_table(location)
        assert open_table(location) is first
        assert open_table_now(location) is not first
        write_day(location, 2, rows_for(2, 30))
        again = open_table(location)
        assert again is first and again.version() == table_version(location)
        assert count_partition_rows(location, day_two) == 30
    assert open_table(location) is not open_table(location)
    assert open_table(location).version() == first.version()


@pytest.mark.parametrize("columns", [3, 400])
def test_a_footer_is_read_from_the_files_last_bytes_only(tmp_path, columns):
    """Row counts come from the footer alone (a few KiB; Parquet's reader fetched the last
    64 KiB, all of a small file, on every count), also when the footer is longer than the
    first read; a file cut short is not Parquet, not a count."""
    path = tmp_path / "file.parquet"
    rows = pa.table({f"c{n}": list(range(1000)) for n in range(columns)})
    pq.write_table(rows, path, row_group_size=300)
    reads = []

    class Counted(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            reads.append(len(data))
            return data

    with Counted(path, "rb") as handle:
        metadata = footer_metadata(handle)
    assert metadata.num_rows == 1000 and metadata.num_row_groups == 4
    assert len(reads) == (1 if metadata.serialized_size + 8 <= FOOTER_READ_BYTES else 2)
    assert sum(reads) < path.stat().st_size or columns == 3
    assert sum(reads) <= FOOTER_READ_BYTES + metadata.serialized_size + 8
    path.write_bytes(path.read_bytes()[:-100])
    with open(path, "rb") as handle, pytest.raises(pa.ArrowInvalid):
        footer_metadata(handle)


def test_the_evidence_of_some_files_is_read_without_the_rest(tmp_path):
    """A day's checksum check asks for its own files' evidence: the same rows as the whole
    table's evidence gives for them, and no other file's."""
    location = LakeResource(url=str(tmp_path / "lake")).location("bronze", "t")
    for day in (1, 2, 1, 3):
        write_day(location, day, rows_for(day, 20))
    everything = read_evidence(location)
    day_one = [
        path for path, _ in current_files(open_table(location), [("date", "=", "2026-11-01")])
    ]
    assert len(everything) > len(day_one) > 0
    assert read_evidence(location, day_one) == {path: everything[path] for path in day_one}
    assert read_evidence(location, ["date=2026-11-09/none.parquet"]) == {}


def test_a_new_table_writes_a_checkpoint_every_twenty_commits(tmp_path):
    """Opening a table replays every commit since its last checkpoint (Delta's default: one in
    100); a table of the lake checkpoints every CHECKPOINT_INTERVAL commits, so an opening
    reads at most that many commits, and reads the same rows."""
    location = LakeResource(url=str(tmp_path / "lake")).location("silver", "t")
    for commit in range(CHECKPOINT_INTERVAL):
        write_day(location, 1 + commit % 3, rows_for(1 + commit % 3, 10, tag=f"v{commit}"))
    table = open_table(location)
    assert table.metadata().configuration["delta.checkpointInterval"] == str(CHECKPOINT_INTERVAL)
    evidence = open_table(evidence_location(location)).metadata().configuration
    assert evidence["delta.checkpointInterval"] == str(CHECKPOINT_INTERVAL)
    log = Path(location.fs_path) / "_delta_log"
    checkpoints = sorted(path.name for path in log.glob("*.checkpoint.parquet"))
    # One checkpoint (Delta's default would have none yet), fewer commits after it than the
    # interval.
    assert len(checkpoints) == 1, checkpoints
    assert table.version() - int(checkpoints[0].split(".")[0]) < CHECKPOINT_INTERVAL
    assert rows_per_day(location) == {f"2026-11-0{day}": 10 for day in (1, 2, 3)}


def test_a_tables_categorical_columns_are_dictionary_encoded_and_bounded(tmp_path):
    """Which text columns get a dictionary and min/max statistics comes from the table's
    declaration (`TableSpec.categorical_columns`), not from names the writer knows."""
    location = LakeResource(url=str(tmp_path)).location("bronze", "logs")
    schema = pa.schema(
        [
            ("log_id", pa.int64()),
            ("level", pa.string()),
            ("message", pa.string()),
            ("date", pa.date32()),
        ]
    )
    rows = pa.table(
        {
            "log_id": list(range(200)),
            "level": ["INFO", "WARN", "ERROR", "DEBUG"] * 50,
            "message": [f"line {i}" for i in range(200)],
            "date": [dt.date(2026, 11, 5)] * 200,
        },
        schema=schema,
    )
    writer = DeltaPartitionWriter(
        location,
        schema,
        ["date"],
        replace=[("date", "=", "2026-11-05")],
        categorical_columns=categorical_columns(LOGS, "bronze"),
    )
    writer.write(rows)
    writer.commit({})
    table = DeltaTable(location.uri)
    actions = pa.table(table.get_add_actions(flatten=True))
    assert actions.column("min.level").to_pylist() == ["DEBUG"]
    [path] = table.file_uris()
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {
        row_group.column(i).path_in_schema: row_group.column(i)
        for i in range(row_group.num_columns)
    }
    assert "RLE_DICTIONARY" in chunks["level"].encodings
    assert chunks["level"].statistics.has_min_max
    # Free text: plain, and no statistics in the file (a long prompt would bloat them).
    assert "RLE_DICTIONARY" not in chunks["message"].encodings
    assert chunks["message"].statistics is None or not chunks["message"].statistics.has_min_max
    assert categorical_columns(LOGS, "quarantine") == ("level", "quarantine_rule")
    assert categorical_columns(LOGS, "deleted") == ()
