"""The plan's model of what crosses the link, held to what a real backfill and report moved.

Azurite runs with its request log (``start_azurite(request_log=True)``): every upload's
Content-Length and every download's response bytes are counted from it (azurite_traffic.py).
The run has the shape the model's factors were measured on (llm_observatory/traffic.py: one day
of 20,000 interactions, all three tables), and `plan` then models the same source with the
bronze bytes per row this instance's runs recorded. Tolerances: uploads within 10 %; downloads
at most 15 % over the model, and at least 15 % under the model without its verification lines
(read-back, checksum re-reads, the report's re-read), which checking at upload replaces.
"""

import datetime as dt
import json

import pytest

from llm_observatory.synthetic.generator import generate_source
from llm_observatory.traffic import IN_AZURE, ON_PREMISES, SPLIT
from llm_observatory_tests import services
from llm_observatory_tests.azurite_traffic import by_kind, requests, totals
from llm_observatory_tests.test_cli import run_cli

DAY = dt.date(2026, 11, 1)
ROWS_PER_DAY = 20_000


@pytest.fixture(scope="module")
def logged_azurite():
    """An Azurite of this module's own, writing its request log."""
    try:
        server = services.start_azurite(request_log=True)
    except services.ServiceUnavailable as error:
        if services.running_in_ci():
            pytest.fail(str(error), pytrace=False)
        pytest.skip(str(error))
    try:
        yield server
    finally:
        server.stop()


def test_the_plan_counts_the_bytes_a_backfill_and_the_report_moved(logged_azurite, tmp_path):
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    generate_source(source_url, start_date=DAY, days=1, rows_per_day=ROWS_PER_DAY, seed=4)
    container = logged_azurite.create_container("traffic")
    env = {
        **logged_azurite.env,
        "LLM_OBS_SOURCE_URL": source_url,
        "LLM_OBS_LAKE_URL": logged_azurite.abfs_url(container, "lake"),
        "LLM_OBS_EXECUTOR": "in_process",  # the traffic is the same; one process is quicker
    }
    home = tmp_path / "home"
    day = DAY.isoformat()
    backfill = run_cli(["backfill", "--start", day, "--end", day], home, **env)
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    report = run_cli(["report"], home, **env)
    assert "Verdict: GO" in report.stdout, report.stdout + report.stderr
    planned = run_cli(["plan", "--json", "--bandwidth-mbps", "100"], home, **env)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)

    moved = requests(logged_azurite.debug_log_path, container)
    up, down = totals(moved)
    stored = by_kind(moved, "up")
    topologies = {topology["name"]: topology for topology in plan["topologies"]}
    assert set(topologies) == {ON_PREMISES, IN_AZURE, SPLIT}
    on_premises = topologies[ON_PREMISES]
    lines = {line["name"]: line["bytes"] for line in on_premises["lines"] if line["crosses"]}
    verification = sum(
        line["bytes"] for line in on_premises["lines"] if line["crosses"] and line["verification"]
    )
    measured = (
        f"measured {up:,} B up ({dict(stored)}), {down:,} B down "
        f"({dict(by_kind(moved, 'down'))}); modelled {on_premises['up_bytes']:,} up, "
        f"{on_premises['down_bytes']:,} down ({verification:,} of it verification)"
    )
    # The layers' sizes: bronze from the bytes per row this run recorded, silver from its ratio.
    assert stored["bronze"] == pytest.approx(lines["bronze upload"], rel=0.05), measured
    silver = stored["silver"] + stored["quarantine"]
    assert silver == pytest.approx(lines["silver and quarantine upload"], rel=0.15), measured
    assert up == pytest.approx(on_premises["up_bytes"], rel=0.10), measured
    assert down <= 1.15 * on_premises["down_bytes"], measured
    assert down >= 0.85 * (on_premises["down_bytes"] - verification), measured
    # The model's busier direction is the one that was busier.
    assert (down > up) == (on_premises["down_bytes"] > on_premises["up_bytes"]), measured
    assert on_premises["network_hours"] == pytest.approx(
        on_premises["down_bytes"] / (100e6 / 8) / 3600
    )
    # In Azure only the rows cross, as the source holds them; split sends bronze and its log.
    assert topologies[IN_AZURE]["up_bytes"] == plan["total_source_bytes"]
    assert topologies[IN_AZURE]["down_bytes"] == 0
    assert topologies[SPLIT]["up_bytes"] < on_premises["up_bytes"]
    assert topologies[SPLIT]["up_bytes"] >= lines["bronze upload"]
    assert (
        plan["fastest_topology"]
        == min(plan["topologies"], key=lambda t: (t["hours"], t["network_hours"]))["name"]
    )
