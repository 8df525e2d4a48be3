"""Configuration from the environment (README's Configuration table), with the embedded defaults.

A variable that is set is handed to Dagster as an `EnvVar`, so its value (a URL with a password,
a storage key) is read at run time and never shown in the UI or stored in run configuration.
Unset variables fall back to files under `LLM_OBS_HOME`; nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from llm_observatory.resources.source import checked_reader
from llm_observatory.resources.source_load import (
    DEFAULT_HOLD_SECONDS,
    DEFAULT_LATENCY_LIMIT_MS,
    DEFAULT_MAX_QUERIES,
    check_source_load,
    configured_pool_limit,
)
from llm_observatory.resources.urls import check_lake_url, check_url

DEMO_SOURCE_FILE = "demo_source.sqlite"
CONTROL_FILE = "control.sqlite"


def home() -> Path:
    return Path(os.environ.get("LLM_OBS_HOME") or ".llm_observatory").expanduser().resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or home() / "dagster").expanduser().resolve()


def demo_source_url() -> str:
    return f"sqlite:///{home() / DEMO_SOURCE_FILE}"


def _from_env(name: str, default: str | None):
    return dg.EnvVar(name) if os.environ.get(name) else default


def _checked_url(name: str, default: str):
    """A database URL variable, refused at start-up with one line naming it (never its value)
    when it cannot be right (see `resources/urls.py`)."""
    if os.environ.get(name):
        check_url(os.environ[name], name)
    return _from_env(name, default)


def source_url():
    return _checked_url("LLM_OBS_SOURCE_URL", demo_source_url())


def source_isolation_level():
    """SNAPSHOT, READ COMMITTED, READ UNCOMMITTED (NOLOCK)...; unset: the database's default."""
    return _from_env("LLM_OBS_SOURCE_ISOLATION", None)


def source_reader() -> str:
    """How partitions and changes are read: auto (ADBC for PostgreSQL, ODBC for SQL Server,
    SQLAlchemy elsewhere), or adbc, odbc, sqlalchemy; refused at start-up in one line."""
    return checked_reader(os.environ.get("LLM_OBS_SOURCE_READER"))


def _whole_number(name: str, default: int) -> int:
    text = (os.environ.get(name) or str(default)).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}={text!r} must be a whole number >= 1")
    return int(text)


def source_max_queries() -> int:
    """The most queries the migration may run against the source at once (agreed with the
    DBA): streams x the `llm_obs_source` pool limit must stay within it."""
    return _whole_number("LLM_OBS_SOURCE_MAX_QUERIES", DEFAULT_MAX_QUERIES)


def source_latency_limit_ms() -> int:
    """A copy waits before reading while the source's latency probe (the newest event time, an
    index seek) takes longer than this many milliseconds."""
    return _whole_number("LLM_OBS_SOURCE_LATENCY_LIMIT_MS", DEFAULT_LATENCY_LIMIT_MS)


def source_hold_seconds() -> int:
    """How long a copy waits for the source to recover before it fails, unread."""
    return _whole_number("LLM_OBS_SOURCE_HOLD_SECONDS", DEFAULT_HOLD_SECONDS)


def source_streams():
    """Concurrent queries per partition read (hourly slices in parallel); 1 by default.

    Refused at start-up, in one line, when streams x the pool limit of the instance's
    dagster.yaml exceeds LLM_OBS_SOURCE_MAX_QUERIES (each copy checks the limit in force too)."""
    streams = _whole_number("LLM_OBS_SOURCE_STREAMS", 1)
    instance_yaml = dagster_home() / "dagster.yaml"
    check_source_load(
        streams, configured_pool_limit(dagster_home()), source_max_queries(), str(instance_yaml)
    )
    return streams


def lake_url():
    """The lake root, refused at start-up with one line naming the variable (never its value)
    when it holds a query string (a pasted SAS URL) or is no lake URL (see `resources/urls.py`)."""
    if os.environ.get("LLM_OBS_LAKE_URL"):
        check_lake_url(os.environ["LLM_OBS_LAKE_URL"], "LLM_OBS_LAKE_URL")
    return _from_env("LLM_OBS_LAKE_URL", str(home() / "lake"))


# Vacuum never deletes files replaced less than this long ago: a reader or writer that started
# before the replacement may still open them (Delta's own safety minimum).
MINIMUM_VACUUM_RETENTION_DAYS = 7


def lake_retention_days() -> int:
    """How long earlier lake versions stay restorable: the tables' log and replaced files are
    kept this long, vacuum deletes nothing younger, rollback refuses older targets."""
    text = os.environ.get("LLM_OBS_LAKE_RETENTION_DAYS", "30").strip()
    try:
        days = int(text)
    except ValueError:
        raise ValueError(
            f"LLM_OBS_LAKE_RETENTION_DAYS={text!r} is not a whole number of days"
        ) from None
    if days < MINIMUM_VACUUM_RETENTION_DAYS:
        raise ValueError(
            f"LLM_OBS_LAKE_RETENTION_DAYS={days}: must be at least "
            f"{MINIMUM_VACUUM_RETENTION_DAYS} days (vacuum must never delete files a running "
            "reader or writer may still open)"
        )
    return days


def lease_seconds() -> int:
    """How long a lease outlives its holder's last heartbeat (another host cannot see that the
    holder died, so it waits this long)."""
    text = os.environ.get("LLM_OBS_LEASE_SECONDS", "300").strip()
    if not text.isdigit() or int(text) < 10:
        raise ValueError(f"LLM_OBS_LEASE_SECONDS={text!r} must be a whole number of seconds >= 10")
    return int(text)


DEFAULT_ROTATION_DAYS = 30


def rotation_days() -> int:
    """Every day of the history is re-proven against the source once per this many daily
    cycles (the sync's rotation); the cutover report says NO-GO for a day with data not
    reconciled within that many days."""
    text = (os.environ.get("LLM_OBS_ROTATION_DAYS") or str(DEFAULT_ROTATION_DAYS)).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"LLM_OBS_ROTATION_DAYS={text!r} must be a whole number of days >= 1")
    return int(text)


def control_url():
    return _checked_url("LLM_OBS_CONTROL_URL", f"sqlite:///{home() / CONTROL_FILE}")


def azure_connection_string():
    return _from_env("AZURE_STORAGE_CONNECTION_STRING", None)


def azure_account_name():
    return _from_env("AZURE_STORAGE_ACCOUNT_NAME", None)


def azure_account_key():
    return _from_env("AZURE_STORAGE_ACCOUNT_KEY", None)


def azure_sas_token():
    return _from_env("AZURE_STORAGE_SAS_TOKEN", None)


def resolved(value) -> str | None:
    """The value itself, or what an `EnvVar` stands for, for code running outside a Dagster run."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value
