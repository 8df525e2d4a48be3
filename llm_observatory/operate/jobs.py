"""Lake upkeep as Dagster jobs, launched from the UI, the CLI or a schedule.

`compact_lake` merges small files and vacuums (see `compaction.py`); each run reports, per lake
table, files and bytes before and after, as op output metadata and as an observation on the
table's asset, so the asset page shows the file count over time. `tier_old_partitions` moves
old partitions' files to the Cool tier (see `lifecycle.py`), reporting bytes per tier.
`purge_source_departures` deletes the source's departure records every cycle has read (see
`departures.py`).
"""

import datetime as dt

import dagster as dg

from llm_observatory import settings
from llm_observatory.assets.monitoring import QUERY_LATENCY_KEY, SOURCE_HEALTH_KEY
from llm_observatory.io.delta_lake import TARGET_FILE_BYTES
from llm_observatory.layout import asset_key_of, select_tables
from llm_observatory.operate.automation_state import LOCATION_NAME, set_automation
from llm_observatory.operate.compaction import compact_tables
from llm_observatory.operate.departures import purge_departures
from llm_observatory.operate.lifecycle import DEFAULT_COOL_AFTER_DAYS, tier_old_partitions
from llm_observatory.operate.rollback import (
    apply_rollback,
    parse_target,
    plan_rollback,
    refuse_while_runs_in_progress,
)
from llm_observatory.partitions import days_between
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.resources.source_load import SOURCE_POOL

COMPACTION_JOB = "compact_lake"
COMPACTION_SCHEDULE = "weekly_compaction_sunday_0300_utc"
COMPACTION_RECENT_DAYS = 8


class CompactionConfig(dg.Config):
    """Days `start`..`end` (UTC, inclusive); default: the last 8 days, where syncs append."""

    start: str | None = None
    end: str | None = None
    tables: list[str] = []
    target_file_mb: int = TARGET_FILE_BYTES // (1024 * 1024)
    cluster: bool = True
    vacuum: bool = True


def _days(config: CompactionConfig) -> list[dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    last = dt.date.fromisoformat(config.end) if config.end else today
    first = (
        dt.date.fromisoformat(config.start)
        if config.start
        else last - dt.timedelta(days=COMPACTION_RECENT_DAYS - 1)
    )
    return days_between(first, last)


@dg.op(
    name="compact_lake_tables",
    description="Merges small files into target-size files per day, then vacuums.",
)
def compact_lake_tables(
    context: dg.OpExecutionContext, config: CompactionConfig, lake: LakeResource
):
    tables = select_tables(lake, config.tables or None)
    days = _days(config)
    context.log.info(
        f"compacting {len(tables)} table(s) over {days[0]}..{days[-1]} ({len(days)} day(s))"
    )
    results = compact_tables(
        tables,
        days,
        retention_days=settings.lake_retention_days(),
        target_file_bytes=config.target_file_mb * 1024 * 1024,
        cluster=config.cluster,
        run_vacuum=config.vacuum,
    )
    summary = {}
    for result in results:
        context.log.info(result.describe())
        summary[result.table] = result.metadata()
        key = asset_key_of(result.table)
        if key is not None and (result.days_compacted or result.vacuumed_files):
            context.log_event(
                dg.AssetObservation(
                    asset_key=key, metadata={"compaction": result.metadata(), **result.metadata()}
                )
            )
    return dg.Output(
        None,
        metadata={
            "days": f"{days[0]}..{days[-1]}",
            "files_before": sum(r.files_before for r in results),
            "files_after": sum(r.files_after for r in results),
            "bytes_before": sum(r.bytes_before for r in results),
            "bytes_after": sum(r.bytes_after for r in results),
            "vacuumed_files": sum(r.vacuumed_files for r in results),
            "tables": dg.MetadataValue.json(summary),
        },
    )


@dg.job(
    name=COMPACTION_JOB,
    description="Compacts small files of the lake's tables over a day range and vacuums.",
)
def compact_lake():
    compact_lake_tables()


@dg.schedule(
    name=COMPACTION_SCHEDULE,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    job=compact_lake,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Sundays 03:00 UTC: the last 8 days compacted, then vacuum past the retention.",
)
def weekly_compaction_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"compaction-{context.scheduled_execution_time:%Y-%m-%d}")


TIERING_JOB = "tier_old_partitions"
TIERING_SCHEDULE = "daily_tiering_0400_utc"


