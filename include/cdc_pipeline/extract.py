"""Extract + load: a window's rows from SQL Server into the batch's Snowflake staging table.

Two entry points, one per kind of window, sharing the same machinery (rows → Arrow → Parquet chunks
→ stage → ``COPY INTO`` staging, with bounded memory and overlapped read / convert / upload):

* ``extract_snapshot``: the table itself, in key order, positioned at the max LSN read *before* it
  (the snapshot → stream handoff);
* ``extract_stream``: the change table between two LSNs, in apply order, update pairs whose key
  changed turned into deletes, commit times filled in where ``lsn_time_mapping`` has none, and the
  retention gap checked again once the window was read. The rows come as Arrow batches through
  mssql-python when the source config's ``change_reader`` allows it for the table
  (``arrow_changes``), as pymssql rows otherwise; both end as the same Parquet rows.

Also ``Batch`` (a loaded window, as it travels to the apply task). Deciding the window is
``planner``'s concern; applying the batch ``apply``'s; the T-SQL is ``source``'s, the Snowflake SQL
``snowflake_sql``'s.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from include.cdc_pipeline import snowflake_sql as q
from include.cdc_pipeline.arrow_changes import (
    META_WIDTH,
    OP_UPDATE_AFTER,
    OP_UPDATE_BEFORE,
    arrow_key_moves_as_deletes,
    arrow_unfit,
    batch_to_table,
    commit_times_utc,
)
from include.cdc_pipeline.config import ChangeReader, SourceConfig, TableConfig
from include.cdc_pipeline.errors import CdcError, DriverLoadError, TableConfigError, ValueTooLargeError
from include.cdc_pipeline.failpoints import failpoint
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.planner import Planner, Window
from include.cdc_pipeline.progress import Progress
from include.cdc_pipeline.snowflake_sql import (
    MAX_BINARY_BYTES,
    MAX_VARCHAR_BYTES,
    OP_DELETE,
    OP_SNAPSHOT,
    ZERO_SEQVAL,
    TableLayout,
)
from include.cdc_pipeline.source import CdcSource
from include.cdc_pipeline.sql import tsql_name
from include.cdc_pipeline.stages import Stage
from include.cdc_pipeline.types import ColumnMapping, arrow_column
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

Rows = Iterator[list[tuple[Any, ...]]]
T = TypeVar("T")


@dataclass
class Batch:
    """A window that is loaded into the staging table, ready to apply."""

    window: Window
    batch_id: str
    stage_path: str
    rows: int
    columns: list[dict[str, Any]]
    upper_committed_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # the driver that read the rows: "mssql-python", "pymssql" or "pymssql (fallback: <why>)"
    reader: str = ""
    # Snowflake ids of the COPY step's statements: the batch's credits (governance/credits.py)
    query_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = self.window.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Batch:
        data = dict(data)
        data["window"] = Window(**data["window"])
        return cls(**data)


@dataclass
class ExtractContext:
    """What extracting one table's window needs, resolved by the pipeline facade. The warehouse
    and the stage are opened on first use: every check against the source comes first."""

    cfg: SourceConfig
    table: TableConfig
    label: str
    source: CdcSource
    warehouse: Callable[[], Warehouse]
    stage: Callable[[], Stage]
    mappings: list[ColumnMapping]
    layout: TableLayout
    salt: str | None
    progress_every: float

    @property
    def names(self) -> list[str]:
        return [m.source.name for m in self.mappings]


@dataclass
class _Staged:
    """A window's rows as Parquet files on the stage, not yet copied into the staging table."""

    window: Window
    stage: Stage
    batch_id: str
    stage_path: str
    rows: int
    started: float
    timings: dict[str, float]


def check_key_not_nullable(source: CdcSource, table: TableConfig, label: str) -> None:
    """A key column that allows NULL is refused rather than handled: Snowflake's MERGE never
    matches NULL = NULL, so every change of such a row would add a row to raw and its delete
    would never find it. (SQL Server allows one NULL in a unique index, so a unique index on a
    nullable column is no primary key for replication.)"""
    nullable = source.nullable_columns(table.source_schema, table.table)
    for column in table.primary_key:
        if column.lower() in nullable:
            raise CdcError(
                f"{label}: primary_key column {column!r} is nullable in the source table; a NULL key "
                "cannot be merged. Make the column NOT NULL, or configure a key of NOT NULL columns."
            )


