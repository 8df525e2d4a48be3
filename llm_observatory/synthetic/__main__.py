"""``python -m llm_observatory.synthetic``: build a synthetic source database, print its summary.

Examples::

    python -m llm_observatory.synthetic --url sqlite:///demo.db --start 2024-01-01 --days 7 \
        --rows-per-day 15000
    python -m llm_observatory.synthetic --url postgresql+psycopg://postgres@127.0.0.1/llm \
        --start 2024-01-01 --days 10 --rows-per-day 100000 --seed 11 --no-defects
    python -m llm_observatory.synthetic --write-ddl sql/   # regenerate sql/source_*.sql
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory.synthetic.schema import ddl_script

DDL_DIALECTS = ("postgresql", "sqlite", "mssql")


def write_ddl(folder: Path) -> list[Path]:
    """Write ``source_<dialect>.sql`` for every dialect into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for dialect in DDL_DIALECTS:
        path = folder / f"source_{dialect}.sql"
        path.write_text(ddl_script(dialect), encoding="utf-8")
        paths.append(path)
    return paths


def _missing_hour(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    day, _, hour = text.partition(":")
    return int(day), int(hour)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm_observatory.synthetic",
        description="Build a deterministic synthetic source database (the reference schema).",
    )
    parser.add_argument("--url", help="SQLAlchemy URL of the database to fill")
    parser.add_argument("--start", type=dt.date.fromisoformat, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=7, help="number of days (default 7)")
    parser.add_argument("--rows-per-day", type=int, default=15_000, help="interactions per day")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--append", action="store_true", help="add to existing tables instead of replacing them"
    )
    parser.add_argument(
        "--no-defects", action="store_true", help="clean data: no defects, no missing hour"
    )
    parser.add_argument(
        "--missing-hour",
        type=_missing_hour,
        default=DefectRates().missing_hour,
        metavar="DAY:HOUR",
        help="day index and UTC hour left without rows, or 'none' (default 1:13)",
    )
    parser.add_argument(
        "--write-ddl", type=Path, metavar="FOLDER", help="write sql/source_<dialect>.sql and exit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.write_ddl is not None:
        for path in write_ddl(args.write_ddl):
            print(path)
        return 0
    if args.url is None or args.start is None:
        parser.error("--url and --start are required (or --write-ddl)")
    defects = DefectRates.none() if args.no_defects else DefectRates(missing_hour=args.missing_hour)

    def progress(day: dt.date, rows: dict[str, int]) -> None:
        print(f"  {day}: +{rows['llm_interactions']:,} interactions", file=sys.stderr, flush=True)

    summary = generate_source(
        args.url,
        start_date=args.start,
        days=args.days,
        rows_per_day=args.rows_per_day,
        seed=args.seed,
        defects=defects,
        replace=not args.append,
        progress=progress,
    )
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
