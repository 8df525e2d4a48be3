"""A deterministic synthetic source database: the reference tables, filled with realistic rows.

The migration is proven on data whose every property is known in advance: how many rows each
table holds per UTC day, which rows break which quality rule, where the day boundaries and the
gaps are. :func:`generate_source` builds such a database on PostgreSQL, SQLite or (slowly) any
SQLAlchemy dialect and returns a :class:`SyntheticSummary` with those exact figures, so tests can
assert on quarantine counts and row counts instead of approximations.

Promises:

- Same arguments, same rows, byte for byte: every random draw comes from a NumPy generator
  seeded with ``(seed, day ordinal, chunk)``, so a day's rows do not depend on which other days
  are generated (only the sequential ``metadata_id``/``log_id`` continue from earlier days).
- ``rows_per_day`` interactions on every UTC day, spread over the day, with one row at exactly
  00:00:00.000000 and one at 23:59:59.999999 (both defect-free; latency 0 ms and 120000 ms, the
  edges of the valid range). The first metadata row and first log row of an interaction share
  its timestamp, so those two tables have the boundary instants too.
- Defects are injected at :class:`DefectRates` and at most one per row, so the quarantine count
  of a table is exactly the sum of its defect counts, and each defect names the first rule it
  breaks (:data:`DEFECT_RULES`).
- ``missing_hour``: one hour of one day with no rows in any table (an outage the source has too).
- Metadata and log rows fall on the same UTC day as their interaction; ``last_modified`` is never
  before the row's event time.
- Text is UTF-8 without NUL characters (PostgreSQL rejects them). Some of it is written to trap
  careless loaders: quotes, commas, tabs, CR LF, backslashes, a literal ``\\N``, emoji outside
  the BMP and decomposed accents. An ``error`` row's response is the empty string, a ``timeout``
  row's response is NULL: the two must stay distinct through the pipeline.

Generation is vectorised (NumPy, Arrow) and chunked (at most :data:`CHUNK_ROWS` interactions in
memory), and it runs in a background thread so that it overlaps with the database's ingestion.
Text is cut from a fixed corpus of whole sentences by byte offsets, not assembled word by word.

This module loads a database: :func:`generate_source` runs the batches through a sink in the
background. The figures and types are in ``spec``, the text in ``text_pools``, the column
builders in ``columns``, the rows in ``batches``, the loading in ``sinks`` (and ``pg_copy``, the
PostgreSQL wire format); the package's ``__init__`` gathers the public names.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from llm_observatory.resources.urls import display_url
from llm_observatory.synthetic.batches import _missing_hour, generate_batches
from llm_observatory.synthetic.schema import TABLE_NAMES
from llm_observatory.synthetic.sinks import _sink_for
from llm_observatory.synthetic.spec import DEFECT_RULES, DefectRates, SyntheticSummary

_T = TypeVar("_T")


def _in_background(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Run ``items`` in a producer thread, ``depth`` ahead, so producing overlaps consuming.

    NumPy, Arrow and the database drivers release the GIL for their heavy work, so on two or
    more cores generation and encoding run beside the database's ingestion. The order of the
    items, and so the data, is unchanged. A failure on either side stops the other; close the
    returned generator (``contextlib.closing``) to stop the thread early.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        """Hand ``item`` over unless the consumer has gone; never block forever."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            offer(("error", error))

    producer = threading.Thread(target=produce, name="synthetic-generator", daemon=True)
    producer.start()
    try:
        while True:
            kind, payload = handoff.get()
            if kind == "done":
                return
            if kind == "error":
                raise payload
            yield payload
    finally:
        stop.set()
        producer.join()


def _engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    options: dict[str, Any] = {"poolclass": NullPool}
    if parsed.get_backend_name() == "mssql" and parsed.get_driver_name() == "pyodbc":
        options["fast_executemany"] = True
    return sa.create_engine(parsed, **options)


def generate_source(
    url: str,
    *,
    start_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 7,
    defects: DefectRates | None = None,
    replace: bool = True,
    progress: Callable[[dt.date, dict[str, int]], None] | None = None,
) -> SyntheticSummary:
    """Create the reference tables at ``url`` and fill them with ``days`` days of rows.

    ``replace=True`` drops the three tables first; ``replace=False`` appends (creating missing
    tables), continuing ``metadata_id``/``log_id`` after the existing maximum; interaction ids
    are seeded per day, so appending days already present with the same seed collides.
    Everything is loaded in one transaction: on failure the database is left as it was (for
    PostgreSQL and SQLite; other dialects as far as their DDL is transactional).
    ``progress(day, rows_per_table)`` is called after each batch is written.
    """
    rates = defects if defects is not None else DefectRates()
    started = time.perf_counter()
    engine = _engine(url)
    rows: Counter[str] = Counter({name: 0 for name in TABLE_NAMES})
    rows_by_day: dict[str, Counter[dt.date]] = {name: Counter() for name in TABLE_NAMES}
    defect_totals: Counter[str] = Counter({name: 0 for name in DEFECT_RULES})
    defects_by_day: dict[str, Counter[dt.date]] = {name: Counter() for name in DEFECT_RULES}
    try:
        sink = _sink_for(engine)
        try:
            first_metadata_id, first_log_id = sink.prepare(replace)
            batches = generate_batches(
                start_date=start_date,
                days=days,
                rows_per_day=rows_per_day,
                seed=seed,
                defects=rates,
                first_metadata_id=first_metadata_id,
                first_log_id=first_log_id,
            )
            # The producer thread generates and encodes; only row counts and payloads cross
            # over, so at most ``depth`` encoded batches (not their Arrow tables) wait in memory.
            encoded = (
                (
                    batch.day,
                    {name: batch.table(name).num_rows for name in TABLE_NAMES},
                    batch.defects,
                    {name: sink.encode(name, batch.table(name)) for name in TABLE_NAMES},
                )
                for batch in batches
            )
            with closing(_in_background(encoded)) as stream:
                for day, counts, batch_defects, payloads in stream:
                    for name in TABLE_NAMES:
                        sink.write(name, payloads[name])
                        rows[name] += counts[name]
                        if counts[name]:
                            rows_by_day[name][day] += counts[name]
                    for name, count in batch_defects.items():
                        defect_totals[name] += count
                        if count:
                            defects_by_day[name][day] += count
                    if progress is not None:
                        progress(day, counts)
            sink.finish()
        except BaseException:
            sink.abort()
            raise
    finally:
        engine.dispose()
    return SyntheticSummary(
        database=display_url(url),
        seed=seed,
        start_date=start_date,
        days=days,
        rows_per_day=rows_per_day,
        defect_rates=rates,
        rows=dict(rows),
        rows_by_day={name: dict(sorted(per_day.items())) for name, per_day in rows_by_day.items()},
        defects=dict(defect_totals),
        defects_by_day={
            name: dict(sorted(per_day.items())) for name, per_day in defects_by_day.items()
        },
        missing_hour=_missing_hour(start_date, days, rates),
        elapsed_seconds=time.perf_counter() - started,
    )


# What other modules import from here (the package's public names are in ``__init__``).
__all__ = ["DefectRates", "generate_source"]
