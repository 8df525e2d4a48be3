"""Tamper with a migrated lake (and its source) and see each validation layer catch it, naming
the partition and, where it can, the key."""

import datetime as dt
import os

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from deltalake import DeltaTable
from sqlalchemy.dialects import mssql

from llm_observatory.assets.migration import migration_assets
from llm_observatory.checks.checksums import checksum_result
from llm_observatory.checks.quality import silver_rule_results
from llm_observatory.checks.row_counts import bronze_matches_source
from llm_observatory.checks.timestamps import timestamp_results
from llm_observatory.io.delta_lake import current_files
from llm_observatory.layout import bronze_key, bronze_location, day_filter, silver_location
from llm_observatory.partitions import day_window
from llm_observatory.report import account_days
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LLM_INTERACTIONS, TABLES
from llm_observatory_tests.helpers import control_beside, migrate_clean_day

DAY = dt.date(2026, 11, 1)


@pytest.fixture
def migrated_in_instance(postgres_url, tmp_path):
    """One clean day migrated with every check, in an instance that keeps the results."""
    lake = LakeResource(url=str(tmp_path / "lake"))
    source, instance = migrate_clean_day(postgres_url, lake, control_beside(lake), DAY)
    return source, lake, instance


@pytest.fixture
def migrated(migrated_in_instance):
    source, lake, _ = migrated_in_instance
    return source, lake


def one_file(location) -> str:
    files = current_files(DeltaTable(location.uri), day_filter(DAY))
    return f"{location.fs_path}/{files[0][0]}"


def rewrite(path: str, change) -> None:
    """Rewrites a data file in place, as someone with storage access could."""
    table = pq.read_table(path)
    pq.write_table(change(table), path, compression="zstd")


