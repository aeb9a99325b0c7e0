"""The billing business in memory: its state, its transactions, and the values both kinds of traffic use.

* :class:`SourceState`: the traffic's own copy of the source tables, with the indexes business
  operations pick from (active accounts, sellable products, invoices by status, lines and payments
  per invoice), so that every operation is consistent and every before image exact.
* :class:`Stmt` / :class:`Tx`: one statement's T-SQL and the row images it changes, in the order
  SQL Server logs them; a transaction is a list of them. Both sinks take these: the T-SQL sink
  (:mod:`.tsql`) executes ``sql``/``params``, the CDC-log sink (:mod:`.cdclog`) reads the images.
* :func:`insert`, :func:`update`, :func:`delete_rows`: the statement builders.
* :class:`WorkloadResult`: what a run did, counted as the change tables show it.
* Value helpers and vocabularies (money rounding, ``datetime2(3)`` truncation, segments, currencies).

No random choices (:mod:`.oltp`, :mod:`.timeline`) and no connection (:mod:`.tsql`) here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .schema import COLUMNS, KEYS, SCHEMA, TABLES, Row, key

DEFAULT_START = datetime(2026, 1, 1, 8, 0, 0)
CENT = Decimal("0.01")  # decimal(18,2) amounts
MONEY = Decimal("0.0001")  # money and decimal(18,4) prices
STATUSES = ("draft", "issued", "paid", "void", "refunded")  # an invoice's life
SEGMENTS = [("smb", 6), ("mid_market", 3), ("enterprise", 1)]  # with their relative frequency
CURRENCIES = ["USD", "EUR", "GBP"]
METHODS = ["card", "transfer", "direct_debit"]


def money(value: Decimal | float | int, quantum: Decimal = CENT) -> Decimal:
    """``value`` rounded half-up to ``quantum`` (cents unless told)."""
    return Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)


def ms(ts: datetime) -> datetime:
    """A ``datetime2(3)`` value: millisecond precision."""
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


class IndexedSet:
    """A set with O(1) add/remove and deterministic random choice (list + position map)."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self.items: list[Any] = []
        self.pos: dict[Any, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: Any) -> None:
        if item not in self.pos:
            self.pos[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: Any) -> None:
        index = self.pos.pop(item, None)
        if index is None:
            return
        last = self.items.pop()
        if index < len(self.items):
            self.items[index] = last
            self.pos[last] = index

    def choice(self, rng: random.Random) -> Any:
        return self.items[rng.randrange(len(self.items))]

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: Any) -> bool:
        return item in self.pos


@dataclass
class Stmt:
    """One statement: its T-SQL, and the row images it changes (in the order SQL Server logs them)."""

    table: str
    kind: str  # insert | update | delete
    sql: str
    params: tuple[Any, ...]
    rows: list[tuple[Row | None, Row | None]]


@dataclass
class Tx:
    """One business transaction (``op`` names the operation); ``rollback``: it is rolled back."""

    op: str
    stmts: list[Stmt]
    rollback: bool = False


def _images_sql(table: str, rows: list[Row]) -> tuple[str, tuple[Any, ...]]:
    cols = COLUMNS[table]
    one = "(" + ", ".join(["%s"] * len(cols)) + ")"
    sql = f"INSERT INTO {SCHEMA}.{table} ({', '.join(cols)}) VALUES " + ", ".join([one] * len(rows))
    params = tuple(r[c] for r in rows for c in cols)
    return sql, params


def insert(table: str, rows: list[Row]) -> Stmt:
    sql, params = _images_sql(table, rows)
    return Stmt(table, "insert", sql, params, [(None, r) for r in rows])


def update(table: str, before: Row, changes: Row) -> Stmt:
    after = {**before, **changes}
    sets = ", ".join(f"{c} = %s" for c in changes)
    where = " AND ".join(f"{k} = %s" for k in KEYS[table])
    params = tuple(changes.values()) + tuple(before[k] for k in KEYS[table])
    return Stmt(table, "update", f"UPDATE {SCHEMA}.{table} SET {sets} WHERE {where}", params, [(before, after)])


def delete_rows(table: str, where_sql: str, params: tuple[Any, ...], rows: list[Row]) -> Stmt:
    rows = sorted(rows, key=lambda r: key(table, r) or ())
    return Stmt(table, "delete", f"DELETE FROM {SCHEMA}.{table} WHERE {where_sql}", params, [(r, None) for r in rows])


def delete_key(table: str, row: Row) -> Stmt:
    """``DELETE`` of one row by its primary key."""
    keys = KEYS[table]
    where = " AND ".join(f"{k} = %s" for k in keys)
    return delete_rows(table, where, tuple(row[k] for k in keys), [row])


