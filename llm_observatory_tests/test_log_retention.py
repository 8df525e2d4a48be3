"""The proof outlives the Delta log (issue 12, part 2).

A migration runs for months: Delta checkpoints and then deletes log entries older than
`delta.logRetentionDuration`. Here every lake table is aged past a short log retention
(checkpoint, then expired-log clean-up), on a local lake and on Azurite. The cutover report is
still GO, a tampered file is still caught, the initial watermark is still right, and a rollback
to a version whose log is gone is refused with a clear message. Retention settings are checked
at their edges.
"""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from llm_observatory.assets.migration import migration_assets
from llm_observatory.assets.report import build_cutover_report, migration_check_keys
from llm_observatory.checks.checksums import verify_checksums_by_day
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.incremental.cycle import initial_watermark
from llm_observatory.io.delta_lake import (
    DeltaPartitionWriter,
    LakeWriteError,
    current_files,
    open_table,
    restore_partition,
    snapshot_partition,
)
from llm_observatory.layout import bronze_location, day_filter, lake_locations
from llm_observatory.operate.compaction import vacuum
from llm_observatory.operate.rollback import RollbackError, plan_rollback
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.settings import lake_retention_days
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS, TABLES
from llm_observatory_tests.test_delta_writer import PARTITION_BY, SCHEMA, lake, rows_for

__all__ = ["lake"]

START = dt.date(2026, 11, 1)
DAYS = 3


def _delta(location) -> DeltaTable:
    return DeltaTable(location.uri, storage_options=location.storage_options or None)


def age_past_log_retention(location) -> int:
    """Makes every commit of the table older than its log retention, then checkpoints and
    cleans up the log as Delta does after a month; returns the oldest version left."""
    table = _delta(location)
    table.alter.set_table_properties({"delta.logRetentionDuration": "interval 1 seconds"})
    time.sleep(1.5)
    table = _delta(location)
    table.create_checkpoint()
    table.cleanup_metadata()
    return min(entry["version"] for entry in _delta(location).history())


@pytest.fixture
def migrated(lake, tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(
        url,
        start_date=START,
        days=DAYS,
        rows_per_day=120,
        seed=3,
        defects=DefectRates(missing_hour=None),
    )
    source = SourceDatabase(url=url)
    control = ControlDatabase(url=f"sqlite:///{tmp_path / 'control.sqlite'}")
    instance = dg.DagsterInstance.ephemeral()
    for offset in range(DAYS):
        result = dg.materialize(
            [*migration_assets, *integrity_checks],
            partition_key=(START + dt.timedelta(days=offset)).isoformat(),
            resources={"source": source, "lake": lake, "control": control},
            instance=instance,
        )
        assert result.success
    return source, lake, control, instance


def test_the_proof_outlives_the_delta_log(migrated):
    source, lake, control, instance = migrated
    watermark = initial_watermark(lake, LLM_INTERACTIONS)
    assert watermark is not None
    locations = [loc for table in TABLES for loc in lake_locations(lake, table).values()]
    aged = {}
    for location in locations:
        if open_table(location) is not None:
            aged[location.uri] = age_past_log_retention(location)
    # The first commits (with the files' hashes in their commitInfo) are gone from the log.
    bronze = bronze_location(lake, LLM_INTERACTIONS)
    assert aged[bronze.uri] > 1

    for location in locations:
        for day, verdict in verify_checksums_by_day(location, by_day=True).items():
            assert verdict.passed, (location.uri, day, verdict)
    report = build_cutover_report(source, lake, instance, migration_check_keys(), control)
    assert report.verdict == "GO", report.reasons()
    assert initial_watermark(lake, LLM_INTERACTIONS) == watermark

    # A rollback to a version whose log was cleaned up is refused, saying so.
    with pytest.raises(RollbackError, match="has no version 1 .*log holds v"):
        plan_rollback(lake, control, 1, ["bronze/llm_interactions"])

    # A file changed in storage after its commit is still caught.
    relative, _ = current_files(_delta(bronze), day_filter(START))[0]
    path = f"{bronze.fs_path}/{relative}"
    with bronze.filesystem.open(path, "rb") as handle:
        table = pq.read_table(handle)
    with bronze.filesystem.open(path, "wb") as handle:
        pq.write_table(table.slice(1), handle, compression="zstd")
    verdicts = verify_checksums_by_day(bronze, by_day=True)
    assert [item["path"] for item in verdicts[START.isoformat()].mismatched] == [relative]
    tampered = build_cutover_report(source, lake, instance, migration_check_keys(), control)
    assert tampered.verdict == "NO-GO"


def test_tables_are_created_with_the_retention_as_their_properties(tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"), retention_days=45)
    location = lake.location("silver", "t")
    writer = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", "2026-11-05")]
    )
    writer.write(rows_for(5, 10))
    writer.commit()
    configuration = _delta(location).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 45 days"
    assert configuration["delta.deletedFileRetentionDuration"] == "interval 45 days"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "LLM_OBS_LAKE_RETENTION_DAYS='abc' is not a whole number of days"),
        ("-3", "LLM_OBS_LAKE_RETENTION_DAYS=-3: must be at least 7 days"),
        ("3", "LLM_OBS_LAKE_RETENTION_DAYS=3: must be at least 7 days"),
    ],
)
def test_a_retention_under_seven_days_or_not_a_number_is_refused(monkeypatch, value, message):
    monkeypatch.setenv("LLM_OBS_LAKE_RETENTION_DAYS", value)
    with pytest.raises(ValueError, match=message):
        lake_retention_days()


