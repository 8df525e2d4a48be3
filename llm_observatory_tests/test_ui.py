"""The UI as an operator sees it: the Dagster webserver on the demo's instance and lake, opened
in headless Chromium (Debian's package, driven by Playwright). Screenshots of every page checked
go to `test-artifacts/ui/` (or `$LLM_OBS_TEST_ARTIFACTS/ui`)."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from llm_observatory_tests.test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("LLM_OBS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STARTUP_SECONDS = 180
PAGE_TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if CHROMIUM is None:
        message = "no chromium on PATH (make test installs Debian's package as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("ui-home")
    demo = run_cli(["demo", "--days", "2", "--rows-per-day", "100"], home)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_OBS_", "DAGSTER_"))}
    env.update(
        LLM_OBS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        DAGSTER_DISABLE_TELEMETRY="true",
    )
    log = open(home / "webserver.log", "wb")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "the webserver did not come up:\n"
                        + (home / "webserver.log").read_text(errors="replace")[-3000:]
                    ) from None
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            # The first visit shows a community sign-up dialog over the page; dismissed once,
            # it stays dismissed for the session.
            page.goto(url)
            page.get_by_role("button", name="Skip").click(timeout=PAGE_TIMEOUT_MS)
            yield url, page
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def open_page(page, address: str) -> None:
    page.goto(address)
    page.wait_for_load_state("networkidle")


GROUPS = {
    "bronze": ("llm_interactions", "metadata", "logs"),
    "silver": ("llm_interactions", "metadata", "logs"),
    "gold": ("daily_metrics", "cutover_report"),
}


def test_the_asset_graph_shows_bronze_silver_and_gold_of_every_table(ui):
    url, page = ui
    open_page(page, f"{url}/asset-groups")
    page.get_by_text("Global asset lineage").first.wait_for()
    for group in GROUPS:
        node = page.locator("foreignObject.group").filter(
            has=page.locator(f'[data-tooltip="{group}"]')
        )
        node.first.wait_for()
    # Each group opened in turn shows its assets (the graph centres on the group opened).
    for group, assets in GROUPS.items():
        node = page.locator("foreignObject.group").filter(
            has=page.locator(f'[data-tooltip="{group}"]')
        )
        node.locator('[aria-label="unfold_more"]').first.click()
        for asset in assets:
            page.get_by_text(asset, exact=True).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / f"asset-graph-{group}.png"))

    open_page(page, f"{url}/assets")
    for layer, table in [
        *(
            (layer, table)
            for layer in ("bronze", "silver")
            for table in ("llm_interactions", "metadata", "logs")
        ),
        ("gold", "daily_metrics"),
        ("gold", "cutover_report"),
    ]:
        page.locator(f'a[href*="/assets/{layer}/{table}"]').first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "asset-catalog.png"), full_page=True)


def test_a_partitioned_asset_shows_its_check_results_per_partition(ui):
    url, page = ui
    open_page(page, f"{url}/assets/bronze/llm_interactions?view=checks")
    page.get_by_text("bronze_rows_match_source").first.wait_for()
    page.get_by_text("files_match_committed_sha256").first.wait_for()
    page.get_by_text("Succeeded").first.wait_for()
    # The latest evaluation names its partition and its figures against the source.
    page.get_by_text("source_rows").first.wait_for()
    body = page.inner_text("body")
    assert "Partition" in body and "2026-11-02" in body
    page.screenshot(path=str(ARTIFACTS / "bronze-checks.png"), full_page=True)
    # The check's own Partitions tab (the second "Partitions": the first is the asset's).
    page.get_by_text("Partitions", exact=True).nth(1).click()
    page.get_by_text("2026-11-01").first.wait_for()
    page.get_by_text("Passed (2)").first.wait_for()  # both demo days, each with its result
    page.screenshot(path=str(ARTIFACTS / "bronze-check-partitions.png"), full_page=True)


def test_the_cutover_report_renders_with_its_verdict(ui):
    url, page = ui
    open_page(page, f"{url}/assets/gold/cutover_report")
    page.get_by_text("Show Markdown").first.wait_for()
    page.get_by_text("Show Markdown").first.click()
    page.get_by_text("Verdict: GO").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "cutover-report.png"), full_page=True)