class TieringConfig(dg.Config):
    """Data files of partitions older than `older_than_days` move to `tier` (Cool)."""

    older_than_days: int = DEFAULT_COOL_AFTER_DAYS
    tier: str = "Cool"
    tables: list[str] = []
    dry_run: bool = False


@dg.op(
    name="tier_old_partition_files",
    description="Sets data files of partitions older than the threshold to the Cool tier.",
)
def tier_old_partition_files(
    context: dg.OpExecutionContext, config: TieringConfig, lake: LakeResource
):
    tables = select_tables(lake, config.tables or None)
    result = tier_old_partitions(
        lake,
        tables,
        older_than_days=config.older_than_days,
        tier=config.tier,
        dry_run=config.dry_run,
    )
    if not lake.is_azure:
        context.log.info("the lake is a local folder: storage tiers do not apply")
    context.log.info(
        f"{result.files_moved} file(s), {result.bytes_moved:,} bytes -> {result.tier} "
        f"(partitions before {result.cutoff}); {result.files_already} already there"
    )
    metadata = result.metadata()
    return dg.Output(
        None,
        metadata={
            **{k: v for k, v in metadata.items() if not isinstance(v, dict)},
            **{k: dg.MetadataValue.json(v) for k, v in metadata.items() if isinstance(v, dict)},
        },
    )


@dg.job(
    name=TIERING_JOB,
    description="Moves data files of partitions older than 730 days to the Cool tier.",
)
def tier_old_partitions_job():
    tier_old_partition_files()


@dg.schedule(
    name=TIERING_SCHEDULE,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    job=tier_old_partitions_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="04:00 UTC: partitions that crossed the age threshold move to the Cool tier.",
)
def daily_tiering_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"tiering-{context.scheduled_execution_time:%Y-%m-%d}")


PAUSE_JOB = "pause_migration"
RESUME_JOB = "resume_migration"


class PauseConfig(dg.Config):
    cancel_runs: bool = False


def _switch(context: dg.OpExecutionContext, running: bool, cancel_runs: bool, lake, control):
    origin = context.dagster_run.remote_job_origin
    location = (
        origin.repository_origin.code_location_origin.location_name
        if origin is not None
        else LOCATION_NAME
    )
    report = set_automation(
        context.instance,
        running,
        lake,
        control,
        cancel_runs=cancel_runs,
        location_name=location,
        own_run_id=context.run_id,
    )
    for line in report.lines():
        context.log.info(line)
    return dg.Output(
        None,
        metadata={
            "switched": dg.MetadataValue.json(
                {f"{c.kind}:{c.name}": f"{c.before} -> {c.after}" for c in report.changes}
            ),
            "runs_in_progress": dg.MetadataValue.json(report.runs_in_progress),
            "runs_cancelled": dg.MetadataValue.json(report.runs_cancelled),
            "state": dg.MetadataValue.md("\n".join(report.lines())),
        },
    )


@dg.op(name="pause_automation", description="Every schedule and sensor of the migration off.")
def pause_automation(
    context: dg.OpExecutionContext,
    config: PauseConfig,
    lake: LakeResource,
    control: ControlDatabase,
):
    return _switch(context, False, config.cancel_runs, lake, control)


@dg.op(name="resume_automation", description="Every schedule and sensor of the migration on.")
def resume_automation(context: dg.OpExecutionContext, lake: LakeResource, control: ControlDatabase):
    return _switch(context, True, False, lake, control)


@dg.job(
    name=PAUSE_JOB,
    description="Pre-cutover rollback from the UI: all schedules and sensors off at once "
    "(what `llm-observatory pause` does); the source and the lake are untouched.",
)
def pause_migration():
    pause_automation()


@dg.job(name=RESUME_JOB, description="All schedules and sensors of the migration back on.")
def resume_migration():
    resume_automation()


MONITORING_JOB = "monitor_queries"
MONITORING_SCHEDULE = "daily_query_monitoring_0600_utc"

monitor_queries = dg.define_asset_job(
    MONITORING_JOB,
    # The query timings only: the monitoring group also holds the source's health, which
    # queries the source even when `monitor --lake-only` says not to.
    selection=dg.AssetSelection.assets(QUERY_LATENCY_KEY),
    description="Times the typical analyst queries on the lake and the source (p50/p95).",
)


@dg.schedule(
    name=MONITORING_SCHEDULE,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    job=monitor_queries,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="06:00 UTC: query latencies recorded, so the asset page plots the trend.",
)
def daily_query_monitoring_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"monitoring-{context.scheduled_execution_time:%Y-%m-%d}")


