"""Purging the source's departure records (`migration_departures`) that no cycle will read again.

A cycle reads the departures of `(watermark - overlap, high_water]`, so a departure older than
every table's watermark is spent. It is still kept for as long as the lake can be rolled back
(`LLM_OBS_LAKE_RETENTION_DAYS`): a rollback rewinds the watermarks, and the sync after it must
find the departures of the rewound span again. Nothing of a table is purged while it has no
COMPLETED cycle: its first cycle reads from the bronze copies' high-water marks, which may be
older. Each table's records go by its own watermark.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.tables import TABLES, TableSpec


@dataclass(frozen=True)
class TablePurge:
    table: str
    cutoff: dt.datetime | None
    rows_deleted: int
    skipped: str | None = None

    def describe(self) -> str:
        if self.skipped:
            return f"{self.table}: nothing purged ({self.skipped})"
        return (
            f"{self.table}: purged {self.rows_deleted} departure record(s) older than "
            f"{self.cutoff.isoformat()}"
        )


def purge_cutoff(
    control: ControlDatabase, table: TableSpec, keep: dt.timedelta
) -> dt.datetime | None:
    """Departures of `table` before this moment are spent: its watermark less `keep`. None
    while it has no COMPLETED cycle (its first reads from the bronze copies' marks)."""
    if keep < dt.timedelta(0):
        raise ValueError("the departures to keep cannot span a negative time")
    row = control.completed_watermark(table.name)
    if row is None or row.last_extracted_timestamp is None:
        return None
    return row.last_extracted_timestamp - keep


def purge_departures(
    source: SourceDatabase,
    control: ControlDatabase,
    keep: dt.timedelta,
    tables: tuple[TableSpec, ...] = TABLES,
) -> list[TablePurge]:
    """Deletes, per table, the departure records its cycles have read, less `keep`."""
    results = []
    for table in tables:
        cutoff = purge_cutoff(control, table, keep)
        if cutoff is None:
            results.append(
                TablePurge(
                    table.name,
                    None,
                    0,
                    "no completed sync cycle yet: its first still has to read them",
                )
            )
            continue
        results.append(TablePurge(table.name, cutoff, source.purge_departures(table, cutoff)))
    return results
