"""Integrity checked at upload, not by downloading (issue 15), on Azurite.

Every block of a data file goes up with its MD5 and the service refuses bytes that arrive
different; the blob keeps the file's MD5 as Content-MD5 and the evidence records the ETag the
upload got. Later checks ask the service for each file's properties instead of reading it, and
still find a file rewritten after its commit, whatever size and Content-MD5 the rewriter set.
"""

import datetime as dt
import os

import dagster as dg
import pyarrow as pa
import pytest
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings
from deltalake import DeltaTable

from llm_observatory.assets.report import CUTOVER_REPORT_KEY, cutover_report
from llm_observatory.assets.retries import write_with_read_back_retries
from llm_observatory.checks.checksums import checksum_result, verify_checksums_by_day
from llm_observatory.cli import build_parser
from llm_observatory.io import delta_lake
from llm_observatory.io.delta_lake import DeltaPartitionWriter, current_files
from llm_observatory.io.evidence import read_evidence
from llm_observatory.io.uploads import BlobUpload, UploadBudget, UploadRefusedError, stored_blob
from llm_observatory.layout import day_filter, silver_location
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import LLM_INTERACTIONS
from llm_observatory_tests.helpers import control_beside, migrate_clean_day

DAY = dt.date(2026, 11, 1)
SCHEMA = pa.schema([("date", pa.string()), ("key", pa.int64()), ("text", pa.string())])


@pytest.fixture
def lake(azurite, azurite_container) -> LakeResource:
    return LakeResource(
        url=azurite.abfs_url(azurite_container, "lake"),
        azure_storage_connection_string=azurite.connection_string,
    )


@pytest.fixture
def blobs(azurite):
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


def rows(count: int, seed: int = 0) -> pa.Table:
    texts = [os.urandom(200).hex() for _ in range(count)]
    return pa.table(
        {"date": ["2026-11-01"] * count, "key": range(seed, seed + count), "text": texts},
        schema=SCHEMA,
    )


def write_day(location, table: pa.Table):
    writer = DeltaPartitionWriter(location, SCHEMA, ["date"], replace=[("date", "=", "2026-11-01")])
    writer.write(table)
    return writer.commit()


def corrupt_blocks(monkeypatch, times: int = 10_000) -> list[int]:
    """Flips a byte of the first `times` blocks after their MD5 was taken, as a faulty link or
    proxy would on the way to the service."""
    genuine = BlobUpload._put_block
    calls = [0]

    def put_block(self, block_id, data, md5):
        calls[0] += 1
        if calls[0] <= times:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return genuine(self, block_id, data, md5)

    monkeypatch.setattr(BlobUpload, "_put_block", put_block)
    return calls


def blob_names(blobs, location) -> list[str]:
    container, _, prefix = location.fs_path.partition("/")
    return [
        blob.name
        for blob in blobs.get_container_client(container).list_blobs(name_starts_with=prefix)
        if blob.name.endswith(".parquet") and "/_evidence/" not in blob.name
    ]


def test_a_block_whose_md5_does_not_match_is_refused_by_the_service(lake, blobs):
    location = lake.location("bronze", "t")
    delta_lake.ensure_container(location)
    path = f"{location.fs_path}/refused.bin"
    upload = BlobUpload(location.filesystem, path)
    with pytest.raises(UploadRefusedError, match="refused block 1 .*MD5"):
        upload._put_block("a" * 32, b"the bytes sent", b"\0" * 16)
    upload.abort()
    with pytest.raises(FileNotFoundError):
        stored_blob(location, path)


