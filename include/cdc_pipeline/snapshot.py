"""Chunked, resumable snapshots that never stop the stream (README "Big tables").

A snapshot (the first load of a table, or a re-snapshot after a retention gap, a restore or a
request) is a sequence of **key-range chunks**, each an idempotent unit recorded in the control
schema as it completes:

1. **Start** (``start``, in the run's planning step): the snapshot's LSN ``S`` is the run's cut, read
   before any row. The table's watermark moves to ``S`` at once, so the **stream keeps going** from
   there while chunks load, in the same runs and in parallel; raw rows of a timeline the source
   lost (restored database) are lowered to ``S`` and their history above ``S`` flagged, as before.
   ``CDC_SNAPSHOTS`` holds the snapshot: its LSN, its start time on Snowflake's clock (the *epoch*),
   its state.
2. **Split** (``split``, by the first worker): every ``snapshot_chunk_rows``-th primary key, in one
   ordered pass over the key (``CdcSource.key_boundaries``, SQL Server's order and collation), gives
   the chunks ``(b[i-1], b[i]]``, the last one open-ended (rows inserted later land in it). They are
   ``CDC_SNAPSHOT_CHUNKS`` rows, ``pending``.
3. **Chunks** (``run_chunk``, by any number of workers at once): a worker claims a pending chunk
   (a conditional UPDATE: exactly one claimer wins), records the chunk's **low LSN** (the source's
   max LSN, read before its rows; kept when the chunk is retried), reads its key range in keyset
   pages, stages and COPYs it into the chunk's own staging table, MERGEs it into raw and appends it
   to history (operation 0 at the low LSN), then marks it ``done`` with its high LSN, rows and time.
   A crashed or killed worker's chunk is read again (its own retry resumes it; a later run frees
   it); a ``done`` chunk is never read again.
4. **Finalize** (``finalize``, by whoever finishes the last chunk): live raw rows neither a chunk nor
   the stream wrote since the epoch are keys the source no longer has: deleted, with their delete in
   history (as a re-snapshot always did); the watermark's ``SNAPSHOT_LSN`` becomes ``S``; one row in
   ``CDC_BATCHES``.

Why this is exact whatever the interleaving of chunks and stream (the DBLog / Flink CDC idea,
without write access to the source): a chunk row carries its chunk's low LSN ``L`` and replaces the
raw row only if that row is not newer (``snowflake_sql.merge_snapshot_chunk``). The rows a chunk
reads hold every change up to ``L`` (read after ``L``), perhaps some later ones. A later change
``c > L`` of the key is applied by the stream — before the chunk (the chunk row is then older and
skipped) or after (it replaces the chunk row) — so the raw row ends at the last change either way;
a key deleted after ``L`` stays deleted (soft: the tombstone's LSN; hard: the delete in history).
History keeps every change once; the snapshot rows are operation 0 at their chunk's LSN.

The store is Snowflake (the target's control schema): the only durable truth, shared by workers on
any machine. Free of Airflow: ``orchestration.tasks`` runs the steps as mapped tasks over workers,
``pipeline.TablePipeline.snapshot`` runs them in one process.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from include.cdc_pipeline import snowflake_sql as q
from include.cdc_pipeline.config import SourceConfig, TableConfig
from include.cdc_pipeline.errors import CdcError
from include.cdc_pipeline.extract import ChunkRead, ExtractContext, extract_snapshot_chunk
from include.cdc_pipeline.failpoints import failpoint
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import TableWatermark, Watermark, log_batch
from include.cdc_pipeline.planner import Window
from include.cdc_pipeline.snowflake_sql import UTC_NOW, ZERO_SEQVAL, TableLayout, create_table
from include.cdc_pipeline.source import CaptureInstance, CdcSource
from include.cdc_pipeline.sql import sf_table
from include.cdc_pipeline.stages import Stage
from include.cdc_pipeline.types import ColumnMapping
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = [
    ("SOURCE_NAME", "VARCHAR"),
    ("TABLE_NAME", "VARCHAR"),
    ("SNAPSHOT_ID", "VARCHAR(64)"),
    ("CAPTURE_INSTANCE", "VARCHAR"),
    ("SNAPSHOT_LSN", "VARCHAR(20)"),  # the run's cut when it started: the stream goes on from here
    ("KIND", "VARCHAR(16)"),  # initial | resnapshot
    ("REASON", "VARCHAR"),
    ("STATE", "VARCHAR(16)"),  # split | splitting | running | finalizing | done | abandoned
    ("OWNER", "VARCHAR"),
    ("STARTED_AT", "TIMESTAMP_NTZ(6)"),  # Snowflake's clock (UTC): raw rows older than this were not seen
    ("SPLIT_AT", "TIMESTAMP_NTZ(6)"),
    ("FINISHED_AT", "TIMESTAMP_NTZ(6)"),
    ("CHUNKS", "NUMBER(19,0)"),
    ("ROWS_LOADED", "NUMBER(19,0)"),
]
CHUNK_COLUMNS = [
    ("SNAPSHOT_ID", "VARCHAR(64)"),
    ("SOURCE_NAME", "VARCHAR"),
    ("TABLE_NAME", "VARCHAR"),
    ("CHUNK_NO", "NUMBER(19,0)"),
    ("AFTER_KEY", "VARCHAR"),  # JSON of the typed key values, exclusive; NULL: from the start
    ("THROUGH_KEY", "VARCHAR"),  # inclusive; NULL: to the end
    ("STATE", "VARCHAR(16)"),  # pending | running | done
    ("OWNER", "VARCHAR"),
    ("CLAIMED_AT", "TIMESTAMP_NTZ(6)"),
    ("LOW_LSN", "VARCHAR(20)"),
    ("HIGH_LSN", "VARCHAR(20)"),
    ("ROWS_LOADED", "NUMBER(19,0)"),
    ("SECONDS", "FLOAT"),
    ("FINISHED_AT", "TIMESTAMP_NTZ(6)"),
]
ACTIVE = ("split", "splitting", "running", "finalizing")


# -- typed key values as text (a chunk's bounds in the control table) ------------------------------
def encode_key(values: Sequence[Any] | None) -> str | None:
    """A key tuple as JSON that keeps each value's type (``decode_key`` gives it back)."""
    if values is None:
        return None
    return json.dumps([_tagged(v) for v in values])


