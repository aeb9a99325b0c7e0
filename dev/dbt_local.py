"""dbt on the local stack: build the manifest, seed demo raw data, run dbt against local Snowflake.

CLI (run from the repository root, ``PYTHONPATH=.``)::

    python -m dev.dbt_local manifest                 # dbt parse -> the manifest (include/cdc_pipeline/dbt_manifest.py)
    python -m dev.dbt_local seed [--port P]          # demo RAW + RAW *_HISTORY tables (the CDC contract)
    python -m dev.dbt_local build [--port P] [-- dbt args]   # dbt build --target local
    python -m dev.dbt_local dbt [--port P] -- <any dbt command>

The seeded dataset is generated deterministically (``--seed``) by replaying a billing workload
through an in-memory model of the source database: every business operation is one source
transaction with its own LSN, and both raw tables are derived from the same change list exactly
as the ingestion pipeline writes them (``include/cdc_pipeline/snowflake_sql.py``):

* ``RAW.<T>_HISTORY``: every change once (snapshot rows op 0, inserts 2, updates 4 with the after
  image, deletes 1 with the row's last values), with LSN / seqval / commit time / batch;
* ``RAW.<T>``: the latest change per key; deletes are soft (``_CDC_DELETED``).

The tables themselves are created with the pipeline's own DDL (``Warehouse.ensure_target_tables``
with the pipeline's type mapping), so the dbt project reads exactly the layout production has.
Tests rebuild the expected marts from :class:`Dataset` in Python, independently of the SQL.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from include.cdc_pipeline import dbt_manifest
from include.cdc_pipeline.types import hasher

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "billing"
PROJECT_DIR = dbt_manifest.project_dir(PROJECT)
MANIFEST = dbt_manifest.manifest_path(PROJECT)
DBT = Path(sys.executable).parent / "dbt"
DATABASE = "ANALYTICS"
RAW_SCHEMA = "RAW"
HASH_SALT = "local-dev-salt"  # the local value of the Airflow Variable cdc_hash_salt_secret

OP_SNAPSHOT, OP_DELETE, OP_INSERT, OP_UPDATE = 0, 1, 2, 4
ZERO_SEQVAL = "0" * 20

# Source schema (SQL Server), as sys.columns would describe it: (name, type, precision, scale).
SOURCE_TABLES: dict[str, dict[str, Any]] = {
    "accounts": {
        "key": ("account_id",),
        "hashed": ("email",),
        "columns": [
            ("account_id", "int", 10, 0), ("account_name", "nvarchar", 0, 0), ("email", "nvarchar", 0, 0),
            ("country", "char", 0, 0), ("segment", "varchar", 0, 0), ("credit_limit", "money", 19, 4),
            ("is_active", "bit", 0, 0), ("created_at", "datetime2", 23, 3), ("updated_at", "datetime2", 23, 3),
        ],
    },
    "products": {
        "key": ("product_id",),
        "hashed": (),
        "columns": [
            ("product_id", "int", 10, 0), ("sku", "varchar", 0, 0), ("product_name", "nvarchar", 0, 0),
            ("unit_price", "decimal", 18, 4), ("currency", "char", 0, 0), ("is_active", "bit", 0, 0),
            ("updated_at", "datetime2", 23, 3),
        ],
    },
    "invoices": {
        "key": ("invoice_id",),
        "hashed": (),
        "columns": [
            ("invoice_id", "bigint", 19, 0), ("account_id", "int", 10, 0), ("invoice_number", "varchar", 0, 0),
            ("status", "varchar", 0, 0), ("issued_at", "datetime2", 23, 3), ("due_date", "date", 0, 0),
            ("currency", "char", 0, 0), ("total_amount", "decimal", 18, 2), ("updated_at", "datetime2", 23, 3),
        ],
    },
    "invoice_lines": {
        "key": ("invoice_id", "line_no"),
        "hashed": (),
        "columns": [
            ("invoice_id", "bigint", 19, 0), ("line_no", "int", 10, 0), ("product_id", "int", 10, 0),
            ("quantity", "int", 10, 0), ("unit_price", "decimal", 18, 4), ("line_amount", "decimal", 18, 2),
        ],
    },
    "payments": {
        "key": ("payment_id",),
        "hashed": (),
        "columns": [
            ("payment_id", "bigint", 19, 0), ("invoice_id", "bigint", 19, 0), ("account_id", "int", 10, 0),
            ("amount", "decimal", 18, 2), ("method", "varchar", 0, 0), ("status", "varchar", 0, 0),
            ("paid_at", "datetime2", 23, 3), ("external_ref", "uniqueidentifier", 0, 0),
        ],
    },
}  # fmt: skip
TABLES = tuple(SOURCE_TABLES)

CENT = Decimal("0.01")
RATE = {"USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79")}  # list prices are USD
CURRENCY_OF_COUNTRY = {"US": "USD", "CA": "USD", "DE": "EUR", "FR": "EUR", "NL": "EUR", "GB": "GBP"}
PAYMENT_TERMS = {"smb": 14, "mid_market": 30, "enterprise": 45}


def money(value: Decimal | int | float, places: Decimal = CENT) -> Decimal:
    return Decimal(value).quantize(places, rounding=ROUND_HALF_UP)


def ms(ts: datetime) -> datetime:
    """datetime2(3): millisecond precision."""
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


# The pipeline's own salted SHA-256, so the dataset's hashed e-mails are what the loader writes.
hash_email = hasher(HASH_SALT)


# --------------------------------------------------------------------------------------------
# The change log
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One row of a CDC change table, as it lands in ``RAW.<T>_HISTORY``."""

    table: str
    values: dict[str, Any]  # source column -> value (email already hashed)
    lsn: str
    seqval: str
    op: int
    committed_at: datetime | None
    loaded_at: datetime
    batch_id: str

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(self.values[k] for k in SOURCE_TABLES[self.table]["key"])

    @property
    def order(self) -> tuple[str, str, int]:
        return (self.lsn, self.seqval, self.op)


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
            row = {k.upper(): v for k, v in change.values.items()}
            deleted = change.op == OP_DELETE
            row.update(
                _CDC_LSN=change.lsn,
                _CDC_SEQVAL=change.seqval,
                _CDC_OPERATION=change.op,
                _CDC_COMMITTED_AT=change.committed_at,
                _CDC_LOADED_AT=change.loaded_at,
                _CDC_DELETED=deleted,
                _CDC_DELETED_AT=change.committed_at if deleted else None,
            )
            rows.append(row)
        return rows

    def history_rows(self, table: str) -> list[dict[str, Any]]:
        rows = []
        for change in self.history(table):
            row = {k.upper(): v for k, v in change.values.items()}
            row.update(
                _CDC_LSN=change.lsn,
                _CDC_SEQVAL=change.seqval,
                _CDC_OPERATION=change.op,
                _CDC_COMMITTED_AT=change.committed_at,
                _CDC_LOADED_AT=change.loaded_at,
                _CDC_BATCH_ID=change.batch_id,
            )
            rows.append(row)
        return rows


