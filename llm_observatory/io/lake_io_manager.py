"""The lake as a Dagster IO manager, for assets of their own that analysts add beside ours.

An asset downstream of bronze, silver or gold names it as an input and gets the partition it
asks for as a Polars `LazyFrame` (nothing read until it collects) or an Arrow dataset (read in
batches); an asset that returns rows (an Arrow `RecordBatchReader` streamed batch by batch, an
Arrow table or a Polars frame) is written with the pipeline's own writer: bounded memory, every
file's SHA-256 recorded, the day's partition replaced in one atomic commit.

The pipeline's own tables are not written through it: one step of ours writes bronze, silver,
quarantine and gold of a day from one read of the source (`assets/migration.py`), and a sync's
merge commits several tables against the versions it read; an IO manager persists one output
at a time, so they keep the lake resource's writer, and this manager refuses their keys.
"""

import datetime as dt

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from llm_observatory.io.delta_lake import DeltaPartitionWriter, open_table
from llm_observatory.layout import DAILY_METRICS, lake_tables
from llm_observatory.resources.lake import LakeLocation, LakeResource

LAKE_IO_MANAGER_KEY = "lake_io_manager"
LAYERS = ("bronze", "silver", "gold")
# An asset whose key does not start with a layer is written under gold (derived data).
DEFAULT_LAYER = DAILY_METRICS.path[0]
LOADABLE_TYPES = "polars.LazyFrame or pyarrow.dataset.Dataset"
WRITABLE_TYPES = "pyarrow.RecordBatchReader, pyarrow.Table, polars.DataFrame or polars.LazyFrame"


class LakeIOError(ValueError):
    """An input or output the lake IO manager cannot serve; the message says what to change."""


def table_parts(key: dg.AssetKey) -> tuple[str, ...]:
    """Layer and path of an asset's lake table: the key itself when it starts with a layer
    (`silver/llm_interactions`), else under gold (`gold/<key>`)."""
    path = tuple(key.path)
    return path if path[0] in LAYERS and len(path) > 1 else (DEFAULT_LAYER, *path)


def lake_location(lake: LakeResource, key: dg.AssetKey) -> LakeLocation:
    return lake.location(*table_parts(key))


def partition_days(context: dg.InputContext | dg.OutputContext) -> list[str] | None:
    """The days a run asks for (None: the whole table). Our partitions are UTC days."""
    if not context.has_asset_partitions:
        return None
    asked = context.asset_partition_keys
    if len(asked) == len(context.asset_partitions_def.get_partition_keys()):
        return None  # every day: the whole table, unfiltered
    window = context.asset_partitions_time_window
    days, day = [], window.start.date()
    while day < window.end.date():
        days.append(day.isoformat())
        day += dt.timedelta(days=1)
    return days


class LakeIOManager(dg.ConfigurableIOManager):
    """Loads lake tables (bronze, silver, gold, or an asset written through it) as Polars lazy
    frames or Arrow datasets, pruned to the partitions asked for; writes what an asset returns
    into `gold/<asset>` (or the layer its key names) with the pipeline's writer."""

    lake: LakeResource

    def load_input(self, context: dg.InputContext):
        key = context.asset_key
        name = "/".join(table_parts(key))
        location = lake_location(self.lake, key)
        table = open_table(location)
        if table is None:
            raise LakeIOError(
                f"{name}: the lake has no such table yet (at {location.uri}); materialize it first"
            )
        days = partition_days(context)
        if days is not None and "date" not in table.metadata().partition_columns:
            raise LakeIOError(
                f"{name}: not partitioned by date, so a partition of it cannot be loaded; load "
                "it whole (an unpartitioned input)"
            )
        wanted = context.dagster_type.typing_type
        if wanted is pl.LazyFrame:
            frame = pl.scan_delta(table)
            if days is None:
                return frame
            return frame.filter(pl.col("date").is_in([dt.date.fromisoformat(d) for d in days]))
        if wanted is ds.Dataset:
            filters = None if days is None else [("date", "in", days)]
            return table.to_pyarrow_dataset(partitions=filters)
        raise LakeIOError(
            f"input {context.name!r} ({name}): the lake loads a "
            f"{LOADABLE_TYPES}; annotate the parameter with one of them (got {wanted!r})"
        )

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        key = context.asset_key
        name = "/".join(table_parts(key))
        if name in lake_tables(self.lake):
            raise LakeIOError(
                f"{name} is written by the pipeline's own steps (it writes several tables per "
                "commit); give your asset a key of its own, e.g. gold/<name>"
            )
        reader = _as_reader(obj, name)
        days = partition_days(context)
        if days is not None and len(days) != 1:
            raise LakeIOError(f"{name}: write one day's partition per run (got {len(days)} days)")
        schema = reader.schema
        partition_by: list[str] = []
        if days is not None:
            if "date" in schema.names:
                raise LakeIOError(
                    f"{name}: the rows carry a `date` column; the lake adds it from the partition "
                    "(rename yours)"
                )
            schema = schema.append(pa.field("date", pa.date32()))
            partition_by = ["date"]
        day = None if days is None else dt.date.fromisoformat(days[0])
        writer = DeltaPartitionWriter(
            lake_location(self.lake, key),
            schema,
            partition_by,
            replace=[] if day is None else [("date", "=", day.isoformat())],
        )
        try:
            for batch in reader:
                if day is not None:
                    batch = batch.append_column(
                        "date", pa.array([day] * batch.num_rows, pa.date32())
                    )
                writer.write(batch)
        except BaseException:
            writer.abort()
            raise
        summary = writer.commit(
            {
                "layer": table_parts(key)[0],
                "partition": days[0] if days else "",
                "run_id": context.run_id,
            }
        )
        context.add_output_metadata(
            {
                "dagster/row_count": summary.rows,
                "lake_bytes": dg.MetadataValue.int(summary.bytes),
                "delta_version": summary.version,
                "table_uri": dg.MetadataValue.path(summary.table_uri),
                "sha256": dg.MetadataValue.json(
                    {written.path: written.sha256 for written in summary.files}
                ),
            }
        )


def _as_reader(obj, name: str) -> pa.RecordBatchReader:
    """What an asset returned, as a stream of Arrow batches (a lazy frame is collected with
    Polars' streaming engine, one batch at a time on the way to the writer)."""
    if isinstance(obj, pa.RecordBatchReader):
        return obj
    if isinstance(obj, pa.Table):
        return obj.to_reader()
    if isinstance(obj, pl.LazyFrame):
        obj = obj.collect(engine="streaming")
    if isinstance(obj, pl.DataFrame):
        return obj.to_arrow().to_reader()
    raise LakeIOError(f"{name}: the lake writes a {WRITABLE_TYPES}; got {type(obj).__name__}")
