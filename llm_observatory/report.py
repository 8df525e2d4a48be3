"""The cutover report: every source row of every day accounted for in the lake, or not.

It recounts instead of trusting the runs' own figures: source rows per day by range queries,
lake rows per day from the Delta log of the current table versions, and the latest result of
every ERROR check per partition from the Dagster instance. GO means every source row is in
silver or quarantine, no ERROR check's latest result failed, and every day the lake holds was
reconciled with the source (per-hour fingerprints) within the rotation period.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

import pyarrow.compute as pc

from llm_observatory.checks.checksums import FULL, METADATA, verify_checksums_by_day
from llm_observatory.io.delta_lake import rows_per_day, scan_partition
from llm_observatory.layout import (
    bronze_location,
    daily_metrics_location,
    quarantine_location,
    silver_location,
)
from llm_observatory.partitions import day_window
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.tables import TableSpec

GO, NO_GO = "GO", "NO-GO"
# Days named in a reason before "... (N in all)".
SHOWN_DAYS = 5
# On Azure, the share of each lake table's files the report re-reads in full besides checking
# every file's properties (at least one file per table).
REPORT_SAMPLE_FRACTION = 0.01


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


@dataclass(frozen=True)
class ReconciliationCoverage:
    """How recently the days of one table that hold data in the lake were reconciled.

    A day is overdue when it was never reconciled, or its last reconciliation was more than
    `rotation_period_days` UTC calendar days before the report (the rotation reaches every day
    once per that many daily cycles, so a day within it may still be waiting its turn).
    """

    table: str
    rotation_period_days: int
    days_with_data: int
    first_day: str | None
    last_day: str | None
    # Days with data and any reconciliation on record; 0 on a lake older than the records.
    days_recorded: int
    never_reconciled: list[str] = field(default_factory=list)
    # Days last reconciled too long ago: {"day": ..., "reconciled_at": ...}, oldest first.
    reconciled_too_long_ago: list[dict] = field(default_factory=list)
    # The day with data whose last reconciliation is the oldest, and when that was.
    oldest_day: str | None = None
    oldest_reconciled_at: str | None = None

    @property
    def overdue_days(self) -> list[str]:
        return sorted(
            [*self.never_reconciled, *(item["day"] for item in self.reconciled_too_long_ago)]
        )

    @property
    def unrecorded(self) -> bool:
        """Data in the lake, no reconciliation on record at all (a deployment older than the
        records): not a list of overdue days but one thing to do."""
        return self.days_with_data > 0 and self.days_recorded == 0

    def reason(self) -> str | None:
        if self.unrecorded:
            return (
                f"{self.table}: no reconciliation on record for its {self.days_with_data} "
                f"day(s) with data (a lake migrated before reconciliations were recorded): run "
                f"`llm-observatory verify --start {self.first_day} --end {self.last_day} "
                f"--table {self.table}`"
            )
        overdue = self.overdue_days
        if not overdue:
            return None
        shown = ", ".join(overdue[:SHOWN_DAYS])
        more = f", ... ({len(overdue)} in all)" if len(overdue) > SHOWN_DAYS else ""
        return (
            f"{self.table}: {len(overdue)} day(s) not reconciled within the "
            f"{self.rotation_period_days}-day rotation ({len(self.never_reconciled)} never): "
            f"{shown}{more}; `llm-observatory verify --start {overdue[0]} --end {overdue[-1]} "
            f"--table {self.table}` proves them"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "overdue_days": len(self.overdue_days)}


def reconciliation_coverage(
    table: str,
    days_with_data: list[str],
    last_reconciled: dict[dt.date, dt.datetime],
    rotation_period_days: int,
    now: dt.datetime,
) -> ReconciliationCoverage:
    """Which of `days_with_data` were reconciled within the rotation before `now`."""
    today = now.astimezone(dt.UTC).date()
    never, too_old, recorded = [], [], []
    for day in sorted(days_with_data):
        reconciled_at = last_reconciled.get(dt.date.fromisoformat(day))
        if reconciled_at is None:
            never.append(day)
            continue
        recorded.append((reconciled_at, day))
        if (today - reconciled_at.astimezone(dt.UTC).date()).days > rotation_period_days:
            too_old.append((reconciled_at, day))
    oldest = min(recorded) if recorded else None
    return ReconciliationCoverage(
        table=table,
        rotation_period_days=rotation_period_days,
        days_with_data=len(days_with_data),
        first_day=min(days_with_data) if days_with_data else None,
        last_day=max(days_with_data) if days_with_data else None,
        days_recorded=len(recorded),
        never_reconciled=never,
        reconciled_too_long_ago=[
            {"day": day, "reconciled_at": moment.isoformat(timespec="seconds")}
            for moment, day in sorted(too_old)
        ],
        oldest_day=oldest[1] if oldest else None,
        oldest_reconciled_at=oldest[0].isoformat(timespec="seconds") if oldest else None,
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
    # How the files were verified (checks/checksums.py): `full` re-reads every file, `metadata`
    # asks the service for each file's properties and re-reads a seeded sample and any file
    # whose properties differ from its upload's.
    checksum_mode: str = "full"
    files_by_metadata: int = 0
    files_reread: int = 0
    files_sampled: int = 0
    bytes_reread: int = 0
    sample_seed: str = ""
    # Per asset and check: partitions whose latest result passed / failed (fingerprints,
    # spot checks, checksums... as the UI shows them per partition).
    check_results: list[dict] = field(default_factory=list)
    # Per table: the days with data in the lake reconciled within the rotation period or not.
    reconciliation: list[ReconciliationCoverage] = field(default_factory=list)
    rotation_period_days: int = 30

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
        reasons += [c.reason() for c in self.reconciliation if c.reason() is not None]
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
                f"are in the lake (silver or quarantine), every ERROR check passed and every "
                f"day was reconciled within {self.rotation_period_days} days"
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
                "checksum_mode": self.checksum_mode,
                "files_by_metadata": self.files_by_metadata,
                "files_reread": self.files_reread,
                "files_sampled": self.files_sampled,
                "bytes_reread": self.bytes_reread,
                "sample_seed": self.sample_seed,
                "quarantine_by_rule": self.quarantine_by_rule,
                "check_results": self.check_results,
                "rotation_period_days": self.rotation_period_days,
                "reconciliation": [c.to_dict() for c in self.reconciliation],
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
        lines += self._checksums_markdown()
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
        lines += self._reconciliation_markdown()
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

    def _checksums_markdown(self) -> list[str]:
        lines = ["", f"## Checksums ({self.files_verified:,} files verified now)", ""]
        if self.checksum_mode == "metadata":
            lines += [
                f"{self.files_by_metadata:,} confirmed by the storage service's properties "
                f"(size, Content-MD5 and ETag as uploaded), {self.files_reread:,} re-read in "
                f"full ({self.bytes_reread:,} bytes; a sample of {self.files_sampled:,} seeded "
                f"`{self.sample_seed}`). `llm-observatory report --full` re-reads every file.",
                "",
            ]
        else:
            lines += [f"Every file re-read in full ({self.bytes_reread:,} bytes).", ""]
        if not self.checksum_failures:
            lines.append("Every file matches the SHA-256 recorded when it was committed.")
        for failure in self.checksum_failures:
            lines.append(
                f"- {failure['table']} {failure['day']}: {failure['mismatched']} changed, "
                f"{failure['missing']} missing, {failure['unrecorded']} unrecorded "
                f"(e.g. `{failure['example']}`)"
            )
        return lines

    def _reconciliation_markdown(self) -> list[str]:
        lines = [
            "",
            f"## Reconciled with the source within {self.rotation_period_days} days",
            "",
            "| table | days with data | reconciled in time | never | too long ago | "
            "oldest last reconciliation |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for c in self.reconciliation:
            overdue = len(c.overdue_days)
            oldest = (
                f"{c.oldest_day} at {c.oldest_reconciled_at}" if c.oldest_day else "none on record"
            )
            lines.append(
                f"| {c.table} | {c.days_with_data} | {c.days_with_data - overdue} | "
                f"{len(c.never_reconciled)} | {len(c.reconciled_too_long_ago)} | {oldest} |"
            )
        return lines


def account_days(
    source: SourceDatabase,
    lake: LakeResource,
    tables: tuple[TableSpec, ...],
    first_day: dt.date,
    last_day: dt.date,
    from_footers: bool = True,
) -> list[DayAccount]:
    """Source and lake rows per table and day; the source side is one range count per day.

    `from_footers=False`: lake rows from the log's row count per file, downloading no footer
    (for a report that verifies every file's ETag: a file changed since fails it anyway)."""
    accounts = []
    for table in tables:
        described = source.describe_table(table)
        bronze = rows_per_day(bronze_location(lake, table), from_footers)
        silver = rows_per_day(silver_location(lake, table), from_footers)
        quarantined = rows_per_day(quarantine_location(lake, table), from_footers)
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


@dataclass
class LakeChecksums:
    """The files of some days in every lake table, checked (see `verify_lake_checksums`)."""

    failures: list[dict] = field(default_factory=list)
    mode: str = "full"
    files: int = 0
    by_metadata: int = 0
    reread: int = 0
    sampled: int = 0
    bytes_reread: int = 0


def verify_lake_checksums(
    lake: LakeResource,
    tables: tuple[TableSpec, ...],
    days: list[str],
    *,
    full: bool | None = None,
    sample_fraction: float = REPORT_SAMPLE_FRACTION,
    seed: str = "",
) -> LakeChecksums:
    """Checks every current file of the given days in every lake table of the tables.

    `full`: re-read every file; by default only on a local lake. On Azure each file's
    properties are compared with its upload's and `sample_fraction` of each table's files
    (at least one; chosen by `seed`) are re-read (checks/checksums.py)."""
    locations = []
    for table in tables:
        locations += [
            (f"bronze/{table.name}", bronze_location(lake, table)),
            (f"silver/{table.name}", silver_location(lake, table)),
            (f"silver/_quarantine/{table.name}", quarantine_location(lake, table)),
        ]
    locations.append(("gold/daily_metrics", daily_metrics_location(lake)))
    if full is None:
        full = not lake.is_azure
    mode = FULL if full else METADATA
    result = LakeChecksums(mode=mode)
    failures = result.failures
    wanted_days = set(days)
    for name, location in locations:
        verdicts = verify_checksums_by_day(
            location,
            by_day=True,
            mode=mode,
            sample_fraction=sample_fraction,
            seed=seed,
            days=wanted_days,
        )
        for day, verdict in sorted(verdicts.items()):
            result.files += verdict.files_checked
            result.by_metadata += verdict.files_by_metadata
            result.reread += verdict.files_reread
            result.sampled += verdict.files_sampled
            result.bytes_reread += verdict.bytes_checked
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
    return result


def quarantine_reasons(lake: LakeResource, tables: tuple[TableSpec, ...]) -> dict:
    """Quarantined rows per table and first rule broken, over the whole quarantine table."""
    counts: dict[str, dict[str, int]] = {}
    for table in tables:
        rules: dict[str, int] = {}
        for batch in scan_partition(quarantine_location(lake, table), None, ["quarantine_rule"]):
            for value, count in zip(*pc.value_counts(batch.column(0)).flatten()):
                rules[value.as_py()] = rules.get(value.as_py(), 0) + count.as_py()
        counts[table.name] = rules
    return counts
