"""`llm-observatory`: the operator's command line, thin over the Dagster definitions.

Every command runs its work as Dagster runs in the instance of `DAGSTER_HOME`, so what it did
shows in the UI (runs, per-partition check results, materialization metadata) exactly as if
it had been launched there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _prepare_environment() -> Path:
    """Points DAGSTER_HOME at the shared instance folder (README's Configuration) and makes
    sure it exists."""
    from llm_observatory import settings

    settings.home().mkdir(parents=True, exist_ok=True)
    dagster_home = settings.dagster_home()
    dagster_home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    # Two commands started at the same moment on a fresh home would both create the instance's
    # storage and run its schema migrations at once, leaving it broken ("more than one head").
    # The first creates it under an exclusive lock; the others wait, then find it ready.
    with open(dagster_home / ".llm_observatory.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance_yaml = dagster_home / "dagster.yaml"
            if not instance_yaml.exists():
                instance_yaml.write_text("telemetry:\n  enabled: false\n")
            ready = dagster_home / ".llm_observatory.instance-ready"
            if not ready.exists():
                import dagster as dg

                dg.DagsterInstance.get().dispose()
                ready.write_text("created by llm-observatory\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dagster_home


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD") from None


def _selected_tables(names: list[str] | None):
    from llm_observatory.tables import TABLES, table_spec

    if not names:
        return TABLES
    return tuple(table_spec(name) for name in names)


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _run_rows(result, prefix: str) -> int:
    rows = 0
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.path[0] == prefix:
            value = materialization.metadata.get("dagster/row_count")
            rows += int(value.value) if value is not None else 0
    return rows


def _step_failure(result) -> str:
    """The message of a failed in-process run's first failed step."""
    return result.get_step_failure_events()[0].event_specific_data.error.message.strip()


def _failed_checks(result) -> list[str]:
    failed = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity.value == "ERROR":
            failed.append(
                f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                f"[{evaluation.partition}]"
            )
    return failed


def backfill(first: dt.date, last: dt.date, table_names: list[str] | None, out=sys.stdout) -> int:
    """Materializes bronze, silver and gold for every day of [first, last], one run per day."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory import settings
    from llm_observatory.definitions import MIGRATE_HISTORY_JOB, defs
    from llm_observatory.layout import DAILY_METRICS_KEY, bronze_key, silver_key
    from llm_observatory.partitions import daily_partitions, days_between
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.leases import LeaseHeldError, Leases, day_resource

    tables = _selected_tables(table_names)
    days = days_between(first, last)
    known = set(daily_partitions.get_partition_keys())
    unknown = [day.isoformat() for day in days if day.isoformat() not in known]
    if unknown:
        first_key = daily_partitions.get_first_partition_key()
        last_key = daily_partitions.get_last_partition_key()
        print(
            f"error: day(s) {', '.join(unknown[:5])} are not partitions: partitions run from "
            f"{first_key} (LLM_OBS_START_DATE) to {last_key} (the last complete UTC day)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    selection = [key for table in tables for key in (bronze_key(table), silver_key(table))]
    if any(table.feeds_daily_metrics for table in tables):
        selection.append(DAILY_METRICS_KEY)

    job = defs.resolve_job_def(MIGRATE_HISTORY_JOB)
    instance = dg.DagsterInstance.get()
    backfill_id = uuid.uuid4().hex[:8]
    # Every day of every table is leased before the first run: a second backfill (or a sync)
    # over any of them is refused at once, and this one is refused before changing anything.
    control = ControlDatabase(
        url=settings.resolved(settings.control_url()), lease_seconds=settings.lease_seconds()
    )
    leases = Leases(control, f"backfill {backfill_id} (llm-observatory backfill)")
    try:
        leases.take(day_resource(table.name, day) for table in tables for day in days)
    except LeaseHeldError as error:
        print(f"error: backfill refused, nothing was changed: {error}", file=sys.stderr)
        return EXIT_FAILED
    with leases:
        return _backfill_days(job, instance, backfill_id, leases, tables, days, selection, out)


def _backfill_days(job, instance, backfill_id, leases, tables, days, selection, out) -> int:
    """One run per day, under the backfill's leases (their token is handed to each run)."""
    from llm_observatory.native_memory import return_freed_pages
    from llm_observatory.resources.leases import LEASE_TOKEN_TAG

    first, last = days[0], days[-1]
    started = time.perf_counter()
    total_rows, failures = 0, []
    names = ", ".join(table.name for table in tables)
    print(f"backfill {backfill_id}: {len(days)} day(s) {first}..{last} of {names}", file=out)
    for position, day in enumerate(days, start=1):
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=selection,
            raise_on_error=False,
            run_config=QUIET_RUN_CONFIG,
            tags={
                "llm_observatory/command": "backfill",
                "llm_observatory/backfill_id": backfill_id,
                "llm_observatory/progress": f"{position}/{len(days)}",
                LEASE_TOKEN_TAG: leases.token,
            },
        )
        # The runs share this process: what a day's run freed must not stay resident for the
        # next one (a few MiB a day otherwise, which a months-long backfill cannot afford).
        return_freed_pages()
        rows = _run_rows(result, "bronze")
        total_rows += rows
        failed_checks = _failed_checks(result)
        elapsed = time.perf_counter() - started
        eta = elapsed / position * (len(days) - position)
        status = "ok" if result.success and not failed_checks else "FAILED"
        if status == "FAILED":
            reason = _step_failure(result) if not result.success else ""
            failures.append((day, result.run_id, failed_checks, reason))
        overall_rate = total_rows / max(elapsed, 1e-9)
        # The UI's run list shows how far the backfill had got when each day finished.
        instance.add_run_tags(
            result.run_id,
            {
                "llm_observatory/source_rows": str(rows),
                "llm_observatory/backfill_rows_per_second": f"{overall_rate:.0f}",
                "llm_observatory/backfill_eta": _format_seconds(eta),
            },
        )
        print(
            f"  [{position}/{len(days)}] {day} {status}: {rows:,} rows, "
            f"{total_rows / max(elapsed, 1e-9):,.0f} rows/s overall, elapsed "
            f"{_format_seconds(elapsed)}, ETA {_format_seconds(eta)} (run {result.run_id[:8]})",
            file=out,
            flush=True,
        )
    for day, run_id, failed_checks, step_error in failures:
        reason = f"failing checks {', '.join(failed_checks)}" if failed_checks else "run failed"
        if step_error:
            reason += f": {step_error.splitlines()[0]}"
        print(f"  {day}: {reason}; see run {run_id} in the UI", file=out)
    print(
        f"backfill {backfill_id}: {len(days) - len(failures)}/{len(days)} day(s) ok, "
        f"{total_rows:,} source rows in {_format_seconds(time.perf_counter() - started)}",
        file=out,
    )
    return EXIT_FAILED if failures else EXIT_OK


