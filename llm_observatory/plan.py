"""`llm-observatory plan`: how big the source is, how fast this deployment moves it, how long
the whole migration and each day's incremental load will take, and what limits them.

The inventory comes from the database catalog where there is one (SQL Server's
`sys.dm_db_partition_stats`, as the migration guide's Phase 0 query; PostgreSQL's `pg_class`
and `pg_total_relation_size`), with rows per UTC day from a grouped count over the event-time
index. Speeds come from what runs in this Dagster instance measured (bronze materializations for
the source side, silver for the workers, sync cycles for the daily load); where nothing ran yet,
the figures measured on the reference machine stand in, and the plan says so. What crosses the
link between the data centre and Azure, per topology, is modelled in `traffic.py` from bronze's
bytes (this instance's bytes per row where its runs measured them), the source's bytes and the
table-days.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from dataclasses import asdict, dataclass, field

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import REGCLASS

from llm_observatory.resources.source import SourceDatabase, SourceError, describe_error
from llm_observatory.resources.urls import display_url
from llm_observatory.tables import TableSpec
from llm_observatory.traffic import Topology, fastest, layer_bytes, topologies

DEFAULT_BANDWIDTH_MBPS = 100.0
DEFAULT_STREAMS = 4
# Reference figures (bench, 1M rows of ~2.2 KB, 2 cores) used until this instance has runs.
REFERENCE_EXTRACT_ROWS_PER_S = 100_000.0
REFERENCE_WORKER_ROWS_PER_S = 60_000.0
REFERENCE_LAKE_TO_SOURCE = 0.13
RECENT_RUNS = 20
# The window the source's change rate is measured over (`changed_rows_per_day`).
CHANGE_WINDOW_DAYS = 7
# Until this instance has sync cycles: the fixed cost of one cycle of one table (watermark,
# leases, reconciliation of the recent days, commits), measured by `make bench` (month of
# small days, 2026-12-04: 24.7 s for three tables with 0.1 % deletes, most of it fixed).
REFERENCE_CYCLE_SECONDS = 8.0
# Silver rows per file where no silver run measured it: silver/llm_interactions holds one file
# per model and hour (about 10 models x 24 hours a day on the reference source).
REFERENCE_SILVER_FILES_PER_DAY = 240


@dataclass
class TableInventory:
    table: str
    rows: int
    bytes: int | None
    rows_source: str  # catalog | count
    first_day: str | None = None
    last_day: str | None = None
    days: int = 0
    rows_per_day: dict[str, int] = field(default_factory=dict)
    # Rows whose change column moved in the last CHANGE_WINDOW_DAYS, per day of the window and
    # by the UTC day of their event time (new rows and late updates alike: what a daily cycle
    # reads, and which days it rewrites); None where there are no changes to count.
    changed_rows_by_day: dict[str, float] | None = None

    @property
    def changed_rows_per_day(self) -> float | None:
        if self.changed_rows_by_day is None:
            return None
        return sum(self.changed_rows_by_day.values())

    @property
    def mean_rows_per_day(self) -> float:
        return self.rows / self.days if self.days else 0.0


@dataclass
class Speeds:
    extract_rows_per_s: float
    extract_measured_runs: int
    worker_rows_per_s: float
    worker_measured_runs: int
    lake_to_source_bytes: float
    compression_measured_runs: int
    sync_seconds_per_cycle: float | None
    sync_measured_cycles: int
    # Bronze bytes per source row, by table (median of its bronze runs), where measured.
    lake_bytes_per_row: dict[str, float] = field(default_factory=dict)
    # Silver files per day, by table (median of its silver runs), where measured.
    silver_files_per_day: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    generated_at: str
    source: str
    streams: int
    bandwidth_mbps: float
    inventory: list[TableInventory]
    speeds: Speeds
    total_rows: int
    total_source_bytes: int
    lake_bytes_estimate: int
    hours: dict[str, float]
    bottleneck: str
    migration_hours: float
    daily_rows: float
    daily_incremental_hours: float
    assumptions: list[str]
    # What crosses the link between the data centre and Azure, per topology (traffic.py).
    table_days: int = 0
    bronze_bytes_estimate: int = 0
    topologies: list[Topology] = field(default_factory=list)
    fastest_topology: str = ""
    # The daily incremental from the source's change rate, where it could be measured.
    incremental: IncrementalEstimate | None = None

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, default=str)

    def to_text(self) -> str:
        lines = [
            f"Capacity plan for {self.source} ({self.generated_at})",
            "",
            "| table | rows | size | days | first day | last day | mean rows/day |",
            "|---|---:|---:|---:|---|---|---:|",
        ]
        for item in self.inventory:
            size = "?" if item.bytes is None else _size(item.bytes)
            lines.append(
                f"| {item.table} | {item.rows:,} ({item.rows_source}) | {size} | {item.days} | "
                f"{item.first_day or '-'} | {item.last_day or '-'} | "
                f"{item.mean_rows_per_day:,.0f} |"
            )
        speeds = self.speeds
        lines += [
            "",
            f"Streams: {self.streams}; bandwidth {self.bandwidth_mbps:,.0f} Mbps",
            f"Extraction: {speeds.extract_rows_per_s:,.0f} rows/s per stream "
            f"({_measured(speeds.extract_measured_runs, 'bronze run')})",
            f"Workers (silver + gold): {speeds.worker_rows_per_s:,.0f} rows/s per worker "
            f"({_measured(speeds.worker_measured_runs, 'silver run')})",
            f"Lake bytes / source bytes: {speeds.lake_to_source_bytes:.2f} "
            f"({_measured(speeds.compression_measured_runs, 'bronze run')})",
            "",
            "| limit | time |",
            "|---|---:|",
        ]
        for name, hours in self.hours.items():
            marker = " (bottleneck)" if name == self.bottleneck else ""
            lines.append(f"| {name}{marker} | {_duration(hours)} |")
        lines += [
            "",
            f"Migration of everything: {_duration(self.migration_hours)} "
            f"({self.total_rows:,} rows, {_size(self.total_source_bytes)} at the source, about "
            f"{_size(self.lake_bytes_estimate)} in the lake); bottleneck: {self.bottleneck}",
            f"Daily incremental load: {self.daily_rows:,.0f} rows/day -> "
            f"{_duration(self.daily_incremental_hours)}",
        ]
        if self.incremental is not None:
            estimate = self.incremental
            lines.append(
                f"  from the change rate: {estimate.changed_rows_per_day:,.0f} changed rows/day "
                f"({estimate.late_changes_per_day:,.0f} on days before yesterday; the silver files "
                f"holding them: {estimate.rows_rewritten_per_day:,.0f} rows rewritten); cycles "
                f"{_duration(estimate.cycle_hours)}, source reads "
                f"{_duration(estimate.read_hours)}, rewrites {_duration(estimate.rewrite_hours)}"
            )
        lines += self._topology_lines()
        lines += [f"Assumption: {text}" for text in self.assumptions]
        return "\n".join(lines)

    def _topology_lines(self) -> list[str]:
        if not self.topologies:
            return []
        lines = [
            "",
            f"Across the link at {self.bandwidth_mbps:,.0f} Mbps each way (up: data centre -> "
            f"Azure, down: Azure -> data centre), {self.table_days:,} table-days, about "
            f"{_size(self.bronze_bytes_estimate)} of bronze:",
            "",
            "| topology | up | down | link time | whole migration |",
            "|---|---:|---:|---:|---:|",
        ]
        for topology in self.topologies:
            marker = " (fastest)" if topology.name == self.fastest_topology else ""
            lines.append(
                f"| {topology.name}{marker} | {_size(topology.up_bytes)} | "
                f"{_size(topology.down_bytes)} | {_duration(topology.network_hours)} | "
                f"{_duration(topology.hours)} ({topology.limited_by}) |"
            )
        on_premises = self.topologies[0]
        lines += ["", f"What crosses with the {on_premises.name}:"]
        lines += [
            f"  {line.direction:>4} {_size(line.bytes):>10}  {line.name}"
            for line in on_premises.lines
            if line.crosses and line.bytes
        ]
        lines.append(f"Fastest: {self.fastest_topology}")
        return lines


def _duration(hours: float) -> str:
    seconds = hours * 3600
    if seconds < 60:
        return f"{seconds:,.1f} s"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}h{m:02d}m{s:02d}s"
    return f"{days}d {text}" if days else text


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(count) < 1000 or unit == "PB":
            return f"{count:,.1f} {unit}" if unit != "B" else f"{count:,.0f} B"
        count /= 1000
    return f"{count:,.1f} PB"


def _measured(runs: int, what: str) -> str:
    if not runs:
        return "reference machine: nothing measured in this instance yet"
    return f"measured: median of {runs} {what}{'s' if runs != 1 else ''}"


# ------------------------------------------------------------------------------- inventory


def catalog_rows_and_bytes(
    source: SourceDatabase, table: TableSpec
) -> tuple[int | None, int | None]:
    """Rows and bytes of a table from the catalog (no scan); (None, None) where there is none."""
    dialect = source.dialect_name
    name = sa.bindparam("table_name", table.name)
    if dialect == "postgresql":
        oid = sa.cast(name, REGCLASS)
        query = sa.select(
            sa.select(sa.column("reltuples"))
            .select_from(sa.table("pg_class"))
            .where(sa.column("oid") == oid)
            .scalar_subquery(),
            sa.func.pg_total_relation_size(oid),
        )
    elif dialect == "mssql":
        query = mssql_inventory_query(table.name)
    elif dialect == "sqlite":
        # No row statistics in SQLite's catalog; its `dbstat` table gives the pages' bytes.
        dbstat = sa.table("dbstat", sa.column("name"), sa.column("pgsize"))
        query = sa.select(sa.null(), sa.func.sum(dbstat.c.pgsize)).where(dbstat.c.name == name)
        try:
            with source.engine.connect() as connection:
                _, size = connection.execute(query).one()
        except sa.exc.OperationalError:  # SQLite built without dbstat
            return None, None
        return None, None if size is None else int(size)
    else:
        return None, None
    with source.engine.connect() as connection:
        rows, size = connection.execute(query).one()
    rows = None if rows is None or float(rows) < 0 else int(float(rows))
    return rows, None if size is None else int(size)


def mssql_inventory_query(table_name: str) -> sa.Select:
    """The migration guide's Phase 0 inventory: rows and used bytes from partition statistics."""
    stats = sa.table(
        "dm_db_partition_stats",
        sa.column("object_id"),
        sa.column("index_id"),
        sa.column("row_count"),
        sa.column("used_page_count"),
        schema="sys",
    )
    object_id = sa.func.OBJECT_ID(sa.bindparam("table_name", table_name))
    return sa.select(
        sa.func.sum(sa.case((stats.c.index_id.in_([0, 1]), stats.c.row_count), else_=0)),
        sa.func.sum(stats.c.used_page_count) * 8192,
    ).where(stats.c.object_id == object_id)


