"""Putting lake tables back as they were at an earlier moment or Delta version (the
after-cutover rollback), with the watermarks rewound so the next sync re-applies the rest.

Every table is restored with Delta's RESTORE, which is itself a new commit: nothing is deleted,
so a rollback can be rolled forward again by restoring the version it replaced. Several tables
cannot change in one Delta commit; if one restore fails, the tables already restored are put
back to the versions they had, so a failed rollback leaves the lake as it found it.

Refused, with nothing changed: a moment before any selected table existed, a version a table
never had, a target older than the retention (its files may be vacuumed, its log expired), a
target whose data files are gone, and a lake a sync cycle is writing to.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import dagster as dg
from deltalake import CommitProperties, DeltaTable

from llm_observatory.incremental.cycle import initial_watermark
from llm_observatory.io.delta_lake import COMMIT_METADATA_PREFIX, current_files, open_table
from llm_observatory.layout import (
    LakeTable,
    UnknownLakeTableError,
    bronze_location,
    select_tables,
)
from llm_observatory.operate.automation_state import IN_PROGRESS
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import TABLES, TableSpec

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30


class RollbackError(RuntimeError):
    """The rollback cannot be done as asked; nothing was changed."""


def parse_target(text: str) -> int | dt.datetime:
    """A Delta version (digits) or an ISO 8601 moment (UTC when no zone is given)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise RollbackError(
            f"--to {text!r} is neither a Delta version nor an ISO 8601 time "
            "(e.g. 2026-11-25T22:00:00Z)"
        ) from error
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@dataclass
class TableStep:
    table: LakeTable
    current_version: int
    target_version: int | None  # None: the table did not exist yet, it is emptied
    target_time: dt.datetime  # when the target version was committed (or the moment asked)

    @property
    def changes(self) -> bool:
        return self.target_version != self.current_version

    def describe(self) -> str:
        if not self.changes:
            return f"{self.table.name}: already at v{self.current_version}, unchanged"
        if self.target_version is None:
            return (
                f"{self.table.name}: v{self.current_version} -> emptied (created after "
                f"{self.target_time.isoformat()})"
            )
        return (
            f"{self.table.name}: v{self.current_version} -> v{self.target_version} "
            f"(committed {self.target_time.isoformat()})"
        )


@dataclass
class WatermarkStep:
    table: str
    current: dt.datetime | None
    rewound: dt.datetime | None
    moment: dt.datetime

    def describe(self) -> str:
        def shown(value):
            return value.isoformat() if value else "none (read everything)"

        return f"watermark {self.table}: {shown(self.current)} -> {shown(self.rewound)}"


@dataclass
class RollbackPlan:
    target: int | dt.datetime
    tables: list[TableStep]
    watermarks: list[WatermarkStep] = field(default_factory=list)
    restored: dict[str, int] = field(default_factory=dict)  # table -> new version, once applied

    def lines(self) -> list[str]:
        return [step.describe() for step in self.tables] + [
            step.describe() for step in self.watermarks
        ]


def _history(table: DeltaTable) -> list[tuple[int, dt.datetime]]:
    """(version, commit time) of every version the log still has, oldest first."""
    entries = []
    for entry in table.history():
        version, stamp = entry.get("version"), entry.get("timestamp")
        if version is not None and stamp is not None:
            entries.append((int(version), dt.datetime.fromtimestamp(stamp / 1000, dt.UTC)))
    return sorted(entries)


def _table_step(table: LakeTable, target: int | dt.datetime) -> TableStep | None:
    """Where one table goes back to: the version asked, or the last committed at or before
    the moment (emptied when it was created after it); None for a table that does not exist
    and a moment asked."""
    delta = open_table(table.location)
    if delta is None:
        if isinstance(target, int):
            raise RollbackError(f"{table.name} does not exist, it has no version {target}")
        return None
    history = _history(delta)
    current = delta.version()
    if isinstance(target, int):
        matches = [moment for version, moment in history if version == target]
        if target > current or not matches:
            oldest = history[0][0] if history else current
            gone = " (older entries were cleaned up past delta.logRetentionDuration)"
            raise RollbackError(
                f"{table.name} has no version {target} (its log holds v{oldest}..v{current})"
                + (gone if 0 <= target < oldest else "")
            )
        return TableStep(table, current, target, matches[0])
    before = [(version, moment) for version, moment in history if moment <= target]
    if before:
        version, moment = before[-1]
        return TableStep(table, current, version, moment)
    if history and history[0][0] == 0:
        return TableStep(table, current, None, target)
    raise RollbackError(
        f"{table.name}: its log no longer reaches back to {target.isoformat()} "
        f"(oldest kept: v{history[0][0]} at {history[0][1].isoformat()})"
    )


