"""Quality rules applied to Arrow batches: which rows pass, and why the others do not.

Rules are data (`tables.py`); this module evaluates them vectorised, so validating a batch costs
a few compute kernels, not a Python loop over rows (JSON validity is the one exception: Arrow
has no JSON parser, so only non-NULL values of JSON columns are parsed in Python).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.tables import Rule

REASON_VALUE_LIMIT = 100


@dataclass(frozen=True)
class BatchVerdict:
    """Per-row outcome of a batch: `passed` mask, and for failed rows the rule and reason."""

    passed: pa.BooleanArray
    failed_rows: pa.Table
    broken_counts: dict[str, int]


def rule_violations(rule: Rule, column: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """True where the row breaks the rule; NULLs only break `required` rules."""
    if rule.kind == "required":
        return pc.is_null(column)
    if rule.kind == "range":
        below = pc.less(
            column,
            pa.scalar(rule.minimum).cast(column.type)
            if pa.types.is_decimal(column.type)
            else rule.minimum,
        )
        above = pc.greater(
            column,
            pa.scalar(rule.maximum).cast(column.type)
            if pa.types.is_decimal(column.type)
            else rule.maximum,
        )
        return pc.fill_null(pc.or_(below, above), False)
    if rule.kind == "allowed":
        allowed = pa.array(rule.allowed_values, type=column.type)
        outside = pc.invert(pc.is_in(column, value_set=allowed))
        return pc.and_(pc.is_valid(column), outside)
    if rule.kind == "json":
        return pa.array([value is not None and not _is_json(value) for value in column.to_pylist()])
    raise ValueError(f"unknown rule kind {rule.kind!r} for column {rule.column!r}")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, TypeError):
        return False
    return True


def _shown(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= REASON_VALUE_LIMIT else text[:REASON_VALUE_LIMIT] + "…"


def evaluate(batch: pa.RecordBatch, rules: tuple[Rule, ...]) -> BatchVerdict:
    """Splits a batch into passing rows (mask) and quarantined rows with rule and reason.

    A row breaking several rules is one quarantined row: `quarantine_rule` names the first rule
    broken in declaration order, `quarantine_reason` lists every rule broken with its value.
    """
    table = pa.Table.from_batches([batch])
    if not rules:
        return BatchVerdict(
            passed=pa.array([True] * batch.num_rows, pa.bool_()),
            failed_rows=table.slice(0, 0)
            .append_column("quarantine_rule", pa.array([], pa.string()))
            .append_column("quarantine_reason", pa.array([], pa.string())),
            broken_counts={},
        )
    violations = [rule_violations(rule, table.column(rule.column)) for rule in rules]
    any_broken = violations[0]
    for mask in violations[1:]:
        any_broken = pc.or_(any_broken, mask)
    broken_counts = {rule.name: pc.sum(mask).as_py() or 0 for rule, mask in zip(rules, violations)}

    failed_index = pc.indices_nonzero(any_broken)
    failed = table.take(failed_index)
    first_rules, reasons = [], []
    per_rule_flags = [pc.take(mask, failed_index).to_pylist() for mask in violations]
    per_rule_values = [failed.column(rule.column).to_pylist() for rule in rules]
    for row in range(failed.num_rows):
        broken = [i for i, flags in enumerate(per_rule_flags) if flags[row]]
        first_rules.append(rules[broken[0]].name)
        reasons.append(
            "; ".join(
                f"{rules[i].name}: {rules[i].column}={_shown(per_rule_values[i][row])}"
                for i in broken
            )
        )
    failed = failed.append_column("quarantine_rule", pa.array(first_rules, pa.string()))
    failed = failed.append_column("quarantine_reason", pa.array(reasons, pa.string()))
    return BatchVerdict(
        passed=pc.invert(any_broken), failed_rows=failed, broken_counts=broken_counts
    )
