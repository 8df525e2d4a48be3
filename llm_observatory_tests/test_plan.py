"""`llm-observatory plan`: the inventory from the catalog (PostgreSQL) or counts (SQLite), the
estimate's arithmetic and its bottleneck, and the command's table and JSON."""

import datetime as dt
import json

import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from llm_observatory.plan import (
    REFERENCE_EXTRACT_ROWS_PER_S,
    REFERENCE_LAKE_TO_SOURCE,
    REFERENCE_WORKER_ROWS_PER_S,
    build_plan,
    mssql_inventory_query,
)
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.tables import TABLES
from llm_observatory_tests.test_cli import run_cli

START = dt.date(2026, 11, 1)


def test_postgresql_inventory_comes_from_the_catalog_and_days_from_the_index(postgres_url):
    summary = generate_source(
        postgres_url, start_date=START, days=3, rows_per_day=120, seed=4, defects=DefectRates()
    )
    engine = sa.create_engine(postgres_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()
    source = SourceDatabase(url=postgres_url)
    plan = build_plan(source, TABLES, None, streams=2, bandwidth_mbps=50)
    source.dispose()
    by_table = {item.table: item for item in plan.inventory}
    interactions = by_table["llm_interactions"]
    assert interactions.rows_source == "catalog"
    assert interactions.rows == 360
    assert interactions.bytes > 360 * 1000
    expected_days = {
        day.isoformat(): rows for day, rows in summary.rows_by_day["llm_interactions"].items()
    }
    assert interactions.rows_per_day == expected_days
    assert (interactions.first_day, interactions.last_day, interactions.days) == (
        "2026-11-01",
        "2026-11-03",
        3,
    )
    for item in plan.inventory:
        assert sum(item.rows_per_day.values()) == item.rows
    # Nothing ran in an instance: the reference speeds, and the arithmetic from them.
    total = sum(item.rows for item in plan.inventory)
    assert plan.total_rows == total
    assert plan.speeds.extract_measured_runs == 0
    source_hours = total / (2 * REFERENCE_EXTRACT_ROWS_PER_S) / 3600
    assert abs(plan.hours["source (extraction streams)"] - source_hours) < 1e-12
    worker_hours = total / (2 * REFERENCE_WORKER_ROWS_PER_S) / 3600
    assert abs(plan.hours["workers (silver + gold)"] - worker_hours) < 1e-12
    lake_bytes = int(plan.total_source_bytes * REFERENCE_LAKE_TO_SOURCE)
    network_hours = lake_bytes / (50e6 / 8) / 3600
    assert abs(plan.hours["network (compressed Parquet to ADLS)"] - network_hours) < 1e-12
    assert plan.migration_hours == max(plan.hours.values())
    assert plan.hours[plan.bottleneck] == plan.migration_hours


def test_a_thin_network_is_the_bottleneck(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=START, days=2, rows_per_day=50, seed=4)
    source = SourceDatabase(url=url)
    plan = build_plan(source, TABLES, None, streams=4, bandwidth_mbps=0.001)
    assert plan.bottleneck == "network (compressed Parquet to ADLS)"
    fast = build_plan(source, TABLES, None, streams=4, bandwidth_mbps=100_000)
    assert fast.bottleneck == "workers (silver + gold)"
    source.dispose()
    interactions = next(item for item in plan.inventory if item.table == "llm_interactions")
    assert interactions.rows == 100 and interactions.rows_source == "count"


def test_the_sql_server_inventory_is_the_guides_partition_stats_query():
    text = str(mssql_inventory_query("llm_interactions").compile(dialect=mssql.dialect()))
    assert "sys.dm_db_partition_stats" in text
    assert "OBJECT_ID(" in text and "used_page_count" in text


def test_plan_command_prints_the_table_and_json_with_measured_speeds(tmp_path):
    demo = run_cli(["demo", "--days", "2", "--rows-per-day", "150"], tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    text = run_cli(["plan"], tmp_path)
    assert text.returncode == 0, text.stderr
    assert "| llm_interactions | 300 (count) |" in text.stdout
    assert "bottleneck" in text.stdout and "Daily incremental load" in text.stdout
    assert "measured: median of 6 bronze runs" in text.stdout  # 3 tables x 2 days
    machine = run_cli(["plan", "--json", "--streams", "8", "--bandwidth-mbps", "1000"], tmp_path)
    assert machine.returncode == 0, machine.stderr
    data = json.loads(machine.stdout)
    assert data["streams"] == 8 and data["bandwidth_mbps"] == 1000
    assert data["speeds"]["extract_measured_runs"] == 6
    assert data["bottleneck"] in data["hours"]
    assert {item["table"] for item in data["inventory"]} == {t.name for t in TABLES}
