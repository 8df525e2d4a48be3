"""`bench/run.py --quick` runs end to end on the session's PostgreSQL and writes its JSON.

Figures are only checked for being there and positive: speed and memory aims live in the
benchmark's own report (`make bench`), never in a timed test.
"""

import datetime as dt
import importlib.util
import json
import subprocess
import sys

from llm_observatory.synthetic.generator import generate_source
from llm_observatory_tests.services import REPO_ROOT

BENCH = REPO_ROOT / "bench" / "run.py"
QUICK_ROWS = 20_000


def test_quick_bench_writes_its_report(postgres_server, tmp_path):
    output = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--rows",
            str(QUICK_ROWS),
            "--pg-admin-url",
            postgres_server.admin_url,
            "--output",
            str(output),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "ratio to floor" in completed.stdout

    report = json.loads(output.read_text())
    assert {"machine", "aims", "results", "all_aims_met"} <= report.keys()
    (result,) = report["results"]
    assert result["rows"] == QUICK_ROWS
    assert result["source"]["pg_total_relation_size"] > 0
    assert result["source"]["generation_seconds"] > 0
    assert result["copy_bytes_per_row"] > 0

    paths = [line["path"] for line in result["lines"]]
    assert paths[0].startswith("floor") and paths[1].startswith("bronze")
    assert any(path.startswith("bronze+silver+gold") for path in paths)
    # The command a user runs for the day, every check included, timed as a whole.
    assert "backfill command: bronze+silver+gold+every check" in paths
    assert {"backfill_ratio_to_floor", "backfill_peak_rss_mib"} <= result["aims"].keys()
    # ... and where its time went: the one pass, the integrity checks, the rest.
    assert set(result["backfill"]["best"]["step_seconds"]) == {"one pass", "checks"}
    assert "backfill command's time: checks " in completed.stdout
    # The same bronze with the day's hours spread over 2 and 4 concurrent source queries.
    assert [path for path in paths if "parallel streams" in path] == [
        "bronze: 2 parallel streams (hourly slices)",
        "bronze: 4 parallel streams (hourly slices)",
    ]
    # dlt on the same rows, both backends, zstd Parquet like ours.
    assert {path for path in paths if path.startswith("dlt")} == {
        "dlt sql_table: connectorx arrow_stream",
        "dlt sql_table: pyarrow (default)",
    }
    for run in result["dlt"].values():
        assert run["compression"] == ["ZSTD"] and run["lake_bytes"] > 0
    assert {"bronze_vs_dlt_rows_per_s", "bronze_vs_dlt_peak_rss"} <= result["aims"].keys()
    # The 1 % change synced after the full load: every changed row merged, nothing left over.
    changes = result["sync"]["cycles"]["changes"]
    change = result["sync"]["source_change"]
    assert changes["upserted_rows"] == change["updated"] + change["inserted"]
    daily = result["sync"]["cycles"]["daily"]
    assert daily["deleted_keys"] == daily["moved_keys"] == daily["repaired_keys"] == 0
    for line in result["lines"]:
        assert line["rows"] == QUICK_ROWS
        for figure in (
            "seconds",
            "rows_per_second",
            "mb_per_second",
            "peak_rss_mib",
            "ratio_to_floor",
        ):
            assert line[figure] > 0, (line["path"], figure)
        if not line["path"].startswith(("floor", "reconcile")):
            assert line["lake_to_source_bytes"] > 0

    # The day through each read path of the source (SQL Server's ODBC one among them), beside
    # the floor, every row read by each.
    assert "source read paths" in completed.stdout
    read_paths = result["read_paths"]["paths"]
    assert set(read_paths) == {"floor", "adbc", "odbc", "sqlalchemy"}
    assert all(path["rows"] == QUICK_ROWS for path in read_paths.values())
    assert "odbc_share_of_adbc_rows_per_second" in result["aims"]

    assert result["floor"]["best"]["copy_bytes"] > 0
    assert result["bronze"]["best"]["lake_bytes_by_table"]["bronze"] > 0
    assert all(result["bronze"]["best"]["checks"].values())
    full = result["full"]["best"]
    assert all(full["lake_bytes_by_table"][t] > 0 for t in ("bronze", "silver", "gold"))
    assert all(full["checks"].values())
    assert {"bronze_ratio_to_floor", "bronze_peak_rss_mib"} <= result["aims"].keys()

    # Reconciliation of the same day against the full run's lake: it matches, with one
    # fingerprint query, and only a sliver of the table crosses the network.
    assert any(path.startswith("reconcile") for path in paths)
    assert "reconcile bytes from source" in completed.stdout
    reconciliation = result["reconcile"]
    assert reconciliation["matches"], reconciliation["best"]["differences"]
    assert result["aims"]["reconcile_matches"]["met"]
    assert "reconcile_seconds_vs_bronze" in result["aims"]
    run = reconciliation["best"]
    assert run["source_rows"] == run["lake_rows"] == QUICK_ROWS
    assert run["source_queries"] == 1
    assert reconciliation["share_of_bronze_seconds"] > 0
    assert reconciliation["source_on_loopback"]
    assert 0 < reconciliation["socket_bytes_from_source"] < reconciliation["pg_table_size"] / 100
    assert reconciliation["socket_bytes_to_source"] > 0
    # Loopback traffic is at least the worker's own payload (other work may add to it).
    assert reconciliation["loopback_bytes"] >= reconciliation["socket_bytes_from_source"]
    assert run["phases"] and all(phase["calls"] > 0 for phase in run["phases"].values())

    # The month of small days, at --quick's figures: every table's 0.1 % deletes, spread over
    # the days, found by the daily cycles through the departures, and the lake checked after.
    assert "month of small days (3 x 500 rows" in completed.stdout
    history = report["history"]
    assert (history["days"], history["rows_per_day"]) == (3, 500)
    full = history["full"]
    assert full["seconds"] > 0 and full["peak_rss_bytes"] > 0
    assert full["rows"] == sum(history["generated_rows"].values())
    assert not full["failed_checks"]
    # The full load is the backfill command: one line per day, each a whole run with checks.
    assert len(full["days"]) == 3 and all(day["status"] == "ok" for day in full["days"].values())
    assert set(full["step_seconds"]) == {"one pass", "checks"}
    deleted = history["deleted"]
    assert history["deleted_rows"] == sum(table["rows"] for table in deleted.values()) > 0
    sync = history["sync"]
    assert sync["seconds"] > 0 and sync["peak_rss_bytes"] > 0
    assert sync["deleted_keys"] == sync["departures_read"] == history["deleted_rows"]
    for name, cycle in sync["cycles"].items():
        assert cycle["deleted_keys"] == cycle["departures_read"] == deleted[name]["rows"]
        assert cycle["moved_keys"] == cycle["repaired_keys"] == 0
        assert cycle["departure_capture"] == "on"
        assert len(cycle["days_rewritten"]) == len(deleted[name]["by_day"])
        assert cycle["days_reconciled"]
    assert history["verification"]["matches"], history["verification"]["mismatches"]
    for name, figures in history["verification"]["tables"].items():
        assert figures["deleted_table_rows"] == deleted[name]["rows"]
        assert figures["deleted_keys_left"] == 0
        assert figures["silver_rows"] + figures["quarantine_rows"] == figures["source_rows"]
    assert history["aims"]["sync_leaves_the_lake_as_the_source"]["met"]

    # The bench databases it created on the shared server are gone again.
    import psycopg

    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as connection:
        left = connection.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'bench\\_%'"
        ).fetchone()[0]
    assert left == 0


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(seconds, **extra):
    return {
        "rows": 1000,
        "seconds": seconds,
        "peak_rss_bytes": 100 * 2**20,
        "cpu_cores_used": 1.0,
        **extra,
    }


