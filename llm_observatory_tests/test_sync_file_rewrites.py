"""A sync rewrites only the data files that hold changed keys (issue 15).

The files holding a key are found by reading their key column; each table's commit removes
exactly those files and adds their rewritten versions plus the new rows, against the version
read. Shown on the writer (local lake and Azurite) and on whole cycles (SQLite and PostgreSQL
sources): the Delta log's add and remove actions of each commit, a concurrent overwrite between
read and commit, a failure right after the commit request, updates, deletes and moves between
days, and the lake equal to the source value by value afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable

from llm_observatory.assets.sync import rewritten_days_match_bronze
from llm_observatory.io import delta_lake
from llm_observatory.io.delta_lake import (
    DeltaPartitionWriter,
    LakeWriteError,
    current_files,
    data_files,
    open_table,
    scan_file,
)
from llm_observatory.layout import (
    bronze_location,
    daily_metrics_location,
    lake_locations,
    quarantine_location,
    silver_location,
)
from llm_observatory.tables import LLM_INTERACTIONS
from llm_observatory_tests.test_commit_faults import assert_readable, keys_of, land_then
from llm_observatory_tests.test_delta_writer import PARTITION_BY, SCHEMA, lake, rows_for
from llm_observatory_tests.test_sync import (
    DAYS,
    START,
    assert_lake_matches_source,
    migration,
)

__all__ = ["lake", "migration"]  # fixtures shared with the writer's and the sync's tests

DAY = dt.date(2026, 11, 5)


def commit_actions(location, version: int) -> tuple[list[str], list[str]]:
    """The paths (decoded) a commit of the table added and removed, from its log entry."""
    path = f"{location.fs_path}/_delta_log/{version:020d}.json"
    added, removed = [], []
    with location.filesystem.open(path, "rb") as handle:
        for line in handle.read().decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                added.append(unquote(action["add"]["path"]))
            if "remove" in action:
                removed.append(unquote(action["remove"]["path"]))
    return sorted(added), sorted(removed)


def actions_between(location, before: int, after: int) -> tuple[set[str], set[str]]:
    """The paths added and removed by the commits after `before` up to `after`."""
    added, removed = set(), set()
    for version in range(before + 1, after + 1):
        more, fewer = commit_actions(location, version)
        added |= set(more)
        removed |= set(fewer)
    return added, removed


def stored_files(location) -> set[str]:
    """Every data file in the table's folder, referenced or not."""
    root = location.fs_path.rstrip("/")
    return {
        path.removeprefix(root + "/")
        for path in location.filesystem.find(root)
        if path.endswith(".parquet") and "/_" not in path.removeprefix(root)
    }


def written_day(lake_resource) -> tuple:
    """A day of 30 rows over several model/hour partitions, committed; its table's version
    and files."""
    location = lake_resource.location("silver", "t")
    writer = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", DAY.isoformat())]
    )
    writer.write(rows_for(DAY.day, 30))
    writer.commit()
    table = open_table(location)
    files = data_files(table, [("date", "=", DAY.isoformat())], bounds_of="key")
    assert len(files) > 3
    return location, table.version(), files


def rows_of_file(rows: pa.Table, entry) -> pa.Table:
    """The rows of `rows` that live in the partition of the file `entry`."""
    mask = None
    for name, value in entry.partition.items():
        test = pc.equal(pc.cast(rows.column(name), pa.string()), value)
        mask = test if mask is None else pc.and_(mask, test)
    return rows.filter(mask)


def rewrite_of(location, version: int, target, without: str, extra: pa.Table | None = None):
    """A writer that removes `target` and writes its rows again without the key `without`
    (plus `extra`), derived from `version`."""
    writer = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=None, remove=[target], read_version=version
    )
    kept = rows_of_file(rows_for(DAY.day, 30), target)
    kept = kept.filter(pc.not_equal(kept.column("key"), without))
    writer.write(kept)
    if extra is not None:
        writer.write(extra)
    return writer


def test_a_rewrite_removes_exactly_the_named_file_and_adds_its_new_version(lake):
    location, version, files = written_day(lake)
    target = files[0]
    dropped = rows_of_file(rows_for(DAY.day, 30), target).column("key")[0].as_py()
    extra = rows_for(DAY.day, 1, "new")
    writer = rewrite_of(location, version, target, dropped, extra)
    summary = writer.commit()

    assert summary.version == version + 1
    added, removed = commit_actions(location, summary.version)
    assert removed == [target.path]
    assert added == sorted(written.path for written in summary.files)
    # The day's other files are untouched: still current, under the same names.
    current = {path for path, _ in current_files(open_table(location), None)}
    assert {entry.path for entry in files[1:]} <= current
    assert target.path not in current
    expected = sorted(
        [key for key in keys_of(rows_for(DAY.day, 30)) if key != dropped] + keys_of(extra)
    )
    assert keys_of(assert_readable(location)) == expected