# --------------------------------------------------------------------------------------------
# The workload: a small billing business replayed through an in-memory source database
# --------------------------------------------------------------------------------------------


class _Source:
    """Current source rows per table, and the CDC log of the changes made after the snapshot."""

    def __init__(self, data: Dataset, poll_minutes: int = 5) -> None:
        self.data = data
        self.rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in TABLES}
        self.capturing = False
        self.lsn_counter = itertools.count(0x2A0000)
        self.poll = timedelta(minutes=poll_minutes)
        self._tx: list[tuple[str, int, dict[str, Any]]] | None = None
        self._tx_time: datetime | None = None

    @contextlib.contextmanager
    def transaction(self, at: datetime) -> Iterator[None]:
        self._tx, self._tx_time = [], ms(at)
        yield
        changes, self._tx = self._tx, None
        if not self.capturing or not changes:
            return
        lsn = f"{next(self.lsn_counter) * 0x10000 + 0x1A8:020X}"
        committed = self._tx_time + timedelta(milliseconds=7)  # commit a few ms after the statements
        loaded = self._poll_after(committed)
        for seq, (table, op, values) in enumerate(changes, start=2):
            batch = f"dbo_{table}:{self._batch_name(loaded)}"
            self.data.changes[table].append(
                Change(table, dict(values), lsn, f"{lsn[:12]}{seq:08X}", op, committed, loaded, batch)
            )

    def _poll_after(self, ts: datetime) -> datetime:
        """The CDC DAG polls every few minutes; a change lands at the next poll (+ load time)."""
        epoch = datetime(2000, 1, 1)
        polls = (ts - epoch) // self.poll + 1
        return epoch + polls * self.poll + timedelta(seconds=40, microseconds=123456)

    @staticmethod
    def _batch_name(loaded: datetime) -> str:
        return f"poll-{loaded:%Y%m%dT%H%M}"

    def _record(self, table: str, op: int, values: dict[str, Any]) -> None:
        assert self._tx is not None, "changes happen inside a transaction"
        self._tx.append((table, op, dict(values)))

    def _key(self, table: str, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values[k] for k in SOURCE_TABLES[table]["key"])

    def insert(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        key = self._key(table, values)
        assert key not in self.rows[table], f"{table}{key} exists"
        row = dict(values)
        self.rows[table][key] = row
        self._record(table, OP_INSERT, row)
        return row

    def update(self, table: str, key: tuple[Any, ...], **changes: Any) -> dict[str, Any]:
        row = self.rows[table][key]
        row.update(changes)
        self._record(table, OP_UPDATE, row)
        return row

    def delete(self, table: str, key: tuple[Any, ...]) -> None:
        row = self.rows[table].pop(key)
        self._record(table, OP_DELETE, row)

    def take_snapshot(self, at: datetime) -> None:
        """Initial load: every live row once as op 0 at the snapshot LSN, then capture changes."""
        lsn = f"{next(self.lsn_counter) * 0x10000 + 0x1A8:020X}"
        committed = ms(at)
        loaded = committed + timedelta(minutes=1, microseconds=654321)
        for table in TABLES:
            for values in self.rows[table].values():
                self.data.changes[table].append(
                    Change(table, dict(values), lsn, ZERO_SEQVAL, OP_SNAPSHOT, committed, loaded,
                           f"dbo_{table}:snapshot-{lsn}")
                )  # fmt: skip
        self.capturing = True


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


class _Workload:
    """Schedules business operations on a heap and runs them in time order, one transaction each."""

    def __init__(self, data: Dataset, rng: random.Random, start: datetime) -> None:
        self.src = _Source(data)
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
                "account_id": account_id, "account_name": name, "email": hash_email(email), "country": country,
                "segment": segment, "credit_limit": money(limit, Decimal("0.0001")), "is_active": True,
                "created_at": ms(now), "updated_at": ms(now),
            })  # fmt: skip
        if invoices:
            self.at(self.later(now, 1, 6), lambda t, a=account_id: self.create_invoice(t, a))
        else:
            self.no_invoices.add(account_id)

    def update_account(self, now: datetime, account_id: int, **changes: Any) -> None:
        if (account_id,) not in self.src.rows["accounts"]:
            return
        if "email" in changes:
            changes["email"] = hash_email(changes["email"])
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
        unit_price = money(product["unit_price"] * RATE[currency], Decimal("0.0001"))
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
        segment = self._account(invoice["account_id"])["segment"]  # type: ignore[index]
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
            "amount": money(amount), "method": self.rng.choice(["card", "transfer", "transfer", "direct_debit"]),
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


