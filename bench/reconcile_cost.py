"""Reconciliation of the day against a full run's lake (issue 4): its time beside the bronze
extraction's, whether it matches, where its time goes, and the bytes that crossed from the
source for it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

from measuring import best, process_figures, say, status_kib

AIM_RECONCILE_SHARE = 0.5


# Reconciliation: the worker measures the traffic with the source two ways. /proc/net/dev's
# `lo` line is what the issue asks for; on loopback every byte is counted once as transmitted
# and once as received, so the traffic is the growth of one counter (rx == tx), and it holds
# everyone's loopback traffic in the window. TCP_INFO of the worker's own connections to the
# source counts only their payload, by direction, whatever else runs on the machine.
TCP_INFO_BYTES_ACKED = 120  # struct tcp_info: __u64 tcpi_bytes_acked (sent and acknowledged)
TCP_INFO_BYTES_RECEIVED = 128  # __u64 tcpi_bytes_received
SHOWN_DIFFERENCES = 20


def interface_bytes(name: str = "lo") -> dict[str, int] | None:
    """Received and transmitted byte and packet counters of one interface, from /proc/net/dev."""
    try:
        with open("/proc/net/dev") as dev:
            for line in dev:
                interface, _, counters = line.partition(":")
                if interface.strip() == name and counters:
                    fields = [int(part) for part in counters.split()]
                    return {
                        "rx_bytes": fields[0],
                        "rx_packets": fields[1],
                        "tx_bytes": fields[8],
                        "tx_packets": fields[9],
                    }
    except (OSError, ValueError, IndexError):
        pass
    return None


def tcp_payload_bytes(fd: int) -> tuple[int, int] | None:
    """(received, sent and acknowledged) payload bytes of a TCP socket, from TCP_INFO."""
    import socket
    import struct

    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                return None
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < TCP_INFO_BYTES_RECEIVED + 8:
        return None
    (sent,) = struct.unpack_from("=Q", info, TCP_INFO_BYTES_ACKED)
    (received,) = struct.unpack_from("=Q", info, TCP_INFO_BYTES_RECEIVED)
    return received, sent


class SourceSockets:
    """Payload bytes of every pooled connection SQLAlchemy opens in this process (to the source)."""

    def __init__(self) -> None:
        self.open: dict[int, object] = {}
        self.closed = [0, 0]
        self.connections = 0

    @staticmethod
    def _fd(dbapi_connection) -> int | None:
        for get in (lambda c: c.fileno(), lambda c: c.pgconn.socket):
            try:
                return int(get(dbapi_connection))
            except Exception:  # noqa: BLE001, S112 - drivers differ; no fd means not counted
                continue
        return None

    def install(self) -> None:
        import sqlalchemy as sa

        sa.event.listen(sa.pool.Pool, "connect", self._on_connect)
        sa.event.listen(sa.pool.Pool, "close", self._on_close)
        sa.event.listen(sa.pool.Pool, "close_detached", self._on_close)

    def _on_connect(self, dbapi_connection, record=None) -> None:
        self.connections += 1
        self.open[id(dbapi_connection)] = dbapi_connection

    def _on_close(self, dbapi_connection, record=None) -> None:
        if self.open.pop(id(dbapi_connection), None) is not None:
            counted = self._count(dbapi_connection)
            if counted:
                self.closed[0] += counted[0]
                self.closed[1] += counted[1]

    def _count(self, dbapi_connection) -> tuple[int, int] | None:
        fd = self._fd(dbapi_connection)
        return None if fd is None else tcp_payload_bytes(fd)

    def totals(self) -> dict[str, int | None]:
        received, sent = self.closed
        measured = True
        for connection in self.open.values():
            counted = self._count(connection)
            if counted is None:
                measured = False
                continue
            received, sent = received + counted[0], sent + counted[1]
        if self.connections == 0:
            measured = False
        return {
            "connections": self.connections,
            "received_bytes": received if measured else None,
            "sent_bytes": sent if measured else None,
        }


class PhaseTimes:
    """Wall seconds and calls of named functions, by wrapping them in this process only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, attribute: str, phase: str) -> None:
        import functools

        original = getattr(owner, attribute, None)
        if original is None:
            return  # renamed upstream: the phase is simply not shown
        self.seconds.setdefault(phase, 0.0)
        self.calls.setdefault(phase, 0)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1

        setattr(owner, attribute, timed)


