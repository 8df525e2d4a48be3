"""Bytes downloaded per byte stored, on Azurite: the demo source's days backfilled, then the
cutover report, each run as users run them (`llm-observatory backfill` / `report`).

Azurite's access log gives each GET's response bytes (HEAD lines carry the size of the blob
but no body is sent, and are not counted); the bytes stored are the current data files of
every lake table. Prints one JSON object.

    .venv/bin/python bench/wire_bytes.py [--days 3] [--rows-per-day 15000] [--full-report]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llm_observatory.partitions import DEMO_START_DATE  # noqa: E402
from llm_observatory.synthetic.generator import generate_source  # noqa: E402
from llm_observatory.tables import TABLES  # noqa: E402
from llm_observatory_tests.services import (  # noqa: E402
    AZURITE_ACCOUNT_KEY,
    AZURITE_ACCOUNT_NAME,
    find_azurite,
    free_port,
    port_answers,
)

REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)')


def downloaded(log_lines: list[str]) -> dict[str, int]:
    """GET response bytes by what was read: data files, Delta logs, evidence tables, other."""
    totals = {"data_files": 0, "delta_log": 0, "evidence": 0, "other": 0, "requests": 0}
    for line in log_lines:
        match = REQUEST.search(line)
        if not match or match.group(1) != "GET" or match.group(4) == "-":
            continue
        path, size = match.group(2).split("?")[0], int(match.group(4))
        kind = (
            "evidence"
            if "/_evidence/" in path
            else "delta_log"
            if "/_delta_log/" in path
            else "data_files"
            if path.endswith(".parquet")
            else "other"
        )
        totals[kind] += size
        totals["requests"] += 1
    return totals


class CountingProxy:
    """A TCP forwarder in front of Azurite that counts the bytes each way: what the worker
    sends to the storage account and what it reads back, HTTP headers included, which is what
    crosses the link. Azurite's access log names what was read; only this counts uploads."""

    CHUNK = 256 * 1024

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False

    def __enter__(self) -> CountingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        self._listener.close()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, "down"), daemon=True
            ).start()

    def _pump(self, reader: socket.socket, writer: socket.socket, direction: str) -> None:
        try:
            while chunk := reader.recv(self.CHUNK):
                writer.sendall(chunk)
                with self._lock:
                    if direction == "up":
                        self.up += len(chunk)
                    else:
                        self.down += len(chunk)
        except OSError:
            pass
        finally:
            for end in (reader, writer):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


@contextmanager
def running_azurite(work: Path) -> Iterator[tuple[int, Path]]:
    """Azurite (in memory) on a free port, its access log in `work`; yields (port, log)."""
    port = free_port()
    log_path = work / "azurite.log"
    with open(log_path, "wb") as log:
        azurite = subprocess.Popen(
            [
                *find_azurite(),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not port_answers("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise SystemExit(f"Azurite did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port, log_path
    finally:
        os.killpg(azurite.pid, 15)
        azurite.wait(timeout=30)


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT_NAME};"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT_NAME};"
    )


def storage_options(port: int) -> dict:
    return {
        "account_name": AZURITE_ACCOUNT_NAME,
        "account_key": AZURITE_ACCOUNT_KEY,
        "azure_endpoint": f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT_NAME}",
        "allow_http": "true",
    }


def lake_url(root: str) -> str:
    return f"abfs://{{layer}}@{AZURITE_ACCOUNT_NAME}.dfs.core.windows.net/{root}"


def run_measured(
    arguments: list[str], env: dict, cwd: Path, proxy: CountingProxy, log_path: Path
) -> dict:
    """One `llm-observatory` command, as a user runs it: its seconds, the bytes it sent up and
    read down through the proxy, and Azurite's GETs by what they read."""
    before = len(log_path.read_text().splitlines())
    up_before, down_before = proxy.counts()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "llm_observatory.cli", *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    up_after, down_after = proxy.counts()
    figures = {
        "exit": done.returncode,
        "seconds": round(seconds, 1),
        "uploaded_bytes": up_after - up_before,
        "downloaded_bytes": down_after - down_before,
        "downloaded": downloaded(log_path.read_text().splitlines()[before:]),
        "last_line": (done.stdout.strip().splitlines() or [""])[-1][:200],
    }
    if done.returncode not in (0, 1):
        figures["stderr"] = done.stderr[-2000:]
    return figures