def report(out=sys.stdout, full: bool = False) -> int:
    """Builds the cutover report through Dagster and prints it; 0 on GO, 1 on NO-GO.

    `full`: re-read every file of the lake, also on Azure (where by default each file's
    properties and a seeded sample are checked)."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory.assets.report import CUTOVER_REPORT_KEY
    from llm_observatory.definitions import CUTOVER_REPORT_JOB, defs

    run_config = dict(QUIET_RUN_CONFIG)
    if full:
        run_config["ops"] = {CUTOVER_REPORT_KEY.to_python_identifier(): {"config": {"full": True}}}
    result = defs.resolve_job_def(CUTOVER_REPORT_JOB).execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config=run_config,
        tags={"llm_observatory/command": "report"},
    )
    if not result.success:
        print(
            f"error: the cutover report could not be built: {_step_failure(result)}",
            file=sys.stderr,
        )
        print("Verdict: NO-GO: the report could not be built", file=out)
        return EXIT_FAILED
    materialization = result.asset_materializations_for_node(
        CUTOVER_REPORT_KEY.to_python_identifier()
    )[0]
    print(materialization.metadata["report"].value, file=out)
    print(f"Report written to {materialization.metadata['location'].value}", file=out)
    verdict_line = materialization.metadata["verdict_line"].value
    print(verdict_line, file=out)
    return EXIT_OK if materialization.metadata["verdict"].value == "GO" else EXIT_FAILED


def _lake_and_control():
    """The lake and control resources as configured (EnvVars resolved), for work done outside
    a Dagster run."""
    from llm_observatory.definitions import build_resources
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.settings import resolved

    configured = build_resources()
    lake_config = configured["lake"]
    lake = LakeResource(
        url=resolved(lake_config.url),
        retention_days=lake_config.retention_days,
        azure_storage_connection_string=resolved(lake_config.azure_storage_connection_string),
        azure_storage_account_name=resolved(lake_config.azure_storage_account_name),
        azure_storage_account_key=resolved(lake_config.azure_storage_account_key),
        azure_storage_sas_token=resolved(lake_config.azure_storage_sas_token),
    )
    control = configured["control"]
    return lake, ControlDatabase(url=resolved(control.url), lease_seconds=control.lease_seconds)


def automation(running: bool, cancel_runs: bool = False, out=sys.stdout) -> int:
    """`pause` / `resume`: every schedule and sensor of the migration off / on in the Dagster
    instance, then where the lake and the watermarks stand. Touches neither source nor lake."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory.operate.automation_state import set_automation

    lake, control = _lake_and_control()
    report = set_automation(
        dg.DagsterInstance.get(), running, lake, control, cancel_runs=cancel_runs
    )
    for line in report.lines():
        print(line, file=out)
    if not running:
        print(
            "paused: nothing new starts until `llm-observatory resume`; the source is untouched",
            file=out,
        )
    return EXIT_OK


