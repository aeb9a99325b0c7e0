"""Extract benchmark: the change-table read over TDS, by driver, against one emulator server.

One 15-column table (benchmarks/bench_ingestion.py's) with a backlog of N changes; the pipeline's
window query (CdcSource.iter_changes: change table joined to lsn_time_mapping, op 3 skipped) is
read to the end by each reader, each in its own spawned process (its own peak RSS):

  * bare TDS client  - logs in, sends the query, drains the reply without decoding it: the
                       emulator's own serving rate, the ceiling for every driver below;
  * pymssql rows     - CdcSource.iter_changes (fetchmany of chunk_rows), rows only;
  * pymssql → Arrow  - the same plus the pipeline's row → Arrow conversion (what extract does today);
  * connectorx       - Arrow record batches straight from TDS (tiberius), ``arrow_stream`` of
                       chunk_rows; connectorx runs every query twice (schema, then data).

Figures, not assertions: ``python benchmarks/bench_extract.py [--changes 1000000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_ingestion import _peak_rss_mb, backlog, prepare  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")
TABLE = "t00"
INSTANCE = f"dbo_{TABLE}"
CHUNK_ROWS = 20000


def _window(port: int) -> tuple[list[str], bytes, bytes]:
    from dev.localpipeline import open_source

    source = open_source(port)
    columns = [c.name for c in source.change_table_columns(INSTANCE)]
    upper = source.max_lsn()
    source.connection.close()
    assert upper is not None
    return columns, b"\x00" * 10, bytes(upper)


def _query(columns: list[str], low: bytes, high: bytes) -> str:
    """CdcSource.iter_changes's statement with the LSNs inlined (as pymssql would send it)."""
    select = ", ".join(f"ct.[{c}]" for c in columns)
    return (
        f"SELECT ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation], m.tran_end_time, {select}"
        f" FROM cdc.[{INSTANCE}_CT] AS ct INNER JOIN cdc.lsn_time_mapping AS m ON m.start_lsn = ct.[__$start_lsn]"
        f" WHERE ct.[__$start_lsn] > 0x{low.hex()} AND ct.[__$start_lsn] <= 0x{high.hex()}"
        " AND ct.[__$operation] <> 3 ORDER BY ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation]"
    )


def _bare(port: int, sql: str) -> int:
    """A minimal TDS client: PRELOGIN, LOGIN7, one SQL batch; counts reply bytes until EOM."""
    from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD

    sock = socket.create_connection(("127.0.0.1", port))

    def send(kind: int, payload: bytes) -> None:
        sock.sendall(struct.pack(">BBHHBB", kind, 1, len(payload) + 8, 0, 1, 0) + payload)

    buf = bytearray()

    def drain() -> int:
        total = 0
        while True:
            while len(buf) < 8:
                buf.extend(sock.recv(1 << 20))
            status, length = buf[1], struct.unpack(">H", buf[2:4])[0]
            while len(buf) < length:
                buf.extend(sock.recv(1 << 20))
            total += length - 8
            del buf[:length]
            if status & 1:
                return total

    send(0x12, bytes([0xFF]))  # PRELOGIN with no options: the server answers with its own
    drain()
    fields = [("host", "bench"), ("user", DEFAULT_LOGIN), ("password", DEFAULT_PASSWORD), ("app", "bench")]
    fields += [("server", ""), ("unused", ""), ("lib", "bench"), ("lang", ""), ("db", "")]
    fixed = 94
    offsets, data = b"", b""
    for name, value in fields:
        raw = value.encode("utf-16-le")
        if name == "password":
            raw = bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in raw)
        offsets += struct.pack("<HH", fixed + len(data), len(value))
        data += raw
    offsets += b"\x00" * 6 + struct.pack(
        "<HHHHHHI", fixed + len(data), 0, fixed + len(data), 0, fixed + len(data), 0, 0
    )
    head = (
        struct.pack("<IIIIII", fixed + len(data), 0x74000004, 32767, 0, 0, 0) + bytes([0xE0, 0x03, 0, 0]) + b"\x00" * 8
    )
    send(0x10, head + offsets + data)
    drain()
    text = sql.encode("utf-16-le")
    send(0x01, struct.pack("<IIHQI", 22, 18, 2, 0, 1) + text)
    total = drain()
    sock.close()
    return total


def reader(args: tuple[str, int, list[str], bytes, bytes]) -> dict:
    method, port, columns, low, high = args
    sql = _query(columns, low, high)
    started = time.monotonic()
    rows, extra = 0, ""
    if method == "bare TDS client":
        extra = f"{_bare(port, sql) / 1e6:.0f} MB"
        rows = -1
    elif method.startswith("pymssql"):
        from dev.localpipeline import open_source
        from include.cdc_pipeline.extract import parquet_schema, to_arrow
        from include.cdc_pipeline.lsn import Lsn
        from include.cdc_pipeline.types import map_column

        source = open_source(port)
        mappings = [map_column(c) for c in source.change_table_columns(INSTANCE)]
        schema = parquet_schema(mappings)
        started = time.monotonic()
        for chunk in source.iter_changes(INSTANCE, columns, Lsn(low), Lsn(high), CHUNK_ROWS):
            rows += len(chunk)
            if method.endswith("Arrow"):
                to_arrow(chunk, mappings, schema, None)
    else:
        import connectorx as cx

        from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD

        url = f"mssql://{DEFAULT_LOGIN}:{DEFAULT_PASSWORD}@127.0.0.1:{port}/"
        stream = cx.read_sql(url, sql, return_type="arrow_stream", batch_size=CHUNK_ROWS)
        for batch in stream:
            rows += batch.num_rows
    seconds = time.monotonic() - started
    return {"method": method, "rows": rows, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "extra": extra}


METHODS = ["bare TDS client", "pymssql rows", "pymssql → Arrow", "connectorx arrow_stream"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    from dev.mssql_emulator.process import start_server

    methods = [m.strip() for m in args.methods.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        db = Path(tmp) / "bench.duckdb"
        prepare(db, [TABLE], args.changes)
        backlog(db, [TABLE], args.changes)
        server = start_server(db, capture_interval=0, extra_args=["--database-name", "billing"])
        try:
            columns, low, high = _window(server.port)
            print(f"backlog of {args.changes} changes: {args.changes} rows read (update before-images skipped)")
            print(f"{'reader':<26}{'rows/s':>10}{'seconds':>9}{'peak RSS MB':>13}  runs (rows/s)")
            for method in methods:
                runs = []
                for _ in range(args.repeat):
                    with SPAWN.Pool(1) as pool:
                        runs.append(pool.apply(reader, ((method, server.port, columns, low, high),)))
                rows = max(r["rows"] for r in runs) if runs[0]["rows"] >= 0 else args.changes
                rates = [rows / r["seconds"] for r in runs]
                med = statistics.median(r["seconds"] for r in runs)
                print(
                    f"{method:<26}{rows / med:>10.0f}{med:>9.2f}{max(r['peak_rss_mb'] for r in runs):>13.0f}  "
                    + ", ".join(f"{x:.0f}" for x in rates)
                    + (f"  ({runs[0]['extra']})" if runs[0]["extra"] else ""),
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
