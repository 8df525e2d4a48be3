"""The machine a report was measured on, and what else it was doing meanwhile: a figure taken
beside a test session says so.
"""

from __future__ import annotations

import os
import platform
import time


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in (
        "pyarrow",
        "deltalake",
        "dagster",
        "psycopg",
        "adbc-driver-postgresql",
        "polars",
        "sqlalchemy",
    ):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001 - informative only
        memory = None
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def other_load(window_s: float = 1.0) -> dict:
    """What else the machine is doing, measured before a size is timed: the 1-minute load
    average and the CPU the processes outside this bench's own tree used over `window_s`
    (the busiest named), so a figure taken beside a test session says so."""
    import psutil

    own = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    before = {}
    for process in psutil.process_iter(["pid", "name"]):
        if process.pid in own:
            continue
        try:
            times = process.cpu_times()
            before[process.pid] = (process.info["name"], times.user + times.system)
        except psutil.Error:
            continue
    time.sleep(window_s)
    busy: dict[str, float] = {}
    for pid, (name, cpu) in before.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used = times.user + times.system - cpu
        if used > 0:
            busy[name] = busy.get(name, 0.0) + used / window_s
    top = sorted(busy.items(), key=lambda item: -item[1])[:3]
    return {
        "load_average_1m": os.getloadavg()[0],
        "other_cores_busy": sum(busy.values()),
        "busiest": [{"name": name, "cores": round(cores, 2)} for name, cores in top],
    }


def other_load_line(load: dict) -> str:
    busiest = ", ".join(f"{item['name']} {item['cores']:.2f}" for item in load["busiest"])
    return (
        f"other load on the machine: load average {load['load_average_1m']:.2f} (1 min), "
        f"other processes {load['other_cores_busy']:.2f} cores busy"
        + (f" ({busiest})" if busiest else "")
    )
