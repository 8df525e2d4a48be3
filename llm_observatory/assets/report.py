"""The cutover report as an asset: what the team reviews before switching applications over."""

import datetime as dt

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter

from llm_observatory import settings
from llm_observatory.assets.migration import migration_assets
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.checks.quality import QUARANTINE_SHARE_CHECK
from llm_observatory.layout import DAILY_METRICS_KEY, silver_key
from llm_observatory.partitions import daily_partitions
from llm_observatory.report import (
    CutoverReport,
    DayAccount,
    ReconciliationCoverage,
    account_days,
    last_source_day,
    quarantine_reasons,
    reconciliation_coverage,
    verify_lake_checksums,
)
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.resources.source_load import SOURCE_POOL
from llm_observatory.tables import LLM_INTERACTIONS, TABLES

CUTOVER_REPORT_KEY = dg.AssetKey(["gold", "cutover_report"])
CUTOVER_READY_CHECK = "verdict_is_go"


def migration_check_keys() -> list[dg.AssetCheckKey]:
    """Every partitioned check of the migration: those inside the assets and the integrity ones."""
    return [
        key
        for definition in (*migration_assets, *integrity_checks)
        for key in definition.check_keys
    ]


def failed_error_checks(instance: dg.DagsterInstance, check_keys) -> list[dict]:
    """Latest result per check and partition that failed with ERROR severity (WARNs inform)."""
    storage = instance.event_log_storage
    failed = []
    for info in storage.get_asset_check_partition_info(list(check_keys)):
        if info.latest_execution_status.value != "FAILED":
            continue
        record = storage.get_latest_asset_check_execution_by_key(
            [info.check_key], partition_filter=PartitionKeyFilter(key=info.partition_key)
        ).get(info.check_key)
        evaluation = record.evaluation if record else None
        if evaluation is None or evaluation.severity == dg.AssetCheckSeverity.ERROR:
            failed.append(
                {
                    "asset": info.check_key.asset_key.to_user_string(),
                    "check": info.check_key.name,
                    "partition": info.partition_key,
                }
            )
    return sorted(failed, key=lambda f: (f["asset"], f["check"], f["partition"] or ""))


def reconciliation_coverages(
    control: ControlDatabase,
    accounts: list[DayAccount],
    rotation_period_days: int,
    now: dt.datetime,
) -> list[ReconciliationCoverage]:
    """Per table, the days holding data in the lake (bronze, silver or quarantine) against the
    last reconciliation the control database records for each."""
    days_with_data: dict[str, list[str]] = {table.name: [] for table in TABLES}
    for account in accounts:
        if account.bronze_rows or account.silver_rows or account.quarantined_rows:
            days_with_data.setdefault(account.table, []).append(account.day)
    return [
        reconciliation_coverage(
            table, days, control.last_reconciled(table), rotation_period_days, now
        )
        for table, days in days_with_data.items()
    ]


def build_cutover_report(
    source: SourceDatabase,
    lake: LakeResource,
    instance: dg.DagsterInstance | None,
    check_keys,
    control: ControlDatabase,
    *,
    rotation_period_days: int | None = None,
    full: bool | None = None,
) -> CutoverReport:
    """`rotation_period_days`: LLM_OBS_ROTATION_DAYS unless given; `full`: re-read every file
    (by default only on a local lake; on Azure the service's properties and a sample)."""
    if rotation_period_days is None:
        rotation_period_days = settings.rotation_days()
    now = dt.datetime.now(dt.UTC)
    first_day = dt.date.fromisoformat(daily_partitions.get_first_partition_key())
    last_partition = daily_partitions.get_last_partition_key()
    last_day = dt.date.fromisoformat(last_partition) if last_partition else first_day
    newest_source_day = last_source_day(source, TABLES)
    if newest_source_day and newest_source_day > last_day:
        last_day = newest_source_day
    if full is None:
        full = not lake.is_azure
    # Re-reading every file, the rows are counted from the footers too; otherwise from the log,
    # as the files are then checked by their ETag (a file changed since its commit fails that).
    accounts = account_days(source, lake, TABLES, first_day, last_day, from_footers=full)
    days_with_rows = sorted({a.day for a in accounts if a.source_rows or a.bronze_rows})
    # Evidence that may have changed since the checks ran is taken again now: the counts
    # above, and every file below, so the report never says GO from stale results.
    seed = now.isoformat(timespec="seconds")
    checksums = verify_lake_checksums(lake, TABLES, days_with_rows, full=full, seed=seed)
    return CutoverReport(
        generated_at=now.isoformat(timespec="seconds"),
        lake=lake.describe(),
        first_day=first_day.isoformat(),
        last_day=last_day.isoformat(),
        accounts=accounts,
        failed_checks=failed_error_checks(instance, check_keys) if instance else [],
        missing_checks=missing_check_results(instance, check_keys, accounts) if instance else [],
        check_results=check_result_counts(instance, check_keys) if instance else [],
        checksum_failures=checksums.failures,
        files_verified=checksums.files,
        checksum_mode=checksums.mode,
        files_by_metadata=checksums.by_metadata,
        files_reread=checksums.reread,
        files_sampled=checksums.sampled,
        bytes_reread=checksums.bytes_reread,
        sample_seed=seed if checksums.mode == "metadata" else "",
        quarantine_by_rule=quarantine_reasons(lake, TABLES),
        reconciliation=reconciliation_coverages(control, accounts, rotation_period_days, now),
        rotation_period_days=rotation_period_days,
    )


