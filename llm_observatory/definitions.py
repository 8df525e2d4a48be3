"""The code location: assembles assets, checks, jobs and resources; does no I/O."""

from __future__ import annotations

import dagster as dg

from llm_observatory import settings
from llm_observatory.assets.migration import migration_assets
from llm_observatory.assets.monitoring import monitoring_assets
from llm_observatory.assets.report import report_assets
from llm_observatory.assets.sync import sync_assets
from llm_observatory.automation import (
    daily_cycle,
    daily_sync_schedule,
    source_changes_sensor,
    sync_lake,
)
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.executors import selected_executor
from llm_observatory.io.lake_io_manager import LAKE_IO_MANAGER_KEY, LakeIOManager
from llm_observatory.operate.jobs import (
    compact_lake,
    daily_query_monitoring_schedule,
    daily_tiering_schedule,
    monitor_queries,
    pause_migration,
    purge_source_departures,
    resume_migration,
    rollback_lake,
    source_health_schedule,
    tier_old_partitions_job,
    watch_source_health,
    weekly_compaction_schedule,
    weekly_departure_purge_schedule,
)
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase

MIGRATE_HISTORY_JOB = "migrate_history"
CUTOVER_REPORT_JOB = "cutover_report_job"

migrate_history = dg.define_asset_job(
    MIGRATE_HISTORY_JOB,
    selection=dg.AssetSelection.groups("bronze", "silver")
    | dg.AssetSelection.assets(["gold", "daily_metrics"]),
    description="One UTC day of every table: bronze copy, silver validation, gold metrics, checks.",
)
cutover_report_job = dg.define_asset_job(
    CUTOVER_REPORT_JOB,
    selection=dg.AssetSelection.assets(["gold", "cutover_report"]),
    description="Recounts every day against the source and writes the GO/NO-GO cutover report.",
)


def build_resources() -> dict:
    lake = LakeResource(
        url=settings.lake_url(),
        retention_days=settings.lake_retention_days(),
        azure_storage_connection_string=settings.azure_connection_string(),
        azure_storage_account_name=settings.azure_account_name(),
        azure_storage_account_key=settings.azure_account_key(),
        azure_storage_sas_token=settings.azure_sas_token(),
    )
    return {
        "source": SourceDatabase(
            url=settings.source_url(),
            isolation_level=settings.source_isolation_level(),
            reader=settings.source_reader(),
            streams=settings.source_streams(),
        ),
        "lake": lake,
        # Analysts' own assets in this code location read and write the lake through it.
        LAKE_IO_MANAGER_KEY: LakeIOManager(lake=lake),
        "control": ControlDatabase(
            url=settings.control_url(), lease_seconds=settings.lease_seconds()
        ),
    }


defs = dg.Definitions(
    assets=[
        *migration_assets,
        *report_assets,
        *sync_assets,
        *monitoring_assets,
    ],
    asset_checks=integrity_checks,
    jobs=[
        migrate_history,
        cutover_report_job,
        sync_lake,
        daily_cycle,
        compact_lake,
        tier_old_partitions_job,
        monitor_queries,
        pause_migration,
        resume_migration,
        rollback_lake,
        purge_source_departures,
        watch_source_health,
    ],
    schedules=[
        daily_sync_schedule,
        weekly_compaction_schedule,
        daily_tiering_schedule,
        daily_query_monitoring_schedule,
        weekly_departure_purge_schedule,
        source_health_schedule,
    ],
    sensors=[source_changes_sensor],
    executor=selected_executor(),
    resources=build_resources(),
)
