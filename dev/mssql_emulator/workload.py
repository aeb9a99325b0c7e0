"""OLTP workload generator for the demo ``billing`` database.

Speaks only T-SQL through a DB-API connection, so the same code seeds the emulator (in-process or
server) and a real SQL Server through pymssql. Deterministic: the data written depends only on
``seed`` and the database's state when the run starts (business timestamps come from a simulated
clock, never from the wall clock).

Modes: ``init`` (tables, initial population, CDC enabled), ``live`` (~N transactions/s until a
duration or SIGTERM), ``bulk`` (N captured changes; against the emulator a fast path writes them
in one go, indistinguishable from running the transactions one by one), ``run`` (N transactions,
SQL path). Each returns a :class:`WorkloadResult` with counts per table and operation.

    python -m dev.mssql_emulator.workload --db /tmp/billing.duckdb init
    python -m dev.mssql_emulator.workload --server 127.0.0.1 --port 11433 --database billing \
        live --rate 25 --duration 60
    python -m dev.mssql_emulator.workload --db /tmp/billing.duckdb bulk --changes 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa

SCHEMA = "dbo"
TABLES = ["accounts", "products", "invoices", "invoice_lines", "payments"]

DDL: dict[str, str] = {
    "accounts": (
        "CREATE TABLE dbo.accounts (account_id int NOT NULL PRIMARY KEY, account_name nvarchar(200) NOT NULL, "
        "email nvarchar(320) NULL, country char(2) NOT NULL, segment varchar(20) NOT NULL, "
        "credit_limit money NOT NULL, is_active bit NOT NULL, created_at datetime2(3) NOT NULL, "
        "updated_at datetime2(3) NOT NULL)"
    ),
    "products": (
        "CREATE TABLE dbo.products (product_id int NOT NULL PRIMARY KEY, sku varchar(40) NOT NULL, "
        "product_name nvarchar(200) NOT NULL, unit_price decimal(18,4) NOT NULL, currency char(3) NOT NULL, "
        "is_active bit NOT NULL, updated_at datetime2(3) NOT NULL)"
    ),
    "invoices": (
        "CREATE TABLE dbo.invoices (invoice_id bigint NOT NULL PRIMARY KEY, account_id int NOT NULL, "
        "invoice_number varchar(30) NOT NULL, status varchar(20) NOT NULL, issued_at datetime2(3) NULL, "
        "due_date date NULL, currency char(3) NOT NULL, total_amount decimal(18,2) NOT NULL, "
        "updated_at datetime2(3) NOT NULL)"
    ),
    "invoice_lines": (
        "CREATE TABLE dbo.invoice_lines (invoice_id bigint NOT NULL, line_no int NOT NULL, product_id int NOT NULL, "
        "quantity int NOT NULL, unit_price decimal(18,4) NOT NULL, line_amount decimal(18,2) NOT NULL, "
        "PRIMARY KEY (invoice_id, line_no))"
    ),
    "payments": (
        "CREATE TABLE dbo.payments (payment_id bigint NOT NULL PRIMARY KEY, invoice_id bigint NOT NULL, "
        "account_id int NOT NULL, amount decimal(18,2) NOT NULL, method varchar(20) NOT NULL, "
        "status varchar(20) NOT NULL, paid_at datetime2(3) NOT NULL, external_ref uniqueidentifier NOT NULL)"
    ),
}
COLUMNS: dict[str, list[str]] = {
    "accounts": [
        "account_id",
        "account_name",
        "email",
        "country",
        "segment",
        "credit_limit",
        "is_active",
        "created_at",
        "updated_at",
    ],
    "products": ["product_id", "sku", "product_name", "unit_price", "currency", "is_active", "updated_at"],
    "invoices": [
        "invoice_id",
        "account_id",
        "invoice_number",
        "status",
        "issued_at",
        "due_date",
        "currency",
        "total_amount",
        "updated_at",
    ],
    "invoice_lines": ["invoice_id", "line_no", "product_id", "quantity", "unit_price", "line_amount"],
    "payments": ["payment_id", "invoice_id", "account_id", "amount", "method", "status", "paid_at", "external_ref"],
}
KEYS: dict[str, list[str]] = {
    "accounts": ["account_id"],
    "products": ["product_id"],
    "invoices": ["invoice_id"],
    "invoice_lines": ["invoice_id", "line_no"],
    "payments": ["payment_id"],
}
DEFAULT_START = datetime(2026, 1, 1, 8, 0, 0)
CENT = Decimal("0.01")
MONEY = Decimal("0.0001")
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "CA", "AU", "JP", "BR"]
SEGMENTS = [("smb", 6), ("mid_market", 3), ("enterprise", 1)]
CURRENCIES = ["USD", "EUR", "GBP"]
METHODS = ["card", "transfer", "direct_debit"]
_WORDS_A = [
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Tailspin",
    "Litware",
    "Adventure",
    "Wingtip",
    "Proseware",
    "Lucerne",
    "Margie",
    "Alpine",
    "Blue Yonder",
    "Coho",
    "Fourth Coffee",
    "Humongous",
    "Trey",
]
_WORDS_B = [
    "Traders",
    "Works",
    "Labs",
    "Holdings",
    "Logistics",
    "Media",
    "Foods",
    "Systems",
    "Partners",
    "Outfitters",
    "Insurance",
    "Travel",
    "Vineyard",
    "Research",
]
_PRODUCTS = [
    "Widget",
    "Gadget",
    "Sprocket",
    "Licence",
    "Support plan",
    "Sensor",
    "Cable",
    "Adapter",
    "Subscription",
    "Training day",
    "Consulting hour",
    "Storage TB",
]

# Business operations and their relative frequency.
WEIGHTS: dict[str, int] = {
    "new_account": 6,
    "edit_account": 10,
    "new_product": 1,
    "price_change": 4,
    "create_invoice": 22,
    "edit_draft": 8,
    "issue_invoice": 16,
    "pay_invoice": 14,
    "refund": 2,
    "void_invoice": 3,
    "delete_draft": 4,
    "renumber_line": 2,
    "delete_account": 1,
}

Row = dict[str, Any]


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
    op: str
    stmts: list[Stmt]
    rollback: bool = False


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
                if st.kind == "update" and _key(st.table, before) != _key(st.table, after):
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


def _key(table: str, row: Row | None) -> tuple[Any, ...] | None:
    return None if row is None else tuple(row[k] for k in KEYS[table])


def _money(value: Decimal | float | int, quantum: Decimal = CENT) -> Decimal:
    return Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)


class Model:
    """The generator's in-memory copy of the source tables (to produce consistent business operations
    and exact before/after images)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[Any, ...], Row]] = {t: {} for t in TABLES}
        self.accounts = IndexedSet()
        self.products = IndexedSet()
        self.by_status: dict[str, IndexedSet] = {
            s: IndexedSet() for s in ("draft", "issued", "paid", "void", "refunded")
        }
        self.lines: dict[int, dict[int, Row]] = {}
        self.payments_of: dict[int, list[int]] = {}
        self.invoices_of: Counter[int] = Counter()
        self.next_id: dict[str, int] = {"accounts": 1, "products": 1, "invoices": 1, "payments": 1}
        self.latest = DEFAULT_START

    @classmethod
    def load(cls, conn: Any) -> Model:
        model = cls()
        cur = conn.cursor()
        try:
            for table in TABLES:
                cols = COLUMNS[table]
                cur.execute(f"SELECT {', '.join(cols)} FROM dbo.{table} ORDER BY {', '.join(KEYS[table])}")
                for values in cur.fetchall():
                    model._put(table, _normalise(table, dict(zip(cols, values, strict=True))))
        finally:
            cur.close()
        return model

    def _put(self, table: str, row: Row) -> None:
        key = _key(table, row)
        assert key is not None
        replaced = self.rows[table].get(key)
        self.rows[table][key] = row
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
            # a model loaded from the database counts them too
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

    def _remove(self, table: str, row: Row) -> None:
        key = _key(table, row)
        removed = self.rows[table].pop(key, None)
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
        for st in tx.stmts:
            for before, after in st.rows:
                if before is not None:
                    self._remove(st.table, before)
                if after is not None:
                    self._put(st.table, after)

    def get(self, table: str, *key: Any) -> Row:
        return self.rows[table][tuple(key)]

    def take_id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value


