"""Data quality: silver holds no row that breaks a rule; quarantine stays a small share.

Silver is re-validated from the lake as it is now (not from the run's own counters), so a row
that slipped in, or was changed in storage, after validation is found.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import dagster as dg
import pyarrow.compute as pc

from llm_observatory.io.delta_lake import count_partition_rows, scan_partition
from llm_observatory.layout import day_filter, quarantine_location, silver_location
from llm_observatory.quality import rule_violations
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import TableSpec

SILVER_RULES_CHECK = "silver_rows_pass_every_rule"
QUARANTINE_SHARE_CHECK = "quarantine_share_below_threshold"
SHOWN_KEYS = 20


def silver_rule_results(
    table: TableSpec, lake: LakeResource, day: dt.date
) -> list[dg.AssetCheckResult]:
    broken: Counter = Counter()
    first_keys: list = []
    columns = list(dict.fromkeys([table.key, *(rule.column for rule in table.rules)]))
    silver_rows = 0
    for batch in scan_partition(silver_location(lake, table), day_filter(day), columns):
        silver_rows += batch.num_rows
        any_broken = None
        for rule in table.rules:
            mask = rule_violations(rule, batch.column(batch.schema.get_field_index(rule.column)))
            broken[rule.name] += pc.sum(mask).as_py() or 0
            any_broken = mask if any_broken is None else pc.or_(any_broken, mask)
        if any_broken is not None and len(first_keys) < SHOWN_KEYS and pc.any(any_broken).as_py():
            keys = batch.column(0).filter(any_broken).to_pylist()
            first_keys.extend(keys[: SHOWN_KEYS - len(first_keys)])
    violations = sum(broken.values())
    quarantined = count_partition_rows(quarantine_location(lake, table), day_filter(day))
    by_rule = Counter()
    if quarantined:
        for batch in scan_partition(
            quarantine_location(lake, table), day_filter(day), ["quarantine_rule"]
        ):
            for value, count in zip(*pc.value_counts(batch.column(0)).flatten()):
                by_rule[value.as_py()] += count.as_py()
    total = silver_rows + quarantined
    share = quarantined / total if total else 0.0
    return [
        dg.AssetCheckResult(
            check_name=SILVER_RULES_CHECK,
            passed=violations == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if violations == 0
            else f"partition {day}: {violations} rule violation(s) in silver",
            metadata={
                "partition": day.isoformat(),
                "silver_rows": silver_rows,
                "violations_by_rule": dg.MetadataValue.json(dict(broken)),
                "first_offending_keys": dg.MetadataValue.json(first_keys),
            },
        ),
        dg.AssetCheckResult(
            check_name=QUARANTINE_SHARE_CHECK,
            passed=share <= table.quarantine_warn_share,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "partition": day.isoformat(),
                "quarantined_rows": quarantined,
                "quarantined_share": round(share, 6),
                "threshold": table.quarantine_warn_share,
                "quarantined_by_rule": dg.MetadataValue.json(dict(by_rule)),
            },
        ),
    ]
