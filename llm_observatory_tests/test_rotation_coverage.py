"""When was each day last proven equal to the source? The control database records it
(`migration_reconciliation`), silver's reconciliation check and `verify` write it, the cutover
report says NO-GO for a day with data not reconciled within the rotation period, and
`verify --repair` applies what a reconciliation finds on any range at once."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from llm_observatory import settings
from llm_observatory.assets.migration import migration_assets
from llm_observatory.assets.report import build_cutover_report, migration_check_keys
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.io.delta_lake import open_table
from llm_observatory.layout import quarantine_location, silver_location
from llm_observatory.reconcile import RECONCILED_CHECK
from llm_observatory.resources.control import ControlDatabase, migration_reconciliation
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.leases import Leases, sync_resource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.sql_scripts import apply_script, control_ddl
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import LOGS, TABLES

DAY = dt.date(2026, 11, 1)
DAYS = 2
CLI = [sys.executable, "-m", "llm_observatory.cli"]


def run_cli(args, home: Path, **extra_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    env.update({"LLM_OBS_HOME": str(home), **extra_env})
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=600)


def recorded_by(control: ControlDatabase, table_name: str) -> dict[dt.date, str]:
    table = migration_reconciliation
    query = sa.select(table.c.day, table.c.reconciled_by).where(table.c.table_name == table_name)
    with control.engine.connect() as connection:
        return {dt.date.fromisoformat(str(day)[:10]): by for day, by in connection.execute(query)}


# ------------------------------------------------------------------------- the control table


@pytest.fixture(params=["sqlite", "postgresql"])
def control(request, tmp_path):
    if request.param == "sqlite":
        return ControlDatabase(url=f"sqlite:///{tmp_path / 'control.sqlite'}")
    return ControlDatabase(url=request.getfixturevalue("postgres_url"))


def test_record_and_read_back_keeps_the_last_reconciliation_per_day(control):
    first = dt.datetime(2026, 11, 20, 22, 5, tzinfo=dt.UTC)
    control.record_reconciled(
        "logs", {DAY: 0, DAY + dt.timedelta(days=1): 3}, by="sync cycle logs#12", at=first
    )
    control.record_reconciled("metadata", {DAY: 0}, by="verify", at=first)
    assert control.last_reconciled("logs") == {DAY: first, DAY + dt.timedelta(days=1): first}

    # Again for one day: that day's row is replaced, the other day's stays.
    later = dt.datetime(2026, 12, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    control.record_reconciled("logs", {DAY: 0}, by="verify")
    control.record_reconciled("logs", {DAY: 1}, by="check reconciles_with_source run r1", at=later)
    assert control.last_reconciled("logs") == {DAY: later, DAY + dt.timedelta(days=1): first}
    assert recorded_by(control, "logs") == {
        DAY: "check reconciles_with_source run r1",
        DAY + dt.timedelta(days=1): "sync cycle logs#12",
    }
    assert control.last_reconciled("metadata") == {DAY: first}
    assert control.last_reconciled("llm_interactions") == {}
    control.record_reconciled("logs", {}, by="nothing")  # nothing to record: no statement

    # Many days at once (more than one DELETE's worth), one transaction.
    many = {DAY - dt.timedelta(days=offset): 0 for offset in range(1200)}
    control.record_reconciled("llm_interactions", many, by="verify", at=first)
    assert set(control.last_reconciled("llm_interactions")) == set(many)
    control.engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_control_script_creates_the_same_table(dialect, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path / 'scripted.sqlite'}"
        if dialect == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = sa.create_engine(url)
    apply_script(engine, control_ddl(dialect))
    apply_script(engine, control_ddl(dialect))  # idempotent
    columns = {c["name"] for c in sa.inspect(engine).get_columns("migration_reconciliation")}
    assert columns == {c.name for c in migration_reconciliation.columns}
    primary_key = sa.inspect(engine).get_pk_constraint("migration_reconciliation")
    assert primary_key["constrained_columns"] == ["table_name", "day"]
    engine.dispose()
    control = ControlDatabase(url=url)
    control.record_reconciled("logs", {DAY: 0}, by="verify")
    assert list(control.last_reconciled("logs")) == [DAY]
    control.engine.dispose()


def test_the_rotation_period_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("LLM_OBS_ROTATION_DAYS", raising=False)
    assert settings.rotation_days() == 30
    monkeypatch.setenv("LLM_OBS_ROTATION_DAYS", "14")
    assert settings.rotation_days() == 14
    for bad in ("0", "-3", "2.5", "weekly"):
        monkeypatch.setenv("LLM_OBS_ROTATION_DAYS", bad)
        with pytest.raises(ValueError, match="^LLM_OBS_ROTATION_DAYS=.*whole number of days >= 1"):
            settings.rotation_days()


# ------------------------------------------------------------------ checks, report and verify


@pytest.fixture
def migrated_home(tmp_path):
    """Two days of a SQLite source migrated with every check, laid out as the CLI finds them
    under LLM_OBS_HOME (source, lake, control database)."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'source.sqlite'}"
    generate_source(
        url, start_date=DAY, days=DAYS, rows_per_day=120, seed=6, defects=DefectRates.none()
    )
    source = SourceDatabase(url=url)
    lake = LakeResource(url=str(home / "lake"))
    control = ControlDatabase(url=f"sqlite:///{home / 'control.sqlite'}")
    instance = dg.DagsterInstance.ephemeral()
    for offset in range(DAYS):
        result = dg.materialize(
            [*migration_assets, *integrity_checks],
            partition_key=(DAY + dt.timedelta(days=offset)).isoformat(),
            resources={"source": source, "lake": lake, "control": control},
            instance=instance,
        )
        assert result.success
    return home, source, lake, control, instance


