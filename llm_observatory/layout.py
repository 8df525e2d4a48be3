"""The lake's layout (CONTRACT §5): which table sits where, with which partition columns.

Partition columns are typed columns of the table (`date` a date, `hour` 0-23, `model` text),
derived from the row's event time and model, so a reader filters on them and prunes folders.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.resources.lake import LakeLocation, LakeResource
from llm_observatory.tables import TableSpec

DATE_FIELD = pa.field("date", pa.date32())
HOUR_FIELD = pa.field("hour", pa.int32())
MODEL_FIELD = pa.field("model", pa.string())
QUARANTINE_FIELDS = [
    pa.field("quarantine_rule", pa.string()),
    pa.field("quarantine_reason", pa.string()),
]


def bronze_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location("bronze", table.name)


def silver_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location("silver", table.name)


def quarantine_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location("silver", "_quarantine", table.name)


def deleted_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location("silver", "_deleted", table.name)


def deleted_schema(table: TableSpec, source_schema: pa.Schema) -> pa.Schema:
    """CONTRACT §5: the key, the deleted row's event day and when the deletion was found."""
    return pa.schema(
        [
            pa.field(table.key, source_schema.field(table.key).type),
            DATE_FIELD,
            pa.field("deleted_detected_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def daily_metrics_location(lake: LakeResource) -> LakeLocation:
    return lake.location("gold", "daily_metrics")


def bronze_schema(source_schema: pa.Schema) -> pa.Schema:
    return _append(source_schema, [DATE_FIELD])


def silver_schema(table: TableSpec, source_schema: pa.Schema) -> pa.Schema:
    if table.silver_model_column:
        return _append(source_schema, [MODEL_FIELD, DATE_FIELD, HOUR_FIELD])
    return _append(source_schema, [DATE_FIELD])


def quarantine_schema(source_schema: pa.Schema) -> pa.Schema:
    return _append(source_schema, [DATE_FIELD, *QUARANTINE_FIELDS])


def _append(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    clashes = [f.name for f in fields if f.name in schema.names]
    if clashes:
        raise ValueError(
            f"source columns {clashes} clash with the lake's partition columns; rename them"
        )
    for extra in fields:
        schema = schema.append(extra)
    return schema


def source_columns(schema: pa.Schema) -> list[str]:
    """The columns copied from the source, without the lake's own partition columns."""
    own = {DATE_FIELD.name, HOUR_FIELD.name, MODEL_FIELD.name, *(f.name for f in QUARANTINE_FIELDS)}
    return [name for name in schema.names if name not in own]


def with_event_day(batch: pa.RecordBatch | pa.Table, event_time: str):
    """Adds the `date` partition column: the UTC day of the event time."""
    return batch.append_column(DATE_FIELD, utc_day(batch.column(event_time)))


def with_silver_partitions(batch: pa.RecordBatch | pa.Table, table: TableSpec):
    """Adds `model`, `date`, `hour` (or just `date`) as the silver layout wants them."""
    event_time = batch.column(table.event_time)
    if table.silver_model_column:
        model = pc.cast(batch.column(table.silver_model_column), pa.string())
        batch = batch.append_column(MODEL_FIELD, model)
        batch = batch.append_column(DATE_FIELD, utc_day(event_time))
        return batch.append_column(HOUR_FIELD, pc.cast(pc.hour(event_time), pa.int32()))
    return batch.append_column(DATE_FIELD, utc_day(event_time))


def utc_day(event_time):
    """UTC calendar day of timestamps (whatever their zone), as Arrow dates."""
    if event_time.type.tz not in (None, "UTC", "+00:00"):
        event_time = pc.cast(event_time, pa.timestamp(event_time.type.unit, tz="UTC"))
    return pc.cast(pc.cast(event_time, pa.timestamp("us")), pa.date32())


def day_filter(day: dt.date) -> list[tuple[str, str, str]]:
    return [("date", "=", day.isoformat())]
