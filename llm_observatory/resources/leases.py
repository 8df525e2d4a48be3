"""Leases in the control database: one holder at a time for a table's sync cycle and for each
day of a table being written, across processes, hosts and Dagster instances.

The control database is the one place every writer shares (the CLI, the daemon's runs and a
second Dagster instance all point at it), so a lease is a row of `migration_lease` keyed by
what it guards. Taking one is a single INSERT that the primary key makes atomic; whoever loses
the race is refused at once with the holder's name. The holder renews it on a heartbeat; a
holder that dies stops renewing and its lease may be taken over once it expired, or at once
when the holder was a process of this host that no longer exists (a killed terminal command
need not block the next one for minutes). A cycle or write whose lease was taken over notices
before it commits and fails instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psutil
import sqlalchemy as sa

from llm_observatory.resources.control import ControlDatabase, as_utc, migration_lease

logger = logging.getLogger(__name__)

# A holder renews its leases every `ControlDatabase.lease_seconds` / HEARTBEATS_PER_LEASE.
HEARTBEATS_PER_LEASE = 5


# The run tag through which a command hands the token of the leases it took to its runs' steps.
LEASE_TOKEN_TAG = "llm_observatory/lease_token"


class LeaseHeldError(RuntimeError):
    """Another live holder has the lease: nothing was done."""


class LeaseLostError(RuntimeError):
    """This holder's lease expired and was taken over: its work must not be committed."""


def sync_resource(table_name: str) -> str:
    """The lease of a table's incremental cycle: one open cycle per table."""
    return f"sync/{table_name}"


def day_resource(table_name: str, day: dt.date | str) -> str:
    """The lease of one day of a table in every layer: one writer per partition."""
    text = day if isinstance(day, str) else day.isoformat()
    return f"day/{table_name}/{text}"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as recorded in its row."""

    resource: str
    owner: str
    host: str
    pid: int
    process_started: float
    acquired_at: dt.datetime
    expires_at: dt.datetime

    def describe(self) -> str:
        return (
            f"{self.owner} (host {self.host}, pid {self.pid}, since "
            f"{self.acquired_at.isoformat(timespec='seconds')}, lease until "
            f"{self.expires_at.isoformat(timespec='seconds')})"
        )

    def is_live(self, now: dt.datetime) -> bool:
        """Whether the lease still counts: unexpired, and its holder not a dead process of
        this host."""
        return self.expires_at > now and not self.process_gone()

    def process_gone(self) -> bool:
        """True when the holder was a process of this host that no longer runs."""
        if self.host != socket.gethostname():
            return False
        try:
            started = psutil.Process(self.pid).create_time()
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False
        return abs(started - self.process_started) > 1.0


def _this_process_started() -> float:
    return psutil.Process(os.getpid()).create_time()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _holder(row) -> Holder:
    return Holder(
        resource=row["resource"],
        owner=row["owner"],
        host=row["host"],
        pid=int(row["pid"]),
        process_started=float(row["process_started"]),
        acquired_at=as_utc(row["acquired_at"]),
        expires_at=as_utc(row["expires_at"]),
    )


def current_holder(control: ControlDatabase, resource: str) -> Holder | None:
    """The lease's row, whether live or expired; None when nobody holds it."""
    control.ensure_schema()
    query = sa.select(migration_lease).where(
        migration_lease.c.resource == sa.bindparam("resource", resource)
    )
    with control.engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return _holder(row) if row else None


