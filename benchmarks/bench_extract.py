"""Extract benchmark: the change-table read over TDS, by driver, against one emulator server.

One 15-column table (benchmarks/bench_ingestion.py's) with a backlog of N changes; the pipeline's
window query (CdcSource.iter_changes: change table outer-joined to lsn_time_mapping, update
before-images included, so N changes are 1.5 N rows) is read to the end by each reader, each in
its own spawned process (its own peak RSS):

  * bare TDS client  - logs in, sends the query, drains the reply without decoding it: the
                       emulator's own serving rate, the ceiling for every driver below;
  * pymssql rows     - CdcSource.iter_changes (fetchmany of chunk_rows), rows only;
  * pymssql → Arrow  - the same plus the pipeline's row → Arrow conversion (change_reader pymssql);
  * connectorx       - Arrow record batches straight from TDS (tiberius), ``arrow_stream`` of
                       chunk_rows; connectorx runs every query twice (schema, then data);
  * mssql-python     - Microsoft's driver (the pipeline's default change reader), the LSNs as
                       parameters (sp_executesql), per ODBC provider (``msodbcsql18``: Microsoft ODBC
                       Driver 18, needs the system library libltdl7; ``mssql-odbc``: the Rust driver):
                       rows (``fetchmany``), the driver's own Arrow batches (``arrow_batch``), and
                       those batches brought to the pipeline's Parquet schema
                       (``arrow_changes.batch_to_table``, what the pipeline's Arrow extract writes).

Figures, not assertions: ``python benchmarks/bench_extract.py [--changes 1000000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
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


def _window(port: int) -> tuple[list[str], bytes, bytes, int]:
    """The change table's columns, the whole window (0 → max LSN) and how many rows it holds."""
    from dev.localpipeline import open_source

    source = open_source(port)
    columns = [c.name for c in source.change_table_columns(INSTANCE)]
    upper = source.max_lsn()
    assert upper is not None
    cur = source.connection.cursor()
    cur.execute(f"SELECT count(*) FROM cdc.[{INSTANCE}_CT] WHERE [__$start_lsn] <= 0x{bytes(upper).hex()}")
    count = cur.fetchone()[0]
    source.connection.close()
    return columns, b"\x00" * 10, bytes(upper), count


def _query(columns: list[str], low: bytes | None = None, high: bytes | None = None) -> str:
    """CdcSource.iter_changes's statement, the LSNs inlined (as pymssql sends them) or, without
    them, as ``?`` parameters."""
    select = ", ".join(f"ct.[{c}]" for c in columns)
    bounds = (f"0x{low.hex()}", f"0x{high.hex()}") if low is not None and high is not None else ("?", "?")
    return (
        "SELECT ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation], m.tran_end_time, ct.[__$command_id],"
        f" {select} FROM cdc.[{INSTANCE}_CT] AS ct"
        " LEFT JOIN cdc.lsn_time_mapping AS m ON m.start_lsn = ct.[__$start_lsn]"
        f" WHERE ct.[__$start_lsn] > {bounds[0]} AND ct.[__$start_lsn] <= {bounds[1]}"
        " ORDER BY ct.[__$start_lsn], ct.[__$command_id], ct.[__$seqval], ct.[__$operation]"
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
    elif method.startswith("mssql-python"):
        rows = _mssql_python(method, port, columns, low, high)
    else:
        import connectorx as cx

        from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD

        url = f"mssql://{DEFAULT_LOGIN}:{DEFAULT_PASSWORD}@127.0.0.1:{port}/"
        stream = cx.read_sql(url, sql, return_type="arrow_stream", batch_size=CHUNK_ROWS)
        for batch in stream:
            rows += batch.num_rows
    seconds = time.monotonic() - started
    return {"method": method, "rows": rows, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "extra": extra}


def _mssql_python(method: str, port: int, columns: list[str], low: bytes, high: bytes) -> int:
    """One mssql-python reader; the provider is chosen per process, before the first connection."""
    provider = method[method.index("(") + 1 : method.index(")")]
    os.environ["MSSQL_PYTHON_NATIVE_PROVIDER"] = provider
    import mssql_python

    from dev.localpipeline import open_source
    from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD
    from include.cdc_pipeline.arrow_changes import batch_to_table
    from include.cdc_pipeline.extract import parquet_schema
    from include.cdc_pipeline.types import map_column

    source = open_source(port)
    mappings = [map_column(c) for c in source.change_table_columns(INSTANCE)]
    source.connection.close()
    schema = parquet_schema(mappings)
    conn = mssql_python.connect(
        f"Server=tcp:127.0.0.1,{port};Database=billing;UID={DEFAULT_LOGIN};PWD={DEFAULT_PASSWORD};"
        "Encrypt=no;TrustServerCertificate=yes"
    )
    assert mssql_python.native_provider == provider, mssql_python.native_provider
    cur = conn.cursor()
    cur.execute(_query(columns), (low, high))
    rows = 0
    if " rows " in f"{method} ":
        while chunk := cur.fetchmany(CHUNK_ROWS):
            rows += len(chunk)
    else:
        while (batch := cur.arrow_batch(CHUNK_ROWS)).num_rows:
            rows += batch.num_rows
            if "pipeline" in method:
                batch_to_table(batch, mappings, schema, None)
    conn.close()
    return rows


METHODS = ["bare TDS client", "pymssql rows", "pymssql → Arrow", "connectorx arrow_stream"]
MSSQL_PYTHON = [
    f"mssql-python {kind} ({provider})"
    for provider in ("msodbcsql18", "mssql-odbc")
    for kind in ("rows", "Arrow", "Arrow → pipeline schema")
]
if importlib.util.find_spec("mssql_python") is not None:
    METHODS += MSSQL_PYTHON


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
            columns, low, high, count = _window(server.port)
            print(f"backlog of {args.changes} changes: {count} change-table rows read (update before-images too)")
            print(f"{'reader':<52}{'rows/s':>10}{'seconds':>9}{'peak RSS MB':>13}  runs (rows/s)")
            for method in methods:
                runs = []
                for _ in range(args.repeat):
                    with SPAWN.Pool(1) as pool:
                        runs.append(pool.apply(reader, ((method, server.port, columns, low, high),)))
                short = [r["rows"] for r in runs if r["rows"] not in (-1, count)]
                if short:
                    raise SystemExit(f"{method} read {short} rows, not the window's {count}")
                rates = [count / r["seconds"] for r in runs]
                med = statistics.median(r["seconds"] for r in runs)
                print(
                    f"{method:<52}{count / med:>10.0f}{med:>9.2f}{max(r['peak_rss_mb'] for r in runs):>13.0f}  "
                    + ", ".join(f"{x:.0f}" for x in rates)
                    + (f"  ({runs[0]['extra']})" if runs[0]["extra"] else ""),
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
