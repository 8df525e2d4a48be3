"""One size's result: the lines of its table (rows/s, MB/s, peak RSS, ratio to the floor,
lake/source bytes) with the aims met or missed, and the table as printed.
"""

from __future__ import annotations

from children import profile_lines
from dlt_compare import AIM_VS_DLT_MEMORY, AIM_VS_DLT_SPEED
from floor_reads import read_path_lines, spot_check_lines
from lake_runs import AIM_BACKFILL_RATIO, BACKFILL_LINE, backfill_step_lines
from machine_load import other_load_line
from measuring import AIM_RSS_MIB, MB, MIB, best
from reconcile_cost import AIM_RECONCILE_SHARE, reconciliation_lines, reconciliation_summary
from sync_cost import sync_lines
from wire_cost import wire_lines

AIM_RATIO = 0.70


def summarize(
    source: dict,
    warmup: dict,
    floors: list,
    bronzes: list,
    fulls: list,
    reconciles: list | None = None,
    dlts: dict | None = None,
    streamed: dict | None = None,
    backfills: list | None = None,
) -> dict:
    floor = best(floors)
    floor_rate = floor["rows"] / floor["seconds"]
    copy_bytes_per_row = floor["copy_bytes"] / floor["rows"] if floor["rows"] else 0.0
    source_bytes = source["pg_table_size"]

    def line(path: str, run: dict, seconds: float, peak: int, lake_bytes: int | None) -> dict:
        rate = run["rows"] / seconds if seconds > 0 else 0.0
        return {
            "path": path,
            "rows": run["rows"],
            "seconds": seconds,
            "rows_per_second": rate,
            "mb_per_second": rate * copy_bytes_per_row / MB,
            "peak_rss_mib": peak / MIB,
            "ratio_to_floor": rate / floor_rate if floor_rate else 0.0,
            "lake_to_source_bytes": (
                lake_bytes / source_bytes if lake_bytes and source_bytes else None
            ),
            "cpu_cores_used": run.get("cpu_cores_used"),
            "server_cpu_cores_used": (run["server_cpu_seconds"] / run["seconds"])
            if run.get("server_cpu_seconds") is not None and run["seconds"] > 0
            else None,
        }

    bronze = best(bronzes)
    bronze_peak = max(run["peak_rss_bytes"] for run in bronzes)
    lines = [
        line(
            "floor: COPY binary (psycopg)",
            floor,
            floor["seconds"],
            max(run["peak_rss_bytes"] for run in floors),
            None,
        ),
        line(
            "bronze: dagster materialize",
            bronze,
            bronze["seconds"],
            bronze_peak,
            bronze["lake_bytes"],
        ),
    ]
    copy_best = min(bronzes, key=lambda run: run["copy_seconds"] or float("inf"))
    if copy_best["copy_seconds"]:
        lines.append(
            line(
                "bronze: copy loop only",
                copy_best,
                copy_best["copy_seconds"],
                bronze_peak,
                copy_best["lake_bytes"],
            )
        )
    if fulls:
        full = best(fulls)
        lines.append(
            line(
                "bronze+silver+gold",
                full,
                full["seconds"],
                max(run["peak_rss_bytes"] for run in fulls),
                full["lake_bytes"],
            )
        )
    if backfills:
        backfill = best(backfills)
        lines.append(
            line(
                BACKFILL_LINE,
                backfill,
                backfill["seconds"],
                max(run["peak_rss_bytes"] for run in backfills),
                backfill["lake_bytes"],
            )
        )
    for count, run in (streamed or {}).items():
        lines.append(
            line(
                f"bronze: {count} parallel streams (hourly slices)",
                run,
                run["seconds"],
                run["peak_rss_bytes"],
                run["lake_bytes"],
            )
        )
    for kind, run in (dlts or {}).items():
        label = {
            "dlt-connectorx": "dlt sql_table: connectorx arrow_stream",
            "dlt-pyarrow": "dlt sql_table: pyarrow (default)",
        }[kind]
        lines.append(line(label, run, run["seconds"], run["peak_rss_bytes"], run["lake_bytes"]))
    reconciles = reconciles or []
    if reconciles:
        reconciled = best(reconciles)
        lines.append(
            line(
                "reconcile: fingerprints + bisection",
                reconciled,
                reconciled["seconds"],
                max(run["peak_rss_bytes"] for run in reconciles),
                None,
            )
        )
    bronze_line = lines[1]
    aims = {
        "bronze_ratio_to_floor": {
            "aim": f">= {AIM_RATIO:.0%} of the floor",
            "value": bronze_line["ratio_to_floor"],
            "met": bronze_line["ratio_to_floor"] >= AIM_RATIO,
        },
        "bronze_peak_rss_mib": {
            "aim": f"< {AIM_RSS_MIB} MiB",
            "value": bronze_line["peak_rss_mib"],
            "met": bronze_line["peak_rss_mib"] < AIM_RSS_MIB,
        },
    }
    if len(lines) > 2 and lines[2]["path"].endswith("copy loop only"):
        aims["bronze_copy_loop_ratio_to_floor"] = {
            "aim": f">= {AIM_RATIO:.0%} of the floor (informative: no dagster run overhead)",
            "value": lines[2]["ratio_to_floor"],
            "met": lines[2]["ratio_to_floor"] >= AIM_RATIO,
        }
    if fulls:
        full_line = next(item for item in lines if item["path"] == "bronze+silver+gold")
        aims["full_peak_rss_mib"] = {
            "aim": f"< {AIM_RSS_MIB} MiB",
            "value": full_line["peak_rss_mib"],
            "met": full_line["peak_rss_mib"] < AIM_RSS_MIB,
        }
    if backfills:
        backfill_line = next(item for item in lines if item["path"] == BACKFILL_LINE)
        aims["backfill_ratio_to_floor"] = {
            "aim": f">= {AIM_BACKFILL_RATIO:.0%} of the floor (the command, every check included)",
            "value": backfill_line["ratio_to_floor"],
            "met": backfill_line["ratio_to_floor"] >= AIM_BACKFILL_RATIO,
        }
        aims["backfill_peak_rss_mib"] = {
            "aim": f"< {AIM_RSS_MIB} MiB for the whole process tree",
            "value": backfill_line["peak_rss_mib"],
            "met": backfill_line["peak_rss_mib"] < AIM_RSS_MIB,
        }
    dlt_lines = [item for item in lines if item["path"].startswith("dlt")]
    if dlt_lines:
        fastest = max(dlt_lines, key=lambda item: item["rows_per_second"])
        aims["bronze_vs_dlt_rows_per_s"] = {
            "aim": f">= {AIM_VS_DLT_SPEED}x the rows/s of dlt's best ({fastest['path']})",
            "value": bronze_line["rows_per_second"] / fastest["rows_per_second"],
            "shown": f"{bronze_line['rows_per_second'] / fastest['rows_per_second']:.2f}x",
            "met": bronze_line["rows_per_second"] >= AIM_VS_DLT_SPEED * fastest["rows_per_second"],
        }
        aims["bronze_vs_dlt_peak_rss"] = {
            "aim": f"<= {AIM_VS_DLT_MEMORY:.0%} of the peak RSS of dlt's best",
            "value": bronze_line["peak_rss_mib"] / fastest["peak_rss_mib"],
            "shown": f"{bronze_line['peak_rss_mib'] / fastest['peak_rss_mib']:.0%}",
            "met": bronze_line["peak_rss_mib"] <= AIM_VS_DLT_MEMORY * fastest["peak_rss_mib"],
        }
    reconciliation = None
    if reconciles:
        reconciliation = reconciliation_summary(reconciles, bronze, copy_best, floor, source)
        aims["reconcile_seconds_vs_bronze"] = {
            "aim": f"reconcile seconds <= {AIM_RECONCILE_SHARE} x bronze extraction seconds",
            "value": reconciliation["share_of_bronze_seconds"],
            "met": reconciliation["share_of_bronze_seconds"] <= AIM_RECONCILE_SHARE,
            "shown": (
                f"{reconciliation['seconds']:,.2f} s vs {bronze['seconds']:,.2f} s = "
                f"{reconciliation['share_of_bronze_seconds']:.2f} x"
            ),
        }
        worst = [run for run in reconciles if not run["matches"]]
        shown = worst[0] if worst else reconciles[0]
        aims["reconcile_matches"] = {
            "aim": "every hour's fingerprint equals the source's, in every round",
            "value": not worst,
            "met": not worst,
            "shown": (
                f"{shown['source_rows']:,} source rows = {shown['lake_rows']:,} lake rows, "
                f"{shown['hours_compared']} hours equal"
                if not worst
                else f"{shown['difference_count']:,} difference(s) in hour(s) "
                f"{shown['hours_differing']}"
            ),
        }
    return {
        "rows": source["rows_in_day"],
        "source": source,
        "copy_bytes_per_row": copy_bytes_per_row,
        "lines": lines,
        "aims": aims,
        "floor": {"runs": floors, "best": floor, "warmup": warmup},
        "bronze": {"runs": bronzes, "best": bronze},
        "full": {"runs": fulls, "best": best(fulls) if fulls else None},
        "backfill": {"runs": backfills, "best": best(backfills)} if backfills else None,
        "dlt": dlts or None,
        "streams": streamed or None,
        "reconcile": {"runs": reconciles, "best": best(reconciles), **reconciliation}
        if reconciles
        else None,
    }