class SourceState:
    """The traffic's in-memory copy of the source tables (to produce consistent business operations
    and exact before/after images). ``rows[table][key]`` is a row; a change replaces the row object."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[Any, ...], Row]] = {t: {} for t in TABLES}
        self.accounts = IndexedSet()
        self.products = IndexedSet()
        self.by_status: dict[str, IndexedSet] = {s: IndexedSet() for s in STATUSES}
        self.lines: dict[int, dict[int, Row]] = {}
        self.payments_of: dict[int, list[int]] = {}
        self.invoices_of: Counter[int] = Counter()
        self.next_id: dict[str, int] = {"accounts": 1, "products": 1, "invoices": 1, "payments": 1}
        self.latest = DEFAULT_START

    def put(self, table: str, row: Row) -> None:
        """Insert ``row``, or replace the row with its key."""
        k = key(table, row)
        assert k is not None
        replaced = self.rows[table].get(k)
        self.rows[table][k] = row
        if table == "accounts":
            self.accounts.add(row["account_id"])
            self.next_id["accounts"] = max(self.next_id["accounts"], row["account_id"] + 1)
        elif table == "products":
            if row["is_active"]:
                self.products.add(row["product_id"])
            else:
                self.products.discard(row["product_id"])
            self.next_id["products"] = max(self.next_id["products"], row["product_id"] + 1)
        elif table == "invoices":
            # invoices per account (an account with invoices is never deleted); counted here, so
            # a state loaded from the database counts them too
            if replaced is not None:
                self.invoices_of[replaced["account_id"]] -= 1
            self.invoices_of[row["account_id"]] += 1
            for s in self.by_status.values():
                s.discard(row["invoice_id"])
            self.by_status.setdefault(row["status"], IndexedSet()).add(row["invoice_id"])
            self.next_id["invoices"] = max(self.next_id["invoices"], row["invoice_id"] + 1)
        elif table == "invoice_lines":
            self.lines.setdefault(row["invoice_id"], {})[row["line_no"]] = row
        elif table == "payments":
            pays = self.payments_of.setdefault(row["invoice_id"], [])
            if row["payment_id"] not in pays:
                pays.append(row["payment_id"])
            self.next_id["payments"] = max(self.next_id["payments"], row["payment_id"] + 1)
        for col in ("updated_at", "paid_at", "created_at", "issued_at"):
            value = row.get(col)
            if isinstance(value, datetime) and value > self.latest:
                self.latest = value

    def remove(self, table: str, row: Row) -> None:
        removed = self.rows[table].pop(tuple(row[c] for c in KEYS[table]), None)
        if table == "accounts":
            self.accounts.discard(row["account_id"])
        elif table == "products":
            self.products.discard(row["product_id"])
        elif table == "invoices":
            if removed is not None:
                self.invoices_of[removed["account_id"]] -= 1
            for s in self.by_status.values():
                s.discard(row["invoice_id"])
        elif table == "invoice_lines":
            lines = self.lines.get(row["invoice_id"], {})
            lines.pop(row["line_no"], None)
            if not lines:
                self.lines.pop(row["invoice_id"], None)
        elif table == "payments":
            pays = self.payments_of.get(row["invoice_id"], [])
            if row["payment_id"] in pays:
                pays.remove(row["payment_id"])

    def apply(self, tx: Tx) -> None:
        """The state after ``tx`` committed."""
        for st in tx.stmts:
            for before, after in st.rows:
                if before is not None:
                    self.remove(st.table, before)
                if after is not None:
                    self.put(st.table, after)

    def get(self, table: str, *k: Any) -> Row:
        return self.rows[table][tuple(k)]

    def take_id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value


@dataclass
class WorkloadResult:
    """What a run did: committed row changes per table and kind (as the change tables show them,
    a primary-key update counting as one delete and one insert)."""

    transactions: int = 0
    committed: int = 0
    rolled_back: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    changes: dict[str, Counter[str]] = field(default_factory=lambda: {t: Counter() for t in TABLES})
    seconds: float = 0.0

    @property
    def captured_changes(self) -> int:
        return sum(sum(c.values()) for c in self.changes.values())

    def add(self, tx: Tx) -> None:
        self.transactions += 1
        if tx.rollback:
            self.rolled_back += 1
            return
        self.committed += 1
        self.operations[tx.op] += 1
        for st in tx.stmts:
            for before, after in st.rows:
                if st.kind == "update" and key(st.table, before) != key(st.table, after):
                    self.changes[st.table]["delete"] += 1
                    self.changes[st.table]["insert"] += 1
                else:
                    self.changes[st.table][st.kind] += 1

    def merge(self, other: WorkloadResult) -> None:
        self.transactions += other.transactions
        self.committed += other.committed
        self.rolled_back += other.rolled_back
        self.operations.update(other.operations)
        for t in TABLES:
            self.changes[t].update(other.changes[t])
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "committed": self.committed,
            "rolled_back": self.rolled_back,
            "captured_changes": self.captured_changes,
            "operations": dict(sorted(self.operations.items())),
            "changes": {t: dict(sorted(c.items())) for t, c in self.changes.items()},
            "seconds": round(self.seconds, 3),
            "changes_per_second": round(self.captured_changes / self.seconds, 1) if self.seconds else None,
        }