def per_byte_stored(figures: dict, stored: int) -> None:
    """Adds each direction's bytes per byte of the lake's current data files."""
    down = figures["downloaded"]
    figures["data_files_per_byte_stored"] = round(down["data_files"] / stored, 4)
    figures["all_down_per_byte_stored"] = round(figures["downloaded_bytes"] / stored, 4)
    figures["all_up_per_byte_stored"] = round(figures["uploaded_bytes"] / stored, 4)


def report_checks(connection: str, root: str) -> dict:
    """How the report just written verified the files (from its report.json)."""
    with BlobServiceClient.from_connection_string(connection) as client:
        blob = client.get_blob_client("gold", f"{root}/cutover_report/report.json")
        report = json.loads(blob.download_blob().readall())
    names = ("checksum_mode", "files_verified", "files_by_metadata", "files_reread")
    return {name: report.get(name) for name in (*names, "files_sampled", "bytes_reread")}


def stored_bytes(storage_options: dict, root: str) -> int:
    """Bytes of the current data files of every lake table."""
    total = 0
    for table in TABLES:
        for uri in (
            f"abfs://bronze@{AZURITE_ACCOUNT_NAME}.dfs.core.windows.net/{root}/{table.name}",
            f"abfs://silver@{AZURITE_ACCOUNT_NAME}.dfs.core.windows.net/{root}/{table.name}",
            f"abfs://silver@{AZURITE_ACCOUNT_NAME}.dfs.core.windows.net/{root}/_quarantine/"
            f"{table.name}",
        ):
            try:
                actions = DeltaTable(uri, storage_options=storage_options).get_add_actions()
            except Exception:  # noqa: BLE001 - a table the run did not create
                continue
            total += sum(actions.column("size_bytes").to_pylist())
    gold = f"abfs://gold@{AZURITE_ACCOUNT_NAME}.dfs.core.windows.net/{root}/daily_metrics"
    total += sum(
        DeltaTable(gold, storage_options=storage_options)
        .get_add_actions()
        .column("size_bytes")
        .to_pylist()
    )
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rows-per-day", type=int, default=15_000)
    parser.add_argument("--full-report", action="store_true", help="also time `report --full`")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wire-bytes-"))
    with running_azurite(work) as (port, log_path), CountingProxy(port) as proxy:
        source = f"sqlite:///{work / 'source.sqlite'}"
        generate_source(
            source,
            start_date=DEMO_START_DATE,
            days=args.days,
            rows_per_day=args.rows_per_day,
            seed=7,
        )
        root = "lake"
        env = {
            **os.environ,
            "LLM_OBS_HOME": str(work / "home"),
            "LLM_OBS_SOURCE_URL": source,
            "LLM_OBS_LAKE_URL": lake_url(root),
            "AZURE_STORAGE_CONNECTION_STRING": connection_string(proxy.port),
        }
        env.pop("LLM_OBS_START_DATE", None)
        last = DEMO_START_DATE.toordinal() + args.days - 1
        last_day = type(DEMO_START_DATE).fromordinal(last).isoformat()
        figures: dict = {"days": args.days, "rows_per_day": args.rows_per_day}
        steps = [
            ("backfill", ["backfill", "--start", DEMO_START_DATE.isoformat(), "--end", last_day])
        ]
        steps.append(("report", ["report"]))
        if args.full_report:
            steps.append(("report_full", ["report", "--full"]))
        for name, arguments in steps:
            figures[name] = run_measured(arguments, env, work, proxy, log_path)
            if name.startswith("report"):
                figures[name]["checks"] = report_checks(connection_string(port), root)
        stored = stored_bytes(storage_options(port), root)
        figures["stored_bytes"] = stored
        for name, _ in steps:
            per_byte_stored(figures[name], stored)
        print(json.dumps(figures, indent=2))
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
