"""A day of a table in one pass: the source's rows are read once, and bronze, silver, quarantine
and (for the interactions) gold are written from that one stream in the same step.

Built as three steps, each layer read the one below back from the lake: bronze uploaded, read
back to build silver, silver uploaded and read back to build gold. Over the guide's 100 Mbps
link from the data centre that is every byte crossing the wire several times, and each read
back decoded Parquet again. Here each batch from the source is written to bronze, hashed by key,
routed through the rules into silver or quarantine, and added to the day's metrics, as it goes
by; the commits follow one another in the order the layers depend on, each checked before the
next (a short bronze puts the day back and commits no silver).

Dagster still shows bronze, silver and gold as assets of their own, with their own checks and
lineage: one multi-asset per table, which can be subset. A UI backfill of silver alone (a
repair) rebuilds it from bronze in the lake, gold alone from silver. A day whose rows hold a key
more than once (a source without a primary key, a redelivery) also builds silver from bronze,
where the latest version of each key is chosen: the stream cannot know which version comes last.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from llm_observatory.assets.blocking_checks import put_back_if_failed
from llm_observatory.assets.bronze import (
    bronze_commit_metadata,
    bronze_result,
    bronze_rows,
    bronze_writer,
    refuse_if_source_overloaded,
    wait_for_healthy_source,
)
from llm_observatory.assets.gold import GOLD_REQUESTS_CHECK, gold_day
from llm_observatory.assets.partition_lease import day_lease
from llm_observatory.assets.progress import Throughput
from llm_observatory.assets.retries import write_with_read_back_retries
from llm_observatory.assets.silver import (
    DayValidator,
    ValidatedDay,
    checked_silver,
    silver_from_bronze,
    silver_snapshots,
)
from llm_observatory.checks.day_profile import DayProfile
from llm_observatory.checks.row_counts import (
    BRONZE_ROWS_CHECK,
    SILVER_ROWS_CHECK,
    bronze_matches_source,
)
from llm_observatory.io.delta_lake import CommitSummary, ReadBackMismatchError, snapshot_partition
from llm_observatory.io.uploads import UploadRefusedError
from llm_observatory.layout import (
    DAILY_METRICS_KEY,
    bronze_key,
    bronze_location,
    day_filter,
    silver_key,
)
from llm_observatory.partitions import daily_partitions
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase, SourceTable
from llm_observatory.resources.source_load import SOURCE_POOL
from llm_observatory.tables import LLM_INTERACTIONS, TABLES, TableSpec
from llm_observatory.transform.dedup import RepeatedHashes, key_hashes
from llm_observatory.transform.metrics import DayMetrics

LAKE_KINDS = {"delta", "parquet"}


class DayPass:
    """The writers a day's source stream feeds at once: bronze, and (when silver is built in
    the same pass) silver with quarantine, the key hashes that tell whether a key repeats, and
    the day's metrics for gold.

    Silver is routed in the same thread as bronze. A thread of its own, a batch behind, was
    measured (make bench, 1M rows): 17.3-19.7 s against 19.0-19.2 s inline, within the noise,
    for 40 MB more memory (two jemalloc arenas, batches in flight), and memory is the limit
    that holds at any day size.
    """

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        table: TableSpec,
        lake: LakeResource,
        described: SourceTable,
        day: dt.date,
        *,
        with_silver: bool,
        with_gold: bool,
    ) -> None:
        self.table = table
        self.progress = Throughput(log=context.log, label=f"bronze/{table.name} {day}")
        self.bronze = bronze_writer(lake, table, described, day)
        self.bronze_profile = DayProfile(table, day, silver=False)
        self.validator = (
            DayValidator(
                table,
                lake,
                day,
                described.arrow_schema,
                Throughput(label=f"silver/{table.name} {day} (same pass)"),
            )
            if with_silver
            else None
        )
        self.keys = RepeatedHashes() if with_silver else None
        self.metrics = DayMetrics(day) if with_silver and with_gold else None

    def add(self, batch) -> None:
        rows = bronze_rows(batch, self.table)
        self.bronze.write(rows)
        self.bronze_profile.add_written(rows)
        self.progress.add(batch.num_rows, batch.nbytes)
        if self.validator is None:
            return
        self.keys.add(key_hashes(batch.column(self.table.key)))
        passing = self.validator.add(batch)
        if self.metrics is not None:
            self.metrics.add(passing)

    def abort(self) -> None:
        self.bronze.abort()
        self.abort_silver()

    def abort_silver(self) -> None:
        if self.validator is not None:
            self.validator.abort()


def copy_day(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    described: SourceTable,
    day_pass: DayPass,
    change_high_water: dt.datetime | None,
) -> CommitSummary:
    """Streams the day from the source through every writer and commits bronze (only)."""
    window = context.partition_time_window
    day = window.start.date()
    try:
        for batch in source.stream_range(described, window.start, window.end):
            day_pass.add(batch)
        return day_pass.bronze.commit(
            {
                **bronze_commit_metadata(day, context.run_id, change_high_water),
                **day_pass.bronze_profile.metadata(),
            }
        )
    except BaseException:
        day_pass.abort()
        raise


def one_pass(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    day: dt.date,
    *,
    with_silver: bool,
    with_gold: bool,
) -> Iterator:
    """Bronze, and silver and gold when selected, of one day from one read of the source."""
    refuse_if_source_overloaded(context, source)
    described = source.describe_table(table)
    health = wait_for_healthy_source(context, source, described, f"bronze/{table.name} {day}")
    # Read before the copy: every change after the copy began lies above it.
    change_high_water = source.latest_change(described)
    previous_bronze = snapshot_partition(bronze_location(lake, table), day_filter(day))
    previous_silver = silver_snapshots(lake, table, day) if with_silver else []
    passes: list[DayPass] = []

    def attempt() -> CommitSummary:
        passes.append(
            DayPass(
                context, table, lake, described, day, with_silver=with_silver, with_gold=with_gold
            )
        )
        return copy_day(context, table, source, lake, described, passes[-1], change_high_water)

    summary = write_with_read_back_retries(attempt, context.log, f"bronze/{table.name} {day}")
    day_pass = passes[-1]
    try:
        yield from _after_bronze_commit(
            context,
            table,
            source,
            lake,
            day,
            described,
            day_pass,
            summary,
            health,
            previous_bronze,
            previous_silver,
            with_silver=with_silver,
            with_gold=with_gold,
        )
    finally:
        # Whatever stopped the day (a failed check, an error on the source or the lake), the
        # same-pass files no commit took are deleted; a committed writer keeps its files.
        day_pass.abort_silver()


def _after_bronze_commit(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    source: SourceDatabase,
    lake: LakeResource,
    day: dt.date,
    described: SourceTable,
    day_pass: DayPass,
    summary: CommitSummary,
    health: dict,
    previous_bronze,
    previous_silver: list,
    *,
    with_silver: bool,
    with_gold: bool,
) -> Iterator:
    """Bronze's check, then silver (from the pass, or from bronze) and gold, in that order."""
    context.log.info(day_pass.progress.describe())
    window = context.partition_time_window
    check, put_back = put_back_if_failed(
        bronze_matches_source(table, source, described, lake, window.start, window.end),
        [previous_bronze],
        context.log,
        bronze_key(table),
    )
    yield bronze_result(table, summary, day_pass.progress, health, put_back)
    yield check
    if not check.passed:
        return
    if not with_silver:
        if with_gold:  # bronze and gold selected without silver: gold of silver as it is
            yield from gold_day(context, lake, day)
        return

    rows, distinct, repeated = day_pass.keys.result()
    streamed = day_pass.metrics
    outcome: ValidatedDay | None = None
    if len(repeated):
        context.log.info(
            f"silver/{table.name} {day}: {len(repeated):,} key(s) occur more than once in the "
            "day; silver is built from bronze, where the latest version of each is chosen"
        )
    else:
        try:
            outcome = day_pass.validator.commit(context.run_id)
        except (ReadBackMismatchError, UploadRefusedError) as error:
            context.log.warning(
                f"silver/{table.name} {day}: the same-pass files did not read back ({error}); "
                "silver is built again from bronze"
            )
    if outcome is None:
        day_pass.abort_silver()
        streamed = None
        materialization, check = silver_from_bronze(context, table, lake, day)
    else:
        materialization, check = checked_silver(
            context, table, lake, day, outcome, rows, distinct, previous_silver
        )
    yield materialization
    yield check
    if check.passed and with_gold:
        yield from gold_day(context, lake, day, streamed)


