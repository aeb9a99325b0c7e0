"""Progress of a chunked snapshot and what stays visible while it loads, on the emulator and the
local Snowflake (include/cdc_pipeline/snapshot.py).

A snapshot driven part-way (a worker that stops after some of its chunks, as one whose run's time
is up) shows its figures as the status page and the task log do — chunks done / total, rows, rate,
ETA, the table "snapshotting" — and stops showing them once it is done, whichever worker finishes
last. A re-snapshot keeps every old raw row live, with its old values, until its last chunk is in;
then the rows the source no longer holds are marked deleted (soft) or removed (hard).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dev.localpipeline import MemoryHints
from include.cdc_pipeline.snapshot import Chunk, Snapshot, SnapshotStore, SnapshotWork, run_workers
from include.cdc_pipeline.status import figures
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration
ROWS, EVERY = 55, 20  # three chunks: ids 0-19, 20-39 and 40-54


def _items(h: Harness, **defaults: Any) -> Any:
    h.sql("CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, v int NOT NULL)")
    h.sql("INSERT INTO dbo.items VALUES " + ", ".join(f"({i}, {i})" for i in range(ROWS)))
    h.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'items', @role_name = NULL")
    h.capture()
    return h.source_config(
        [{"schema": "dbo", "table": "items", "primary_key": ["id"]}],
        table_defaults={"snapshot_chunk_rows": EVERY, **defaults},
    )


class _StoppingStore(SnapshotStore):
    """A worker's store that hands out ``limit`` chunks, then none: the worker stops part-way, as
    one whose run's time is up does, and the other chunks stay pending."""

    def __init__(self, store: SnapshotStore, limit: int) -> None:
        super().__init__(store._warehouse, store.database, store.schema, store.source)
        self.limit = limit

    def claim(self, snapshot_ids: Sequence[str], owner: str) -> Chunk | None:
        if self.limit <= 0:
            return None
        chunk = super().claim(snapshot_ids, owner)
        self.limit -= chunk is not None
        return chunk


def _worker(h: Harness, config: Any, limit: int | None = None) -> tuple[Any, SnapshotStore, dict[str, SnapshotWork]]:
    pipeline = h.pipeline(config)
    store = pipeline.snapshot_store()
    if limit is not None:
        store = _StoppingStore(store, limit)
    return pipeline, store, {pipeline.table.name: SnapshotWork(pipeline, store)}


