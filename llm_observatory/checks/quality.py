"""Data quality: silver holds no row that breaks a rule; quarantine stays a small share.

Silver's rows are validated again, independently of the routing that sent them there: as the
one pass writes them (recorded with the commit), or from the lake as it is now when the day's
files are no longer those (a later sync) and whenever the cutover report asks; a file changed
in storage is the checksum checks' to find.
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


class RuleTally:
    """Silver rows that break a rule (per rule, the first keys) and quarantined rows per rule,
    counted batch by batch: from the lake's files, or from the rows as the one pass writes
    them (checks/day_profile.py)."""

    def __init__(self, table: TableSpec) -> None:
        self.table = table
        self.broken: Counter = Counter()
        self.first_keys: list = []
        self.silver_rows = 0
        self.quarantined = 0
        self.by_rule: Counter = Counter()

    def add_silver(self, batch) -> None:
        self.silver_rows += batch.num_rows
        any_broken = None
        for rule in self.table.rules:
            mask = rule_violations(rule, batch.column(batch.schema.get_field_index(rule.column)))
            self.broken[rule.name] += pc.sum(mask).as_py() or 0
            any_broken = mask if any_broken is None else pc.or_(any_broken, mask)
        if (
            any_broken is not None
            and len(self.first_keys) < SHOWN_KEYS
            and pc.any(any_broken).as_py()
        ):
            keys = batch.column(self.table.key).filter(any_broken).to_pylist()
            self.first_keys.extend(keys[: SHOWN_KEYS - len(self.first_keys)])

    def add_quarantined(self, rules) -> None:
        """`rules`: the `quarantine_rule` column of quarantined rows."""
        self.quarantined += len(rules)
        for value, count in zip(*pc.value_counts(rules).flatten()):
            self.by_rule[value.as_py()] += count.as_py()

    def to_json(self) -> dict:
        return {
            "broken": dict(self.broken),
            "first_keys": [k if isinstance(k, int | str) else str(k) for k in self.first_keys],
            "silver_rows": self.silver_rows,
            "quarantined": self.quarantined,
            "by_rule": dict(self.by_rule),
        }

    @classmethod
    def from_json(cls, table: TableSpec, body: dict) -> RuleTally:
        tally = cls(table)
        tally.broken.update(body["broken"])
        tally.first_keys = list(body["first_keys"])
        tally.silver_rows = body["silver_rows"]
        tally.quarantined = body["quarantined"]
        tally.by_rule.update(body["by_rule"])
        return tally


def lake_rule_tally(table: TableSpec, lake: LakeResource, day: dt.date) -> RuleTally:
    """The tally of the day as the lake holds it now."""
    tally = RuleTally(table)
    columns = list(dict.fromkeys([table.key, *(rule.column for rule in table.rules)]))
    for batch in scan_partition(silver_location(lake, table), day_filter(day), columns):
        tally.add_silver(batch)
    quarantine = quarantine_location(lake, table)
    if count_partition_rows(quarantine, day_filter(day)):
        for batch in scan_partition(quarantine, day_filter(day), ["quarantine_rule"]):
            tally.add_quarantined(batch.column(0))
    return tally


def silver_rule_results(
    table: TableSpec, lake: LakeResource, day: dt.date, recorded: RuleTally | None = None
) -> list[dg.AssetCheckResult]:
    """`recorded`: the tally the one pass recorded with the commit of the day's current
    silver and quarantine files (checks/day_profile.py), else the files are read."""
    tally = recorded or lake_rule_tally(table, lake, day)
    broken, first_keys, silver_rows = tally.broken, tally.first_keys, tally.silver_rows
    quarantined, by_rule = tally.quarantined, tally.by_rule
    violations = sum(broken.values())
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