def test_vacuum_never_runs_under_seven_days(tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"))
    with pytest.raises(ValueError, match="retention of 6 day.*minimum of 7"):
        vacuum(lake.location("bronze", "llm_interactions"), 6)


def test_an_undo_whose_files_are_gone_is_refused_and_changes_nothing(lake):
    location = lake.location("silver", "t")
    first = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", "2026-11-06")]
    )
    first.write(rows_for(6, 12, "old"))
    first.commit()
    snapshot = snapshot_partition(location, [("date", "=", "2026-11-06")])
    second = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", "2026-11-06")]
    )
    second.write(rows_for(6, 12, "new"))
    second.commit()
    # The replaced files disappear from storage (vacuumed by another tool, deleted by hand).
    for action in snapshot.actions:
        location.filesystem.rm(f"{location.fs_path}/{action.path}")
    version = _delta(location).version()
    with pytest.raises(LakeWriteError, match="files are gone from storage"):
        restore_partition(snapshot, "test")
    assert _delta(location).version() == version
    keys = sorted(_delta(location).to_pyarrow_table().column("key").to_pylist())
    assert keys == sorted(rows_for(6, 12, "new").column("key").to_pylist())


def test_the_evidence_table_stays_small_and_complete_over_many_writes(lake):
    """Every write appends its evidence; every 32 appends the evidence table is merged into one
    file (what was appended meanwhile stays), so reading it stays a few reads."""
    from llm_observatory.io.evidence import MAX_FILES, evidence_location, read_evidence

    location = lake.location("silver", "t")
    written = set()
    for number in range(MAX_FILES + 8):
        day = 1 + number % 5
        writer = DeltaPartitionWriter(
            location, SCHEMA, PARTITION_BY, replace=[("date", "=", f"2026-11-{day:02d}")]
        )
        writer.write(rows_for(day, 6, f"w{number}"))
        written |= {file.path for file in writer.commit().files}
    recorded = read_evidence(location)
    assert written <= set(recorded)
    for path in written:
        assert len(recorded[path]["sha256"]) == 64
    evidence_files = _delta(evidence_location(location)).get_add_actions().num_rows
    assert evidence_files <= MAX_FILES // 2, evidence_files
    for verdict in verify_checksums_by_day(location, by_day=True).values():
        assert verdict.passed and not verdict.unrecorded
