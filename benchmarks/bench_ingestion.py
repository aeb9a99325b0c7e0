"""Ingestion benchmark: a CDC backlog streamed end to end (emulator server → Parquet → local Snowflake).

Scenarios (each table pipeline runs in a fresh worker process, so its peak RSS is its own):
  * one 15-column table with a backlog of 100,000 and of 1,000,000 changes (half inserts, half
    updates of those rows) — memory must not grow with the backlog;
  * ten such tables with 100,000 changes each, replicated in parallel by --workers processes
    (default 4, like the cdc_snowflake pool on a small worker).

Prints changes/s end to end (plan + extract_load + apply, measured inside the worker: a task process
of Airflow has its imports done already), MB/s of change data (Arrow, uncompressed), peak RSS per
worker and its working set (peak minus the RSS after imports and connections), and the wall time
including the start of the worker processes.
Figures, not assertions: run `make bench` or
`python benchmarks/bench_ingestion.py [--quick] [--repeat 3] [--only one_100k,one_1m] [--chunk-rows N]`.
The backlog is written with the emulator's bulk path (the same change-table rows the capture job
would write), so generating it is not part of what is measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS_DDL = (
    "id bigint NOT NULL PRIMARY KEY, c1 int NOT NULL, c2 int NULL, c3 bigint NOT NULL, c4 decimal(18,2) NOT NULL,"
    " c5 decimal(18,4) NULL, c6 money NOT NULL, c7 float NULL, c8 varchar(40) NOT NULL, c9 nvarchar(100) NULL,"
    " c10 datetime2(3) NOT NULL, c11 date NULL, c12 bit NOT NULL, c13 uniqueidentifier NOT NULL,"
    " c14 varchar(20) NOT NULL"
)
ROWS_PER_TX = 100
DB_NAME = ["--database-name", "billing"]  # the database the workers' pymssql connections name
# Workers are spawned, not forked: a forked child shares the memory this process used to generate
# the backlog (it grows with the backlog), which an Airflow task process does not have.
SPAWN = multiprocessing.get_context("spawn")


def _images(ids: range, version: int) -> dict[str, pa.Array]:
    n = len(ids)
    base = datetime(2026, 1, 1)
    return {
        "id": pa.array(ids, pa.int64()),
        "c1": pa.array([i % 1000 + version for i in ids], pa.int32()),
        "c2": pa.array([None if i % 10 == 0 else i for i in ids], pa.int32()),
        "c3": pa.array([i * 7 for i in ids], pa.int64()),
        "c4": pa.array([Decimal(i % 100000) / 100 for i in ids], pa.decimal128(18, 2)),
        "c5": pa.array([Decimal(i % 100000) / 10000 for i in ids], pa.decimal128(18, 4)),
        "c6": pa.array([Decimal(version * 1000 + i % 1000) / 100 for i in ids], pa.decimal128(19, 4)),
        "c7": pa.array([i / 3 for i in ids], pa.float64()),
        "c8": pa.array([f"sku-{i:010d}" for i in ids], pa.string()),
        "c9": pa.array([f"name {i} v{version} ✓" for i in ids], pa.string()),
        "c10": pa.array([base] * n, pa.timestamp("us")),
        "c11": pa.array([base.date()] * n, pa.date32()),
        "c12": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
        "c13": pa.array([f"{i:08x}-0000-4000-8000-000000000000" for i in ids], pa.string()),
        "c14": pa.array(["updated" if version else "new"] * n, pa.string()),
    }


def make_backlog(engine, table: str, changes: int) -> None:
    """``changes`` captured changes on dbo.<table>: inserts of changes/2 keys, then an update of each."""
    from dev.mssql_emulator.bulk import bulk_apply

    keys = changes // 2
    chunk = 100_000
    for phase, op_pairs in ((0, [2]), (1, [3, 4])):
        for start in range(0, keys, chunk):
            ids = range(start, min(start + chunk, keys))
            n = len(ids)
            txs = (n + ROWS_PER_TX - 1) // ROWS_PER_TX
            per_row = 1 if phase == 0 else 2  # LSNs per row, as the SQL path allocates them
            tx_cols = {"tx": [], "tran_off": [], "begin_off": [], "commit_off": []}
            rows = {"__tx": [], "__seq": [], "__op": [], "__cmd": []}
            offset = 0
            for t in range(txs):
                size = min(ROWS_PER_TX, n - t * ROWS_PER_TX)
                begin = offset
                for r in range(size):
                    for op in op_pairs:
                        rows["__tx"].append(t)
                        rows["__seq"].append(begin + 1 + r)
                        rows["__op"].append(op)
                        rows["__cmd"].append(r + 1)
                offset = begin + 1 + per_row * size
                for k, v in (("tx", t), ("tran_off", t), ("begin_off", begin), ("commit_off", offset)):
                    tx_cols[k].append(v)
                offset += 1
            images = []
            for op in op_pairs:
                images.append(_images(ids, version=0 if op in (2, 3) else 1))
            # interleave images in the same order as rows: for each row, one image per op
            columns = {}
            for name in images[0]:
                if len(images) == 1:
                    columns[name] = images[0][name]
                else:
                    a, b = images[0][name].to_pylist(), images[1][name].to_pylist()
                    columns[name] = pa.array([v for pair in zip(a, b, strict=True) for v in pair], images[0][name].type)
            changes_table = pa.table({**{k: pa.array(v, pa.int64()) for k, v in rows.items()}, **columns})
            bulk_apply(
                engine,
                total_lsns=offset,
                total_trans=txs,
                transactions=pa.table({k: pa.array(v, pa.int64()) for k, v in tx_cols.items()}),
                changes={f"dbo.{table}": changes_table},
            )


def prepare(db_path: Path, tables: list[str], changes: int) -> None:
    from dev.mssql_emulator import Engine

    engine = Engine(str(db_path))
    conn = engine.connect()
    cur = conn.cursor()
    cur.execute("EXEC sys.sp_cdc_enable_db")
    conn.commit()
    for table in tables:
        cur.execute(f"CREATE TABLE dbo.{table} ({COLUMNS_DDL})")
        conn.commit()
        cur.execute(f"EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'{table}', @role_name=NULL")
        conn.commit()
    engine.capture_all()
    conn.close()
    engine.close()


def backlog(db_path: Path, tables: list[str], changes: int) -> None:
    from dev.mssql_emulator import Engine

    engine = Engine(str(db_path))
    for table in tables:
        make_backlog(engine, table, changes)
    engine.close()


def _config(table: str, database: str, chunk_rows: int | None = None, change_reader: str = "auto"):
    from include.cdc_pipeline.config import SourceConfig

    return SourceConfig.model_validate(
        {
            "name": "bench",
            "target": {"database": database},
            "alert_emails": ["bench@example.com"],
            "tables": [{"schema": "dbo", "table": table, "primary_key": ["id"]}],
            "change_reader": change_reader,
            **({"chunk_rows": chunk_rows} if chunk_rows else {}),
        }
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that over fork and exec,
    so a worker would report the parent's RSS (which grew while it generated the backlog)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def worker(args: tuple) -> dict:
    """One table's pipeline run in its own process; returns its result and peak RSS.
    ``args``: table, database, mssql_port, snowflake_port, chunk_rows[, change_reader]."""
    table, database, mssql_port, snowflake_port, chunk_rows, *rest = args
    change_reader = rest[0] if rest else "auto"
    import logging

    logging.getLogger("snowflake.connector").setLevel(logging.WARNING)
    from dev.localpipeline import MemoryHints, open_source, open_warehouse
    from include.cdc_pipeline.pipeline import TablePipeline

    config = _config(table, database, chunk_rows, change_reader)
    hints = MemoryHints()
    pipeline = TablePipeline(
        config, config.tables[0], lambda: open_source(mssql_port), lambda: open_warehouse(snowflake_port), hints
    )
    _ = (pipeline.source, pipeline.warehouse)  # connect first: the working set below is the run's own
    start_rss = _rss_mb()
    started = time.time()
    result = pipeline.run_once()
    result["started"], result["ended"] = started, time.time()
    result["peak_rss_mb"] = _peak_rss_mb()
    result["working_mb"] = result["peak_rss_mb"] - start_rss
    return result


def scenario(
    label: str,
    tables: list[str],
    changes: int,
    workdir: Path,
    snowflake_port: int,
    workers: int,
    chunk_rows: int | None,
) -> dict:
    from dev.mssql_emulator.process import start_server

    db = workdir / f"{label}.duckdb"
    prepare(db, tables, changes)
    server = start_server(db, capture_interval=0, extra_args=DB_NAME)
    database = f"BENCH_{label.upper()}"
    try:
        with ProcessPoolExecutor(max_workers=len(tables), mp_context=SPAWN) as pool:
            # Initial snapshot of the empty tables sets the watermarks (not measured).
            list(pool.map(worker, [(t, database, server.port, snowflake_port, chunk_rows) for t in tables]))
        server.stop()
        backlog(db, tables, changes)
        server = start_server(db, capture_interval=0, extra_args=DB_NAME)
        started = time.monotonic()
        with ProcessPoolExecutor(max_workers=min(workers, len(tables)), mp_context=SPAWN) as pool:
            results = list(pool.map(worker, [(t, database, server.port, snowflake_port, chunk_rows) for t in tables]))
        wall = time.monotonic() - started
    finally:
        server.stop()
    total = sum(r["rows"] for r in results)
    mb = sum(r["timings"]["arrow_bytes"] for r in results) / 1e6
    # Pipeline time: from the first table's start to the last table's end, inside the workers
    # (an Airflow worker process has its imports done; starting Python processes is not measured).
    busy = max(r["ended"] for r in results) - min(r["started"] for r in results)
    return {
        "scenario": label,
        "tables": len(tables),
        "changes": total,
        "wall_s": wall,
        "pipeline_s": busy,
        "changes_per_s": total / busy,
        "mb_per_s": mb / busy,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "working_mb": max(r["working_mb"] for r in results),
        "extract_s": statistics.median(r["timings"]["total_s"] for r in results),
        "apply_s": statistics.median(r["apply_s"] for r in results),
    }


SCENARIOS = {
    "one_100k": (["t00"], 100_000),
    "one_300k": (["t00"], 300_000),
    "one_1m": (["t00"], 1_000_000),
    "one_3m": (["t00"], 3_000_000),
    "ten_100k": ([f"t{i:02d}" for i in range(10)], 100_000),
}
COLUMNS = ["tables", "changes", "wall_s", "pipeline_s", "changes_per_s", "mb_per_s", "peak_rss_mb", "working_mb",
           "extract_s", "apply_s"]  # fmt: skip


def _row(label: str, r: dict) -> str:
    return (
        f"{label:<17}{r['tables']:>7}{r['changes']:>10}{r['wall_s']:>8.1f}{r['pipeline_s']:>11.1f}"
        f"{r['changes_per_s']:>11.0f}{r['mb_per_s']:>7.1f}{r['peak_rss_mb']:>13.0f}{r['working_mb']:>12.0f}"
        f"{r['extract_s']:>11.1f}{r['apply_s']:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k changes only (a smoke run)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median row is printed last")
    parser.add_argument("--workers", type=int, default=4, help="tables replicated at once (Airflow pool slots)")
    parser.add_argument("--chunk-rows", type=int, default=None, help="override the config's chunk_rows")
    parser.add_argument(
        "--only", default="one_100k,one_300k,one_1m,ten_100k", help=f"scenarios, of {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args()
    from dev import snowflake_local
    from tests.fixtures_snowflake import free_port

    names = ["one_100k"] if args.quick else [n.strip() for n in args.only.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-ingestion-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        pid = snowflake_local.start(workdir / "snowflake", port=port)
        try:
            print(
                f"{'scenario':<17}{'tables':>7}{'changes':>10}{'wall s':>8}{'pipeline s':>11}{'changes/s':>11}"
                f"{'MB/s':>7}{'peak RSS MB':>13}{'working MB':>12}{'extract s':>11}{'apply s':>9}"
            )
            for name in names:
                tables, changes = SCENARIOS[name]
                runs = []
                for attempt in range(args.repeat):
                    r = scenario(f"{name}_{attempt}", tables, changes, workdir, port, args.workers, args.chunk_rows)
                    runs.append(r)
                    print(_row(f"{name} #{attempt + 1}", r), flush=True)
                if len(runs) > 1:
                    median = {k: statistics.median(r[k] for r in runs) for k in COLUMNS}
                    print(_row(f"{name} median", median), flush=True)
        finally:
            snowflake_local.stop(workdir / "snowflake")
            del pid


if __name__ == "__main__":
    main()
