"""The rows themselves: a day's event times (the boundary instants, the missing hour) and each
chunk's interactions with their metadata and log rows, defects injected, every draw seeded by
``(seed, day, chunk)``. ``generate_batches`` yields them in time order, without a database.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_observatory.synthetic.columns import (
    _children,
    _decimal_from_micros,
    _pick,
    _random_sentences,
    _session_ids,
    _slices,
    _text_bounds,
    _timestamps,
    _uuid4_strings,
)
from llm_observatory.synthetic.schema import INTERACTIONS, LOGS, METADATA
from llm_observatory.synthetic.spec import (
    _ATTRIBUTES_NULL_RATE,
    _EPOCH,
    _HUGE_RESPONSE_RATE,
    _LOGS_PER_INTERACTION,
    _METADATA_PER_INTERACTION,
    _MODEL_LATENCY_FACTOR,
    _MODEL_WEIGHTS,
    _ORPHAN_LOG_RATE,
    _PRICE_IN_MICROS,
    _PRICE_OUT_MICROS,
    _STATUS_WEIGHTS,
    _STATUSES,
    _UNICODE_ROW_SHARE,
    _US_PER_DAY,
    _US_PER_HOUR,
    _US_PER_SECOND,
    _USERS,
    ALLOWED_MODELS,
    ARROW_SCHEMAS,
    CHUNK_ROWS,
    MAX_LATENCY_MS,
    UNKNOWN_MODELS,
    DefectRates,
    SourceBatch,
)
from llm_observatory.synthetic.text_pools import (
    _LEVEL_WEIGHTS,
    _LEVELS,
    _ORPHAN_LEVEL_WEIGHTS,
    _text_pools,
)


@dataclass(frozen=True)
class _DayFrame:
    """What every chunk of one day needs to know about the day."""

    day: dt.date
    start_us: int
    gap: tuple[int, int] | None  # [start, end) of the missing hour in epoch µs

    @property
    def last_us(self) -> int:
        return self.start_us + _US_PER_DAY - 1

    def keep_clear(self, candidate_us: np.ndarray, fallback_us: np.ndarray) -> np.ndarray:
        """``candidate_us`` clamped to the day, and ``fallback_us`` where it falls into the gap."""
        clamped = np.minimum(candidate_us, self.last_us)
        if self.gap is None:
            return clamped
        in_gap = (clamped >= self.gap[0]) & (clamped < self.gap[1])
        return np.where(in_gap, fallback_us, clamped)


def _day_timestamps(
    rng: np.random.Generator, frame: _DayFrame, rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted event times of a day's interactions and masks of its first/last boundary rows."""
    gap_hour = None if frame.gap is None else (frame.gap[0] - frame.start_us) // _US_PER_HOUR
    boundary = []
    if rows >= 1 and gap_hour != 0:
        boundary.append(0)
    if rows >= 2 and gap_hour != 23:
        boundary.append(_US_PER_DAY - 1)
    span = _US_PER_DAY - (_US_PER_HOUR if frame.gap is not None else 0)
    offsets = rng.integers(0, span, size=rows - len(boundary))
    if gap_hour is not None:
        offsets = np.where(offsets >= gap_hour * _US_PER_HOUR, offsets + _US_PER_HOUR, offsets)
    kind = np.concatenate(
        [
            np.array([1 if b == 0 else 2 for b in boundary], dtype=np.int8),
            np.zeros(len(offsets), dtype=np.int8),
        ]
    )
    all_offsets = np.concatenate([np.array(boundary, dtype=np.int64), offsets])
    order = np.lexsort((np.arange(len(all_offsets)), all_offsets))  # ties keep boundary rows first
    return frame.start_us + all_offsets[order], kind[order] == 1, kind[order] == 2