def test_many_open_uploads_hold_no_more_than_their_budget_and_arrive_whole(lake, blobs):
    """A day of silver is hundreds of open files; each holding a 4 MiB block would make memory
    grow with the day. Under a shared budget the fullest buffers go out early as smaller
    blocks, and every file still arrives byte for byte with its MD5 checked."""
    import hashlib

    location = lake.location("silver", "budget")
    delta_lake.ensure_container(location)
    budget = UploadBudget(limit=2 * 1024 * 1024, min_block=64 * 1024)
    uploads = [
        BlobUpload(location.filesystem, f"{location.fs_path}/file-{n}.bin", budget=budget)
        for n in range(24)
    ]
    contents = [bytearray() for _ in uploads]
    chunk = 32 * 1024
    for _ in range(32):  # 1 MiB a file, written round-robin as a partitioned writer does
        for upload, content in zip(uploads, contents):
            data = os.urandom(chunk)
            upload.write(data)
            content += data
    assert budget.peak <= budget.limit + chunk
    for upload in uploads:
        upload.close()
    assert budget.buffered == 0 and not budget.open
    container, _, prefix = location.fs_path.partition("/")
    blocks = []
    for n, (upload, content) in enumerate(zip(uploads, contents)):
        client = blobs.get_blob_client(container, f"{prefix}/file-{n}.bin")
        assert client.download_blob().readall() == bytes(content)
        stored = stored_blob(location, upload.path)
        assert stored.md5 == hashlib.md5(content, usedforsecurity=False).hexdigest()
        blocks.append(len(client.get_block_list("committed")[0]))
    # Sent early in several smaller blocks, where 24 x 1 MiB would have fitted one each.
    assert max(blocks) > 1


def test_a_corrupted_upload_is_refused_and_nothing_is_committed(lake, blobs, monkeypatch):
    location = lake.location("bronze", "t")
    first = write_day(location, rows(500))
    version = DeltaTable(location.uri, storage_options=location.storage_options).version()
    evidence = read_evidence(location)
    corrupt_blocks(monkeypatch)
    with pytest.raises(UploadRefusedError, match="do not have the MD5 they were sent with"):
        write_day(location, rows(2000, seed=10_000))
    table = DeltaTable(location.uri, storage_options=location.storage_options)
    assert table.version() == version
    assert table.to_pyarrow_table().num_rows == 500
    assert read_evidence(location) == evidence
    # No blob was created for the refused file: only the committed one is there.
    assert [name.rsplit("/", 1)[1] for name in blob_names(blobs, location)] == [
        first.files[0].path.rsplit("/", 1)[1]
    ]
    assert verify_checksums_by_day(location)["all"].passed


def test_a_refused_upload_is_written_again_then_committed(lake, monkeypatch):
    location = lake.location("bronze", "t")
    calls = corrupt_blocks(monkeypatch, times=1)
    summary = write_with_read_back_retries(
        lambda: write_day(location, rows(300)), dg.get_dagster_logger(), "test"
    )
    assert calls[0] >= 2
    assert summary.rows == 300
    assert checksum_result(location, day_filter(DAY), DAY.isoformat()).passed


def test_an_azure_write_downloads_nothing_to_verify_itself(lake, monkeypatch):
    """The writer used to read every file back whole; on Azure it asks for its properties."""

    def no_download(location, path):
        raise AssertionError(f"read back {path}")

    monkeypatch.setattr(delta_lake, "read_back_sha256", no_download)
    location = lake.location("silver", "t")
    summary = write_day(location, rows(1000))
    [written] = summary.files
    stored = stored_blob(location, f"{location.fs_path}/{written.path}")
    assert (stored.size, stored.md5, stored.etag) == (written.bytes, written.md5, written.etag)
    recorded = read_evidence(location)[written.path]
    assert (recorded["md5"], recorded["etag"]) == (written.md5, written.etag)
    verdict = verify_checksums_by_day(location)["all"]
    assert verdict.passed
    assert (verdict.files_by_metadata, verdict.bytes_checked) == (1, 0)


def rewrite_blob(blobs, location, relative_path: str, data: bytes, md5: bytes | None) -> None:
    """Replaces a committed file's bytes as someone with write access to the account could:
    Put Block + Put Block List, setting whatever Content-MD5 they like."""
    container, _, folder = location.fs_path.partition("/")
    blob = blobs.get_blob_client(container, f"{folder}/{relative_path}")
    blob.stage_block("tamper", data)
    settings = ContentSettings(content_md5=bytearray(md5)) if md5 else ContentSettings()
    blob.commit_block_list([BlobBlock("tamper")], content_settings=settings)


def committed_file(location) -> tuple[str, dict]:
    path = current_files(DeltaTable(location.uri, storage_options=location.storage_options), None)
    return path[0][0], read_evidence(location)[path[0][0]]


