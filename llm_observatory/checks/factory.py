"""The partitioned asset checks of the validation layers, made per table from `tables.py`.

Each runs after its asset in the same run (one result per partition, shown in the UI), reads
the lake as it is now (each table's log read once per step, not once per check), and can be
evaluated again later by the cutover report. A day that reconciles with the source is recorded
in the control database (`migration_reconciliation`), where the cutover report checks that no
day goes unproven longer than the rotation period.
"""

import dagster as dg

from llm_observatory.checks.checksums import CHECKSUM_CHECK, checksum_result
from llm_observatory.checks.day_profile import recorded_profile
from llm_observatory.checks.quality import (
    QUARANTINE_SHARE_CHECK,
    SILVER_RULES_CHECK,
    silver_rule_results,
)
from llm_observatory.checks.spot_check import SPOT_CHECK, spot_check_result
from llm_observatory.checks.timestamps import (
    HOUR_GAPS_CHECK,
    IN_PARTITION_CHECK,
    timestamp_results,
)
from llm_observatory.io.delta_lake import reusing_opened_tables
from llm_observatory.layout import (
    bronze_key,
    bronze_location,
    day_filter,
    quarantine_location,
    silver_key,
    silver_location,
)
from llm_observatory.partitions import daily_partitions
from llm_observatory.reconcile import RECONCILED_CHECK, reconcile_day, reconciliation_result
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.resources.source_load import SOURCE_POOL
from llm_observatory.tables import TABLES, TableSpec

CHECK_DESCRIPTIONS = {
    CHECKSUM_CHECK: "Every current file of the day has the SHA-256 it was committed with.",
    IN_PARTITION_CHECK: "No row has an event time outside its partition's UTC day.",
    SPOT_CHECK: "Seeded random source records equal bronze on every column.",
    HOUR_GAPS_CHECK: "Hours without rows: ERROR if the source has rows there, else WARN.",
    SILVER_RULES_CHECK: "No silver row breaks a quality rule.",
    QUARANTINE_SHARE_CHECK: "WARN when the quarantined share exceeds the table's threshold.",
    RECONCILED_CHECK: (
        "Per-hour fingerprints of (key, version) in silver + quarantine equal the source's; "
        "differing keys listed."
    ),
}


def _spec(name: str, key: dg.AssetKey, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name,
        asset=key,
        blocking=blocking,
        partitions_def=daily_partitions,
        description=CHECK_DESCRIPTIONS[name],
    )


def _day(context: dg.AssetCheckExecutionContext):
    return context.partition_time_window.start.date()


def bronze_checks(table: TableSpec) -> dg.AssetChecksDefinition:
    key = bronze_key(table)

    @dg.multi_asset_check(
        specs=[
            _spec(CHECKSUM_CHECK, key, blocking=True),
            _spec(IN_PARTITION_CHECK, key),
            _spec(SPOT_CHECK, key),
            _spec(HOUR_GAPS_CHECK, key),
        ],
        name=f"bronze_{table.name}_integrity",
        pool=SOURCE_POOL,
    )
    def _checks(context: dg.AssetCheckExecutionContext, source: SourceDatabase, lake: LakeResource):
        day = _day(context)
        location = bronze_location(lake, table)
        # A new sample every run; the seed in the metadata draws the same one again.
        seed = f"{day.isoformat()}:{context.run.run_id}"
        described = source.describe_table(table)
        with reusing_opened_tables():
            recorded = recorded_profile(table, location, day)
            results = [
                checksum_result(location, day_filter(day), day.isoformat()),
                *timestamp_results(
                    table, location, day, source, described, recorded and recorded.events
                ),
                spot_check_result(table, source, described, lake, day, table.spot_check_rows, seed),
            ]
        yield from results

    return _checks


def silver_checks(table: TableSpec) -> dg.AssetChecksDefinition:
    key = silver_key(table)

    @dg.multi_asset_check(
        specs=[
            _spec(CHECKSUM_CHECK, key),
            _spec(SILVER_RULES_CHECK, key),
            _spec(QUARANTINE_SHARE_CHECK, key),
            _spec(IN_PARTITION_CHECK, key),
            _spec(RECONCILED_CHECK, key),
        ],
        name=f"silver_{table.name}_integrity",
        pool=SOURCE_POOL,
    )
    def _checks(
        context: dg.AssetCheckExecutionContext,
        source: SourceDatabase,
        lake: LakeResource,
        control: ControlDatabase,
    ):
        day = _day(context)
        location = silver_location(lake, table)
        with reusing_opened_tables():
            recorded = recorded_profile(table, location, day, quarantine_location(lake, table))
            results = [
                checksum_result(location, day_filter(day), day.isoformat()),
                *silver_rule_results(table, lake, day, recorded and recorded.rules),
                *timestamp_results(table, location, day, recorded=recorded and recorded.events),
            ]
            reconciliation = reconcile_day(
                table, source, lake, day, recorded=recorded and recorded.fingerprints
            )
        yield from results
        yield reconciliation_result(reconciliation)
        if reconciliation.matches:
            control.record_reconciled(
                table.name, {day: 0}, by=f"check {RECONCILED_CHECK} run {context.run.run_id}"
            )

    return _checks


integrity_checks = [bronze_checks(t) for t in TABLES] + [silver_checks(t) for t in TABLES]
