"""Data files uploaded to Azure Blob Storage with their integrity checked by the service itself.

Reading every file back after its upload proves it arrived whole, but over a WAN link it costs
as much as the upload again. Blob Storage can do the check on receipt instead: each block is
sent with the MD5 of its bytes (transactional MD5, the `Content-MD5` header of Put Block) and
the service refuses a block whose bytes arrived different (400 `Md5Mismatch`). The block list
is then committed with the MD5 of the whole file as the blob's `Content-MD5` property, and the
commit's answer gives the blob's ETag, which changes whenever anything rewrites the blob.

A file's evidence (io/evidence.py) keeps its SHA-256 (computed while streaming, the durable
record), its MD5 and the ETag the upload got; the checksum checks later compare what the
service reports about each file (one properties request: size, Content-MD5, ETag) against it,
and re-read in full only files whose properties differ plus a sample (checks/checksums.py).

On a local lake files are written as before through fsspec (there is no service to ask).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from fsspec.asyn import sync

from llm_observatory.resources.lake import LakeLocation

# Bytes per staged block: each is hashed and checked on its own, and is all an open file
# buffers (adlfs would buffer 50 MiB per open file). 50,000 blocks make a blob: 195 GiB.
BLOCK_BYTES = 4 * 1024 * 1024
# What all open uploads of the process buffer together. Silver of a day is one open file per
# model and hour (240 on the reference source, up to 256 open per writer): at 4 MiB each a big
# day would buffer a gigabyte. Past this budget the fullest buffers go out early as smaller
# blocks (never under MIN_BLOCK_BYTES, so a 256 MB file stays far below 50,000 blocks).
BUFFER_BUDGET_BYTES = 64 * 1024 * 1024
MIN_BLOCK_BYTES = 256 * 1024


class UploadBudget:
    """The bytes every open upload of the process holds, and the rule that keeps their sum
    under `limit`: the write that crosses it sends the fullest buffers out first. A thread only
    ever sends the buffers of the uploads it opened (a day's pass writes bronze and silver on
    two threads; an upload is never touched by two at once)."""

    def __init__(self, limit: int = BUFFER_BUDGET_BYTES, min_block: int = MIN_BLOCK_BYTES):
        self.limit = limit
        self.min_block = min_block
        self.open: set[BlobUpload] = set()
        self.lock = threading.RLock()
        self.buffered = 0
        self.peak = 0

    def register(self, upload: BlobUpload) -> None:
        with self.lock:
            self.open.add(upload)

    def release(self, upload: BlobUpload) -> None:
        with self.lock:
            self.open.discard(upload)

    def resize(self, change: int) -> None:
        with self.lock:
            self.buffered += change
            self.peak = max(self.peak, self.buffered)

    def enforce(self) -> None:
        if self.buffered <= self.limit:
            return
        thread = threading.get_ident()
        with self.lock:
            own = [upload for upload in self.open if upload.owner == thread]
        for upload in sorted(own, key=lambda each: -len(each._buffer)):
            if self.buffered <= self.limit or len(upload._buffer) < self.min_block:
                break
            upload.send_buffer()


BUDGET = UploadBudget()


class UploadRefusedError(RuntimeError):
    """The storage service refused bytes whose MD5 did not match what arrived; nothing that
    names the file was committed."""


@dataclass(frozen=True)
class StoredBlob:
    """What the service reports about a blob, without reading it."""

    size: int
    md5: str | None  # hex of the blob's Content-MD5 property, None when it has none
    etag: str
    last_modified: str


def _split(path: str) -> tuple[str, str]:
    container, _, blob = path.partition("/")
    return container, blob


def _hex(md5: Any) -> str | None:
    return bytes(md5).hex() if md5 else None


class BlobUpload:
    """A write-only file uploaded block by block, each block with its MD5 (see module doc).

    `path` is the fsspec path (`container/folder/file`) on the lake's adlfs filesystem, whose
    asynchronous service client (and credentials) it shares.
    """

    def __init__(
        self,
        filesystem: Any,
        path: str,
        block_bytes: int = BLOCK_BYTES,
        budget: UploadBudget | None = None,
    ) -> None:
        self.filesystem = filesystem
        self.path = path
        self.container, self.blob = _split(path)
        self.block_bytes = block_bytes
        self._buffer = bytearray()
        self._blocks: list[str] = []
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.md5: str | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.closed = False
        self.budget = budget if budget is not None else BUDGET
        self.owner = threading.get_ident()
        self.budget.register(self)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._md5.update(view)
        self._buffer += view
        self.budget.resize(view.nbytes)
        self.size += view.nbytes
        while len(self._buffer) >= self.block_bytes:
            block = bytes(self._buffer[: self.block_bytes])
            del self._buffer[: self.block_bytes]
            self.budget.resize(-len(block))
            self._stage(block)
        self.budget.enforce()
        return view.nbytes

    def send_buffer(self) -> None:
        """Stages what the buffer holds as a block now (the budget asks for room)."""
        block = bytes(self._buffer)
        self._buffer = bytearray()
        self.budget.resize(-len(block))
        if block:
            self._stage(block)

    def flush(self) -> None:
        """Blocks go out when full; a partial block waits for more bytes or `close`."""

    def _stage(self, block: bytes) -> None:
        block_id = uuid.uuid4().hex
        digest = hashlib.md5(block, usedforsecurity=False).digest()
        self._put_block(block_id, block, digest)
        self._blocks.append(block_id)

    def _put_block(self, block_id: str, data: bytes, md5: bytes) -> None:
        """One Put Block carrying `md5` as its transactional MD5: the service hashes what it
        receives and refuses the block when the two differ."""
        sync(self.filesystem.loop, self._aput_block, block_id, data, md5)

    async def _aput_block(self, block_id: str, data: bytes, md5: bytes) -> None:
        from azure.core.exceptions import HttpResponseError  # only Azure lakes import azure

        async with self.filesystem.service_client.get_blob_client(
            self.container, self.blob
        ) as client:
            try:
                await client.stage_block(
                    block_id, data, length=len(data), transactional_content_md5=md5
                )
            except HttpResponseError as error:
                if error.error_code == "Md5Mismatch":
                    raise UploadRefusedError(
                        f"{self.path}: the storage service refused block "
                        f"{len(self._blocks) + 1} ({len(data)} bytes): the bytes it received "
                        f"do not have the MD5 they were sent with"
                    ) from None
                raise

    def close(self) -> None:
        """Sends the last block and commits the block list with the whole file's MD5."""
        if self.closed:
            return
        if self._buffer or not self._blocks:
            block = bytes(self._buffer)
            self._buffer = bytearray()
            self.budget.resize(-len(block))
            if block:
                self._stage(block)
        digest = self._md5.digest()
        response = sync(self.filesystem.loop, self._acommit, digest)
        self.md5 = digest.hex()
        self.etag = response["etag"]
        self.last_modified = response["last_modified"].isoformat()
        self.closed = True
        self.budget.release(self)

    async def _acommit(self, digest: bytes) -> dict:
        from azure.storage.blob import BlobBlock, ContentSettings

        settings = ContentSettings(
            content_type="application/vnd.apache.parquet", content_md5=bytearray(digest)
        )
        async with self.filesystem.service_client.get_blob_client(
            self.container, self.blob
        ) as client:
            if not self._blocks:
                # An empty file: Put Blob, whose Content-MD5 the service checks as well.
                return await client.upload_blob(
                    b"", overwrite=True, content_settings=settings, validate_content=True
                )
            return await client.commit_block_list(
                [BlobBlock(block_id) for block_id in self._blocks], content_settings=settings
            )

    def __enter__(self) -> BlobUpload:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Forgets the staged blocks: uncommitted blocks are no blob, and the service drops
        them after a week."""
        self.budget.resize(-len(self._buffer))
        self._buffer = bytearray()
        self.closed = True
        self.budget.release(self)


def open_upload(location: LakeLocation, full_path: str) -> Any:
    """A write-only file at `full_path`: on Azure a `BlobUpload` (checked by the service on
    receipt), on a local lake an ordinary file."""
    if location.is_azure:
        return BlobUpload(location.filesystem, full_path)
    return location.filesystem.open(full_path, "wb")


def stored_blob(location: LakeLocation, full_path: str) -> StoredBlob:
    """The service's properties of a blob (one request, no body); FileNotFoundError when gone."""
    return sync(location.filesystem.loop, _astored_blob, location.filesystem, full_path)


async def _astored_blob(filesystem: Any, full_path: str) -> StoredBlob:
    from azure.core.exceptions import ResourceNotFoundError

    container, blob = _split(full_path)
    async with filesystem.service_client.get_blob_client(container, blob) as client:
        try:
            properties = await client.get_blob_properties()
        except ResourceNotFoundError:
            raise FileNotFoundError(full_path) from None
    return StoredBlob(
        size=properties.size,
        md5=_hex(properties.content_settings.content_md5),
        etag=properties.etag,
        last_modified=properties.last_modified.isoformat(),
    )