def rollback(target_text: str, table_names: list[str] | None, dry_run: bool, out=sys.stdout) -> int:
    """Restores lake tables to an earlier version or moment and rewinds the watermarks;
    non-zero with nothing changed when it cannot."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory import settings
    from llm_observatory.operate.rollback import (
        RollbackError,
        apply_rollback,
        parse_target,
        plan_rollback,
        refuse_while_runs_in_progress,
    )

    lake, control = _lake_and_control()
    try:
        target = parse_target(target_text)
        plan = plan_rollback(
            lake, control, target, table_names, retention_days=settings.lake_retention_days()
        )
        if not dry_run:
            refuse_while_runs_in_progress(dg.DagsterInstance.get())
    except RollbackError as error:
        print(f"error: {error}; nothing changed", file=sys.stderr)
        return EXIT_FAILED
    heading = "rollback (dry run, nothing changed)" if dry_run else "rollback"
    print(f"{heading} to {target_text}:", file=out)
    for line in plan.lines():
        print(f"  {line}", file=out)
    if dry_run:
        return EXIT_OK
    try:
        apply_rollback(plan, control, reason=f"--to {target_text}")
    except RollbackError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"rolled back {len(plan.restored)} table(s); the next sync re-applies later changes",
        file=out,
    )
    print("regenerating the cutover report:", file=out, flush=True)
    report(out=out)
    return EXIT_OK


def compact(
    first: dt.date | None,
    last: dt.date | None,
    table_names: list[str] | None,
    target_file_mb: int | None,
    cluster: bool,
    vacuum: bool,
    out=sys.stdout,
) -> int:
    """The `compact_lake` job now: small files merged per day, then vacuum past the retention."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory.definitions import defs
    from llm_observatory.layout import select_tables
    from llm_observatory.operate.jobs import COMPACTION_JOB

    lake, _ = _lake_and_control()
    select_tables(lake, table_names)  # an unknown name: a ValueError, one line
    config: dict = {"cluster": cluster, "vacuum": vacuum, "tables": table_names or []}
    if first:
        config["start"] = first.isoformat()
    if last:
        config["end"] = last.isoformat()
    if target_file_mb:
        config["target_file_mb"] = target_file_mb
    result = defs.resolve_job_def(COMPACTION_JOB).execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={**QUIET_RUN_CONFIG, "ops": {"compact_lake_tables": {"config": config}}},
        tags={"llm_observatory/command": "compact"},
    )
    if not result.success:
        print(f"error: compaction failed: {_step_failure(result)}", file=sys.stderr)
        return EXIT_FAILED
    [output] = [
        event for event in result.all_node_events if event.event_type_value == "STEP_OUTPUT"
    ]
    metadata = output.step_output_data.metadata
    for table, figures in metadata["tables"].value.items():
        print(
            f"  {table}: {figures['days_compacted']} day(s) compacted, files "
            f"{figures['files_before']} -> {figures['files_after']}, bytes "
            f"{figures['bytes_before']:,} -> {figures['bytes_after']:,}, "
            f"{figures['vacuumed_files']} vacuumed",
            file=out,
        )
    print(
        f"compact: days {metadata['days'].value}: files {metadata['files_before'].value} -> "
        f"{metadata['files_after'].value}; {metadata['vacuumed_files'].value} file(s) vacuumed",
        file=out,
    )
    return EXIT_OK


def tier(
    older_than_days: int,
    through: dt.date | None,
    tier_name: str,
    table_names: list[str] | None,
    dry_run: bool,
    policy_json: bool,
    out=sys.stdout,
) -> int:
    """Old partitions' data files to the Cool tier now (the `tier_old_partitions` job's work),
    or, with --policy-json, the equivalent Azure lifecycle policy printed."""
    _prepare_environment()
    from llm_observatory.layout import select_tables
    from llm_observatory.operate import lifecycle

    lake, _ = _lake_and_control()
    tables = select_tables(lake, table_names)  # an unknown name: a ValueError, one line
    if policy_json:
        print(
            lifecycle.policy_json(lifecycle.lifecycle_policy(lake, tables, older_than_days)),
            file=out,
        )
        return EXIT_OK
    try:
        result = lifecycle.tier_old_partitions(
            lake,
            tables,
            older_than_days=older_than_days,
            tier=tier_name,
            last_day=through,
            dry_run=dry_run,
        )
    except lifecycle.TieringError as error:
        print(f"error: {error}; nothing moved", file=sys.stderr)
        return EXIT_FAILED
    if not lake.is_azure:
        print("tier: the lake is a local folder: storage tiers do not apply", file=out)
        return EXIT_OK
    verb = "would move" if dry_run else "moved"
    print(
        f"tier: partitions before {result.cutoff}: {verb} {result.files_moved} file(s), "
        f"{result.bytes_moved:,} bytes to {result.tier}; {result.files_already} already there",
        file=out,
    )
    for name, moved in result.by_table.items():
        if moved:
            print(f"  {name}: {moved:,} bytes", file=out)
    before = ", ".join(f"{k} {v:,}" for k, v in sorted(result.bytes_by_tier_before.items()))
    after = ", ".join(f"{k} {v:,}" for k, v in sorted(result.bytes_by_tier_after.items()))
    print(f"  bytes by tier before: {before or '-'}; after: {after or '-'}", file=out)
    return EXIT_OK


