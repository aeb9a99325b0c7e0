"""Progress of a chunked snapshot and what stays visible while it loads, on the emulator and the
local Snowflake (include/cdc_pipeline/snapshot.py).

A snapshot driven part-way (a worker that stops after some of its chunks, as one whose run's time
is up) shows its figures as the status page and the task log do — chunks done / total, rows, rate,
ETA, the table "snapshotting" — and stops showing them once it is done, whichever worker finishes
last. A re-snapshot keeps every old raw row live, with its old values, until its last chunk is in;
then the rows the source no longer holds are marked deleted (soft) or removed (hard).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dev.localpipeline import MemoryHints
from include.cdc_pipeline.orchestration import tasks  # at collection: Airflow's logging setup must precede caplog's
from include.cdc_pipeline.reconcile import reconcile
from include.cdc_pipeline.snapshot import Chunk, Snapshot, SnapshotStore, SnapshotWork, run_workers
from include.cdc_pipeline.status import figures
from include.cdc_pipeline.warehouse import Warehouse
from tests.integration.conftest import SALT, Harness

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


def test_a_late_progress_line_does_not_reopen_a_finished_snapshot(harness: Harness) -> None:
    h = harness
    config = _items(h)
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan())
    _, store, works = _worker(h, config, limit=2)
    assert run_workers(works, store, "w1")["chunks"] == 2
    # Given a worker that loads the last chunk and is slow to record its line (3/3, finalizing),
    status = MemoryHints()
    read, write = threading.Semaphore(0), threading.Semaphore(0)

    def slow_line(snap: Snapshot, progress: dict[str, Any]) -> None:
        line = figures.snapshot_progress(snap, progress)
        read.release()
        assert write.acquire(timeout=120), "the other worker never finished"
        figures.record_snapshot(status, line, "manual__2")

    outcome: dict[str, Any] = {}

    def slow_worker() -> None:
        try:
            _, store, works = _worker(h, config)
            outcome["result"] = run_workers(works, store, "w2", on_chunk=slow_line)
        except BaseException as exc:  # the assertion below names it
            outcome["error"] = exc

    thread = threading.Thread(target=slow_worker)
    thread.start()
    assert read.acquire(timeout=120), outcome
    # when another worker of the run finds no chunk left, finalizes, and records the snapshot done
    _, store, works = _worker(h, config)
    (done,) = run_workers(works, store, "w3")["finished"]
    figures.record_snapshot(status, {**done, "state": "done"}, "manual__2")
    # before the slow worker's line is written,
    write.release()
    thread.join()
    assert "error" not in outcome and outcome["result"]["chunks"] == 1, outcome
    # then the record still says done, and the page does not show the table snapshotting.
    assert status.value is not None
    assert status.value["snapshot"]["snapshot_id"] == snapshot.snapshot_id
    assert status.value["snapshot"]["state"] == "done" and status.value["snapshot"]["rows"] == ROWS
    assert _page_row(config, status.value, datetime.now(UTC))["state"] == "flowing"


def test_the_snapshot_worker_task_logs_chunks_done_of_total(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    config = _items(h)
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan())
    # Given the DAG's snapshot worker task on this test's source, Snowflake and (in-memory) Variables,
    status, runs = MemoryHints(), MemoryHints()
    monkeypatch.setattr(tasks, "_config", lambda path: config)
    monkeypatch.setattr(tasks, "build_pipeline", lambda path, name, hints=None: h.pipeline(config))
    monkeypatch.setattr(tasks, "_warehouse", lambda source: Warehouse(h.snowflake.connect()))
    monkeypatch.setattr(tasks.VariableStore, "status", classmethod(lambda cls, source, table: status))
    monkeypatch.setattr(tasks.VariableStore, "runs", classmethod(lambda cls, source, table: runs))
    caplog.set_level(logging.INFO, logger=tasks.log.name)
    # when it runs (time enough for every chunk),
    until = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    worker = {"worker": 0, "tables": ["dbo_items"], "until": until, "initial": ["dbo_items"]}
    result = tasks.snapshot_worker("src.yaml", worker, {"run_id": "manual__1"})
    # then its log holds one line per chunk: chunks done of total and rows so far, the rate, and an
    # ETA while chunks are left,
    line = re.compile(
        rf"src\.dbo_items: snapshot {snapshot.snapshot_id}: (\d)/(\d) chunks, (\d+) rows"
        r"(, [\d,]+ rows/s)?(, ETA \d+ s)?"
    )
    found = [m for r in caplog.records if r.name == tasks.log.name and (m := line.fullmatch(r.getMessage()))]
    assert [(m[1], m[2], m[3], bool(m[4]), bool(m[5])) for m in found] == [
        ("1", "3", "20", True, True),
        ("2", "3", "40", True, True),
        ("3", "3", "55", True, False),
    ]
    # and the task finished the snapshot, recorded it done for the page and the run as completed.
    assert result["chunks"] == 3 and result["rows"] == ROWS and result["initial_pending"] == []
    assert [d["snapshot_id"] for d in result["finished"]] == [snapshot.snapshot_id]
    assert status.value is not None and status.value["snapshot"]["state"] == "done"
    assert runs.value is not None and runs.value["succeeded_run"] == "manual__1"


# ~20 s each on a loaded machine: test-all only. In `make test` a re-snapshot's end (unseen keys
# deleted, raw = source) is covered by test_snapshot_chunks.py's hard-mode re-snapshot under a stream.
@pytest.mark.slow
@pytest.mark.parametrize("delete_mode", ["soft", "hard"])
def test_a_resnapshot_keeps_the_old_raw_rows_until_its_last_chunk_is_in(harness: Harness, delete_mode: str) -> None:
    h = harness
    config = _items(h, delete_mode=delete_mode)
    assert h.pipeline(config).run_once()["mode"] == "snapshot"
    raw = f"{h.database}.RAW.ITEMS"

    def live() -> dict[int, int]:
        return dict(h.snowflake_rows(f"SELECT ID, V FROM {raw} WHERE NOT COALESCE(_CDC_DELETED, FALSE)"))

    old = {i: i for i in range(ROWS)}
    assert live() == old
    # Given changes the stream never applied (lost, as in a retention gap): keys 5 (first chunk's
    # range) and 45 (last chunk's) deleted, 10 and 50 updated,
    h.sql("DELETE FROM dbo.items WHERE id IN (5, 45)", "UPDATE dbo.items SET v = 1000 + id WHERE id IN (10, 50)")
    # when a re-snapshot is requested and its worker stops after the first of its three chunks,
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan(resnapshot=True))
    assert snapshot.kind == "resnapshot"
    _, store, works = _worker(h, config, limit=1)
    assert run_workers(works, store, "w1") == {"owner": "w1", "chunks": 1, "rows": 20, "finished": []}
    # then raw still holds every old row live: the first chunk's re-read values (10 updated, 5 — no
    # longer in the source — as it was), and the ranges not yet re-read as they were (45, 50);
    assert live() == {**old, 10: 1010}
    assert h.snowflake_rows(f"SELECT COUNT(*) FROM {raw}") == [(ROWS,)]
    # when the next worker loads the other chunks and finalizes,
    _, store, works = _worker(h, config)
    (done,) = run_workers(works, store, "w2")["finished"]
    assert (done["snapshot_id"], done["rows"], done["deleted_by_snapshot"]) == (snapshot.snapshot_id, ROWS - 2, 2)
    # then the keys the source no longer holds are deleted (flagged in soft mode, gone in hard),
    expected = {i: v for i, v in {**old, 10: 1010, 50: 1050}.items() if i not in (5, 45)}
    assert live() == expected
    gone = h.snowflake_rows(f"SELECT ID, V, _CDC_DELETED, _CDC_LSN FROM {raw} WHERE ID IN (5, 45) ORDER BY ID")
    if delete_mode == "soft":
        assert gone == [(5, 5, True, snapshot.snapshot_lsn), (45, 45, True, snapshot.snapshot_lsn)]
    else:
        assert gone == []
    # their delete is in history once, at the snapshot's LSN,
    deletes = h.snowflake_rows(
        f"SELECT ID, _CDC_LSN, COUNT(*) FROM {h.database}.RAW.ITEMS_HISTORY WHERE _CDC_OPERATION = 1 GROUP BY 1, 2"
        " ORDER BY 1"
    )
    assert deletes == [(5, snapshot.snapshot_lsn, 1), (45, snapshot.snapshot_lsn, 1)]
    # and raw equals the source value for value.
    assert reconcile(h.pipeline(config), salt=SALT).ok
