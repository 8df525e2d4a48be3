"""`llm-observatory plan`: the inventory from the catalog (PostgreSQL) or counts (SQLite), the
estimate's arithmetic and its bottleneck, and the command's table and JSON."""

import datetime as dt
import json

import pytest
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
from llm_observatory.traffic import (
    BRONZE,
    DOWN,
    IN_AZURE,
    LAKE,
    ON_PREMISES,
    READ_BACK_READS,
    SOURCE,
    SPLIT,
    TERMS,
    UP,
)
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
    # The link's time is the fastest topology's: everything that crosses it, busier way.
    chosen = next(t for t in plan.topologies if t.name == plan.fastest_topology)
    [network] = [name for name in plan.hours if name.startswith("network")]
    assert network.startswith(f"network ({chosen.name}, ")
    assert plan.hours[network] == chosen.network_hours
    assert chosen.network_hours == max(chosen.up_bytes, chosen.down_bytes) / (50e6 / 8) / 3600
    assert plan.migration_hours == max(plan.hours.values())
    assert plan.hours[plan.bottleneck] == plan.migration_hours


def test_a_thin_network_is_the_bottleneck(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=START, days=2, rows_per_day=50, seed=4)
    source = SourceDatabase(url=url)
    plan = build_plan(source, TABLES, None, streams=4, bandwidth_mbps=0.001)
    assert plan.bottleneck.startswith("network (")
    fast = build_plan(source, TABLES, None, streams=4, bandwidth_mbps=100_000)
    assert fast.bottleneck == "workers (silver + gold)"
    source.dispose()
    interactions = next(item for item in plan.inventory if item.table == "llm_interactions")
    assert interactions.rows == 100 and interactions.rows_source == "count"


def test_each_topology_counts_the_lines_that_cross_its_link(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=START, days=3, rows_per_day=200, seed=4)
    source = SourceDatabase(url=url)
    plan = build_plan(source, TABLES, None, streams=4, bandwidth_mbps=10)
    source.dispose()
    assert plan.table_days == 9  # 3 tables x 3 days
    bronze = plan.total_source_bytes * REFERENCE_LAKE_TO_SOURCE
    assert plan.bronze_bytes_estimate == pytest.approx(bronze, abs=1)
    topologies = {topology.name: topology for topology in plan.topologies}
    assert list(topologies) == [ON_PREMISES, IN_AZURE, SPLIT]
    stage = {term.name: term.stage for term in TERMS}
    assert len(stage) == len(TERMS)  # every line has a name of its own
    far = {ON_PREMISES: {BRONZE, LAKE}, IN_AZURE: {SOURCE}, SPLIT: {BRONZE}}
    for name, topology in topologies.items():
        assert [line.name for line in topology.lines] == [term.name for term in TERMS]
        for line in topology.lines:
            assert line.crosses == (stage[line.name] in far[name])
        for direction, total in ((UP, topology.up_bytes), (DOWN, topology.down_bytes)):
            assert total == sum(
                line.bytes
                for line in topology.lines
                if line.crosses and line.direction == direction
            )
        link = max(topology.up_bytes, topology.down_bytes) / (10e6 / 8) / 3600
        assert topology.network_hours == pytest.approx(link)
        assert topology.hours == max(
            link, plan.hours["source (extraction streams)"], plan.hours["workers (silver + gold)"]
        )
    on_premises, in_azure, split = (topologies[name] for name in (ON_PREMISES, IN_AZURE, SPLIT))
    # In Azure, the rows cross once as the source holds them; nothing comes back.
    assert (in_azure.up_bytes, in_azure.down_bytes) == (plan.total_source_bytes, 0)
    lines = {line.name: line.bytes for line in on_premises.lines}
    assert lines["bronze upload"] == pytest.approx(bronze, abs=1)
    assert lines["read-back verification (bronze)"] == pytest.approx(
        READ_BACK_READS * bronze, abs=1
    )
    # One pass: silver and gold are written from the source stream, no layer is read back.
    assert "silver from bronze" not in lines and "gold from silver" not in lines
    # On-premises everything but reading the rows crosses; split sends bronze alone.
    assert on_premises.up_bytes > split.up_bytes >= lines["bronze upload"]
    assert on_premises.down_bytes > split.down_bytes > 0
    assert on_premises.down_bytes > on_premises.up_bytes
    assert (
        plan.fastest_topology == min(plan.topologies, key=lambda t: (t.hours, t.network_hours)).name
    )
    text = plan.to_text()
    assert f"Fastest: {plan.fastest_topology}" in text
    assert "  down" in text and "read-back verification (bronze)" in text
    assert f"| {plan.fastest_topology} (fastest) |" in text


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
    assert [topology["name"] for topology in data["topologies"]] == [ON_PREMISES, IN_AZURE, SPLIT]
    assert data["fastest_topology"] in {ON_PREMISES, IN_AZURE, SPLIT}
    assert all(
        {"up_bytes", "down_bytes", "network_hours", "hours", "lines"} <= set(topology)
        for topology in data["topologies"]
    )
    # This instance measured its bronze bytes per row, table by table.
    assert set(data["speeds"]["lake_bytes_per_row"]) == {t.name for t in TABLES}
    assert "| worker on-premises" in text.stdout and "Fastest: " in text.stdout


