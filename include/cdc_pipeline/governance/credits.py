"""The Snowflake credits a CDC batch used, from the query history (``CONTROL.CDC_BATCHES.CREDITS_USED``).

The pipeline's executor keeps the query id of every statement it runs (the connector's ``sfqid``);
a batch's are those of its COPY step and of its apply step. Their figures come from
``INFORMATION_SCHEMA.QUERY_HISTORY`` (docs.snowflake.com/en/sql-reference/functions/query_history:
the current user's queries of the last 7 days, whatever the role), and the credits are

    Σ EXECUTION_TIME / 3 600 000 × credits per hour of WAREHOUSE_SIZE  +  Σ CREDITS_USED_CLOUD_SERVICES

**An approximation.** Snowflake bills a warehouse for the seconds it runs (at least 60 s after each
resume, and until AUTO_SUSPEND stops it), not per query: queries running side by side share those
seconds, idle time before suspension is nobody's, and the cloud-services figure is before the daily
10 % adjustment. The exact, per-query split is ``SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY``
(up to 8 h late, and needs the SNOWFLAKE database's imported privileges): a billing question, not a
per-run figure. When the history cannot be read (a role without access, or the local Snowflake,
which meters nothing) the batch records NULL and the first failure is logged once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# Credits per hour of a standard warehouse (docs.snowflake.com/en/user-guide/warehouses-overview).
CREDITS_PER_HOUR = {
    "X-SMALL": 1,
    "SMALL": 2,
    "MEDIUM": 4,
    "LARGE": 8,
    "X-LARGE": 16,
    "2X-LARGE": 32,
    "3X-LARGE": 64,
    "4X-LARGE": 128,
    "5X-LARGE": 256,
    "6X-LARGE": 512,
}
_warned = False


def _rate(size: Any) -> float:
    text = str(size or "").upper().replace("XSMALL", "X-SMALL").replace("XLARGE", "X-LARGE")
    return float(CREDITS_PER_HOUR.get(text, 0))


def credits_of(rows: Sequence[tuple[Any, Any, Any]]) -> float:
    """Credits of query-history rows ``(execution_time_ms, warehouse_size, cloud_services_credits)``."""
    compute = sum(float(ms or 0) / 3_600_000 * _rate(size) for ms, size, _ in rows)
    return round(compute + sum(float(cs or 0) for _, _, cs in rows), 6)


def batch_credits(wh: Any, query_ids: Sequence[str]) -> float | None:
    """The credits of ``query_ids`` (see the module docstring), or None when the history is not readable."""
    global _warned
    ids = sorted({q for q in query_ids if q})
    if not ids:
        return None
    try:
        placeholders = ", ".join(f"%(q{i})s" for i in range(len(ids)))
        rows = wh.execute(
            "SELECT EXECUTION_TIME, WAREHOUSE_SIZE, CREDITS_USED_CLOUD_SERVICES FROM TABLE("
            "INFORMATION_SCHEMA.QUERY_HISTORY(END_TIME_RANGE_START => DATEADD('day', -1, CURRENT_TIMESTAMP()),"
            f" RESULT_LIMIT => 10000)) WHERE QUERY_ID IN ({placeholders})",
            {f"q{i}": q for i, q in enumerate(ids)},
        )
    except Exception as exc:
        if not _warned:
            _warned = True
            log.warning(
                "credits per batch not recorded (CDC_BATCHES.CREDITS_USED stays NULL): cannot read "
                "INFORMATION_SCHEMA.QUERY_HISTORY: %s",
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
        return None
    return credits_of([(r[0], r[1], r[2]) for r in rows])
