"""Moving old partitions to the Cool tier (the migration guide's "archive old data").

Data files of partitions whose day is older than a threshold (default 730 days) are set to the
Cool access tier, blob by blob; reads keep working (Cool is online, cheaper to store, dearer to
read). It goes by the partition's day, not by when the file was written: a backfill writes
four years of history in a week, so an account rule on modification time would keep it all Hot
for two more years. Only data files of the current table version move; `_delta_log` stays Hot.

Archive is refused: an archived blob cannot be read until rehydrated (hours), and a Delta table
with one such file fails every query that touches it.

For teams that prefer the storage account to do it, `lifecycle_policy` writes the equivalent
Azure lifecycle-management policy (by modification time, with the caveat above).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field

from llm_observatory.io.delta_lake import current_files, open_table
from llm_observatory.layout import LakeTable
from llm_observatory.resources.lake import LakeResource

DEFAULT_COOL_AFTER_DAYS = 730
ONLINE_TIERS = ("Hot", "Cool", "Cold")
REFUSED_TIERS = ("Archive",)
# Azure accepts at most 10 prefixes in one rule's filter.
POLICY_PREFIXES_PER_RULE = 10


class TieringError(ValueError):
    """Tiering refused as asked; nothing moved."""


@dataclass
class TieringResult:
    tier: str
    cutoff: dt.date
    dry_run: bool
    files_moved: int = 0
    bytes_moved: int = 0
    files_already: int = 0
    bytes_by_tier_before: Counter = field(default_factory=Counter)
    bytes_by_tier_after: Counter = field(default_factory=Counter)
    by_table: dict[str, int] = field(default_factory=dict)

    def metadata(self) -> dict:
        return {
            "tier": self.tier,
            "cutoff_day": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "files_moved": self.files_moved,
            "bytes_moved": self.bytes_moved,
            "files_already_in_tier": self.files_already,
            "bytes_by_tier_before": dict(self.bytes_by_tier_before),
            "bytes_by_tier_after": dict(self.bytes_by_tier_after),
            "bytes_moved_by_table": dict(self.by_table),
        }


def _blob_client(lake: LakeResource):
    """A synchronous Blob service client on the lake's account and credentials."""
    from azure.storage.blob import BlobServiceClient

    if lake.azure_storage_connection_string:
        return BlobServiceClient.from_connection_string(lake.azure_storage_connection_string)
    settings = lake._azure_settings
    account_url = settings.get("blob_endpoint") or (
        f"https://{settings['account_name']}.blob.core.windows.net"
    )
    if "account_key" in settings:
        credential = {
            "account_name": settings["account_name"],
            "account_key": settings["account_key"],
        }
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(account_url, credential=credential)


def _partition_day(partition: dict) -> dt.date | None:
    value = partition.get("date")
    if value is None:
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def tier_old_partitions(
    lake: LakeResource,
    tables: list[LakeTable],
    older_than_days: int = DEFAULT_COOL_AFTER_DAYS,
    tier: str = "Cool",
    today: dt.date | None = None,
    last_day: dt.date | None = None,
    dry_run: bool = False,
) -> TieringResult:
    """Sets the data files of partitions older than the threshold to `tier`; idempotent.

    `last_day` narrows it to partitions up to that day; a day newer than the threshold is
    refused, as is any tier that makes a file unreadable.
    """
    if tier in REFUSED_TIERS:
        raise TieringError(
            f"{tier} is refused for Delta data files: an archived file cannot be read until "
            "rehydrated, and every query touching it fails; use Cool (or Cold)"
        )
    if tier not in ONLINE_TIERS:
        raise TieringError(f"unknown tier {tier!r}; one of {', '.join(ONLINE_TIERS)}")
    if older_than_days < 1:
        raise TieringError("--older-than-days must be at least 1")
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=older_than_days)
    if last_day is not None and last_day >= cutoff:
        raise TieringError(
            f"partitions up to {last_day} include days newer than the threshold: only days "
            f"before {cutoff} ({older_than_days} days before {today}) may be tiered"
        )
    upto = last_day if last_day is not None else cutoff - dt.timedelta(days=1)
    result = TieringResult(tier=tier, cutoff=cutoff, dry_run=dry_run)
    if not lake.is_azure:
        return result  # a local folder has no tiers
    service = _blob_client(lake)
    for table in tables:
        delta = open_table(table.location)
        if delta is None:
            continue
        container, _, prefix = table.location.fs_path.partition("/")
        client = service.get_container_client(container)
        moved = 0
        for path, partition in current_files(delta, None):
            day = _partition_day(partition)
            if day is None or day > upto:
                continue
            blob = client.get_blob_client(f"{prefix}/{path}")
            properties = blob.get_blob_properties()
            current = properties.blob_tier or "Hot"
            size = int(properties.size)
            result.bytes_by_tier_before[current] += size
            if current == tier:
                result.files_already += 1
                result.bytes_by_tier_after[current] += size
                continue
            if not dry_run:
                blob.set_standard_blob_tier(tier)
            result.files_moved += 1
            result.bytes_moved += size
            moved += size
            result.bytes_by_tier_after[tier if not dry_run else current] += size
        result.by_table[table.name] = moved
    return result


def lifecycle_policy(
    lake: LakeResource, tables: list[LakeTable], older_than_days: int = DEFAULT_COOL_AFTER_DAYS
) -> dict:
    """The Azure Storage lifecycle-management policy that tiers the same tables' data files
    (not their `_delta_log`) to Cool by modification time."""
    prefixes = []
    for table in tables:
        delta = open_table(table.location)
        if delta is not None:
            partition_columns = list(delta.metadata().partition_columns) or ["date"]
        elif table.name == f"silver/{table.source_table.name}":
            partition_columns = list(table.source_table.silver_partition_by)
        else:
            partition_columns = ["date"]
        first = partition_columns[0]
        # Data files sit under the first partition column's folders; the log does not.
        prefixes.append(f"{table.location.fs_path}/{first}=")
    prefixes = sorted(prefixes)
    chunks = [
        prefixes[start : start + POLICY_PREFIXES_PER_RULE]
        for start in range(0, len(prefixes), POLICY_PREFIXES_PER_RULE)
    ]
    return {
        "rules": [
            {
                "enabled": True,
                "name": f"llm-observatory-cool-after-{older_than_days}-days-{number}",
                "type": "Lifecycle",
                "definition": {
                    "actions": {
                        "baseBlob": {
                            "tierToCool": {"daysAfterModificationGreaterThan": older_than_days}
                        }
                    },
                    "filters": {"blobTypes": ["blockBlob"], "prefixMatch": chunk},
                },
            }
            for number, chunk in enumerate(chunks, start=1)
        ]
    }


def policy_json(policy: dict) -> str:
    return json.dumps(policy, indent=2)