def format_table(result: dict) -> str:
    headers = [
        "path",
        "rows",
        "seconds",
        "rows/s",
        "MB/s",
        "peak RSS MiB",
        "ratio to floor",
        "lake/source bytes",
    ]
    body = []
    for item in result["lines"]:
        body.append(
            [
                item["path"],
                f"{item['rows']:,}",
                f"{item['seconds']:,.2f}",
                f"{item['rows_per_second']:,.0f}",
                f"{item['mb_per_second']:,.1f}",
                f"{item['peak_rss_mib']:,.0f}",
                f"{item['ratio_to_floor']:.0%}",
                "-"
                if item["lake_to_source_bytes"] is None
                else f"{item['lake_to_source_bytes']:.2f}",
            ]
        )
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]

    def render(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    source = result["source"]
    lines = [
        f"{result['rows']:,} rows of {source['table']} in one day ({source['day']}); table "
        f"{source['pg_table_size'] / MIB:,.0f} MiB without indexes, "
        f"{source['pg_total_relation_size'] / MIB:,.0f} MiB with "
        f"({source['avg_row_bytes_table']:,.0f} B/row on disk, "
        f"{result['copy_bytes_per_row']:,.0f} B/row in binary COPY)"
        + (
            f"; generated in {source['generation_seconds']:,.1f} s"
            if source.get("generation_seconds")
            else ""
        ),
        render(headers),
        rule,
        *(render(row) for row in body),
        "MB/s: source data (binary COPY bytes) per second; lake/source: committed Parquet bytes "
        "/ pg_table_size; best of the rounds; peak RSS is the worst round's.",
    ]
    cores = [
        f"{item['path']}: client {item['cpu_cores_used']:.2f}"
        + (f", server {item['server_cpu_cores_used']:.2f}" if item["server_cpu_cores_used"] else "")
        for item in result["lines"]
        if item.get("cpu_cores_used") is not None
    ]
    lines.append("CPU cores busy: " + "; ".join(cores))
    if result.get("other_load"):
        lines.append(other_load_line(result["other_load"]) + " (before this size)")
    for name, aim in result["aims"].items():
        value = aim["value"]
        shown = aim.get("shown") or (f"{value:.0%}" if "ratio" in name else f"{value:,.0f} MiB")
        lines.append(f"aim {name}: {aim['aim']}: {shown} -> {'met' if aim['met'] else 'MISSED'}")
    if result.get("backfill"):
        lines.extend(backfill_step_lines(result["backfill"]["best"]))
    if result.get("reconcile"):
        lines.extend(reconciliation_lines(result["reconcile"]))
    if result.get("read_paths"):
        lines.extend(read_path_lines(result["read_paths"]))
    if result.get("spot_check"):
        lines.extend(spot_check_lines(result["spot_check"]))
    if result.get("sync"):
        lines.extend(sync_lines(result["sync"]))
    if result.get("wire"):
        lines.extend(wire_lines(result["wire"]))
    for label, summary in result.get("profiles", {}).items():
        lines.extend(profile_lines(label, summary))
    return "\n".join(lines)
