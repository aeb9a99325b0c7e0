"""Traffic 2: a calendar of billing events over months (seeded), the history the marts are built on.

:class:`BillingTimeline` schedules business events on a heap and runs them in time order, one
source transaction each, against a :class:`~dev.workload.cdclog.LoggedSource` (so every commit
lands in the in-memory CDC log): accounts and products created and changed at known moments,
invoices created, corrected, issued, paid on time, late, in instalments or never, voided and
refunded, with business hours, payment terms per segment and currencies per country. Where
:mod:`.oltp` is a load (many operations a second on a simulated clock), this is a business history
(months of calendar time, with ageing receivables and SCD2 versions), so its choices differ; both
build their transactions with the same model (:mod:`.model`, :mod:`.schema`). ``dev.dbt_local``
seeds the dbt tests' RAW tables from :func:`generate`; tests/dbt/expected.py replays the same log.

No SQL and no connection here.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from .cdclog import CdcLog, Dataset, LoggedSource
from .model import METHODS, MONEY, money, ms

RATE = {"USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79")}  # list prices are USD
CURRENCY_OF_COUNTRY = {"US": "USD", "CA": "USD", "DE": "EUR", "FR": "EUR", "NL": "EUR", "GB": "GBP"}
PAYMENT_TERMS = {"smb": 14, "mid_market": 30, "enterprise": 45}


_FIRST = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell", "Cyberdyne",
          "Soylent", "Wonka", "Oscorp", "Nakatomi"]  # fmt: skip
_SUFFIX = ["GmbH", "Ltd", "Inc", "SARL", "BV", "Corp"]
_PRODUCTS = [
    ("SKU-PLAT-01", "Platform licence (seat)", "49.0000"),
    ("SKU-SUPP-01", "Premium support (month)", "300.0000"),
    ("SKU-STOR-TB", "Storage (TB-month)", "23.5000"),
    ("SKU-TRN-DAY", "Training day", "1200.0000"),
    ("SKU-API-1M", "API calls (million)", "2.7500"),
    ("SKU-ONB-PKG", "Onboarding package", "2500.0000"),
]


class BillingTimeline:
    """Schedules business operations on a heap and runs them in time order, one transaction each."""

    def __init__(self, data: Dataset, rng: random.Random, start: datetime, *, salt: str) -> None:
        self.src = LoggedSource(CdcLog(data, salt=salt))
        self.rng = rng
        self.start = start
        self.end = data.anchor
        self.queue: list[tuple[datetime, int, Callable[[datetime], None]]] = []
        self.seq = itertools.count()
        self.next_invoice = itertools.count(100_001)
        self.next_payment = itertools.count(500_001)
        self.no_invoices: set[int] = set()

    # -- scheduling -----------------------------------------------------------------------------
    def at(self, when: datetime, action: Callable[[datetime], None]) -> None:
        if when < self.end:
            heapq.heappush(self.queue, (when, next(self.seq), action))

    def business_time(self, day: datetime, hour_from: int = 8, hour_to: int = 18) -> datetime:
        seconds = self.rng.randint(hour_from * 3600, hour_to * 3600 - 1)
        return ms(day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            seconds=seconds, milliseconds=self.rng.randint(0, 999)))  # fmt: skip

    def later(self, now: datetime, min_days: float, max_days: float) -> datetime:
        day = now + timedelta(days=self.rng.uniform(min_days, max_days))
        return self.business_time(day) if day.date() != now.date() else ms(now + timedelta(minutes=37))

    def run(self, until: datetime) -> None:
        while self.queue and self.queue[0][0] < until:
            when, _, action = heapq.heappop(self.queue)
            action(when)

    # -- accounts and products ------------------------------------------------------------------
    def create_account(self, now: datetime, account_id: int, country: str, segment: str, invoices: bool = True) -> None:
        name = f"{_FIRST[(account_id - 1) % len(_FIRST)]} {_SUFFIX[account_id % len(_SUFFIX)]}"
        email = f"billing@{name.split()[0].lower()}{account_id}.example.com"
        limit = {"smb": 5_000, "mid_market": 25_000, "enterprise": 150_000}[segment]
        with self.src.transaction(now):
            self.src.insert("accounts", {
                "account_id": account_id, "account_name": name, "email": email, "country": country,
                "segment": segment, "credit_limit": money(limit, MONEY), "is_active": True,
                "created_at": ms(now), "updated_at": ms(now),
            })  # fmt: skip
        if invoices:
            self.at(self.later(now, 1, 6), functools.partial(self.create_invoice, account_id=account_id))
        else:
            self.no_invoices.add(account_id)

    def update_account(self, now: datetime, account_id: int, **changes: Any) -> None:
        if (account_id,) not in self.src.rows["accounts"]:
            return
        with self.src.transaction(now):
            self.src.update("accounts", (account_id,), **changes, updated_at=ms(now))

    def delete_account(self, now: datetime, account_id: int) -> None:
        with self.src.transaction(now):
            self.src.delete("accounts", (account_id,))

    def create_product(self, now: datetime, product_id: int, sku: str, name: str, price: str) -> None:
        with self.src.transaction(now):
            self.src.insert("products", {
                "product_id": product_id, "sku": sku, "product_name": name, "unit_price": Decimal(price),
                "currency": "USD", "is_active": True, "updated_at": ms(now),
            })  # fmt: skip

    def update_product(self, now: datetime, product_id: int, **changes: Any) -> None:
        with self.src.transaction(now):
            self.src.update("products", (product_id,), **changes, updated_at=ms(now))

    def delete_product(self, now: datetime, product_id: int) -> None:
        with self.src.transaction(now):
            self.src.delete("products", (product_id,))

    # -- invoices -------------------------------------------------------------------------------
    def _account(self, account_id: int) -> dict[str, Any] | None:
        return self.src.rows["accounts"].get((account_id,))

    def _lines(self, invoice_id: int) -> list[dict[str, Any]]:
        return [r for (inv, _), r in sorted(self.src.rows["invoice_lines"].items()) if inv == invoice_id]

    def _new_line(self, invoice_id: int, line_no: int, currency: str) -> dict[str, Any]:
        products = [p for p in self.src.rows["products"].values() if p["is_active"]]
        product = self.rng.choice(sorted(products, key=lambda p: p["product_id"]))
        quantity = self.rng.choice([1, 1, 2, 3, 5, 10, 12, 25])
        unit_price = money(product["unit_price"] * RATE[currency], MONEY)
        return {
            "invoice_id": invoice_id, "line_no": line_no, "product_id": product["product_id"],
            "quantity": quantity, "unit_price": unit_price, "line_amount": money(quantity * unit_price),
        }  # fmt: skip

    def create_invoice(self, now: datetime, account_id: int) -> None:
        account = self._account(account_id)
        if account is None or not account["is_active"]:
            return
        invoice_id = next(self.next_invoice)
        currency = CURRENCY_OF_COUNTRY[account["country"]]
        lines = [self._new_line(invoice_id, n, currency) for n in range(1, self.rng.randint(1, 4) + 1)]
        total = sum((line["line_amount"] for line in lines), Decimal("0.00"))
        invoice = {
            "invoice_id": invoice_id, "account_id": account_id,
            "invoice_number": f"INV-{now:%Y}-{invoice_id - 100_000:06d}", "status": "draft", "issued_at": None,
            "due_date": None, "currency": currency, "total_amount": total, "updated_at": ms(now),
        }  # fmt: skip
        roll = self.rng.random()
        with self.src.transaction(now):
            self.src.insert("invoices", invoice)
            for line in lines:
                self.src.insert("invoice_lines", line)
            if roll < 0.12:  # created and issued in the same transaction: two changes, one LSN
                self._issue(now, invoice_id)
        if roll < 0.12:
            self._schedule_settlement(now, invoice_id)
        elif roll < 0.20:  # an abandoned draft is deleted with its lines
            self.at(self.later(now, 0.5, 3), lambda t: self.delete_draft(t, invoice_id))
        elif roll < 0.32:  # the draft is corrected before it is issued
            self.at(self.later(now, 0.1, 1), lambda t: self.edit_draft(t, invoice_id))
        else:
            self.at(self.later(now, 0, 2), lambda t: self.issue(t, invoice_id))
        # the account's next invoice
        self.at(self.later(now, 6, 20), lambda t: self.create_invoice(t, account_id))

    def edit_draft(self, now: datetime, invoice_id: int) -> None:
        lines = self._lines(invoice_id)
        with self.src.transaction(now):
            line = lines[0]
            quantity = line["quantity"] + self.rng.choice([1, 2, 5])
            self.src.update("invoice_lines", (invoice_id, line["line_no"]), quantity=quantity,
                            line_amount=money(quantity * line["unit_price"]))  # fmt: skip
            if len(lines) > 1 and self.rng.random() < 0.5:
                self.src.delete("invoice_lines", (invoice_id, lines[-1]["line_no"]))
            total = sum((r["line_amount"] for r in self._lines(invoice_id)), Decimal("0.00"))
            self.src.update("invoices", (invoice_id,), total_amount=total, updated_at=ms(now))
        self.at(self.later(now, 0.1, 2), lambda t: self.issue(t, invoice_id))

    def delete_draft(self, now: datetime, invoice_id: int) -> None:
        with self.src.transaction(now):
            for line in self._lines(invoice_id):
                self.src.delete("invoice_lines", (invoice_id, line["line_no"]))
            self.src.delete("invoices", (invoice_id,))

    def _issue(self, now: datetime, invoice_id: int) -> None:
        invoice = self.src.rows["invoices"][(invoice_id,)]
        segment = self.src.rows["accounts"][(invoice["account_id"],)]["segment"]
        self.src.update("invoices", (invoice_id,), status="issued", issued_at=ms(now),
                        due_date=now.date() + timedelta(days=PAYMENT_TERMS[segment]), updated_at=ms(now))  # fmt: skip

    def issue(self, now: datetime, invoice_id: int) -> None:
        with self.src.transaction(now):
            self._issue(now, invoice_id)
        self._schedule_settlement(now, invoice_id)

    def _schedule_settlement(self, now: datetime, invoice_id: int) -> None:
        invoice = self.src.rows["invoices"][(invoice_id,)]
        terms = (invoice["due_date"] - now.date()).days
        total = invoice["total_amount"]
        roll = self.rng.random()
        if roll < 0.07:
            self.at(self.later(now, 1, 10), lambda t: self.void(t, invoice_id))
        elif roll < 0.62:  # on time, in full
            self.at(self.later(now, 2, max(terms - 1, 3)), lambda t: self.pay(t, invoice_id, total))
        elif roll < 0.82:  # late, in full
            self.at(self.later(now, terms + 3, terms + 40), lambda t: self.pay(t, invoice_id, total))
        elif roll < 0.94:  # in two instalments, the second one possibly late
            first = money(total * Decimal("0.4"))
            self.at(self.later(now, 3, terms), lambda t: self.pay(t, invoice_id, first))
            self.at(self.later(now, terms - 2, terms + 25), lambda t: self.pay(t, invoice_id, total - first))
        # else: never paid (stays open, ages)

    def void(self, now: datetime, invoice_id: int) -> None:
        with self.src.transaction(now):
            self.src.update("invoices", (invoice_id,), status="void", updated_at=ms(now))

    def pay(self, now: datetime, invoice_id: int, amount: Decimal) -> None:
        invoice = self.src.rows["invoices"].get((invoice_id,))
        if invoice is None or invoice["status"] != "issued":
            return
        payment_id = next(self.next_payment)
        payment = {
            "payment_id": payment_id, "invoice_id": invoice_id, "account_id": invoice["account_id"],
            "amount": money(amount), "method": self.rng.choice([METHODS[0], METHODS[1], METHODS[1], METHODS[2]]),
            "status": "settled", "paid_at": ms(now),
            "external_ref": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper(),
        }  # fmt: skip
        settled = sum(
            (p["amount"] for p in self.src.rows["payments"].values()
             if p["invoice_id"] == invoice_id and p["status"] == "settled"),
            Decimal("0.00"),
        ) + payment["amount"]  # fmt: skip
        with self.src.transaction(now):
            self.src.insert("payments", payment)
            if settled >= invoice["total_amount"]:
                self.src.update("invoices", (invoice_id,), status="paid", updated_at=ms(now))
        if settled >= invoice["total_amount"] and self.rng.random() < 0.06:
            self.at(self.later(now, 2, 15), lambda t: self.refund(t, invoice_id))

    def refund(self, now: datetime, invoice_id: int) -> None:
        with self.src.transaction(now):
            for key, p in sorted(self.src.rows["payments"].items()):
                if p["invoice_id"] == invoice_id and p["status"] == "settled":
                    self.src.update("payments", key, status="refunded")
            self.src.update("invoices", (invoice_id,), status="refunded", updated_at=ms(now))


def generate(
    anchor: datetime | None = None, seed: int = 7, days: int = 100, history_days: int = 60, *, salt: str
) -> Dataset:
    """A deterministic (for a given anchor and seed) billing workload ending at ``anchor``.

    ``history_days`` of activity happen before the initial snapshot (they reach Snowflake only as
    op-0 snapshot rows), then ``days`` of captured changes; the last changes happen minutes before
    ``anchor`` so that source freshness passes when ``anchor`` is now. ``salt``: the pipeline's
    hash salt (personal data lands hashed with it).
    """
    anchor = ms(anchor or datetime.utcnow().replace(microsecond=0))
    snapshot_at = ms((anchor - timedelta(days=days)).replace(hour=6, minute=0, second=0, microsecond=0))
    begin = snapshot_at - timedelta(days=history_days)
    data = Dataset(anchor=anchor, snapshot_at=snapshot_at)
    rng = random.Random(seed)
    w = BillingTimeline(data, rng, begin, salt=salt)

    def day(n: int) -> datetime:  # n days since the workload began
        return begin + timedelta(days=n)

    for n, (sku, name, price) in enumerate(_PRODUCTS[:5], start=1):
        w.create_product(w.business_time(day(0)), n, sku, name, price)
    accounts = [(1, "US", "enterprise"), (2, "DE", "mid_market"), (3, "GB", "smb"), (4, "FR", "smb"),
                (5, "US", "mid_market"), (6, "NL", "smb"), (7, "US", "smb")]  # fmt: skip
    for account_id, country, segment in accounts:
        w.create_account(w.business_time(day(account_id)), account_id, country, segment)
    w.run(snapshot_at)
    w.src.take_snapshot(snapshot_at)

    # Captured period: reference data changes at known moments, invoices keep flowing.
    def post(n: int) -> datetime:  # a business moment n days after the snapshot
        return w.business_time(snapshot_at + timedelta(days=n))

    w.at(post(3), lambda t: w.create_product(t, 6, *_PRODUCTS[5]))
    w.at(post(9), lambda t: w.create_product(t, 7, "SKU-TMP-99", "Mistyped product", "1.0000"))
    w.at(post(9) + timedelta(minutes=20), lambda t: w.delete_product(t, 7))  # never sold: deleted
    w.at(post(20), lambda t: w.update_product(t, 1, unit_price=Decimal("54.0000")))  # list price rise
    w.at(post(41), lambda t: w.update_product(t, 3, product_name="Storage (TB-month, hot tier)"))
    w.at(post(55), lambda t: w.update_product(t, 5, is_active=False))  # retired
    w.at(post(2), lambda t: w.create_account(t, 8, "CA", "smb"))
    w.at(post(12), lambda t: w.update_account(t, 3, segment="mid_market", credit_limit=Decimal("25000.0000")))
    w.at(post(30), lambda t: w.update_account(t, 2, email="accounts-payable@globex2.example.com"))
    w.at(post(33), lambda t: w.create_account(t, 9, "GB", "smb", invoices=False))
    w.at(post(47), lambda t: w.delete_account(t, 9))  # closed before it ever bought anything
    w.at(post(50), lambda t: w.update_account(t, 1, credit_limit=Decimal("200000.0000")))
    w.at(post(50) + timedelta(hours=2), lambda t: w.update_account(t, 1, segment="enterprise"))  # no-op update
    w.at(post(64), lambda t: w.update_account(t, 6, is_active=False))  # churned: no new invoices
    w.at(post(70), lambda t: w.create_account(t, 10, "DE", "enterprise"))
    w.at(post(80), lambda t: w.update_account(t, 3, segment="enterprise"))
    w.run(anchor - timedelta(minutes=30))

    # The last minutes: fresh changes on the busy tables (source freshness passes when anchor=now).
    recent = anchor - timedelta(minutes=12)
    w.create_invoice(recent, 1)
    open_invoices = sorted(k for k, v in w.src.rows["invoices"].items() if v["status"] == "issued")
    w.pay(anchor - timedelta(minutes=6), open_invoices[0][0], w.src.rows["invoices"][open_invoices[0]]["total_amount"])
    return data
