"""Sink 2: an in-memory CDC log of the billing workload, as the pipeline lands it in Snowflake.

Every committed :class:`~dev.workload.model.Tx` becomes :class:`Change` rows with one LSN per
transaction, a seqval per change, the commit time and the time the next poll of the CDC DAG loaded
it; personal-data columns (:data:`~dev.workload.schema.HASHED`) are hashed with the pipeline's
own salted hasher, as the loader writes them. A snapshot records every live row once (op 0).
:class:`Dataset` holds the log and derives what ``RAW.<T>`` and ``RAW.<T>_HISTORY`` hold
(``include/cdc_pipeline/warehouse.py`` writes the same: history = every change once, snapshot rows
op 0, inserts 2, updates 4 with the after image, deletes 1 with the row's last values; raw = the
latest change per key, deletes soft). :class:`LoggedSource` is an in-memory source database whose
commits go to the log (what :mod:`.timeline` runs against).

No traffic (:mod:`.oltp`, :mod:`.timeline`) and no Snowflake connection (``dev.dbt_local`` seeds).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from include.cdc_pipeline.types import hasher

from .model import SourceState, Stmt, Tx, delete_key, insert, ms, update
from .schema import HASHED, KEYS, TABLES, Row, key

OP_SNAPSHOT, OP_DELETE, OP_INSERT, OP_UPDATE = 0, 1, 2, 4
ZERO_SEQVAL = "0" * 20


@dataclass(frozen=True)
class Change:
    """One row of a CDC change table, as it lands in ``RAW.<T>_HISTORY``."""

    table: str
    values: dict[str, Any]  # source column -> value (personal data hashed)
    lsn: str
    seqval: str
    op: int
    committed_at: datetime | None
    loaded_at: datetime
    batch_id: str

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(self.values[k] for k in KEYS[self.table])

    @property
    def order(self) -> tuple[str, str, int]:
        return (self.lsn, self.seqval, self.op)

    def landed(self, **extra: Any) -> dict[str, Any]:
        """The change as a raw-layer row: source columns upper-cased, the CDC metadata, then ``extra``."""
        row = {k.upper(): v for k, v in self.values.items()}
        row.update(
            _CDC_LSN=self.lsn,
            _CDC_SEQVAL=self.seqval,
            _CDC_OPERATION=self.op,
            _CDC_COMMITTED_AT=self.committed_at,
            _CDC_LOADED_AT=self.loaded_at,
            **extra,
        )
        return row


@dataclass
class Dataset:
    """Every change of every table, in commit order, plus the time the dataset ends (``anchor``)."""

    anchor: datetime
    snapshot_at: datetime
    changes: dict[str, list[Change]] = field(default_factory=lambda: {t: [] for t in TABLES})

    def history(self, table: str) -> list[Change]:
        return sorted(self.changes[table], key=lambda c: c.order)

    def current(self, table: str) -> dict[tuple[Any, ...], Change]:
        """The latest change per key (what RAW.<T> holds; op 1 = soft-deleted)."""
        latest: dict[tuple[Any, ...], Change] = {}
        for change in self.history(table):
            latest[change.key] = change
        return latest

    def as_of(self, table: str, ts: datetime) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Rows that existed at ``ts`` (changes committed strictly before it), by key."""
        state: dict[tuple[Any, ...], dict[str, Any]] = {}
        for change in self.history(table):
            if change.committed_at is not None and change.committed_at >= ts:
                continue
            if change.op == OP_DELETE:
                state.pop(change.key, None)
            else:
                state[change.key] = change.values
        return state

    def raw_rows(self, table: str) -> list[dict[str, Any]]:
        """RAW.<T> rows: source columns (upper case) + metadata, as the pipeline's MERGE leaves them."""
        rows = []
        for change in self.current(table).values():
            deleted = change.op == OP_DELETE
            rows.append(change.landed(_CDC_DELETED=deleted, _CDC_DELETED_AT=change.committed_at if deleted else None))
        return rows

    def history_rows(self, table: str) -> list[dict[str, Any]]:
        """RAW.<T>_HISTORY rows: every change once, in log order."""
        return [change.landed(_CDC_BATCH_ID=change.batch_id) for change in self.history(table)]


def change_rows(tx: Tx) -> Iterator[tuple[str, int, Row]]:
    """``(table, op, image)`` of each change ``tx`` logs, in log order: an update whose key changed
    is a delete of the old key and an insert of the new one (as the pipeline applies it)."""
    for st in tx.stmts:
        for before, after in st.rows:
            if st.kind == "insert":
                assert after is not None
                yield st.table, OP_INSERT, after
            elif st.kind == "delete":
                assert before is not None
                yield st.table, OP_DELETE, before
            elif key(st.table, before) != key(st.table, after):
                assert before is not None and after is not None
                yield st.table, OP_DELETE, before
                yield st.table, OP_INSERT, after
            else:
                assert after is not None
                yield st.table, OP_UPDATE, after


