"""Per-table run record: when the table last completed a run, and how many runs in a row failed.

The CDC DAG's table tasks update it (``orchestration.tasks``); the ``cdc_health`` checks read it
(``health.run_record_checks``: a stuck table, or one that keeps failing while each single failure
already mailed) and so does the status page. It lives beside the hint, as an Airflow Variable
(the store is passed in: any JSON get/set store), so recording costs no Snowflake query.
Counting is per DAG run: the retries of one run count once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from include.cdc_pipeline.alerts.classify import error_info
from include.cdc_pipeline.offsets import HintStore as Store  # the same JSON get/set store as the hint


def record_success(store: Store, run_id: str, now: datetime | None = None) -> None:
    """The table completed this run (applied a batch, or found nothing new): the failure streak ends."""
    store.set({"succeeded_at": (now or datetime.now(UTC)).isoformat(), "succeeded_run": run_id, "failed_runs": 0})


def record_failure(store: Store, run_id: str, error: BaseException, now: datetime | None = None) -> None:
    """A task of the table failed in this run (any try); a run adds at most one to the streak."""
    at = (now or datetime.now(UTC)).isoformat()
    record = dict(store.get() or {})
    if record.get("failed_run") != run_id:
        record["failed_runs"] = int(record.get("failed_runs") or 0) + 1
        if record["failed_runs"] == 1:
            record["failing_since"] = at
    record.update(failed_run=run_id, failed_at=at, last_error=error_info(error).summary[:500])
    store.set(record)
