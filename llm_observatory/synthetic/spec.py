"""What the synthetic source holds, as its readers may rely on it: the model names, the
defect rules and rates, the Arrow types of the rows, a batch of them and the summary of a whole
generation; and the distributions the rows are drawn from (shares, weights, prices, units).

The text pools, the column builders, the batches and the sinks all build on these figures, so
they stand apart from the code that draws and loads the rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from llm_observatory.synthetic.schema import INTERACTIONS, LOGS, METADATA, TABLE_NAMES

ALLOWED_MODELS: tuple[str, ...] = ("ollama", "gemini", "grok")
"""The model names the quality rule ``allowed:model_name`` accepts (exact, case-sensitive)."""
UNKNOWN_MODELS: tuple[str, ...] = ("gpt-x", "Ollama", "GEMINI", "grok ", "llama3:8b")
"""Injected by the ``unknown_model`` defect: unknown names, wrong case, a trailing space."""
MAX_LATENCY_MS = 120_000
"""Upper edge of the valid latency range ``0 <= latency_ms <= 120000``."""
CHUNK_ROWS = 25_000
"""Interactions generated (and held in memory) at a time; part of the seeding, so fixed."""

DEFECT_RULES: dict[str, tuple[str, str]] = {
    "model_null": (INTERACTIONS, "required:model_name"),
    "latency_null": (INTERACTIONS, "required:latency_ms"),
    "latency_out_of_range": (INTERACTIONS, "range:latency_ms"),
    "unknown_model": (INTERACTIONS, "allowed:model_name"),
    "invalid_json": (METADATA, "json:attributes"),
}
"""Each defect's table, and the first quality rule (in `tables.py` order) its rows break."""

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR
_EPOCH = dt.date(1970, 1, 1)

_MODEL_WEIGHTS = (0.45, 0.35, 0.20)
_MODEL_LATENCY_FACTOR = np.array([1.4, 1.0, 0.8])  # local ollama is the slow one
# Micro-dollars per prompt / completion token; ollama is local, its cost is amortised compute.
_PRICE_IN_MICROS = np.array([0.02, 1.25, 3.0])
_PRICE_OUT_MICROS = np.array([0.02, 5.0, 15.0])
_STATUSES = ("success", "error", "timeout")
_STATUS_WEIGHTS = (0.90, 0.07, 0.03)
_UNICODE_ROW_SHARE = 0.30  # rows whose prompt and response come from the multilingual corpus
_HUGE_RESPONSE_RATE = 1 / 20_000  # success rows answered with the whole English corpus (~1.5 MB)
_METADATA_PER_INTERACTION = ((0, 1, 2), (0.03, 0.92, 0.05))
_LOGS_PER_INTERACTION = ((1, 2, 3), (0.40, 0.35, 0.25))
_ORPHAN_LOG_RATE = 0.05  # logs with no interaction, per interaction
_ATTRIBUTES_NULL_RATE = 0.05
_USERS = 5_000
_SESSION_WINDOW_US = 30 * 60 * _US_PER_SECOND  # a user's requests within 30 minutes: one session
_POOL_SEED = 20_240_101  # the vocabulary is fixed; the caller's seed only picks from it


