"""Failure injection at the pipeline's step boundaries, for crash/retry tests and drills.

``CDC_FAILPOINTS=after_put,before_watermark`` makes the named points raise once each; the
marker files in ``CDC_FAILPOINT_DIR`` remember which already fired, so the retry goes through.
``kill:<point>`` ends the process there with SIGKILL instead (a worker killed by the OOM killer or
a deploy, not an exception: nothing after it runs, no ``finally``). Unset (always in production)
this is a no-op.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from include.cdc_pipeline.errors import InjectedFailure

# The step boundaries of a stream window (extract_load, apply), then of a snapshot chunk.
WINDOW_POINTS = ("after_read", "after_put", "after_copy", "after_merge", "before_watermark")
CHUNK_POINTS = ("after_chunk_merge", "before_chunk_done", "before_finalize")
POINTS = WINDOW_POINTS + CHUNK_POINTS


def failpoint(name: str, scope: str = "") -> None:
    """Raise (or, armed as ``kill:<name>``, SIGKILL this process) once per scope, when armed.
    ``<name>@<suffix>`` arms it only for scopes ending in ``suffix`` (a snapshot's chunk: ``@-6``)."""
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; known: {POINTS}")
    entries = [p.strip() for p in os.environ.get("CDC_FAILPOINTS", "").split(",") if p.strip()]
    matching = [
        entry
        for entry in entries
        if entry.removeprefix("kill:").split("@", 1)[0] == name
        and ("@" not in entry or scope.endswith(entry.split("@", 1)[1]))
    ]
    if not matching:
        return
    marker = Path(os.environ.get("CDC_FAILPOINT_DIR", tempfile.gettempdir())) / f"cdc-failpoint-{scope}-{name}".replace(
        "/", "_"
    )
    if marker.exists():
        return
    marker.write_text("fired\n")
    if any(entry.startswith("kill:") for entry in matching):
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFailure(f"injected failure at {name} ({scope})")
