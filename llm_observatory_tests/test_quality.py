"""Quality rules: names, order, reasons, and that nothing is dropped."""

import pyarrow as pa

from llm_observatory.quality import evaluate
from llm_observatory.tables import LLM_INTERACTIONS, LOGS, METADATA


def interactions(**columns) -> pa.RecordBatch:
    size = len(next(iter(columns.values())))
    base = {
        "interaction_id": [f"id-{i}" for i in range(size)],
        "timestamp": [1] * size,
        "model_name": ["ollama"] * size,
        "latency_ms": [10] * size,
    }
    base.update(columns)
    return pa.record_batch(base)


def test_every_rule_named_as_the_contract_says():
    names = [rule.name for rule in LLM_INTERACTIONS.rules]
    assert names == [
        "required:interaction_id",
        "required:model_name",
        "required:timestamp",
        "required:latency_ms",
        "range:latency_ms",
        "allowed:model_name",
    ]
    assert [rule.name for rule in METADATA.rules] == ["json:attributes"]
    assert LOGS.rules == ()


def test_rows_split_into_passing_and_quarantined_with_first_rule_and_all_reasons():
    batch = interactions(
        model_name=["ollama", "Ollama", None, "grok", "gpt-x", "gemini"],
        latency_ms=[0, 5, 7, None, -1, 120_000],
    )
    verdict = evaluate(batch, LLM_INTERACTIONS.rules)
    assert verdict.passed.to_pylist() == [True, False, False, False, False, True]
    failed = verdict.failed_rows.to_pydict()
    assert failed["interaction_id"] == ["id-1", "id-2", "id-3", "id-4"]
    assert failed["quarantine_rule"] == [
        "allowed:model_name",
        "required:model_name",
        "required:latency_ms",
        "range:latency_ms",  # breaks range and allowed: one row, the first rule named
    ]
    assert failed["quarantine_reason"][3] == (
        "range:latency_ms: latency_ms=-1; allowed:model_name: model_name='gpt-x'"
    )
    assert verdict.broken_counts["allowed:model_name"] == 2
    assert verdict.broken_counts["range:latency_ms"] == 1
    # NULLs break only `required` rules, never range or allowed.
    assert verdict.broken_counts["required:latency_ms"] == 1
    assert verdict.failed_rows.num_rows + sum(verdict.passed.to_pylist()) == batch.num_rows


def test_range_bounds_are_inclusive():
    batch = interactions(latency_ms=[0, 120_000, 120_001])
    verdict = evaluate(batch, LLM_INTERACTIONS.rules)
    assert verdict.passed.to_pylist() == [True, True, False]


def test_reason_values_cut_to_100_characters():
    long_model = "m" * 500
    verdict = evaluate(interactions(model_name=[long_model]), LLM_INTERACTIONS.rules)
    reason = verdict.failed_rows.column("quarantine_reason")[0].as_py()
    shown = reason.split("model_name=", 1)[1]
    assert len(shown) <= 101 + 2  # the value in quotes, cut, with an ellipsis


def test_json_rule_accepts_null_and_valid_json_only():
    batch = pa.record_batch(
        {"metadata_id": [1, 2, 3, 4], "attributes": ['{"a": 1}', None, "{bad", "[1, 2]"]}
    )
    verdict = evaluate(batch, METADATA.rules)
    assert verdict.passed.to_pylist() == [True, True, False, True]
    assert verdict.failed_rows.column("quarantine_rule").to_pylist() == ["json:attributes"]


def test_table_without_rules_passes_everything():
    batch = pa.record_batch({"log_id": [1, 2]})
    verdict = evaluate(batch, LOGS.rules)
    assert verdict.passed.to_pylist() == [True, True]
    assert verdict.failed_rows.num_rows == 0


def test_row_counts_are_exact_unless_a_tolerance_is_configured():
    from llm_observatory.checks.row_counts import within_tolerance

    assert within_tolerance(1000, 1000, 0.0)
    assert not within_tolerance(999, 1000, 0.0)
    assert within_tolerance(990, 1000, 0.01)
    assert not within_tolerance(989, 1000, 0.01)
    assert not within_tolerance(1011, 1000, 0.01)