def _normalise(table: str, row: Row) -> Row:
    """Values as the generator itself produces them (so before-images compare equal)."""
    for col, value in list(row.items()):
        if isinstance(value, uuid.UUID):
            continue
        if col == "external_ref" and value is not None:
            row[col] = uuid.UUID(str(value))
        elif isinstance(value, bytes):
            row[col] = value
    if table == "accounts" and row.get("credit_limit") is not None:
        row["credit_limit"] = _money(row["credit_limit"], MONEY)
    return row


def _images_sql(table: str, rows: list[Row]) -> tuple[str, tuple[Any, ...]]:
    cols = COLUMNS[table]
    one = "(" + ", ".join(["%s"] * len(cols)) + ")"
    sql = f"INSERT INTO dbo.{table} ({', '.join(cols)}) VALUES " + ", ".join([one] * len(rows))
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
    return Stmt(table, "update", f"UPDATE dbo.{table} SET {sets} WHERE {where}", params, [(before, after)])


def delete_rows(table: str, where_sql: str, params: tuple[Any, ...], rows: list[Row]) -> Stmt:
    rows = sorted(rows, key=lambda r: _key(table, r) or ())
    return Stmt(table, "delete", f"DELETE FROM dbo.{table} WHERE {where_sql}", params, [(r, None) for r in rows])