SOURCE_HEALTH_JOB = "watch_source_health"
SOURCE_HEALTH_SCHEDULE = "source_health_every_10_minutes"

watch_source_health = dg.define_asset_job(
    SOURCE_HEALTH_JOB,
    selection=dg.AssetSelection.assets(SOURCE_HEALTH_KEY),
    description="Records the source's latency probe and the migration login's sessions.",
)


@dg.schedule(
    name=SOURCE_HEALTH_SCHEDULE,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    job=watch_source_health,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every 10 minutes: the source's health over a backfill, plotted on its asset "
    "page (the copies hold themselves back on the probe whether this runs or not).",
)
def source_health_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"source-health-{context.scheduled_execution_time:%Y%m%dT%H%M}")


ROLLBACK_JOB = "rollback_lake"


class RollbackConfig(dg.Config):
    """`to`: ISO 8601 UTC time or, with one lake table in `tables`, a Delta version. Dry run by
    default: launch once to see the plan in the run's log, again with `dry_run: false`."""

    to: str
    tables: list[str] = []
    dry_run: bool = True


@dg.op(
    name="rollback_lake_tables",
    description="Restores lake tables to an earlier moment or version, rewinds watermarks.",
)
def rollback_lake_tables(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    lake: LakeResource,
    control: ControlDatabase,
):
    target = parse_target(config.to)
    plan = plan_rollback(
        lake,
        control,
        target,
        config.tables or None,
        retention_days=settings.lake_retention_days(),
    )
    for line in plan.lines():
        context.log.info(line)
    if not config.dry_run:
        refuse_while_runs_in_progress(context.instance, own_run_id=context.run_id)
        apply_rollback(plan, control, reason=f"to {config.to} (run {context.run_id})")
        context.log.info(
            f"rolled back {len(plan.restored)} table(s); launch `cutover_report_job` for the "
            "report, the next sync re-applies later changes"
        )
    return dg.Output(
        None,
        metadata={
            "dry_run": config.dry_run,
            "plan": dg.MetadataValue.md("\n".join(f"- {line}" for line in plan.lines())),
            "restored_versions": dg.MetadataValue.json(plan.restored),
        },
    )


@dg.job(
    name=ROLLBACK_JOB,
    description="After-cutover rollback from the UI (what `llm-observatory rollback` does); "
    "a dry run unless `dry_run: false`.",
)
def rollback_lake():
    rollback_lake_tables()


PURGE_DEPARTURES_JOB = "purge_source_departures"
PURGE_DEPARTURES_SCHEDULE = "weekly_departure_purge_sunday_0500_utc"


class PurgeDeparturesConfig(dg.Config):
    """Departure records older than every table's watermark are deleted, less `keep_days`
    (default: the lake's retention, as far back as a rollback can rewind the watermarks)."""

    keep_days: int | None = None


@dg.op(
    name="purge_spent_departures",
    pool=SOURCE_POOL,
    description="Deletes departure records older than every table's watermark, less the "
    "lake's retention.",
)
def purge_spent_departures(
    context: dg.OpExecutionContext,
    config: PurgeDeparturesConfig,
    source: SourceDatabase,
    control: ControlDatabase,
):
    keep_days = config.keep_days
    if keep_days is None:
        keep_days = settings.lake_retention_days()
    results = purge_departures(source, control, dt.timedelta(days=keep_days))
    for result in results:
        context.log.info(result.describe())
    return dg.Output(
        None,
        metadata={
            "rows_deleted": sum(result.rows_deleted for result in results),
            "tables": dg.MetadataValue.json(
                {
                    result.table: {
                        "rows_deleted": result.rows_deleted,
                        "cutoff": result.cutoff.isoformat() if result.cutoff else None,
                        "skipped": result.skipped,
                    }
                    for result in results
                }
            ),
            "keep_days": keep_days,
        },
    )


@dg.job(
    name=PURGE_DEPARTURES_JOB,
    description="Deletes the source's departure records (deletes and moves captured by the "
    "preparation script's triggers) that every table's sync has read.",
)
def purge_source_departures():
    purge_spent_departures()


@dg.schedule(
    name=PURGE_DEPARTURES_SCHEDULE,
    cron_schedule="0 5 * * 0",
    execution_timezone="UTC",
    job=purge_source_departures,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Sundays 05:00 UTC: spent departure records deleted from the source.",
)
def weekly_departure_purge_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"departure-purge-{context.scheduled_execution_time:%Y-%m-%d}")
