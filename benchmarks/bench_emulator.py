"""Benchmark of the SQL Server CDC emulator.

1. Workload generator, bulk mode: N captured changes (default 1,000,000) into a fresh DuckDB file
   (in-process fast path), reported as captured changes/s.
2. Windowed read through the server: every change row of the window (all five capture instances,
   the reader's direct-mode query joined to ``cdc.lsn_time_mapping``), pulled with ``fetchmany``
   by a separate client process; rows/s and peak RSS of client and server.

    python benchmarks/bench_emulator.py                 # 1M changes, 3 read repetitions
    python benchmarks/bench_emulator.py --changes 200000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dev.workload.schema import COLUMNS, TABLES  # noqa: E402


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _peak_rss_mb_of(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def generate(db: Path, changes: int, seed: int) -> dict[str, object]:
    base = [sys.executable, "-m", "dev.workload", "--db", str(db), "--seed", str(seed)]
    subprocess.run(
        [*base, "init", "--accounts", "2000", "--products", "200", "--invoices", "2000"],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        timeout=3600,
    )
    started = time.monotonic()
    out = subprocess.run(
        [*base, "bulk", "--changes", str(changes)],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=7200,
    )
    wall = time.monotonic() - started
    stats = json.loads(out.stdout)
    stats["wall_seconds_incl_startup"] = round(wall, 2)
    return stats


def read_window(port: int, fetch: int) -> dict[str, object]:
    """Runs in the client process: read the whole window of every instance with fetchmany."""
    from dev.mssql_emulator import connect

    conn = connect(server="127.0.0.1", port=port, database="billing")
    cur = conn.cursor()
    cur.execute("SELECT MIN(start_lsn), MAX(start_lsn) FROM cdc.lsn_time_mapping")
    low, high = cur.fetchone()
    cur.execute("SELECT sys.fn_cdc_decrement_lsn(%s)", (low,))
    after = cur.fetchone()[0]
    rows = 0
    started = time.monotonic()
    for table in TABLES:
        cols = ", ".join(f"ct.[{c}]" for c in COLUMNS[table])
        cur.execute(
            # The production reader's query (include/cdc_pipeline/source.py iter_changes): before
            # images included, apply order by command id.
            f"SELECT ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation], m.tran_end_time, ct.[__$command_id], "
            f"{cols} FROM cdc.[dbo_{table}_CT] AS ct INNER JOIN cdc.lsn_time_mapping AS m"
            " ON m.start_lsn = ct.[__$start_lsn] WHERE ct.[__$start_lsn] > %s AND ct.[__$start_lsn] <= %s "
            "ORDER BY ct.[__$start_lsn], ct.[__$command_id], ct.[__$seqval], ct.[__$operation]",
            (after, high),
        )
        while True:
            batch = cur.fetchmany(fetch)
            if not batch:
                break
            rows += len(batch)
    seconds = time.monotonic() - started
    conn.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
        "client_peak_rss_mb": round(peak, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fetch", type=int, default=10_000, help="fetchmany size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db", type=Path, default=None, help="reuse an existing generated database")
    parser.add_argument("--read-client", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_client is not None:
        print(json.dumps(read_window(args.read_client, args.fetch)))
        return 0

    from dev.mssql_emulator import start_server

    workdir = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
    db = args.db or workdir / "billing.duckdb"
    report: dict[str, object] = {"changes_requested": args.changes}
    if args.db is None:
        gen = generate(db, args.changes, args.seed)
        report["generator"] = {
            "captured_changes": gen["captured_changes"],
            "transactions": gen["committed"],
            "seconds": gen["seconds"],
            "changes_per_second": gen["changes_per_second"],
            "wall_seconds_incl_startup": gen["wall_seconds_incl_startup"],
        }
        print("generator:", json.dumps(report["generator"]), flush=True)
    server = start_server(db, capture_interval=0, log_path=workdir / "server.log", timeout=120)
    reads = []
    try:
        for _ in range(args.repeat):
            out = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--read-client",
                    str(server.port),
                    "--fetch",
                    str(args.fetch),
                ],
                cwd=ROOT,
                env=_env(),
                check=True,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            reads.append(result)
            print("read:", json.dumps(result), flush=True)
        server_peak = _peak_rss_mb_of(server.pid)
    finally:
        server.stop()
    report["read"] = {
        "rows": reads[0]["rows"],
        "median_rows_per_second": statistics.median(r["rows_per_second"] for r in reads),
        "median_seconds": statistics.median(r["seconds"] for r in reads),
        "client_peak_rss_mb": max(r["client_peak_rss_mb"] for r in reads),
        "server_peak_rss_mb": round(server_peak, 1) if server_peak else None,
        "fetchmany": args.fetch,
        "repetitions": len(reads),
    }
    report["db_size_mb"] = round(db.stat().st_size / 2**20, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