def _build_batch(
    rng: np.random.Generator,
    seed: int,
    frame: _DayFrame,
    ts: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    rates: DefectRates,
    next_metadata_id: int,
    next_log_id: int,
) -> SourceBatch:
    """One chunk's interactions and their metadata and log rows."""
    pools = _text_pools()
    n = len(ts)
    boundary = first | last
    defects: Counter[str] = Counter()

    interaction_ids = _uuid4_strings(rng, n)
    model = rng.choice(len(ALLOWED_MODELS), size=n, p=np.array(_MODEL_WEIGHTS))
    status = rng.choice(len(_STATUSES), size=n, p=np.array(_STATUS_WEIGHTS))
    status[first] = 0
    status[last] = 2

    # Latency by status and model; the boundary rows sit on the edges of the valid range.
    latency = np.clip(rng.lognormal(np.log(900), 0.8, n) * _MODEL_LATENCY_FACTOR[model], 20, 60_000)
    latency = np.where(status == 1, np.clip(rng.lognormal(np.log(300), 1.0, n), 5, 30_000), latency)
    latency = np.where(status == 2, rng.integers(30_000, MAX_LATENCY_MS + 1, n), latency)
    latency = latency.astype(np.int64)
    latency[first] = 0
    latency[last] = MAX_LATENCY_MS
    # What the request really took (log times follow it); the defects only corrupt the column.
    true_latency = latency.copy()

    # Text: a share of rows multilingual; errors answer '' and timeouts NULL.
    multilingual = rng.random(n) < _UNICODE_ROW_SHARE
    prompt_target = np.clip(rng.lognormal(np.log(500), 0.7, n), 80, 6000).astype(np.int64)
    response_target = np.clip(rng.lognormal(np.log(1100), 0.6, n), 100, 8000).astype(np.int64)
    prompts, prompt_bytes = _slices(
        pools.corpus,
        *_text_bounds(pools, _random_sentences(pools, rng, multilingual, 6000), prompt_target),
    )
    response_start, response_end = _text_bounds(
        pools, _random_sentences(pools, rng, multilingual, 8000), response_target
    )
    huge = (rng.random(n) < _HUGE_RESPONSE_RATE) & (status == 0)
    response_start = np.where(huge, 0, response_start)
    response_end = np.where(huge, pools.english_bytes, response_end)
    response_end = np.where(status == 0, response_end, response_start)  # '' for errors and timeouts
    responses, response_bytes = _slices(pools.corpus, response_start, response_end)
    responses = pc.if_else(pa.array(status == 2), pa.scalar(None, pa.string()), responses)

    prompt_tokens = np.maximum(1, np.rint(prompt_bytes / 4 * rng.uniform(0.8, 1.2, n))).astype(
        np.int64
    )
    completion_tokens = np.where(
        status == 0, np.maximum(1, np.rint(response_bytes / 4 * rng.uniform(0.8, 1.2, n))), 0
    ).astype(np.int64)
    cost_micros = np.rint(
        prompt_tokens * _PRICE_IN_MICROS[model] + completion_tokens * _PRICE_OUT_MICROS[model]
    ).astype(np.int64)

    error_messages = pc.if_else(
        pa.array(status == 1),
        _pick(pools.error_messages, rng, n),
        pc.if_else(
            pa.array(status == 2),
            _pick(pools.timeout_messages, rng, n),
            pa.scalar(None, pa.string()),
        ),
    )
    # Squaring a uniform draw skews the users: a few heavy ones, a long tail of occasional ones.
    user_index = np.minimum((rng.random(n) ** 2 * _USERS).astype(np.int64), _USERS - 1)

    # Defects: one uniform draw per row, cut into consecutive intervals, so at most one each.
    draw = rng.random(n)
    draw[boundary] = 2.0  # boundary rows stay clean
    names = ("model_null", "latency_null", "latency_out_of_range", "unknown_model")
    edges = np.cumsum([getattr(rates, name) for name in names])
    kinds = np.searchsorted(edges, draw, side="right")  # 0..3 a defect, 4 none
    model_index = model.copy()
    unknown = kinds == 3
    model_index[unknown] = len(ALLOWED_MODELS) + rng.integers(
        0, len(UNKNOWN_MODELS), int(unknown.sum())
    )
    out_of_range = kinds == 2
    latency[out_of_range] = np.where(
        rng.random(int(out_of_range.sum())) < 0.5,
        rng.integers(-5_000, 0, int(out_of_range.sum())),
        rng.integers(MAX_LATENCY_MS + 1, 600_001, int(out_of_range.sum())),
    )
    for index, name in enumerate(names):
        defects[name] += int((kinds == index).sum())

    last_modified = ts + rng.integers(_US_PER_SECOND, 600 * _US_PER_SECOND + 1, n)
    interactions = pa.Table.from_arrays(
        [
            interaction_ids,
            _timestamps(ts),
            pools.model_names.take(pa.array(model_index, mask=kinds == 0)),
            pa.array(latency, type=pa.int32(), mask=kinds == 1),
            prompts,
            responses,
            pa.array(prompt_tokens, type=pa.int32()),
            pa.array(completion_tokens, type=pa.int32()),
            pools.statuses.take(pa.array(status)),
            error_messages,
            pools.user_ids.take(pa.array(user_index)),
            _session_ids(seed, user_index, ts),
            _decimal_from_micros(cost_micros),
            _timestamps(last_modified),
        ],
        schema=ARROW_SCHEMAS[INTERACTIONS],
    )

    # Metadata: about one row per interaction, created just after it, on the same UTC day.
    parent, ordinal = _children(rng, n, _METADATA_PER_INTERACTION, boundary)
    m = len(parent)
    delay = np.where(
        ordinal == 0,
        rng.integers(0, 2 * _US_PER_SECOND, m),
        rng.integers(0, 120 * _US_PER_SECOND, m),
    )
    delay[(ordinal == 0) & boundary[parent]] = 0
    created = frame.keep_clear(ts[parent] + delay, ts[parent])
    attribute_draw = rng.random(m)
    invalid = attribute_draw < rates.invalid_json
    null = ~invalid & (attribute_draw < rates.invalid_json + _ATTRIBUTES_NULL_RATE)
    attributes = pc.if_else(
        pa.array(invalid),
        _pick(pools.attributes_invalid, rng, m),
        pc.if_else(
            pa.array(null), pa.scalar(None, pa.string()), _pick(pools.attributes_valid, rng, m)
        ),
    )
    defects["invalid_json"] += int(invalid.sum())
    metadata_modified = created + rng.integers(0, 60 * _US_PER_SECOND, m)
    order = np.lexsort((np.arange(m), created))
    metadata = pa.Table.from_arrays(
        [
            pa.array(np.arange(next_metadata_id, next_metadata_id + m, dtype=np.int64)),
            interaction_ids.take(pa.array(parent[order])),
            _timestamps(created[order]),
            attributes.take(pa.array(order)),
            _timestamps(metadata_modified[order]),
        ],
        schema=ARROW_SCHEMAS[METADATA],
    )

    # Logs: the first at the request's instant, the rest during the request; plus orphan logs.
    parent, ordinal = _children(rng, n, _LOGS_PER_INTERACTION, boundary)
    k = len(parent)
    during = (rng.random(k) * (np.maximum(true_latency[parent], 0) + 500) * 1000).astype(np.int64)
    attached_created = frame.keep_clear(ts[parent] + np.where(ordinal == 0, 0, during), ts[parent])
    level = rng.choice(len(_LEVELS), size=k, p=np.array(_LEVEL_WEIGHTS))
    final = (ordinal > 0) & (ordinal == np.bincount(parent, minlength=n)[parent] - 1)
    level = np.where(final & (status[parent] == 1), 3, level)  # errors end with an ERROR log
    level = np.where(final & (status[parent] == 2), 2, level)  # timeouts with a WARNING
    level = np.where(ordinal == 0, 0, level)
    message_index = pools.log_pool_start[level] + (
        rng.random(k) * pools.log_pool_size[level]
    ).astype(np.int64)
    attached_messages = pc.if_else(
        pa.array(ordinal == 0),
        _pick(pools.received_messages, rng, k),
        pools.log_messages.take(pa.array(message_index)),
    )
    orphans = int(rng.binomial(n, _ORPHAN_LOG_RATE))
    orphan_created = frame.keep_clear(  # within the chunk's time span, never in the gap
        rng.integers(int(ts[0]), int(ts[-1]) + 1, orphans), ts[rng.integers(0, n, orphans)]
    )
    orphan_level = rng.choice(len(_LEVELS), size=orphans, p=np.array(_ORPHAN_LEVEL_WEIGHTS))
    log_created = np.concatenate([attached_created, orphan_created])
    log_modified = log_created + rng.integers(0, 2 * _US_PER_SECOND, k + orphans)
    log_interaction = pa.concat_arrays(
        [interaction_ids.take(pa.array(parent)), pa.nulls(orphans, pa.string())]
    )
    log_level = pools.levels.take(pa.array(np.concatenate([level, orphan_level])))
    log_message = pa.concat_arrays([attached_messages, _pick(pools.orphan_messages, rng, orphans)])
    order = pa.array(np.lexsort((np.arange(k + orphans), log_created)))
    logs = pa.Table.from_arrays(
        [
            pa.array(np.arange(next_log_id, next_log_id + k + orphans, dtype=np.int64)),
            log_interaction.take(order),
            _timestamps(log_created).take(order),
            log_level.take(order),
            log_message.take(order),
            _timestamps(log_modified).take(order),
        ],
        schema=ARROW_SCHEMAS[LOGS],
    )
    return SourceBatch(frame.day, interactions, metadata, logs, dict(defects))


