"""What the departure capture costs the source's writers (issue 13): DELETE and UPDATE rows/s
on fresh copies of one generated source, with and without `install_departure_capture`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from measuring import TABLE, libpq_url, say
from source_db import Sources

# The departure trigger cost: rows of one day, rounds (fresh copies each), and the statements.
# uuid4 keys are uniform hex, so each key range holds 10 % of the rows (0x1999999a / 2**32).
DEPARTURE_ROWS = 100_000
DEPARTURE_ROUNDS = 3
DEPARTURE_STATEMENTS = (
    (
        "delete",
        "DELETE of 10 %",
        "DELETE FROM llm_interactions WHERE interaction_id >= %s AND interaction_id < %s",
        ("00000000", "1999999a"),
    ),
    (
        "move",
        "UPDATE moving 10 % a day later",
        'UPDATE llm_interactions SET "timestamp" = "timestamp" + interval \'1 day\' '
        "WHERE interaction_id >= %s AND interaction_id < %s",
        ("1999999a", "33333334"),
    ),
    (
        "other",
        "UPDATE of other columns of 10 %",
        "UPDATE llm_interactions SET latency_ms = latency_ms + 1 "
        "WHERE interaction_id >= %s AND interaction_id < %s",
        ("33333334", "4ccccccd"),
    ),
)


def measure_departure_cost(sources: Sources, args: argparse.Namespace) -> dict:
    """What the departure capture costs the source's writers: the same DELETE and UPDATEs on
    copies of one generated source, with and without `install_departure_capture`."""
    import psycopg
    import sqlalchemy as sa

    from llm_observatory.sql_scripts import install_departure_capture
    from llm_observatory.synthetic.generator import generate_source

    rows = args.departure_rows
    base = sources.new_database(rows)
    say(f"departure trigger cost: generating {rows:,} rows of {TABLE} on {args.day}")
    generate_source(
        base, start_date=dt.date.fromisoformat(args.day), days=1, rows_per_day=rows, seed=args.seed
    )
    with psycopg.connect(libpq_url(base), autocommit=True) as connection:
        connection.execute(f"VACUUM ANALYZE {TABLE}")
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for _ in range(DEPARTURE_ROUNDS):
        for variant in runs:
            copy = sources.new_database(rows, template=sa.make_url(base).database)
            try:
                if variant == "with":
                    engine = sa.create_engine(copy)
                    install_departure_capture(engine)
                    engine.dispose()
                runs[variant].append(time_departure_statements(copy, variant == "with"))
            finally:
                sources.drop_database(copy)
    sources.drop_database(base)
    statements = {}
    for name, label, _, _ in DEPARTURE_STATEMENTS:
        without = max(run[name]["rows_per_second"] for run in runs["without"])
        with_capture = max(run[name]["rows_per_second"] for run in runs["with"])
        statements[name] = {
            "label": label,
            "rows": runs["without"][0][name]["rows"],
            "without_rows_per_second": without,
            "with_rows_per_second": with_capture,
            "ratio": with_capture / without if without else 0.0,
        }
    recorded = {run["departures_recorded"] for run in runs["with"]}
    expected = statements["delete"]["rows"] + statements["move"]["rows"]
    return {
        "rows_in_table": rows,
        "rounds": DEPARTURE_ROUNDS,
        "statements": statements,
        # Every deleted and moved row, none of the other update: the trigger did its work.
        "departures_recorded": sorted(recorded),
        "departures_expected": expected,
        "runs": runs,
    }


def time_departure_statements(url: str, captured: bool) -> dict:
    """Each of DEPARTURE_STATEMENTS once on `url`, autocommit, timed by this client; with the
    capture installed (`captured`), how many departures it recorded."""
    import psycopg

    figures: dict = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for name, _, statement, bounds in DEPARTURE_STATEMENTS:
            started = time.perf_counter()
            rows = connection.execute(statement, bounds).rowcount
            seconds = time.perf_counter() - started
            figures[name] = {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds}
        if captured:
            figures["departures_recorded"] = connection.execute(
                "SELECT count(*) FROM migration_departures"
            ).fetchone()[0]
    return figures


def departure_lines(cost: dict) -> list[str]:
    parts = [
        f"{figures['label']} ({figures['rows']:,} rows): "
        f"{figures['without_rows_per_second']:,.0f} rows/s without, "
        f"{figures['with_rows_per_second']:,.0f} with ({figures['ratio']:.2f}x)"
        for figures in cost["statements"].values()
    ]
    recorded = cost["departures_recorded"]
    return [
        f"departure trigger cost ({cost['rows_in_table']:,}-row {TABLE}, PostgreSQL, best of "
        f"{cost['rounds']}): " + "; ".join(parts),
        f"departures recorded per round: {', '.join(f'{count:,}' for count in recorded)} "
        f"(expected {cost['departures_expected']:,}: every deleted and moved row)",
    ]