@dataclass(frozen=True)
class DefectRates:
    """Share of rows that carry each injected defect; at most one defect per row.

    The four interaction rates are fractions of all interactions (boundary rows excepted),
    ``invalid_json`` a fraction of metadata rows. ``missing_hour`` is ``(day index, UTC hour)``:
    that hour of that day has no rows in any table; ``None`` (or a day index past the generated
    days) disables it.
    """

    latency_null: float = 0.005
    latency_out_of_range: float = 0.005
    unknown_model: float = 0.005
    model_null: float = 0.002
    invalid_json: float = 0.005
    missing_hour: tuple[int, int] | None = (1, 13)

    def __post_init__(self) -> None:
        rates = {name: getattr(self, name) for name in DEFECT_RULES}
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"DefectRates.{name} must be within [0, 1], got {rate}")
        interaction_total = sum(rate for name, rate in rates.items() if name != "invalid_json")
        if interaction_total > 1.0:
            raise ValueError(f"interaction defect rates add up to {interaction_total} > 1")
        if self.invalid_json + _ATTRIBUTES_NULL_RATE > 1.0:
            raise ValueError(f"invalid_json must be at most {1 - _ATTRIBUTES_NULL_RATE}")
        if self.missing_hour is not None:
            day_index, hour = self.missing_hour
            if day_index < 0 or not 0 <= hour <= 23:
                raise ValueError(
                    f"missing_hour must be (day index >= 0, hour 0-23), got {self.missing_hour}"
                )

    @classmethod
    def none(cls) -> DefectRates:
        """Clean data: no defect and no missing hour."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, None)


@dataclass(frozen=True)
class SyntheticSummary:
    """Exactly what was generated: the figures tests and the demo compare the lake against.

    ``rows_by_day`` and ``defects_by_day`` are keyed by table / defect name, then by the UTC day
    of the row's event time (``timestamp`` or ``created_at``); days without rows are absent from
    the inner dicts only when the table has no row that day.
    """

    database: str  # the URL, password hidden
    seed: int
    start_date: dt.date
    days: int
    rows_per_day: int
    defect_rates: DefectRates
    rows: dict[str, int]
    rows_by_day: dict[str, dict[dt.date, int]]
    defects: dict[str, int]
    defects_by_day: dict[str, dict[dt.date, int]]
    missing_hour: dt.datetime | None  # start (UTC) of the hour without rows, if any
    elapsed_seconds: float = 0.0

    @property
    def end_date(self) -> dt.date:
        """The last generated day (inclusive)."""
        return self.start_date + dt.timedelta(days=self.days - 1)

    def expected_quarantine_by_rule(self, table: str, day: dt.date | None = None) -> dict[str, int]:
        """Rows of ``table`` the quality rules must quarantine, by the first rule they break."""
        expected: dict[str, int] = {}
        for defect, (defect_table, rule) in DEFECT_RULES.items():
            if defect_table != table:
                continue
            count = self.defects[defect] if day is None else self.defects_by_day[defect].get(day, 0)
            if count:
                expected[rule] = expected.get(rule, 0) + count
        return expected

    def expected_quarantine(self, table: str, day: dt.date | None = None) -> int:
        """Rows of ``table`` (on ``day``, or in all) that break at least one quality rule."""
        return sum(self.expected_quarantine_by_rule(table, day).values())

    def format(self) -> str:
        """A human-readable report, as ``python -m llm_observatory.synthetic`` prints it."""
        lines = [
            f"synthetic source: {self.database}",
            (
                f"  days {self.start_date} .. {self.end_date} ({self.days}), "
                f"{self.rows_per_day} interactions per day, seed {self.seed}, "
                f"generated in {self.elapsed_seconds:.1f} s"
            ),
        ]
        for table in TABLE_NAMES:
            per_day = self.rows_by_day[table]
            low, high = (min(per_day.values()), max(per_day.values())) if per_day else (0, 0)
            lines.append(
                f"  {table:<17} {self.rows[table]:>12,} rows ({low:,}..{high:,} per day), "
                f"expected quarantine {self.expected_quarantine(table):,}"
            )
        lines.append(
            "  defects: " + ", ".join(f"{name} {count:,}" for name, count in self.defects.items())
        )
        lines.append(
            f"  missing hour: {self.missing_hour.isoformat() if self.missing_hour else 'none'}"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class SourceBatch:
    """One chunk of generated rows, as Arrow tables with the source's column types.

    Timestamps are ``timestamp[us, tz=UTC]``, ``cost_usd`` is ``decimal128(12, 6)``, ids are
    sequential ``int64``. ``defects`` counts this batch's injected defects by name.
    """

    day: dt.date
    interactions: pa.Table
    metadata: pa.Table
    logs: pa.Table
    defects: dict[str, int]

    def table(self, name: str) -> pa.Table:
        return {INTERACTIONS: self.interactions, METADATA: self.metadata, LOGS: self.logs}[name]


_TS = pa.timestamp("us", tz="UTC")
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    INTERACTIONS: pa.schema(
        [
            ("interaction_id", pa.string()),
            ("timestamp", _TS),
            ("model_name", pa.string()),
            ("latency_ms", pa.int32()),
            ("prompt", pa.string()),
            ("response", pa.string()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("cost_usd", pa.decimal128(12, 6)),
            ("last_modified", _TS),
        ]
    ),
    METADATA: pa.schema(
        [
            ("metadata_id", pa.int64()),
            ("interaction_id", pa.string()),
            ("created_at", _TS),
            ("attributes", pa.string()),
            ("last_modified", _TS),
        ]
    ),
    LOGS: pa.schema(
        [
            ("log_id", pa.int64()),
            ("interaction_id", pa.string()),
            ("created_at", _TS),
            ("level", pa.string()),
            ("message", pa.string()),
            ("last_modified", _TS),
        ]
    ),
}
"""The Arrow types :func:`generate_batches` produces, column order as in the SQL tables."""