def test_a_concurrent_overwrite_between_read_and_commit_is_refused(lake):
    location, version, files = written_day(lake)
    target = files[0]
    dropped = rows_of_file(rows_for(DAY.day, 30), target).column("key")[0].as_py()
    writer = rewrite_of(location, version, target, dropped)
    # Another writer replaces the day after the rewrite read it, before it commits.
    other = DeltaPartitionWriter(
        location, SCHEMA, PARTITION_BY, replace=[("date", "=", DAY.isoformat())]
    )
    other.write(rows_for(DAY.day, 30, "v2"))
    other.commit()
    before = open_table(location).version()
    files_before = stored_files(location)

    with pytest.raises(LakeWriteError, match="changed since version"):
        writer.commit()
    assert open_table(location).version() == before
    assert keys_of(assert_readable(location)) == keys_of(rows_for(DAY.day, 30, "v2"))
    # The refused rewrite's own files are gone (nothing references them); the file it meant
    # to remove is still there for the versions that reference it.
    assert stored_files(location) == files_before
    assert target.path in files_before
    old = DeltaTable(location.uri, storage_options=location.storage_options or None)
    old.load_as_version(version)
    assert sorted(old.to_pyarrow_table().column("key").to_pylist()) == keys_of(
        rows_for(DAY.day, 30)
    )


@pytest.mark.parametrize("landed", [True, False], ids=["after-landing", "before-landing"])
def test_a_failure_at_the_commit_request_leaves_every_referenced_file(lake, monkeypatch, landed):
    location, version, files = written_day(lake)
    target = files[0]
    dropped = rows_of_file(rows_for(DAY.day, 30), target).column("key")[0].as_py()
    writer = rewrite_of(location, version, target, dropped)
    if landed:
        monkeypatch.setattr(
            DeltaPartitionWriter, "_transact", land_then(KeyboardInterrupt("run terminated"))
        )
        with pytest.raises(KeyboardInterrupt):
            writer.commit()
    else:

        def refused(self, table, actions, metadata):
            raise OSError("storage unavailable before the commit landed")

        monkeypatch.setattr(DeltaPartitionWriter, "_transact", refused)
        with pytest.raises(OSError, match="storage unavailable"):
            writer.commit()
    writer.abort()  # the caller's own clean-up deletes nothing a version may reference
    table = open_table(location)
    everything = keys_of(rows_for(DAY.day, 30))
    if landed:
        assert table.version() == version + 1
        expected = [key for key in everything if key != dropped]
    else:
        assert table.version() == version
        expected = everything
    assert keys_of(assert_readable(location)) == expected
    # The version before the rewrite still reads: the removed file is kept for it.
    table.load_as_version(version)
    assert sorted(table.to_pyarrow_table().column("key").to_pylist()) == everything


# ------------------------------------------------------------------- whole cycles


def holders(location, keys: set) -> set[str]:
    """The current data files of a table that hold any of `keys`."""
    table = open_table(location)
    found = set()
    for path, _ in current_files(table, None):
        for batch in scan_file(location, path, [LLM_INTERACTIONS.key]):
            if set(batch.column(0).to_pylist()) & keys:
                found.add(path)
    return found


def silver_keys_of_day(migration, day: dt.date) -> list[str]:
    silver = silver_location(migration.lake, LLM_INTERACTIONS)
    table = open_table(silver)
    keys = []
    for path, _ in current_files(table, [("date", "=", day.isoformat())]):
        for batch in scan_file(silver, path, [LLM_INTERACTIONS.key]):
            keys += batch.column(0).to_pylist()
    return sorted(keys)