def _event_day(source: SourceDatabase, column) -> sa.ColumnElement:
    """The UTC day of an event-time column, in the source's own SQL."""
    if source.dialect_name == "postgresql":
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)
    if source.dialect_name == "sqlite":
        return sa.func.date(column)
    return sa.cast(column, sa.Date)


def rows_per_day_query(source: SourceDatabase, table: TableSpec) -> sa.Select:
    """Rows per UTC day of the event time (a grouped count the event-time index serves)."""
    described = source.describe_table(table)
    day = _event_day(source, described.event_time).label("day")
    return sa.select(day, sa.func.count().label("rows")).group_by(day).order_by(day)


def changed_rows_per_day_query(
    source: SourceDatabase, table: TableSpec, since: dt.datetime
) -> sa.Select:
    """Rows changed since `since`, per UTC day of their event time: which days a cycle's
    changes land on (a range on the change-column index, grouped)."""
    described = source.describe_table(table)
    changed = described.table.c[table.change_column]
    day = _event_day(source, described.event_time).label("day")
    return (
        sa.select(day, sa.func.count().label("rows"))
        .where(changed >= source.time_bound("changed_since", since, changed))
        .group_by(day)
        .order_by(day)
    )


def inventory(source: SourceDatabase, tables: tuple[TableSpec, ...]) -> list[TableInventory]:
    items = []
    try:
        for table in tables:
            catalog_rows, size = catalog_rows_and_bytes(source, table)
            with source.engine.connect() as connection:
                per_day = {
                    str(day)[:10]: int(rows)
                    for day, rows in connection.execute(rows_per_day_query(source, table))
                    if day is not None
                }
            counted = sum(per_day.values())
            days = sorted(per_day)
            latest = source.latest_change(source.describe_table(table))
            changed = None
            if latest is not None:
                # Measured back from the source's newest change, not this machine's clock: a
                # copy or a quiet source still shows the rate its changes came at.
                since = latest - dt.timedelta(days=CHANGE_WINDOW_DAYS)
                with source.engine.connect() as connection:
                    changed = {
                        str(day)[:10]: int(rows) / CHANGE_WINDOW_DAYS
                        for day, rows in connection.execute(
                            changed_rows_per_day_query(source, table, since)
                        )
                        if day is not None
                    }
            items.append(
                TableInventory(
                    table=table.name,
                    rows=catalog_rows if catalog_rows else counted,
                    bytes=size,
                    rows_source="catalog" if catalog_rows else "count",
                    first_day=days[0] if days else None,
                    last_day=days[-1] if days else None,
                    days=len(days),
                    rows_per_day=per_day,
                    changed_rows_by_day=changed,
                )
            )
    except sa.exc.SQLAlchemyError as error:
        raise SourceError(describe_error(source.sa_url, error)) from None
    return items