def test_a_reconciliation_that_does_not_match_is_a_missed_aim_with_its_differences():
    bench = _bench_module()
    source = {
        "rows_in_day": 1000,
        "pg_table_size": 10**6,
        "pg_total_relation_size": 2 * 10**6,
        "avg_row_bytes_table": 1000,
        "table": "llm_interactions",
        "day": "2026-11-01",
    }
    floor = _run(0.5, copy_bytes=10**6)
    bronze = _run(2.0, lake_bytes=10**5, copy_seconds=1.5)
    full = _run(4.0, lake_bytes=2 * 10**5)
    reconcile = _run(
        1.5,
        path="reconcile",
        source_rows=1000,
        lake_rows=999,
        matches=False,
        source_queries=9,
        hours_compared=24,
        hours_differing=[3],
        difference_count=1,
        differences=["llm_interactions 2026-11-01 03h key abc: missing"],
        source_on_loopback=True,
        loopback_bytes=40_000,
        source_socket_bytes={"connections": 1, "received_bytes": 30_000, "sent_bytes": 9_000},
        phases={"lake: hash rows (Python MD5)": {"seconds": 1.0, "calls": 30}},
        phases_unaccounted_seconds=0.5,
    )
    result = bench.summarize(source, floor, [floor], [bronze], [full], [reconcile])

    assert result["aims"]["reconcile_matches"]["met"] is False
    assert "1 difference(s) in hour(s) [3]" in result["aims"]["reconcile_matches"]["shown"]
    assert result["aims"]["reconcile_seconds_vs_bronze"]["met"] is False  # 1.5 s > 0.5 x 2.0 s
    assert result["aims"]["full_peak_rss_mib"]["value"] == 100
    table = bench.format_table(result)
    assert "reconcile: fingerprints + bisection" in table
    assert "reconcile_matches" in table and "MISSED" in table
    assert "30.0 KB from source" in table and "40.0 KB on lo" in table