def _missing_hour(start_date: dt.date, days: int, rates: DefectRates) -> dt.datetime | None:
    if rates.missing_hour is None or rates.missing_hour[0] >= days:
        return None
    day_index, hour = rates.missing_hour
    day = start_date + dt.timedelta(days=day_index)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def generate_batches(
    *,
    start_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 7,
    defects: DefectRates | None = None,
    first_metadata_id: int = 1,
    first_log_id: int = 1,
) -> Iterator[SourceBatch]:
    """The rows :func:`generate_source` loads, as Arrow batches, without touching a database.

    Batches come in time order, one or more per day (at most :data:`CHUNK_ROWS` interactions
    each). Useful to compute expected values, or to load a target this module has no path for.
    """
    if days < 0 or rows_per_day < 0:
        raise ValueError(f"days and rows_per_day must be >= 0, got {days} and {rows_per_day}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rates = defects if defects is not None else DefectRates()
    gap_start = _missing_hour(start_date, days, rates)
    next_metadata_id, next_log_id = first_metadata_id, first_log_id
    for day_index in range(days):
        day = start_date + dt.timedelta(days=day_index)
        start_us = (day - _EPOCH).days * _US_PER_DAY
        gap = None
        if gap_start is not None and gap_start.date() == day:
            gap_us = start_us + gap_start.hour * _US_PER_HOUR
            gap = (gap_us, gap_us + _US_PER_HOUR)
        frame = _DayFrame(day, start_us, gap)
        ts, first, last = _day_timestamps(
            np.random.default_rng([seed, day.toordinal()]), frame, rows_per_day
        )
        for chunk, begin in enumerate(range(0, rows_per_day, CHUNK_ROWS)):
            window = slice(begin, begin + CHUNK_ROWS)
            batch = _build_batch(
                np.random.default_rng([seed, day.toordinal(), chunk + 1]),
                seed,
                frame,
                ts[window],
                first[window],
                last[window],
                rates,
                next_metadata_id,
                next_log_id,
            )
            next_metadata_id += batch.metadata.num_rows
            next_log_id += batch.logs.num_rows
            yield batch