class Workload:
    """Generates and applies the billing workload through a DB-API connection."""

    def __init__(
        self,
        conn: Any,
        *,
        seed: int = 42,
        rollback_fraction: float = 0.02,
        start_time: datetime | None = None,
        model: Model | None = None,
    ) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.rollback_fraction = rollback_fraction
        self._model = model
        self._start_time = start_time
        self.now = start_time or DEFAULT_START
        self.stop_event = threading.Event()
        self._ops: list[tuple[str, Callable[[], Tx | None]]] = [(name, getattr(self, name)) for name in WEIGHTS]
        self._weights = list(WEIGHTS.values())

    # -- setup -----------------------------------------------------------------------------
    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = Model.load(self.conn)
            if self._start_time is None:
                self.now = self._model.latest
        return self._model

    def _scalar(self, sql: str, params: Any = None) -> Any:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            row = cur.fetchone()
            return row[0] if row else None
        finally:
            cur.close()

    def _exec(self, sql: str, params: Any = None) -> None:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
        finally:
            cur.close()

    def init(
        self, *, accounts: int = 200, products: int = 40, invoices: int = 400, populate_after_cdc: bool = False
    ) -> WorkloadResult:
        """Create the tables (if missing), populate them (if empty) and enable CDC on them."""
        result = WorkloadResult()
        started = time.monotonic()
        for table in TABLES:
            if self._scalar("SELECT OBJECT_ID(%s)", (f"dbo.{table}",)) is None:
                self._exec(DDL[table])
        self.conn.commit()
        empty = self._scalar("SELECT COUNT(*) FROM dbo.accounts") == 0
        if empty and not populate_after_cdc:
            result.merge(self._populate(accounts, products, invoices))
        self.enable_cdc()
        if empty and populate_after_cdc:
            result.merge(self._populate(accounts, products, invoices))
        result.seconds = time.monotonic() - started
        return result

    def enable_cdc(self) -> None:
        if not self._scalar("SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()"):
            self._exec("EXEC sys.sp_cdc_enable_db")
            self.conn.commit()
        for table in TABLES:
            tracked = self._scalar(
                "SELECT is_tracked_by_cdc FROM sys.tables WHERE object_id = OBJECT_ID(%s)", (f"dbo.{table}",)
            )
            if not tracked:
                self._exec(
                    "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = %s, "
                    "@role_name = NULL, @supports_net_changes = 1",
                    (table,),
                )
                self.conn.commit()

    def _populate(self, accounts: int, products: int, invoices: int) -> WorkloadResult:
        """Initial data: accounts, products, and invoices in every status with lines and payments."""
        self._model = self._model or Model()
        m = self._model
        result = WorkloadResult()
        txs: list[Tx] = []
        acc_rows = [self._account_row(m.take_id("accounts")) for _ in range(accounts)]
        prod_rows = [self._product_row(m.take_id("products")) for _ in range(products)]
        for table, rows in (("accounts", acc_rows), ("products", prod_rows)):
            for i in range(0, len(rows), 500):
                txs.append(Tx(f"populate_{table}", [insert(table, rows[i : i + 500])]))
        for tx in txs:
            self.apply(tx, result)
        for _ in range(invoices):
            tx = self.create_invoice()
            if tx is None:
                break
            self.apply(Tx("populate_invoices", tx.stmts), result)
            r = self.rng.random()
            follow = []
            if r < 0.75:
                follow.append(self.issue_invoice(tx.stmts[0].rows[0][1]["invoice_id"]))
            if r < 0.5:
                follow.append(self.pay_invoice(tx.stmts[0].rows[0][1]["invoice_id"]))
            for f in follow:
                if f is not None:
                    self.apply(Tx("populate_invoices", f.stmts), result)
        return result

    # -- value helpers ---------------------------------------------------------------------
    def _tick(self) -> datetime:
        self.now = self.now + timedelta(milliseconds=self.rng.randrange(200, 20000))
        return self.now

    def _account_row(self, account_id: int) -> Row:
        rng = self.rng
        name = f"{rng.choice(_WORDS_A)} {rng.choice(_WORDS_B)} {account_id}"
        segment = rng.choices([s for s, _ in SEGMENTS], [w for _, w in SEGMENTS])[0]
        limit = {"smb": 50, "mid_market": 500, "enterprise": 5000}[segment] * rng.randrange(10, 200)
        now = self._tick()
        return {
            "account_id": account_id,
            "account_name": name,
            "email": None if rng.random() < 0.1 else f"billing{account_id}@{name.split()[0].lower()}.example",
            "country": rng.choice(COUNTRIES),
            "segment": segment,
            "credit_limit": _money(limit, MONEY),
            "is_active": True,
            "created_at": now,
            "updated_at": now,
        }

    def _product_row(self, product_id: int) -> Row:
        rng = self.rng
        return {
            "product_id": product_id,
            "sku": f"SKU-{product_id:06d}",
            "product_name": f"{rng.choice(_PRODUCTS)} {rng.choice('ABCDEFGHJK')}{product_id}",
            "unit_price": _money(Decimal(rng.randrange(100, 500000)) / 100, MONEY),
            "currency": rng.choice(CURRENCIES),
            "is_active": True,
            "updated_at": self._tick(),
        }

    def _line(self, invoice_id: int, line_no: int) -> Row:
        m = self.model
        product = m.get("products", m.products.choice(self.rng))
        qty = self.rng.randrange(1, 21)
        return {
            "invoice_id": invoice_id,
            "line_no": line_no,
            "product_id": product["product_id"],
            "quantity": qty,
            "unit_price": product["unit_price"],
            "line_amount": _money(product["unit_price"] * qty),
        }

    # -- business operations (each returns a transaction, or None when not applicable) ------
    def new_account(self) -> Tx | None:
        return Tx("new_account", [insert("accounts", [self._account_row(self.model.take_id("accounts"))])])

    def edit_account(self) -> Tx | None:
        m = self.model
        if not m.accounts:
            return None
        row = m.get("accounts", m.accounts.choice(self.rng))
        what = self.rng.randrange(4)
        if what == 0:
            changes: Row = {"email": f"ap{self.rng.randrange(1000)}@{row['account_name'].split()[0].lower()}.example"}
        elif what == 1:
            seg = self.rng.choice([s for s, _ in SEGMENTS])
            changes = {"segment": seg, "credit_limit": _money(row["credit_limit"] * Decimal("1.25"), MONEY)}
        elif what == 2:
            changes = {"is_active": not row["is_active"]}
        else:
            changes = {
                "account_name": row["account_name"] + " Ltd"
                if len(row["account_name"]) < 150
                else row["account_name"][:60]
            }
        changes["updated_at"] = self._tick()
        return Tx("edit_account", [update("accounts", row, changes)])

    def new_product(self) -> Tx | None:
        return Tx("new_product", [insert("products", [self._product_row(self.model.take_id("products"))])])

    def price_change(self) -> Tx | None:
        m = self.model
        if not m.products:
            return None
        row = m.get("products", m.products.choice(self.rng))
        factor = Decimal(self.rng.randrange(90, 121)) / 100
        return Tx(
            "price_change",
            [
                update(
                    "products",
                    row,
                    {"unit_price": _money(row["unit_price"] * factor, MONEY), "updated_at": self._tick()},
                )
            ],
        )

    def create_invoice(self) -> Tx | None:
        m = self.model
        if not m.accounts or not m.products:
            return None
        account_id = m.accounts.choice(self.rng)
        invoice_id = m.take_id("invoices")
        lines = [self._line(invoice_id, n) for n in range(1, self.rng.randrange(1, 6) + 1)]
        now = self._tick()
        invoice = {
            "invoice_id": invoice_id,
            "account_id": account_id,
            "invoice_number": f"INV-{now.year}-{invoice_id:07d}",
            "status": "draft",
            "issued_at": None,
            "due_date": None,
            "currency": m.get("products", lines[0]["product_id"])["currency"],
            "total_amount": _money(sum((ln["line_amount"] for ln in lines), Decimal(0))),
            "updated_at": now,
        }
        return Tx("create_invoice", [insert("invoices", [invoice]), insert("invoice_lines", lines)])

    def _total_update(self, invoice: Row, lines: Iterable[Row]) -> Stmt:
        total = _money(sum((ln["line_amount"] for ln in lines), Decimal(0)))
        return update("invoices", invoice, {"total_amount": total, "updated_at": self._tick()})

    def edit_draft(self) -> Tx | None:
        m = self.model
        drafts = m.by_status["draft"]
        if not drafts:
            return None
        invoice = m.get("invoices", drafts.choice(self.rng))
        lines = dict(m.lines.get(invoice["invoice_id"], {}))
        what = self.rng.randrange(3)
        stmts: list[Stmt] = []
        if what == 0 or not lines:
            line = self._line(invoice["invoice_id"], max(lines, default=0) + 1)
            stmts.append(insert("invoice_lines", [line]))
            lines[line["line_no"]] = line
        elif what == 1 or len(lines) == 1:
            line = lines[self.rng.choice(sorted(lines))]
            qty = self.rng.randrange(1, 21)
            st = update("invoice_lines", line, {"quantity": qty, "line_amount": _money(line["unit_price"] * qty)})
            stmts.append(st)
            lines[line["line_no"]] = st.rows[0][1]  # type: ignore[assignment]
        else:
            line_no = self.rng.choice(sorted(lines))
            line = lines.pop(line_no)
            stmts.append(
                delete_rows("invoice_lines", "invoice_id = %s AND line_no = %s", (line["invoice_id"], line_no), [line])
            )
        stmts.append(self._total_update(invoice, lines.values()))
        return Tx("edit_draft", stmts)

    def issue_invoice(self, invoice_id: int | None = None) -> Tx | None:
        m = self.model
        drafts = m.by_status["draft"]
        if invoice_id is None:
            if not drafts:
                return None
            invoice_id = drafts.choice(self.rng)
        if not m.lines.get(invoice_id):
            return None
        invoice = m.get("invoices", invoice_id)
        now = self._tick()
        return Tx(
            "issue_invoice",
            [
                update(
                    "invoices",
                    invoice,
                    {
                        "status": "issued",
                        "issued_at": now,
                        "due_date": now.date() + timedelta(days=30),
                        "updated_at": now,
                    },
                )
            ],
        )

    def pay_invoice(self, invoice_id: int | None = None) -> Tx | None:
        m = self.model
        issued = m.by_status["issued"]
        if invoice_id is None:
            if not issued:
                return None
            invoice_id = issued.choice(self.rng)
        invoice = m.get("invoices", invoice_id)
        if invoice["status"] != "issued":
            return None
        now = self._tick()
        payment = {
            "payment_id": m.take_id("payments"),
            "invoice_id": invoice_id,
            "account_id": invoice["account_id"],
            "amount": invoice["total_amount"],
            "method": self.rng.choice(METHODS),
            "status": "settled",
            "paid_at": now,
            "external_ref": uuid.UUID(int=self.rng.getrandbits(128), version=4),
        }
        return Tx(
            "pay_invoice",
            [insert("payments", [payment]), update("invoices", invoice, {"status": "paid", "updated_at": now})],
        )

    def refund(self) -> Tx | None:
        m = self.model
        paid = m.by_status["paid"]
        if not paid:
            return None
        invoice = m.get("invoices", paid.choice(self.rng))
        pays = [m.get("payments", p) for p in m.payments_of.get(invoice["invoice_id"], [])]
        settled = [p for p in pays if p["status"] == "settled"]
        if not settled:
            return None
        now = self._tick()
        return Tx(
            "refund",
            [
                update("payments", settled[0], {"status": "refunded"}),
                update("invoices", invoice, {"status": "refunded", "updated_at": now}),
            ],
        )

    def void_invoice(self) -> Tx | None:
        m = self.model
        issued = m.by_status["issued"]
        if not issued:
            return None
        invoice = m.get("invoices", issued.choice(self.rng))
        return Tx("void_invoice", [update("invoices", invoice, {"status": "void", "updated_at": self._tick()})])

    def delete_draft(self) -> Tx | None:
        m = self.model
        drafts = m.by_status["draft"]
        if not drafts:
            return None
        invoice = m.get("invoices", drafts.choice(self.rng))
        lines = list(m.lines.get(invoice["invoice_id"], {}).values())
        stmts = []
        if lines:
            stmts.append(delete_rows("invoice_lines", "invoice_id = %s", (invoice["invoice_id"],), lines))
        stmts.append(delete_rows("invoices", "invoice_id = %s", (invoice["invoice_id"],), [invoice]))
        return Tx("delete_draft", stmts)

    def renumber_line(self) -> Tx | None:
        """A primary-key update: move a draft line to the end (invoice_lines.line_no changes)."""
        m = self.model
        drafts = m.by_status["draft"]
        if not drafts:
            return None
        invoice_id = drafts.choice(self.rng)
        lines = m.lines.get(invoice_id, {})
        if len(lines) < 2:
            return None
        line_no = self.rng.choice(sorted(lines))
        return Tx("renumber_line", [update("invoice_lines", lines[line_no], {"line_no": max(lines) + 1})])

    def delete_account(self) -> Tx | None:
        m = self.model
        if len(m.accounts) < 10:
            return None
        account_id = m.accounts.choice(self.rng)
        if m.invoices_of[account_id] > 0:
            return None
        row = m.get("accounts", account_id)
        return Tx("delete_account", [delete_rows("accounts", "account_id = %s", (account_id,), [row])])

    def next_tx(self) -> Tx:
        """Pick the next business transaction (deterministic for a given seed and starting state)."""
        self.model  # noqa: B018 - load the model before drawing random numbers
        while True:
            _name, fn = self.rng.choices(self._ops, self._weights)[0]
            tx = fn()
            if tx is not None:
                tx.rollback = self.rng.random() < self.rollback_fraction
                return tx

    # -- applying ----------------------------------------------------------------------------
    def apply(self, tx: Tx, result: WorkloadResult | None = None) -> None:
        """Run one transaction through SQL (commit, or rollback when ``tx.rollback``)."""
        cur = self.conn.cursor()
        try:
            # Explicit BEGIN/COMMIT so the transaction holds whether the connection autocommits or not
            # (with pymssql's default implicit transactions the final conn.commit() ends it).
            cur.execute("BEGIN TRANSACTION")
            for st in tx.stmts:
                cur.execute(st.sql, st.params)
                if st.kind != "insert" and cur.rowcount not in (-1, len(st.rows)):
                    raise RuntimeError(
                        f"model drift: {st.sql} {st.params} changed {cur.rowcount} rows, expected {len(st.rows)}"
                    )
            if tx.rollback:
                cur.execute("ROLLBACK TRANSACTION")
                self.conn.rollback()
            else:
                cur.execute("COMMIT TRANSACTION")
                self.conn.commit()
                self.model.apply(tx)
        except Exception:
            self.conn.rollback()
            raise
        finally:
            cur.close()
        if result is not None:
            result.add(tx)

    def run(self, *, transactions: int | None = None, changes: int | None = None) -> WorkloadResult:
        """Run transactions one by one through SQL until a transaction or change count is reached."""
        result = WorkloadResult()
        started = time.monotonic()
        while not self.stop_event.is_set():
            if transactions is not None and result.transactions >= transactions:
                break
            if changes is not None and result.captured_changes >= changes:
                break
            self.apply(self.next_tx(), result)
        result.seconds = time.monotonic() - started
        return result

    def live(
        self,
        *,
        rate: float = 10.0,
        duration: float | None = None,
        progress: Callable[[WorkloadResult], None] | None = None,
    ) -> WorkloadResult:
        """About ``rate`` transactions per second until ``duration`` seconds or :attr:`stop_event`."""
        result = WorkloadResult()
        started = time.monotonic()
        next_at = started
        last_report = started
        while not self.stop_event.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if now < next_at:
                self.stop_event.wait(next_at - now)
                continue
            self.apply(self.next_tx(), result)
            next_at += 1.0 / rate
            if progress is not None and now - last_report >= 5:
                last_report = now
                result.seconds = now - started
                progress(result)
        result.seconds = time.monotonic() - started
        return result

    def bulk(self, changes: int, *, fast: bool | None = None, chunk_changes: int = 200_000) -> WorkloadResult:
        """Generate ``changes`` captured row changes. Against the emulator the fast path applies them
        in chunks (see :mod:`dev.mssql_emulator.bulk`); elsewhere (or ``fast=False``) through SQL."""
        target = bulk_target(self.conn) if fast is not False else None
        if target is None:
            if fast:
                raise ValueError("the bulk fast path needs an emulator connection")
            return self.run(changes=changes)
        result = WorkloadResult()
        started = time.monotonic()
        self.conn.commit()
        while result.captured_changes < changes and not self.stop_event.is_set():
            builder = BulkBuilder()
            chunk = WorkloadResult()
            goal = min(chunk_changes, changes - result.captured_changes)
            while chunk.captured_changes < goal:
                tx = self.next_tx()
                builder.add(tx)
                chunk.add(tx)
                if not tx.rollback:
                    self.model.apply(tx)
            target(**builder.build())
            result.merge(chunk)
        result.seconds = time.monotonic() - started
        return result


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
                    emitted.append((st.table, base + i, 2, cmd0 + i + 1, after))  # type: ignore[arg-type]
            elif st.kind == "update":
                self.offset += 2 * n
                for i, (before, after) in enumerate(st.rows):
                    assert before is not None and after is not None
                    if _key(st.table, before) != _key(st.table, after):  # as dml._update logs a split update
                        emitted.append((st.table, base + i, 1, cmd0 + i + 1, before))
                        emitted.append((st.table, base + (i if n == 1 else n + i), 2, cmd0 + n + i + 1, after))
                    else:
                        emitted.append((st.table, base + i, 3, cmd0 + i + 1, before))
                        emitted.append((st.table, base + i, 4, cmd0 + i + 1, after))
                cmd0 += n
            else:
                self.offset += n
                for i, (before, _) in enumerate(st.rows):
                    emitted.append((st.table, base + i, 1, cmd0 + i + 1, before))  # type: ignore[arg-type]
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
    from .client import RemoteSession
    from .engine import Session

    session = getattr(conn, "session", None)
    if isinstance(session, Session):
        return session.engine.bulk_apply
    if isinstance(session, RemoteSession):
        return session.bulk_apply
    return None


