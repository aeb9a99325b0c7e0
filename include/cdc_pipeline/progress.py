"""Progress of long extracts in the task log: rows, MB, rate and ETA every few seconds.

A snapshot of a large table or a large change window can run for many minutes; without a line now
and then, the task log looks hung. The ETA comes from the catalog's row-count estimate
(``sys.partitions``, no scan): the source table's for a snapshot, the change table's for a window
(an upper bound: the change table also holds rows before the window and update before-images).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0  # seconds between two progress lines


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts rows and bytes as chunks arrive; logs a line when ``every`` seconds have passed."""

    def __init__(
        self,
        label: str,
        estimate: int | None,
        basis: str,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.estimate, self.basis, self.every, self.clock = label, estimate, basis, every, clock
        self.started = self.last = clock()
        self.rows = self.bytes = 0

    def add(self, rows: int, nbytes: int) -> None:
        self.rows += rows
        self.bytes += nbytes
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else self.clock()) - self.started, 1e-6)
        rate, mb = self.rows / elapsed, self.bytes / 1e6
        text = f"{self.label}: {self.rows:,} rows"
        eta = None
        if self.estimate:
            if self.rows <= self.estimate:
                text += f" of ~{self.estimate:,} ({100 * self.rows / self.estimate:.0f}%)"
                eta = (self.estimate - self.rows) / rate if rate > 0 else None
            else:
                text += f" (more than the estimate ~{self.estimate:,})"
        text += f", {mb:,.1f} MB, {rate:,.0f} rows/s, {mb / elapsed:,.1f} MB/s"
        if eta is not None:
            return f"{text}, ETA {_duration(eta)} (from the {self.basis})"
        return f"{text}, ETA unknown" + ("" if self.estimate else f" (no {self.basis})")

    def finish(self) -> None:
        elapsed = max(self.clock() - self.started, 1e-6)
        log.info(
            "%s: done, %s rows, %.1f MB in %s (%s rows/s)",
            self.label,
            f"{self.rows:,}",
            self.bytes / 1e6,
            _duration(elapsed),
            f"{self.rows / elapsed:,.0f}",
        )
