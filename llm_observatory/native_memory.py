"""Keep the process's resident memory close to what it really holds.

Two allocators keep freed memory for later by default, which a long streaming copy turns into
resident memory that grows with the partition (measured on a 1M-row day):
- ADBC and libpq allocate each batch with the C library's malloc; batches are freed in another
  thread than the one that allocated them, and glibc keeps freed blocks in per-thread arenas
  (650 MiB). Serving allocations of 1 MiB and more from mmap returns them at once.
- Arrow's default pool (mimalloc) delays purging freed pages; silver's read-validate-write loop
  reached 680 MiB with 180 MiB live. jemalloc with a zero decay returns them at once (430 MiB).
- delta-rs brings its own jemalloc, which keeps freed pages for 10 s: every opening of a table
  builds its snapshot there (all its files), and a day's run opens about forty, so a backfill's
  resident memory sat 50 MiB higher (12 demo days: 447 MiB at the end, 394 MiB with a zero
  decay). It costs time, pages handed back and faulted in again: 8 demo days took 31-33 s
  against 28-29 s (peaks 405 MiB against 445-455 MiB); memory is the limit that must hold.
  Its configuration is read once, from `_RJEM_MALLOC_CONF`, when delta-rs first allocates:
  `before_native_libraries_load()` sets it from the package's `__init__`, before anything
  imports `deltalake` (a value already in the environment is kept). Polars, imported later,
  puts its own defaults in front of the value; jemalloc takes each option's last value.

What glibc frees in the middle of its arenas stays resident until `malloc_trim` hands it back,
and a command that runs day after day in one process (a backfill of 16 demo days) grew 40 MiB
at rest and 20 MiB at its peak that way, a few MiB a day, without a Python object to show for
it: `return_freed_pages()` after each day's run keeps it flat (16 days: 312-331 MiB at rest,
399 MiB peak, against 312-358 and 420).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024


DELTA_RS_ALLOCATOR_VARIABLE = "_RJEM_MALLOC_CONF"
DELTA_RS_ALLOCATOR_SETTINGS = "dirty_decay_ms:0,muzzy_decay_ms:0"


def before_native_libraries_load() -> None:
    """delta-rs' jemalloc returns freed pages at once (see the module's docstring)."""
    os.environ.setdefault(DELTA_RS_ALLOCATOR_VARIABLE, DELTA_RS_ALLOCATOR_SETTINGS)


@functools.cache
def release_large_blocks_eagerly() -> bool:
    """Both settings below, once per process."""
    arrow = _arrow_pool_returns_memory()
    libc = _glibc_mmaps_large_blocks()
    return arrow and libc


def return_freed_pages() -> bool:
    """Hands glibc's free pages back to the system (`malloc_trim(0)`, every arena); a no-op
    where the C library has no such call. Meant for the pause between two runs of a command
    that works day after day in one process: it costs a walk over the heap."""
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))


@functools.cache
def _glibc_function(name: str):
    library = ctypes.util.find_library("c")
    if not library:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


def _arrow_pool_returns_memory() -> bool:
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        logger.debug("pyarrow has no jemalloc here; keeping its default memory pool")
        return False
    return True


def _glibc_mmaps_large_blocks() -> bool:
    """Tells glibc to mmap large blocks (and trim eagerly); a no-op elsewhere."""
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    applied = bool(mallopt(M_TRIM_THRESHOLD, 0)) and applied
    if not applied:
        logger.debug("mallopt refused the settings; resident memory may overstate live data")
    return applied
