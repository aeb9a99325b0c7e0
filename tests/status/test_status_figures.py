"""The figures the CDC tasks record for the status page, on the local stack (SQL Server CDC emulator
with a frozen clock + local Snowflake): lag from the source's commit times, the last batch exactly as
CONTROL.CDC_BATCHES logs it, one chart point per run."""

from __future__ import annotations

from datetime import datetime

import pytest

from dev.localpipeline import MemoryHints  # the Variable the DAG's tasks write, kept in memory
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.status import figures as status
from tests.alerts.test_health import T0, _loaded  # dbo.orders with CDC, snapshotted at T0
from tests.integration.conftest import harness  # noqa: F401  (emulator + local Snowflake per test)

pytestmark = pytest.mark.integration


def _run(pipeline, store: MemoryHints, run_id: str) -> dict:
    """One DAG run of the table, as the CDC tasks record it: plan, then extract_load + apply."""
    cut = to_hex(pipeline.source.max_lsn())
    window = pipeline.plan(cut=cut)
    status.record_plan(store, window, cut, run_id, pipeline.source)
    if window.mode != "idle":
        batch = pipeline.extract_load(window)
        status.record_apply(store, batch, pipeline.apply(batch), run_id)
    record = store.get()
    assert record is not None
    return record


def test_recorded_figures_match_the_source_clock_and_cdc_batches(harness) -> None:  # noqa: F811
    h = harness
    # Given dbo.orders snapshotted at T0 (source clock frozen),
    config = _loaded(h)
    pipeline, store = h.pipeline(config), MemoryHints()
    # when changes commit at T0+5 min and T0+10 min and the next run loads them,
    h.engine.clock.advance(300)
    h.sql("UPDATE dbo.orders SET amount = 11.00 WHERE id = 1")
    h.engine.clock.advance(300)
    h.sql("INSERT INTO dbo.orders VALUES (3, 30.00)")
    h.capture()
    window = pipeline.plan(cut=to_hex(pipeline.source.max_lsn()))
    planned = status.record_plan(store, window, to_hex(pipeline.source.max_lsn()), "run2", pipeline.source)
    # then the lag at the start of the run is the source-clock distance from the newest applied change (T0)
    # to the newest captured one (T0+10 min),
    assert (planned["applied_through"], planned["captured_through"]) == (T0.isoformat(), "2026-03-01T08:10:00")
    assert planned["lag_s"] == 600.0
    batch = pipeline.extract_load(window)
    applied = status.record_apply(store, batch, pipeline.apply(batch), "run2")
    # and after the batch the last-batch figures are those CONTROL.CDC_BATCHES logged for it,
    [(rows, extract_s, apply_s, committed, credits)] = h.snowflake_rows(
        "SELECT ROWS_STAGED, EXTRACT_SECONDS, APPLY_SECONDS, UPPER_COMMITTED_AT, CREDITS_USED"
        f" FROM {h.database}.CONTROL.CDC_BATCHES"
        f" WHERE BATCH_ID = '{applied['last_batch']['batch_id']}'"
    )
    last = applied["last_batch"]
    assert last["rows"] == rows == 2
    # (credits: the local Snowflake has no query history to read, so NULL there and None here)
    assert last["credits"] is credits is None
    assert last["duration_s"] == pytest.approx(extract_s + apply_s, abs=0.002)
    assert last["rows_per_s"] == pytest.approx(rows / (extract_s + apply_s), rel=0.01)
    assert datetime.fromisoformat(applied["applied_through"]) == committed == datetime(2026, 3, 1, 8, 10)
    assert applied["lag_s"] == 0.0 and applied["capture_instance"] == "dbo_orders"
    # and a run with nothing new is idle with lag 0; each run is one chart point.
    h.engine.clock.advance(60)
    idle = _run(pipeline, store, "run3")
    assert (idle["mode"], idle["lag_s"], idle["last_batch"]["run_id"]) == ("idle", 0.0, "run2")
    assert [(p["run_id"], p["mode"], p["lag_s"], p["rows"]) for p in idle["points"]] == [
        ("run2", "stream", 600.0, 2),
        ("run3", "idle", 0.0, 0),
    ]
