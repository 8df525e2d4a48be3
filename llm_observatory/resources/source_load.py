"""The load the source may bear: the `llm_obs_source` pool and the query cap agreed with the DBA.

Every Dagster step that queries the source (bronze copies, change reads, the checks, spot
checks, hour-gap counts, reconciliation, the cutover report's recount, query monitoring, the
source-health probe, the departure purge) declares `pool=SOURCE_POOL`, so the instance lets at
most the pool's limit of them run at once across all runs. A copy reads one day with
`LLM_OBS_SOURCE_STREAMS` queries, so the source sees at most streams x the pool limit queries;
that product must stay within `LLM_OBS_SOURCE_MAX_QUERIES`, checked at start-up against the
instance's configured default limit and again by each copy against the limit in force.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

from llm_observatory.resources.source import (
    SourceDatabase,
    SourceError,
    SourceTable,
    describe_error,
)

SOURCE_POOL = "llm_obs_source"
DEFAULT_MAX_QUERIES = 4


class SourceLoadError(ValueError):
    """The configuration lets more queries reach the source than LLM_OBS_SOURCE_MAX_QUERIES."""


def configured_pool_limit(dagster_home: Path) -> int | None:
    """The default pool limit the instance's `dagster.yaml` sets (`concurrency.pools.
    default_limit`, or the older `concurrency.default_op_concurrency_limit`); None when it
    sets none (or the file is absent or unreadable: Dagster reports that itself)."""
    path = Path(dagster_home) / "dagster.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    concurrency = config.get("concurrency") if isinstance(config, dict) else None
    if not isinstance(concurrency, dict):
        return None
    pools = concurrency.get("pools") if isinstance(concurrency.get("pools"), dict) else {}
    limit = pools.get("default_limit", concurrency.get("default_op_concurrency_limit"))
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def pool_limit_in_force(instance: dg.DagsterInstance) -> int | None:
    """The `llm_obs_source` limit the instance applies now: one set for the pool
    (`dagster instance concurrency set`, the UI), else its default; None when unlimited."""
    return instance.event_log_storage.get_concurrency_info(SOURCE_POOL).limit


def check_source_load(streams: int, pool_limit: int | None, max_queries: int, where: str) -> int:
    """The most queries the source can see at once; one-line `SourceLoadError` above the cap.

    A pool without a limit counts as one step at a time: what the CLI's own instance runs (one
    in-process step per command); a deployment sets the limit (deploy/dagster.yaml)."""
    queries = streams * (pool_limit or 1)
    if queries > max_queries:
        limit = f"limit {pool_limit}" if pool_limit else "(no limit: one step)"
        raise SourceLoadError(
            f"LLM_OBS_SOURCE_STREAMS={streams} x the {SOURCE_POOL} pool {limit} ({where}) = "
            f"{queries} concurrent source queries, more than LLM_OBS_SOURCE_MAX_QUERIES="
            f"{max_queries}: lower the streams or the pool limit, or raise the cap with the DBA"
        )
    return queries


def pool_is_full(instance: dg.DagsterInstance) -> bool:
    """Whether every slot of a limited `llm_obs_source` pool is taken: what runs outside a step
    (a sensor's query) waits for a later tick then, so it never adds a query beyond the cap."""
    info = instance.event_log_storage.get_concurrency_info(SOURCE_POOL)
    return info.limit is not None and len(info.claimed_slots) >= info.limit


# --------------------------------------------------------------------------- the source's health

DEFAULT_LATENCY_LIMIT_MS = 2_000
DEFAULT_HOLD_SECONDS = 1_800


class SourceSlowError(RuntimeError):
    """The source stayed slower than its latency limit for longer than a copy may wait."""


def probe_latency(source: SourceDatabase, described: SourceTable, limit_ms: int) -> float:
    """Milliseconds the source takes for the newest event time of the table (an index seek
    that takes no time on a healthy source). The probe never waits much past `limit_ms`:
    PostgreSQL cancels it (statement_timeout, bound as a parameter), SQL Server's driver
    abandons it (the connection's query timeout); a cancelled probe counts as its wait."""
    query = sa.select(sa.func.max(described.event_time))
    started = time.perf_counter()
    try:
        with source.engine.connect() as connection:
            if source.dialect_name == "postgresql":
                connection.execute(
                    sa.select(
                        sa.func.set_config(
                            "statement_timeout", sa.bindparam("timeout", str(limit_ms)), True
                        )
                    )
                )
            elif source.dialect_name == "mssql":
                connection.connection.driver_connection.timeout = max(1, -(-limit_ms // 1000))
            connection.execute(query)
            connection.rollback()
    except sa.exc.OperationalError:
        pass  # cancelled past the limit: its wait is the measure
    except sa.exc.SQLAlchemyError as error:
        raise SourceError(describe_error(source.sa_url, error)) from None
    return (time.perf_counter() - started) * 1000


def _pg_activity() -> sa.Select:
    activity = sa.table(
        "pg_stat_activity",
        sa.column("usename"),
        sa.column("pid"),
        sa.column("state"),
        sa.column("wait_event_type"),
        sa.column("query_start", sa.DateTime(timezone=True)),
    )
    c = activity.c
    return (
        sa.select(
            c.state,
            c.wait_event_type.label("waiting_on"),
            sa.func.count().label("sessions"),
            sa.func.max(sa.func.extract("epoch", sa.func.clock_timestamp() - c.query_start)).label(
                "longest_seconds"
            ),
        )
        .where(c.usename == sa.func.current_user(), c.pid != sa.func.pg_backend_pid())
        .group_by(c.state, c.wait_event_type)
    )


def _mssql_activity() -> sa.Select:
    requests = sa.table(
        "dm_exec_requests",
        sa.column("session_id"),
        sa.column("status"),
        sa.column("wait_type"),
        sa.column("total_elapsed_time"),
        sa.column("blocking_session_id"),
        schema="sys",
    )
    sessions = sa.table(
        "dm_exec_sessions", sa.column("session_id"), sa.column("login_name"), schema="sys"
    )
    r = requests.c
    return (
        sa.select(
            r.status.label("state"),
            r.wait_type.label("waiting_on"),
            sa.func.count().label("sessions"),
            (sa.func.max(r.total_elapsed_time) / 1000.0).label("longest_seconds"),
        )
        .select_from(requests.join(sessions, r.session_id == sessions.c.session_id))
        .where(
            sessions.c.login_name == sa.func.suser_sname(),
            r.session_id != sa.literal_column("@@SPID"),
        )
        .group_by(r.status, r.wait_type)
    )


def activity_query(dialect_name: str) -> sa.Select | None:
    """What the migration login's other sessions are doing on the source, grouped by state and
    wait: `pg_stat_activity` on PostgreSQL, `sys.dm_exec_requests` on SQL Server (needs VIEW
    SERVER STATE, or VIEW DATABASE STATE on Azure SQL); None where there is no such view."""
    return {"postgresql": _pg_activity, "mssql": _mssql_activity}.get(dialect_name, lambda: None)()


def source_activity(source: SourceDatabase) -> list[dict]:
    query = activity_query(source.dialect_name)
    if query is None:
        return []
    try:
        with source.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
    except sa.exc.SQLAlchemyError as error:
        raise SourceError(describe_error(source.sa_url, error)) from None
    return [
        {
            "state": row["state"],
            "waiting_on": row["waiting_on"],
            "sessions": int(row["sessions"]),
            "longest_seconds": None
            if row["longest_seconds"] is None
            else round(float(row["longest_seconds"]), 3),
        }
        for row in rows
    ]


def hold_while_slow(
    source: SourceDatabase,
    described: SourceTable,
    limit_ms: int,
    hold_seconds: float,
    log,
    what: str,
) -> dict:
    """Waits before `what` reads the source while the latency probe exceeds `limit_ms`,
    probing again every few seconds; `SourceSlowError` (one line) once it has waited
    `hold_seconds`. Returns the probe's last figure and how long it held back."""
    started = time.monotonic()
    every = max(0.5, min(10.0, hold_seconds / 10))
    while True:
        probe_ms = probe_latency(source, described, limit_ms)
        held = time.monotonic() - started
        if probe_ms <= limit_ms:
            return {"source_probe_ms": round(probe_ms, 1), "held_back_seconds": round(held, 1)}
        if held >= hold_seconds:
            raise SourceSlowError(
                f"{what} held back {held:,.0f} s and not read: the source's latency probe took "
                f"{probe_ms:,.0f} ms, over LLM_OBS_SOURCE_LATENCY_LIMIT_MS={limit_ms} for "
                f"longer than LLM_OBS_SOURCE_HOLD_SECONDS={hold_seconds:g}; run it again once "
                "the source recovers"
            )
        log.warning(
            f"{what} held back: the source's latency probe took {probe_ms:,.0f} ms, over "
            f"{limit_ms} ms; probing again in {every:g} s"
        )
        time.sleep(every)
