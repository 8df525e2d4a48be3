"""One incremental cycle of one table: watermark in, changes merged, deletes repaired, watermark
out.

The order is what makes a cycle safe to fail anywhere:

0. Take the table's sync lease in the control database (see `resources/leases.py`): one open
   cycle per table across every process and Dagster instance; a second is refused at once,
   naming the holder.
1. Clean up after cycles that died (a STARTED row: holding the lease proves its holder gone):
   their lake commits, found by the cycle id in the commit metadata, are undone and the row is
   marked FAILED.
2. Read the watermark in force (the latest COMPLETED row; before the first cycle, the oldest
   source high-water mark recorded by the bronze copies) and record a STARTED row with the lake
   tables' versions.
3. Take `high_water` = the source's `max(last_modified)` (the source's own clock, never this
   machine's) and extract `(watermark - overlap, high_water]`: the overlap re-reads the last
   minutes, catching transactions that committed late with an older `last_modified`; what the
   lake already holds is dropped by the merge, so the re-read changes nothing.
4. Merge (see `merge.py`), which checks the rewritten days from the committed files.
5. Reconcile the recent days and a rotating slice of older ones with the per-hour fingerprints:
   keys the source no longer has are removed and recorded as deleted, keys it moved are removed
   from their old day, rows the lake lacks or holds stale (up to `high_water`) are re-read.
   Every day a merge rewrites is leased first, so a backfill of that day waits its turn (or
   this cycle fails cleanly while a backfill holds it).
6. Only then COMPLETED with the new watermark. Any error: the lake commits of this cycle are
   undone, FAILED with the error, the previous watermark stands; unless the COMPLETED update
   reached the database although the client saw an error, which the row itself tells.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from llm_observatory.incremental.merge import (
    CapturedRows,
    KeyLookup,
    KeySet,
    MergeOutcome,
    apply_changes,
    as_day,
    day_numbers,
    lake_versions_of,
)
from llm_observatory.io.delta_lake import (
    APP_ID_PREFIX,
    COMMIT_METADATA_PREFIX,
    current_files,
    open_table,
    open_table_now,
    restore_partition,
    reusing_opened_tables,
    snapshot_partition,
    table_version,
)
from llm_observatory.io.evidence import read_evidence
from llm_observatory.layout import (
    bronze_location,
    lake_locations,
)
from llm_observatory.partitions import start_date
from llm_observatory.reconcile import reconcile_day
from llm_observatory.resources.control import COMPLETED, ControlDatabase, as_utc
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.leases import LeaseHeldError, Leases, sync_resource
from llm_observatory.resources.source import SourceDatabase, SourceError
from llm_observatory.tables import TableSpec

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = dt.timedelta(minutes=10)


class CycleInProgressError(RuntimeError):
    """Another cycle of the same table is running; this one did nothing."""


@dataclass(frozen=True)
class SyncSettings:
    """How much a cycle re-reads and re-proves.

    `overlap`: how far before the watermark extraction starts again (late commits).
    `reconcile_recent_days`: the days up to the high-water mark's day reconciled every cycle
    (0 = changes only, as the sensor's frequent cycles do).
    `rotation_period_days`: every day of the history is reconciled once per this many daily
    cycles (0 = never); each cycle takes the days whose ordinal falls on today's slot.
    `repair_days`: reconcile exactly these days instead (a repair, see `repair_days`).
    `read_changes`: False for a repair, which reads no changes and no departures and leaves
    the watermark where it was.
    """

    overlap: dt.timedelta = DEFAULT_OVERLAP
    reconcile_recent_days: int = 2
    rotation_period_days: int = 30
    first_day: dt.date | None = None
    repair_days: tuple[dt.date, ...] = ()
    read_changes: bool = True

    def days_to_reconcile(self, newest: dt.date) -> list[dt.date]:
        if self.repair_days:
            return sorted(set(self.repair_days))
        days = {newest - dt.timedelta(days=offset) for offset in range(self.reconcile_recent_days)}
        first = self.first_day or start_date()
        if self.rotation_period_days > 0 and self.reconcile_recent_days > 0:
            slot = newest.toordinal() % self.rotation_period_days
            day = first
            while day <= newest:
                if day.toordinal() % self.rotation_period_days == slot:
                    days.add(day)
                day += dt.timedelta(days=1)
        return sorted(day for day in days if first <= day <= newest)


@dataclass
class CycleResult:
    table: str
    cycle_id: int
    watermark_before: dt.datetime | None
    high_water: dt.datetime | None
    extracted_from: dt.datetime | None
    rows_extracted: int = 0
    rows_validated: int = 0
    changes: MergeOutcome = field(default_factory=MergeOutcome)
    repairs: MergeOutcome = field(default_factory=MergeOutcome)
    days_reconciled: list[str] = field(default_factory=list)
    deleted_keys: int = 0
    moved_keys: int = 0
    repaired_keys: int = 0
    abandoned_cycles_undone: list[int] = field(default_factory=list)
    seconds: float = 0.0
    lag_seconds: float | None = None
    # Whether the source records deletes and moves (see resources/departures.py), and why not.
    departure_capture: str = ""
    departures_read: int = 0
    # A repair (`repair_days`) reads no changes, so it leaves the watermark where it was.
    advances_watermark: bool = True
    # Differences the fingerprints found per reconciled day (all repaired when COMPLETED).
    differences_by_day: dict[dt.date, int] = field(default_factory=dict)

    @property
    def watermark(self) -> dt.datetime | None:
        """The new watermark: the high-water mark, never behind the previous one (the source's
        maximum drops when its newest rows are deleted; what lay between is gone anyway)."""
        if not self.advances_watermark:
            return self.watermark_before
        return _later(self.high_water, self.watermark_before)

    @property
    def days_changed(self) -> list[str]:
        return sorted(set(self.changes.days) | set(self.repairs.days))

    def describe(self) -> str:
        changed = self.days_changed
        return (
            f"{self.table}: cycle {self.cycle_id} extracted {self.rows_extracted} row(s) "
            f"changed in ({_iso(self.extracted_from)}, {_iso(self.high_water)}], "
            f"{self.changes.upserted_rows} new version(s), {self.changes.unchanged_rows} already "
            f"in the lake; {len(changed)} day(s) rewritten; reconciled "
            f"{len(self.days_reconciled)} day(s): {self.deleted_keys} deleted, "
            f"{self.moved_keys} moved, {self.repaired_keys} repaired; "
            f"{self.departures_read} departure(s) read ({self.departure_capture}); watermark now "
            f"{_iso(self.watermark)} ({self.seconds:.1f} s)"
        )

    def to_metadata(self) -> dict:
        return {
            "cycle_id": self.cycle_id,
            "watermark": _iso(self.watermark),
            "watermark_before": _iso(self.watermark_before),
            "extracted_from": _iso(self.extracted_from),
            "rows_extracted": self.rows_extracted,
            "rows_validated": self.rows_validated,
            **{f"changes_{k}": v for k, v in self.changes.to_metadata().items()},
            "days_rewritten": self.days_changed,
            "days_reconciled": self.days_reconciled,
            "deleted_keys": self.deleted_keys,
            "moved_keys": self.moved_keys,
            "repaired_keys": self.repaired_keys,
            "abandoned_cycles_undone": self.abandoned_cycles_undone,
            "departure_capture": self.departure_capture,
            "departures_read": self.departures_read,
            "seconds": round(self.seconds, 3),
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
        }


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def cycle_tag(table: TableSpec, cycle_id: int) -> str:
    """What a cycle's commits carry as `llm_observatory.cycle_id`."""
    return f"{table.name}#{cycle_id}"


def initial_watermark(
    lake: LakeResource, table: TableSpec, as_of_version: int | None = None
) -> dt.datetime | None:
    """Before the first cycle: the oldest change high-water mark recorded by the bronze copies
    now in the lake (each copy read the source's `max(last_modified)` before it began), so no
    change made after any day was copied is missed. None (read everything) without bronze.
    `as_of_version`: as bronze was at that version (a rollback's target).

    Read from bronze's evidence table, which outlives the log: per day, the mark of the newest
    copy whose commit landed (its application transaction is in the log, which checkpoints
    keep); evidence of a copy that never landed does not count."""
    location = bronze_location(lake, table)
    # Moved to an older version: an object of its own, never one shared for reading.
    bronze = open_table(location) if as_of_version is None else open_table_now(location)
    if bronze is None:
        return None
    if as_of_version is not None:
        bronze.load_as_version(as_of_version)
    evidence = read_evidence(location)
    if any(path not in evidence for path, _ in current_files(bronze, None)):
        return _initial_watermark_from_history(bronze, as_of_version)
    landed: dict[str, bool] = {}
    newest_by_day: dict[str, dict] = {}
    for entry in evidence.values():
        if not entry.get("change_high_water"):
            continue  # a sync's or a compaction's files: not a copy of the day
        write_id = entry["write_id"]
        if write_id not in landed:
            landed[write_id] = bronze.transaction_version(f"{APP_ID_PREFIX}{write_id}") is not None
        if not landed[write_id]:
            continue
        day = _day_text(entry["partition"].get("date"))
        held = newest_by_day.get(day)
        if held is None or entry["recorded_at"] > held["recorded_at"]:
            newest_by_day[day] = entry
    marks = [as_utc(entry["change_high_water"]) for entry in newest_by_day.values()]
    return min(marks) if marks else None


def _day_text(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _initial_watermark_from_history(bronze, as_of_version: int | None) -> dt.datetime | None:
    """The same from the commits' metadata, for a lake written before evidence tables."""
    latest_by_day: dict[str, str] = {}
    for entry in bronze.history():
        if as_of_version is not None and entry.get("version", 0) > as_of_version:
            continue
        day = entry.get(f"{COMMIT_METADATA_PREFIX}partition")
        if day and day not in latest_by_day:
            latest_by_day[day] = entry.get(f"{COMMIT_METADATA_PREFIX}change_high_water", "")
    marks = [as_utc(value) for value in latest_by_day.values() if value]
    if not marks or len(marks) < len(latest_by_day):
        return None
    return min(marks)


def _commit_days(entry: dict) -> set[str] | None:
    """The days a commit of ours changed (from its metadata); None when it does not say."""
    days = entry.get(f"{COMMIT_METADATA_PREFIX}days")
    if days:
        return set(json.loads(days))
    partition = entry.get(f"{COMMIT_METADATA_PREFIX}partition")
    return {partition} if partition else None


def undo_cycle(
    lake: LakeResource, table: TableSpec, tag: str, versions_before: dict[str, int | None]
) -> list[str]:
    """Puts back, in every lake table, the partitions a cycle's commits changed, as they were
    before it; returns what was undone.

    A day that another writer (a backfill run) rewrote after the cycle is left as that writer
    left it: its content is newer than the cycle's and undoing would lose it.
    """
    undone = []
    for name, location in lake_locations(lake, table).items():
        delta = open_table(location)
        if delta is None:
            continue
        before = versions_before.get(name)
        ours: set[str] = set()
        first_ours: int | None = None
        later: list[dict] = []
        # Only the commits since the cycle began: reading the whole history would cost one
        # storage read per commit the table ever had.
        since = delta.version() - (before if before is not None else -1)
        recent = delta.history(limit=max(since, 1))
        for entry in sorted(recent, key=lambda item: item.get("version", -1)):
            version = entry.get("version")
            if version is None or (before is not None and version <= before):
                continue
            if entry.get(f"{COMMIT_METADATA_PREFIX}cycle_id") == tag:
                ours |= _commit_days(entry) or set()
                first_ours = version if first_ours is None else first_ours
            elif first_ours is not None:
                later.append(entry)
        if not ours:
            continue
        for entry in later:
            if entry.get(f"{COMMIT_METADATA_PREFIX}operation") == "undo":
                continue
            theirs = _commit_days(entry)
            if theirs is None:
                logger.error(
                    "%s: an unrecognised commit (version %s) followed cycle %s; not undoing it "
                    "there, reconciliation will find any difference",
                    location.uri,
                    entry.get("version"),
                    tag,
                )
                ours = set()
                break
            ours -= theirs
        if not ours:
            continue
        snapshot = snapshot_partition(
            location, [("date", "in", sorted(ours))], version=before if before is not None else -1
        )
        restore_partition(snapshot, f"undo of sync cycle {tag}")
        undone.append(f"{name}: {len(ours)} day(s)")
    return undone


def _changed_rows(source: SourceDatabase, described, keys: list, folder: Path, table: TableSpec):
    if not keys:
        return None
    return CapturedRows.capture(
        source.rows_by_keys(described, keys),
        table,
        described.arrow_schema,
        folder / "repair.parquet",
    )


def run_cycle(
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    control: ControlDatabase,
    settings: SyncSettings | None = None,
    *,
    run_id: str | None = None,
    log: logging.Logger | None = None,
    spill_folder: Path | None = None,
) -> CycleResult:
    """One cycle of one table, under the table's sync lease (one open cycle per table across
    every process and instance), with a lease on every day it rewrites."""
    settings = settings or SyncSettings()
    log = log or logger
    control.ensure_schema()
    owner = f"sync of {table.name} (run {run_id})" if run_id else f"sync of {table.name}"
    with Leases(control, owner) as leases:
        try:
            leases.take([sync_resource(table.name)])
        except LeaseHeldError as error:
            raise CycleInProgressError(
                f"{table.name}: another sync cycle is running: {error}"
            ) from None
        # A cycle asks for the same tables many times (the lookups, the checks of the days it
        # rewrote, gold's rebuild): each is opened once and brought up to date after, which
        # reads only the commits since (a month of commits: 30 ms an opening locally, and on
        # ADLS a checkpoint of megabytes). The merge's writers open their own.
        with reusing_opened_tables():
            return _run_cycle_holding(
                table, source, lake, control, settings, leases, run_id, log, spill_folder
            )


def repair_days(
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    control: ControlDatabase,
    days: list[dt.date],
    *,
    run_id: str | None = None,
    log: logging.Logger | None = None,
) -> CycleResult:
    """Reconciles exactly `days` and applies what it finds (deleted and moved keys out, missing
    and stale rows re-read), as a cycle that reads no changes: same lease, same undo on
    failure, recorded in the watermark table, the watermark left where it was. What
    `verify --repair` runs for a range the rotation has not reached yet."""
    if not days:
        raise ValueError(f"{table.name}: no days to repair")
    settings = SyncSettings(repair_days=tuple(days), read_changes=False)
    return run_cycle(table, source, lake, control, settings, run_id=run_id, log=log)


def _undo_abandoned(
    table: TableSpec, lake: LakeResource, control: ControlDatabase, log: logging.Logger
) -> list[int]:
    """Undoes every STARTED cycle of the table. Called under the table's sync lease, so their
    holders are gone: they released the lease, or it expired, or their process died."""
    abandoned = []
    for row in control.open_cycles(table.name):
        undone = undo_cycle(lake, table, cycle_tag(table, row.id), row.lake_versions)
        control.fail_cycle(
            row.id,
            "abandoned: its process stopped before COMPLETED and its lease expired; lake "
            "changes undone"
            + (f" ({', '.join(undone)})" if undone else " (none had been committed)"),
        )
        log.warning("%s: undid abandoned cycle %s: %s", table.name, row.id, undone or "nothing")
        abandoned.append(row.id)
    return abandoned


def _run_cycle_holding(
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    control: ControlDatabase,
    settings: SyncSettings,
    leases: Leases,
    run_id: str | None,
    log: logging.Logger,
    spill_folder: Path | None,
) -> CycleResult:
    began = time.perf_counter()
    abandoned = _undo_abandoned(table, lake, control, log)
    in_force = control.completed_watermark(table.name)
    if in_force is not None:
        watermark = in_force.last_extracted_timestamp
    else:
        watermark = initial_watermark(lake, table)
    versions = {name: table_version(loc) for name, loc in lake_locations(lake, table).items()}
    cycle_id = control.start_cycle(table.name, watermark, run_id, versions)
    tag = cycle_tag(table, cycle_id)
    result = CycleResult(
        table=table.name,
        cycle_id=cycle_id,
        watermark_before=watermark,
        high_water=None,
        extracted_from=None if watermark is None else watermark - settings.overlap,
        abandoned_cycles_undone=abandoned,
        advances_watermark=settings.read_changes,
    )
    try:
        described = source.describe_table(table)
        schema = described.arrow_schema
        capture = source.departure_capture(table) if settings.read_changes else None
        if capture is not None:
            result.departure_capture = "on" if capture.active else f"off: {capture.reason}"
            if not capture.active:
                # Once per cycle: deletes and moves outside the reconciled days wait for the
                # rotation to reach their day.
                log.warning("%s: %s", table.name, capture.reason)
        result.high_water = _later(
            source.latest_change(described),
            source.latest_departure(described) if capture and capture.active else None,
        )
        last_modified = in_force.last_modified_timestamp if in_force else None
        with tempfile.TemporaryDirectory(prefix="llm-obs-sync-", dir=spill_folder) as folder:
            captured = None
            departed = None
            if result.high_water is not None and settings.read_changes:
                captured = CapturedRows.capture(
                    source.stream_changes(described, result.extracted_from, result.high_water),
                    table,
                    schema,
                    Path(folder) / "changes.parquet",
                )
                result.rows_extracted = captured.rows
                if captured.rows:
                    newest = int(captured.versions.max())
                    last_modified = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
                        microseconds=newest
                    )
                log.info(
                    "%s: %s row(s) changed in (%s, %s]",
                    table.name,
                    captured.rows,
                    _iso(result.extracted_from),
                    _iso(result.high_water),
                )
                result.changes = apply_changes(
                    table, lake, schema, captured, None, None, tag, leases=leases
                )
                log.info("%s: merged %s", table.name, result.changes.to_metadata())
                if capture is not None and capture.active:
                    departed = source.departures(
                        described, result.extracted_from, result.high_water
                    )
                    result.departures_read = departed.num_rows

            if result.high_water is not None:
                days = settings.days_to_reconcile(result.high_water.date())
                result.days_reconciled = [day.isoformat() for day in days]
                result.repairs = _reconcile_and_repair(
                    table,
                    source,
                    described,
                    lake,
                    days,
                    result,
                    tag,
                    Path(folder),
                    log,
                    leases,
                    captured=captured,
                    departed=departed,
                )
        result.rows_validated = result.changes.silver_rows_added + result.repairs.silver_rows_added
        leases.ensure_held()
        control.complete_cycle(
            cycle_id,
            result.watermark,
            last_modified,
            result.rows_extracted + result.repaired_keys,
            result.rows_validated,
        )
        _record_reconciled(table, control, tag, result, log)
    except BaseException as error:
        settled = _settle_failed_cycle(
            table, lake, control, cycle_id, tag, versions, error, result, log
        )
        if not settled:
            raise
    result.seconds = time.perf_counter() - began
    try:
        newest_now = source.latest_change(described)
        if newest_now is not None and result.watermark is not None:
            result.lag_seconds = max((newest_now - result.watermark).total_seconds(), 0.0)
    except SourceError:
        result.lag_seconds = None
    return result


def _record_reconciled(
    table: TableSpec,
    control: ControlDatabase,
    tag: str,
    result: CycleResult,
    log: logging.Logger,
) -> None:
    """Records the days this cycle reconciled (and repaired) for the report's rotation
    coverage, once the cycle counts. A failure here costs a day's record, never the cycle: the
    report then says the day is due, and the rotation's next pass records it."""
    if not result.differences_by_day:
        return
    try:
        control.record_reconciled(table.name, result.differences_by_day, by=f"sync cycle {tag}")
    except Exception as error:  # noqa: BLE001 - the cycle is COMPLETED; say so and go on
        log.warning(
            "%s: cycle %s completed but its %s reconciled day(s) could not be recorded: %s",
            table.name,
            result.cycle_id,
            len(result.differences_by_day),
            error,
        )


def _settle_failed_cycle(
    table: TableSpec,
    lake: LakeResource,
    control: ControlDatabase,
    cycle_id: int,
    tag: str,
    versions: dict,
    error: BaseException,
    result: CycleResult,
    log: logging.Logger,
) -> bool:
    """After an error: True when the cycle counts after all (its COMPLETED update reached the
    control database although the client saw an error); else its lake commits are undone and
    the row is FAILED, or, when the control database cannot be read, both are left for the
    next cycle (the row stays STARTED; the watermark cannot have moved without COMPLETED)."""
    try:
        status = control.cycle_status(cycle_id)
    except Exception as read_error:  # noqa: BLE001 - the next cycle settles it
        log.error(
            "%s: cycle %s failed (%s) and the control database cannot be read (%s): its lake "
            "changes are left for the next cycle to undo or keep",
            table.name,
            cycle_id,
            error,
            read_error,
        )
        return False
    if status == COMPLETED:
        log.warning(
            "%s: cycle %s is COMPLETED in the control database although the client saw %r: "
            "its lake changes stand",
            table.name,
            cycle_id,
            error,
        )
        return True
    message = str(error) or type(error).__name__
    try:
        undone = undo_cycle(lake, table, tag, versions)
        if undone:
            message += f" (lake changes undone: {', '.join(undone)})"
    except Exception as undo_error:  # noqa: BLE001 - report both, keep the first
        # The row stays STARTED: the next cycle finds it abandoned and undoes it then.
        log.error(
            "%s: could not undo cycle %s (%s): the next cycle will; the watermark has not moved",
            table.name,
            cycle_id,
            undo_error,
        )
        return False
    control.fail_cycle(cycle_id, f"{type(error).__name__}: {message}", result.rows_extracted)
    return False


def _later(*moments: dt.datetime | None) -> dt.datetime | None:
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def _departed_by_day(departed: pa.Table | None) -> dict[dt.date, set]:
    """The departures' keys grouped by the UTC day of the event time they left."""
    by_day: dict[dt.date, set] = defaultdict(set)
    if departed is None or departed.num_rows == 0:
        return by_day
    numbers = day_numbers(departed.column("old_event_time"))
    for key, number in zip(departed.column("key").to_pylist(), numbers.tolist()):
        if key is not None and number >= 0:
            by_day[as_day(number)].add(key)
    return by_day


def _current_days(captured: CapturedRows | None, wanted: KeySet) -> dict[object, dt.date]:
    """The day each wanted key's latest captured version lies in."""
    if captured is None or not captured.rows:
        return {}
    rows = captured.latest_per_key()
    keys = captured.keys.take(pa.array(rows))
    hits = wanted.mask(keys)
    if not hits.any():
        return {}
    chosen = rows[hits]
    return {
        key: as_day(number)
        for key, number in zip(
            keys.filter(pa.array(hits)).to_pylist(), captured.days[chosen].tolist()
        )
    }


def _held_departures(
    table: TableSpec, lake: LakeResource, departed: dict[dt.date, set], lookup: KeyLookup
) -> dict[dt.date, set]:
    """The departures the lake still holds on the day they left: a re-delivered departure (the
    overlap window) or one of a row the lake never had changes nothing and rewrites nothing.
    `lookup` records which files hold them: the merge rewrites those without a second read."""
    if not departed:
        return {}
    lookup.keys = set().union(*departed.values())
    held = lake_versions_of(
        table, lake, sorted(departed), KeySet(lookup.keys), found_in=lookup.found_in
    )
    found: dict[dt.date, set] = defaultdict(set)
    for key, places in held.items():
        for day, _ in places:
            if key in departed.get(day, ()):
                found[day].add(key)
    return found


def _reconcile_and_repair(
    table: TableSpec,
    source: SourceDatabase,
    described,
    lake: LakeResource,
    days: list[dt.date],
    result: CycleResult,
    tag: str,
    folder: Path,
    log: logging.Logger,
    leases: Leases,
    *,
    captured: CapturedRows | None = None,
    departed: pa.Table | None = None,
) -> MergeOutcome:
    """Takes out of their old day the keys the source recorded leaving it (`departed`, read in
    the cycle's window) and the keys the per-hour fingerprints of `days` find extra; re-reads
    what they find missing or stale; one merge for all.

    A key leaves a day only when the source does not now hold it there: its current day is
    that of its latest captured change, or of its re-read row. Keys the source no longer has
    are recorded as deleted."""
    extras: dict[dt.date, set] = defaultdict(set)
    to_reread: list = []
    for day in days:
        reconciliation = reconcile_day(table, source, lake, day)
        result.differences_by_day[day] = len(reconciliation.differences)
        for difference in reconciliation.differences:
            if difference.kind == "extra":
                extras[day].add(difference.raw_key)
            elif difference.source_version is not None and result.high_water is not None:
                # Changed after this cycle's high-water mark: the next cycle's business.
                if as_utc(difference.source_version) <= result.high_water:
                    to_reread.append(difference.raw_key)
            else:
                to_reread.append(difference.raw_key)
    lookup = KeyLookup(set())
    for day, keys in _held_departures(table, lake, _departed_by_day(departed), lookup).items():
        extras[day] |= keys
    leaving = {key for keys in extras.values() for key in keys}
    current_day = _current_days(captured, KeySet(leaving))
    unknown = sorted(leaving - set(current_day), key=str)
    still_there = source.existing_keys(described, unknown) if unknown else set()
    # A key still there re-read: its new day gets it if it does not have it yet.
    reread = sorted(set(to_reread) | still_there, key=str)
    result.repaired_keys = len(set(to_reread))
    if not extras and not reread:
        return MergeOutcome()
    repair = _changed_rows(source, described, reread, folder, table)
    current_day.update(_current_days(repair, KeySet(leaving)))
    removals = {
        day: {key for key in keys if current_day.get(key) != day} for day, keys in extras.items()
    }
    deleted = {
        day: {key for key in keys if key not in current_day} for day, keys in removals.items()
    }
    result.deleted_keys = len({key for keys in deleted.values() for key in keys})
    result.moved_keys = len({key for keys in removals.values() for key in keys}) - (
        result.deleted_keys
    )
    log.warning(
        "%s: %s deleted, %s moved, %s missing or stale key(s)",
        table.name,
        result.deleted_keys,
        result.moved_keys,
        result.repaired_keys,
    )
    return apply_changes(
        table,
        lake,
        described.arrow_schema,
        repair,
        {day: keys for day, keys in removals.items() if keys},
        {day: keys for day, keys in deleted.items() if keys},
        tag,
        leases=leases,
        looked_up=lookup,
    )