def snapshot_columns(
    source: CdcSource, table: TableConfig, label: str, names: Sequence[str]
) -> tuple[list[str], Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
    """The columns a snapshot can select from the source table, and how to widen its rows to
    ``names``: a captured column dropped from the source table stays in the change table (NULL
    from then on), so the snapshot reads NULL for it as well."""
    present = {c.lower() for c in source.table_columns(table.source_schema, table.table)}
    absent = [n for n in names if n.lower() not in present]
    if not absent:
        return list(names), lambda row: row
    log.warning(
        "%s: column(s) %s were dropped from the source table; the change table still has them (NULL)",
        label,
        absent,
    )
    selected = [n for n in names if n.lower() in present]
    slots = [selected.index(n) if n.lower() in present else None for n in names]
    return selected, lambda row: tuple(None if i is None else row[i] for i in slots)


@dataclass(frozen=True)
class ChunkRead:
    """One key range of a snapshot to read: ``(after, through]`` of the primary key (None: open
    end), tagged with the chunk's low LSN (the source's max LSN read before the chunk's rows; every
    row of the chunk carries it) and that LSN's commit time."""

    snapshot_id: str
    chunk_no: int
    capture_instance: str
    low_lsn: str
    committed: datetime | None
    after: tuple[Any, ...] | None
    through: tuple[Any, ...] | None

    @property
    def stage_path(self) -> str:
        return f"snapshot/{self.snapshot_id}/c{self.chunk_no:06d}"


def extract_snapshot_chunk(ctx: ExtractContext, chunk: ChunkRead) -> Batch:
    """A snapshot chunk: the table's rows in ``(chunk.after, chunk.through]`` in key order (keyset
    pages) → Parquet → stage → COPY into the chunk's own staging table (``ctx.layout``'s), every
    row tagged with the chunk's low LSN (snapshot.py explains why that is exact whatever the stream
    does meanwhile)."""
    started = time.monotonic()
    window = Window(
        "snapshot",
        chunk.capture_instance,
        lower=None,
        upper=chunk.low_lsn,
        reason=f"snapshot {chunk.snapshot_id} chunk {chunk.chunk_no}",
    )
    meta = (chunk.low_lsn, ZERO_SEQVAL, OP_SNAPSHOT, chunk.committed, 0)
    by_name = {m.source.name.lower(): m.source for m in ctx.mappings}
    key = [by_name[k.lower()] for k in ctx.table.primary_key]
    selected, widen = snapshot_columns(ctx.source, ctx.table, ctx.label, ctx.names)
    pages = ctx.source.iter_snapshot(
        ctx.table.source_schema,
        ctx.table.table,
        selected,
        key,
        ctx.cfg.chunk_rows,
        after=chunk.after,
        through=chunk.through,
    )
    rows = ([(*meta, *widen(row)) for row in page] for page in pages)
    estimate = (tsql_name(ctx.table.source_schema, ctx.table.table), "table's row-count estimate")
    staged = _stage(
        ctx,
        window,
        _rows_to_arrow(ctx, _prefetch(rows)),
        estimate,
        started,
        path=chunk.stage_path,
        batch_id=f"{chunk.snapshot_id}:{chunk.chunk_no}",
    )
    batch = _copy(ctx, staged, untimed=set())
    batch.reader = "pymssql"  # snapshots read keyset pages with typed parameters (README "Over TDS")
    return batch


def extract_stream(
    ctx: ExtractContext, window: Window, planner: Planner, resnapshot: Callable[[Window], Batch]
) -> Batch:
    """The change rows of ``(window.lower, window.upper]`` in apply order.

    When the capture instance's start_lsn rose past the window while it was read, the rows staged
    are incomplete and never loaded: the planner's retention-gap policy decides (fail, or a
    snapshot window that ``resnapshot`` extracts instead)."""
    started = time.monotonic()
    assert window.lower and window.upper
    names = ctx.names
    bounds = (window.capture_instance, names, Lsn.from_hex(window.lower), Lsn.from_hex(window.upper))
    reader = _open_change_reader(ctx)
    if reader is not None:
        batches = ctx.source.iter_change_batches(*bounds, ctx.cfg.chunk_rows, connection=reader)
        schema = parquet_schema(ctx.mappings)
        converted = (
            batch_to_table(batch, ctx.mappings, schema, ctx.salt, ctx.cfg.source_timezone)
            for batch in _prefetch(batches)
        )
        tables = arrow_key_moves_as_deletes(converted, list(ctx.layout.key))
    else:
        key_pos = [META_WIDTH + names.index(m.source.name) for m in ctx.mappings if m.target_name in ctx.layout.key]
        changes = ctx.source.iter_changes(*bounds, ctx.cfg.chunk_rows)
        tables = _rows_to_arrow(ctx, _prefetch(_key_moves_as_deletes(changes, key_pos)))
    untimed: set[bytes] = set()  # commit LSNs of changes without a cdc.lsn_time_mapping row

    def note_untimed(table: pa.Table) -> None:
        missing = pc.filter(table["_CDC_LSN"], pc.is_null(table["_CDC_COMMITTED_AT"]))
        untimed.update(bytes.fromhex(value) for value in missing.to_pylist())

    estimate = (tsql_name("cdc", f"{window.capture_instance}_CT"), "change-table size, an upper bound")
    staged = _stage(ctx, window, tables, estimate, started, note_untimed)
    gap = planner.gap_after_read(window)
    if gap:
        # The rows staged above are incomplete: never load them. By policy the table is
        # re-snapshotted right away (stage.clear drops this attempt's files first).
        return resnapshot(planner.on_retention_gap(gap, planner.instances()[-1]))
    batch = _copy(ctx, staged, untimed)
    batch.reader = "mssql-python" if reader is not None else _pymssql_reader(ctx)
    return batch


# The driver problem that made ``change_reader: auto`` fall back to pymssql in this process (a task
# runs in a process of its own): said once in the task log, then every further window of the task
# (catch-up batches) reads with pymssql without trying the driver again.
_fallback: dict[str, str] = {}


def _pymssql_reader(ctx: ExtractContext) -> str:
    problem = _fallback.get("mssql-python")
    return f"pymssql (fallback: {problem})" if problem and ctx.cfg.change_reader == ChangeReader.AUTO else "pymssql"


def _open_change_reader(ctx: ExtractContext) -> Any:
    """The open mssql-python connection that reads this window as Arrow, or None for pymssql rows.

    A driver that cannot load is no transient error: under ``change_reader: mssql-python`` it
    raises ``DriverLoadError`` (the task fails in its first try, naming the missing library);
    under ``auto`` the window is read with pymssql instead, slower but complete, and the task log,
    the batch record and the status page say so."""
    if not _reads_arrow(ctx):
        return None
    if ctx.cfg.change_reader == ChangeReader.AUTO and "mssql-python" in _fallback:
        return None
    try:
        return ctx.source.open_change_reader()
    except DriverLoadError as exc:
        if ctx.cfg.change_reader != ChangeReader.AUTO:
            raise
        _fallback["mssql-python"] = str(exc)
        log.warning(
            "%s: change rows read with pymssql instead of mssql-python (change_reader auto): %s", ctx.label, exc
        )
        return None


def _reads_arrow(ctx: ExtractContext) -> bool:
    """Whether this window's change rows come as Arrow (mssql-python) or as rows (pymssql)."""
    choice = ctx.cfg.change_reader
    if choice == ChangeReader.PYMSSQL:
        return False
    unfit = arrow_unfit(ctx.mappings)
    if choice == ChangeReader.MSSQL_PYTHON and unfit:
        raise TableConfigError(
            f"{ctx.label}: change_reader mssql-python cannot carry {'; '.join(unfit)} exactly: "
            "set change_reader to auto or pymssql"
        )
    if not ctx.source.reads_arrow:
        if choice == ChangeReader.MSSQL_PYTHON:
            raise TableConfigError(f"{ctx.label}: change_reader mssql-python, but no mssql-python connection")
        return False
    if unfit:
        log.info("%s: change rows read with pymssql: %s", ctx.label, "; ".join(unfit))
        return False
    return True


def _rows_to_arrow(ctx: ExtractContext, chunks: Rows) -> Iterator[pa.Table]:
    """Row chunks → Arrow tables of the Parquet schema, one by one (this thread converts chunk n
    while the reader thread of ``_prefetch`` fetches chunk n+1)."""
    schema = parquet_schema(ctx.mappings)
    for chunk in chunks:
        yield to_arrow(chunk, ctx.mappings, schema, ctx.salt, ctx.cfg.source_timezone)


def _stage(
    ctx: ExtractContext,
    window: Window,
    tables: Iterator[pa.Table],
    estimate: tuple[str, str],
    started: float,
    on_chunk: Callable[[pa.Table], None] | None = None,
    path: str | None = None,
    batch_id: str | None = None,
) -> _Staged:
    """Arrow chunks of the Parquet schema (bounded memory) → Parquet files → the stage, under
    ``<source>/<table>/<path>`` (a stream window's own path by default)."""
    batch_id = batch_id or f"{window.capture_instance}:{window.lower}-{window.upper}"
    stage_path = f"{ctx.cfg.name}/{ctx.table.name}/{path or f'stream/{window.lower}_{window.upper}'}"
    t = ctx.cfg.target
    ctx.warehouse().ensure_schemas(t.database, [t.staging_schema, t.raw_schema, t.control_schema])
    stage = ctx.stage()
    # Files of an earlier, crashed attempt at this window or chunk must not be loaded twice. (Only
    # its own path: a snapshot's chunks and the stream of the same table stage at the same time.)
    stage.clear(f"{stage_path}/")
    progress = _progress(ctx, window, *estimate)
    rows, parquet_bytes, arrow_bytes, read_s, put_s = 0, 0, 0, 0.0, 0.0
    tick = time.monotonic()
    # Three stages overlap: the source fetches chunk n+1 (reader thread) while this thread
    # converts chunk n and the uploader stores chunk n-1. At most one upload is in flight, so
    # memory holds a bounded number of chunks whatever the window's size.
    with _bulk_allocation(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-upload") as uploader:
        pending: Future[int] | None = None
        for index, table in enumerate(tables):
            if on_chunk is not None:
                on_chunk(table)
            check_sizes(table, ctx.mappings, ctx.table, ctx.label)
            rows += table.num_rows
            arrow_bytes += table.nbytes
            progress.add(table.num_rows, table.nbytes)
            read_s += time.monotonic() - tick
            failpoint("after_read", ctx.label)
            tick = time.monotonic()
            if pending is not None:
                parquet_bytes += pending.result()
            pending = uploader.submit(stage.write, table, stage_path, f"part-{index:06d}.parquet")
            put_s += time.monotonic() - tick
            tick = time.monotonic()
        if pending is not None:
            parquet_bytes += pending.result()
            put_s += time.monotonic() - tick
    progress.finish()
    timings = {"read_s": read_s, "put_s": put_s, "parquet_bytes": parquet_bytes, "arrow_bytes": arrow_bytes}
    return _Staged(window, stage, batch_id, stage_path, rows, started, timings)


def _copy(ctx: ExtractContext, staged: _Staged, untimed: set[bytes]) -> Batch:
    """The staged files → a new staging table (COPY INTO), its row count checked."""
    failpoint("after_put", ctx.label)
    tick = time.monotonic()
    wh, layout, window, rows = ctx.warehouse(), ctx.layout, staged.window, staged.rows
    first_query = len(wh.query_ids)
    wh.execute(q.create_staging(layout))
    loaded = 0
    if rows:
        wh.execute(q.copy_into_staging(layout, staged.stage.name, staged.stage_path))
        loaded = int(wh.execute(q.count_rows(layout.staging))[0][0])
    if loaded != rows:
        raise CdcError(f"{ctx.label}: read {rows} change rows but COPY loaded {loaded} into {layout.staging}")
    _fill_commit_times(ctx, untimed)
    failpoint("after_copy", ctx.label)
    committed = ctx.cfg.to_utc(ctx.source.lsn_to_time(Lsn.from_hex(window.upper))) if window.upper else None
    return Batch(
        window=window,
        batch_id=staged.batch_id,
        stage_path=staged.stage_path,
        rows=rows,
        columns=[asdict(m.source) | {"hashed": m.hashed} for m in ctx.mappings],
        upper_committed_at=committed.isoformat() if isinstance(committed, datetime) else None,
        query_ids=wh.query_ids[first_query:],
        timings={
            "read_s": staged.timings["read_s"],
            "put_s": staged.timings["put_s"],
            "copy_s": time.monotonic() - tick,
            "parquet_bytes": staged.timings["parquet_bytes"],
            "arrow_bytes": staged.timings["arrow_bytes"],
            "total_s": time.monotonic() - staged.started,
        },
    )


def _fill_commit_times(ctx: ExtractContext, untimed: set[bytes]) -> None:
    """Changes whose transaction has no cdc.lsn_time_mapping row were read with a NULL commit
    time (never dropped): give them what sys.fn_cdc_map_lsn_to_time returns for their LSN.
    Rare, so one lookup and one staging UPDATE per such transaction, after the read."""
    if not untimed:
        return
    log.warning(
        "%s: %d transaction(s) in the window have no cdc.lsn_time_mapping row; their commit time comes "
        "from sys.fn_cdc_map_lsn_to_time",
        ctx.label,
        len(untimed),
    )
    for value in sorted(untimed):
        lsn = Lsn.from_bytes(value)  # as the driver returned it
        committed = ctx.cfg.to_utc(ctx.source.lsn_to_time(lsn))
        if committed is not None:
            ctx.warehouse().execute(q.set_commit_time(ctx.layout), {"committed": committed, "lsn": lsn.hex})


def _progress(ctx: ExtractContext, window: Window, name: str, basis: str) -> Progress:
    """Progress of this extract, its ETA from the catalog's row estimate (sys.partitions) of the
    source table (snapshot) or of the change table (a window: an upper bound)."""
    try:
        estimate = ctx.source.row_estimate(name)
    except Exception as exc:  # progress is a convenience: never fail the load for it
        log.info("%s: no row estimate for %s (%s)", ctx.label, name, str(exc).splitlines()[0])
        ctx.source.rollback()
        estimate = None
    return Progress(f"{ctx.label} {window.mode}", estimate, basis, ctx.progress_every)


def check_sizes(table: pa.Table, mappings: Sequence[ColumnMapping], config: TableConfig, label: str) -> None:
    """Stop on a value Snowflake cannot hold, naming it, before anything is uploaded.

    A VARCHAR or BINARY declared without a length holds 16,777,216 characters / 8,388,608
    bytes (docs.snowflake.com/en/sql-reference/data-types-text); accounts before the 2025 size
    increase also cap a VARCHAR value at 16 MB, so that is the limit for strings in bytes."""
    for m in mappings:
        column = table.column(m.target_name)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            limit, kind = MAX_BINARY_BYTES, "BINARY"
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            limit, kind = MAX_VARCHAR_BYTES, "VARCHAR"
        else:
            continue
        sizes = pc.binary_length(column)
        largest = pc.max(sizes).as_py()
        if largest is None or largest <= limit:
            continue
        row = pc.index(sizes, largest).as_py()
        key = tuple(table.column(_target(k, mappings))[row].as_py() for k in config.primary_key)
        raise ValueTooLargeError(
            f"{label}: column {m.source.name} of the row with key {key} holds {largest} bytes, more than a "
            f"Snowflake {kind} holds ({limit} bytes). Leave the column out (exclude_columns) or load its "
            "salted hash (hash_columns) for this table; nothing of this batch was loaded."
        )


def _target(source_name: str, mappings: Sequence[ColumnMapping]) -> str:
    return next(m.target_name for m in mappings if m.source.name.lower() == source_name.lower())


@contextlib.contextmanager
def _bulk_allocation() -> Iterator[None]:
    """Run the cyclic GC less often while chunks of 10^5 tuples are built and dropped.

    Change rows hold no reference cycles, yet every few hundred allocations the collector would
    scan all of them again; with the default thresholds that alone costs as much as the Arrow
    conversion. Restored afterwards (the task process is ours, the setting is not).
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 50_000), before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _prefetch(chunks: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Fetch the next chunk from the source while this one is converted and uploaded.

    A bounded queue: at most ``depth`` + 2 chunks exist at once, so memory stays flat whatever
    the window's size. The source connection is used by the reader thread only meanwhile.
    """
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        slots.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            slots.put(exc)

    reader = threading.Thread(target=read, name="cdc-source-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=30)
        close = getattr(chunks, "close", None)
        if close is not None and not reader.is_alive():
            close()  # the source's generator ends now, closing its connection (not at some later GC)


def _key_moves_as_deletes(
    chunks: Iterator[list[tuple[Any, ...]]], key_pos: list[int]
) -> Iterator[list[tuple[Any, ...]]]:
    """Turn update pairs (3/4) into what the target must do, across chunk boundaries.

    SQL Server logs some key updates as an update pair whose before image (3) holds the old key and
    whose after image (4) the new one: with trace flag 8207 (a one-row update of a unique key), and
    for a case-only or trailing-blank key change under a case-insensitive collation (the index key
    is "unchanged", the text is not). Snowflake compares keys exactly, so the old key must go: a
    before image whose key differs from its after image becomes a delete (1) of the old key; other
    before images are dropped (the after image carries the update)."""
    pending: tuple[Any, ...] | None = None
    for chunk in chunks:
        out: list[tuple[Any, ...]] = []
        for row in chunk:
            op = row[2]
            if pending is not None:
                before, pending = pending, None
                paired = op == OP_UPDATE_AFTER and row[0] == before[0] and row[1] == before[1]
                if not paired:
                    raise RuntimeError(f"update before-image at {before[0]!r}/{before[1]!r} without its after-image")
                if any(before[p] != row[p] for p in key_pos):
                    out.append((*before[:2], OP_DELETE, *before[3:]))
            if op == OP_UPDATE_BEFORE:
                pending = row
                continue
            out.append(row)
        if out:
            yield out
    if pending is not None:
        raise RuntimeError(f"update before-image at {pending[0]!r}/{pending[1]!r} without its after-image")


def parquet_schema(mappings: Sequence[ColumnMapping]) -> pa.Schema:
    meta = [
        pa.field("_CDC_LSN", pa.string()),
        pa.field("_CDC_SEQVAL", pa.string()),
        pa.field("_CDC_OPERATION", pa.int8()),
        pa.field("_CDC_COMMITTED_AT", pa.timestamp("ms")),
        pa.field("_CDC_COMMAND_ID", pa.int32()),
    ]
    return pa.schema([*meta, *(pa.field(m.target_name, m.arrow_type) for m in mappings)])


def to_arrow(
    rows: list[tuple[Any, ...]],
    mappings: Sequence[ColumnMapping],
    schema: pa.Schema,
    salt: str | None,
    source_timezone: str = "UTC",
) -> pa.Table:
    """Rows (start_lsn, seqval, op, commit_time, command_id, *columns) → an Arrow table, column by column.

    Commit times are the SQL Server's wall clock in ``source_timezone``; they leave as UTC."""
    # Column by column with itemgetter: ``zip(*rows)`` over 100k-row chunks is several times slower
    # once the cyclic GC starts scanning the freshly allocated tuples.
    width = META_WIDTH + len(mappings)
    columns = [list(map(itemgetter(i), rows)) for i in range(width)] if rows else [[] for _ in range(width)]
    lsns = [v.hex().upper() if isinstance(v, bytes | bytearray) else v for v in columns[0]]
    seqs = [v.hex().upper() if isinstance(v, bytes | bytearray) else v for v in columns[1]]
    arrays = [
        pa.array(lsns, pa.string()),
        pa.array(seqs, pa.string()),
        pa.array(columns[2], pa.int8()),
        commit_times_utc(pa.array(columns[3], pa.timestamp("ms")), source_timezone),
        pa.array(columns[4], pa.int32()),
    ]
    arrays += [arrow_column(m, columns[META_WIDTH + i], salt) for i, m in enumerate(mappings)]
    return pa.Table.from_arrays(arrays, schema=schema)