def test_a_month_whose_lake_does_not_match_after_the_sync_says_so():
    bench = _bench_module()
    full = _run(
        100.0,
        days={
            "2026-11-04": {
                "seconds": 3.0,
                "status": "ok",
                "rows": 1000,
                "peak_rss_bytes_sampled": 300 * 2**20,
            }
        },
        failed_checks=[],
        step_seconds={"one pass": 40.0, "checks": 30.0},
    )
    cycle = {
        "seconds": 5.0,
        "peak_rss_bytes_sampled": 200 * 2**20,
        "rows_extracted": 0,
        "departure_capture": "on",
        "departures_read": 2,
        "deleted_keys": 1,
        "moved_keys": 0,
        "repaired_keys": 0,
        "days_rewritten": ["2026-11-04"],
        "days_reconciled": ["2026-11-04", "2026-12-03", "2026-12-04"],
    }
    synced = {"seconds": 5.0, "peak_rss_bytes": 600 * 2**20, "cycles": {"llm_interactions": cycle}}
    deleted = {
        "llm_interactions": {
            "rows": 2,
            "by_day": {"2026-11-04": 2},
            "rows_left": 998,
            "keys": {"a", "b"},
        }
    }
    verification = {
        "matches": False,
        "tables": {},
        "mismatches": ["llm_interactions: 1 deleted key(s) still in silver"],
    }
    summary = type("Summary", (), {"rows": {"llm_interactions": 1000}})()
    # bench/month_history.py, importable once run.py has put bench/ on sys.path.
    month_history = importlib.import_module("month_history")
    first = month_history.history_first_day(30, today=bench.dt.date(2026, 12, 4))
    assert first == bench.dt.date(2026, 11, 4)
    history = month_history.history_summary(
        30,
        1000,
        first,
        bench.dt.date(2026, 12, 3),
        summary,
        1.0,
        full,
        deleted,
        synced,
        verification,
    )

    assert history["sync"]["share_of_full_seconds"] == 0.05
    assert "keys" not in history["deleted"]["llm_interactions"]
    assert history["aims"]["sync_leaves_the_lake_as_the_source"]["met"] is False
    assert history["aims"]["sync_peak_rss_mib"]["met"] is False  # 600 MiB
    lines = "\n".join(month_history.history_lines(history))
    assert "(2 rows deleted): 5.0 s (= 5.0 % of the full load)" in lines
    assert "MISMATCH after the sync: llm_interactions: 1 deleted key(s) still in silver" in lines
    assert "sync_peak_rss_mib 600 MiB (MISSED)" in lines
    assert "checks 30.0 s (30.00 s a day); one pass 40.0 s" in lines


def test_the_spot_check_s_source_cost_is_timed_beside_the_day_s_copy(postgres_url):
    bench = _bench_module()
    day = "2026-11-01"
    generate_source(
        postgres_url, start_date=dt.date.fromisoformat(day), days=1, rows_per_day=3000, seed=4
    )
    cost = bench.spot_check_cost(postgres_url, day, rows=200)
    assert cost["copied_rows"] == 3000
    assert 100 <= cost["sampled_rows"] <= 200
    assert cost["sample_seconds"] > 0 and cost["copy_seconds"] > 0
    [line] = bench.spot_check_lines(cost)
    assert line.startswith("spot check on the source: ") and "3,000 rows in" in line
