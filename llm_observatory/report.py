"""The cutover report: every source row of every day accounted for in the lake, or not.

It recounts instead of trusting the runs' own figures: source rows per day by range queries,
lake rows per day from the Delta log of the current table versions, and the latest result of
every ERROR check per partition from the Dagster instance. GO means every source row is in
silver or quarantine and no ERROR check's latest result failed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from llm_observatory.io.delta_lake import rows_per_day
from llm_observatory.layout import bronze_location, quarantine_location, silver_location
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.tables import TableSpec

GO, NO_GO = "GO", "NO-GO"


@dataclass(frozen=True)
class DayAccount:
    table: str
    day: str
    source_rows: int
    bronze_rows: int
    silver_rows: int
    quarantined_rows: int

    @property
    def complete(self) -> bool:
        return (
            # Bronze keeps the change batches of incremental cycles too (several versions of
            # a key), so it holds at least the source's rows; silver + quarantine hold exactly
            # one row per source row.
            self.bronze_rows >= self.source_rows
            and self.silver_rows + self.quarantined_rows == self.source_rows
        )


@dataclass
class CutoverReport:
    generated_at: str
    lake: str
    first_day: str
    last_day: str
    accounts: list[DayAccount] = field(default_factory=list)
    failed_checks: list[dict] = field(default_factory=list)
    missing_checks: list[dict] = field(default_factory=list)
    checksum_failures: list[dict] = field(default_factory=list)
    quarantine_by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    files_verified: int = 0
    # Per asset and check: partitions whose latest result passed / failed (fingerprints,
    # spot checks, checksums... as the UI shows them per partition).
    check_results: list[dict] = field(default_factory=list)

    @property
    def incomplete(self) -> list[DayAccount]:
        return [account for account in self.accounts if not account.complete]

    @property
    def never_materialized(self) -> list[DayAccount]:
        return [a for a in self.accounts if a.source_rows and not a.bronze_rows]

    def reasons(self) -> list[str]:
        """Why the verdict is NO-GO, most fundamental first; empty when GO."""
        reasons = []
        if self.never_materialized:
            reasons.append(f"{len(self.never_materialized)} table-day(s) never materialized")
        others = len(self.incomplete) - len(self.never_materialized)
        if others > 0:
            reasons.append(f"{others} table-day(s) with rows unaccounted for")
        if self.checksum_failures:
            reasons.append(
                f"{len(self.checksum_failures)} partition(s) whose files no longer match "
                "their SHA-256"
            )
        if self.failed_checks:
            reasons.append(f"{len(self.failed_checks)} ERROR check result(s) failing")
        if self.missing_checks:
            reasons.append(f"{len(self.missing_checks)} check result(s) missing")
        return reasons

    @property
    def verdict(self) -> str:
        return NO_GO if self.reasons() else GO

    def totals(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for account in self.accounts:
            table = totals.setdefault(
                account.table,
                {
                    "days": 0,
                    "source_rows": 0,
                    "bronze_rows": 0,
                    "silver_rows": 0,
                    "quarantined_rows": 0,
                },
            )
            table["days"] += 1
            for name in ("source_rows", "bronze_rows", "silver_rows", "quarantined_rows"):
                table[name] += getattr(account, name)
        return totals

    def verdict_line(self) -> str:
        rows = sum(t["source_rows"] for t in self.totals().values())
        if self.verdict == GO:
            return (
                f"Verdict: {GO}: all {rows:,} source rows of {self.first_day}..{self.last_day} "
                f"are in the lake (silver or quarantine) and every ERROR check passed"
            )
        return f"Verdict: {NO_GO}: " + "; ".join(self.reasons())

    def to_json(self) -> str:
        return json.dumps(
            {
                "verdict": self.verdict,
                "verdict_line": self.verdict_line(),
                "generated_at": self.generated_at,
                "lake": self.lake,
                "first_day": self.first_day,
                "last_day": self.last_day,
                "totals": self.totals(),
                "reasons": self.reasons(),
                "incomplete": [asdict(a) for a in self.incomplete],
                "never_materialized": [asdict(a) for a in self.never_materialized],
                "failed_checks": self.failed_checks,
                "missing_checks": self.missing_checks,
                "checksum_failures": self.checksum_failures,
                "files_verified": self.files_verified,
                "quarantine_by_rule": self.quarantine_by_rule,
                "check_results": self.check_results,
                "days": [asdict(a) for a in self.accounts],
            },
            indent=2,
        )

    def to_markdown(self) -> str:
        lines = [
            "# Cutover report",
            "",
            f"**{self.verdict_line()}**",
            "",
            f"Generated {self.generated_at} for days {self.first_day} .. {self.last_day}; "
            f"lake `{self.lake}`.",
            "",
        ]
        if self.reasons():
            lines += ["## Why NO-GO", "", *(f"- {reason}" for reason in self.reasons()), ""]
        lines += [
            "## Rows per table",
            "",
            "| table | days | source | bronze | silver | quarantined | completeness | accounted |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, t in self.totals().items():
            in_lake = t["silver_rows"] + t["quarantined_rows"]
            accounted = in_lake == t["source_rows"]
            # Exact to the row: 99.999 % is shown as such, never rounded up to 100 %.
            completeness = "100 %" if accounted else f"{in_lake / max(t['source_rows'], 1):.5%}"
            lines.append(
                f"| {name} | {t['days']} | {t['source_rows']:,} | {t['bronze_rows']:,} | "
                f"{t['silver_rows']:,} | {t['quarantined_rows']:,} | {completeness} | "
                f"{'yes' if accounted else 'NO'} |"
            )
        lines += ["", "## Quarantined rows by rule", ""]
        if not any(self.quarantine_by_rule.values()):
            lines.append("None.")
        for name, rules in self.quarantine_by_rule.items():
            for rule, count in sorted(rules.items()):
                lines.append(f"- {name}: `{rule}` {count:,}")
        lines += ["", f"## Checksums ({self.files_verified:,} files re-read now)", ""]
        if not self.checksum_failures:
            lines.append("Every file matches the SHA-256 recorded when it was committed.")
        for failure in self.checksum_failures:
            lines.append(
                f"- {failure['table']} {failure['day']}: {failure['mismatched']} changed, "
                f"{failure['missing']} missing, {failure['unrecorded']} unrecorded "
                f"(e.g. `{failure['example']}`)"
            )
        lines += [
            "",
            "## Check results (latest per partition)",
            "",
            "| asset | check | partitions passed | failed |",
            "| --- | --- | ---: | ---: |",
        ]
        for result in self.check_results:
            lines.append(
                f"| {result['asset']} | `{result['check']}` | {result['passed']} | "
                f"{result['failed']} |"
            )
        lines += ["", "## Incomplete days", ""]
        if not self.incomplete:
            lines.append("None.")
        for account in self.incomplete:
            lines.append(
                f"- {account.table} {account.day}: source {account.source_rows:,}, bronze "
                f"{account.bronze_rows:,}, silver {account.silver_rows:,}, quarantined "
                f"{account.quarantined_rows:,}"
            )
        lines += ["", "## Failing ERROR checks (latest result per partition)", ""]
        if not self.failed_checks:
            lines.append("None.")
        for failed in self.failed_checks:
            lines.append(f"- {failed['asset']} `{failed['check']}` partition {failed['partition']}")
        lines += ["", "## Missing check results", ""]
        if not self.missing_checks:
            lines.append("None.")
        for missing in self.missing_checks[:200]:
            lines.append(
                f"- {missing['asset']} `{missing['check']}` partition {missing['partition']}"
            )
        return "\n".join(lines) + "\n"


def account_days(
    source: SourceDatabase,
    lake: LakeResource,
    tables: tuple[TableSpec, ...],
    first_day: dt.date,
    last_day: dt.date,
) -> list[DayAccount]:
    """Source and lake rows per table and day; the source side is one range count per day."""
    accounts = []
    for table in tables:
        described = source.describe_table(table)
        bronze = rows_per_day(bronze_location(lake, table))
        silver = rows_per_day(silver_location(lake, table))
        quarantined = rows_per_day(quarantine_location(lake, table))
        day = first_day
        while day <= last_day:
            start, end = day_window(day)
            key = day.isoformat()
            accounts.append(
                DayAccount(
                    table=table.name,
                    day=key,
                    source_rows=source.count_rows(described, start, end),
                    bronze_rows=bronze.get(key, 0),
                    silver_rows=silver.get(key, 0),
                    quarantined_rows=quarantined.get(key, 0),
                )
            )
            day += dt.timedelta(days=1)
    return accounts


def last_source_day(source: SourceDatabase, tables: tuple[TableSpec, ...]) -> dt.date | None:
    """The UTC day of the newest event in any table (an index lookup, not a scan)."""
    latest = None
    for table in tables:
        newest = source.latest_event_time(source.describe_table(table))
        if newest is not None and (latest is None or newest > latest):
            latest = newest
    return latest.date() if latest else None


def verify_lake_checksums(
    lake: LakeResource, tables: tuple[TableSpec, ...], days: list[str]
) -> tuple[list[dict], int]:
    """Re-reads every current file of the given days in every lake table of the tables."""
    from llm_observatory.checks.checksums import verify_checksums_by_day
    from llm_observatory.layout import daily_metrics_location

    locations = []
    for table in tables:
        locations += [
            (f"bronze/{table.name}", bronze_location(lake, table)),
            (f"silver/{table.name}", silver_location(lake, table)),
            (f"silver/_quarantine/{table.name}", quarantine_location(lake, table)),
        ]
    locations.append(("gold/daily_metrics", daily_metrics_location(lake)))
    failures, files = [], 0
    wanted_days = set(days)
    for name, location in locations:
        for day, verdict in sorted(verify_checksums_by_day(location, by_day=True).items()):
            if day not in wanted_days:
                continue
            files += verdict.files_checked
            if not verdict.passed:
                example = (
                    [m["path"] for m in verdict.mismatched] + verdict.missing + verdict.unrecorded
                )[0]
                failures.append(
                    {
                        "table": name,
                        "day": day,
                        "mismatched": len(verdict.mismatched),
                        "missing": len(verdict.missing),
                        "unrecorded": len(verdict.unrecorded),
                        "example": example,
                    }
                )
    return failures, files


def quarantine_reasons(lake: LakeResource, tables: tuple[TableSpec, ...]) -> dict:
    """Quarantined rows per table and first rule broken, over the whole quarantine table."""
    import pyarrow.compute as pc

    from llm_observatory.io.delta_lake import scan_partition

    counts: dict[str, dict[str, int]] = {}
    for table in tables:
        rules: dict[str, int] = {}
        for batch in scan_partition(quarantine_location(lake, table), None, ["quarantine_rule"]):
            for value, count in zip(*pc.value_counts(batch.column(0)).flatten()):
                rules[value.as_py()] = rules.get(value.as_py(), 0) + count.as_py()
        counts[table.name] = rules
    return counts
