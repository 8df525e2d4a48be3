"""A run whose blocking check fails leaves the day as it was before the run.

Bronze's row count against the source and silver's account of every bronze key are blocking:
downstream steps do not run on a day that failed them. The commit that failed the check has
already landed, though, and left in place it would be the day's content (half a day, a day with
keys twice) until someone re-runs it. So the asset puts the partitions it replaced back as they
were, in one commit each, before it reports the failure; the failed content stays readable in
the table's history for whoever investigates.
"""

from __future__ import annotations

import dagster as dg

from llm_observatory.io.delta_lake import PartitionSnapshot, restore_partition


def put_back_if_failed(
    check: dg.AssetCheckResult,
    previous: list[PartitionSnapshot],
    log,
    asset_key: dg.AssetKey,
) -> tuple[dg.AssetCheckResult, dict]:
    """The check result of `asset_key` (saying what was put back) and metadata for the
    materialization. The key is named because one step materializes several assets."""
    if check.passed:
        passed = dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=check.check_name,
            passed=True,
            severity=check.severity,
            description=check.description,
            metadata=check.metadata,
        )
        return passed, {}
    reason = f"blocking check {check.check_name} failed"
    restored = []
    for snapshot in previous:
        version = restore_partition(snapshot, reason)
        if version is not None:
            restored.append(f"{snapshot.location.uri} v{version}")
    note = (
        f"{reason}: the day's previous content was put back ({', '.join(restored)}); "
        "the failed copy stays in the table history"
    )
    log.error(note)
    result = dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check.check_name,
        passed=False,
        severity=check.severity,
        description=note,
        metadata={**check.metadata, "day_put_back": True},
    )
    return result, {"put_back": dg.MetadataValue.text(note)}