def test_a_file_rewritten_with_forged_size_and_md5_is_still_caught(lake, blobs):
    location = lake.location("silver", "t")
    write_day(location, rows(400))
    path, recorded = committed_file(location)
    original = location.filesystem.cat_file(f"{location.fs_path}/{path}")
    forged = bytearray(original)
    forged[len(forged) // 2] ^= 0x01
    # Same size, Content-MD5 of the original: only the ETag (which nobody can set) differs.
    rewrite_blob(blobs, location, path, bytes(forged), bytes.fromhex(recorded["md5"]))
    verdict = verify_checksums_by_day(location)["all"]
    assert not verdict.passed
    [mismatch] = verdict.mismatched
    assert mismatch["path"] == path
    assert mismatch["actual_sha256"] != recorded["sha256"]


def test_a_truncated_file_is_caught_without_a_download(lake, blobs, monkeypatch):
    location = lake.location("silver", "t")
    write_day(location, rows(400))
    path, recorded = committed_file(location)
    rewrite_blob(blobs, location, path, b"PAR1", None)
    monkeypatch.setattr(
        "llm_observatory.checks.checksums.read_back_sha256",
        lambda *_: (_ for _ in ()).throw(AssertionError("downloaded")),
    )
    verdict = verify_checksums_by_day(location)["all"]
    [mismatch] = verdict.mismatched
    assert (mismatch["expected_bytes"], mismatch["actual_bytes"]) == (recorded["bytes"], 4)


def test_new_properties_on_the_same_bytes_are_no_false_alarm(lake, blobs):
    """Setting a blob's headers changes its ETag: the file is re-read, found unchanged."""
    location = lake.location("silver", "t")
    write_day(location, rows(400))
    path, recorded = committed_file(location)
    container, _, folder = location.fs_path.partition("/")
    blobs.get_blob_client(container, f"{folder}/{path}").set_http_headers(
        ContentSettings(content_type="x/y", content_md5=bytearray.fromhex(recorded["md5"]))
    )
    verdict = verify_checksums_by_day(location)["all"]
    assert verdict.passed
    assert verdict.files_reread == 1


def test_a_deleted_file_is_missing(lake, blobs):
    location = lake.location("silver", "t")
    write_day(location, rows(400))
    path, _ = committed_file(location)
    location.filesystem.rm(f"{location.fs_path}/{path}")
    assert verify_checksums_by_day(location)["all"].missing == [path]


def test_report_has_a_full_option():
    assert build_parser().parse_args(["report", "--full"]).full is True
    assert build_parser().parse_args(["report"]).full is False


def test_the_report_on_azurite_checks_properties_and_a_sample_and_catches_a_rewrite(
    postgres_url, azurite, tmp_path, blobs
):
    lake = LakeResource(
        url="abfs://{layer}@devstoreaccount1.dfs.core.windows.net/" + azurite.create_container("r"),
        azure_storage_connection_string=azurite.connection_string,
    )
    control = control_beside(lake, tmp_path)
    source, instance = migrate_clean_day(postgres_url, lake, control, DAY)
    resources = {"source": source, "lake": lake, "control": control}

    def report(full: bool | None = None) -> dict:
        config = {} if full is None else {"full": full}
        done = dg.materialize(
            [cutover_report],
            resources=resources,
            instance=instance,
            run_config={"ops": {CUTOVER_REPORT_KEY.to_python_identifier(): {"config": config}}},
        )
        return done.asset_materializations_for_node(CUTOVER_REPORT_KEY.to_python_identifier())[
            0
        ].metadata

    clean = report()
    assert clean["verdict"].value == "GO"
    assert clean["checksum_mode"].value == "metadata"
    # Seven lake tables, each with at least one file re-read as the sample; the rest by the
    # service's properties.
    assert 7 <= clean["files_reread"].value < clean["files_verified"].value
    assert report(full=True)["files_reread"].value == clean["files_verified"].value

    location = silver_location(lake, LLM_INTERACTIONS)
    paths = [
        p
        for p, _ in current_files(
            DeltaTable(location.uri, storage_options=location.storage_options), day_filter(DAY)
        )
    ]
    evidence = read_evidence(location)
    # A file that is not the sample's (seeded by the report's time, so rewrite them all).
    for path in paths:
        original = location.filesystem.cat_file(f"{location.fs_path}/{path}")
        forged = bytearray(original)
        forged[len(forged) // 2] ^= 0x01
        rewrite_blob(blobs, location, path, bytes(forged), bytes.fromhex(evidence[path]["md5"]))
    tampered = report()
    assert tampered["verdict"].value == "NO-GO"
    assert "no longer match their SHA-256" in tampered["verdict_line"].value
