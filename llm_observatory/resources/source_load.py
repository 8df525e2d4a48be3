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

from pathlib import Path

import dagster as dg
import yaml

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
