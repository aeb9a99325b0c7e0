"""Traffic 1: a random mix of billing operations (seeded), the OLTP load the CDC pipeline reads.

:class:`OltpMix` picks the next business operation by weight (:data:`WEIGHTS`), draws its values
and returns it as a :class:`~dev.workload.model.Tx` built against its
:class:`~dev.workload.model.SourceState`; a sink applies it (:mod:`.tsql` through SQL, :mod:`.bulk`
for the emulator's fast path, :mod:`.cdclog` in memory) and then tells the state
(``state.apply(tx)``) unless it was rolled back. Deterministic: what it produces depends only on
``seed`` and the state it starts from (business timestamps come from a simulated clock, never from
the wall clock). Holds no connection.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal

from .model import (
    CURRENCIES,
    DEFAULT_START,
    METHODS,
    MONEY,
    SEGMENTS,
    SourceState,
    Stmt,
    Tx,
    delete_rows,
    insert,
    money,
    update,
)
from .schema import Row

COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "CA", "AU", "JP", "BR"]
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


class OltpMix:
    """Seeded random business operations against a :class:`SourceState`.

    ``state``: the state to start from; else ``load_state()`` reads it on first use (and the
    simulated clock then starts at its latest timestamp, unless ``start_time`` is given); else an
    empty state.
    """

    def __init__(
        self,
        *,
        seed: int = 42,
        rollback_fraction: float = 0.02,
        start_time: datetime | None = None,
        state: SourceState | None = None,
        load_state: Callable[[], SourceState] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.rollback_fraction = rollback_fraction
        self._state = state
        self._load_state = load_state or SourceState
        self._start_time = start_time
        self.now = start_time or DEFAULT_START
        self._ops: list[tuple[str, Callable[[], Tx | None]]] = [(name, getattr(self, name)) for name in WEIGHTS]
        self._weights = list(WEIGHTS.values())

    @property
    def state(self) -> SourceState:
        if self._state is None:
            self._state = self._load_state()
            if self._start_time is None:
                self.now = self._state.latest
        return self._state

    def populate(self, accounts: int, products: int, invoices: int) -> Iterator[Tx]:
        """Initial data of an empty database: accounts, products, then invoices (most of them issued),
        with their lines. Each transaction is yielded to be applied (and the state told) before the
        next one is drawn."""
        self._state = self._state or SourceState()
        m = self._state
        acc_rows = [self._account_row(m.take_id("accounts")) for _ in range(accounts)]
        prod_rows = [self._product_row(m.take_id("products")) for _ in range(products)]
        for table, rows in (("accounts", acc_rows), ("products", prod_rows)):
            for i in range(0, len(rows), 500):
                yield Tx(f"populate_{table}", [insert(table, rows[i : i + 500])])
        for _ in range(invoices):
            tx = self.create_invoice()
            if tx is None:
                break
            yield Tx("populate_invoices", tx.stmts)
            r = self.rng.random()
            created = tx.stmts[0].rows[0][1]
            assert created is not None
            invoice_id = created["invoice_id"]
            follow = []
            if r < 0.75:
                follow.append(self.issue_invoice(invoice_id))
            if r < 0.5:
                # drawn before the issue above is applied, so it finds a draft and pays nothing
                follow.append(self.pay_invoice(invoice_id))
            for f in follow:
                if f is not None:
                    yield Tx("populate_invoices", f.stmts)

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
            "credit_limit": money(limit, MONEY),
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
            "unit_price": money(Decimal(rng.randrange(100, 500000)) / 100, MONEY),
            "currency": rng.choice(CURRENCIES),
            "is_active": True,
            "updated_at": self._tick(),
        }

    def _line(self, invoice_id: int, line_no: int) -> Row:
        m = self.state
        product = m.get("products", m.products.choice(self.rng))
        qty = self.rng.randrange(1, 21)
        return {
            "invoice_id": invoice_id,
            "line_no": line_no,
            "product_id": product["product_id"],
            "quantity": qty,
            "unit_price": product["unit_price"],
            "line_amount": money(product["unit_price"] * qty),
        }

    # -- business operations (each returns a transaction, or None when not applicable) ------
    def new_account(self) -> Tx | None:
        return Tx("new_account", [insert("accounts", [self._account_row(self.state.take_id("accounts"))])])

    def edit_account(self) -> Tx | None:
        m = self.state
        if not m.accounts:
            return None
        row = m.get("accounts", m.accounts.choice(self.rng))
        what = self.rng.randrange(4)
        if what == 0:
            changes: Row = {"email": f"ap{self.rng.randrange(1000)}@{row['account_name'].split()[0].lower()}.example"}
        elif what == 1:
            seg = self.rng.choice([s for s, _ in SEGMENTS])
            changes = {"segment": seg, "credit_limit": money(row["credit_limit"] * Decimal("1.25"), MONEY)}
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
        return Tx("new_product", [insert("products", [self._product_row(self.state.take_id("products"))])])

    def price_change(self) -> Tx | None:
        m = self.state
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
                    {"unit_price": money(row["unit_price"] * factor, MONEY), "updated_at": self._tick()},
                )
            ],
        )

    def create_invoice(self) -> Tx | None:
        m = self.state
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
            "total_amount": money(sum((ln["line_amount"] for ln in lines), Decimal(0))),
            "updated_at": now,
        }
        return Tx("create_invoice", [insert("invoices", [invoice]), insert("invoice_lines", lines)])

    def _total_update(self, invoice: Row, lines: Iterable[Row]) -> Stmt:
        total = money(sum((ln["line_amount"] for ln in lines), Decimal(0)))
        return update("invoices", invoice, {"total_amount": total, "updated_at": self._tick()})

    def edit_draft(self) -> Tx | None:
        m = self.state
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
            st = update("invoice_lines", line, {"quantity": qty, "line_amount": money(line["unit_price"] * qty)})
            stmts.append(st)
            after = st.rows[0][1]
            assert after is not None
            lines[line["line_no"]] = after
        else:
            line_no = self.rng.choice(sorted(lines))
            line = lines.pop(line_no)
            stmts.append(
                delete_rows("invoice_lines", "invoice_id = %s AND line_no = %s", (line["invoice_id"], line_no), [line])
            )
        stmts.append(self._total_update(invoice, lines.values()))
        return Tx("edit_draft", stmts)

    def issue_invoice(self, invoice_id: int | None = None) -> Tx | None:
        m = self.state
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
        m = self.state
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
        m = self.state
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
        m = self.state
        issued = m.by_status["issued"]
        if not issued:
            return None
        invoice = m.get("invoices", issued.choice(self.rng))
        return Tx("void_invoice", [update("invoices", invoice, {"status": "void", "updated_at": self._tick()})])

    def delete_draft(self) -> Tx | None:
        m = self.state
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
        m = self.state
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
        m = self.state
        if len(m.accounts) < 10:
            return None
        account_id = m.accounts.choice(self.rng)
        if m.invoices_of[account_id] > 0:
            return None
        row = m.get("accounts", account_id)
        return Tx("delete_account", [delete_rows("accounts", "account_id = %s", (account_id,), [row])])

    def next_tx(self) -> Tx:
        """Pick the next business transaction (deterministic for a given seed and starting state)."""
        self.state  # noqa: B018 - load the state before drawing random numbers
        while True:
            _name, fn = self.rng.choices(self._ops, self._weights)[0]
            tx = fn()
            if tx is not None:
                tx.rollback = self.rng.random() < self.rollback_fraction
                return tx