# -- command line --------------------------------------------------------------------------------
def _connect(args: argparse.Namespace, autocommit: bool = False) -> Any:
    if args.db:
        from . import connect

        return connect(database=args.db)
    if args.driver == "pymssql":
        import pymssql

        return pymssql.connect(
            server=args.server,
            port=str(args.port),
            user=args.user,
            password=args.password,
            database=args.database,
            autocommit=autocommit,
        )
    from . import connect

    return connect(server=args.server, port=args.port, user=args.user, password=args.password, database=args.database)


def grant_reader(conn: Any, login: str, password: str) -> None:
    """Create the least-privileged login the pipeline reads with, idempotently, on SQL Server or the
    emulator (``conn``: a sysadmin's autocommit connection to the source database): not sysadmin;
    SELECT on the ``cdc`` schema and, for snapshots, on the source tables (``db_datareader``).
    Re-running skips what exists: SQL Server's errors 15025 (login exists) and 15023 (user exists)."""
    for sql, exists in (
        (f"CREATE LOGIN [{login}] WITH PASSWORD = N'{password}'", 15025),
        (f"CREATE USER [{login}] FOR LOGIN [{login}]", 15023),
        (f"GRANT SELECT ON SCHEMA::cdc TO [{login}]", None),
        (f"ALTER ROLE db_datareader ADD MEMBER [{login}]", None),
    ):
        try:
            conn.cursor().execute(sql)
            conn.commit()
        except Exception as exc:  # already there from an earlier start
            conn.rollback()
            if exists is None or str(exists) not in str(exc):
                raise


