"""Rollback on the local lake and on Azurite: restore to a moment, rewind the watermark, undo a
half-done rollback; refusals change nothing."""

import datetime as dt
import time

import pytest
from deltalake import DeltaTable

from llm_observatory.operate import rollback as rollback_module
from llm_observatory.operate.rollback import (
    RollbackError,
    apply_rollback,
    plan_rollback,
    select_tables,
)
from llm_observatory.resources.control import ControlDatabase
from llm_observatory_tests.test_compaction import DAY, append, batch_of, lake, rows

__all__ = ["lake"]  # the local / Azurite lake fixture


def version_of(location) -> int:
    return DeltaTable(location.uri, storage_options=location.storage_options or None).version()


def test_rollback_to_a_moment_restores_and_rewinds_then_rolls_forward(lake, tmp_path):
    control = ControlDatabase(url=f"sqlite:///{tmp_path / 'control.sqlite'}")
    [bronze] = select_tables(lake, ["bronze/llm_interactions"])
    append(lake, batch_of(0, 100))
    cycle = control.start_cycle("llm_interactions", None, "run-1", {})
    first_mark = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    control.complete_cycle(cycle, first_mark, first_mark, 100, 100)
    time.sleep(1.1)
    moment = dt.datetime.now(dt.UTC)
    before = rows(bronze.location)
    version_at_moment = version_of(bronze.location)
    time.sleep(1.1)
    append(lake, batch_of(100, 50))
    cycle = control.start_cycle("llm_interactions", first_mark, "run-2", {})
    second_mark = dt.datetime(2026, 11, 3, 18, tzinfo=dt.UTC)
    control.complete_cycle(cycle, second_mark, second_mark, 50, 50)
    after = rows(bronze.location)
    assert len(after) == 150

    plan = plan_rollback(lake, control, moment, ["bronze/llm_interactions"])
    [step] = plan.tables
    assert (step.current_version, step.target_version) == (
        version_of(bronze.location),
        version_at_moment,
    )
    [rewind] = plan.watermarks
    assert (rewind.current, rewind.rewound) == (second_mark, first_mark)
    apply_rollback(plan, control, reason="test")
    assert rows(bronze.location) == before
    assert control.completed_watermark("llm_interactions").last_extracted_timestamp == first_mark

    # Rolled forward again: the version the rollback replaced is one restore away.
    forward = plan_rollback(lake, control, step.current_version, ["bronze/llm_interactions"])
    apply_rollback(forward, control, reason="roll forward")
    assert rows(bronze.location) == after


def test_a_failed_restore_puts_back_the_tables_already_restored(tmp_path, monkeypatch):
    from llm_observatory.resources.lake import LakeResource

    lake = LakeResource(url=str(tmp_path / "lake"))
    control = ControlDatabase(url=f"sqlite:///{tmp_path / 'control.sqlite'}")
    append(lake, batch_of(0, 10))
    other = lake.location("silver", "llm_interactions")
    from llm_observatory.io.delta_lake import DeltaPartitionWriter
    from llm_observatory_tests.test_compaction import SCHEMA

    writer = DeltaPartitionWriter(other, SCHEMA, ["date"], replace=None)
    writer.write(batch_of(0, 10))
    writer.commit()
    time.sleep(1.1)
    moment = dt.datetime.now(dt.UTC)
    time.sleep(1.1)
    append(lake, batch_of(10, 10))
    writer = DeltaPartitionWriter(other, SCHEMA, ["date"], replace=None)
    writer.write(batch_of(10, 10))
    writer.commit()
    tables = ["bronze/llm_interactions", "silver/llm_interactions"]
    plan = plan_rollback(lake, control, moment, tables)
    bronze_before, silver_before = rows(plan.tables[0].table.location), rows(other)

    real_restore = DeltaTable.restore
    calls = []

    def restore_failing_second(self, target, **kwargs):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("storage went away")
        return real_restore(self, target, **kwargs)

    monkeypatch.setattr(rollback_module.DeltaTable, "restore", restore_failing_second)
    with pytest.raises(RollbackError, match="nothing changed: storage went away"):
        apply_rollback(plan, control, reason="test")
    assert rows(plan.tables[0].table.location) == bronze_before
    assert rows(other) == silver_before
    assert control.completed_watermark("llm_interactions") is None


def test_refusals_leave_everything_as_it_was(tmp_path):
    from llm_observatory.resources.lake import LakeResource

    lake = LakeResource(url=str(tmp_path / "lake"))
    control = ControlDatabase(url=f"sqlite:///{tmp_path / 'control.sqlite'}")
    append(lake, batch_of(0, 10))
    append(lake, batch_of(10, 10))
    [bronze] = select_tables(lake, ["bronze/llm_interactions"])
    version, content = version_of(bronze.location), rows(bronze.location)
    with pytest.raises(RollbackError, match="before the lake existed"):
        plan_rollback(lake, control, dt.datetime(2001, 1, 1, tzinfo=dt.UTC), None)
    with pytest.raises(RollbackError, match="unknown table"):
        plan_rollback(lake, control, 0, ["gold/nope"])
    with pytest.raises(RollbackError, match="exactly one lake table"):
        plan_rollback(lake, control, 0, ["llm_interactions"])
    with pytest.raises(RollbackError, match="past the retention of 30 days"):
        plan_rollback(
            lake,
            control,
            0,
            ["bronze/llm_interactions"],
            now=dt.datetime.now(dt.UTC) + dt.timedelta(days=40),
        )
    cycle = control.start_cycle("llm_interactions", None, "run-x", {})
    with pytest.raises(RollbackError, match="in progress or was interrupted"):
        plan_rollback(lake, control, 0, ["bronze/llm_interactions"])
    control.fail_cycle(cycle, "test")
    # Inside the retention, the same target is accepted; nothing above changed the table.
    assert plan_rollback(lake, control, 0, ["bronze/llm_interactions"]).tables[0].changes
    assert (version_of(bronze.location), rows(bronze.location)) == (version, content)

    # Files replaced by a compaction, then vacuumed by a tool run with a retention of 0 hours
    # (ours refuses that), make the old version unrestorable: refused.
    from llm_observatory.operate.compaction import compact_tables

    compact_tables([bronze], [DAY], retention_days=30, run_vacuum=False)
    DeltaTable(bronze.location.uri, storage_options=bronze.location.storage_options or None).vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=False
    )
    # (v0 is the empty table as created; v1 holds the first, now vacuumed, file.)
    with pytest.raises(RollbackError, match=r"data file\(s\) of v1 are gone"):
        plan_rollback(lake, control, 1, ["bronze/llm_interactions"])
