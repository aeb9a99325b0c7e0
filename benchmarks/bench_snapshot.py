"""A big table's chunked snapshot: rate with 1 and 2 concurrent chunk workers, and a kill + resume.

A table of N rows (default 5,000,000; eight columns) on the emulator server is snapshotted into
the local Snowflake in key-range chunks (``snapshot_chunk_rows``, default 500,000) by worker
processes — each its own connections, as separate Airflow workers would be — that claim chunks
from the control table until none is left. Printed per run: wall time, rows/s, chunks per worker
and each worker's peak RSS (its ``VmHWM``). Then a single worker is killed with SIGKILL at the
chunk ~60 % of the way (after its MERGE, before it is recorded done: the worst moment) and a new
one resumes: rows read again and seconds lost against an uninterrupted run.

    python benchmarks/bench_snapshot.py                      # 5M rows; 1 and 2 workers; kill at 60 %; 3 runs each
    python benchmarks/bench_snapshot.py --rows 1000000 --repeat 1
    python benchmarks/bench_snapshot.py --workers "" --repeat 2    # the kill and resume alone
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dev import procs, snowflake_local  # noqa: E402
from dev.mssql_emulator import Engine, start_server  # noqa: E402

COLUMNS = (
    "id bigint NOT NULL PRIMARY KEY, account_id int NOT NULL, name nvarchar(60) NULL, amount decimal(18,2) NULL,"
    " created datetime2(6) NULL, status varchar(12) NULL, flag bit NULL, note nvarchar(200) NULL"
)


def config_yaml(database: str, chunk_rows: int) -> str:
    return (
        "name: bench\nschedule: null\nalert_emails: [oncall@example.com]\nchange_reader: pymssql\n"
        f"target: {{database: {database}}}\ntable_defaults: {{snapshot_chunk_rows: {chunk_rows}}}\n"
        "tables:\n  - {schema: dbo, table: big, primary_key: [id]}\n"
    )


def build_source(path: Path, rows: int) -> None:
    """The table, filled by DuckDB directly (its initial state: nothing to capture), CDC enabled."""
    engine = Engine(str(path), db_name="big")
    conn = engine.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("EXEC sys.sp_cdc_enable_db")
    cur.execute(f"CREATE TABLE dbo.big ({COLUMNS})")
    engine.db.execute(
        "INSERT INTO dbo.big SELECT i, i % 5000, 'customer ' || i, (i % 100000) / 100.0,"
        " TIMESTAMP '2026-01-01' + to_microseconds(i * 1000), CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'open' END,"
        f" i % 2 = 0, repeat('x', 40 + i % 60) FROM range({rows}) t(i)"
    )
    cur.execute("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'big', @role_name = NULL")
    conn.close()
    engine.close()


def _pipeline(spec: dict[str, Any]) -> Any:
    import yaml

    from dev.localpipeline import pipelines
    from include.cdc_pipeline.config import SourceConfig
    from include.cdc_pipeline.snapshot import SnapshotWork  # noqa: F401  (imported for the worker)

    config = SourceConfig.model_validate(yaml.safe_load(spec["config"]))
    (pipeline,) = pipelines(config, spec["mssql_port"], spec["snowflake_port"], database="big")
    return pipeline


def worker(spec: dict[str, Any]) -> None:
    """One chunk worker (a process of its own): claim and load chunks until none is left."""
    from include.cdc_pipeline.snapshot import SnapshotWork, run_workers

    pipeline = _pipeline(spec)
    store = pipeline.snapshot_store()
    started = time.monotonic()
    result = run_workers({pipeline.table.name: SnapshotWork(pipeline, store)}, store, spec["owner"])
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print("WORKER " + json.dumps({"owner": spec["owner"], "chunks": result["chunks"], "rows": result["rows"],
                                  "finished": bool(result["finished"]), "seconds": time.monotonic() - started,
                                  "peak_rss_mb": hwm / 1024}), flush=True)  # fmt: skip


def start(spec: dict[str, Any]) -> int:
    """Start and split a snapshot of the table (the plan task's part); its chunk count."""
    pipeline = _pipeline(spec)
    from include.cdc_pipeline.snapshot import SnapshotWork

    snapshot = pipeline.start_snapshot(pipeline.plan())
    store = pipeline.snapshot_store()
    SnapshotWork(pipeline, store).split(snapshot, "splitter")
    return int(store.progress(snapshot.snapshot_id)["chunks"])


def spawn(spec: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def collect(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("WORKER ")]
    return json.loads(lines[-1].removeprefix("WORKER ")) if lines else None


def run(base: dict[str, Any], workers: int, chunk_rows: int) -> dict[str, Any]:
    spec = {**base, "config": config_yaml(f"SNAP_{uuid.uuid4().hex[:8].upper()}", chunk_rows)}
    chunks = start(spec)
    began = time.monotonic()
    procs_ = [spawn({**spec, "owner": f"w{n}"}) for n in range(workers)]
    results = [collect(p) for p in procs_]
    wall = time.monotonic() - began
    rows = sum(r["rows"] for r in results if r)
    return {"workers": workers, "chunks": chunks, "rows": rows, "wall_s": wall, "rows_per_s": rows / wall,
            "per_worker": results}  # fmt: skip


def kill_and_resume(base: dict[str, Any], chunk_rows: int, at: float, scratch: Path) -> dict[str, Any]:
    """One worker killed (SIGKILL) at the chunk ``at`` of the way, then a new one resumes."""
    from include.cdc_pipeline.snapshot import SnapshotStore

    spec = {**base, "config": config_yaml(f"SNAP_{uuid.uuid4().hex[:8].upper()}", chunk_rows)}
    chunks = start(spec)
    victim = int(chunks * at)
    began = time.monotonic()
    # A failpoint fires once per marker directory: a fresh one per kill, or a repeat would not kill.
    markers = tempfile.mkdtemp(dir=scratch, prefix="failpoints-")
    armed = {"CDC_FAILPOINTS": f"kill:after_chunk_merge@-{victim}", "CDC_FAILPOINT_DIR": markers}
    killed = spawn({**spec, "owner": "doomed"}, armed)
    killed.communicate()
    killed_after = time.monotonic() - began
    pipeline = _pipeline(spec)
    t = pipeline.cfg.target
    store = SnapshotStore(lambda: pipeline.warehouse, t.database, t.control_schema, pipeline.cfg.name)
    active = store.active()
    done_before = store.progress(active[0].snapshot_id)["done"]
    store.free([s.snapshot_id for s in active])  # what the next run's plan does
    resumed_at = time.monotonic()
    result = collect(spawn({**spec, "owner": "resumed"}))
    assert result and result["finished"], result
    return {"chunks": chunks, "killed_at_chunk": victim, "returncode": killed.returncode,
            "chunks_done_before_kill": done_before, "killed_after_s": killed_after,
            "resume_s": time.monotonic() - resumed_at, "chunks_after_resume": result["chunks"],
            # chunks read twice: those the resumed worker read beyond the ones never finished before
            "rows_read_again": (result["chunks"] - (chunks - done_before - 1)) * chunk_rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--chunk-rows", type=int, default=500_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=0.6)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its servers
    if args.worker:
        worker(json.loads(args.worker))
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    print(f"# {args.rows:,} rows, chunks of {args.chunk_rows:,}; load average {os.getloadavg()[0]:.2f}", flush=True)
    built = time.monotonic()
    build_source(scratch / "big.duckdb", args.rows)
    print(f"# source built in {time.monotonic() - built:.0f} s", flush=True)
    server = start_server(scratch / "big.duckdb", capture_interval=1.0, log_path=scratch / "mssql.log")
    sf_port = procs.free_port()
    sf_pid = snowflake_local.start(scratch / "snowflake", port=sf_port)
    base = {"mssql_port": server.port, "snowflake_port": sf_port}
    results: dict[int, list[dict[str, Any]]] = {}
    kills = []
    try:
        for _ in range(args.repeat):
            for workers in (int(w) for w in args.workers.split(",") if w):  # --workers "": the kill alone
                figures = run(base, workers, args.chunk_rows)
                print(json.dumps(figures), flush=True)
                results.setdefault(workers, []).append(figures)
            kill = kill_and_resume(base, args.chunk_rows, args.kill_at, scratch)
            print(json.dumps(kill), flush=True)
            kills.append(kill)
    finally:
        snowflake_local.stop_pid(sf_pid)
        server.stop()
    if not results:  # the kill alone: its figures are the lines above
        return
    print(f"\nmedians of {args.repeat}: {args.rows:,} rows in chunks of {args.chunk_rows:,}")
    print("| chunk workers | wall s | rows/s | peak RSS per worker (MB) |\n|---|---|---|---|")
    for workers, runs in sorted(results.items()):
        rss = [w["peak_rss_mb"] for r in runs for w in r["per_worker"] if w]
        wall, rate = statistics.median(r["wall_s"] for r in runs), statistics.median(r["rows_per_s"] for r in runs)
        print(f"| {workers} | {wall:.1f} | {rate:,.0f} | {statistics.median(rss):.0f} |")
    one = statistics.median(r["wall_s"] for r in results.get(1, results[min(results)]))
    lost = [k["killed_after_s"] + k["resume_s"] - one for k in kills]
    print(
        f"\nkill at chunk {kills[0]['killed_at_chunk']} of {kills[0]['chunks']} (SIGKILL after its MERGE), resumed: "
        f"rows read again {statistics.median(k['rows_read_again'] for k in kills):,.0f}, "
        f"seconds lost against one uninterrupted worker {statistics.median(lost):.1f}"
    )


if __name__ == "__main__":
    main()