def loopback_host(sqlalchemy_url: str) -> bool:
    """Whether the source is reached over TCP on this machine's loopback interface."""
    import ipaddress

    import sqlalchemy as sa

    host = sa.make_url(sqlalchemy_url).host
    if not host or host.startswith("/"):
        return False  # a Unix socket: nothing crosses `lo`
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def worker_reconcile(args: argparse.Namespace) -> dict:
    """`reconcile_day` of llm_interactions for the day against a lake silver was written to."""
    import warnings

    warnings.filterwarnings("ignore")
    from llm_observatory import reconcile
    from llm_observatory.resources.lake import LakeResource
    from llm_observatory.resources.source import SourceDatabase
    from llm_observatory.tables import LLM_INTERACTIONS

    source_url = args.source_url or os.environ["BENCH_SOURCE_URL"]
    source = SourceDatabase(url=source_url)
    lake = LakeResource(url=args.lake)
    day = dt.date.fromisoformat(args.day)

    # Where the time goes, without a profiler's overhead: the few calls reconcile_day makes.
    phases = PhaseTimes()
    phases.wrap(SourceDatabase, "describe_table", "source: reflect the table")
    phases.wrap(reconcile.SourceSide, "_run", "source: queries (fingerprints, bisection; overlaps)")
    # The lake side reads and hashes while the source query runs in a thread: they overlap.
    phases.wrap(
        reconcile, "lake_hourly_fingerprints", "lake: read + hash silver and quarantine (overlaps)"
    )
    sockets = SourceSockets()
    sockets.install()

    rss_before = status_kib("VmRSS") * 1024
    cpu_before = os.times()
    lo_before = interface_bytes("lo")
    started = time.perf_counter()
    result = reconcile.reconcile_day(LLM_INTERACTIONS, source, lake, day)
    wall = time.perf_counter() - started
    lo_after = interface_bytes("lo")
    figures = process_figures(wall, cpu_before, rss_before)
    socket_bytes = sockets.totals()
    source.engine.dispose()

    loopback = None
    if lo_before and lo_after:
        loopback = {name: lo_after[name] - lo_before[name] for name in lo_before}
        loopback["rx_plus_tx_bytes"] = loopback["rx_bytes"] + loopback["tx_bytes"]
    accounted = sum(phases.seconds.values())
    return {
        "path": "reconcile",
        "rows": result.source_rows,
        "source_rows": result.source_rows,
        "lake_rows": result.lake_rows,
        "matches": result.matches,
        "source_queries": result.source_queries,
        "hours_compared": result.hours_compared,
        "hours_differing": result.hours_differing,
        "difference_count": len(result.differences),
        "differences": [d.describe() for d in result.differences[:SHOWN_DIFFERENCES]],
        "source_on_loopback": loopback_host(source_url),
        "loopback": loopback,
        # The traffic on `lo` in the window: rx == tx there, each byte is counted in both.
        "loopback_bytes": None if loopback is None else loopback["rx_bytes"],
        "source_socket_bytes": socket_bytes,
        "phases": {
            name: {"seconds": seconds, "calls": phases.calls[name]}
            for name, seconds in phases.seconds.items()
        },
        "phases_unaccounted_seconds": wall - accounted,
        **figures,
    }


def say_differences(figures: dict) -> None:
    say(
        f"reconciliation found {figures['difference_count']:,} difference(s) in hour(s) "
        f"{figures['hours_differing']} (source {figures['source_rows']:,} rows, lake "
        f"{figures['lake_rows']:,}); the first:"
    )
    for description in figures["differences"]:
        say(f"  {description}")


def reconciliation_summary(
    reconciles: list, bronze: dict, copy_best: dict, floor: dict, source: dict
) -> dict:
    """Reconciliation beside the extraction of the same rows: time, and bytes from the source."""
    run = best(reconciles)
    sockets = run.get("source_socket_bytes") or {}
    return {
        "seconds": run["seconds"],
        "bronze_seconds": bronze["seconds"],
        "share_of_bronze_seconds": run["seconds"] / bronze["seconds"],
        "share_of_bronze_copy_loop_seconds": (
            run["seconds"] / copy_best["copy_seconds"] if copy_best.get("copy_seconds") else None
        ),
        "matches": all(item["matches"] for item in reconciles),
        "source_queries": run["source_queries"],
        "source_on_loopback": run["source_on_loopback"],
        # Traffic on `lo` in the call's window (both directions; rx == tx on loopback).
        "loopback_bytes": run["loopback_bytes"],
        "loopback_bytes_by_round": [item["loopback_bytes"] for item in reconciles],
        # The worker's own connections only: payload bytes by direction.
        "socket_bytes_from_source": sockets.get("received_bytes"),
        "socket_bytes_to_source": sockets.get("sent_bytes"),
        "source_connections": sockets.get("connections"),
        "pg_table_size": source["pg_table_size"],
        "pg_total_relation_size": source["pg_total_relation_size"],
        # What extraction moves for the same rows: the floor's binary COPY stream.
        "extraction_copy_bytes": floor["copy_bytes"],
        "phases": run["phases"],
        "phases_unaccounted_seconds": run["phases_unaccounted_seconds"],
        "assumption": (
            "loopback_bytes is the growth of /proc/net/dev's lo counters across the call, so "
            "it holds any other loopback traffic of the machine in that window; the bench runs "
            "one thing at a time, so it is this worker's traffic with PostgreSQL unless "
            "something else runs. socket_bytes_* count only the worker's own connections "
            "(TCP_INFO payload bytes)."
        ),
    }


def _kb(value: int | None) -> str:
    return "not measured" if value is None else f"{value / 1000:,.1f} KB"


def reconciliation_lines(reconciliation: dict) -> list[str]:
    table = reconciliation["pg_table_size"]
    lo = reconciliation["loopback_bytes"]
    received = reconciliation["socket_bytes_from_source"]
    lines = [
        f"reconcile bytes from source: {_kb(lo)} on lo (both directions; growth of "
        "/proc/net/dev lo rx == tx across the call, so any other loopback traffic in that "
        "window counts too: the bench assumes it runs alone"
        + (
            ""
            if reconciliation["source_on_loopback"]
            else "; the source is NOT on loopback here, so this is not its traffic"
        )
        + f"); own connections: {_kb(received)} from source, "
        f"{_kb(reconciliation['socket_bytes_to_source'])} to it "
        f"({reconciliation['source_connections']} connection(s), "
        f"{reconciliation['source_queries']} fingerprint queries) vs table {table / 1000:,.0f} KB "
        f"(pg_table_size"
        + (f"; {received / table:.4%} of it" if received is not None and table else "")
        + f") and extraction's binary COPY "
        f"{reconciliation['extraction_copy_bytes'] / 1000:,.0f} KB",
    ]
    phases = reconciliation.get("phases") or {}
    if phases:
        parts = [
            f"{name} {phase['seconds']:,.2f} s ({phase['calls']}x)"
            for name, phase in phases.items()
        ]
        parts.append(f"other {reconciliation['phases_unaccounted_seconds']:,.2f} s")
        lines.append("reconcile time: " + "; ".join(parts))
    return lines
