"""The health checks of a table whose snapshot is loading in chunks (include/cdc_pipeline/health.py),
from the control tables a real snapshot wrote: reported as snapshotting (its freshness still the
stream's, a `snapshot` check with chunks done of total), and a warning only once no chunk finished
for ``stuck_after``."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from include.cdc_pipeline import health
from include.cdc_pipeline.snapshot import run_workers
from include.cdc_pipeline.source import CdcSource
from include.cdc_pipeline.warehouse import Warehouse
from tests.integration.conftest import Harness
from tests.integration.test_snapshot_progress import _items, _worker

pytestmark = pytest.mark.integration


def test_a_table_mid_snapshot_is_snapshotting_and_warned_only_when_its_chunks_stall(harness: Harness) -> None:
    h = harness
    config = _items(h, freshness_sla="30m")
    config = config.model_copy(update={"stuck_after": timedelta(hours=2)})
    # Given a table's first snapshot whose worker stopped after the first of its three chunks,
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan())
    _, store, works = _worker(h, config, limit=1)
    assert run_workers(works, store, "w1")["chunks"] == 1
    # when the health checks run,
    wh = Warehouse(h.snowflake.connect())
    checks = {c.check: c for c in health.run_checks(config, CdcSource(h.connect()), wh) if c.table == "dbo_items"}
    # then the table is reported snapshotting, not late nor stalled: its stream is fresh (and says a
    # snapshot loads beside it), and the snapshot check gives chunks done of total, ok;
    assert not any(c.alerting for c in checks.values()), checks
    assert checks["freshness"].status == "ok"
    note = "; a snapshot of the table is loading in chunks, the stream runs beside it"
    assert checks["freshness"].detail.endswith(note)
    snap = checks["snapshot"]
    assert (snap.status, snap.value, snap.threshold, snap.unit) == ("ok", 33.3, 100.0, "%")
    assert snap.detail == (
        f"initial snapshot {snapshot.snapshot_id} at LSN {snapshot.snapshot_lsn}: 1/3 chunks, 20 rows; state running"
    )
    # and the same snapshot is a warning once no chunk finished for longer than stuck_after (2 h),
    last = store.progress(snapshot.snapshot_id)["last_finished"].replace(tzinfo=UTC)
    (active,) = store.active()
    table = config.tables[0]
    assert health.snapshot_check(config, table, active, wh, last + timedelta(minutes=119)).status == "ok"
    stalled = health.snapshot_check(config, table, active, wh, last + timedelta(minutes=150))
    assert (stalled.status, stalled.value) == ("warn", 33.3)
    assert stalled.detail.endswith("; no chunk finished for 150.0 min (the CDC DAG's runs load them)")
    # while a table with no snapshot loading gets no snapshot check at all.
    _, store, works = _worker(h, config)
    assert len(run_workers(works, store, "w2")["finished"]) == 1
    checks = health.run_checks(config, CdcSource(h.connect()), wh)
    assert [c for c in checks if c.check == "snapshot"] == []
    assert all(note not in c.detail for c in checks)
