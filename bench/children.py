"""The parent's side of a worker: each measured thing runs in its own interpreter (`run.py
--worker KIND`), so its peak RSS is its own; the CPU the local PostgreSQL spent meanwhile is
counted beside it, and a worker can run under py-spy, whose stacks are summed up by phase.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from measuring import REPO_ROOT, libpq_url

# The entry point: a worker is this folder's run.py with --worker.
RUN_PY = Path(__file__).resolve().with_name("run.py")


WORKER_TIMEOUT_S = 3600


PROFILE_RATE_HZ = 100
# Samples of threads only waiting: py-spy drops idle threads, but with native frames a thread
# blocked on a lock (a full read-ahead queue, the RSS sampler's sleep) still shows, inside
# libc, under one of these Python waits.
PROFILE_IDLE_FRAMES = ("epoll_wait", "futex_wait", "pthread_cond_wait", "poll (")
PROFILE_WAITS = (
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "Queue.get (queue.py",
    "Queue.put (queue.py",
    "RssSampler._run",
)
# Phases by the innermost frame that names one: native symbols of the libraries doing the
# work, or our own functions around them.
PROFILE_PHASES = (
    ("SHA-256 of the files", ("sha256", "SHA256", "_HashingSink.write", "read_back_sha256")),
    ("zstd compression", ("ZSTD_compress", "ZSTD_c")),
    ("zstd decompression", ("ZSTD_decompress", "ZSTD_d", "HUF_decompress")),
    ("Parquet encoding", ("parquet::", "write_table", "ParquetWriter")),
    (
        "source read (libpq, COPY decoding)",
        ("libpq", "pqGet", "PQgetCopyData", "adbc", "Adbc", "PostgresCopy", "read_ahead", "recv"),
    ),
    (
        "Arrow compute (casts, splits, stats)",
        ("arrow::compute", "_column_stats", "_MergedStats", "_split_by_partition"),
    ),
    (
        "memory (page faults, copies)",
        ("memcpy", "memmove", "page_fault", "clear_page", "__memset", "mmap", "munmap"),
    ),
    ("Python garbage collection", ("gc_collect",)),
    (
        "process start-up (imports, before the clock starts)",
        ("_compile_bytecode", "_call_with_frames_removed", "<module> ("),
    ),
    ("Dagster and Python bookkeeping", ("dagster", "_bootstrap", "logging")),
)


class ServerCpu:
    """CPU seconds spent by a local PostgreSQL (postmaster, its live and its reaped children)."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.pid = postmaster_pid

    def total(self) -> float | None:
        if self.pid is None:
            return None
        try:
            import psutil

            postmaster = psutil.Process(self.pid)
            times = postmaster.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in postmaster.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
                except psutil.Error:
                    pass
            return total
        except Exception:  # noqa: BLE001 - best effort only
            return None


def run_child(
    kind: str,
    url: str,
    day: str,
    workdir: Path,
    label: str,
    server_cpu: ServerCpu,
    lake: Path | None = None,
    keep_lake: bool = False,
    streams: int | None = None,
    profile: Path | None = None,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """One worker in its own interpreter; its figures, or SystemExit with its log's tail.

    `profile`: sampled by py-spy (Python and native frames, every thread) into that file, in
    its raw collapsed-stack format, which `profile_summary` reads.

    Materializing workers write into `lake-<label>`, removed afterwards unless `keep_lake`
    (or BENCH_KEEP_LAKES); `lake` names another run's lake instead (reconcile reads one).
    `extra_args` go on the worker's command line, `extra_env` into its environment.
    """
    result_file = workdir / f"{label}.json"
    log_file = workdir / f"{label}.log"
    command = [
        sys.executable,
        str(RUN_PY),
        "--worker",
        kind,
        "--day",
        day,
        "--result",
        str(result_file),
        *(extra_args or []),
    ]
    # Connection URLs go through the environment: a password stays out of `ps`.
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    if kind == "floor":
        env["BENCH_DSN"] = libpq_url(url)
    else:
        env["BENCH_SOURCE_URL"] = url
        command += ["--lake", str(lake or workdir / f"lake-{label}")]
    env.pop("DAGSTER_HOME", None)
    env.update(extra_env or {})
    if streams:
        env["BENCH_STREAMS"] = str(streams)
    if profile is not None:
        command = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--rate",
            str(PROFILE_RATE_HZ),
            "--native",
            "--format",
            "raw",
            "--output",
            str(profile),
            "--",
            *command,
        ]
    cpu_before = server_cpu.total()
    load_before = os.getloadavg()[0]
    with open(log_file, "wb") as log:
        completed = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    time.sleep(0.2)  # let the postmaster reap the backend, so its CPU is counted
    cpu_after = server_cpu.total()
    if completed.returncode != 0 or not result_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"worker {label} failed (exit {completed.returncode}); log tail:\n{tail}")
    figures = json.loads(result_file.read_text())
    # Other work on the machine shows here (1-minute load average, before and after).
    figures["load_average"] = [load_before, os.getloadavg()[0]]
    if cpu_before is not None and cpu_after is not None:
        figures["server_cpu_seconds"] = cpu_after - cpu_before
    if (
        lake is None
        and kind != "floor"
        and not keep_lake
        and not os.environ.get("BENCH_KEEP_LAKES")
    ):
        shutil.rmtree(workdir / f"lake-{label}", ignore_errors=True)
    return figures


def profile_summary(path: Path, top: int = 12) -> dict:
    """Where the worker's busy samples went, from py-spy's collapsed stacks: by the innermost
    frame (self time), and by phase: the frames of ours or of the libraries that own the work
    (Parquet encoding, the source read, hashing, Dagster's own bookkeeping)."""
    by_leaf: dict[str, int] = {}
    by_phase: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(idle in leaf for idle in PROFILE_IDLE_FRAMES):
            continue
        python_frames = [frame for frame in frames if ".py:" in frame]
        if python_frames and any(wait in python_frames[-1] for wait in PROFILE_WAITS):
            continue  # the innermost Python frame is a wait: the native frames below idle
        total += count
        short = leaf.split(" (")[0] + (
            " (" + leaf.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in leaf
            else ""
        )
        by_leaf[short] = by_leaf.get(short, 0) + count
        phase = _profile_phase(frames)
        by_phase[phase] = by_phase.get(phase, 0) + count

    def shares(counts: dict[str, int]) -> list[list]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [[name, count / total if total else 0.0] for name, count in ranked]

    return {
        "busy_samples": total,
        "rate_hz": PROFILE_RATE_HZ,
        "busy_seconds": total / PROFILE_RATE_HZ,
        "by_phase": shares(by_phase),
        "by_leaf": shares(by_leaf),
        "file": str(path),
    }


def _profile_phase(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in PROFILE_PHASES:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def profile_lines(label: str, summary: dict) -> list[str]:
    lines = [
        f"where {label} spends its busy CPU (py-spy, {summary['busy_seconds']:.1f} "
        f"busy thread-seconds, every thread):"
    ]
    lines.append(
        "  by phase: " + "; ".join(f"{name} {share:.0%}" for name, share in summary["by_phase"])
    )
    lines.append(
        "  hottest frames: "
        + "; ".join(f"{name} {share:.0%}" for name, share in summary["by_leaf"][:8])
    )
    return lines