def _tagged(value: Any) -> list[Any]:
    if value is None:
        return ["null", None]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", base64.b64encode(bytes(value)).decode()]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, str):
        return ["str", value]
    if hasattr(value, "isoformat"):  # time
        return ["time", value.isoformat()]
    raise CdcError(f"cannot use a {type(value).__name__} key value as a snapshot chunk bound: {value!r}")


def decode_key(text: str | None) -> tuple[Any, ...] | None:
    if text is None:
        return None
    out: list[Any] = []
    for kind, value in json.loads(text):
        decoders: dict[str, Callable[[Any], Any]] = {
            "null": lambda v: None,
            "bool": bool,
            "int": int,
            "float": float,
            "decimal": Decimal,
            "datetime": datetime.fromisoformat,
            "date": date.fromisoformat,
            "bytes": base64.b64decode,
            "uuid": uuid.UUID,
            "str": str,
            "time": lambda v: datetime.fromisoformat(f"2000-01-01T{v}").time(),
        }
        out.append(decoders[kind](value))
    return tuple(out)


# -- the control tables --------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    table: str
    snapshot_id: str
    capture_instance: str
    snapshot_lsn: str
    kind: str
    state: str
    started_at: datetime | None
    chunks: int | None
    owner: str | None = None  # the worker holding a one-worker step (splitting, finalizing)


@dataclass(frozen=True)
class Chunk:
    snapshot_id: str
    table: str
    chunk_no: int
    after: tuple[Any, ...] | None
    through: tuple[Any, ...] | None
    state: str
    low_lsn: str | None


