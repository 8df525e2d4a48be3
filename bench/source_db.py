"""Where the source databases come from (a throwaway PostgreSQL, a server or one database
named on the command line), and the measured day's source: generated, vacuumed, described.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid

from measuring import TABLE, day_bounds, libpq_url, sa_url_without_password, say, with_database


class Sources:
    """Where the source databases come from: ours, a server we were given, or one database."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = None
        self.admin_url: str | None = args.pg_admin_url
        self.created: list[str] = []
        self.postmaster_pid: int | None = None
        self.server_version = ""

    def start(self) -> None:
        if self.args.source_url or self.admin_url:
            return
        from llm_observatory_tests import services

        say("starting a throwaway PostgreSQL")
        self.server = services.start_postgres()
        self.admin_url = self.server.admin_url
        self.server_version = self.server.version
        pid_file = self.server.data_dir / "postmaster.pid"
        try:
            self.postmaster_pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            self.postmaster_pid = None
        say(f"PostgreSQL on 127.0.0.1:{self.server.port} ({self.server.version})")

    def new_database(self, rows: int, template: str | None = None) -> str:
        """A new database (a copy of `template`, if given); its URL."""
        import psycopg
        from psycopg import sql

        name = f"bench_{rows}_{uuid.uuid4().hex[:8]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(statement)
        self.created.append(name)
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database `new_database` made, now (copies would otherwise pile up)."""
        import psycopg
        import sqlalchemy as sa
        from psycopg import sql

        name = sa.make_url(url).database
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self.created.remove(name)

    def cleanup(self) -> None:
        if self.args.keep:
            if self.server is not None:
                say(
                    f"--keep: PostgreSQL left running at {self.server.admin_url} "
                    f"(folder {self.server.workdir}); stop it with "
                    f"pg_ctl -D {self.server.data_dir} stop; its owner (this process) is gone, so "
                    "the next start_postgres() anywhere (a test session) will clean it up"
                )
            elif self.created:
                say(f"--keep: databases left in place: {', '.join(self.created)}")
            return
        if self.server is not None:
            self.server.stop()
            return
        if self.admin_url and self.created:
            import psycopg
            from psycopg import sql

            with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as connection:
                for name in self.created:
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )


def describe_source(url: str, day: str) -> dict:
    import psycopg

    start, end = day_bounds(day)
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        total, table, heap, rows_all = connection.execute(
            "SELECT pg_total_relation_size(%(t)s), pg_table_size(%(t)s), pg_relation_size(%(t)s),"
            " (SELECT count(*) FROM llm_interactions)",
            {"t": TABLE},
        ).fetchone()
        day_rows = connection.execute(
            'SELECT count(*) FROM llm_interactions WHERE "timestamp" >= %s AND "timestamp" < %s',
            (start, end),
        ).fetchone()[0]
        version = connection.execute("SHOW server_version").fetchone()[0]
        shared_buffers = connection.execute("SHOW shared_buffers").fetchone()[0]
    return {
        "table": TABLE,
        "rows_in_table": rows_all,
        "rows_in_day": day_rows,
        "pg_total_relation_size": total,
        "pg_table_size": table,
        "pg_relation_size": heap,
        "avg_row_bytes_table": table / rows_all if rows_all else 0.0,
        "avg_row_bytes_total": total / rows_all if rows_all else 0.0,
        "server_version": version,
        "shared_buffers": shared_buffers,
    }


def busiest_day(url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        found = connection.execute(
            "SELECT (\"timestamp\" AT TIME ZONE 'UTC')::date AS d, count(*) FROM llm_interactions "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
    if found is None:
        raise SystemExit(f"{TABLE} is empty at the given --source-url")
    return found[0].isoformat()


def prepare_source(sources: Sources, rows: int, day: str) -> dict:
    """A fresh database holding `rows` interactions on `day`, vacuumed and analyzed."""
    import psycopg

    from llm_observatory.synthetic.generator import generate_source

    url = sources.new_database(rows)
    say(f"generating {rows:,} rows of {TABLE} (+ metadata, logs) on {day}")
    started = time.perf_counter()
    summary = generate_source(
        url,
        start_date=dt.date.fromisoformat(day),
        days=1,
        rows_per_day=rows,
        seed=sources.args.seed,
    )
    generated = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(f"VACUUM ANALYZE {TABLE}")
    vacuumed = time.perf_counter() - started
    say(f"generated in {generated:.1f} s, VACUUM ANALYZE in {vacuumed:.1f} s")
    return {
        "url": sa_url_without_password(url),
        "generated_rows": dict(summary.rows),
        "generation_seconds": generated,
        "vacuum_analyze_seconds": vacuumed,
        "_url": url,
    }
