"""PostgreSQL's COPY BINARY stream, computed column-wise from Arrow tables: how the PostgreSQL
sink sends the rows (no text for the server to parse, no Python per value), and a wire format
with its own tests.
"""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.synthetic.spec import _EPOCH, _US_PER_DAY


def _table_columns(rows: pa.Table) -> list[pa.Array]:
    return [column.combine_chunks() for column in rows.columns]


_PG_EPOCH_US = (dt.date(2000, 1, 1) - _EPOCH).days * _US_PER_DAY
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, extension
_PG_COPY_TRAILER = struct.pack(">h", -1)
_PG_NULL = pa.scalar(struct.pack(">i", -1), pa.large_binary())


def _cells(matrix: np.ndarray) -> pa.Array:
    """One ``large_binary`` value per row of an ``(n, width)`` byte matrix."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = pa.py_buffer(np.ascontiguousarray(matrix))
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), data])


def _fixed_cells(values: np.ndarray, big_endian_dtype: str) -> pa.Array:
    """COPY BINARY fields (int32 length, then the big-endian value) of a fixed-width column."""
    width = np.dtype(big_endian_dtype).itemsize
    matrix = np.empty((len(values), 4 + width), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(struct.pack(">i", width), dtype=np.uint8)
    matrix[:, 4:] = values.astype(big_endian_dtype).view(np.uint8).reshape(len(values), width)
    return _cells(matrix)


def _decimal_unscaled(column: pa.Array) -> np.ndarray:
    """The unscaled integers of a ``decimal128`` column (exact while they fit in 64 bits)."""
    words = np.frombuffer(column.buffers()[1], dtype="<i8").reshape(-1, 2)
    return words[column.offset : column.offset + len(column), 0]


def _numeric_cells(unscaled_micros: np.ndarray) -> pa.Array:
    """PostgreSQL's binary ``numeric`` for values of scale 6 below 10**8 in magnitude.

    The wire format is (ndigits, weight, sign, dscale) then base-10000 digits. Every value is
    sent with the same four digits, two before the point and two after; the server strips
    leading and trailing zero digits itself (``make_result``), so the fixed width is valid
    input and keeps the encoding a pure array computation.
    """
    n = len(unscaled_micros)
    magnitude = np.abs(unscaled_micros)
    integer, fraction = magnitude // 1_000_000, (magnitude % 1_000_000) * 100
    words = np.empty((n, 8), dtype=">i2")
    words[:, 0] = 4  # ndigits
    words[:, 1] = 1  # weight: the first digit counts 10000**1
    words[:, 2] = np.where(unscaled_micros < 0, 0x4000, 0x0000)  # NUMERIC_NEG / NUMERIC_POS
    words[:, 3] = 6  # dscale
    words[:, 4], words[:, 5] = integer // 10_000, integer % 10_000
    words[:, 6], words[:, 7] = fraction // 10_000, fraction % 10_000
    matrix = np.empty((n, 4 + 16), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(struct.pack(">i", 16), dtype=np.uint8)
    matrix[:, 4:] = words.view(np.uint8).reshape(n, 16)
    return _cells(matrix)


def _pg_copy_binary(rows: pa.Table) -> memoryview:
    """The tuples of ``rows`` in PostgreSQL's COPY BINARY format, computed column-wise in Arrow.

    Each column becomes an array of encoded fields (length word and big-endian value, or -1
    for NULL); one ``binary_join_element_wise`` lays the fields out row after row, and the
    joined array's data buffer is the COPY stream: no Python code runs per row or per value.
    Handles exactly the types of :data:`ARROW_SCHEMAS`.
    """
    n = rows.num_rows
    field_count = pa.scalar(struct.pack(">h", rows.num_columns), pa.large_binary())
    fields: list[pa.Array | pa.Scalar] = [field_count]
    for column in _table_columns(rows):
        kind = column.type
        if pa.types.is_string(kind):
            lengths = pc.binary_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
            fields.append(_cells(lengths.astype(">i4").view(np.uint8).reshape(n, 4)))
            fields.append(column.cast(pa.large_binary()).fill_null(b""))
            continue
        if pa.types.is_int32(kind):
            cells = _fixed_cells(column.fill_null(0).to_numpy(), ">i4")
        elif pa.types.is_int64(kind):
            cells = _fixed_cells(column.fill_null(0).to_numpy(), ">i8")
        elif pa.types.is_timestamp(kind) and kind.unit == "us":
            micros = column.cast(pa.int64()).fill_null(0).to_numpy()
            cells = _fixed_cells(micros - _PG_EPOCH_US, ">i8")
        elif pa.types.is_decimal(kind) and kind.scale == 6:
            cells = _numeric_cells(_decimal_unscaled(column))
        else:
            raise TypeError(f"no COPY BINARY encoding for column type {kind}")
        if column.null_count:
            cells = pc.if_else(column.is_valid(), cells, _PG_NULL)
        fields.append(cells)
    fields.append(pa.scalar(b"", pa.large_binary()))  # the separator
    joined = pc.binary_join_element_wise(*fields)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)
    first, last = offsets[joined.offset], offsets[joined.offset + n]
    return memoryview(joined.buffers()[2])[first:last]
