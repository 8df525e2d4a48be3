"""Checksums: every current data file of a partition still has the SHA-256 it was committed with.

The writer hashes each file as it streams it out and records path, size, rows and SHA-256 in
the table's evidence table before it commits (`io/evidence.py`; kept past Delta's log clean-up).
This re-reads the partition's current files and compares, so a file changed, truncated or
deleted in storage after the commit is found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from llm_observatory.io.delta_lake import (
    current_files,
    open_table,
    read_back_sha256,
    recorded_files,
)
from llm_observatory.resources.lake import LakeLocation

CHECKSUM_CHECK = "files_match_committed_sha256"


@dataclass
class ChecksumVerdict:
    files_checked: int = 0
    bytes_checked: int = 0
    mismatched: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.mismatched or self.missing or self.unrecorded)


def verify_partition_checksums(
    location: LakeLocation, filters: list[tuple[str, str, str]]
) -> ChecksumVerdict:
    """The current files of the matching partitions against their recorded SHA-256."""
    return verify_checksums_by_day(location, filters).get("all", ChecksumVerdict())


def verify_checksums_by_day(
    location: LakeLocation, filters: list[tuple[str, str, str]] | None = None, by_day=False
) -> dict[str, ChecksumVerdict]:
    """One pass over a table: its log and its evidence table are read once, however many days
    are verified. Verdicts are keyed by `date` partition with `by_day`, else under "all"."""
    verdicts: dict[str, ChecksumVerdict] = {}
    table = open_table(location)
    if table is None:
        return verdicts
    files = current_files(table, filters)
    recorded = recorded_files(location, table, [path for path, _ in files])
    for relative_path, partition in files:
        day = partition.get("date")
        group = (day.isoformat() if hasattr(day, "isoformat") else str(day)) if by_day else "all"
        verdict = verdicts.setdefault(group, ChecksumVerdict())
        expected = recorded.get(relative_path)
        if expected is None:
            verdict.unrecorded.append(relative_path)
            continue
        try:
            actual, size = read_back_sha256(location, relative_path)
        except FileNotFoundError:
            verdict.missing.append(relative_path)
            continue
        verdict.files_checked += 1
        verdict.bytes_checked += size
        if actual != expected["sha256"] or size != expected["bytes"]:
            verdict.mismatched.append(
                {
                    "path": relative_path,
                    "expected_sha256": expected["sha256"],
                    "actual_sha256": actual,
                    "expected_bytes": expected["bytes"],
                    "actual_bytes": size,
                }
            )
    return verdicts


def checksum_result(
    location: LakeLocation, filters: list[tuple[str, str, str]], partition: str
) -> dg.AssetCheckResult:
    verdict = verify_partition_checksums(location, filters)
    return dg.AssetCheckResult(
        check_name=CHECKSUM_CHECK,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if verdict.passed
        else (
            f"partition {partition}: {len(verdict.mismatched)} file(s) changed, "
            f"{len(verdict.missing)} missing, {len(verdict.unrecorded)} without a recorded hash"
        ),
        metadata={
            "partition": partition,
            "files_checked": verdict.files_checked,
            "bytes_checked": verdict.bytes_checked,
            "mismatched": dg.MetadataValue.json(verdict.mismatched[:20]),
            "missing": dg.MetadataValue.json(verdict.missing[:20]),
            "unrecorded": dg.MetadataValue.json(verdict.unrecorded[:20]),
        },
    )
