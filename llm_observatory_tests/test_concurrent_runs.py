"""Two terminals, one migration (issue 12, part 3): two `llm-observatory backfill` commands over
the same days started at the same moment on a fresh LLM_OBS_HOME, on a local lake and on
Azurite. The Dagster instance is created once; the second command is refused at once naming the
first; the lake never holds a key twice; a lone re-run converges to the source."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from llm_observatory.io.delta_lake import open_table
from llm_observatory.layout import quarantine_location, silver_location
from llm_observatory.resources.lake import LakeResource
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import TABLES

CLI = [sys.executable, "-m", "llm_observatory.cli"]
START = dt.date(2026, 11, 1)
DAYS = 6


def _env(home: Path, extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    env.update({"LLM_OBS_HOME": str(home), **extra})
    return env


@pytest.fixture(params=["local", "azurite"])
def fresh_home(request, tmp_path) -> tuple[Path, dict, LakeResource]:
    home = tmp_path / "home"
    home.mkdir()
    generate_source(
        f"sqlite:///{home / 'demo_source.sqlite'}",
        start_date=START,
        days=DAYS,
        rows_per_day=150,
        seed=21,
        defects=DefectRates(missing_hour=None),
    )
    if request.param == "local":
        return home, {}, LakeResource(url=str(home / "lake"))
    azurite = request.getfixturevalue("azurite")
    container = request.getfixturevalue("azurite_container")
    url = azurite.abfs_url(container, "lake")
    extra = {"LLM_OBS_LAKE_URL": url, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    lake = LakeResource(url=url, azure_storage_connection_string=azurite.connection_string)
    return home, extra, lake


def _backfill_argv() -> list[str]:
    last = START + dt.timedelta(days=DAYS - 1)
    return [*CLI, "backfill", "--start", START.isoformat(), "--end", last.isoformat()]


def _source_keys(home: Path, table) -> set:
    engine = sa.create_engine(f"sqlite:///{home / 'demo_source.sqlite'}")
    with engine.connect() as connection:
        keys = connection.execute(sa.text(f"SELECT {table.key} FROM {table.name}")).scalars()
        result = {str(key) for key in keys}
    engine.dispose()
    return result


def _keys(location, key: str) -> pl.Series:
    """The key column of a lake table's current version (a table never created holds none)."""
    table = open_table(location)
    if table is None:
        return pl.Series(key, [], dtype=pl.String)
    return pl.from_arrow(table.to_pyarrow_table(columns=[key])).get_column(key)


def assert_every_key_once(home: Path, lake: LakeResource) -> None:
    """Silver holds each key once; silver and quarantine together hold exactly the source."""
    for table in TABLES:
        silver = _keys(silver_location(lake, table), table.key)
        quarantined = _keys(quarantine_location(lake, table), table.key)
        assert silver.n_unique() == silver.len(), f"silver/{table.name} holds a key twice"
        held = [str(key) for key in silver.to_list() + quarantined.to_list()]
        assert len(held) == len(set(held)), f"{table.name}: a key in silver and quarantine"
        assert set(held) == _source_keys(home, table), table.name


def test_two_backfills_of_the_same_days_at_once(fresh_home):
    home, extra, lake = fresh_home
    env = _env(home, extra)
    first, second = (
        subprocess.Popen(
            _backfill_argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    )
    outcomes = [process.communicate(timeout=600) for process in (first, second)]
    codes = [first.returncode, second.returncode]
    texts = [out + err for out, err in outcomes]
    # The instance was created once: neither saw a broken storage schema.
    assert not any("alembic" in text or "more than one head" in text for text in texts), texts
    # One did the work; the other was refused at once, naming the holder, and changed nothing.
    assert sorted(codes) == [0, 1], texts
    refused = texts[codes.index(1)]
    assert "backfill refused, nothing was changed" in refused, refused
    assert "held by backfill" in refused, refused
    assert f"{DAYS}/{DAYS} day(s) ok" in texts[codes.index(0)]
    assert_every_key_once(home, lake)

    # A lone re-run of the same days converges (and the instance still works).
    again = subprocess.run(_backfill_argv(), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_every_key_once(home, lake)
    report = subprocess.run([*CLI, "report"], env=env, capture_output=True, text=True, timeout=600)
    assert "Verdict: GO" in report.stdout, report.stdout + report.stderr


def test_a_backfill_is_refused_while_another_holds_one_of_its_days(fresh_home):
    """A day leased by another run (a UI backfill's step, a sync merging it) refuses the
    command before it changes anything, and names the holder."""
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.leases import Leases, day_resource

    home, extra, lake = fresh_home
    control = ControlDatabase(url=f"sqlite:///{home / 'control.sqlite'}")
    with Leases(control, "run 1234abcd (migrate_history)") as other:
        other.take([day_resource("logs", START + dt.timedelta(days=3))])
        refused = subprocess.run(
            _backfill_argv(), env=_env(home, extra), capture_output=True, text=True, timeout=600
        )
    assert refused.returncode == 1
    assert "run 1234abcd (migrate_history)" in refused.stderr
    assert "day/logs/2026-11-04" in refused.stderr
    assert not (home / "lake" / "bronze").exists() or not any((home / "lake" / "bronze").iterdir())