# ----------------------------------------------------------------------------------- speeds


def _recent_metadata(instance, key, limit: int = RECENT_RUNS) -> list[dict]:
    records = instance.fetch_materializations(dg.AssetKey(key), limit=limit).records
    found = []
    for record in records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        found.append({name: value.value for name, value in materialization.metadata.items()})
    return found


def measured_speeds(instance, tables: tuple[TableSpec, ...]) -> Speeds:
    extract, workers, compression, sync = [], [], [], []
    per_row: dict[str, float] = {}
    files_per_day: dict[str, float] = {}
    if instance is not None:
        for table in tables:
            table_per_row = []
            for meta in _recent_metadata(instance, ["bronze", table.name]):
                if meta.get("rows", 0) and meta.get("rows_per_second"):
                    extract.append(float(meta["rows_per_second"]))
                if meta.get("source_bytes_read") and meta.get("lake_bytes"):
                    compression.append(meta["lake_bytes"] / meta["source_bytes_read"])
                if meta.get("rows", 0) and meta.get("lake_bytes"):
                    table_per_row.append(meta["lake_bytes"] / meta["rows"])
            if table_per_row:
                per_row[table.name] = statistics.median(table_per_row)
            table_files = []
            for meta in _recent_metadata(instance, ["silver", table.name]):
                if meta.get("rows", 0) and meta.get("rows_per_second"):
                    workers.append(float(meta["rows_per_second"]))
                if meta.get("files"):
                    table_files.append(float(meta["files"]))
            if table_files:
                files_per_day[table.name] = statistics.median(table_files)
            for meta in _recent_metadata(instance, ["sync", table.name]):
                if meta.get("seconds") is not None:
                    sync.append(float(meta["seconds"]))
    return Speeds(
        extract_rows_per_s=statistics.median(extract) if extract else REFERENCE_EXTRACT_ROWS_PER_S,
        extract_measured_runs=len(extract),
        worker_rows_per_s=statistics.median(workers) if workers else REFERENCE_WORKER_ROWS_PER_S,
        worker_measured_runs=len(workers),
        lake_to_source_bytes=(
            statistics.median(compression) if compression else REFERENCE_LAKE_TO_SOURCE
        ),
        compression_measured_runs=len(compression),
        sync_seconds_per_cycle=statistics.median(sync) if sync else None,
        sync_measured_cycles=len(sync),
        lake_bytes_per_row=per_row,
        silver_files_per_day=files_per_day,
    )


