"""Silver keeps one row per key, the latest version, however many copies bronze holds."""

import datetime as dt
import decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from llm_observatory.io.delta_lake import DeltaPartitionWriter
from llm_observatory.layout import bronze_location, bronze_schema, silver_location
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import LOGS
from llm_observatory.transform import dedup
from llm_observatory.transform.dedup import LatestVersions, RepeatedHashes
from llm_observatory_tests.helpers import control_beside, materialize_silver_alone

UTC = dt.timezone.utc
DAY = dt.date(2026, 11, 3)
SOURCE_SCHEMA = pa.schema(
    [
        ("log_id", pa.int64()),
        ("interaction_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("level", pa.string()),
        ("message", pa.string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("amount", pa.decimal128(12, 6)),
    ]
)


def logs(ids, versions, message="m") -> pa.Table:
    moment = dt.datetime(2026, 11, 3, 8, tzinfo=UTC)
    return pa.table(
        {
            "log_id": ids,
            "interaction_id": [None] * len(ids),
            "created_at": [moment] * len(ids),
            "level": ["INFO"] * len(ids),
            "message": [f"{message}-{v}" for v in versions],
            "last_modified": [moment + dt.timedelta(minutes=v) for v in versions],
            "amount": [decimal.Decimal("1.5")] * len(ids),
            "date": [DAY] * len(ids),
        },
        schema=bronze_schema(SOURCE_SCHEMA),
    )


def write_bronze(lake, table: pa.Table, replace: bool) -> None:
    writer = DeltaPartitionWriter(
        bronze_location(lake, LOGS),
        bronze_schema(SOURCE_SCHEMA),
        ["date"],
        replace=[("date", "=", DAY.isoformat())] if replace else None,
    )
    writer.write(table)
    writer.commit()


def test_latest_version_wins_and_redeliveries_count_once(tmp_path):
    lake = LakeResource(url=str(tmp_path))
    write_bronze(lake, logs([1, 2, 3, 4], [0, 0, 0, 0]), replace=True)
    # A change batch: key 2 updated twice, key 3 re-delivered unchanged, key 5 new.
    write_bronze(lake, logs([2, 2, 3, 5], [5, 9, 0, 1]), replace=False)

    latest, rows, distinct = LatestVersions.scan(LOGS, lake, DAY)
    assert (rows, distinct) == (8, 5)
    assert set(latest.winning_version) == {2, 3}

    result = materialize_silver_alone(LOGS, DAY, lake, control_beside(lake, tmp_path))
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["bronze_distinct_keys"].value == 5
    silver = DeltaTable(silver_location(lake, LOGS).uri).to_pyarrow_table().to_pylist()
    by_key = {row["log_id"]: row for row in silver}
    assert sorted(by_key) == [1, 2, 3, 4, 5] and len(silver) == 5
    assert by_key[2]["message"] == "m-9"
    assert by_key[3]["message"] == "m-0"
    assert by_key[5]["message"] == "m-1"
    assert by_key[1]["amount"] == decimal.Decimal("1.500000")


def test_a_day_without_repeated_keys_needs_no_second_pass(tmp_path):
    lake = LakeResource(url=str(tmp_path))
    write_bronze(lake, logs(list(range(1000)), [0] * 1000), replace=True)
    latest, rows, distinct = LatestVersions.scan(LOGS, lake, DAY)
    assert (rows, distinct) == (1000, 1000)
    assert latest.winning_version == {}


def test_a_failed_silver_commit_puts_the_quarantine_back(tmp_path, monkeypatch):
    from llm_observatory.io import delta_lake
    from llm_observatory.layout import quarantine_location
    from llm_observatory.tables import METADATA

    lake = LakeResource(url=str(tmp_path))
    schema = pa.schema(
        [
            ("metadata_id", pa.int64()),
            ("interaction_id", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("attributes", pa.string()),
            ("last_modified", pa.timestamp("us", tz="UTC")),
        ]
    )
    moment = dt.datetime(2026, 11, 3, 9, tzinfo=UTC)

    def metadata_rows(attributes):
        return pa.table(
            {
                "metadata_id": list(range(len(attributes))),
                "interaction_id": ["i"] * len(attributes),
                "created_at": [moment] * len(attributes),
                "attributes": attributes,
                "last_modified": [moment] * len(attributes),
                "date": [DAY] * len(attributes),
            },
            schema=bronze_schema(schema),
        )

    def load_bronze(attributes):
        writer = DeltaPartitionWriter(
            bronze_location(lake, METADATA),
            bronze_schema(schema),
            ["date"],
            replace=[("date", "=", DAY.isoformat())],
        )
        writer.write(metadata_rows(attributes))
        writer.commit()

    def materialize():
        return materialize_silver_alone(METADATA, DAY, lake, control_beside(lake, tmp_path))

    load_bronze(['{"a": 1}', "{broken", "also broken"])
    assert materialize().success
    quarantine = quarantine_location(lake, METADATA)
    before = sorted(DeltaTable(quarantine.uri).to_pyarrow_table().column("attributes").to_pylist())
    assert before == ["also broken", "{broken"]

    load_bronze(["{still broken", "{}", "[]"])
    original_commit = delta_lake.DeltaPartitionWriter._commit

    def failing_for_silver(self, metadata):
        if "/silver/metadata" in self.location.uri:
            raise delta_lake.LakeWriteError("simulated: the storage account went away")
        return original_commit(self, metadata)

    monkeypatch.setattr(delta_lake.DeltaPartitionWriter, "_commit", failing_for_silver)
    assert not materialize().success
    after = sorted(DeltaTable(quarantine.uri).to_pyarrow_table().column("attributes").to_pylist())
    assert after == before
    silver = DeltaTable(silver_location(lake, METADATA).uri).to_pyarrow_table()
    assert silver.column("attributes").to_pylist() == ['{"a": 1}']


def test_repeated_keys_are_found_the_same_when_the_hashes_spill_to_disk(tmp_path):

    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 50_000, 10_000).astype(np.uint64) for _ in range(12)]
    in_memory, spilled = RepeatedHashes(), RepeatedHashes(memory_bytes=64 * 1024, buckets=7)
    for batch in batches:
        in_memory.add(batch)
        spilled.add(batch)
    assert spilled._spill is not None and in_memory._spill is None
    everything = np.concatenate(batches)
    unique, counts = np.unique(everything, return_counts=True)
    for counter in (in_memory, spilled):
        rows, distinct, repeated = counter.result()
        assert rows == len(everything) and distinct == len(unique)
        assert np.array_equal(repeated, unique[counts > 1])
    # The spill folder is removed once counted.
    assert not Path(spilled._spill.name).exists()

    # A day's scan through LatestVersions spills too and still tells keys apart.
    lake = LakeResource(url=str(tmp_path / "lake"))
    write_bronze(lake, logs(list(range(3000)), [0] * 3000), replace=True)
    write_bronze(lake, logs([7, 7, 2999], [4, 2, 1]), replace=False)
    original = dedup.HASH_MEMORY_BYTES
    dedup.HASH_MEMORY_BYTES = 1024
    try:
        latest, rows, distinct = LatestVersions.scan(LOGS, lake, DAY)
    finally:
        dedup.HASH_MEMORY_BYTES = original
    assert (rows, distinct) == (3003, 3000)
    assert latest.winning_version == {
        7: dt.datetime(2026, 11, 3, 8, 4, tzinfo=UTC),
        2999: dt.datetime(2026, 11, 3, 8, 1, tzinfo=UTC),
    }
