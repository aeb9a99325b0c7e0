"""The emulator's bulk fast path, seen from the workload: transactions laid out as change rows.

:class:`BulkBuilder` lays out already-decided transactions exactly as the emulator's SQL path would
log them (LSN offsets, seqvals, command ids, split key updates), as Arrow tables;
:func:`bulk_target` finds the emulator entry point that applies them
(``dev.mssql_emulator.bulk``, through an in-process session or the emulator's own client). A
real SQL Server has no such path: :meth:`dev.workload.tsql.Workload.bulk` then runs the
transactions through SQL. Decides nothing about the business (:mod:`.oltp` does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from dev.mssql_emulator.client import RemoteSession
from dev.mssql_emulator.engine import Session

from .model import Tx
from .schema import COLUMNS, SCHEMA, Row, key


class BulkBuilder:
    """Lays out transactions exactly as the SQL path would log them (see :mod:`dev.mssql_emulator.bulk`)."""

    def __init__(self) -> None:
        self.offset = 0
        self.trans = 0
        self.tx_cols: dict[str, list[int]] = {"tx": [], "tran_off": [], "begin_off": [], "commit_off": []}
        self.rows: dict[str, dict[str, list[Any]]] = {}

    def _emit(self, table: str, tx: int, seq: int, op: int, cmd: int, image: Row) -> None:
        cols = self.rows.setdefault(table, {c: [] for c in ["__tx", "__seq", "__op", "__cmd", *COLUMNS[table]]})
        cols["__tx"].append(tx)
        cols["__seq"].append(seq)
        cols["__op"].append(op)
        cols["__cmd"].append(cmd)
        for c in COLUMNS[table]:
            value = image[c]
            cols[c].append(str(value) if isinstance(value, uuid.UUID) else value)

    def add(self, tx: Tx) -> None:
        tran = self.trans
        self.trans += 1
        begin = self.offset
        self.offset += 1
        tx_index = len(self.tx_cols["tx"])
        emitted: list[tuple[str, int, int, int, Row]] = []
        cmd0 = 0
        for st in tx.stmts:
            n = len(st.rows)
            base = self.offset
            if st.kind == "insert":
                self.offset += n
                for i, (_, after) in enumerate(st.rows):
                    assert after is not None
                    emitted.append((st.table, base + i, 2, cmd0 + i + 1, after))
            elif st.kind == "update":
                self.offset += 2 * n
                for i, (before, after) in enumerate(st.rows):
                    assert before is not None and after is not None
                    if key(st.table, before) != key(st.table, after):  # as dml._update logs a split update
                        emitted.append((st.table, base + i, 1, cmd0 + i + 1, before))
                        emitted.append((st.table, base + (i if n == 1 else n + i), 2, cmd0 + n + i + 1, after))
                    else:
                        emitted.append((st.table, base + i, 3, cmd0 + i + 1, before))
                        emitted.append((st.table, base + i, 4, cmd0 + i + 1, after))
                cmd0 += n
            else:
                self.offset += n
                for i, (before, _) in enumerate(st.rows):
                    assert before is not None
                    emitted.append((st.table, base + i, 1, cmd0 + i + 1, before))
            cmd0 += n
        if tx.rollback:
            return  # its LSNs and transaction id are consumed, nothing is logged as committed
        commit = self.offset
        self.offset += 1
        for col, value in (("tx", tx_index), ("tran_off", tran), ("begin_off", begin), ("commit_off", commit)):
            self.tx_cols[col].append(value)
        for table, seq, op, cmd, image in emitted:
            self._emit(table, tx_index, seq, op, cmd, image)

    def build(self) -> dict[str, Any]:
        transactions = pa.table({k: pa.array(v, type=pa.int64()) for k, v in self.tx_cols.items()})
        changes = {}
        for table, cols in self.rows.items():
            arrays = {}
            for name, values in cols.items():
                arrays[name] = pa.array(values, type=pa.int64() if name.startswith("__") else None)
            changes[f"{SCHEMA}.{table}"] = pa.table(arrays)
        return {"total_lsns": self.offset, "total_trans": self.trans, "transactions": transactions, "changes": changes}


def bulk_target(conn: Any) -> Callable[..., Any] | None:
    """The emulator's bulk entry point behind ``conn``, or None (e.g. pymssql to a real server)."""
    session = getattr(conn, "session", None)
    if isinstance(session, Session):
        return session.engine.bulk_apply
    if isinstance(session, RemoteSession):
        return session.bulk_apply
    return None