def _page_row(config: Any, status: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The table's row on the status page, from its records as the plugin reads them (the DAG
    unpaused, its last run completed a minute ago)."""
    table = config.tables[0]
    records = {
        figures.status_key(config.name, table.name): status,
        f"{figures.RUNS_PREFIX}{config.name}__{table.name}": {
            "failed_runs": 0,
            "succeeded_at": (now - timedelta(minutes=1)).isoformat(),
        },
    }
    view = figures.page([config], records, {config.dag_id: {"is_paused": False}}, {}, {}, now=now)
    (row,) = view["sources"][0]["tables"]
    assert view["sources"][0]["summary"]["states"][row["state"]] == 1
    return row


def test_a_snapshot_part_way_shows_chunks_rows_rate_and_eta_then_no_longer_snapshotting(harness: Harness) -> None:
    h = harness
    config = _items(h)
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan())
    # Given a worker that records each chunk's progress as the DAG's snapshot workers do, and
    # stops after two of the three chunks,
    status, lines = MemoryHints(), []

    def on_chunk(snap: Snapshot, progress: dict[str, Any]) -> None:
        line = figures.snapshot_progress(snap, progress)
        lines.append((dict(progress), line, datetime.now(UTC)))
        figures.record_snapshot(status, line, "manual__1")

    before = datetime.now(UTC)
    _, store, works = _worker(h, config, limit=2)
    result = run_workers(works, store, "w1", on_chunk=on_chunk)
    assert result["chunks"] == 2 and result["rows"] == 40 and result["finished"] == []
    # then each chunk's line holds the chunks done of three and the rows loaded so far,
    assert [(ln["done"], ln["chunks"], ln["rows"], ln["state"]) for _, ln, _ in lines] == [
        (1, 3, 20, "running"),
        (2, 3, 40, "running"),
    ]
    for progress, line, at in lines:
        assert line["snapshot_id"] == snapshot.snapshot_id and line["kind"] == "initial"
        # the rate is the rows over the time since the first chunk was claimed (by the clocks of
        # the control table and the worker, both UTC), the ETA the chunks left at that rate,
        first = progress["first_claimed"].replace(tzinfo=UTC)
        assert before - timedelta(seconds=2) <= first <= at
        elapsed = (at - first).total_seconds()
        assert line["rows_per_s"] >= round(line["rows"] / max(elapsed, 1e-3), 1) - 0.1
        per_chunk = line["rows"] / line["done"]
        assert line["eta_s"] == pytest.approx((3 - line["done"]) * per_chunk / line["rows_per_s"], abs=1)
        text = re.fullmatch(
            rf"{snapshot.snapshot_id}: {line['done']}/3 chunks, {line['rows']} rows, ([\d,]+) rows/s,"
            rf" ETA {line['eta_s']} s",
            line["text"],
        )
        assert text and abs(int(text[1].replace(",", "")) - line["rows_per_s"]) <= 1, line["text"]
    # and the figures for a known clock: 40 rows 8 s after the first claim is 5 rows/s, and the
    # last chunk (20 rows a chunk so far) 4 s away.
    progress = store.progress(snapshot.snapshot_id)
    assert (progress["done"], progress["chunks"], progress["rows"]) == (2, 3, 40)
    at = progress["first_claimed"].replace(tzinfo=UTC) + timedelta(seconds=8)
    line = figures.snapshot_progress(snapshot, progress, now=at)
    assert (line["rows_per_s"], line["eta_s"]) == (5.0, 4)
    assert line["text"] == f"{snapshot.snapshot_id}: 2/3 chunks, 40 rows, 5 rows/s, ETA 4 s"
    # The status record holds the last line (its text aside), and the page shows the table snapshotting.
    figures.record_snapshot(status, line, "manual__1", now=at)
    assert status.value is not None
    recorded = status.value["snapshot"]
    assert {k: recorded[k] for k in ("snapshot_id", "state", "done", "chunks", "rows", "rows_per_s", "eta_s")} == {
        "snapshot_id": snapshot.snapshot_id,
        "state": "running",
        "done": 2,
        "chunks": 3,
        "rows": 40,
        "rows_per_s": 5.0,
        "eta_s": 4,
    }
    assert "text" not in recorded and recorded["run_id"] == "manual__1"
    row = _page_row(config, status.value, at)
    assert row["state"] == "snapshotting"
    assert row["state_reason"] == "initial in chunks: 2/3 done, 40 rows, ETA 4 s; the stream runs beside it"
    assert row["snapshot"]["done"] == 2 and row["links"]["runbook"].endswith("snapshot-stalled-snapshot-warn")
    # When a worker of the next run loads the last chunk and finalizes,
    _, store, works = _worker(h, config)
    lines.clear()
    result = run_workers(works, store, "w2", on_chunk=on_chunk)
    (done,) = result["finished"]
    assert [(ln["done"], ln["state"], ln["eta_s"]) for _, ln, _ in lines] == [(3, "finalizing", None)]
    assert status.value["snapshot"]["state"] == "finalizing"
    assert _page_row(config, status.value, datetime.now(UTC))["state"] == "snapshotting"
    figures.record_snapshot(status, {**done, "state": "done"}, "manual__2")
    # then the table is no longer snapshotting: its last batch is the snapshot's 55 rows.
    row = _page_row(config, status.value, datetime.now(UTC))
    assert row["state"] == "flowing" and row["snapshot"]["state"] == "done"
    assert row["last_batch"]["mode"] == "snapshot" and row["last_batch"]["rows"] == ROWS
    assert row["last_batch"]["batch_id"] == snapshot.snapshot_id
    assert [(p["run_id"], p["rows"], p["mode"]) for p in row["points"]] == [("manual__2", ROWS, "snapshot")]
