"""The emulator's controllable clock (tran_begin_time / tran_end_time, GETDATE()).

Tests need deterministic commit times and the cleanup job needs "three days later" without
waiting three days, so time comes from here, never from ``datetime.now()`` directly.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class Clock:
    """Wall clock by default; can be set (frozen or running from the set point) and advanced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def now(self) -> datetime:
        """Naive local time with millisecond precision (SQL Server's datetime is ~3 ms)."""
        with self._lock:
            value = self._frozen_at if self._frozen_at is not None else datetime.now() + self._offset
        return value.replace(microsecond=(value.microsecond // 1000) * 1000)

    def set(self, when: datetime, *, frozen: bool = True) -> None:
        """Jump to ``when``; frozen clocks stand still until advanced, others keep running."""
        with self._lock:
            if frozen:
                self._frozen_at = when
            else:
                self._frozen_at = None
                self._offset = when - datetime.now()

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def reset(self) -> None:
        """Back to the system clock."""
        with self._lock:
            self._frozen_at = None
            self._offset = timedelta(0)

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None