def report(source, lake, control, instance):
    return build_cutover_report(
        source, lake, instance, migration_check_keys(), control, rotation_period_days=30
    )


def test_the_check_records_every_day_it_reconciles(migrated_home):
    _, _, _, control, _ = migrated_home
    days = {DAY + dt.timedelta(days=offset) for offset in range(DAYS)}
    for table in TABLES:
        assert set(control.last_reconciled(table.name)) == days
        for by in recorded_by(control, table.name).values():
            assert by.startswith(f"check {RECONCILED_CHECK} run ")


def test_a_day_not_reconciled_within_the_rotation_is_no_go_until_verified(migrated_home):
    home, source, lake, control, instance = migrated_home
    clean = report(source, lake, control, instance)
    assert clean.verdict == "GO", clean.reasons()
    coverage = {c.table: c for c in clean.reconciliation}
    assert coverage["logs"].days_with_data == DAYS and not coverage["logs"].overdue_days
    assert "## Reconciled with the source within 30 days" in clean.to_markdown()

    aged = dt.datetime.now(dt.UTC) - dt.timedelta(days=45)
    control.record_reconciled("logs", {DAY: 0}, by="sync cycle logs#1", at=aged)
    stale = report(source, lake, control, instance)
    assert stale.verdict == "NO-GO"
    [reason] = stale.reasons()
    assert reason.startswith("logs: 1 day(s) not reconciled within the 30-day rotation")
    assert DAY.isoformat() in reason
    logs = next(c for c in stale.reconciliation if c.table == "logs")
    assert (logs.oldest_day, logs.oldest_reconciled_at) == (
        DAY.isoformat(),
        aged.isoformat(timespec="seconds"),
    )
    assert f"{DAY} at {aged.isoformat(timespec='seconds')}" in stale.to_markdown()
    import json

    figures = {c["table"]: c for c in json.loads(stale.to_json())["reconciliation"]}
    assert figures["logs"]["overdue_days"] == 1
    assert figures["logs"]["reconciled_too_long_ago"][0]["day"] == DAY.isoformat()

    verified = run_cli(
        ["verify", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--table", "logs"],
        home,
        LLM_OBS_SOURCE_URL=source.url,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert recorded_by(control, "logs")[DAY] == "verify"
    again = report(source, lake, control, instance)
    assert again.verdict == "GO", again.reasons()


def test_a_lake_without_any_record_says_to_verify_its_range(migrated_home):
    _, source, lake, control, instance = migrated_home
    with control.engine.begin() as connection:
        connection.execute(
            sa.delete(migration_reconciliation).where(
                migration_reconciliation.c.table_name == "metadata"
            )
        )
    unrecorded = report(source, lake, control, instance)
    assert unrecorded.verdict == "NO-GO"
    [reason] = unrecorded.reasons()
    last = DAY + dt.timedelta(days=DAYS - 1)
    assert reason.startswith("metadata: no reconciliation on record")
    assert f"`llm-observatory verify --start {DAY} --end {last} --table metadata`" in reason


# --------------------------------------------------------------------------- verify --repair


def keys_of(lake: LakeResource, table) -> set:
    keys = set()
    for location in (silver_location(lake, table), quarantine_location(lake, table)):
        delta = open_table(location)
        if delta is not None:
            keys |= set(delta.to_pyarrow_table(columns=[table.key]).column(0).to_pylist())
    return keys


def source_keys(url: str, table) -> set:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        keys = {
            key for (key,) in connection.exec_driver_sql(f"SELECT {table.key} FROM {table.name}")
        }
    engine.dispose()
    return keys


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_verify_repair_removes_rows_deleted_in_the_source(dialect, tmp_path, request):
    home = tmp_path / "home"
    home.mkdir()
    url = (
        f"sqlite:///{home / 'source.sqlite'}"
        if dialect == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    generate_source(
        url, start_date=DAY, days=DAYS, rows_per_day=150, seed=12, defects=DefectRates.none()
    )
    source = SourceDatabase(url=url)
    lake = LakeResource(url=str(home / "lake"))
    control = ControlDatabase(url=f"sqlite:///{home / 'control.sqlite'}")
    for offset in range(DAYS):
        result = dg.materialize(
            migration_assets,
            partition_key=(DAY + dt.timedelta(days=offset)).isoformat(),
            resources={"source": source, "lake": lake, "control": control},
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
    before = source_keys(url, LOGS)
    deleted = sorted(before)[::40]  # a few on each day
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"DELETE FROM logs WHERE {LOGS.key} IN :keys").bindparams(
                sa.bindparam("keys", expanding=True)
            ),
            {"keys": deleted},
        )
    engine.dispose()
    last = (DAY + dt.timedelta(days=DAYS - 1)).isoformat()
    command = ["verify", "--start", DAY.isoformat(), "--end", last, "--table", "logs"]
    env = {"LLM_OBS_SOURCE_URL": url}

    # A running sync cycle of the table: refused at once, naming the holder; nothing changed.
    with Leases(control, "sync of logs (run live-cycle)") as leases:
        leases.take([sync_resource("logs")])
        refused = run_cli([*command, "--repair"], home, **env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "repair refused" in line and "run live-cycle" in line
    assert set(deleted) <= keys_of(lake, LOGS)

    repaired = run_cli([*command, "--repair"], home, **env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repair logs:" in repaired.stdout
    assert "verify after the repair:" in repaired.stdout
    assert keys_of(lake, LOGS) == before - set(deleted)

    verified = run_cli(command, home, **env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verify: 0 table-day(s) differ" in verified.stdout