# --------------------------------------------------------------------------------- estimate


def build_plan(
    source: SourceDatabase,
    tables: tuple[TableSpec, ...],
    instance=None,
    *,
    streams: int = DEFAULT_STREAMS,
    bandwidth_mbps: float = DEFAULT_BANDWIDTH_MBPS,
    recent_days: int = 7,
) -> Plan:
    if streams < 1:
        raise ValueError("--streams must be at least 1")
    if bandwidth_mbps <= 0:
        raise ValueError("--bandwidth-mbps must be positive")
    items = inventory(source, tables)
    speeds = measured_speeds(instance, tables)
    total_rows = sum(item.rows for item in items)
    known_bytes = [item.bytes for item in items if item.bytes is not None]
    assumptions = []
    if len(known_bytes) == len(items):
        total_bytes = sum(known_bytes)
    else:
        # SQLite keeps no size per table: take the reference row width.
        total_bytes = int(total_rows * 2_200)
        assumptions.append("source size estimated at 2.2 KB per row (no catalog sizes)")
    lake_bytes = int(total_bytes * speeds.lake_to_source_bytes)
    source_hours = total_rows / (streams * speeds.extract_rows_per_s) / 3600
    worker_hours = total_rows / (streams * speeds.worker_rows_per_s) / 3600
    bronze_bytes = 0.0
    for item in items:
        if item.table in speeds.lake_bytes_per_row:
            bronze_bytes += item.rows * speeds.lake_bytes_per_row[item.table]
        else:
            table_bytes = item.bytes if item.bytes is not None else item.rows * 2_200
            bronze_bytes += table_bytes * speeds.lake_to_source_bytes
    table_days = sum(item.days for item in items)
    found = topologies(
        layer_bytes(total_bytes, bronze_bytes, table_days),
        bandwidth_mbps,
        source_hours,
        worker_hours,
    )
    chosen = fastest(found)
    # The link's time is what crosses it in the fastest topology (every upload and read back,
    # per traffic.py), not the bronze bytes alone.
    busier = "up" if chosen.up_bytes >= chosen.down_bytes else "down"
    hours = {
        "source (extraction streams)": source_hours,
        f"network ({chosen.name}, {busier})": chosen.network_hours,
        "workers (silver + gold)": worker_hours,
    }
    bottleneck = max(hours, key=hours.get)
    # The three overlap (partitions flow through them), so the slowest sets the pace.
    migration_hours = hours[bottleneck]
    daily_rows = 0.0
    for item in items:
        recent = sorted(item.rows_per_day)[-recent_days:]
        if recent:
            daily_rows += sum(item.rows_per_day[day] for day in recent) / len(recent)
    tables_by_name = {table.name: table for table in tables}
    incremental = None
    if items and all(item.changed_rows_by_day is not None for item in items):
        incremental = incremental_estimate(
            [
                TableChanges(
                    table=item.table,
                    changed_by_day=item.changed_rows_by_day,
                    rows_per_day=item.rows_per_day,
                    silver_files_per_day=speeds.silver_files_per_day.get(
                        item.table, default_files_per_day(tables_by_name[item.table])
                    ),
                )
                for item in items
            ],
            speeds,
            streams,
        )
        daily_hours = incremental.hours
    else:
        daily_share = daily_rows / total_rows if total_rows else 0.0
        daily_hours = migration_hours * daily_share
        if speeds.sync_seconds_per_cycle is not None:
            daily_hours = max(daily_hours, speeds.sync_seconds_per_cycle * len(tables) / 3600)
        assumptions.append(
            "daily incremental time scaled from the migration rate (no change rate measured)"
        )
    return Plan(
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        source=display_url(source.sa_url),
        streams=streams,
        bandwidth_mbps=bandwidth_mbps,
        inventory=items,
        speeds=speeds,
        total_rows=total_rows,
        total_source_bytes=total_bytes,
        lake_bytes_estimate=lake_bytes,
        hours=hours,
        bottleneck=bottleneck,
        migration_hours=migration_hours,
        daily_rows=daily_rows,
        daily_incremental_hours=daily_hours,
        assumptions=assumptions,
        table_days=table_days,
        bronze_bytes_estimate=int(bronze_bytes),
        topologies=found,
        fastest_topology=chosen.name,
        incremental=incremental,
    )


