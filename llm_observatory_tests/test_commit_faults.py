"""A file that a commit may reference is never deleted (issue 12, part 1).

Faults are injected around the real Delta transaction, on a local lake and on Azurite: an error
after the transaction landed (a failed refresh, a response lost on the network, the commit
conflicting with itself on retry, a run terminated), an error before it landed, a log that
cannot be read, a second table failing after the first committed. After each: every table reads
at its current version, every file its current version references exists, and a re-run
converges to the source.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError

from llm_observatory.incremental import cycle as cycle_module
from llm_observatory.io import delta_lake
from llm_observatory.io.delta_lake import (
    CommitOutcomeUnknownError,
    DeltaPartitionWriter,
    current_files,
    open_table,
)
from llm_observatory.layout import (
    bronze_location,
    bronze_schema,
    lake_locations,
    quarantine_location,
    silver_location,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.synthetic.generator import generate_source
from llm_observatory.tables import LLM_INTERACTIONS, METADATA
from llm_observatory_tests.helpers import control_beside, materialize_silver_alone
from llm_observatory_tests.test_delta_writer import PARTITION_BY, SCHEMA, lake, rows_for
from llm_observatory_tests.test_sync import (
    DAYS,
    DEFECTS,
    ROWS_PER_DAY,
    START,
    Migration,
    assert_lake_matches_source,
    change_some_rows,
)

__all__ = ["lake"]  # the local/Azurite lake fixture, shared with the writer's tests

DAY = dt.date(2026, 11, 3)


def assert_readable(location) -> pa.Table | None:
    """The table reads at its current version and every file that version references exists."""
    table = open_table(location)
    if table is None:
        return None
    for relative_path, _ in current_files(table, None):
        path = f"{location.fs_path}/{relative_path}"
        assert location.filesystem.exists(path), f"{location.uri} references missing {path}"
    return table.to_pyarrow_table()


def keys_of(table: pa.Table | None) -> list[str]:
    return [] if table is None else sorted(table.column("key").to_pylist())


def writer_for(location, day: int, append: bool = False) -> DeltaPartitionWriter:
    return DeltaPartitionWriter(
        location,
        SCHEMA,
        PARTITION_BY,
        replace=None if append else [("date", "=", f"2026-11-{day:02d}")],
    )


def land_then(error: BaseException):
    """A `_transact` whose transaction really lands, after which `error` reaches the caller."""
    real = DeltaPartitionWriter._transact

    def transact(self, table, actions, metadata):
        real(self, table, actions, metadata)
        raise error

    return transact


@pytest.mark.parametrize(
    "error",
    [
        OSError("connection reset by peer while reading the commit response"),
        CommitFailedError("version already exists (our own commit, its response lost)"),
    ],
    ids=["response-lost", "conflicts-with-itself"],
)
def test_an_error_after_the_commit_landed_keeps_the_files_and_reports_the_commit(
    lake, monkeypatch, error
):
    location = lake.location("silver", "t")
    first = writer_for(location, 5)
    first.write(rows_for(5, 30, "old"))
    first.commit()

    monkeypatch.setattr(DeltaPartitionWriter, "_transact", land_then(error))
    appended = writer_for(location, 5, append=True)
    appended.write(rows_for(5, 20, "new"))
    summary = appended.commit()

    table = open_table(location)
    assert summary.version == table.version() == 2
    expected = sorted(keys_of(rows_for(5, 30, "old")) + keys_of(rows_for(5, 20, "new")))
    # Exactly once: a retry after a lost response does not append the rows a second time.
    assert keys_of(assert_readable(location)) == expected
    assert table.transaction_version(appended.app_id) == 1


def test_a_run_terminated_right_after_the_commit_leaves_it_readable(lake, monkeypatch):
    location = lake.location("silver", "t")
    monkeypatch.setattr(
        DeltaPartitionWriter, "_transact", land_then(KeyboardInterrupt("run terminated"))
    )
    writer = writer_for(location, 6)
    writer.write(rows_for(6, 25))
    with pytest.raises(KeyboardInterrupt):
        writer.commit()
    assert keys_of(assert_readable(location)) == keys_of(rows_for(6, 25))
    # A later abort (the caller's own clean-up) still deletes nothing.
    writer.abort()
    assert keys_of(assert_readable(location)) == keys_of(rows_for(6, 25))


def test_a_commit_that_never_landed_deletes_its_files_and_changes_nothing(lake, monkeypatch):
    location = lake.location("silver", "t")
    first = writer_for(location, 7)
    first.write(rows_for(7, 15, "old"))
    first.commit()

    def refused(self, table, actions, metadata):
        raise OSError("503 server busy: the commit was not written")

    monkeypatch.setattr(DeltaPartitionWriter, "_transact", refused)
    writer = writer_for(location, 7)
    writer.write(rows_for(7, 15, "new"))
    with pytest.raises(OSError, match="server busy"):
        writer.commit()
    assert keys_of(assert_readable(location)) == keys_of(rows_for(7, 15, "old"))
    assert not any(lake.filesystem.exists(path) for path in _paths(writer))


def test_a_log_that_cannot_be_read_after_the_request_keeps_the_files(lake, monkeypatch):
    location = lake.location("silver", "t")
    writer = writer_for(location, 8)
    writer.write(rows_for(8, 15))
    written = []

    def log_unreadable(_location):
        raise OSError("network unreachable")

    def request_then_network_down(self, table, actions, metadata):
        written.extend(_paths(self))
        monkeypatch.setattr(delta_lake, "open_table", log_unreadable)
        monkeypatch.setattr(delta_lake, "open_table_now", log_unreadable)
        raise OSError("network unreachable")

    monkeypatch.setattr(DeltaPartitionWriter, "_transact", request_then_network_down)
    with pytest.raises(CommitOutcomeUnknownError, match="files are kept"):
        writer.commit()
    monkeypatch.undo()
    assert written and all(lake.filesystem.exists(path) for path in written)
    assert_readable(location)


def _paths(writer: DeltaPartitionWriter) -> list[str]:
    root = writer.location.fs_path.rstrip("/")
    return [f"{root}/{written.path}" for written, _ in writer.finished]


# ----------------------------------------------------------------- silver's first run of a table

METADATA_SCHEMA = pa.schema(
    [
        ("metadata_id", pa.int64()),
        ("interaction_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("attributes", pa.string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
    ]
)
ATTRIBUTES = ['{"a": 1}', "{broken", "also broken", "{}"]


def _load_bronze(lake: LakeResource) -> None:
    moment = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)
    writer = DeltaPartitionWriter(
        bronze_location(lake, METADATA),
        bronze_schema(METADATA_SCHEMA),
        ["date"],
        replace=[("date", "=", DAY.isoformat())],
    )
    writer.write(
        pa.table(
            {
                "metadata_id": list(range(len(ATTRIBUTES))),
                "interaction_id": ["i"] * len(ATTRIBUTES),
                "created_at": [moment] * len(ATTRIBUTES),
                "attributes": ATTRIBUTES,
                "last_modified": [moment] * len(ATTRIBUTES),
                "date": [DAY] * len(ATTRIBUTES),
            },
            schema=bronze_schema(METADATA_SCHEMA),
        )
    )
    writer.commit()


def _materialize_silver(lake: LakeResource, folder) -> bool:
    return materialize_silver_alone(METADATA, DAY, lake, control_beside(lake, folder)).success


def test_silver_failing_on_a_tables_first_run_leaves_quarantine_readable_and_as_before(
    lake, monkeypatch, tmp_path
):
    _load_bronze(lake)
    real = DeltaPartitionWriter._transact

    def silver_refused(self, table, actions, metadata):
        if self.location.uri == silver_location(lake, METADATA).uri:
            raise OSError("storage account throttled the silver commit")
        real(self, table, actions, metadata)

    monkeypatch.setattr(DeltaPartitionWriter, "_transact", silver_refused)
    assert not _materialize_silver(lake, tmp_path)
    # Quarantine was created by this run and committed first: it still reads, and its day is
    # back to what it was before the run (nothing).
    quarantined = assert_readable(quarantine_location(lake, METADATA))
    assert quarantined is not None and quarantined.num_rows == 0
    silver = assert_readable(silver_location(lake, METADATA))
    assert silver is None or silver.num_rows == 0

    monkeypatch.undo()
    assert _materialize_silver(lake, tmp_path)
    silver = assert_readable(silver_location(lake, METADATA))
    quarantined = assert_readable(quarantine_location(lake, METADATA))
    assert sorted(silver.column("attributes").to_pylist()) == ['{"a": 1}', "{}"]
    assert sorted(quarantined.column("attributes").to_pylist()) == ["also broken", "{broken"]


# ------------------------------------------------------ the sync's merge: silver last, then undo


@pytest.fixture(params=["local", "azurite"])
def migration(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(
        url, start_date=START, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=12, defects=DEFECTS
    )
    migration = Migration(url, tmp_path)
    if request.param == "azurite":
        azurite = request.getfixturevalue("azurite")
        container = request.getfixturevalue("azurite_container")
        migration.lake = LakeResource(
            url=azurite.abfs_url(container, "lake"),
            azure_storage_connection_string=azurite.connection_string,
        )
    migration.backfill()
    return migration


def test_silver_failing_after_bronze_and_quarantine_committed_keeps_every_table_readable(
    migration, monkeypatch
):
    migration.cycle()
    watermark = migration.control.completed_watermark("llm_interactions")
    change_some_rows(migration)
    locations = lake_locations(migration.lake, LLM_INTERACTIONS)
    versions = migration.versions()
    real = DeltaPartitionWriter._transact

    def silver_conflicts(self, table, actions, metadata):
        if self.location.uri == locations["silver"].uri:
            raise OSError("silver commit refused: storage unavailable")
        real(self, table, actions, metadata)

    def undo_unreachable(*_args, **_kwargs):
        raise OSError("storage unavailable: cannot undo")

    monkeypatch.setattr(DeltaPartitionWriter, "_transact", silver_conflicts)
    monkeypatch.setattr(cycle_module, "undo_cycle", undo_unreachable)
    with pytest.raises(OSError, match="silver commit refused"):
        migration.cycle()
    after = migration.versions()
    assert after["bronze"] == versions["bronze"] + 1  # bronze did commit before silver failed
    assert after["silver"] == versions["silver"]
    for location in locations.values():
        assert_readable(location)
    assert migration.control.completed_watermark("llm_interactions").id == watermark.id

    # The next cycle undoes the half-done one (its row stayed STARTED), then converges.
    monkeypatch.undo()
    result = migration.cycle()
    assert result.abandoned_cycles_undone
    for location in locations.values():
        assert_readable(location)
    assert_lake_matches_source(migration)


# ------------------------------------------------- a blocking check fails: the day as it was


def test_a_failed_blocking_check_leaves_the_day_as_it_was(tmp_path, monkeypatch):
    """Rows land in the source for the day while it is being copied: bronze's blocking count
    fails. The day's bronze is put back as it was (silver never runs on it), and a re-run
    converges to the source."""
    import sqlalchemy as sa

    from llm_observatory.assets.migration import migration_assets
    from llm_observatory.layout import bronze_key
    from llm_observatory.resources.source import SourceDatabase

    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=START, days=1, rows_per_day=200, seed=4, defects=DEFECTS)
    source = SourceDatabase(url=url)
    lake = LakeResource(url=str(tmp_path / "lake"))
    resources = {"source": source, "lake": lake, "control": control_beside(lake, tmp_path)}
    assets = migration_assets

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets,
            partition_key=START.isoformat(),
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )

    assert run().success
    bronze = bronze_location(lake, LLM_INTERACTIONS)
    before = sorted(assert_readable(bronze).column("interaction_id").to_pylist())
    silver_before = assert_readable(silver_location(lake, LLM_INTERACTIONS)).num_rows
    engine = sa.create_engine(url)
    real_stream = SourceDatabase.stream_range

    def late_rows_arrive(self, described, start, end, *args, **kwargs):
        for number, batch in enumerate(real_stream(self, described, start, end, *args, **kwargs)):
            if number == 0 and described.spec.name == LLM_INTERACTIONS.name:
                with engine.begin() as connection:
                    connection.execute(
                        sa.text(
                            "INSERT INTO llm_interactions (interaction_id, timestamp, model_name,"
                            " latency_ms, status, last_modified) VALUES ('late-row', :moment,"
                            " 'ollama', 5, 'success', :moment)"
                        ),
                        {"moment": dt.datetime.combine(START, dt.time(23, 59))},
                    )
            yield batch

    monkeypatch.setattr(SourceDatabase, "stream_range", late_rows_arrive)
    failed = run()
    assert not failed.success
    bronze_check = (bronze_key(LLM_INTERACTIONS), "bronze_rows_match_source")
    [check] = [
        e
        for e in failed.get_asset_check_evaluations()
        if (e.asset_key, e.check_name) == bronze_check
    ]
    assert not check.passed and check.metadata["day_put_back"].value is True
    assert sorted(assert_readable(bronze).column("interaction_id").to_pylist()) == before
    assert assert_readable(silver_location(lake, LLM_INTERACTIONS)).num_rows == silver_before

    monkeypatch.undo()
    assert run().success
    after = assert_readable(bronze).column("interaction_id").to_pylist()
    assert sorted(after) == sorted([*before, "late-row"])