def monitor(repeats: int, include_source: bool, out=sys.stdout) -> int:
    """Materializes `monitoring/query_latency` now and prints the p50/p95 table."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory.assets.monitoring import QUERY_LATENCY_KEY
    from llm_observatory.definitions import defs
    from llm_observatory.operate.jobs import MONITORING_JOB

    op_config = {"config": {"repeats": repeats, "include_source": include_source}}
    result = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={
            **QUIET_RUN_CONFIG,
            "ops": {QUERY_LATENCY_KEY.to_python_identifier(): op_config},
        },
        tags={"llm_observatory/command": "monitor"},
    )
    if not result.success:
        print(f"error: query monitoring failed: {_step_failure(result)}", file=sys.stderr)
        return EXIT_FAILED
    [event] = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key == QUERY_LATENCY_KEY
    ]
    metadata = event.step_materialization_data.materialization.metadata
    print(
        f"query latency over {metadata['repeats'].value} runs each, day {metadata['day'].value}:",
        file=out,
    )
    print(metadata["latencies"].value, file=out)
    return EXIT_OK


class _NotRecordedError(RuntimeError):
    """The control database could not record the days a verify proved."""


def _reconcile_days(tables, days, source, lake, control, deep: bool, by: str, out):
    """Reconciles and prints every table-day; records the days that matched (one transaction
    per table). Returns the differing days per table and the source queries it took."""
    import sqlalchemy as sa

    from llm_observatory.reconcile import reconcile_day

    differing: dict[str, list[dt.date]] = {}
    queries = 0
    for table in tables:
        matched: dict[dt.date, int] = {}
        for day in days:
            result = reconcile_day(table, source, lake, day, deep=deep)
            queries += result.source_queries
            status = "ok" if result.matches else "DIFFERS"
            print(
                f"  {table.name} {day}: {status}: source {result.source_rows:,} rows, "
                f"lake {result.lake_rows:,} rows",
                file=out,
                flush=True,
            )
            for difference in result.differences:
                print(f"    {difference.describe()}", file=out)
            if result.matches:
                matched[day] = 0
            else:
                differing.setdefault(table.name, []).append(day)
        try:
            control.record_reconciled(table.name, matched, by=by)
        except sa.exc.SQLAlchemyError as error:
            raise _NotRecordedError(
                f"{table.name}: the {len(matched)} day(s) that matched could not be recorded in "
                f"the control database: {str(error).splitlines()[0]}"
            ) from None
    return differing, queries


def _repair(tables, differing: dict[str, list[dt.date]], source, lake, control, out):
    """Applies what the reconciliation found, table by table, under each table's sync lease.
    Returns the tables repaired, refused (a cycle holds the lease) and failed (undone)."""
    from llm_observatory.incremental.cycle import CycleInProgressError, repair_days

    repaired, refused, failed = [], [], []
    run_id = f"verify-repair-{uuid.uuid4().hex[:8]}"
    for table in tables:
        days = differing.get(table.name)
        if not days:
            continue
        print(f"repair {table.name}: {len(days)} day(s) {', '.join(map(str, days))}", file=out)
        try:
            result = repair_days(table, source, lake, control, days, run_id=run_id)
        except CycleInProgressError as error:
            print(f"error: repair refused, nothing was changed: {error}", file=sys.stderr)
            refused.append(table)
            continue
        except Exception as error:  # noqa: BLE001 - one line per table, never a traceback
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            print(
                f"error: repair of {table.name} failed and was undone: {message}", file=sys.stderr
            )
            failed.append(table)
            continue
        print(f"  {result.describe()}", file=out, flush=True)
        repaired.append(table)
    return repaired, refused, failed


def verify(
    first: dt.date,
    last: dt.date,
    table_names: list[str] | None,
    deep: bool = False,
    repair: bool = False,
    out=sys.stdout,
) -> int:
    """Reconciles the lake against the source day by day and prints every difference. The
    lake is not changed; the days that matched are recorded in the control database (what
    the cutover report reads). 0 when lake and source agree, 1 when they do not.

    With `repair`, what it found is then applied per table (keys the source no longer has
    removed, missing and stale rows re-read, under the table's sync lease, the watermark left
    where it was) and the repaired days are verified again: 0 when they now agree, 1 when
    not, 2 when a running sync cycle holds a table (refused, that table unchanged)."""
    from llm_observatory.definitions import build_resources
    from llm_observatory.partitions import days_between
    from llm_observatory.resources.source import SourceDatabase, SourceError
    from llm_observatory.settings import resolved

    configured = build_resources()
    source = SourceDatabase(url=resolved(configured["source"].url))
    lake, control = _lake_and_control()
    tables = _selected_tables(table_names)
    days = days_between(first, last)
    started = time.perf_counter()
    mode = "every column (deep)" if deep else "key and version"
    by = "verify --deep" if deep else "verify"
    print(
        f"verify ({mode}): {len(days)} day(s) {first}..{last} of "
        f"{', '.join(t.name for t in tables)} against the source",
        file=out,
    )
    try:
        differing, queries = _reconcile_days(tables, days, source, lake, control, deep, by, out)
        count = sum(len(found) for found in differing.values())
        print(
            f"verify: {count} table-day(s) differ; {queries} source queries in "
            f"{_format_seconds(time.perf_counter() - started)}",
            file=out,
        )
        if not repair or not differing:
            return EXIT_FAILED if differing else EXIT_OK
        repaired, refused, failed = _repair(tables, differing, source, lake, control, out)
        still: dict[str, list[dt.date]] = {}
        if repaired:
            print("verify after the repair:", file=out)
        for table in repaired:
            found, _ = _reconcile_days(
                (table,), differing[table.name], source, lake, control, deep, f"{by} --repair", out
            )
            still.update(found)
    except (SourceError, _NotRecordedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        source.dispose()
    left = sum(len(found) for found in still.values())
    print(
        f"verify --repair: {len(repaired)} table(s) repaired, {len(refused)} refused, "
        f"{len(failed)} failed; {left} repaired table-day(s) still differ",
        file=out,
    )
    if refused:
        return EXIT_USAGE
    return EXIT_FAILED if failed or left else EXIT_OK


def sync(
    table_names: list[str] | None,
    changes_only: bool = False,
    overlap_minutes: float | None = None,
    reconcile_days: int | None = None,
    rotation_days: int | None = None,
    out=sys.stdout,
) -> int:
    """One incremental cycle per table now, through the `sync_lake` job (what the schedule
    and the sensor run). 0 when every cycle completed; on failure the watermark and the lake
    are as they were."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory.assets.sync import sync_key, sync_op_name
    from llm_observatory.automation import SYNC_JOB
    from llm_observatory.definitions import defs

    tables = _selected_tables(table_names)
    config = _sync_config(changes_only, overlap_minutes, reconcile_days, rotation_days)
    run_config = {
        **QUIET_RUN_CONFIG,
        "ops": {sync_op_name(table): {"config": dict(config)} for table in tables},
    }
    held = _sync_leases_held(tables)
    if held:
        for line in held:
            print(f"error: sync refused, nothing was changed: {line}", file=sys.stderr)
        return EXIT_USAGE
    print(f"sync: one cycle of {', '.join(t.name for t in tables)}", file=out, flush=True)
    started = time.perf_counter()
    result = defs.resolve_job_def(SYNC_JOB).execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config=run_config,
        asset_selection=[sync_key(table) for table in tables],
        tags={"llm_observatory/command": "sync", "llm_observatory/cycle": "manual"},
    )
    _print_cycles(result, out)
    failed_checks = _failed_checks(result)
    refused = _print_step_failures(result)
    for reason in refused:
        print(f"error: sync refused, nothing was changed: {reason}", file=sys.stderr)
    for check in failed_checks:
        print(f"error: check failed: {check}", file=sys.stderr)
    ok = result.success and not failed_checks
    only_refused = (
        bool(refused)
        and not failed_checks
        and (len(refused) == len(result.get_step_failure_events()))
    )
    outcome = "completed" if ok else "FAILED (watermark and lake left as they were)"
    if only_refused:
        outcome = "refused (another cycle holds the table; nothing was changed)"
    print(f"sync: {outcome} in {_format_seconds(time.perf_counter() - started)}", file=out)
    if only_refused:
        return EXIT_USAGE
    return EXIT_OK if ok else EXIT_FAILED


