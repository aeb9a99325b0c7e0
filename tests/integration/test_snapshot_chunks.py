"""Chunked snapshots (include/cdc_pipeline/snapshot.py) on the emulator and the local Snowflake.

A snapshot is a sequence of key-range chunks recorded in CONTROL.CDC_SNAPSHOT_CHUNKS: split on the
primary key in SQL Server's own order (composite and character keys included), claimed by exactly
one worker each (two workers at once share them), and exact whatever the stream does meanwhile:
changes applied before, between and after the chunks — even after a chunk's LSN was taken and
before its rows were merged — end with raw = source value for value and every change in history
once, in both delete modes.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest

from include.cdc_pipeline.errors import InjectedFailure
from include.cdc_pipeline.failpoints import CHUNK_POINTS
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.reconcile import reconcile
from include.cdc_pipeline.snapshot import SnapshotStore, SnapshotWork, decode_key, encode_key, run_workers
from tests.integration.conftest import SALT, Harness

pytestmark = pytest.mark.integration


def _codes_table(h: Harness) -> Any:
    h.sql(
        "CREATE TABLE dbo.codes (code varchar(20) NOT NULL, n int NOT NULL, v nvarchar(40) NULL, PRIMARY KEY (code, n))"
    )
    rows = [(code, n) for code in ("a", "B", "c", "D", "e", "F") for n in range(20)]
    h.sql("INSERT INTO dbo.codes VALUES " + ", ".join(f"('{code}', {n}, N'{code}{n}')" for code, n in rows))
    h.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'codes', @role_name = NULL")
    h.capture()
    return h.source_config(
        [{"schema": "dbo", "table": "codes", "primary_key": ["code", "n"]}], table_defaults={"snapshot_chunk_rows": 25}
    )


def _chunks(h: Harness, figure: str = "ROWS_LOADED") -> list[tuple[Any, ...]]:
    """(chunk no, state, owner, ``figure``, low LSN) of every chunk."""
    return h.snowflake_rows(
        f"SELECT CHUNK_NO, STATE, OWNER, {figure}, LOW_LSN FROM {h.database}.CONTROL.CDC_SNAPSHOT_CHUNKS"
        " ORDER BY CHUNK_NO"
    )


class _PausingStore(SnapshotStore):
    """A worker's store that, once a chunk's LSN is taken (before its rows are read), signals
    ``taken`` and waits for ``resume``: the test runs the stream in that gap."""

    def __init__(self, warehouse: Any, taken: threading.Semaphore, resume: threading.Semaphore, *args: str) -> None:
        super().__init__(warehouse, *args)
        self.taken, self.resume = taken, resume

    def set_low(self, chunk: Any, lsn: str) -> str:
        low = super().set_low(chunk, lsn)
        self.taken.release()
        assert self.resume.acquire(timeout=300), "the stream round never finished"
        return low


def test_key_bounds_keep_their_types() -> None:
    from datetime import date, datetime
    from decimal import Decimal
    from uuid import UUID

    key = (1, "xy", Decimal("1.50"), datetime(2026, 1, 2, 3, 4, 5, 123456), date(2026, 1, 2), b"\x00\xff",
           UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"), True, None)  # fmt: skip
    assert decode_key(encode_key(key)) == key


def test_a_snapshot_loads_in_key_range_chunks_on_a_composite_character_key(harness: Harness) -> None:
    # Given 120 rows keyed (varchar under the case-insensitive collation, int), chunks of 25 keys,
    config = _codes_table(harness)
    # when the table is snapshotted,
    result = harness.pipeline(config).run_once()
    # then it loaded in five chunks (split on the key in SQL Server's order), each once, all done,
    assert result["mode"] == "snapshot" and result["chunks"] == 5 and result["rows"] == 120
    chunks = _chunks(harness)
    assert [(no, state) for no, state, *_ in chunks] == [(n, "done") for n in range(5)]
    assert sum(rows for *_, rows, _ in chunks) == 120
    # and raw equals the source value for value, with one snapshot row per key in history.
    assert reconcile(harness.pipeline(config), salt=SALT).ok
    history = harness.snowflake_rows(
        f"SELECT CODE, N, COUNT(*) FROM {harness.database}.RAW.CODES_HISTORY GROUP BY CODE, N"
    )
    assert len(history) == 120 and {count for *_, count in history} == {1}


def test_two_workers_share_the_chunks_each_chunk_once(harness: Harness) -> None:
    # Given a snapshot started and split into five chunks,
    config = _codes_table(harness)
    pipeline = harness.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan())
    # when two workers (own connections, own threads) take chunks at the same time,
    results: dict[str, Any] = {}

    def worker(owner: str) -> None:
        mine = harness.pipeline(config)
        store = mine.snapshot_store()
        results[owner] = run_workers({mine.table.name: SnapshotWork(mine, store)}, store, owner)

    threads = [threading.Thread(target=worker, args=(owner,)) for owner in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then every chunk was loaded by exactly one of them, the snapshot was finalized once,
    chunks = _chunks(harness)
    assert len(chunks) == 5 and {state for _, state, *_ in chunks} == {"done"}
    assert sum(r["chunks"] for r in results.values()) == 5
    assert sum(len(r["finished"]) for r in results.values()) == 1
    assert {owner for _, _, owner, *_ in chunks} <= {"w1", "w2"}
    state = harness.snowflake_rows(
        f"SELECT STATE FROM {harness.database}.CONTROL.CDC_SNAPSHOTS WHERE SNAPSHOT_ID = '{snapshot.snapshot_id}'"
    )
    assert state == [("done",)]
    # and raw equals the source.
    assert reconcile(harness.pipeline(config), salt=SALT).ok


# hard delete mode in `make test` (a deleted key leaves no raw row: the subtler case); both in test-all
@pytest.mark.parametrize("delete_mode", [pytest.param("soft", marks=pytest.mark.slow), "hard"])
def test_a_resnapshot_while_the_stream_applies_changes_is_exact(harness: Harness, delete_mode: str) -> None:
    h, rng = harness, random.Random(7)
    h.sql("CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, v int NOT NULL, note nvarchar(20) NULL)")
    h.sql("INSERT INTO dbo.items VALUES " + ", ".join(f"({i}, 0, N'start')" for i in range(60)))
    h.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'items', @role_name = NULL")
    h.capture()
    config = h.source_config(
        [{"schema": "dbo", "table": "items", "primary_key": ["id"]}],
        table_defaults={"snapshot_chunk_rows": 20, "delete_mode": delete_mode},
    )
    assert h.pipeline(config).run_once()["mode"] == "snapshot"
    live, next_id = set(range(60)), 1000

    def change(round_no: int) -> None:
        """Updates and deletes across every chunk's range, and inserts below, inside and above it."""
        nonlocal next_id
        for key in rng.sample(sorted(live), 8):
            h.sql(f"UPDATE dbo.items SET v = v + 1, note = N'r{round_no}' WHERE id = {key}")
        for key in rng.sample(sorted(live), 3):
            h.sql(f"DELETE FROM dbo.items WHERE id = {key}")
            live.discard(key)
        for key in (rng.randrange(-50, 0), rng.randrange(60, 120) * 7, next_id):
            if key not in live:
                h.sql(f"INSERT INTO dbo.items VALUES ({key}, {round_no}, N'new')")
                live.add(key)
        next_id += 1
        h.capture()

    def stream() -> None:
        """One run of the stream for the table, caught up to the source's max LSN afterwards."""
        result = h.pipeline(config).run_once()
        assert result["mode"] in ("stream", "idle"), result
        mark = h.snowflake_rows(f"SELECT WATERMARK_LSN FROM {h.database}.CONTROL.CDC_WATERMARKS")[0][0]
        assert mark == to_hex(h.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0])  # the stream did not wait

    # Given a re-snapshot requested after a first round of changes (the stream goes on from its LSN),
    change(0)
    stream()
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan(resnapshot=True))
    # and its worker (the loop the DAG's snapshot workers run: split, chunks, finalize) in a thread
    # of its own, pausing after each chunk's LSN is taken until the stream has applied a round,
    taken, resume = threading.Semaphore(0), threading.Semaphore(0)
    chunks_done: list[int] = []
    worker_pipeline = h.pipeline(config)
    own = worker_pipeline.snapshot_store()
    store = _PausingStore(lambda: worker_pipeline.warehouse, taken, resume, own.database, own.schema, own.source)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run_workers(
                {worker_pipeline.table.name: SnapshotWork(worker_pipeline, store)}, store, "w",
                on_chunk=lambda _snapshot, progress: chunks_done.append(progress["done"]),
            )  # fmt: skip
        except BaseException as exc:  # the assertion below names it
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    # when the stream keeps applying changes while the chunks load — changes made after a chunk's
    # LSN was taken and applied before its rows are read, and changes made while a chunk is read —
    lags: list[int] = []  # per round of changes: the chunks finished between its commit and its apply

    def streamed_round(round_no: int) -> None:
        before = len(chunks_done)
        change(round_no)
        stream()
        lags.append(len(chunks_done) - before)

    worker.start()
    round_no = 1
    while True:
        if not taken.acquire(timeout=0.5):
            if worker.is_alive():
                continue
            break
        streamed_round(round_no)  # the chunk's LSN is taken, its rows not yet read
        resume.release()
        streamed_round(round_no + 100)  # while the worker reads and merges the chunk
        round_no += 1
    worker.join()
    # then the stream never waited for the snapshot: every round was applied, caught up to the
    # source's max LSN, before more than one chunk finished (its lag never exceeded one chunk),
    assert "error" not in outcome, outcome
    assert len(outcome["result"]["finished"]) == 1
    assert round_no > 3 and chunks_done == list(range(1, len(chunks_done) + 1))
    assert len(lags) == 2 * (round_no - 1) and max(lags) <= 1
    change(999)
    stream()
    # and after catch-up raw equals the source value for value,
    assert reconcile(h.pipeline(config), salt=SALT).ok
    # and history holds every change the stream read, once (its snapshot rows: one per chunk read).
    history = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, ID FROM {h.database}.RAW.ITEMS_HISTORY"
        f" WHERE _CDC_OPERATION <> 0 AND _CDC_LSN > '{snapshot.snapshot_lsn}'"
    )
    counted = Counter(tuple(r) for r in history)
    assert max(counted.values()) == 1
    captured = {
        (to_hex(lsn), to_hex(seq), op, key)
        for lsn, seq, op, key in h.query(
            "SELECT [__$start_lsn], [__$seqval], [__$operation], id FROM cdc.dbo_items_CT WHERE [__$operation] <> 3"
        )
        if to_hex(lsn) > snapshot.snapshot_lsn
    }
    assert set(counted) == captured


