"""Vectorised column builders: UUIDs, session ids, decimals, timestamps, text slices of the
corpus and child rows, made from NumPy arrays straight into Arrow buffers, no Python per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from llm_observatory.synthetic.spec import _SESSION_WINDOW_US, _TS
from llm_observatory.synthetic.text_pools import _TextPools

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """An Arrow string array from an ``(n, width)`` matrix of ASCII codes, without Python loops."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars, dtype=np.uint8))
    )


def _hex(raw: np.ndarray) -> np.ndarray:
    """``(n, k)`` bytes to the ``(n, 2k)`` ASCII codes of their lowercase hex digits."""
    out = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = _HEX_DIGITS[raw >> 4]
    out[:, 1::2] = _HEX_DIGITS[raw & 0x0F]
    return out


def _uuid4_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """Random version-4 UUIDs in canonical lowercase text form."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = _hex(raw)
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    for (out_start, out_end), (in_start, in_end) in (
        ((0, 8), (0, 8)),
        ((9, 13), (8, 12)),
        ((14, 18), (12, 16)),
        ((19, 23), (16, 20)),
        ((24, 36), (20, 32)),
    ):
        chars[:, out_start:out_end] = digits[:, in_start:in_end]
    return _fixed_width_strings(chars)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash (SplitMix64 finaliser); uint64 arithmetic wraps by design."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _session_ids(seed: int, user_index: np.ndarray, timestamps_us: np.ndarray) -> pa.Array:
    """``sess-<16 hex>``: one id per user and 30-minute window, so sessions span requests."""
    window = timestamps_us // _SESSION_WINDOW_US
    key = (user_index.astype(np.uint64) << np.uint64(32)) ^ window.astype(np.uint64)
    hashed = _splitmix64(key ^ _splitmix64(np.full(len(key), seed, dtype=np.uint64)))
    raw = hashed.astype(">u8").view(np.uint8).reshape(-1, 8)
    chars = np.concatenate(
        [np.broadcast_to(np.frombuffer(b"sess-", dtype=np.uint8), (len(key), 5)), _hex(raw)], axis=1
    )
    return _fixed_width_strings(chars)


def _decimal_from_micros(micros: np.ndarray) -> pa.Array:
    """``decimal128(12, 6)`` from integer micro-units: the unscaled value is the integer itself.

    Arrow stores a decimal128 as a 16-byte little-endian two's complement integer, so the array
    is built from (low word, sign word) pairs instead of a lossy float or a slow string round trip.
    """
    words = np.empty((len(micros), 2), dtype="<i8")
    words[:, 0] = micros
    words[:, 1] = micros >> 63
    return pa.Array.from_buffers(pa.decimal128(12, 6), len(micros), [None, pa.py_buffer(words)])


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=_TS)


def _text_bounds(
    pools: _TextPools, start_sentence: np.ndarray, target_bytes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Byte range of whole corpus sentences from ``start_sentence`` covering ``target_bytes`` (> 0).

    Cutting only at sentence starts keeps every text valid UTF-8, which lets :func:`_slices`
    assemble the Arrow array straight from the corpus bytes.
    """
    starts = pools.sentence_starts[start_sentence]
    end_sentence = np.searchsorted(
        pools.sentence_starts, starts + np.maximum(target_bytes, 1), side="left"
    )
    return starts, pools.sentence_starts[end_sentence]


def _slices(corpus: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Arrow strings ``corpus[start:end]`` (UTF-8 boundaries assumed) and their byte lengths."""
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] >= 2**31:  # cannot happen at CHUNK_ROWS rows of at most ~15 KB (and rare MBs)
        raise OverflowError(f"{offsets[-1]} bytes of text in one chunk exceed Arrow's string type")
    data = b"".join(map(corpus.__getitem__, map(slice, starts.tolist(), ends.tolist())))
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), len(lengths), buffers), lengths


def _random_sentences(
    pools: _TextPools, rng: np.random.Generator, multilingual: np.ndarray, max_bytes: int
) -> np.ndarray:
    """A start sentence per row, English or multilingual, at least ``max_bytes`` before the end."""
    starts = pools.sentence_starts
    english_last = int(np.searchsorted(starts, pools.english_bytes - max_bytes)) - 1
    multilingual_first = pools.english_sentences
    multilingual_last = int(np.searchsorted(starts, len(pools.corpus) - max_bytes)) - 1
    english = rng.integers(0, english_last, size=len(multilingual))
    other = rng.integers(multilingual_first, multilingual_last, size=len(multilingual))
    return np.where(multilingual, other, english)


def _pick(pool: pa.Array, rng: np.random.Generator, n: int) -> pa.Array:
    return pool.take(pa.array(rng.integers(0, len(pool), size=n)))


def _children(
    rng: np.random.Generator,
    parents: int,
    choices: tuple[tuple[int, ...], tuple[float, ...]],
    at_least_one: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Child rows per parent: (parent index of each child, its ordinal 0.. within the parent)."""
    counts = rng.choice(np.array(choices[0]), size=parents, p=np.array(choices[1]))
    counts = np.where(at_least_one, np.maximum(counts, 1), counts)
    parent = np.repeat(np.arange(parents), counts)
    ordinal = np.arange(len(parent)) - np.repeat(np.cumsum(counts) - counts, counts)
    return parent, ordinal