def _sync_config(
    changes_only: bool,
    overlap_minutes: float | None,
    reconcile_days: int | None,
    rotation_days: int | None,
) -> dict:
    """The `sync_lake` ops' config from the command's options (unset: the job's defaults)."""
    config: dict = {}
    if changes_only:
        config["reconcile_recent_days"] = 0
    if overlap_minutes is not None:
        config["overlap_minutes"] = overlap_minutes
    if reconcile_days is not None:
        config["reconcile_recent_days"] = reconcile_days
    if rotation_days is not None:
        config["rotation_period_days"] = rotation_days
    return config


def _print_cycles(result, out) -> None:
    """One line per table's cycle from its materialization's metadata."""
    for event in result.get_asset_materialization_events():
        metadata = event.event_specific_data.materialization.metadata
        name = event.event_specific_data.materialization.asset_key.path[-1]

        def value(key, metadata=metadata):
            entry = metadata.get(key)
            return None if entry is None else entry.value

        print(
            f"  {name}: {value('rows_extracted')} row(s) extracted, "
            f"{value('changes_upserted_rows')} new version(s) merged "
            f"({value('changes_unchanged_rows')} already in the lake), "
            f"{len(value('days_rewritten') or [])} day(s) rewritten; reconciled "
            f"{len(value('days_reconciled') or [])} day(s): {value('deleted_keys')} deleted, "
            f"{value('moved_keys')} moved, {value('repaired_keys')} repaired; "
            f"watermark {value('extracted_from') and value('watermark_before')} -> "
            f"{_timestamp_text(value('watermark'))}; "
            f"lag {value('lag_seconds')} s",
            file=out,
        )
        capture = value("departure_capture")
        if capture and capture != "on":
            print(f"  {name}: departure capture {capture}", file=out)
        elif capture:
            print(f"  {name}: {value('departures_read')} departure(s) read", file=out)


