"""Bounded retries of a partition write whose files do not read back as written, or whose
upload the storage service refused (a block's bytes arrived with another MD5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from llm_observatory.io.delta_lake import ReadBackMismatchError
from llm_observatory.io.uploads import UploadRefusedError

WRITE_ATTEMPTS = 3
T = TypeVar("T")


def write_with_read_back_retries(write_once: Callable[[], T], log, what: str) -> T:
    """Runs `write_once` again (from the start) when storage returns other bytes than were
    written; after `WRITE_ATTEMPTS` the error fails the run, with nothing committed."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return write_once()
        except (ReadBackMismatchError, UploadRefusedError) as error:
            if attempt == WRITE_ATTEMPTS:
                raise
            log.warning(f"{what}: attempt {attempt}/{WRITE_ATTEMPTS} did not read back: {error}")
    raise AssertionError("unreachable")
