"""Routing: each row to silver or to quarantine, by the table's quality rules.

The backfill (`assets/silver.DayValidator`, for the one pass and a repair from bronze) and the
sync's merge (`incremental/merge.py`) route through this one function, so what the history
load quarantines and what a later sync quarantines cannot drift apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from llm_observatory.layout import QUARANTINE_FIELDS, with_event_day
from llm_observatory.quality import evaluate
from llm_observatory.tables import TableSpec


@dataclass(frozen=True)
class RoutedRows:
    """A batch split in two. `passing`: the rows that break no rule, with the source's columns
    (the batch itself when every row passes, no copy). `quarantined`: the others, with the
    source's columns, their `date` and, per row, the first rule broken and every reason; no
    rows when none broke a rule."""

    passing: pa.RecordBatch
    quarantined: pa.RecordBatch | pa.Table
    broken_counts: Counter


def route(batch: pa.RecordBatch, table: TableSpec, source_schema: pa.Schema) -> RoutedRows:
    verdict = evaluate(batch, table.rules)
    failed = verdict.failed_rows
    if not failed.num_rows:
        return RoutedRows(batch, failed, Counter(verdict.broken_counts))
    quarantined = with_event_day(failed.select(source_schema.names), table.event_time)
    for field in QUARANTINE_FIELDS:
        quarantined = quarantined.append_column(field.name, failed.column(field.name))
    return RoutedRows(batch.filter(verdict.passed), quarantined, Counter(verdict.broken_counts))