class SnapshotStore:
    """``CONTROL.CDC_SNAPSHOTS`` and ``CONTROL.CDC_SNAPSHOT_CHUNKS`` of one source, on a warehouse."""

    def __init__(self, warehouse: Callable[[], Warehouse], database: str, schema: str, source: str) -> None:
        self._warehouse, self.database, self.schema, self.source = warehouse, database, schema, source
        self._ready = False

    @property
    def snapshots(self) -> str:
        return sf_table(self.database, self.schema, "CDC_SNAPSHOTS")

    @property
    def chunks(self) -> str:
        return sf_table(self.database, self.schema, "CDC_SNAPSHOT_CHUNKS")

    def wh(self) -> Warehouse:
        wh = self._warehouse()
        if not self._ready:
            wh.ensure_database(self.database)
            wh.ensure_schemas(self.database, [self.schema])
            wh.execute(create_table(self.snapshots, SNAPSHOT_COLUMNS))
            wh.execute(create_table(self.chunks, CHUNK_COLUMNS))
            self._ready = True
        return wh

    def _snapshot(self, row: Sequence[Any]) -> Snapshot:
        table, sid, ci, lsn, kind, state, started, chunks, owner = row
        return Snapshot(table, sid, ci, lsn, kind, state, started, int(chunks) if chunks is not None else None, owner)

    _SNAPSHOT_SELECT = "TABLE_NAME, SNAPSHOT_ID, CAPTURE_INSTANCE, SNAPSHOT_LSN, KIND, STATE, STARTED_AT, CHUNKS, OWNER"

    def active(self, tables: Sequence[str] | None = None) -> list[Snapshot]:
        """The source's snapshots not yet done (of ``tables`` when given)."""
        rows = self.wh().execute(
            f"SELECT {self._SNAPSHOT_SELECT} FROM {self.snapshots} WHERE SOURCE_NAME = %(source)s"
            f" AND STATE IN ({', '.join(repr(s) for s in ACTIVE)}) ORDER BY STARTED_AT",
            {"source": self.source},
        )
        found = [self._snapshot(r) for r in rows]
        return [s for s in found if tables is None or s.table in tables]

    def get(self, snapshot_id: str) -> Snapshot | None:
        rows = self.wh().execute(
            f"SELECT {self._SNAPSHOT_SELECT} FROM {self.snapshots} WHERE SNAPSHOT_ID = %(id)s", {"id": snapshot_id}
        )
        return self._snapshot(rows[0]) if rows else None

    def create(self, table: str, capture_instance: str, snapshot_lsn: str, kind: str, reason: str) -> Snapshot:
        """A new snapshot of ``table`` (any still active one is abandoned: a newer one replaces it)."""
        wh = self.wh()
        wh.execute(
            f"UPDATE {self.snapshots} SET STATE = 'abandoned', FINISHED_AT = {UTC_NOW} WHERE SOURCE_NAME = %(source)s"
            f" AND TABLE_NAME = %(table)s AND STATE IN ({', '.join(repr(s) for s in ACTIVE)})",
            {"source": self.source, "table": table},
        )
        snapshot_id = f"{table}-{snapshot_lsn}-{uuid.uuid4().hex[:8]}"
        wh.execute(
            f"INSERT INTO {self.snapshots} (SOURCE_NAME, TABLE_NAME, SNAPSHOT_ID, CAPTURE_INSTANCE, SNAPSHOT_LSN,"
            " KIND, REASON, STATE, STARTED_AT) VALUES (%(source)s, %(table)s, %(id)s, %(ci)s, %(lsn)s, %(kind)s,"
            f" %(reason)s, 'split', {UTC_NOW})",
            {
                "source": self.source,
                "table": table,
                "id": snapshot_id,
                "ci": capture_instance,
                "lsn": snapshot_lsn,
                "kind": kind,
                "reason": reason[:1000],
            },
        )
        created = self.get(snapshot_id)
        assert created is not None
        return created

    def move(
        self, snapshot_id: str, from_state: str, to_state: str, owner: str | None = None, *, or_held: bool = False
    ) -> bool:
        """Compare-and-set of a snapshot's state: True for exactly one caller. ``or_held``: also True
        for ``owner`` when it holds ``to_state`` already (its task's retry of an interrupted split or
        finalize takes the step again)."""
        extra = f", SPLIT_AT = {UTC_NOW}" if to_state == "running" else ""
        extra += f", FINISHED_AT = {UTC_NOW}" if to_state == "done" else ""
        held = " OR (STATE = %(to)s AND OWNER = %(owner)s)" if or_held else ""
        return (
            self.wh().affected(
                f"UPDATE {self.snapshots} SET STATE = %(to)s, OWNER = %(owner)s{extra}"
                f" WHERE SNAPSHOT_ID = %(id)s AND (STATE = %(from)s{held})",
                {"to": to_state, "owner": owner, "id": snapshot_id, "from": from_state},
            )
            == 1
        )

    def add_chunks(self, snapshot: Snapshot, bounds: Sequence[tuple[Any, ...]]) -> int:
        """The chunks of a split: ``(None, b1], (b1, b2], …, (bn, None)``; an earlier, interrupted
        split of the same snapshot is replaced."""
        wh = self.wh()
        wh.execute(f"DELETE FROM {self.chunks} WHERE SNAPSHOT_ID = %(id)s", {"id": snapshot.snapshot_id})
        edges: list[tuple[Any, ...] | None] = [None, *bounds, None]
        ranges = list(itertools.pairwise(edges))
        for start in range(0, len(ranges), 500):
            values: list[str] = []
            params: dict[str, str | None] = {"id": snapshot.snapshot_id, "source": self.source, "table": snapshot.table}
            for no, (after, through) in enumerate(ranges[start : start + 500], start=start):
                values.append(f"(%(id)s, %(source)s, %(table)s, {no}, %(a{no})s, %(t{no})s, 'pending')")
                params[f"a{no}"], params[f"t{no}"] = encode_key(after), encode_key(through)
            wh.execute(
                f"INSERT INTO {self.chunks} (SNAPSHOT_ID, SOURCE_NAME, TABLE_NAME, CHUNK_NO, AFTER_KEY, THROUGH_KEY,"
                f" STATE) VALUES {', '.join(values)}",
                params,
            )
        wh.execute(
            f"UPDATE {self.snapshots} SET CHUNKS = %(n)s WHERE SNAPSHOT_ID = %(id)s",
            {"n": len(ranges), "id": snapshot.snapshot_id},
        )
        return len(ranges)

    def free(self, snapshot_ids: Sequence[str]) -> None:
        """At the start of a run nobody else works on them: chunks and splits held by workers of an
        earlier run (crashed, killed) are free again; an interrupted finalize runs again."""
        if not snapshot_ids:
            return
        ids = {f"i{n}": sid for n, sid in enumerate(snapshot_ids)}
        where = f"SNAPSHOT_ID IN ({', '.join(f'%({k})s' for k in ids)})"
        wh = self.wh()
        wh.execute(f"UPDATE {self.chunks} SET STATE = 'pending', OWNER = NULL WHERE {where} AND STATE = 'running'", ids)
        wh.execute(
            f"UPDATE {self.snapshots} SET STATE = 'split', OWNER = NULL WHERE {where} AND STATE = 'splitting'", ids
        )
        wh.execute(
            f"UPDATE {self.snapshots} SET STATE = 'running', OWNER = NULL WHERE {where} AND STATE = 'finalizing'", ids
        )

    def claim(self, snapshot_ids: Sequence[str], owner: str) -> Chunk | None:
        """The next chunk for ``owner``: one it holds already (its retry), else a pending one."""
        if not snapshot_ids:
            return None
        ids = {f"i{n}": sid for n, sid in enumerate(snapshot_ids)}
        where = f"SNAPSHOT_ID IN ({', '.join(f'%({k})s' for k in ids)})"
        wh = self.wh()
        for _ in range(20):  # another worker may win a candidate: take the next
            rows = wh.execute(
                f"SELECT SNAPSHOT_ID, TABLE_NAME, CHUNK_NO, AFTER_KEY, THROUGH_KEY, STATE, LOW_LSN FROM {self.chunks}"
                f" WHERE {where} AND (STATE = 'pending' OR (STATE = 'running' AND OWNER = %(owner)s))"
                " ORDER BY CASE WHEN STATE = 'running' THEN 0 ELSE 1 END, SNAPSHOT_ID, CHUNK_NO LIMIT 1",
                {**ids, "owner": owner},
            )
            if not rows:
                return None
            sid, table, no, after, through, state, low = rows[0]
            if state == "running" or wh.affected(
                f"UPDATE {self.chunks} SET STATE = 'running', OWNER = %(owner)s, CLAIMED_AT = {UTC_NOW}"
                " WHERE SNAPSHOT_ID = %(id)s AND CHUNK_NO = %(no)s AND STATE = 'pending'",
                {"owner": owner, "id": sid, "no": no},
            ):
                return Chunk(sid, table, int(no), decode_key(after), decode_key(through), "running", low)
        return None

    def set_low(self, chunk: Chunk, lsn: str) -> str:
        """The chunk's low LSN: recorded once, before its rows are read; a retry keeps the first."""
        wh = self.wh()
        wh.execute(
            f"UPDATE {self.chunks} SET LOW_LSN = %(lsn)s WHERE SNAPSHOT_ID = %(id)s AND CHUNK_NO = %(no)s"
            " AND LOW_LSN IS NULL",
            {"lsn": lsn, "id": chunk.snapshot_id, "no": chunk.chunk_no},
        )
        rows = wh.execute(
            f"SELECT LOW_LSN FROM {self.chunks} WHERE SNAPSHOT_ID = %(id)s AND CHUNK_NO = %(no)s",
            {"id": chunk.snapshot_id, "no": chunk.chunk_no},
        )
        return str(rows[0][0])

    def done(self, chunk: Chunk, owner: str, high_lsn: str | None, rows: int, seconds: float) -> bool:
        return (
            self.wh().affected(
                f"UPDATE {self.chunks} SET STATE = 'done', HIGH_LSN = %(high)s, ROWS_LOADED = %(rows)s,"
                f" SECONDS = %(secs)s, FINISHED_AT = {UTC_NOW} WHERE SNAPSHOT_ID = %(id)s AND CHUNK_NO = %(no)s"
                " AND STATE = 'running' AND OWNER = %(owner)s",
                {
                    "high": high_lsn,
                    "rows": rows,
                    "secs": seconds,
                    "id": chunk.snapshot_id,
                    "no": chunk.chunk_no,
                    "owner": owner,
                },
            )
            == 1
        )

    def progress(self, snapshot_id: str) -> dict[str, Any]:
        """Chunks done / total, rows and seconds so far."""
        rows = self.wh().execute(
            f"SELECT COUNT(*), COUNT_IF(STATE = 'done'), COALESCE(SUM(ROWS_LOADED), 0), COALESCE(SUM(SECONDS), 0),"
            f" MIN(CLAIMED_AT), MAX(FINISHED_AT) FROM {self.chunks} WHERE SNAPSHOT_ID = %(id)s",
            {"id": snapshot_id},
        )
        total, done, loaded, seconds, first, last = rows[0]
        return {
            "chunks": int(total or 0),
            "done": int(done or 0),
            "rows": int(loaded or 0),
            "chunk_seconds": float(seconds or 0.0),
            "first_claimed": first,
            "last_finished": last,
        }