class CdcLog:
    """Turns committed transactions into :class:`Change` rows of ``data`` (once :meth:`snapshot` ran).

    ``salt``: the pipeline's hash salt (hashed columns land as its salted SHA-256);
    ``poll_minutes``: the CDC DAG's schedule (a change is loaded at the next poll after its commit).
    """

    def __init__(self, data: Dataset, *, salt: str, poll_minutes: int = 5) -> None:
        self.data = data
        self.capturing = False
        self.lsn_counter = itertools.count(0x2A0000)
        self.poll = timedelta(minutes=poll_minutes)
        self._hash = hasher(salt)

    def _landed(self, table: str, values: Row) -> dict[str, Any]:
        hashed = HASHED.get(table, ())
        return {c: self._hash(v) if c in hashed else v for c, v in values.items()}

    def _next_lsn(self) -> str:
        return f"{next(self.lsn_counter) * 0x10000 + 0x1A8:020X}"

    def commit(self, tx: Tx, at: datetime) -> None:
        """Log ``tx``, whose statements ran at ``at`` (committed a few ms later). Nothing is logged
        before the snapshot, for a rolled-back transaction, or for one that changed no row."""
        changes = list(change_rows(tx))
        if not self.capturing or tx.rollback or not changes:
            return
        lsn = self._next_lsn()
        committed = ms(at) + timedelta(milliseconds=7)
        loaded = self._poll_after(committed)
        for seq, (table, op, values) in enumerate(changes, start=2):
            batch = f"{table_label(table)}:poll-{loaded:%Y%m%dT%H%M}"
            self.data.changes[table].append(
                Change(table, self._landed(table, values), lsn, f"{lsn[:12]}{seq:08X}", op, committed, loaded, batch)
            )

    def _poll_after(self, ts: datetime) -> datetime:
        """The CDC DAG polls every few minutes; a change lands at the next poll (+ load time)."""
        epoch = datetime(2000, 1, 1)
        polls = (ts - epoch) // self.poll + 1
        return epoch + polls * self.poll + timedelta(seconds=40, microseconds=123456)

    def snapshot(self, state: SourceState, at: datetime) -> None:
        """Initial load: every live row once as op 0 at the snapshot LSN, in key order (as the pipeline
        reads a snapshot); changes are logged from now on."""
        lsn = self._next_lsn()
        committed = ms(at)
        loaded = committed + timedelta(minutes=1, microseconds=654321)
        for table in TABLES:
            for _, values in sorted(state.rows[table].items()):
                self.data.changes[table].append(
                    Change(table, self._landed(table, values), lsn, ZERO_SEQVAL, OP_SNAPSHOT, committed, loaded,
                           f"{table_label(table)}:snapshot-{lsn}")
                )  # fmt: skip
        self.capturing = True


def table_label(table: str) -> str:
    """The pipeline's name of a billing table (``dbo_<table>``, its capture instance)."""
    return f"dbo_{table}"


class LoggedSource:
    """An in-memory source database whose committed transactions go to a :class:`CdcLog`.

    Statements take effect at once (a transaction reads its own writes); :meth:`transaction`
    commits them as one transaction at its time."""

    def __init__(self, log: CdcLog) -> None:
        self.log = log
        self.state = SourceState()
        self._stmts: list[Stmt] | None = None

    @property
    def rows(self) -> dict[str, dict[tuple[Any, ...], Row]]:
        return self.state.rows

    @contextlib.contextmanager
    def transaction(self, at: datetime) -> Iterator[None]:
        self._stmts = []
        yield
        tx, self._stmts = Tx("transaction", self._stmts), None
        self.log.commit(tx, at)

    def _run(self, st: Stmt) -> None:
        assert self._stmts is not None, "changes happen inside a transaction"
        self.state.apply(Tx(st.kind, [st]))
        self._stmts.append(st)

    def insert(self, table: str, values: Row) -> Row:
        assert key(table, values) not in self.rows[table], f"{table}{key(table, values)} exists"
        row = dict(values)
        self._run(insert(table, [row]))
        return row

    def update(self, table: str, k: tuple[Any, ...], **changes: Any) -> Row:
        st = update(table, self.rows[table][k], changes)
        self._run(st)
        after = st.rows[0][1]
        assert after is not None
        return after

    def delete(self, table: str, k: tuple[Any, ...]) -> None:
        self._run(delete_key(table, self.rows[table][k]))

    def take_snapshot(self, at: datetime) -> None:
        self.log.snapshot(self.state, at)