def test_a_cycle_rewrites_only_the_files_holding_changed_keys(migration):
    migration.cycle()
    interactions = migration.interactions()
    locations = lake_locations(migration.lake, LLM_INTERACTIONS)
    bronze = bronze_location(migration.lake, LLM_INTERACTIONS)
    silver = silver_location(migration.lake, LLM_INTERACTIONS)
    quarantine = quarantine_location(migration.lake, LLM_INTERACTIONS)
    second_day = START + dt.timedelta(days=1)

    # One row of a day updated in place (same model, hour and day).
    updated = silver_keys_of_day(migration, second_day)[0]
    silver_files = holders(silver, {updated})
    assert len(silver_files) == 1
    day = [("date", "=", second_day.isoformat())]
    day_files = {path for path, _ in current_files(open_table(silver), day)}
    assert len(day_files) > 10
    before = migration.versions()
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == updated)
        .values(latency_ms=4321, last_modified=migration.source_now())
    )
    result = migration.cycle()
    assert result.changes.upserted_rows == 1
    assert result.changes.files_rewritten == 1
    after = migration.versions()
    assert after["silver"] == before["silver"] + 1
    added, removed = commit_actions(silver, after["silver"])
    assert removed == sorted(silver_files)
    assert len(added) == 1 and added[0].rsplit("/", 1)[0] == removed[0].rsplit("/", 1)[0]
    # Bronze gains the new version and loses nothing; quarantine is not touched.
    added, removed = commit_actions(bronze, after["bronze"])
    assert len(added) == 1 and removed == []
    assert after["quarantine"] == before["quarantine"]
    # The day's other files are the same files.
    now_current = {path for path, _ in current_files(open_table(silver), day)}
    assert day_files - silver_files <= now_current
    assert_lake_matches_source(migration)

    # A delete on one day and a move of another row to another day.
    third_day = START + dt.timedelta(days=2)
    deleted = silver_keys_of_day(migration, second_day)[-1]
    moved = silver_keys_of_day(migration, START)[0]
    keys = {deleted, moved}
    silver_files = holders(silver, keys)
    bronze_files = holders(bronze, keys)
    quarantine_files = holders(quarantine, keys)
    before = migration.versions()
    migration.execute(sa.delete(interactions).where(interactions.c.interaction_id == deleted))
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == moved)
        .values(
            timestamp=dt.datetime.combine(third_day, dt.time(7, 8, 9), dt.UTC),
            last_modified=migration.source_now(),
        )
    )
    result = migration.cycle()
    assert result.deleted_keys == 1
    after = migration.versions()
    # The cycle's commits (its changes, then what reconciliation found) removed exactly the
    # files that held the two keys, in every table.
    assert actions_between(silver, before["silver"], after["silver"])[1] == silver_files
    assert actions_between(bronze, before["bronze"], after["bronze"])[1] == bronze_files
    assert not quarantine_files
    if after["quarantine"] is not None and before["quarantine"] is not None:
        assert not actions_between(quarantine, before["quarantine"], after["quarantine"])[1]
    for location in locations.values():
        assert_readable(location)
    assert_lake_matches_source(migration)


def test_gold_reads_again_only_the_touched_models_and_heals_a_day_missing_one(migration):
    """Gold keeps the rows of the models whose silver files did not change; where gold lacks a
    model silver has, the whole day is recomputed."""
    migration.cycle()
    interactions = migration.interactions()
    gold = daily_metrics_location(migration.lake)
    day = START + dt.timedelta(days=1)
    keys = silver_keys_of_day(migration, day)
    # Gold of the day loses one model's row (as if never built), then a row of another model
    # of that day changes: the cycle must rebuild the whole day.
    rows = open_table(gold).to_pyarrow_table(filters=[("date", "=", day)])
    models = sorted(rows.column("model").to_pylist())
    assert len(models) > 1
    writer = DeltaPartitionWriter(
        gold, rows.schema, ["date"], replace=[("date", "=", day.isoformat())]
    )
    writer.write(rows.filter(pc.not_equal(rows.column("model"), models[0])))
    writer.commit()
    with migration.engine.connect() as connection:
        changed = connection.execute(
            sa.select(interactions.c.interaction_id)
            .where(interactions.c.interaction_id.in_(keys))
            .where(interactions.c.model_name != models[0])
            .limit(1)
        ).scalar_one()
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == changed)
        .values(latency_ms=4321, last_modified=migration.source_now())
    )
    migration.cycle()
    assert_lake_matches_source(migration)

    # A plain change: gold stays equal to metrics recomputed from the source.
    migration.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == keys[-1])
        .values(latency_ms=17, last_modified=migration.source_now())
    )
    migration.cycle()
    assert_lake_matches_source(migration)


def test_the_sync_check_reads_each_log_once_and_names_a_short_day(migration, monkeypatch):
    """`rewritten_days_match_bronze` opens bronze, silver and quarantine once whatever the number
    of days (each opening replays the log: a month of days opened them per day), and still
    names the one day whose silver lost a row."""
    days = [(START + dt.timedelta(days=n)).isoformat() for n in range(DAYS)]
    opened = []
    real = delta_lake.DeltaTable

    def counting(uri, *args, **kwargs):
        opened.append(uri)
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(delta_lake, "DeltaTable", counting)
    result = rewritten_days_match_bronze(LLM_INTERACTIONS, migration.lake, days)
    assert result.passed, result.metadata
    assert result.metadata["days_checked"].value == DAYS
    assert len(opened) == len(set(opened)) == 3
    monkeypatch.setattr(delta_lake, "DeltaTable", real)

    second_day = START + dt.timedelta(days=1)
    lost = silver_keys_of_day(migration, second_day)[0]
    silver = silver_location(migration.lake, LLM_INTERACTIONS)
    DeltaTable(silver.uri).delete(f"interaction_id = '{lost}'")
    result = rewritten_days_match_bronze(LLM_INTERACTIONS, migration.lake, days)
    assert not result.passed
    mismatches = result.metadata["mismatches"].value
    assert list(mismatches) == [second_day.isoformat()]
    shown = mismatches[second_day.isoformat()]
    assert shown["silver_plus_quarantine"] == shown["bronze_distinct_keys"] - 1
