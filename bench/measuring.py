"""What every part of the bench shares: the table it measures, its units, a process's own
figures (peak RSS from VmHWM, CPU seconds, an RSS sampler), a day's bounds, the URL forms each
driver takes, the progress line and the best of a set of rounds.

Every bench module imports only the standard library at module level and the project's
libraries inside the functions that use them: a worker loads all of them, and its peak RSS
should be its interpreter and its own work, nothing another measurement needs.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


TABLE = "llm_interactions"
EVENT_TIME = "timestamp"


AIM_RSS_MIB = 512


MIB = 1024 * 1024
MB = 1_000_000


RSS_SAMPLE_S = 0.1


def status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmHWM: this process image's peak RSS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples this process's RSS in a thread, so a peak can be placed in time (or a step)."""

    def __init__(self, every: float = RSS_SAMPLE_S) -> None:
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), status_kib("VmRSS") * 1024))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        return max(inside, default=0)


def process_figures(wall: float, cpu_before: os.times_result, rss_before: int) -> dict:
    import resource

    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "cpu_cores_used": cpu / wall if wall > 0 else 0.0,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": status_kib("VmHWM") * 1024,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def day_bounds(day: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def libpq_url(sqlalchemy_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq (psycopg, ADBC) takes it."""
    import sqlalchemy as sa

    return (
        sa.make_url(sqlalchemy_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def with_database(sqlalchemy_url: str, database: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(sqlalchemy_url).set(database=database).render_as_string(hide_password=False)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sa_url_without_password(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["seconds"])