def generate(anchor: datetime | None = None, seed: int = 7, days: int = 100, history_days: int = 60) -> Dataset:
    """A deterministic (for a given anchor and seed) billing workload ending at ``anchor``.

    ``history_days`` of activity happen before the initial snapshot (they reach Snowflake only as
    op-0 snapshot rows), then ``days`` of captured changes; the last changes happen minutes before
    ``anchor`` so that source freshness passes when ``anchor`` is now.
    """
    anchor = ms(anchor or datetime.utcnow().replace(microsecond=0))
    snapshot_at = ms((anchor - timedelta(days=days)).replace(hour=6, minute=0, second=0, microsecond=0))
    begin = snapshot_at - timedelta(days=history_days)
    data = Dataset(anchor=anchor, snapshot_at=snapshot_at)
    rng = random.Random(seed)
    w = _Workload(data, rng, begin)

    day = lambda n: begin + timedelta(days=n)  # noqa: E731 - days since the workload began
    for n, (sku, name, price) in enumerate(_PRODUCTS[:5], start=1):
        w.create_product(w.business_time(day(0)), n, sku, name, price)
    accounts = [(1, "US", "enterprise"), (2, "DE", "mid_market"), (3, "GB", "smb"), (4, "FR", "smb"),
                (5, "US", "mid_market"), (6, "NL", "smb"), (7, "US", "smb")]  # fmt: skip
    for account_id, country, segment in accounts:
        w.create_account(w.business_time(day(account_id)), account_id, country, segment)
    w.run(snapshot_at)
    w.src.take_snapshot(snapshot_at)

    # Captured period: reference data changes at known moments, invoices keep flowing.
    post = lambda n: w.business_time(snapshot_at + timedelta(days=n))  # noqa: E731
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


