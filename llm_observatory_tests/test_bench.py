"""`bench/run.py --quick` runs end to end on the session's PostgreSQL and writes its JSON.

Figures are only checked for being there and positive: speed and memory aims live in the
benchmark's own report (`make bench`), never in a timed test.
"""

import json
import subprocess
import sys

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
        if not line["path"].startswith("floor"):
            assert line["lake_to_source_bytes"] > 0

    assert result["floor"]["best"]["copy_bytes"] > 0
    assert result["bronze"]["best"]["lake_bytes_by_table"]["bronze"] > 0
    assert all(result["bronze"]["best"]["checks"].values())
    full = result["full"]["best"]
    assert all(full["lake_bytes_by_table"][t] > 0 for t in ("bronze", "silver", "gold"))
    assert all(full["checks"].values())
    assert {"bronze_ratio_to_floor", "bronze_peak_rss_mib"} <= result["aims"].keys()

    # The bench databases it created on the shared server are gone again.
    import psycopg

    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as connection:
        left = connection.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'bench\\_%'"
        ).fetchone()[0]
    assert left == 0
