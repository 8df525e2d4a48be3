"""Old partitions move to the Cool tier on Azurite, new ones stay Hot, the table still reads,
a second run moves nothing; Archive and too-new days are refused; the account policy is sound."""

import datetime as dt

import pyarrow as pa
import pytest
from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable

from llm_observatory.io.delta_lake import DeltaPartitionWriter, current_files
from llm_observatory.operate.lifecycle import (
    TieringError,
    lifecycle_policy,
    tier_old_partitions,
)
from llm_observatory.operate.rollback import select_tables
from llm_observatory.resources.lake import LakeResource

TODAY = dt.date(2026, 11, 25)
OLD_DAYS = [dt.date(2023, 1, 1), dt.date(2024, 11, 24)]  # 1424 and 731 days before TODAY
NEW_DAYS = [dt.date(2024, 11, 25), dt.date(2026, 11, 24)]  # 730 and 1 day before
SCHEMA = pa.schema([("log_id", pa.int64()), ("message", pa.string()), ("date", pa.date32())])


def write_days(lake: LakeResource, days) -> None:
    location = select_tables(lake, ["bronze/logs"])[0].location
    for number, day in enumerate(days):
        writer = DeltaPartitionWriter(
            location, SCHEMA, ["date"], replace=[("date", "=", day.isoformat())]
        )
        writer.write(
            pa.table(
                {
                    "log_id": [number * 10 + i for i in range(10)],
                    "message": ["m"] * 10,
                    "date": [day] * 10,
                },
                schema=SCHEMA,
            )
        )
        writer.commit({"partition": day.isoformat()})


def tiers(lake: LakeResource, azurite, container: str) -> dict[str, str]:
    [table] = select_tables(lake, ["bronze/logs"])
    delta = DeltaTable(table.location.uri, storage_options=table.location.storage_options)
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    _, _, prefix = table.location.fs_path.partition("/")
    found = {}
    for path, partition in current_files(delta, None):
        blob = client.get_blob_client(container, f"{prefix}/{path}")
        found[str(partition["date"])] = blob.get_blob_properties().blob_tier
    return found


def test_old_partitions_go_cool_and_stay_readable_on_azurite(azurite, azurite_container):
    lake = LakeResource(
        url=azurite.abfs_url(azurite_container, "lake"),
        azure_storage_connection_string=azurite.connection_string,
    )
    write_days(lake, OLD_DAYS + NEW_DAYS)
    tables = select_tables(lake, ["bronze/logs"])

    dry = tier_old_partitions(lake, tables, today=TODAY, dry_run=True)
    assert dry.files_moved == 2 and set(tiers(lake, azurite, azurite_container).values()) == {"Hot"}

    result = tier_old_partitions(lake, tables, today=TODAY)
    assert result.files_moved == 2 and result.bytes_moved > 0
    assert result.bytes_by_tier_before == {"Hot": result.bytes_moved}
    assert result.bytes_by_tier_after == {"Cool": result.bytes_moved}
    assert result.by_table == {"bronze/logs": result.bytes_moved}
    assert tiers(lake, azurite, azurite_container) == {
        **{day.isoformat(): "Cool" for day in OLD_DAYS},
        **{day.isoformat(): "Hot" for day in NEW_DAYS},
    }
    # Cool is online: the whole table still reads.
    location = tables[0].location
    assert (
        DeltaTable(location.uri, storage_options=location.storage_options)
        .to_pyarrow_table()
        .num_rows
        == 40
    )

    again = tier_old_partitions(lake, tables, today=TODAY)
    assert again.files_moved == 0 and again.files_already == 2

    with pytest.raises(TieringError, match="Archive is refused"):
        tier_old_partitions(lake, tables, today=TODAY, tier="Archive")
    with pytest.raises(TieringError, match="newer than the threshold"):
        tier_old_partitions(lake, tables, today=TODAY, last_day=dt.date(2025, 1, 1))
    assert tiers(lake, azurite, azurite_container)[NEW_DAYS[0].isoformat()] == "Hot"


def test_a_local_lake_has_no_tiers_and_the_policy_covers_data_files_only(tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"))
    write_days(lake, OLD_DAYS)
    tables = select_tables(lake, None)
    assert tier_old_partitions(lake, tables, today=TODAY).files_moved == 0

    policy = lifecycle_policy(lake, tables, older_than_days=730)
    prefixes = [p for rule in policy["rules"] for p in rule["definition"]["filters"]["prefixMatch"]]
    assert all(len(rule["definition"]["filters"]["prefixMatch"]) <= 10 for rule in policy["rules"])
    assert len(prefixes) == len(tables)
    assert not any("_delta_log" in prefix for prefix in prefixes)
    assert any(prefix.endswith("silver/llm_interactions/model=") for prefix in prefixes)
    assert all(
        rule["definition"]["actions"]["baseBlob"]["tierToCool"]
        == {"daysAfterModificationGreaterThan": 730}
        for rule in policy["rules"]
    )
