"""Benchmark the local Snowflake: start-to-ready time and PUT + COPY throughput of Parquet.

    python benchmarks/bench_snowflake_local.py [--rows 200000] [--repeat 3]

Prints the median of ``--repeat`` runs for: server start until a real login + SELECT 1 succeeds,
PUT of one Parquet file (rows × 15 columns, the type mix of a CDC batch), COPY INTO a staging
table with MATCH_BY_COLUMN_NAME, and — for scale — the MERGE of that batch into a raw table.
Uses its own server on a free port in a temporary directory; stops it by pid at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import socket
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dev import snowflake_local as sl

COLUMNS_DDL = """
ID NUMBER(38,0), CUSTOMER_ID NUMBER(38,0), AMOUNT NUMBER(18,2), BALANCE NUMBER(38,4), QTY INT,
CREATED_AT TIMESTAMP_NTZ, UPDATED_AT TIMESTAMP_TZ, DUE DATE, FLAG BOOLEAN, NAME VARCHAR, EMAIL VARCHAR,
NOTE VARCHAR, RATE FLOAT, LSN BINARY, SEQVAL BINARY
"""


def make_table(rows: int) -> pa.Table:
    """rows × 15 columns with the types a SQL Server CDC batch produces."""
    base = dt.datetime(2024, 1, 1)
    ids = list(range(rows))
    return pa.table(
        {
            "ID": pa.array(ids, pa.int64()),
            "CUSTOMER_ID": pa.array([i % 5000 for i in ids], pa.int64()),
            "AMOUNT": pa.array([Decimal(i % 100000) / 100 for i in ids], pa.decimal128(18, 2)),
            "BALANCE": pa.array([Decimal(i) / 10000 for i in ids], pa.decimal128(38, 4)),
            "QTY": pa.array([i % 50 for i in ids], pa.int32()),
            "CREATED_AT": pa.array([base + dt.timedelta(seconds=i) for i in ids], pa.timestamp("us")),
            "UPDATED_AT": pa.array(
                [base.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in ids], pa.timestamp("us", tz="UTC")
            ),
            "DUE": pa.array([(base + dt.timedelta(days=i % 365)).date() for i in ids], pa.date32()),
            "FLAG": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
            "NAME": pa.array([f"customer {i}" for i in ids], pa.string()),
            "EMAIL": pa.array([f"c{i}@example.com" for i in ids], pa.string()),
            "NOTE": pa.array([None if i % 3 else "note" for i in ids], pa.large_string()),
            "RATE": pa.array([i / 7 for i in ids], pa.float64()),
            "LSN": pa.array([(i // 10).to_bytes(10, "big") for i in ids], pa.binary(10)),
            "SEQVAL": pa.array([i.to_bytes(10, "big") for i in ids], pa.binary(10)),
        }
    )


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind((sl.DEFAULT_HOST, 0))
        return int(sock.getsockname()[1])


def bench_start(repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench_sf_start_") as tmp:
            started = time.perf_counter()
            pid = sl.start(Path(tmp), free_port())
            times.append(time.perf_counter() - started)
            sl.stop_pid(pid)
    return times


def bench_load(rows: int, repeat: int) -> dict[str, list[float]]:
    import snowflake.connector

    out: dict[str, list[float]] = {"put": [], "copy": [], "merge": []}
    with tempfile.TemporaryDirectory(prefix="bench_sf_load_") as tmp:
        path = Path(tmp) / "batch.parquet"
        pq.write_table(make_table(rows), path)
        pid = sl.start(Path(tmp) / "sf", port := free_port())
        try:
            with contextlib.closing(snowflake.connector.connect(**sl.connection_params(port))) as boot:
                cur = boot.cursor()
                cur.execute("CREATE DATABASE IF NOT EXISTS BENCH")
                cur.execute("CREATE SCHEMA IF NOT EXISTS BENCH.STAGING")
                cur.execute("CREATE SCHEMA IF NOT EXISTS BENCH.RAW")
                cur.execute("CREATE STAGE IF NOT EXISTS BENCH.STAGING.STG")
            params = sl.connection_params(port, database="BENCH", schema="STAGING")
            with contextlib.closing(snowflake.connector.connect(**params)) as conn:
                cur = conn.cursor()
                for run in range(repeat):
                    cur.execute(f"CREATE OR REPLACE TRANSIENT TABLE BENCH.STAGING.BATCH ({COLUMNS_DDL})")
                    cur.execute(f"CREATE OR REPLACE TABLE BENCH.RAW.TARGET ({COLUMNS_DDL})")
                    t0 = time.perf_counter()
                    cur.execute(f"PUT file://{path} @BENCH.STAGING.STG/batch/run{run}/")
                    t1 = time.perf_counter()
                    (res,) = cur.execute(
                        f"COPY INTO BENCH.STAGING.BATCH FROM @BENCH.STAGING.STG/batch/run{run}/"
                        " FILE_FORMAT=(TYPE=PARQUET BINARY_AS_TEXT=FALSE) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"
                    ).fetchall()
                    t2 = time.perf_counter()
                    assert res[1] == "LOADED" and res[3] == rows, res
                    cur.execute(
                        "MERGE INTO BENCH.RAW.TARGET t USING (SELECT * FROM BENCH.STAGING.BATCH"
                        " QUALIFY ROW_NUMBER() OVER (PARTITION BY ID ORDER BY LSN DESC, SEQVAL DESC) = 1) s"
                        " ON t.ID = s.ID WHEN MATCHED AND s.LSN > t.LSN THEN UPDATE SET t.AMOUNT = s.AMOUNT,"
                        " t.LSN = s.LSN WHEN NOT MATCHED THEN INSERT (ID, CUSTOMER_ID, AMOUNT, BALANCE, QTY,"
                        " CREATED_AT, UPDATED_AT, DUE, FLAG, NAME, EMAIL, NOTE, RATE, LSN, SEQVAL) VALUES (s.ID,"
                        " s.CUSTOMER_ID, s.AMOUNT, s.BALANCE, s.QTY, s.CREATED_AT, s.UPDATED_AT, s.DUE, s.FLAG,"
                        " s.NAME, s.EMAIL, s.NOTE, s.RATE, s.LSN, s.SEQVAL)"
                    )
                    t3 = time.perf_counter()
                    out["put"].append(t1 - t0)
                    out["copy"].append(t2 - t1)
                    out["merge"].append(t3 - t2)
        finally:
            sl.stop_pid(pid)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = statistics.median(bench_start(args.repeat))
    print(f"server start → ready (login + SELECT 1): median {start:.2f} s over {args.repeat}")
    load = bench_load(args.rows, args.repeat)
    put, copy, merge = (statistics.median(load[k]) for k in ("put", "copy", "merge"))
    print(f"PUT  {args.rows} rows × 15 cols Parquet: median {put:.2f} s")
    print(f"COPY {args.rows} rows × 15 cols Parquet: median {copy:.2f} s")
    print(f"PUT+COPY: median {put + copy:.2f} s → {args.rows / (put + copy):,.0f} rows/s")
    print(f"MERGE of the batch into an empty table (for scale): median {merge:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
