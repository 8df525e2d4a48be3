"""What the one pass learns about a day's rows as it writes them, recorded with the commit.

The checks of a freshly written day (every event time inside the day, the hours that hold rows,
the lake side of the reconciliation's fingerprints, silver's rows validated again) need columns
of the day's rows. Read back from ADLS, that is the rows' columns downloaded again through the
link they just went up: on Azurite, 3 days of the demo source downloaded 4.1 bytes of data
files for every byte the backfill stored, most of it these checks reading silver. The one pass
sees every row as it writes it: it counts them per hour, keeps the rows outside the day and sums
the fingerprints, and records the result in the metadata of the commit of those rows.

A check uses the recorded profile only while the day's current files are exactly the files
that commit wrote (and, for the fingerprints, quarantine's day is the one the same pass
committed): a later sync, compaction or rollback changes them, and the check then reads the
files, as the cutover report does when it evaluates a day again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa

from llm_observatory.checks.quality import RuleTally
from llm_observatory.checks.timestamps import EventTimes
from llm_observatory.fingerprint import Fingerprint, HourlyFingerprints
from llm_observatory.io.delta_lake import COMMIT_METADATA_PREFIX, current_files, open_table
from llm_observatory.layout import day_filter
from llm_observatory.resources.lake import LakeLocation
from llm_observatory.tables import TableSpec

PROFILE = "day_profile"
# The day's commit is the newest one right after the pass; other days' runs may commit to the
# same table in between (a parallel backfill), and then a few more are read. On ADLS each commit
# read is a download (silver's of the interactions: about 80 KB), so the first look is short.
COMMITS_SEARCHED = (2, 8)


class DayProfile:
    """The day's rows as written: per-hour counts and rows outside the day of the layer the
    commit writes, and for silver the fingerprints of silver and quarantine together and the
    rules validated again on silver's rows."""

    def __init__(self, table: TableSpec, day: dt.date, silver: bool) -> None:
        self.table = table
        self.day = day
        self.events = EventTimes(day)
        self.fingerprints = HourlyFingerprints() if silver else None
        self.rules = RuleTally(table) if silver else None
        self.quarantine_files: list[str] = []

    def add_written(self, batch: pa.RecordBatch) -> None:
        """Rows of the layer whose commit records this profile."""
        self.events.add(batch.column(self.table.key), batch.column(self.table.event_time))
        if self.fingerprints is not None:
            self._fingerprint(batch)
            self.rules.add_silver(batch)

    def add_quarantined(self, batch: pa.RecordBatch) -> None:
        """Quarantined rows (with their `quarantine_rule`), beside silver's."""
        self._fingerprint(batch)
        self.rules.add_quarantined(batch.column("quarantine_rule"))

    def _fingerprint(self, batch: pa.RecordBatch) -> None:
        self.fingerprints.add(
            batch.column(self.table.key),
            batch.column(self.table.event_time),
            batch.column(self.table.change_column),
        )

    def metadata(self) -> dict[str, str]:
        """The commit metadata entry that records the profile."""
        per_hour, outside_keys, outside = self.events.result()
        body: dict = {
            "day": self.day.isoformat(),
            "per_hour": per_hour,
            "outside": outside,
            "outside_keys": [k if isinstance(k, int | str) else str(k) for k in outside_keys],
        }
        if self.fingerprints is not None:
            body["fingerprints"] = {
                str(hour): list(dataclasses.astuple(fingerprint))
                for hour, fingerprint in self.fingerprints.result().items()
            }
            body["rules"] = self.rules.to_json()
            body["quarantine_files"] = sorted(self.quarantine_files)
        return {PROFILE: json.dumps(body)}


@dataclass(frozen=True)
class RecordedProfile:
    """A profile found for the day's current files."""

    events: tuple[list[int], list, int]
    fingerprints: dict[int, Fingerprint] | None
    rules: RuleTally | None


def recorded_profile(
    table_spec: TableSpec,
    location: LakeLocation,
    day: dt.date,
    quarantine: LakeLocation | None = None,
) -> RecordedProfile | None:
    """The profile recorded with the commit that wrote the day's current files at `location`
    (with `quarantine`: whose quarantine day is also as that pass committed it), else None."""
    table = open_table(location)
    if table is None:
        return None
    found = None
    for limit in COMMITS_SEARCHED:
        found = _newest_profile(table.history(limit=limit), day)
        if found is not None:
            break
    if found is None:
        return None
    entry, body = found
    written = json.loads(entry.get(f"{COMMIT_METADATA_PREFIX}files") or "[]")
    if {file["path"] for file in written} != _day_files(table, day):
        return None  # the day was rewritten since (a sync, a compaction, a rollback)
    fingerprints = rules = None
    if "fingerprints" in body:
        if quarantine is None:
            return None
        quarantine_table = open_table(quarantine)
        held = set() if quarantine_table is None else _day_files(quarantine_table, day)
        if held != set(body["quarantine_files"]):
            return None
        fingerprints = {
            int(hour): Fingerprint(*parts) for hour, parts in body["fingerprints"].items()
        }
        rules = RuleTally.from_json(table_spec, body["rules"])
    events = (body["per_hour"], body["outside_keys"], body["outside"])
    return RecordedProfile(events=events, fingerprints=fingerprints, rules=rules)


def _newest_profile(history: list[dict], day: dt.date) -> tuple[dict, dict] | None:
    """The newest of these commits that recorded a profile of `day`: (commit, profile)."""
    found = None
    for entry in history:
        text = entry.get(f"{COMMIT_METADATA_PREFIX}{PROFILE}")
        if text is None:
            continue
        body = json.loads(text)
        if body.get("day") == day.isoformat() and (
            found is None or entry.get("version", -1) > found[0].get("version", -1)
        ):
            found = (entry, body)
    return found


def _day_files(table, day: dt.date) -> set[str]:
    return {path for path, _ in current_files(table, day_filter(day))}
