"""`llm-observatory sync` against the demo database after it changed, as an operator runs it,
and `setup-control`; the report stays GO after the sync."""

import datetime as dt
import uuid

import polars as pl
import pytest
import sqlalchemy as sa

from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.leases import Leases, sync_resource
from llm_observatory_tests.test_cli import run_cli


@pytest.fixture(scope="module")
def synced_demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    demo = run_cli(["demo", "--days", "2", "--rows-per-day", "200"], home)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    first = run_cli(["sync"], home)
    assert first.returncode == 0, first.stdout + first.stderr

    engine = sa.create_engine(f"sqlite:///{home / 'demo_source.sqlite'}")
    interactions = sa.Table("llm_interactions", sa.MetaData(), autoload_with=engine)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        keys = (
            connection.execute(
                sa.select(interactions.c.interaction_id)
                .where(interactions.c.model_name == "gemini", interactions.c.latency_ms < 1000)
                .order_by(interactions.c.interaction_id)
                .limit(2)
            )
            .scalars()
            .all()
        )
        connection.execute(
            sa.update(interactions)
            .where(interactions.c.interaction_id == keys[0])
            .values(latency_ms=1, last_modified=now)
        )
        connection.execute(sa.delete(interactions).where(interactions.c.interaction_id == keys[1]))
        new_key = str(uuid.uuid4())
        connection.execute(
            sa.insert(interactions).values(
                interaction_id=new_key,
                timestamp=dt.datetime(2026, 11, 2, 12, 0, 0),
                model_name="grok",
                latency_ms=42,
                status="success",
                last_modified=now,
            )
        )
    engine.dispose()
    second = run_cli(["sync", "--rotation-days", "1"], home)
    return home, second, {"updated": keys[0], "deleted": keys[1], "new": new_key}


def test_sync_after_the_demo_changed_brings_every_change(synced_demo):
    home, completed, keys = synced_demo
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "sync: completed" in completed.stdout
    assert "1 deleted" in completed.stdout
    # Both instants of the watermark line in ISO, the new one as the old (it printed epoch
    # seconds: "watermark 2026-12-04T00:00:01+00:00 -> 1796342401.8").
    line = next(text for text in completed.stdout.splitlines() if "llm_interactions:" in text)
    after = line.split(" -> ", 1)[1].split(";")[0]
    assert dt.datetime.fromisoformat(after).tzinfo is not None, line
    silver = pl.read_delta(str(home / "lake" / "silver" / "llm_interactions"))
    by_key = {row["interaction_id"]: row for row in silver.to_dicts()}
    assert by_key[keys["updated"]]["latency_ms"] == 1
    assert by_key[keys["new"]]["model"] == "grok"
    assert keys["deleted"] not in by_key
    deleted = pl.read_delta(str(home / "lake" / "silver" / "_deleted" / "llm_interactions"))
    assert deleted["interaction_id"].to_list() == [keys["deleted"]]


def test_report_is_still_go_after_the_sync(synced_demo):
    home, *_ = synced_demo
    completed = run_cli(["report"], home)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Verdict: GO" in completed.stdout


def test_sync_with_the_source_down_fails_and_moves_nothing(synced_demo):
    home, *_ = synced_demo
    control = sa.create_engine(f"sqlite:///{home / 'control.sqlite'}")
    query = sa.text("SELECT count(*) FROM migration_watermark WHERE status = 'COMPLETED'")
    with control.connect() as connection:
        completed_before = connection.execute(query).scalar()
    down = run_cli(
        ["sync", "--table", "logs"],
        home,
        LLM_OBS_SOURCE_URL="postgresql+psycopg://migrator:s3cret-pw@127.0.0.1:1/prod",
    )
    assert down.returncode == 1
    assert "FAILED" in down.stdout
    assert "s3cret-pw" not in down.stdout + down.stderr
    with control.connect() as connection:
        assert connection.execute(query).scalar() == completed_before
        failed = connection.execute(
            sa.text("SELECT error_message FROM migration_watermark ORDER BY id DESC LIMIT 1")
        ).scalar()
    control.dispose()
    assert "127.0.0.1:1" in failed and "s3cret-pw" not in failed


def test_setup_control_is_idempotent(tmp_path):
    for _ in range(2):
        completed = run_cli(["setup-control"], tmp_path)
        assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "control DDL applied" in completed.stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'control.sqlite'}")
    columns = {column["name"] for column in sa.inspect(engine).get_columns("migration_watermark")}
    engine.dispose()
    assert {"table_name", "last_extracted_timestamp", "rows_validated", "status"} <= columns


def test_a_delete_on_an_old_day_reaches_the_lake_in_a_changes_only_sync(synced_demo):
    """The demo's source is prepared with the departure capture: a changes-only sync (the
    sensor's, which reconciles no day) removes a row deleted on the first day, records it, and
    the report stays GO."""
    home, *_ = synced_demo
    engine = sa.create_engine(f"sqlite:///{home / 'demo_source.sqlite'}")
    interactions = sa.Table("llm_interactions", sa.MetaData(), autoload_with=engine)
    first_day = sa.and_(
        interactions.c.timestamp >= dt.datetime(2026, 11, 1),
        interactions.c.timestamp < dt.datetime(2026, 11, 2),
    )
    with engine.begin() as connection:
        victim = connection.execute(
            sa.select(interactions.c.interaction_id)
            .where(first_day)
            .order_by(interactions.c.interaction_id)
            .limit(1)
        ).scalar_one()
        connection.execute(sa.delete(interactions).where(interactions.c.interaction_id == victim))
    engine.dispose()
    synced = run_cli(["sync", "--changes-only"], home)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "reconciled 0 day(s): 1 deleted" in synced.stdout
    assert "departure(s) read" in synced.stdout
    silver = pl.read_delta(str(home / "lake" / "silver" / "llm_interactions"))
    assert victim not in silver["interaction_id"].to_list()
    deleted = pl.read_delta(str(home / "lake" / "silver" / "_deleted" / "llm_interactions"))
    assert victim in deleted["interaction_id"].to_list()
    report = run_cli(["report"], home)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Verdict: GO" in report.stdout


def test_a_sync_while_another_cycle_holds_the_table_is_refused_with_status_2(synced_demo):
    home, *_ = synced_demo
    control = ControlDatabase(url=f"sqlite:///{home / 'control.sqlite'}")
    with Leases(control, "a cycle in another terminal") as leases:
        leases.take([sync_resource("logs")])
        refused = run_cli(["sync", "--table", "logs"], home)
    control.engine.dispose()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "sync refused, nothing was changed" in refused.stderr
    assert "a cycle in another terminal" in refused.stderr
    assert "CycleInProgressError" not in refused.stderr
    assert "Traceback" not in refused.stderr
