"""Failure injection at the pipeline's step boundaries, for crash/retry tests and drills.

``CDC_FAILPOINTS=after_put,before_watermark`` makes the named points raise once each; the
marker files in ``CDC_FAILPOINT_DIR`` remember which already fired, so the retry goes through.
Unset (always in production) this is a no-op.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from include.cdc_pipeline.errors import InjectedFailure

POINTS = ("after_read", "after_put", "after_copy", "after_merge", "before_watermark")


def failpoint(name: str, scope: str = "") -> None:
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; known: {POINTS}")
    armed = {p.strip() for p in os.environ.get("CDC_FAILPOINTS", "").split(",") if p.strip()}
    if name not in armed:
        return
    marker = Path(os.environ.get("CDC_FAILPOINT_DIR", tempfile.gettempdir())) / f"cdc-failpoint-{scope}-{name}".replace(
        "/", "_"
    )
    if marker.exists():
        return
    marker.write_text("fired\n")
    raise InjectedFailure(f"injected failure at {name} ({scope})")