def _print_step_failures(result) -> list[str]:
    """Prints each failed step's error; returns the refusals (another cycle held the table)
    apart, which say nothing was changed."""
    refused = []
    for failure in result.get_step_failure_events():
        error = failure.event_specific_data.error
        refusal = _error_of_class(error, "CycleInProgressError")
        if refusal is not None:
            text = refusal.message.strip()
            # "package.module.CycleInProgressError: <what holds the table>"
            refused.append(text.split("CycleInProgressError: ", 1)[-1])
            continue
        message = error.message.strip() if error else "unknown error"
        print(f"error: {failure.step_key}: {message}", file=sys.stderr)
    return refused


def _sync_leases_held(tables) -> list[str]:
    """The selected tables another live cycle holds, described (before anything runs, so the
    refusal is one line; the cycle's own lease still decides when two start at once)."""
    import sqlalchemy as sa

    from llm_observatory import settings
    from llm_observatory.resources.control import ControlDatabase
    from llm_observatory.resources.leases import current_holder, sync_resource

    # The URL itself, not the EnvVar naming it (whose text is the variable's name).
    control = ControlDatabase(url=settings.resolved(settings.control_url()))
    now = dt.datetime.now(dt.UTC)
    held = []
    try:
        for table in tables:
            holder = current_holder(control, sync_resource(table.name))
            if holder is not None and holder.is_live(now):
                held.append(f"{table.name}: another sync cycle is running: {holder.describe()}")
    except sa.exc.SQLAlchemyError:
        return []  # the cycle itself reports an unreachable control database, in one line
    finally:
        control.engine.dispose()
    return held


def _timestamp_text(value) -> str | None:
    """A timestamp metadata value (epoch seconds) as the ISO text the line's other instant
    uses (it printed 1796342401.837128)."""
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
    return value


def _error_of_class(error, class_name: str):
    """The error, or the first of its causes, raised as `class_name` (Dagster wraps the
    step's exception), or None."""
    while error is not None:
        if error.cls_name == class_name:
            return error
        error = error.cause
    return None


def plan(
    streams: int, bandwidth_mbps: float, as_json: bool, table_names=None, out=sys.stdout
) -> int:
    """Source inventory and the capacity estimate, from the catalog and the instance's runs."""
    _prepare_environment()
    import dagster as dg

    from llm_observatory.definitions import build_resources
    from llm_observatory.plan import build_plan
    from llm_observatory.resources.source import SourceDatabase, SourceError
    from llm_observatory.settings import resolved

    source = SourceDatabase(url=resolved(build_resources()["source"].url))
    try:
        result = build_plan(
            source,
            _selected_tables(table_names),
            dg.DagsterInstance.get(),
            streams=streams,
            bandwidth_mbps=bandwidth_mbps,
        )
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        source.dispose()
    print(result.to_json() if as_json else result.to_text(), file=out)
    return EXIT_OK