def set_value(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(
        table.schema.get_field_index(column),
        column,
        pa.array(values, table.schema.field(column).type),
    )


def test_a_corrupted_byte_fails_the_checksum_naming_the_file(migrated):
    _, lake = migrated
    location = bronze_location(lake, LLM_INTERACTIONS)
    path = one_file(location)
    with open(path, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = checksum_result(location, day_filter(DAY), DAY.isoformat())
    assert not result.passed
    assert DAY.isoformat() in result.description
    [mismatch] = result.metadata["mismatched"].value
    assert path.endswith(mismatch["path"])


def test_a_deleted_file_is_reported_missing(migrated):
    _, lake = migrated
    location = silver_location(lake, LLM_INTERACTIONS)
    path = one_file(location)
    os.remove(path)
    result = checksum_result(location, day_filter(DAY), DAY.isoformat())
    assert not result.passed
    assert any(path.endswith(p) for p in result.metadata["missing"].value)


def test_one_changed_character_fails_the_checksum(migrated):
    _, lake = migrated
    location = silver_location(lake, LLM_INTERACTIONS)
    path = one_file(location)
    rewrite(
        path, lambda t: set_value(t, "response", 0, (t.column("response")[0].as_py() or "") + "!")
    )
    assert not checksum_result(location, day_filter(DAY), DAY.isoformat()).passed


def test_a_timestamp_shifted_out_of_its_day_names_the_key(migrated):
    source, lake = migrated
    location = bronze_location(lake, LLM_INTERACTIONS)
    path = one_file(location)
    table = pq.read_table(path)
    last = pc.index(table.column("timestamp"), pc.max(table.column("timestamp"))).as_py()
    key = table.column("interaction_id")[last].as_py()
    moment = table.column("timestamp")[last].as_py()
    assert moment == dt.datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    rewrite(path, lambda t: set_value(t, "timestamp", last, moment + dt.timedelta(microseconds=1)))
    described = source.describe_table(LLM_INTERACTIONS)
    in_day, _ = timestamp_results(LLM_INTERACTIONS, location, DAY, source, described)
    assert not in_day.passed
    assert in_day.metadata["first_keys_outside"].value == [key]
    assert not checksum_result(location, day_filter(DAY), DAY.isoformat()).passed


def test_a_rule_breaking_row_in_silver_is_found_with_its_key(migrated):
    _, lake = migrated
    path = one_file(silver_location(lake, LLM_INTERACTIONS))
    key = pq.read_table(path).column("interaction_id")[0].as_py()
    rewrite(path, lambda t: set_value(t, "latency_ms", 0, -1))
    rules, _ = silver_rule_results(LLM_INTERACTIONS, lake, DAY)
    assert not rules.passed
    assert rules.metadata["violations_by_rule"].value["range:latency_ms"] == 1
    assert rules.metadata["first_offending_keys"].value == [key]


def test_an_hour_lost_only_in_the_lake_is_an_error(migrated):
    source, lake = migrated
    location = bronze_location(lake, LLM_INTERACTIONS)
    path = one_file(location)
    rewrite(path, lambda t: t.filter(pc.not_equal(pc.hour(t.column("timestamp")), 7)))
    described = source.describe_table(LLM_INTERACTIONS)
    _, gaps = timestamp_results(LLM_INTERACTIONS, location, DAY, source, described)
    assert not gaps.passed
    assert gaps.severity == dg.AssetCheckSeverity.ERROR
    assert gaps.metadata["gaps_lost_in_lake"].value == [7]


def test_a_row_deleted_from_the_source_after_the_load_is_a_no_go(migrated, postgres_url):
    source, lake = migrated
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "DELETE FROM llm_interactions WHERE interaction_id = "
            "(SELECT min(interaction_id) FROM llm_interactions)"
        )
    engine.dispose()
    described = source.describe_table(LLM_INTERACTIONS)
    count_check = bronze_matches_source(LLM_INTERACTIONS, source, described, lake, *day_window(DAY))
    assert not count_check.passed
    assert count_check.metadata["difference"].value == 1
    accounts = account_days(source, lake, TABLES, DAY, DAY)
    incomplete = [a for a in accounts if not a.complete]
    assert [(a.table, a.day) for a in incomplete] == [("llm_interactions", DAY.isoformat())]


def flaky_read_back(monkeypatch, bad_reads: int) -> list[int]:
    """Storage that returns other bytes for the first `bad_reads` read-backs."""
    from llm_observatory.io import delta_lake

    calls = [0]
    genuine = delta_lake.read_back_sha256

    def read_back(location, path):
        calls[0] += 1
        digest, size = genuine(location, path)
        return ("0" * 64 if calls[0] <= bad_reads else digest), size

    monkeypatch.setattr(delta_lake, "read_back_sha256", read_back)
    return calls


def test_a_write_that_does_not_read_back_is_retried(migrated, monkeypatch):
    source, lake = migrated
    location = bronze_location(lake, LLM_INTERACTIONS)
    version = DeltaTable(location.uri).version()
    flaky_read_back(monkeypatch, bad_reads=1)
    result = dg.materialize(
        [migration_assets[0]],
        selection=[bronze_key(LLM_INTERACTIONS)],
        partition_key=DAY.isoformat(),
        resources={"source": source, "lake": lake, "control": control_beside(lake)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert DeltaTable(location.uri).version() == version + 1
    assert checksum_result(location, day_filter(DAY), DAY.isoformat()).passed


def test_a_write_that_never_reads_back_fails_and_commits_nothing(migrated, monkeypatch):
    source, lake = migrated
    location = bronze_location(lake, LLM_INTERACTIONS)
    version = DeltaTable(location.uri).version()
    flaky_read_back(monkeypatch, bad_reads=10_000)
    result = dg.materialize(
        [migration_assets[0]],
        selection=[bronze_key(LLM_INTERACTIONS)],
        partition_key=DAY.isoformat(),
        resources={"source": source, "lake": lake, "control": control_beside(lake)},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "ReadBackMismatchError" in error
    assert DeltaTable(location.uri).version() == version


def test_the_spot_check_names_key_and_column_of_a_changed_value(migrated):
    from llm_observatory.checks.spot_check import spot_check_result

    source, lake = migrated
    path = one_file(bronze_location(lake, LLM_INTERACTIONS))
    table = pq.read_table(path)
    row = next(i for i, v in enumerate(table.column("response").to_pylist()) if v)
    key = table.column("interaction_id")[row].as_py()
    rewrite(path, lambda t: set_value(t, "response", row, t.column("response")[row].as_py() + "x"))
    described = source.describe_table(LLM_INTERACTIONS)
    result = spot_check_result(LLM_INTERACTIONS, source, described, lake, DAY, 10_000, "s")
    assert not result.passed
    assert result.metadata["sampled_rows"].value == 300
    [mismatch] = result.metadata["mismatches"].value
    assert (mismatch["key"], mismatch["column"]) == (key, "response")


def test_the_spot_check_finds_a_value_made_null_a_changed_number_and_a_lost_row(migrated):
    """Compared column by column in Arrow: a NULL where the source has a value, a number that
    differs, and a row gone from bronze are each named; the rest of the day matches."""
    from llm_observatory.checks.spot_check import spot_check_result

    source, lake = migrated
    path = one_file(bronze_location(lake, LLM_INTERACTIONS))
    table = pq.read_table(path)
    keys = table.column("interaction_id").to_pylist()
    latencies = table.column("latency_ms").to_pylist()
    nulled, changed = [i for i, value in enumerate(latencies) if value is not None][:2]
    lost = next(i for i in range(len(keys)) if i not in (nulled, changed))

    def tamper(t: pa.Table) -> pa.Table:
        t = set_value(t, "model_name", nulled, None)
        t = set_value(t, "latency_ms", changed, latencies[changed] + 1)
        return t.filter(pa.array([i != lost for i in range(t.num_rows)]))

    rewrite(path, tamper)
    described = source.describe_table(LLM_INTERACTIONS)
    result = spot_check_result(LLM_INTERACTIONS, source, described, lake, DAY, 10_000, "s")
    assert not result.passed
    found = {(m["key"], m["column"]) for m in result.metadata["mismatches"].value}
    assert found == {(keys[nulled], "model_name"), (keys[changed], "latency_ms")}
    assert result.metadata["missing_keys"].value == [str(keys[lost])]


def _in_row_groups(path: str, rows: int, order: str) -> list[str]:
    """Rewrites bronze's file in row groups of `rows` rows, its rows sorted by event time or
    shuffled (as a source read without ORDER BY may leave them); returns the keys."""
    table = pq.read_table(path)
    if order == "sorted":
        table = table.sort_by("timestamp")
    else:
        table = table.take(
            pa.array(
                list(reversed(range(0, table.num_rows, 2))) + list(range(1, table.num_rows, 2))
            )
        )
    pq.write_table(table, path, compression="zstd", row_group_size=rows)
    return table.column("interaction_id").to_pylist()


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_the_spot_check_reads_only_the_row_groups_its_sample_needs(migrated, order):
    """Bronze's day in 30 row groups: the instants are drawn inside one of them, chosen by
    the seed from the footers, and only the groups whose event-time range may hold a sampled
    row are read (in event-time order, one or two; shuffled, more, never a wrong verdict)."""
    from llm_observatory.checks.spot_check import spot_check_result

    source, lake = migrated
    path = one_file(bronze_location(lake, LLM_INTERACTIONS))
    _in_row_groups(path, 10, order)
    described = source.describe_table(LLM_INTERACTIONS)
    result = spot_check_result(LLM_INTERACTIONS, source, described, lake, DAY, 40, "s")
    assert result.passed, result.metadata
    assert result.metadata["sampled_in"].value == "1 of 30 row groups' event-time ranges"
    read, total = map(int, result.metadata["row_groups_read"].value.split(" of "))
    assert total == 30
    if order == "sorted":
        assert read <= 2
    again = spot_check_result(LLM_INTERACTIONS, source, described, lake, DAY, 40, "s")
    assert again.metadata["row_groups_read"].value == result.metadata["row_groups_read"].value


def test_the_spot_check_in_row_groups_still_finds_changed_values_and_lost_rows(migrated):
    """Sampled inside a few row groups, a value changed in every row and rows lost from the
    lake are still named, and no row the lake holds is reported missing."""
    from llm_observatory.checks.spot_check import spot_check_result

    source, lake = migrated
    path = one_file(bronze_location(lake, LLM_INTERACTIONS))
    keys = _in_row_groups(path, 10, "sorted")
    lost = set(keys[::3])

    def tamper(t: pa.Table) -> pa.Table:
        t = t.set_column(
            t.schema.get_field_index("prompt_tokens"),
            "prompt_tokens",
            pc.add(t.column("prompt_tokens"), 1),
        )
        return t.filter(pc.invert(pc.is_in(t.column("interaction_id"), pa.array(list(lost)))))

    table = tamper(pq.read_table(path))
    pq.write_table(table, path, compression="zstd", row_group_size=10)
    described = source.describe_table(LLM_INTERACTIONS)
    result = spot_check_result(LLM_INTERACTIONS, source, described, lake, DAY, 40, "s")
    assert not result.passed
    missing = set(result.metadata["missing_keys"].value)
    assert missing and missing <= {str(key) for key in lost}
    columns = {m["column"] for m in result.metadata["mismatches"].value}
    assert columns == {"prompt_tokens"}


def test_the_spot_check_sample_is_seeded_and_drawn_in_the_source(migrated):
    from llm_observatory.checks.spot_check import sample_positions, sample_query, sample_rows

    source, _ = migrated
    described = source.describe_table(LLM_INTERACTIONS)

    def sample(seed):
        return sample_rows(source, described, DAY, 25, seed).column("interaction_id").to_pylist()

    assert sample("a") == sample("a")
    assert sample("a") != sample("b")
    assert 15 <= len(set(sample("a"))) <= 25  # 25 instants; two may reach the same row
    positions = sample_positions(DAY, 25, "a")
    sql_server = SourceDatabase(url="mssql+pyodbc://migrator@sqlhost/prod")
    compiled = str(
        sample_query(sql_server, described, DAY, positions, "a").compile(dialect=mssql.dialect())
    )
    # One statement for every instant, from one parameter (a JSON array of the instants):
    # per instant a seek for the first event time at or after it, then the lowest hash among
    # that instant's rows; the day itself is never ordered.
    assert compiled.count("SELECT TOP ") == 1 and compiled.count("max(") == 0
    assert compiled.count("HASHBYTES('MD5'") == 1 and compiled.count("min(") == 1
    assert "FROM openjson(:positions) AS instants" in compiled
    assert "CAST(instants.value AS" in compiled
    assert "UNION" not in compiled and "2026" not in compiled


def test_the_spot_check_works_on_sqlite(tmp_path):
    from llm_observatory.checks.spot_check import sample_positions, sample_query, sample_rows

    url = f"sqlite:///{tmp_path / 'src.sqlite'}"
    generate_source(url, start_date=DAY, days=1, rows_per_day=50, seed=3)
    source = SourceDatabase(url=url)
    described = source.describe_table(LLM_INTERACTIONS)
    positions = sample_positions(DAY, 10, "seed")
    query = sample_query(source, described, DAY, positions, "seed")
    key_schema = pa.schema([described.arrow_schema.field("interaction_id")])
    picks = [r for b in source.stream_query(query, key_schema) for r in b.to_pylist()]
    assert len(picks) == 10  # one per instant
    assert all(pick["interaction_id"] is not None for pick in picks)
    assert picks == [r for b in source.stream_query(query, key_schema) for r in b.to_pylist()]
    sample = sample_rows(source, described, DAY, 10, "seed")
    assert sample.column("interaction_id").to_pylist() == list(
        dict.fromkeys(pick["interaction_id"] for pick in picks)
    )


def report_for(source, lake, instance):
    from llm_observatory.assets.report import build_cutover_report, migration_check_keys

    return build_cutover_report(
        source, lake, instance, migration_check_keys(), control_beside(lake)
    )


def test_the_report_says_go_for_a_clean_lake_and_no_go_once_a_file_is_corrupted(
    migrated_in_instance,
):
    source, lake, instance = migrated_in_instance
    clean = report_for(source, lake, instance)
    assert clean.verdict == "GO", clean.reasons()
    assert clean.files_verified > 0
    # A local lake is re-read whole: reading it is cheap.
    assert (clean.checksum_mode, clean.files_reread) == ("full", clean.files_verified)
    results = {(r["asset"], r["check"]): (r["passed"], r["failed"]) for r in clean.check_results}
    assert results[("silver/llm_interactions", "reconciles_with_source")] == (1, 0)
    assert results[("bronze/llm_interactions", "spot_check_matches_source")] == (1, 0)
    assert "reconciles_with_source" in clean.to_markdown()
    path = one_file(silver_location(lake, LLM_INTERACTIONS))
    with open(path, "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0x01]))
    tampered = report_for(source, lake, instance)
    assert tampered.verdict == "NO-GO"
    assert tampered.reasons()[0].endswith("no longer match their SHA-256")
    [failure] = tampered.checksum_failures
    assert (failure["table"], failure["day"]) == ("silver/llm_interactions", DAY.isoformat())
    assert "NO-GO" in tampered.to_markdown().split("## Rows per table")[0]


def test_a_row_deleted_from_a_bronze_file_is_a_no_go(migrated_in_instance):
    source, lake, instance = migrated_in_instance
    path = one_file(bronze_location(lake, LLM_INTERACTIONS))
    rewrite(path, lambda t: t.slice(1))
    report = report_for(source, lake, instance)
    assert report.verdict == "NO-GO"
    [account] = report.incomplete
    assert (account.table, account.day) == ("llm_interactions", DAY.isoformat())
    assert account.bronze_rows == account.source_rows - 1
    described = source.describe_table(LLM_INTERACTIONS)
    check = bronze_matches_source(LLM_INTERACTIONS, source, described, lake, *day_window(DAY))
    assert not check.passed and check.metadata["difference"].value == -1


def test_a_partition_never_checked_is_a_no_go(postgres_url, tmp_path):
    generate_source(
        postgres_url,
        start_date=DAY,
        days=1,
        rows_per_day=100,
        seed=8,
        defects=DefectRates(missing_hour=None),
    )
    source = SourceDatabase(url=postgres_url)
    lake = LakeResource(url=str(tmp_path / "lake"))
    instance = dg.DagsterInstance.ephemeral()
    # Assets without the integrity checks: their results are missing, not passed.
    dg.materialize(
        migration_assets,
        partition_key=DAY.isoformat(),
        resources={"source": source, "lake": lake, "control": control_beside(lake)},
        instance=instance,
    )
    report = report_for(source, lake, instance)
    assert report.verdict == "NO-GO"
    assert any("check result(s) missing" in reason for reason in report.reasons())
    assert {m["check"] for m in report.missing_checks} >= {
        "files_match_committed_sha256",
        "reconciles_with_source",
    }
