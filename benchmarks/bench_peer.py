"""Side by side over TDS: this pipeline vs a peer (dlt) on the same change table of the same server.

One 15-column table (benchmarks/bench_ingestion.py's) with a backlog of N changes on one emulator
server; in the same run, each in its own spawned process (its own peak RSS):

  * pipeline  - the production TablePipeline (change rows over TDS → Parquet → local Snowflake
                MERGE), as bench_ingestion's worker runs it, once with each change reader: the
                default (mssql-python's Arrow batches) and pymssql; changes/s from plan to applied;
  * peer      - dlt 1.31's ``sql_table`` source (pyarrow backend: SQLAlchemy + pymssql, chunks of
                chunk_rows) reading the same change rows (update before-images skipped), merged
                on the primary key into a local DuckDB destination;
  * bare      - a minimal TDS client draining the pipeline's change query undecoded: the rate (in
                changes/s: the reply also holds the update before-images) at
                which the emulator itself serves these rows (the source's limit).

Figures, not assertions: ``python benchmarks/bench_peer.py [--changes 1000000] [--repeat 3]``
(``--changes 1000000,3000000`` shows whether memory stays flat as the backlog grows).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_extract import _bare, _query  # noqa: E402
from benchmarks.bench_ingestion import DB_NAME, _peak_rss_mb, backlog, prepare, worker  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")
READERS = ("mssql-python", "pymssql")  # change_reader of the two pipeline runs (the first: the default's choice)
TABLE = "t00"
INSTANCE = f"dbo_{TABLE}_CT"
CHUNK_ROWS = 20000


def _sqlalchemy_table(port: int, metadata):
    """The change table as SQLAlchemy's Table, from sys.columns (dlt then skips its reflection,
    which asks for catalog views the emulator does not have)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.mssql.base import ischema_names

    from dev.localpipeline import open_source

    source = open_source(port)
    rows = source.query(
        "SELECT c.name, t.name, c.max_length, c.[precision], c.scale FROM sys.columns AS c"
        " INNER JOIN sys.types AS t ON c.user_type_id = t.user_type_id"
        f" WHERE c.object_id = OBJECT_ID(N'cdc.{INSTANCE}') ORDER BY c.column_id"
    )
    source.connection.close()
    columns = []
    for name, type_name, max_length, precision, scale in rows:
        cls = ischema_names[type_name]
        if type_name in ("money", "smallmoney"):  # dlt does not map MONEY; it would infer per chunk
            kind = sa.Numeric(19 if type_name == "money" else 10, 4)
        elif type_name in ("decimal", "numeric"):
            kind = cls(precision, scale)
        elif type_name in ("varchar", "char", "binary", "varbinary"):
            kind = cls(None if max_length == -1 else max_length)
        elif type_name in ("nvarchar", "nchar"):
            kind = cls(None if max_length == -1 else max_length // 2)
        else:
            kind = cls()
        columns.append(sa.Column(name, kind, primary_key=name == "id"))
    return sa.Table(INSTANCE, metadata, *columns, schema="cdc")


def peer(args: tuple[int, str]) -> dict:
    port, workdir = args
    import dlt
    import sqlalchemy as sa
    from dlt.sources.sql_database import sql_table

    from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD

    metadata = sa.MetaData(schema="cdc")
    table = _sqlalchemy_table(port, metadata)

    def skip_before_images(query, _table, _incremental=None, _engine=None):
        return query.where(table.c["__$operation"] != 3).order_by(table.c["__$start_lsn"], table.c["__$seqval"])

    source = sql_table(
        credentials=f"mssql+pymssql://{DEFAULT_LOGIN}:{DEFAULT_PASSWORD}@127.0.0.1:{port}/billing",
        table=INSTANCE,
        schema="cdc",
        metadata=metadata,
        backend="pyarrow",
        chunk_size=CHUNK_ROWS,
        reflection_level="full",
        query_adapter_callback=skip_before_images,
        write_disposition="merge",
        primary_key="id",
    )
    pipeline = dlt.pipeline(
        pipeline_name="peer",
        pipelines_dir=str(Path(workdir) / "dlt"),
        destination=dlt.destinations.duckdb(str(Path(workdir) / "peer.duckdb")),
        dataset_name="raw",
    )
    started = time.monotonic()
    info = pipeline.run(source)
    seconds = time.monotonic() - started
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(INSTANCE.lower(), 0)
    return {"seconds": seconds, "rows": rows, "peak_rss_mb": _peak_rss_mb()}


def bare(args: tuple[int, list[str], bytes]) -> dict:
    port, columns, upper = args
    started = time.monotonic()
    size = _bare(port, _query(columns, b"\x00" * 10, upper))
    return {"seconds": time.monotonic() - started, "bytes": size, "peak_rss_mb": _peak_rss_mb()}


def _database(prefix: str, reader: str) -> str:
    return f"{prefix}_{reader.upper().replace('-', '_')}"


def _in_process(fn, arg):
    with SPAWN.Pool(1) as pool:
        return pool.apply(fn, (arg,))


def run_once(changes: int, workdir: Path, snowflake_port: int, attempt: int) -> dict:
    from dev.localpipeline import open_source
    from dev.mssql_emulator.process import start_server

    db = workdir / f"peer_{changes}_{attempt}.duckdb"
    prepare(db, [TABLE], changes)
    database = f"BENCH_PEER_{changes}_{attempt}"
    server = start_server(db, capture_interval=0, extra_args=DB_NAME)
    try:
        for reader in READERS:  # initial snapshot, one target database per change reader
            _in_process(worker, (TABLE, _database(database, reader), server.port, snowflake_port, None))
    finally:
        server.stop()
    backlog(db, [TABLE], changes)
    server = start_server(db, capture_interval=0, extra_args=DB_NAME)
    try:
        source = open_source(server.port)
        columns = [c.name for c in source.change_table_columns(f"dbo_{TABLE}")]
        upper = source.max_lsn()
        source.connection.close()
        served = _in_process(bare, (server.port, columns, bytes(upper)))
        ours = {
            reader: _in_process(worker, (TABLE, _database(database, reader), server.port, snowflake_port, None, reader))
            for reader in READERS
        }
        theirs = _in_process(peer, (server.port, str(workdir / f"peer_{attempt}")))
    finally:
        server.stop()
    fast, slow = (ours[reader] for reader in READERS)
    return {
        "changes": fast["rows"],
        "pipeline_rate": fast["rows"] / (fast["ended"] - fast["started"]),
        "pipeline_rss": fast["peak_rss_mb"],
        "pymssql_rate": slow["rows"] / (slow["ended"] - slow["started"]),
        # where the default reader's run spent its time (seconds): the read and its conversion to
        # Arrow (overlapping the Parquet writes and uploads), the upload left after the read, the
        # COPY into staging, the MERGE into raw plus the history append and the watermark
        "read_s": fast["timings"]["read_s"],
        "put_s": fast["timings"]["put_s"],
        "copy_s": fast["timings"]["copy_s"],
        "apply_s": fast["apply_s"],
        "total_s": fast["ended"] - fast["started"],
        "pymssql_rss": slow["peak_rss_mb"],
        "peer_rate": theirs["rows"] / theirs["seconds"],
        "peer_rows": theirs["rows"],
        "peer_rss": theirs["peak_rss_mb"],
        "bare_rate": changes / served["seconds"],
        "bare_mb": served["bytes"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", default="1000000", help="backlog sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.getLogger("snowflake.connector").setLevel(logging.WARNING)
    from dev import snowflake_local
    from tests.fixtures_snowflake import free_port

    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        snowflake_local.start(workdir / "snowflake", port=port)
        try:
            print(
                f"{'backlog':>9}{'run':>7}{'pipeline ch/s':>15}{'peak MB':>9}{'(pymssql) ch/s':>16}{'peak MB':>9}"
                f"{'dlt peer ch/s':>15}{'peak MB':>9}{'ratio':>7}{'bare TDS ch/s':>17}"
            )
            for changes in [int(c) for c in args.changes.split(",")]:
                runs = []
                for attempt in range(args.repeat):
                    r = run_once(changes, workdir, port, attempt)
                    runs.append(r)
                    _print(changes, f"#{attempt + 1}", r)
                if len(runs) > 1:
                    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    _print(changes, "median", median)
        finally:
            snowflake_local.stop(workdir / "snowflake")


def _print(changes: int, label: str, r: dict) -> None:
    print(
        f"{changes:>9}{label:>7}{r['pipeline_rate']:>15.0f}{r['pipeline_rss']:>9.0f}"
        f"{r['pymssql_rate']:>16.0f}{r['pymssql_rss']:>9.0f}{r['peer_rate']:>15.0f}"
        f"{r['peer_rss']:>9.0f}{r['pipeline_rate'] / r['peer_rate']:>7.2f}{r['bare_rate']:>17.0f}",
        flush=True,
    )
    stages = ", ".join(f"{k.removesuffix('_s')} {r[k]:.1f}" for k in ("read_s", "put_s", "copy_s", "apply_s"))
    alone = r["changes"] / r["bare_rate"]
    print(f"{'':>16}pipeline seconds: {r['total_s']:.1f} ({stages}; the source alone: {alone:.1f})", flush=True)


if __name__ == "__main__":
    main()
