"""Turning the migration's automation off and on as one switch (the pre-cutover rollback).

`pause` stops every schedule and sensor of the code location in the Dagster instance, the same
state the UI's toggles and the daemon read, so nothing new is launched; runs already going are
left to finish (or cancelled on request). `resume` starts them all again. Neither touches the
source or the lake: they report what state the lake and the watermarks are in, so an operator
knows where a later resume or rollback starts from.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.remote_representation.external import RemoteRepository
from dagster._core.scheduler.instigation import InstigatorStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from llm_observatory.io.delta_lake import open_table
from llm_observatory.layout import lake_tables
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import TABLES

DEFINITIONS_MODULE = "llm_observatory.definitions"
# workspace.yaml loads the module without a location name, so Dagster names the location after
# the module; instigator state is keyed by location, repository and name, so ours must match
# for the daemon and the UI to see what `pause` and `resume` set.
LOCATION_NAME = DEFINITIONS_MODULE
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@contextmanager
def migration_repository(
    instance: dg.DagsterInstance, location_name: str = LOCATION_NAME
) -> Iterator[RemoteRepository]:
    """The code location as the daemon sees it, loaded in this process."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=os.getcwd(),
        ),
        location_name=location_name,
    )
    with InProcessCodeLocation(origin, instance=instance) as location:
        [repository] = location.get_repositories().values()
        yield repository


@dataclass(frozen=True)
class InstigatorChange:
    kind: str  # "schedule" or "sensor"
    name: str
    before: str
    after: str


@dataclass
class LakeTableState:
    name: str
    version: int | None
    committed_at: dt.datetime | None


@dataclass
class WatermarkState:
    table: str
    watermark: dt.datetime | None
    completed_at: dt.datetime | None
    open_cycles: list[int]


@dataclass
class AutomationReport:
    action: str
    changes: list[InstigatorChange] = field(default_factory=list)
    runs_in_progress: list[str] = field(default_factory=list)
    runs_cancelled: list[str] = field(default_factory=list)
    runs_not_cancelled: list[str] = field(default_factory=list)
    lake: list[LakeTableState] = field(default_factory=list)
    watermarks: list[WatermarkState] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{self.action}:"]
        for change in self.changes:
            lines.append(f"  {change.kind} {change.name}: {change.before} -> {change.after}")
        if self.runs_cancelled:
            lines.append(f"  runs cancelled: {', '.join(self.runs_cancelled)}")
        if self.runs_not_cancelled:
            lines.append(
                "  runs that could not be cancelled (still going): "
                + ", ".join(self.runs_not_cancelled)
            )
        left = [run for run in self.runs_in_progress if run not in self.runs_cancelled]
        if left:
            lines.append(f"  runs in progress, left to finish: {', '.join(left)}")
        else:
            lines.append("  no run in progress")
        lines.append("watermarks (the latest COMPLETED cycle per table):")
        for mark in self.watermarks:
            state = mark.watermark.isoformat() if mark.watermark else "none yet (from bronze)"
            extra = f"; open cycles {mark.open_cycles}" if mark.open_cycles else ""
            lines.append(f"  {mark.table}: {state}{extra}")
        lines.append("lake tables (current Delta version, committed at):")
        for table in self.lake:
            if table.version is None:
                lines.append(f"  {table.name}: absent")
            else:
                moment = table.committed_at.isoformat() if table.committed_at else "?"
                lines.append(f"  {table.name}: v{table.version} at {moment}")
        return lines


def lake_state(lake: LakeResource) -> list[LakeTableState]:
    states = []
    for name, lake_table in lake_tables(lake).items():
        table = open_table(lake_table.location)
        if table is None:
            states.append(LakeTableState(name, None, None))
            continue
        [latest] = table.history(1)
        stamp = latest.get("timestamp")
        moment = dt.datetime.fromtimestamp(stamp / 1000, dt.UTC) if stamp else None
        states.append(LakeTableState(name, table.version(), moment))
    return states


def watermark_state(control: ControlDatabase) -> list[WatermarkState]:
    states = []
    for table in TABLES:
        completed = control.completed_watermark(table.name)
        states.append(
            WatermarkState(
                table=table.name,
                watermark=completed.last_extracted_timestamp if completed else None,
                completed_at=completed.extraction_end_time if completed else None,
                open_cycles=[row.id for row in control.open_cycles(table.name)],
            )
        )
    return states


def set_automation(
    instance: dg.DagsterInstance,
    running: bool,
    lake: LakeResource,
    control: ControlDatabase,
    cancel_runs: bool = False,
    location_name: str = LOCATION_NAME,
    own_run_id: str | None = None,
) -> AutomationReport:
    """Every schedule and sensor of the location on (`running`) or off; idempotent."""
    report = AutomationReport(action="resume" if running else "pause")
    wanted = "RUNNING" if running else "STOPPED"
    with migration_repository(instance, location_name) as repository:
        for schedule in repository.get_schedules():
            stored = instance.get_instigator_state(
                schedule.get_remote_origin_id(), schedule.selector_id
            )
            before = _status(schedule.get_current_instigator_state(stored).status)
            if running:
                instance.start_schedule(schedule)
            else:
                instance.stop_schedule(
                    schedule.get_remote_origin_id(), schedule.selector_id, schedule
                )
            report.changes.append(InstigatorChange("schedule", schedule.name, before, wanted))
        for sensor in repository.get_sensors():
            stored = instance.get_instigator_state(
                sensor.get_remote_origin_id(), sensor.selector_id
            )
            before = _status(sensor.get_current_instigator_state(stored).status)
            if running:
                instance.start_sensor(sensor)
            else:
                instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
            report.changes.append(InstigatorChange("sensor", sensor.name, before, wanted))
    runs = instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    report.runs_in_progress = [
        record.dagster_run.run_id for record in runs if record.dagster_run.run_id != own_run_id
    ]
    if cancel_runs and not running:
        for run_id in report.runs_in_progress:
            if _cancel(instance, run_id):
                report.runs_cancelled.append(run_id)
            else:
                report.runs_not_cancelled.append(run_id)
    report.lake = lake_state(lake)
    report.watermarks = watermark_state(control)
    return report


def automation_status(instance: dg.DagsterInstance) -> dict[str, str]:
    """`schedule:name` / `sensor:name` -> RUNNING or STOPPED, as the daemon would read it."""
    states = {}
    with migration_repository(instance) as repository:
        for kind, instigators in (
            ("schedule", repository.get_schedules()),
            ("sensor", repository.get_sensors()),
        ):
            for instigator in instigators:
                stored = instance.get_instigator_state(
                    instigator.get_remote_origin_id(), instigator.selector_id
                )
                current = instigator.get_current_instigator_state(stored)
                states[f"{kind}:{instigator.name}"] = _status(current.status)
    return states


def _status(status: InstigatorStatus) -> str:
    running = (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE)
    return "RUNNING" if status in running else "STOPPED"


def _cancel(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Asks the run coordinator to cancel a run (dequeues it, or has the launcher terminate
    it); a run that no launcher can reach (a CLI run in another process) is reported."""
    try:
        return bool(instance.run_coordinator.cancel_run(run_id))
    except (NotImplementedError, dg.DagsterInvariantViolationError):
        return False