# --------------------------------------------------------------------------------------------
# Loading into the local Snowflake
# --------------------------------------------------------------------------------------------


def _layout(table: str, database: str = DATABASE) -> Any:
    from include.cdc_pipeline.config import DeleteMode
    from include.cdc_pipeline.snowflake_sql import TableLayout
    from include.cdc_pipeline.types import SourceColumn, map_column

    spec = SOURCE_TABLES[table]
    columns = tuple(
        map_column(SourceColumn(name, type_, precision=p, scale=s), hashed=name in spec["hashed"])
        for name, type_, p, s in spec["columns"]
    )
    return TableLayout(
        database=database, raw_schema=RAW_SCHEMA, staging_schema="STAGING", table=table.upper(),
        staging_table=f"{table.upper()}_DBT_SEED", columns=columns, key=tuple(k.upper() for k in spec["key"]),
        delete_mode=DeleteMode.SOFT,
    )  # fmt: skip


def connect(port: int | None = None, database: str | None = None) -> Any:
    """A connector connection to the local Snowflake (no database selected unless given)."""
    import snowflake.connector

    from dev.snowflake_local import DEFAULT_PORT, connection_params

    return snowflake.connector.connect(**connection_params(port or DEFAULT_PORT, database=database))


def _insert(cursor: Any, target: str, rows: Sequence[dict[str, Any]], chunk: int = 500) -> None:
    if not rows:
        return
    names = list(rows[0])
    placeholders = ", ".join(f"%({n})s" for n in names)
    columns = ", ".join(f'"{n}"' for n in names)
    sql = f"INSERT INTO {target} ({columns}) VALUES ({placeholders})"
    for i in range(0, len(rows), chunk):
        cursor.executemany(sql, list(rows[i : i + chunk]))  # one multi-row INSERT per chunk