def setup_control(out=sys.stdout) -> int:
    """Applies the control database's DDL (`sql/control_<dialect>.sql`), idempotently."""
    import sqlalchemy as sa

    from llm_observatory import settings
    from llm_observatory.resources.urls import display_url
    from llm_observatory.sql_scripts import DIALECTS, apply_script, control_ddl

    settings.home().mkdir(parents=True, exist_ok=True)
    url = sa.make_url(settings.resolved(settings.control_url()))
    dialect = url.get_backend_name()
    if dialect not in DIALECTS:
        print(
            f"error: no control DDL for {dialect}; supported: {', '.join(DIALECTS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    engine = sa.create_engine(url)
    try:
        statements = apply_script(engine, control_ddl(dialect))
    finally:
        engine.dispose()
    print(
        f"setup-control: {statements} statement(s) of the {dialect} control DDL applied to "
        f"{display_url(url)}",
        file=out,
    )
    return EXIT_OK


def demo(days: int, rows_per_day: int, seed: int, out=sys.stdout) -> int:
    """Builds the SQLite demo source, migrates every day of it, and prints the verdict."""
    import sqlalchemy as sa

    from llm_observatory import settings
    from llm_observatory.partitions import DEMO_START_DATE, start_date
    from llm_observatory.resources.urls import display_lake_url
    from llm_observatory.sql_scripts import install_departure_capture
    from llm_observatory.synthetic.generator import generate_source

    if os.environ.get("LLM_OBS_SOURCE_URL"):
        print(
            "error: the demo builds its own SQLite source and would not overwrite "
            "LLM_OBS_SOURCE_URL; unset it to run the demo",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if start_date() != DEMO_START_DATE:
        print(
            f"error: the demo data starts on {DEMO_START_DATE}; unset LLM_OBS_START_DATE "
            f"(now {start_date()}) to run the demo",
            file=sys.stderr,
        )
        return EXIT_USAGE
    home = settings.home()
    home.mkdir(parents=True, exist_ok=True)
    print(
        f"demo: building the synthetic source ({days} days x {rows_per_day:,} interactions/day) "
        f"at {settings.demo_source_url()}",
        file=out,
        flush=True,
    )
    begun = time.perf_counter()
    summary = generate_source(
        settings.demo_source_url(),
        start_date=DEMO_START_DATE,
        days=days,
        rows_per_day=rows_per_day,
        seed=seed,
    )
    # Prepared as a DBA prepares production (sql/prepare_source_sqlite.sql's departure
    # capture): deletes and moved rows reach the lake in the next sync.
    engine = sa.create_engine(settings.demo_source_url())
    try:
        install_departure_capture(engine)
    finally:
        engine.dispose()
    print(
        f"demo: source ready in {time.perf_counter() - begun:,.1f} s\n{summary.format()}", file=out
    )
    last = DEMO_START_DATE + dt.timedelta(days=days - 1)
    status = backfill(DEMO_START_DATE, last, None, out=out)
    verdict = report(out=out)
    print(f"Lake: {display_lake_url(settings.resolved(settings.lake_url()))}", file=out)
    print(f"Dagster instance: {settings.dagster_home()} (make dev serves the UI on it)", file=out)
    return EXIT_FAILED if status or verdict else EXIT_OK


@dataclass(frozen=True)
class Option:
    """One command-line option, as `argparse.add_argument` takes it."""

    flags: tuple[str, ...]
    settings: dict = field(default_factory=dict)


def option(*flags: str, **settings) -> Option:
    return Option(flags, settings)


@dataclass(frozen=True)
class Command:
    """A command, declared once: its name, help, options, and how its options call it."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    options: tuple[Option, ...] = ()


DAYS = (
    option("--start", type=_day, required=True, help="first UTC day"),
    option("--end", type=_day, required=True, help="last UTC day, included"),
)
SOURCE_TABLES = option(
    "--table", action="append", dest="tables", help="a source table (repeatable)"
)
LAKE_TABLES = option(
    "--table", action="append", dest="tables", help="a lake or source table (repeatable)"
)

COMMANDS = (
    Command(
        "demo",
        "build the SQLite demo source and migrate it",
        lambda a: demo(a.days, a.rows_per_day, a.seed),
        (
            option("--days", type=int, default=7),
            option("--rows-per-day", type=int, default=15_000),
            option("--seed", type=int, default=7),
        ),
    ),
    Command(
        "backfill",
        "materialize bronze, silver and gold for days D..D with their checks",
        lambda a: backfill(a.start, a.end, a.tables),
        (*DAYS, SOURCE_TABLES),
    ),
    Command(
        "report",
        "build and print the cutover report (GO / NO-GO)",
        lambda a: report(full=a.full),
        (
            option(
                "--full",
                action="store_true",
                help="re-read every lake file to check its SHA-256 (the default on a local "
                "lake; on Azure the storage service's properties of each file and a seeded "
                "sample are checked)",
            ),
        ),
    ),
    Command(
        "verify",
        "reconcile the lake against the source for days D..D; changes nothing unless --repair",
        lambda a: verify(a.start, a.end, a.tables, deep=a.deep, repair=a.repair),
        (
            *DAYS,
            SOURCE_TABLES,
            option(
                "--deep",
                action="store_true",
                help="fingerprint every column, so a value changed in transit is found too",
            ),
            option(
                "--repair",
                action="store_true",
                help="then apply what it found (deleted and moved keys out, missing and stale "
                "rows re-read) under each table's sync lease, and verify the repaired days again",
            ),
        ),
    ),
    Command(
        "sync",
        "one incremental cycle now (what the daily schedule and sensors run)",
        lambda a: sync(
            a.tables,
            changes_only=a.changes_only,
            overlap_minutes=a.overlap_minutes,
            reconcile_days=a.reconcile_days,
            rotation_days=a.rotation_days,
        ),
        (
            SOURCE_TABLES,
            option(
                "--changes-only",
                action="store_true",
                help="merge changed rows only, reconcile nothing (what the sensor runs)",
            ),
            option(
                "--overlap-minutes", type=float, help="re-read this far behind the watermark (10)"
            ),
            option(
                "--reconcile-days", type=int, help="recent days re-proven against the source (2)"
            ),
            option(
                "--rotation-days",
                type=int,
                help="every older day is re-proven once per this many cycles (30; 0 = never)",
            ),
        ),
    ),
    Command(
        "plan",
        "source inventory and the capacity estimate (hours, bottleneck, daily load)",
        lambda a: plan(a.streams, a.bandwidth_mbps, a.json, a.tables),
        (
            option("--streams", type=int, default=4, help="concurrent source streams (default 4)"),
            option(
                "--bandwidth-mbps", type=float, default=100.0, help="network to ADLS (default 100)"
            ),
            option("--json", action="store_true", help="machine-readable output"),
            SOURCE_TABLES,
        ),
    ),
    Command(
        "setup-control",
        "create the control database's watermark table (idempotent)",
        lambda a: setup_control(),
    ),
    Command(
        "compact",
        "merge small lake files per day (default: the last 8 days), then vacuum",
        lambda a: compact(
            a.start,
            a.end,
            a.tables,
            a.target_file_mb,
            cluster=not a.no_cluster,
            vacuum=not a.no_vacuum,
        ),
        (
            option("--start", type=_day, help="first UTC day"),
            option("--end", type=_day, help="last UTC day, included"),
            LAKE_TABLES,
            option("--target-file-mb", type=int, help="target file size (256)"),
            option(
                "--no-cluster",
                action="store_true",
                help="keep row order (no model/time clustering)",
            ),
            option("--no-vacuum", action="store_true", help="skip the vacuum"),
        ),
    ),
    Command(
        "tier",
        "move data files of partitions older than N days to the Cool tier (ADLS)",
        lambda a: tier(a.older_than_days, a.through, a.tier, a.tables, a.dry_run, a.policy_json),
        (
            option("--older-than-days", type=int, default=730, help="age threshold in days (730)"),
            option(
                "--through", type=_day, help="only partitions up to this UTC day (must be older)"
            ),
            option("--tier", default="Cool", help="Cool (default) or Cold; never Archive"),
            LAKE_TABLES,
            option("--dry-run", action="store_true", help="report, move nothing"),
            option(
                "--policy-json",
                action="store_true",
                help="print the equivalent Azure lifecycle-management policy instead",
            ),
        ),
    ),
    Command(
        "monitor",
        "time the typical analyst queries on the lake and the source (p50/p95)",
        lambda a: monitor(a.repeats, include_source=not a.lake_only),
        (
            option("--repeats", type=int, default=5, help="runs per query (5)"),
            option(
                "--lake-only",
                action="store_true",
                help="do not time the source (gone after cutover)",
            ),
        ),
    ),
    Command(
        "pause",
        "turn every schedule and sensor of the migration off (pre-cutover rollback)",
        lambda a: automation(False, cancel_runs=a.cancel_runs),
        (
            option(
                "--cancel-runs",
                action="store_true",
                help="also cancel queued and running runs (default: let them finish)",
            ),
        ),
    ),
    Command(
        "resume",
        "turn every schedule and sensor of the migration on",
        lambda a: automation(True),
    ),
    Command(
        "rollback",
        "restore lake tables to an earlier Delta version or moment, rewind the watermarks",
        lambda a: rollback(a.target, a.tables, a.dry_run),
        (
            option(
                "--to",
                required=True,
                dest="target",
                help="ISO 8601 UTC time (2026-11-25T22:00:00Z), or a Delta version with one "
                "--table",
            ),
            option(
                "--table",
                action="append",
                dest="tables",
                help="a lake table (silver/llm_interactions) or a source table for all its layers",
            ),
            option("--dry-run", action="store_true", help="show what would change, change nothing"),
        ),
    ),
)
COMMANDS_BY_NAME = {command.name: command for command in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-observatory",
        description="Migrate LLM interaction logs into a Delta lake through Dagster, provably.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        subparser = subparsers.add_parser(command.name, help=command.help)
        for declared in command.options:
            subparser.add_argument(*declared.flags, **declared.settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Partitioned asset checks are a Dagster preview feature; say so once in the README, not
    # on every command an operator types.
    warnings.filterwarnings("ignore", message=".*is currently in preview.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS_BY_NAME[args.command].run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
