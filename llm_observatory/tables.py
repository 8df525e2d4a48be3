"""The migrated tables, declared as data.

Everything table-specific (key, event time, change column, quality rules, silver layout) lives
here, so adding a fourth table is one more `TableSpec` and every asset, check and command picks
it up from `TABLES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RuleKind = Literal["required", "range", "allowed", "json"]


@dataclass(frozen=True)
class Rule:
    """One quality rule; a row breaking it goes to quarantine with the rule's name.

    Names are `required:<column>`, `range:<column>`, `allowed:<column>`,
    `json:<column>`.
    """

    kind: RuleKind
    column: str
    minimum: float | None = None
    maximum: float | None = None
    allowed_values: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.column}"


def required(column: str) -> Rule:
    return Rule("required", column)


def in_range(column: str, minimum: float, maximum: float) -> Rule:
    return Rule("range", column, minimum=minimum, maximum=maximum)


def allowed(column: str, *values: str) -> Rule:
    return Rule("allowed", column, allowed_values=tuple(values))


def valid_json(column: str) -> Rule:
    return Rule("json", column)


@dataclass(frozen=True)
class TableSpec:
    """A source table and how the lake holds it.

    `silver_model_column`, when set, lays silver out as `model=/date=/hour=` (the layout analysts
    filter on); otherwise silver is partitioned by `date` like bronze.
    """

    name: str
    key: str
    event_time: str
    change_column: str = "last_modified"
    rules: tuple[Rule, ...] = ()
    silver_model_column: str | None = None
    description: str = ""
    # Share of rows quarantined above which the quarantine check warns.
    quarantine_warn_share: float = field(default=0.05)
    # Row counts must match exactly by default; the migration guide's 1 % is `0.01`.
    row_count_tolerance: float = 0.0
    # Source records per partition and run compared on every column with the lake.
    spot_check_rows: int = 10_000
    # Its silver rows are summarised in gold/daily_metrics (the table holds LLM calls).
    feeds_daily_metrics: bool = False
    # Text columns with few distinct values (a model, a status, a log level): dictionary-
    # encoded in the lake's files, with min/max statistics readers prune on.
    categorical_columns: tuple[str, ...] = ()

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns the migration cannot work without; checked before any data moves."""
        columns = [self.key, self.event_time, self.change_column]
        columns += [rule.column for rule in self.rules]
        if self.silver_model_column:
            columns.append(self.silver_model_column)
        return tuple(dict.fromkeys(columns))

    @property
    def silver_partition_by(self) -> tuple[str, ...]:
        return ("model", "date", "hour") if self.silver_model_column else ("date",)


MODELS = ("ollama", "gemini", "grok")

LLM_INTERACTIONS = TableSpec(
    name="llm_interactions",
    key="interaction_id",
    event_time="timestamp",
    rules=(
        required("interaction_id"),
        required("model_name"),
        required("timestamp"),
        required("latency_ms"),
        in_range("latency_ms", 0, 120_000),
        allowed("model_name", *MODELS),
    ),
    silver_model_column="model_name",
    description="One row per LLM call: prompt, response, latency, tokens and cost.",
    feeds_daily_metrics=True,
    categorical_columns=("model_name", "status"),
)

METADATA = TableSpec(
    name="metadata",
    key="metadata_id",
    event_time="created_at",
    rules=(valid_json("attributes"),),
    description="Free-form JSON attributes attached to interactions.",
)

LOGS = TableSpec(
    name="logs",
    key="log_id",
    event_time="created_at",
    description="Application log lines, some tied to an interaction.",
    categorical_columns=("level",),
)

TABLES: tuple[TableSpec, ...] = (LLM_INTERACTIONS, METADATA, LOGS)
TABLES_BY_NAME = {table.name: table for table in TABLES}


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES_BY_NAME[name]
    except KeyError:
        known = ", ".join(TABLES_BY_NAME)
        raise ValueError(f"unknown table {name!r}; the migrated tables are: {known}") from None