def migration_asset(table: TableSpec) -> dg.AssetsDefinition:
    """bronze/<table>, silver/<table> (and gold/daily_metrics for the interactions) of a day,
    with their blocking checks, in one step that reads the source once."""
    bronze, silver = bronze_key(table), silver_key(table)
    specs = [
        dg.AssetSpec(
            bronze,
            group_name="bronze",
            kinds=LAKE_KINDS,
            description=f"Exact copy of source `{table.name}` for one UTC day. {table.description}",
            skippable=True,
        ),
        dg.AssetSpec(
            silver,
            deps=[bronze],
            group_name="silver",
            kinds=LAKE_KINDS,
            description=(
                f"Validated `{table.name}`: one row per `{table.key}`, latest version; rule "
                f"breakers quarantined. Partitioned by {', '.join(table.silver_partition_by)}."
            ),
            skippable=True,
        ),
    ]
    check_specs = [
        dg.AssetCheckSpec(
            BRONZE_ROWS_CHECK,
            asset=bronze,
            blocking=True,
            partitions_def=daily_partitions,
            description="Bronze holds exactly the source's rows of the day (half-open range).",
        ),
        dg.AssetCheckSpec(
            SILVER_ROWS_CHECK,
            asset=silver,
            blocking=True,
            partitions_def=daily_partitions,
            description="Silver rows + quarantined rows == distinct bronze keys of the day.",
        ),
    ]
    if table is LLM_INTERACTIONS:
        specs.append(
            dg.AssetSpec(
                DAILY_METRICS_KEY,
                deps=[silver],
                group_name="gold",
                kinds=LAKE_KINDS,
                description=(
                    "Requests, outcomes, latency percentiles, tokens and cost per day and model."
                ),
                skippable=True,
            )
        )
        check_specs.append(
            dg.AssetCheckSpec(
                GOLD_REQUESTS_CHECK,
                asset=DAILY_METRICS_KEY,
                partitions_def=daily_partitions,
                description="The day's requests over all models equal its silver interactions.",
            )
        )

    @dg.multi_asset(
        name=f"migrate_{table.name}",
        specs=specs,
        check_specs=check_specs,
        partitions_def=daily_partitions,
        can_subset=True,
        pool=SOURCE_POOL,
    )
    def _migrate(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        lake: LakeResource,
        control: ControlDatabase,
    ):
        day = context.partition_time_window.start.date()
        selected = context.selected_asset_keys
        with_gold = DAILY_METRICS_KEY in selected
        with day_lease(context, control, table.name, day):
            if bronze in selected:
                yield from one_pass(
                    context,
                    table,
                    source,
                    lake,
                    day,
                    with_silver=silver in selected,
                    with_gold=with_gold,
                )
                return
            if silver in selected:
                materialization, check = silver_from_bronze(context, table, lake, day)
                yield materialization
                yield check
                if not check.passed:
                    return
            if with_gold:
                yield from gold_day(context, lake, day)

    return _migrate


migration_assets = [migration_asset(table) for table in TABLES]