def seed(data: Dataset, port: int | None = None, conn: Any = None, database: str = DATABASE) -> dict[str, int]:
    """(Re)create <database>.RAW.<T> and <T>_HISTORY with the pipeline's DDL and load ``data``."""
    from include.cdc_pipeline.warehouse import Warehouse

    own = conn is None
    conn = conn or connect(port)
    try:
        wh = Warehouse(conn)
        wh.ensure_database(database)
        wh.ensure_schemas(database, [RAW_SCHEMA])
        counts = {}
        for table in TABLES:
            layout = _layout(table, database)
            for name in (layout.raw, layout.history):
                wh.execute(f"DROP TABLE IF EXISTS {name}")
            wh.ensure_target_tables(layout)
            cursor = conn.cursor()
            try:
                _insert(cursor, layout.raw, data.raw_rows(table))
                _insert(cursor, layout.history, data.history_rows(table))
            finally:
                cursor.close()
            counts[table] = len(data.changes[table])
        return counts
    finally:
        if own:
            conn.close()


# --------------------------------------------------------------------------------------------
# dbt
# --------------------------------------------------------------------------------------------


def dbt_env(port: int | None = None, target: str = "local", database: str | None = None) -> dict[str, str]:
    """Environment for a dbt subprocess on the local stack (profiles.yml reads these)."""
    env = dict(os.environ)
    if port is not None:
        env["CDC_LOCAL_SNOWFLAKE_PORT"] = str(port)
    if database is not None:
        env["CDC_DBT_DATABASE"] = database
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env["CDC_DBT_TARGET"] = target
    return env


def run_dbt(
    args: Sequence[str],
    port: int | None = None,
    target: str = "local",
    *,
    database: str | None = None,
    target_path: Path | None = None,
    log_path: Path | None = None,
    extra_env: dict[str, str] | None = None,
    check: bool = True,
    capture: bool = False,
    timeout: float | None = 900,
) -> subprocess.CompletedProcess[str]:
    """``dbt <args> --project-dir … --profiles-dir … --target <target>`` in a subprocess.

    ``target_path`` / ``log_path`` keep a run's artifacts away from the project's own target/
    (runs in parallel, tests and benchmarks, must not share one).
    """
    cmd = [str(DBT), *args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)]
    if args and args[0] not in ("deps", "clean", "init"):
        cmd += ["--target", target]
    if target_path is not None:
        cmd += ["--target-path", str(target_path)]
    if log_path is not None:
        cmd += ["--log-path", str(log_path)]
    env = {**dbt_env(port, target, database), **(extra_env or {})}
    return subprocess.run(
        cmd, cwd=PROJECT_DIR, env=env, check=check, text=True, capture_output=capture, timeout=timeout
    )


def build_manifest() -> Path:
    """``dbt parse`` into the manifest the Cosmos DAG reads (include/cdc_pipeline/dbt_manifest.py)."""
    return dbt_manifest.build(PROJECT)


def manifest_is_stale() -> bool:
    """True when the manifest is missing or older than any file of the dbt project."""
    return dbt_manifest.is_stale(PROJECT)


def ensure_manifest() -> Path:
    """Build the manifest only when it is missing or stale (``make manifest`` semantics)."""
    return dbt_manifest.ensure(PROJECT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.dbt_local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["manifest", "seed", "build", "dbt"])
    parser.add_argument(
        "--port", type=int, default=None, help="local Snowflake port (default $CDC_LOCAL_SNOWFLAKE_PORT)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed: dataset generator seed")
    parser.add_argument("--database", default=DATABASE, help=f"database to seed / build in (default {DATABASE})")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = parser.parse_args(argv)
    args.dbt_args = extra  # everything after `--` goes to dbt unchanged
    if args.command == "manifest":
        print(build_manifest())
        return 0
    if args.command == "seed":
        data = generate(seed=args.seed)
        counts = seed(data, args.port, database=args.database)
        print(f"seeded {args.database}.{RAW_SCHEMA} (anchor {data.anchor:%Y-%m-%d %H:%M}): "
              + ", ".join(f"{t}={n} changes" for t, n in counts.items()))  # fmt: skip
        return 0
    if args.command == "build":
        return run_dbt(["build", *args.dbt_args], args.port, database=args.database, check=False).returncode
    return run_dbt(args.dbt_args, args.port, database=args.database, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