def test_files_touched_spreads_changes_over_a_days_files():
    from llm_observatory.plan import files_touched

    assert files_touched(0, 240) == 0
    assert files_touched(1, 240) == pytest.approx(1)
    assert files_touched(2, 240) == pytest.approx(2 - 1 / 240)
    assert files_touched(100_000, 240) == pytest.approx(240)
    assert files_touched(5, 1) == pytest.approx(1)


def test_the_daily_incremental_comes_from_the_change_rate(tmp_path):
    """Late updates to an old day cost the files that hold them, the newest day is written
    whole, and the source reads are the changed rows."""
    from llm_observatory.plan import (
        CHANGE_WINDOW_DAYS,
        REFERENCE_CYCLE_SECONDS,
        REFERENCE_SILVER_FILES_PER_DAY,
        files_touched,
    )

    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(url, start_date=START, days=10, rows_per_day=300, seed=4)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        newest = connection.execute(
            sa.text("SELECT max(last_modified) FROM llm_interactions")
        ).scalar_one()
        connection.execute(
            sa.text(
                "UPDATE llm_interactions SET last_modified = :newest WHERE interaction_id IN "
                "(SELECT interaction_id FROM llm_interactions WHERE date(timestamp) = "
                "'2026-11-01' ORDER BY interaction_id LIMIT 3)"
            ),
            {"newest": newest},
        )
    engine.dispose()
    source = SourceDatabase(url=url)
    plan = build_plan(source, TABLES, None, streams=4, bandwidth_mbps=100)
    source.dispose()
    interactions = next(item for item in plan.inventory if item.table == "llm_interactions")
    changed = interactions.changed_rows_by_day
    assert changed["2026-11-01"] == pytest.approx(3 / CHANGE_WINDOW_DAYS)
    assert "2026-11-02" not in changed  # older than the window, unchanged since
    estimate = plan.incremental
    assert estimate is not None
    assert plan.daily_incremental_hours == estimate.hours
    total_changed = sum(item.changed_rows_per_day for item in plan.inventory)
    assert estimate.changed_rows_per_day == pytest.approx(total_changed)
    assert estimate.read_hours == pytest.approx(
        total_changed / (4 * REFERENCE_EXTRACT_ROWS_PER_S) / 3600
    )
    assert estimate.cycle_hours == pytest.approx(REFERENCE_CYCLE_SECONDS * len(TABLES) / 3600)
    # The old day's three late updates rewrite about three of its 240 files, not the day.
    old_day_rows = interactions.rows_per_day["2026-11-01"]
    old_day_cost = (
        files_touched(3 / CHANGE_WINDOW_DAYS, REFERENCE_SILVER_FILES_PER_DAY)
        * old_day_rows
        / REFERENCE_SILVER_FILES_PER_DAY
    )
    assert old_day_cost < old_day_rows / 100
    assert estimate.late_changes_per_day >= 3 / CHANGE_WINDOW_DAYS
    assert "from the change rate" in plan.to_text()


def test_the_readme_states_the_daily_incremental_of_the_guides_migration():
    """12.5 billion rows, llm_interactions at 8.5 million a day, late updates to a share of the
    last 30 days' rows each day: the figures the README gives are the estimate's."""
    from pathlib import Path

    from llm_observatory.plan import TableChanges, _duration, incremental_estimate, measured_speeds

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    days = [f"2026-10-{day:02d}" for day in range(1, 31)]
    for share, rewritten_millions in ((0.001, 255), (0.00001, 82)):
        changed = {day: share * 8_500_000 for day in days[:-1]}
        changed[days[-1]] = 8_500_000
        estimate = incremental_estimate(
            [TableChanges("llm_interactions", changed, dict.fromkeys(days, 8_500_000), 240)],
            measured_speeds(None, ()),
            4,
        )
        assert round(estimate.rows_rewritten_per_day / 1e6) == rewritten_millions
        assert f"{rewritten_millions} million rows" in readme
        assert _duration(estimate.hours) in readme
        assert estimate.hours < 2
