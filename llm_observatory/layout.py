"""The lake's layout (README: How the lake is written), declared once: which tables each
source table has in the lake, where each sits, which of them are assets, and with which
partition columns.

Every list of lake tables (a sync cycle's, rollback's, compaction's, the asset keys of the
jobs' observations) is derived from `LAKE_ROLES` and `DAILY_METRICS` here, so a new layer or a
new table is declared in one place.

Partition columns are typed columns of the table (`date` a date, `hour` 0-23, `model` text),
derived from the row's event time and model, so a reader filters on them and prunes folders.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.resources.lake import LakeLocation, LakeResource
from llm_observatory.tables import TABLES, TableSpec

DATE_FIELD = pa.field("date", pa.date32())
HOUR_FIELD = pa.field("hour", pa.int32())
MODEL_FIELD = pa.field("model", pa.string())
QUARANTINE_FIELDS = [
    pa.field("quarantine_rule", pa.string()),
    pa.field("quarantine_reason", pa.string()),
]


@dataclass(frozen=True)
class LakeRole:
    """One kind of lake table a source table has: its path under the lake (`{table}` stands
    for the source table's name) and whether Dagster shows it as an asset (its path is then
    the asset key)."""

    role: str
    path: tuple[str, ...]
    is_asset: bool

    def parts(self, table: TableSpec) -> tuple[str, ...]:
        return tuple(part.format(table=table.name) for part in self.path)

    def name(self, table: TableSpec) -> str:
        return "/".join(self.parts(table))


BRONZE = LakeRole("bronze", ("bronze", "{table}"), is_asset=True)
SILVER = LakeRole("silver", ("silver", "{table}"), is_asset=True)
QUARANTINE = LakeRole("quarantine", ("silver", "_quarantine", "{table}"), is_asset=False)
DELETED = LakeRole("deleted", ("silver", "_deleted", "{table}"), is_asset=False)
# Every source table has these; the tables that feed it (`TableSpec.feeds_daily_metrics`)
# share gold's one table besides.
LAKE_ROLES = (BRONZE, SILVER, QUARANTINE, DELETED)
DAILY_METRICS = LakeRole("gold", ("gold", "daily_metrics"), is_asset=True)


@dataclass(frozen=True)
class LakeTable:
    """One table of the lake: its name in the layout (`silver/_quarantine/llm_interactions`),
    its role, where it is, and the source table whose watermark covers it."""

    name: str
    role: str
    location: LakeLocation
    source_table: TableSpec
    asset_key: dg.AssetKey | None


class UnknownLakeTableError(ValueError):
    """A lake table asked for by a name the layout does not have."""


def roles_of(table: TableSpec) -> tuple[LakeRole, ...]:
    return (*LAKE_ROLES, DAILY_METRICS) if table.feeds_daily_metrics else LAKE_ROLES


def lake_tables_of(lake: LakeResource, table: TableSpec) -> dict[str, LakeTable]:
    """Every lake table a source table's rows reach (and a sync cycle of it may change), by
    role."""
    return {
        role.role: LakeTable(
            name=role.name(table),
            role=role.role,
            location=lake.location(*role.parts(table)),
            source_table=table,
            asset_key=dg.AssetKey(list(role.parts(table))) if role.is_asset else None,
        )
        for role in roles_of(table)
    }


def lake_locations(lake: LakeResource, table: TableSpec) -> dict[str, LakeLocation]:
    """Where each lake table of a source table is, by role."""
    return {role: t.location for role, t in lake_tables_of(lake, table).items()}


def lake_tables(lake: LakeResource) -> dict[str, LakeTable]:
    """Every table of the lake, by its name in the layout."""
    return {
        lake_table.name: lake_table
        for table in TABLES
        for lake_table in lake_tables_of(lake, table).values()
    }


def select_tables(lake: LakeResource, names: list[str] | None) -> list[LakeTable]:
    """A lake table by name, or a source table's name for all its layers (and gold with
    `llm_interactions`); none: the whole lake."""
    every = lake_tables(lake)
    if not names:
        return list(every.values())
    chosen: dict[str, LakeTable] = {}
    for name in names:
        if name in every:
            chosen[name] = every[name]
            continue
        layers = [t for t in every.values() if t.source_table.name == name]
        if not layers:
            known = ", ".join(sorted(every)) + ", or " + ", ".join(t.name for t in TABLES)
            raise UnknownLakeTableError(f"unknown table {name!r}; known: {known}")
        chosen.update({t.name: t for t in layers})
    return list(chosen.values())


def asset_key_of(name: str) -> dg.AssetKey | None:
    """The asset key of a lake table named as in the layout; None for the tables that are not
    assets (quarantine, deleted keys) and names the layout lacks."""
    for table in TABLES:
        for role in roles_of(table):
            if role.is_asset and role.name(table) == name:
                return dg.AssetKey(list(role.parts(table)))
    return None


def categorical_columns(table: TableSpec, role: str) -> tuple[str, ...]:
    """The text columns of a lake table with few distinct values (see `TableSpec`): the source
    table's, and in quarantine the rule broken too; none in gold and the deleted keys."""
    if role in (BRONZE.role, SILVER.role):
        return table.categorical_columns
    if role == QUARANTINE.role:
        return (*table.categorical_columns, QUARANTINE_FIELDS[0].name)
    return ()


def bronze_key(table: TableSpec) -> dg.AssetKey:
    return dg.AssetKey(list(BRONZE.parts(table)))


def silver_key(table: TableSpec) -> dg.AssetKey:
    return dg.AssetKey(list(SILVER.parts(table)))


DAILY_METRICS_KEY = dg.AssetKey(list(DAILY_METRICS.path))
DAILY_METRICS_NAME = "/".join(DAILY_METRICS.path)


def bronze_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location(*BRONZE.parts(table))


def silver_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location(*SILVER.parts(table))


def quarantine_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location(*QUARANTINE.parts(table))


def deleted_location(lake: LakeResource, table: TableSpec) -> LakeLocation:
    return lake.location(*DELETED.parts(table))


def deleted_schema(table: TableSpec, source_schema: pa.Schema) -> pa.Schema:
    """The key, the deleted row's event day and when the deletion was found."""
    return pa.schema(
        [
            pa.field(table.key, source_schema.field(table.key).type),
            DATE_FIELD,
            pa.field("deleted_detected_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def daily_metrics_location(lake: LakeResource) -> LakeLocation:
    return lake.location(*DAILY_METRICS.path)


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
