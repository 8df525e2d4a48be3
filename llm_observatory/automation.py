"""What keeps the lake in sync without anyone at the UI: the 22:00 UTC schedule and the sensor.

- `daily_sync_2200_utc` (the migration guide's daily trigger): one run that materializes the UTC
  day that just closed (bronze, silver, gold and their checks) and then runs a full cycle per
  table, reconciling the recent days and the day's rotating slice of the history.
- `source_changes`: polls each table's `max(last_modified)` (an index seek; skipped while every
  slot of the `llm_obs_source` pool is taken, as a sensor runs outside the pool) and, when it moved
  since the last request, asks for a changes-only cycle of the tables that moved. Its cursor
  holds the last value seen per table and the run key names those values, so the same change is
  never synced twice by it.

Both start stopped: turn them on once the history backfill is done (the UI, or `dagster
schedule start` / `dagster sensor start`).
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from llm_observatory.assets.sync import SYNC_GROUP, sync_key, sync_op_name
from llm_observatory.partitions import start_date
from llm_observatory.resources.source import SourceDatabase, SourceError
from llm_observatory.resources.source_load import SOURCE_POOL, pool_is_full
from llm_observatory.tables import TABLES

SYNC_JOB = "sync_lake"
DAILY_CYCLE_JOB = "daily_cycle"
DAILY_SCHEDULE = "daily_sync_2200_utc"
CHANGES_SENSOR = "source_changes"
SENSOR_INTERVAL_SECONDS = 300

sync_lake = dg.define_asset_job(
    SYNC_JOB,
    selection=dg.AssetSelection.groups(SYNC_GROUP),
    description="One incremental cycle per table now (what `llm-observatory sync` runs).",
)
daily_cycle = dg.define_asset_job(
    DAILY_CYCLE_JOB,
    selection=dg.AssetSelection.groups("bronze", "silver", SYNC_GROUP)
    | dg.AssetSelection.assets(["gold", "daily_metrics"]),
    description="The day that just closed, materialized with its checks, then a full cycle.",
)


def changes_only_config(tables) -> dict:
    return {
        "ops": {sync_op_name(table): {"config": {"reconcile_recent_days": 0}} for table in tables}
    }


@dg.schedule(
    name=DAILY_SCHEDULE,
    cron_schedule="0 22 * * *",
    execution_timezone="UTC",
    job=daily_cycle,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="22:00 UTC: the closed day materialized, then a full incremental cycle.",
)
def daily_sync_schedule(context: dg.ScheduleEvaluationContext):
    moment = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    closed_day = moment.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    if closed_day < start_date():
        return dg.SkipReason(f"{closed_day} is before the first partition {start_date()}")
    return dg.RunRequest(
        run_key=f"daily-{closed_day.isoformat()}",
        partition_key=closed_day.isoformat(),
        tags={"llm_observatory/cycle": "daily"},
    )


@dg.sensor(
    name=CHANGES_SENSOR,
    job=sync_lake,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a changes-only cycle of each table whose max(last_modified) moved.",
)
def source_changes_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase):
    # A sensor runs outside any step: it queries only while the source's budget has room.
    if pool_is_full(context.instance):
        return dg.SkipReason(f"every {SOURCE_POOL} slot is taken: the source is not polled now")
    seen = json.loads(context.cursor) if context.cursor else {}
    moved = []
    for table in TABLES:
        try:
            newest = source.latest_change(source.describe_table(table))
        except SourceError as error:
            return dg.SkipReason(f"source unreachable: {error}")
        if newest is None:
            continue
        value = newest.isoformat()
        previous = seen.get(table.name)
        if previous is None or dt.datetime.fromisoformat(previous) < newest:
            moved.append(table)
        seen[table.name] = value
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if not moved:
        return dg.SkipReason("no table's max(last_modified) moved since the last request")
    return dg.RunRequest(
        run_key="changes:" + ",".join(f"{table.name}@{seen[table.name]}" for table in moved),
        asset_selection=[sync_key(table) for table in moved],
        run_config=changes_only_config(moved),
        tags={"llm_observatory/cycle": "changes"},
    )