FAST_RESUMES = {("before_finalize", "task retry")}


# A step failing in a chunk (the kill after its MERGE: tests/e2e/test_snapshot_resume.py) resumes in
# the task's retry (the same owner takes its chunk again) or in the next run (which frees what an
# earlier run's workers held). In `make test` the retry of an interrupted finalize; all six in test-all.
@pytest.mark.parametrize(
    ("point", "resume"),
    [
        pytest.param(point, resume, marks=() if (point, resume) in FAST_RESUMES else pytest.mark.slow)
        for point in CHUNK_POINTS
        for resume in ("task retry", "next run")
    ],
)
def test_a_snapshot_failing_at_a_chunk_step_resumes_without_reading_a_finished_chunk_again(
    harness: Harness, point: str, resume: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    h = harness
    config = _codes_table(h)
    # Given a snapshot of five chunks whose worker fails at the step in the third chunk (or at the end),
    monkeypatch.setenv("CDC_FAILPOINTS", point if point == "before_finalize" else f"{point}@-2")
    monkeypatch.setenv("CDC_FAILPOINT_DIR", str(tmp_path))
    pipeline = h.pipeline(config)
    snapshot = pipeline.start_snapshot(pipeline.plan())
    store = pipeline.snapshot_store()
    works = {pipeline.table.name: SnapshotWork(pipeline, store)}
    with pytest.raises(InjectedFailure):
        run_workers(works, store, "run1#0")
    finished = {row[0]: row for row in _chunks(h, "FINISHED_AT") if row[1] == "done"}
    assert len(finished) == (5 if point == "before_finalize" else 2)
    # and the source changing meanwhile, streamed beside the snapshot,
    h.sql("UPDATE dbo.codes SET v = N'changed' WHERE (code = 'a' AND n = 3) OR (code = 'D' AND n = 7)")
    h.sql("DELETE FROM dbo.codes WHERE code = 'c' AND n = 1")
    h.sql("INSERT INTO dbo.codes VALUES ('zz', 1, N'new')")
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"
    # when the worker runs again (its task's retry, or a worker of the next run),
    owner = "run1#0"
    if resume == "next run":
        store.free([snapshot.snapshot_id])
        owner = "run2#0"
    result = run_workers(works, store, owner)
    # then the snapshot completes once, no finished chunk was read again (same owner, same finish),
    assert [done["snapshot_id"] for done in result["finished"]] == [snapshot.snapshot_id]
    marks = _chunks(h, "FINISHED_AT")
    assert {row[1] for row in marks} == {"done"} and len(marks) == 5
    assert {row[0]: row for row in marks if row[0] in finished} == finished
    # raw equals the source value for value,
    assert reconcile(h.pipeline(config), salt=SALT).ok
    # and history holds one snapshot row per key read (a key its chunk read after the changes: as it
    # was then) and every streamed change once.
    history = h.snowflake_rows(
        f"SELECT _CDC_OPERATION, CODE, N, _CDC_LSN, _CDC_SEQVAL FROM {h.database}.RAW.CODES_HISTORY"
    )
    assert max(Counter(history).values()) == 1
    snapshot_rows = Counter((code, n) for op, code, n, *_ in history if op == 0)
    assert len(snapshot_rows) >= 119 and set(snapshot_rows.values()) == {1}
    assert {(code, n) for op, code, n, *_ in history if op != 0} == {("a", 3), ("D", 7), ("c", 1), ("zz", 1)}