# -- the work ------------------------------------------------------------------------------------
class TableParts(Protocol):
    """What a snapshot uses of a table's pipeline (``pipeline.TablePipeline`` provides it)."""

    cfg: SourceConfig
    table: TableConfig
    watermark: TableWatermark

    @property
    def label(self) -> str: ...

    @property
    def source(self) -> CdcSource: ...

    @property
    def warehouse(self) -> Warehouse: ...

    def stage(self) -> Stage: ...

    def instances(self) -> list[CaptureInstance]: ...

    def mappings(self, instance: str) -> list[ColumnMapping]: ...

    def layout(self, mappings: Sequence[ColumnMapping]) -> TableLayout: ...

    def extract_context(self, mappings: list[ColumnMapping], layout: TableLayout) -> ExtractContext: ...


@dataclass
class SnapshotWork:
    """One table's chunked snapshot, on its pipeline's connections, mappings, layout and stage."""

    pipeline: TableParts
    store: SnapshotStore

    @property
    def label(self) -> str:
        return self.pipeline.label

    def start(self, window: Window, snapshot_lsn: Lsn, kind: str) -> Snapshot:
        """Start a snapshot positioned at ``snapshot_lsn`` (the run's cut, read before any row):
        record it, repair what a restored source left in raw, and move the watermark there so the
        stream goes on from it while the chunks load."""
        p = self.pipeline
        instance = next(ci for ci in p.instances() if ci.name == window.capture_instance)
        # An instance enabled after the last captured transaction starts above the max LSN; nothing
        # between them belongs to this table, so its predecessor is an exact position.
        floor = instance.start_lsn.prev() if instance.start_lsn != Lsn.ZERO else Lsn.ZERO
        snap = max(snapshot_lsn, floor)
        snapshot = self.store.create(p.table.name, instance.name, snap.hex, kind, window.reason)
        layout = p.layout(p.mappings(instance.name))
        wh = p.warehouse
        wh.ensure_target_tables(layout)
        lost = wh.affected(q.mark_lost_timeline(layout), {"snap": snap.hex})
        lowered = wh.affected(q.lower_lost_rows(layout), {"snap": snap.hex})
        if lost or lowered:
            log.warning(
                "%s: %d history and %d raw row(s) above the snapshot LSN %s belong to a timeline the source "
                "lost (restored database): history flagged _CDC_LOST_TIMELINE, raw rows to be replaced",
                self.label,
                lost,
                lowered,
                snap.hex,
            )
        committed = p.cfg.to_utc(p.source.lsn_to_time(snap))
        p.watermark.write(Watermark(instance.name, snap.hex, committed), snapshot.snapshot_id, 0)
        log.info(
            "%s: snapshot %s started at LSN %s (%s): the stream goes on from there while its chunks load",
            self.label,
            snapshot.snapshot_id,
            snap.hex,
            window.reason,
        )
        return snapshot

    def split(self, snapshot: Snapshot, owner: str) -> bool:
        """Cut the table into chunks of ``snapshot_chunk_rows`` keys (one worker does it)."""
        if not self.store.move(snapshot.snapshot_id, "split", "splitting", owner, or_held=True):
            return False
        p = self.pipeline
        started = time.monotonic()
        every = p.cfg.setting(p.table, "snapshot_chunk_rows")
        by_name = {c.name.lower(): c for c in p.source.change_table_columns(snapshot.capture_instance)}
        key = [by_name[k.lower()] for k in p.table.primary_key]
        bounds = p.source.key_boundaries(p.table.source_schema, p.table.table, key, every)
        chunks = self.store.add_chunks(snapshot, bounds)
        self.store.move(snapshot.snapshot_id, "splitting", "running", owner)
        log.info(
            "%s: snapshot %s split into %d chunk(s) of up to %d rows in %.1f s",
            self.label,
            snapshot.snapshot_id,
            chunks,
            every,
            time.monotonic() - started,
        )
        return True

    def run_chunk(self, snapshot: Snapshot, chunk: Chunk, owner: str) -> int:
        """Read, load, MERGE and record one chunk; the rows it loaded."""
        p = self.pipeline
        started = time.monotonic()
        low = chunk.low_lsn or self.store.set_low(chunk, (p.source.max_lsn() or Lsn.ZERO).hex)
        low = max(Lsn.from_hex(low), Lsn.from_hex(snapshot.snapshot_lsn)).hex
        mappings = p.mappings(snapshot.capture_instance)
        layout = p.layout(mappings)
        layout = replace(layout, staging_table=f"{layout.staging_table}__S{chunk.chunk_no}")
        read = ChunkRead(
            snapshot.snapshot_id,
            chunk.chunk_no,
            snapshot.capture_instance,
            low,
            p.cfg.to_utc(p.source.lsn_to_time(Lsn.from_hex(low))),
            chunk.after,
            chunk.through,
        )
        batch = extract_snapshot_chunk(p.extract_context(mappings, layout), read)
        high = p.source.max_lsn()
        wh = p.warehouse
        wh.ensure_target_tables(layout)
        merged = wh.affected(q.merge_snapshot_chunk(layout)) if batch.rows else 0
        failpoint("after_chunk_merge", f"{self.label}-{chunk.chunk_no}")
        appended = (
            wh.affected(q.append_history(layout), {"batch": batch.batch_id, "lower": low, "upper": low})
            if batch.rows
            else 0
        )
        failpoint("before_chunk_done", f"{self.label}-{chunk.chunk_no}")
        seconds = round(time.monotonic() - started, 3)
        if not self.store.done(chunk, owner, high.hex if high else None, batch.rows, seconds):
            raise CdcError(
                f"{self.label}: chunk {chunk.chunk_no} of snapshot {snapshot.snapshot_id} is no longer "
                f"held by {owner} (a newer snapshot replaced it?): its rows are loaded, not counted"
            )
        wh.execute(q.drop_staging(layout))
        p.stage().clear(f"{p.cfg.name}/{p.table.name}/{read.stage_path}/")
        log.info(
            "%s: snapshot %s chunk %d: %d rows at LSN %s (merged %d, history %d) in %.1f s",
            self.label,
            snapshot.snapshot_id,
            chunk.chunk_no,
            batch.rows,
            low,
            merged,
            appended,
            seconds,
        )
        return batch.rows

    def finalize(self, snapshot: Snapshot, owner: str) -> dict[str, Any] | None:
        """Once every chunk is done (one caller does it): the keys no longer in the source are
        deleted, the snapshot LSN recorded, the batch logged. None when not every chunk is done."""
        progress = self.store.progress(snapshot.snapshot_id)
        if progress["chunks"] == 0 or progress["done"] < progress["chunks"]:
            return None
        if not self.store.move(snapshot.snapshot_id, "running", "finalizing", owner, or_held=True):
            return None
        failpoint("before_finalize", self.label)
        p = self.pipeline
        layout = p.layout(p.mappings(snapshot.capture_instance))
        wh = p.warehouse
        params = {
            "snap": snapshot.snapshot_lsn,
            "zero": ZERO_SEQVAL,
            "batch": snapshot.snapshot_id,
            "started": snapshot.started_at,
        }
        to_history, in_raw = q.delete_unseen_after_snapshot(layout)
        wh.execute(to_history, params)
        deleted = wh.affected(in_raw, params)
        p.watermark.set_snapshot_lsn(snapshot.snapshot_lsn)
        t = p.cfg.target
        committed = p.cfg.to_utc(p.source.lsn_to_time(Lsn.from_hex(snapshot.snapshot_lsn)))
        log_batch(
            wh,
            t.database,
            t.control_schema,
            {
                "batch_id": snapshot.snapshot_id,
                "source_name": p.cfg.name,
                "table_name": p.table.name,
                "mode": "snapshot",
                "capture_instance": snapshot.capture_instance,
                "lower_lsn": None,
                "upper_lsn": snapshot.snapshot_lsn,
                "rows_staged": progress["rows"],
                "rows_merged": progress["rows"],
                "history_appended": progress["rows"],
                "extract_seconds": progress["chunk_seconds"],
                "apply_seconds": 0.0,
                "upper_committed_at": committed,
            },
        )
        self.store.move(snapshot.snapshot_id, "finalizing", "done", owner)
        log.info(
            "%s: snapshot %s complete: %d chunk(s), %d rows; %d row(s) the source no longer holds deleted",
            self.label,
            snapshot.snapshot_id,
            progress["chunks"],
            progress["rows"],
            deleted,
        )
        return {
            "table": p.table.name,
            "snapshot_id": snapshot.snapshot_id,
            "rows": progress["rows"],
            "chunks": progress["chunks"],
            "deleted_by_snapshot": deleted,
            "seconds": round(progress["chunk_seconds"], 3),
            "snapshot_lsn": snapshot.snapshot_lsn,
        }