def plan_rollback(
    lake: LakeResource,
    control: ControlDatabase,
    target: int | dt.datetime,
    names: list[str] | None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    now: dt.datetime | None = None,
) -> RollbackPlan:
    """What a rollback would do, checked against the lake and the control database; raises
    RollbackError when it cannot be done."""
    now = now or dt.datetime.now(dt.UTC)
    horizon = now - dt.timedelta(days=retention_days)
    try:
        chosen = select_tables(lake, names)
    except UnknownLakeTableError as error:
        raise RollbackError(str(error)) from None
    if isinstance(target, int) and len(chosen) != 1:
        raise RollbackError(
            "a Delta version names one table's state: give exactly one lake table with "
            "--table (e.g. silver/llm_interactions), or roll back to a time"
        )
    busy = {t.source_table.name: control.open_cycles(t.source_table.name) for t in chosen}
    busy = {name: rows for name, rows in busy.items() if rows}
    if busy:
        listed = ", ".join(f"{name} (cycle {rows[0].id})" for name, rows in busy.items())
        raise RollbackError(
            f"a sync cycle is in progress or was interrupted for {listed}: pause the "
            "automation and let it finish (or the next sync undo it) before rolling back"
        )

    steps = [step for table in chosen if (step := _table_step(table, target)) is not None]
    if not steps or all(step.target_version is None for step in steps):
        asked = target.isoformat() if isinstance(target, dt.datetime) else f"v{target}"
        raise RollbackError(
            f"no selected lake table existed at {asked}: that is before the lake existed"
        )
    for step in steps:
        moment = step.target_time
        if step.changes and moment < horizon:
            raise RollbackError(
                f"{step.table.name}: {moment.isoformat()} is past the retention of "
                f"{retention_days} days (old versions are kept until {horizon.isoformat()})"
            )
        if step.changes and step.target_version is not None:
            _require_files(step)

    plan = RollbackPlan(target=target, tables=steps)
    moment = target if isinstance(target, dt.datetime) else steps[0].target_time
    changed = dict.fromkeys(step.table.source_table.name for step in steps if step.changes)
    for source_table in changed:
        in_force = control.completed_watermark(source_table)
        current = in_force.last_extracted_timestamp if in_force else None
        earlier = control.completed_watermark(source_table, at_or_before=moment)
        rewound = earlier.last_extracted_timestamp if earlier else None
        if earlier is None:
            spec = next(t for t in TABLES if t.name == source_table)
            rewound = _initial_watermark_at(lake, spec, moment)
        if in_force is not None and (rewound is None or current is None or rewound < current):
            plan.watermarks.append(WatermarkStep(source_table, current, rewound, moment))
    return plan


def refuse_while_runs_in_progress(instance, own_run_id: str | None = None) -> None:
    """A rollback under a running backfill or sync would race its commits: refused."""
    running = [
        record.dagster_run.run_id
        for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS))
        if record.dagster_run.run_id != own_run_id
    ]
    if running:
        raise RollbackError(
            f"{len(running)} Dagster run(s) in progress ({', '.join(r[:8] for r in running)}): "
            "`llm-observatory pause` and let them finish first"
        )


def _require_files(step: TableStep) -> None:
    """Every data file of the target version must still be in storage (not vacuumed)."""
    location = step.table.location
    delta = DeltaTable(
        location.uri, version=step.target_version, storage_options=location.storage_options or None
    )
    wanted = {path for path, _ in current_files(delta, None)}
    root = location.fs_path.rstrip("/")
    present = {
        path[len(root) + 1 :]
        for path in location.filesystem.find(root)
        if path.startswith(root + "/")
    }
    missing = sorted(wanted - present)
    if missing:
        raise RollbackError(
            f"{step.table.name}: {len(missing)} data file(s) of v{step.target_version} are gone "
            f"(vacuumed?), e.g. {missing[0]}"
        )


def _initial_watermark_at(
    lake: LakeResource, table: TableSpec, moment: dt.datetime
) -> dt.datetime | None:
    """The watermark the first cycle would have used with bronze as it was at `moment`."""
    bronze = open_table(bronze_location(lake, table))
    if bronze is None:
        return None
    earlier = [version for version, committed in _history(bronze) if committed <= moment]
    if not earlier:
        return None
    return initial_watermark(lake, table, as_of_version=earlier[-1])


def apply_rollback(plan: RollbackPlan, control: ControlDatabase, reason: str) -> RollbackPlan:
    """Restores every table of the plan (each one commit); on any failure puts back those
    already restored and raises. Then rewinds the watermarks."""
    done: list[tuple[TableStep, DeltaTable]] = []
    metadata = {
        f"{COMMIT_METADATA_PREFIX}operation": "rollback",
        f"{COMMIT_METADATA_PREFIX}reason": reason,
    }
    try:
        for step in plan.tables:
            if not step.changes:
                continue
            location = step.table.location
            delta = DeltaTable(location.uri, storage_options=location.storage_options or None)
            if delta.version() != step.current_version:
                raise RollbackError(
                    f"{step.table.name} changed while rolling back (v{step.current_version} "
                    f"-> v{delta.version()}); nothing was rolled back"
                )
            properties = CommitProperties(custom_metadata=metadata)
            if step.target_version is None:
                delta.delete(commit_properties=properties)
            else:
                delta.restore(step.target_version, commit_properties=properties)
            done.append((step, delta))
            plan.restored[step.table.name] = delta.version()
    except Exception as error:
        for step, _ in reversed(done):
            location = step.table.location
            try:
                delta = DeltaTable(location.uri, storage_options=location.storage_options or None)
                delta.restore(
                    step.current_version,
                    commit_properties=CommitProperties(
                        custom_metadata={
                            **metadata,
                            f"{COMMIT_METADATA_PREFIX}reason": f"undo of a failed rollback: "
                            f"{error}",
                        }
                    ),
                )
            except Exception:
                logger.exception(
                    "could not put %s back to v%s", step.table.name, step.current_version
                )
                raise RollbackError(
                    f"rollback failed ({error}) and {step.table.name} could not be put back to "
                    f"v{step.current_version}: restore it by hand with "
                    f"`llm-observatory rollback --to {step.current_version} --table "
                    f"{step.table.name}`"
                ) from error
        plan.restored.clear()
        if isinstance(error, RollbackError):
            raise
        raise RollbackError(f"rollback failed, nothing changed: {error}") from error
    for step in plan.watermarks:
        control.rewind_watermark(step.table, step.rewound, f"rollback: {reason}")
    return plan