def _ensure_database(args: argparse.Namespace) -> None:
    """Create the database from master when a login to it fails (it does not exist yet). The
    emulator serves exactly one database, which always exists."""
    import pymssql

    try:
        pymssql.connect(
            server=args.server, port=str(args.port), user=args.user, password=args.password, database=args.database
        ).close()
        return
    except pymssql.OperationalError:
        pass
    conn = pymssql.connect(
        server=args.server,
        port=str(args.port),
        user=args.user,
        password=args.password,
        database="master",
        autocommit=True,
    )
    try:
        cur = conn.cursor()
        cur.execute(f"IF DB_ID(N'{args.database}') IS NULL CREATE DATABASE [{args.database}]")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.mssql_emulator.workload",
        description="OLTP workload generator for the demo billing database",
    )
    parser.add_argument("--db", help="emulator DuckDB file, opened in-process (no server)")
    parser.add_argument("--server", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11433)
    parser.add_argument("--database", default="billing")
    parser.add_argument("--user", default="sa")
    parser.add_argument("--password", default=os.environ.get("MSSQL_EMULATOR_PASSWORD", "local"))
    parser.add_argument(
        "--driver",
        choices=["auto", "emulator", "pymssql"],
        default="auto",
        help="auto: pymssql (TDS), except the emulator's own protocol for `bulk` (its fast path ships Arrow tables)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rollback-fraction", type=float, default=0.02)
    sub = parser.add_subparsers(dest="mode", required=True)
    p_init = sub.add_parser("init", help="create tables, populate, enable CDC")
    p_init.add_argument("--accounts", type=int, default=200)
    p_init.add_argument("--products", type=int, default=40)
    p_init.add_argument("--invoices", type=int, default=400)
    p_init.add_argument(
        "--populate-after-cdc",
        action="store_true",
        help="populate after enabling CDC (the initial rows then appear as inserts)",
    )
    p_live = sub.add_parser("live", help="continuous traffic")
    p_live.add_argument("--rate", type=float, default=10.0, help="transactions per second")
    p_live.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM)")
    p_bulk = sub.add_parser("bulk", help="generate N captured changes quickly")
    p_bulk.add_argument("--changes", type=int, default=1_000_000)
    p_bulk.add_argument("--slow", action="store_true", help="run every transaction through SQL")
    p_run = sub.add_parser("run", help="N transactions through SQL")
    p_run.add_argument("--transactions", type=int, default=100)
    p_reader = sub.add_parser("reader-login", help="create the pipeline's least-privileged login (idempotent)")
    p_reader.add_argument("--login", default="cdc_reader")
    p_reader.add_argument("--login-password", required=True)
    args = parser.parse_args(argv)
    if args.driver == "auto":
        args.driver = "emulator" if args.mode == "bulk" else "pymssql"

    if args.driver == "pymssql" and args.mode == "init" and not args.db:
        _ensure_database(args)
    if args.mode == "reader-login":
        # CREATE LOGIN is a server-level statement: run it outside a user transaction.
        conn = _connect(args, autocommit=True)
        try:
            grant_reader(conn, args.login, args.login_password)
        finally:
            conn.close()
        print(json.dumps({"mode": args.mode, "login": args.login}))
        return 0
    conn = _connect(args)
    workload = Workload(conn, seed=args.seed, rollback_fraction=args.rollback_fraction)

    def stop(signum: int, _frame: object) -> None:
        workload.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def progress(r: WorkloadResult) -> None:
        print(
            f"{r.committed} transactions committed, {r.captured_changes} changes, {r.rolled_back} rolled back",
            file=sys.stderr,
            flush=True,
        )

    try:
        if args.mode == "init":
            result = workload.init(
                accounts=args.accounts,
                products=args.products,
                invoices=args.invoices,
                populate_after_cdc=args.populate_after_cdc,
            )
        elif args.mode == "live":
            result = workload.live(rate=args.rate, duration=args.duration, progress=progress)
        elif args.mode == "bulk":
            result = workload.bulk(args.changes, fast=False if args.slow else None)
        else:
            result = workload.run(transactions=args.transactions)
    finally:
        conn.close()
    print(json.dumps({"mode": args.mode, "seed": args.seed, **result.as_dict()}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DDL", "BulkBuilder", "Model", "Tx", "Workload", "WorkloadResult", "bulk_target", "grant_reader", "main"]