def check_result_counts(instance: dg.DagsterInstance, check_keys) -> list[dict]:
    """Partitions per check whose latest result passed or failed (WARN failures included)."""
    counts: dict[tuple[str, str], dict] = {}
    for info in instance.event_log_storage.get_asset_check_partition_info(list(check_keys)):
        status = info.latest_execution_status.value
        if status not in ("SUCCEEDED", "FAILED"):
            continue
        entry = counts.setdefault(
            (info.check_key.asset_key.to_user_string(), info.check_key.name),
            {"passed": 0, "failed": 0},
        )
        entry["passed" if status == "SUCCEEDED" else "failed"] += 1
    return [
        {"asset": asset, "check": check, **entry}
        for (asset, check), entry in sorted(counts.items())
    ]


def missing_check_results(
    instance: dg.DagsterInstance, check_keys, accounts: list[DayAccount]
) -> list[dict]:
    """(check, partition) pairs with source rows but no pass or failure on record.

    The quarantine-share check only ever warns, so its absence is not held against cutover.
    """
    storage = instance.event_log_storage
    recorded = {
        (info.check_key, info.partition_key)
        for info in storage.get_asset_check_partition_info(list(check_keys))
        if info.latest_execution_status.value in ("SUCCEEDED", "FAILED")
    }
    days_by_table: dict[str, list[str]] = {}
    for account in accounts:
        if account.source_rows:
            days_by_table.setdefault(account.table, []).append(account.day)
    missing = []
    for key in check_keys:
        if key.name == QUARANTINE_SHARE_CHECK:
            continue
        table = key.asset_key.path[-1]
        table = LLM_INTERACTIONS.name if table == DAILY_METRICS_KEY.path[-1] else table
        for day in days_by_table.get(table, []):
            if (key, day) not in recorded:
                missing.append(
                    {"asset": key.asset_key.to_user_string(), "check": key.name, "partition": day}
                )
    return missing


class CutoverReportConfig(dg.Config):
    """`full`: re-read every file of the lake (`llm-observatory report --full`). Unset: only
    on a local lake; on Azure each file's properties and a seeded sample are checked."""

    full: bool | None = None


def write_report(lake: LakeResource, report: CutoverReport) -> str:
    location = lake.location("gold", "cutover_report")
    filesystem = location.filesystem
    for name, text in (("report.md", report.to_markdown()), ("report.json", report.to_json())):
        with filesystem.open(f"{location.fs_path}/{name}", "w") as handle:
            handle.write(text)
    return location.uri


@dg.asset(
    key=CUTOVER_REPORT_KEY,
    deps=[*(silver_key(table) for table in TABLES), DAILY_METRICS_KEY],
    group_name="gold",
    kinds={"markdown", "json"},
    # It recounts every day on the source.
    pool=SOURCE_POOL,
    description=(
        "GO/NO-GO: every source row accounted for, every ERROR check passing, every day "
        "reconciled with the source within the rotation period."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            CUTOVER_READY_CHECK,
            asset=CUTOVER_REPORT_KEY,
            description="The report's verdict is GO: the lake may replace the source.",
        )
    ],
)
def cutover_report(
    context: dg.AssetExecutionContext,
    config: CutoverReportConfig,
    source: SourceDatabase,
    lake: LakeResource,
    control: ControlDatabase,
):
    report = build_cutover_report(
        source, lake, context.instance, migration_check_keys(), control, full=config.full
    )
    where = write_report(lake, report)
    context.log.info(report.verdict_line())
    yield dg.MaterializeResult(
        metadata={
            "verdict": report.verdict,
            "verdict_line": report.verdict_line(),
            "incomplete_table_days": len(report.incomplete),
            "failing_error_checks": len(report.failed_checks),
            "missing_check_results": len(report.missing_checks),
            "checksum_failures": len(report.checksum_failures),
            "files_verified": report.files_verified,
            "checksum_mode": report.checksum_mode,
            "files_reread": report.files_reread,
            "bytes_reread": report.bytes_reread,
            "days_not_reconciled_in_rotation": sum(
                len(c.overdue_days) for c in report.reconciliation
            ),
            "report": dg.MetadataValue.md(report.to_markdown()),
            "location": dg.MetadataValue.path(where),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CUTOVER_READY_CHECK,
        passed=report.verdict == "GO",
        metadata={
            "incomplete_table_days": len(report.incomplete),
            "failing_error_checks": len(report.failed_checks),
        },
    )


report_assets = [cutover_report]
