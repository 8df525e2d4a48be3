"""Progress of long partition copies, for the run log and the operator's terminal."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Throughput:
    """Counts rows and bytes, reports at most every `every_seconds`, and sums up at the end."""

    log: object | None = None
    label: str = ""
    every_seconds: float = 10.0
    expected_rows: int | None = None
    rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.perf_counter)
    _last_report: float = field(default_factory=time.perf_counter)

    def add(self, rows: int, nbytes: int = 0) -> None:
        self.rows += rows
        self.bytes += nbytes
        now = time.perf_counter()
        if self.log is not None and now - self._last_report >= self.every_seconds:
            self._last_report = now
            self.log.info(self.describe())

    @property
    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    def describe(self) -> str:
        text = (
            f"{self.label}: {self.rows:,} rows in {self.seconds:,.1f} s "
            f"({self.rows_per_second:,.0f} rows/s)"
        )
        if self.expected_rows:
            share = min(self.rows / self.expected_rows, 1.0)
            remaining = (self.expected_rows - self.rows) / max(self.rows_per_second, 1e-9)
            text += f", {share:.0%} of {self.expected_rows:,}, ETA {max(remaining, 0):,.0f} s"
        return text

    def metadata(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }
