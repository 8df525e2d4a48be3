"""Bytes on the wire (issue 15): the day's backfill, a sync and the report with the lake on
Azurite behind a counting proxy (`wire_bytes.py`), per byte the lake stores, and their aims.
"""

from __future__ import annotations

import os
from pathlib import Path

from measuring import REPO_ROOT, say

# Issue 15: bytes read back from ADLS per byte the lake stores.
AIM_BACKFILL_DOWN_PER_STORED = 0.05
AIM_REPORT_DOWN_PER_STORED = 0.01


def measure_wire(url: str, day: str, workdir: Path) -> dict:
    """The day's backfill (every table, every check), a changes-only sync, then the cutover
    report, with the lake on Azurite behind a counting proxy and each run as users run it: the
    bytes sent up and read back, per byte of the lake's current data files. A worker beside
    SQL Server pays both directions on its link to ADLS; on a local lake there is no wire."""
    # Imported here: wire_bytes loads the Azure SDK, deltalake and the project when imported,
    # which the workers (they import this module too) have no use for.
    import wire_bytes as wire

    work = workdir / "wire"
    work.mkdir(exist_ok=True)
    root = "lake"
    say("bytes on the wire: the day's backfill, a sync and the report, lake on Azurite")
    with wire.running_azurite(work) as (port, log_path), wire.CountingProxy(port) as proxy:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LLM_OBS_", "DAGSTER_", "AZURE_"))
        }
        env.update(
            LLM_OBS_HOME=str(work / "home"),
            LLM_OBS_SOURCE_URL=url,
            LLM_OBS_LAKE_URL=wire.lake_url(root),
            LLM_OBS_START_DATE=day,
            AZURE_STORAGE_CONNECTION_STRING=wire.connection_string(proxy.port),
            DAGSTER_DISABLE_TELEMETRY="true",
        )
        figures: dict = {}
        for name, arguments in (
            ("backfill", ["backfill", "--start", day, "--end", day]),
            ("sync", ["sync", "--changes-only"]),
            ("report", ["report"]),
        ):
            figures[name] = wire.run_measured(arguments, env, REPO_ROOT, proxy, log_path)
            if name == "backfill":
                figures["stored_after_backfill"] = wire.stored_bytes(
                    wire.storage_options(port), root
                )
                wire.per_byte_stored(figures[name], figures["stored_after_backfill"])
        figures["stored_bytes"] = wire.stored_bytes(wire.storage_options(port), root)
        for name in ("sync", "report"):
            wire.per_byte_stored(figures[name], figures["stored_bytes"])
        figures["report"]["checks"] = wire.report_checks(wire.connection_string(port), root)
    return figures


def wire_lines(wire: dict) -> list[str]:
    lines = [
        f"bytes on the wire, lake on Azurite (through a counting proxy; the lake stores "
        f"{wire['stored_bytes'] / 1e6:,.1f} MB of current data files):"
    ]
    for name in ("backfill", "sync", "report"):
        figures = wire[name]
        down = figures["downloaded"]
        lines.append(
            f"  {name}: {figures['seconds']:,.1f} s (exit {figures['exit']}), up "
            f"{figures['uploaded_bytes'] / 1e6:,.1f} MB ({figures['all_up_per_byte_stored']:.2f}"
            f" per byte stored), down {figures['downloaded_bytes'] / 1e6:,.1f} MB "
            f"({figures['all_down_per_byte_stored']:.2f}; GETs of data files "
            f"{down['data_files'] / 1e6:,.1f} MB, Delta log {down['delta_log'] / 1e6:,.1f} MB, "
            f"evidence {down['evidence'] / 1e6:,.1f} MB, {down['requests']:,} requests)"
        )
        if figures.get("stderr"):
            lines.append(f"    failed: {figures['stderr'][-300:]}")
    checks = wire["report"].get("checks") or {}
    if checks:
        lines.append(
            f"  the report verified {checks.get('files_verified')} files: "
            f"{checks.get('files_by_metadata')} by the service's MD5, "
            f"{checks.get('files_reread')} re-read ({(checks.get('bytes_reread') or 0) / 1e6:,.1f}"
            f" MB, its seeded sample); mode {checks.get('checksum_mode')}"
        )
    return lines


def wire_aims(wire: dict) -> dict:
    stored = wire["stored_bytes"] or 1
    sample = (wire["report"].get("checks") or {}).get("bytes_reread") or 0
    report_aim = AIM_REPORT_DOWN_PER_STORED + sample / stored
    backfill = wire["backfill"]["all_down_per_byte_stored"]
    report = wire["report"]["all_down_per_byte_stored"]
    return {
        "wire_backfill_down_per_byte_stored": {
            "aim": f"the backfill reads back <= {AIM_BACKFILL_DOWN_PER_STORED:.0%} of the bytes "
            "it stores (data files, Delta log and evidence, headers included)",
            "value": backfill,
            "shown": f"{backfill:.1%}",
            "met": backfill <= AIM_BACKFILL_DOWN_PER_STORED,
        },
        "wire_report_down_per_byte_stored": {
            "aim": f"the report reads back <= {AIM_REPORT_DOWN_PER_STORED:.0%} of the lake plus "
            "its seeded sample",
            "value": report,
            "shown": f"{report:.1%} (aim {report_aim:.1%})",
            "met": report <= report_aim,
        },
    }