def run_workers(
    works: dict[str, SnapshotWork],
    store: SnapshotStore,
    owner: str,
    deadline: float | None = None,
    on_chunk: Callable[[Snapshot, dict[str, Any]], None] | None = None,
    wait_for_split: float = 2.0,
) -> dict[str, Any]:
    """One worker's loop over the active snapshots of ``works``' tables: split what needs it,
    claim and run chunks, finalize what is complete, until nothing is left or ``deadline``
    (monotonic) passes. Several workers run it at once, on one machine or many."""
    loaded, chunks, finished = 0, 0, []
    while deadline is None or time.monotonic() < deadline:
        snapshots = store.active(list(works))
        if not snapshots:
            break
        for snapshot in snapshots:
            if snapshot.state == "split" or (snapshot.state == "splitting" and snapshot.owner == owner):  # our retry
                works[snapshot.table].split(snapshot, owner)
        snapshots = store.active(list(works))
        by_id = {s.snapshot_id: s for s in snapshots}
        chunk = store.claim([s.snapshot_id for s in snapshots if s.state == "running"], owner)
        if chunk is None:
            done = [
                works[s.table].finalize(s, owner)
                for s in snapshots
                if s.state == "running" or (s.state == "finalizing" and s.owner == owner)  # our retry
            ]
            finished += [d for d in done if d]
            if any(s.state in ("split", "splitting") for s in store.active(list(works))):
                time.sleep(wait_for_split)  # another worker is splitting: its chunks come next
                continue
            break
        snapshot = by_id[chunk.snapshot_id]
        loaded += works[snapshot.table].run_chunk(snapshot, chunk, owner)
        chunks += 1
        if on_chunk is not None:
            on_chunk(snapshot, store.progress(snapshot.snapshot_id))
    else:
        log.info("%s: the run's snapshot time is up; the next run goes on with the remaining chunks", owner)
    return {"owner": owner, "chunks": chunks, "rows": loaded, "finished": finished}