class Leases:
    """The leases one run holds, renewed together by one heartbeat thread, released together.

    Use as a context manager: `take()` adds leases (all or none), leaving the block releases
    them. `ensure_held()` raises `LeaseLostError` if any was taken over meanwhile.
    """

    def __init__(
        self,
        control: ControlDatabase,
        owner: str,
        seconds: int | None = None,
        token: str | None = None,
    ) -> None:
        self.control = control
        self.owner = owner[:250]
        self.seconds = max(int(seconds or control.lease_seconds), 1)
        # Rows this object inserts carry the token; another `Leases` given the same token
        # (a run's steps, under the command that leased their days) shares them.
        self.token = token or uuid.uuid4().hex
        self.held: list[str] = []
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *_exc) -> None:
        self.release()

    # ------------------------------------------------------------------------------ taking

    def take(self, resources: Iterable[str]) -> list[Holder]:
        """Takes every lease not held yet, or none; returns the dead holders taken over.

        A lease already held under this object's token (a command that leased every day of a
        backfill before starting its runs, whose steps then ask again) counts as taken.
        """
        wanted = [r for r in dict.fromkeys(resources) if r not in self.held]
        taken: list[str] = []
        replaced: list[Holder] = []
        try:
            for resource in sorted(wanted):  # one order everywhere: no two runs deadlock
                inserted, previous = self._take_one(resource)
                if inserted:
                    taken.append(resource)
                if previous is not None:
                    replaced.append(previous)
        except BaseException:
            self._delete(taken)
            raise
        with self._lock:
            self.held.extend(taken)
        if taken:
            self._start_heartbeat()
        return replaced

    def _take_one(self, resource: str) -> tuple[bool, Holder | None]:
        """(whether a row was inserted, the dead holder it replaced)."""
        self.control.ensure_schema()
        now = _now()
        with self.control.engine.begin() as connection:
            row = (
                connection.execute(
                    sa.select(migration_lease).where(
                        migration_lease.c.resource == sa.bindparam("resource", resource)
                    )
                )
                .mappings()
                .first()
            )
            previous = _holder(row) if row else None
            if previous is not None:
                if row["token"] == self.token and previous.expires_at > now:
                    return False, None
                if previous.is_live(now):
                    raise LeaseHeldError(f"{resource} is held by {previous.describe()}")
                # Taken over only if it is still that same dead holder's row.
                connection.execute(
                    sa.delete(migration_lease).where(
                        migration_lease.c.resource == sa.bindparam("resource", resource),
                        migration_lease.c.token == sa.bindparam("token", row["token"]),
                    )
                )
            try:
                with connection.begin_nested():
                    connection.execute(
                        sa.insert(migration_lease).values(
                            resource=resource,
                            token=self.token,
                            owner=self.owner,
                            host=socket.gethostname(),
                            pid=os.getpid(),
                            process_started=_this_process_started(),
                            acquired_at=now,
                            heartbeat_at=now,
                            expires_at=now + dt.timedelta(seconds=self.seconds),
                        )
                    )
            except sa.exc.IntegrityError:
                winner = current_holder(self.control, resource)
                who = winner.describe() if winner else "another run"
                raise LeaseHeldError(f"{resource} was just taken by {who}") from None
        if previous is not None:
            logger.warning("took over %s from a dead holder: %s", resource, previous.describe())
        return True, previous

    # ---------------------------------------------------------------------------- keeping

    def renew(self) -> None:
        """Pushes every held lease's expiry forward (one statement, however many days a
        backfill leased); notes any that was taken over."""
        with self._lock:
            held = list(self.held)
        if not held:
            return
        now = _now()
        statement = (
            sa.update(migration_lease)
            .where(migration_lease.c.token == sa.bindparam("b_token", self.token))
            .values(heartbeat_at=now, expires_at=now + dt.timedelta(seconds=self.seconds))
        )
        still_ours = sa.select(migration_lease.c.resource).where(
            migration_lease.c.token == sa.bindparam("b_token", self.token)
        )
        with self.control.engine.begin() as connection:
            updated = connection.execute(statement).rowcount
            if updated >= len(held):
                return
            ours = set(connection.execute(still_ours).scalars())
        with self._lock:
            for resource in held:
                if resource not in ours and resource not in self.lost:
                    self.lost.append(resource)

    def ensure_held(self) -> None:
        """Raises `LeaseLostError` when a lease of this run was taken over by another."""
        self.renew()
        if self.lost:
            raise LeaseLostError(
                f"lease(s) {', '.join(self.lost)} of {self.owner} expired and were taken over "
                "by another run: nothing more is committed"
            )

    def _start_heartbeat(self) -> None:
        if self._thread is not None:
            return
        interval = self.seconds / HEARTBEATS_PER_LEASE

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except Exception as error:  # noqa: BLE001 - retried on the next beat
                    logger.warning("could not renew leases of %s: %s", self.owner, error)

        self._thread = threading.Thread(target=beat, name="llm-obs-lease", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------------- releasing

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            held, self.held = self.held, []
        try:
            self._delete(held)
        except Exception as error:  # noqa: BLE001 - an unreleased lease expires by itself
            logger.warning("could not release leases %s: %s (they expire)", held, error)
        self._stop = threading.Event()

    def _delete(self, resources: list[str]) -> None:
        if not resources:
            return
        with self.control.engine.begin() as connection:
            for resource in resources:
                connection.execute(
                    sa.delete(migration_lease).where(
                        migration_lease.c.resource == sa.bindparam("resource", resource),
                        migration_lease.c.token == sa.bindparam("token", self.token),
                    )
                )


@contextlib.contextmanager
def holding(
    control: ControlDatabase, resources: Iterable[str], owner: str, seconds: int | None = None
) -> Iterator[Leases]:
    """`with holding(control, [day_resource(...)], owner) as leases:` one block, its leases."""
    leases = Leases(control, owner, seconds)
    with leases:
        leases.take(resources)
        yield leases
