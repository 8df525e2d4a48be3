"""`sync/<table>`: one incremental cycle per materialization, so the UI shows every cycle.

Each materialization is a cycle of `incremental/cycle.py`; its metadata (the watermark, rows
extracted and validated, days rewritten, deletes found, lag behind the source) is plotted by
the UI over time. A failed cycle fails the run, leaves the watermark where it was and the lake
as it was.
"""

import datetime as dt
from collections import Counter

import dagster as dg

from llm_observatory import settings
from llm_observatory.incremental.cycle import SyncSettings, run_cycle
from llm_observatory.io.delta_lake import count_rows_by_partition, open_table
from llm_observatory.layout import (
    DAILY_METRICS_KEY,
    DATE_FIELD,
    bronze_location,
    quarantine_location,
    silver_key,
    silver_location,
)
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.resources.source_load import SOURCE_POOL
from llm_observatory.tables import TABLES, TableSpec
from llm_observatory.transform.dedup import LatestVersions

SYNC_GROUP = "sync"
SYNC_LAYERS_CHECK = "rewritten_days_match_bronze"


class SyncConfig(dg.Config):
    """Per-run settings of a cycle (the defaults are the daily cycle's)."""

    overlap_minutes: float = 10.0
    reconcile_recent_days: int = 2
    # None: LLM_OBS_ROTATION_DAYS (30 by default), the period the cutover report holds the
    # rotation to.
    rotation_period_days: int | None = None

    def settings(self) -> SyncSettings:
        rotation = self.rotation_period_days
        return SyncSettings(
            overlap=dt.timedelta(minutes=self.overlap_minutes),
            reconcile_recent_days=self.reconcile_recent_days,
            rotation_period_days=settings.rotation_days() if rotation is None else rotation,
        )


def sync_key(table: TableSpec) -> dg.AssetKey:
    return dg.AssetKey(["sync", table.name])


def sync_op_name(table: TableSpec) -> str:
    return f"sync__{table.name}"


def rewritten_days_match_bronze(
    table: TableSpec, lake: LakeResource, days: list[str]
) -> dg.AssetCheckResult:
    """Silver + quarantine == distinct bronze keys on every day the cycle rewrote, from the
    committed files (bronze gained versions, lost deleted or moved keys; silver must follow).

    Each layer's log is read once for all the days (a month of days opened each table per day:
    three quarters of a 30-day sync's time went to reading the same logs again)."""
    mismatches = {}
    bronze = open_table(bronze_location(lake, table))
    held = Counter()
    for location in (silver_location(lake, table), quarantine_location(lake, table)):
        held.update(count_rows_by_partition(location, DATE_FIELD.name, days))
    for text in days:
        day = dt.date.fromisoformat(text)
        _, _, bronze_keys = LatestVersions.scan(table, lake, day, bronze)
        if held[text] != bronze_keys:
            mismatches[text] = {
                "bronze_distinct_keys": bronze_keys,
                "silver_plus_quarantine": held[text],
            }
    return dg.AssetCheckResult(
        check_name=SYNC_LAYERS_CHECK,
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "days_checked": len(days),
            "mismatches": dg.MetadataValue.json(mismatches),
        },
    )


def sync_asset(table: TableSpec) -> dg.AssetsDefinition:
    deps = [silver_key(table)]
    if table.feeds_daily_metrics:
        deps.append(DAILY_METRICS_KEY)

    @dg.asset(
        key=sync_key(table),
        deps=deps,
        group_name=SYNC_GROUP,
        kinds={"delta"},
        pool=SOURCE_POOL,
        check_specs=[
            dg.AssetCheckSpec(
                SYNC_LAYERS_CHECK,
                asset=sync_key(table),
                description=(
                    "Re-counted after the cycle: every day it rewrote holds, in silver plus "
                    "quarantine, one row per distinct bronze key."
                ),
            )
        ],
        description=(
            f"Incremental cycles of `{table.name}`: rows changed since the watermark merged into "
            "bronze, silver and gold; deletes and moved rows (recorded by the source's departure "
            "capture, or found by reconciliation) removed from their old day. Metadata: the "
            "watermark, the lake's lag behind the source, whether departures are captured."
        ),
    )
    def _sync(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        source: SourceDatabase,
        lake: LakeResource,
        control: ControlDatabase,
    ):
        result = run_cycle(
            table,
            source,
            lake,
            control,
            config.settings(),
            run_id=context.run_id,
            log=context.log,
        )
        context.log.info(result.describe())
        metadata = result.to_metadata()
        if result.watermark is not None:
            metadata["watermark"] = dg.MetadataValue.timestamp(result.watermark)
            metadata["watermark_epoch_s"] = result.watermark.timestamp()
        metadata["days_rewritten"] = dg.MetadataValue.json(result.days_changed)
        metadata["days_reconciled"] = dg.MetadataValue.json(result.days_reconciled)
        metadata["abandoned_cycles_undone"] = dg.MetadataValue.json(result.abandoned_cycles_undone)
        metadata["dagster/row_count"] = result.rows_extracted
        yield dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None})
        yield rewritten_days_match_bronze(table, lake, result.days_changed)

    return _sync


sync_assets = [sync_asset(table) for table in TABLES]