def _day_before(day: str) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


def default_files_per_day(table: TableSpec) -> float:
    """Silver files a day of the table holds where no run measured it: one per model and hour
    when silver is laid out by model, else one."""
    return REFERENCE_SILVER_FILES_PER_DAY if table.silver_model_column else 1.0


@dataclass
class TableChanges:
    table: str
    # Per cycle (a day), the rows changed by UTC day of their event time.
    changed_by_day: dict[str, float]
    rows_per_day: dict[str, int]
    silver_files_per_day: float


@dataclass
class IncrementalEstimate:
    """A day's incremental cycle: what it reads from the source and what it rewrites.

    A sync rewrites only the silver files that hold changed keys (incremental/merge.py). A day
    with `k` changes among its `F` files is taken to have them spread at random: it rewrites
    F x (1 - (1 - 1/F)^k) files of rows_of_the_day / F rows each. So the newest day, where
    nearly every row is new, is written whole, and a late update to an old day costs one file.
    """

    changed_rows_per_day: float
    late_changes_per_day: float
    rows_rewritten_per_day: float
    cycle_hours: float
    read_hours: float
    rewrite_hours: float

    @property
    def hours(self) -> float:
        return self.cycle_hours + self.read_hours + self.rewrite_hours


def files_touched(changes: float, files: float) -> float:
    """Expected files holding at least one of `changes` keys spread at random over `files`."""
    files = max(files, 1.0)
    return files * (1.0 - (1.0 - 1.0 / files) ** changes) if changes > 0 else 0.0


def incremental_estimate(
    changes: list[TableChanges], speeds: Speeds, streams: int
) -> IncrementalEstimate:
    changed = late = rewritten = 0.0
    for table in changes:
        newest = max(table.changed_by_day, default=None)
        for day, count in table.changed_by_day.items():
            day_rows = max(table.rows_per_day.get(day, 0), count)
            files = table.silver_files_per_day
            rewritten += files_touched(count, files) * day_rows / max(files, 1.0)
            changed += count
            if newest is not None and day < _day_before(newest):
                late += count
    cycle_seconds = (
        speeds.sync_seconds_per_cycle
        if speeds.sync_seconds_per_cycle is not None
        else REFERENCE_CYCLE_SECONDS
    )
    return IncrementalEstimate(
        changed_rows_per_day=changed,
        late_changes_per_day=late,
        rows_rewritten_per_day=rewritten,
        cycle_hours=cycle_seconds * len(changes) / 3600,
        read_hours=changed / (streams * speeds.extract_rows_per_s) / 3600,
        rewrite_hours=rewritten / (streams * speeds.worker_rows_per_s) / 3600,
    )
