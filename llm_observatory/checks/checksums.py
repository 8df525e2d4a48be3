"""Checksums: every current data file of a partition still has the SHA-256 it was committed with.

The writer hashes each file as it streams it out and records path, size, rows and SHA-256 in
the table's evidence table before it commits (`io/evidence.py`; kept past Delta's log clean-up).
A file changed, truncated or deleted in storage after the commit is found two ways:

- `full`: every file is re-read and hashed again (the default on a local lake, where it is
  cheap, and `llm-observatory report --full`).
- `metadata` (the default on Azure): one properties request per file, no download. Its size,
  Content-MD5 and ETag must be what the upload recorded: the service checked the MD5 of every
  block on receipt (`io/uploads.py`), and any rewrite of a blob gives it a new ETag, whatever
  size and Content-MD5 the rewriter sets. A file whose properties differ, or that has no
  recorded ETag (written before uploads were checked), is re-read in full; so is a seeded
  sample of the others (`sample_fraction`), which would find bytes the service itself changed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import dagster as dg

from llm_observatory.io.delta_lake import (
    current_files,
    open_table,
    read_back_sha256,
    recorded_files,
)
from llm_observatory.io.uploads import stored_blob
from llm_observatory.resources.lake import LakeLocation

CHECKSUM_CHECK = "files_match_committed_sha256"
FULL, METADATA = "full", "metadata"


def default_mode(location: LakeLocation) -> str:
    """Re-read everything where reading is cheap (a local lake), ask the service on Azure."""
    return METADATA if location.is_azure else FULL


def sampled(paths: list[str], fraction: float, seed: str) -> set[str]:
    """`fraction` of `paths` (at least one when there are any), the same for the same seed:
    those whose SHA-256 of seed and path sorts first."""
    if fraction <= 0 or not paths:
        return set()
    wanted = max(1, math.ceil(len(paths) * min(fraction, 1.0)))
    ranked = sorted(paths, key=lambda path: hashlib.sha256(f"{seed}\0{path}".encode()).digest())
    return set(ranked[:wanted])


@dataclass
class ChecksumVerdict:
    files_checked: int = 0
    # Bytes re-read and hashed again (every file's in `full` mode).
    bytes_checked: int = 0
    # Of the files checked: confirmed by the service's properties alone / re-read in full
    # (the sample among them).
    files_by_metadata: int = 0
    files_reread: int = 0
    files_sampled: int = 0
    mismatched: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.mismatched or self.missing or self.unrecorded)


def verify_partition_checksums(
    location: LakeLocation, filters: list[tuple[str, str, str]], mode: str | None = None
) -> ChecksumVerdict:
    """The current files of the matching partitions against their recorded SHA-256."""
    return verify_checksums_by_day(location, filters, mode=mode).get("all", ChecksumVerdict())


def verify_checksums_by_day(
    location: LakeLocation,
    filters: list[tuple[str, str, str]] | None = None,
    by_day=False,
    *,
    mode: str | None = None,
    sample_fraction: float = 0.0,
    seed: str = "",
    days: set[str] | None = None,
) -> dict[str, ChecksumVerdict]:
    """One pass over a table: its log and its evidence table are read once, however many days
    are verified. Verdicts are keyed by `date` partition with `by_day`, else under "all".

    `mode`: `full` or `metadata` (see the module), by default as the lake makes cheap;
    `sample_fraction` of the files (seeded by `seed`) are re-read in `metadata` mode too;
    `days`: only files of these `date` partitions are checked."""
    mode = mode or default_mode(location)
    if mode not in (FULL, METADATA):
        raise ValueError(f"checksum mode {mode!r} is neither {FULL!r} nor {METADATA!r}")
    verdicts: dict[str, ChecksumVerdict] = {}
    table = open_table(location)
    if table is None:
        return verdicts
    files = []
    for relative_path, partition in current_files(table, filters):
        day = partition.get("date")
        day = day.isoformat() if hasattr(day, "isoformat") else str(day)
        if days is None or day in days:
            files.append((relative_path, day))
    recorded = recorded_files(location, table, [path for path, _ in files])
    sample = (
        sampled([path for path, _ in files], sample_fraction, seed) if mode == METADATA else set()
    )
    for relative_path, day in files:
        verdict = verdicts.setdefault(day if by_day else "all", ChecksumVerdict())
        expected = recorded.get(relative_path)
        if expected is None:
            verdict.unrecorded.append(relative_path)
            continue
        if mode == METADATA and relative_path not in sample and expected.get("etag"):
            try:
                stored = stored_blob(location, f"{location.fs_path}/{relative_path}")
            except FileNotFoundError:
                verdict.missing.append(relative_path)
                continue
            if stored.size != expected["bytes"] or stored.md5 != expected.get("md5"):
                verdict.files_checked += 1
                verdict.mismatched.append(
                    {
                        "path": relative_path,
                        "expected_bytes": expected["bytes"],
                        "actual_bytes": stored.size,
                        "expected_md5": expected.get("md5"),
                        "actual_md5": stored.md5,
                    }
                )
                continue
            if stored.etag == expected["etag"]:
                verdict.files_checked += 1
                verdict.files_by_metadata += 1
                continue
            # Rewritten since its upload, with the same size and Content-MD5: only its bytes
            # can say whether it still is the file committed.
        try:
            actual, size = read_back_sha256(location, relative_path)
        except FileNotFoundError:
            verdict.missing.append(relative_path)
            continue
        verdict.files_checked += 1
        verdict.bytes_checked += size
        verdict.files_reread += 1
        verdict.files_sampled += relative_path in sample
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
    """After a write: every file of the partition checked, by its properties on Azure (no
    download, no sample: the report samples the lake), re-read on a local lake."""
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
            "files_by_metadata": verdict.files_by_metadata,
            "files_reread": verdict.files_reread,
            "bytes_checked": verdict.bytes_checked,
            "mismatched": dg.MetadataValue.json(verdict.mismatched[:20]),
            "missing": dg.MetadataValue.json(verdict.missing[:20]),
            "unrecorded": dg.MetadataValue.json(verdict.unrecorded[:20]),
        },
    )
