"""Expected mart contents, computed in plain Python from the generated change log.

Deliberately independent of the SQL: no SCD2 intervals, no window functions - the state of a table
at an instant is rebuilt by replaying the CDC changes committed before it (Dataset.as_of), and
the current state is the last change per key. The definitions follow docs/dbt.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from dev.workload.cdclog import OP_DELETE, OP_SNAPSHOT, Dataset

BILLED = ("issued", "paid", "refunded")
ZERO = Decimal("0.00")


def _live(data: Dataset, table: str) -> list[dict[str, Any]]:
    """Current rows (not deleted), source column names."""
    return [c.values for c in data.current(table).values() if c.op != OP_DELETE]


def revenue_daily(data: Dataset) -> dict[tuple[date, str], dict[str, Any]]:
    """fct_revenue_daily: billed invoices by issue date, payments by payment date, per currency."""
    invoices = {i["invoice_id"]: i for i in _live(data, "invoices")}
    out: dict[tuple[date, str], dict[str, Any]] = defaultdict(
        lambda: {"invoiced_amount": ZERO, "invoice_count": 0, "paid_amount": ZERO, "payment_count": 0,
                 "refunded_amount": ZERO}
    )  # fmt: skip
    for inv in invoices.values():
        if inv["status"] in BILLED:
            row = out[(inv["issued_at"].date(), inv["currency"])]
            row["invoiced_amount"] += inv["total_amount"]
            row["invoice_count"] += 1
    for pay in _live(data, "payments"):
        row = out[(pay["paid_at"].date(), invoices[pay["invoice_id"]]["currency"])]
        if pay["status"] == "settled":
            row["paid_amount"] += pay["amount"]
            row["payment_count"] += 1
        else:
            row["refunded_amount"] += pay["amount"]
    return dict(out)


def invoice_positions(data: Dataset, today: date) -> dict[int, dict[str, Any]]:
    """fct_invoices (subset): per current invoice, lines, payments, outstanding, days past due."""
    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in _live(data, "invoice_lines"):
        lines[line["invoice_id"]].append(line)
    settled: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for pay in _live(data, "payments"):
        if pay["status"] == "settled":
            settled[pay["invoice_id"]] += pay["amount"]
    out = {}
    for inv in _live(data, "invoices"):
        paid = settled[inv["invoice_id"]]
        outstanding = max(inv["total_amount"] - paid, ZERO) if inv["status"] == "issued" else ZERO
        overdue = outstanding > 0 and inv["due_date"] < today
        out[inv["invoice_id"]] = {
            "status": inv["status"],
            "total_amount": inv["total_amount"],
            "lines_amount": sum((line["line_amount"] for line in lines[inv["invoice_id"]]), ZERO),
            "line_count": len(lines[inv["invoice_id"]]),
            "paid_amount": paid,
            "outstanding_amount": outstanding,
            "days_past_due": (today - inv["due_date"]).days if overdue else 0,
        }
    return out


def _bucket(days_after_due: int) -> str:
    if days_after_due <= 0:
        return "not_due"
    if days_after_due <= 30:
        return "1_30"
    if days_after_due <= 60:
        return "31_60"
    if days_after_due <= 90:
        return "61_90"
    return "90_plus"


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time())


def receivables(data: Dataset, cutoff: date) -> dict[int, dict[str, Any]]:
    """fct_receivables_ageing at the end of ``cutoff``, replayed from the history."""
    ts = _end_of(cutoff)
    invoices = data.as_of("invoices", ts)
    paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for pay in data.as_of("payments", ts).values():
        if pay["status"] == "settled":
            paid[pay["invoice_id"]] += pay["amount"]
    out = {}
    for (invoice_id,), inv in invoices.items():
        if inv["status"] != "issued":
            continue
        outstanding = max(inv["total_amount"] - paid[invoice_id], ZERO)
        if outstanding <= 0:
            continue
        after_due = (cutoff - inv["due_date"]).days
        out[invoice_id] = {
            "paid_amount": paid[invoice_id],
            "outstanding_amount": outstanding,
            "days_past_due": max(after_due, 0),
            "ageing_bucket": _bucket(after_due),
        }
    return out


def account_features(data: Dataset, start: date, end: date) -> dict[tuple[int, str, date], dict[str, Any]]:
    """fct_account_features_daily for every day in [start, end], each from the state at its end."""
    out: dict[tuple[int, str, date], dict[str, Any]] = {}
    day = start
    while day <= end:
        ts = _end_of(day)
        invoices = {k[0]: v for k, v in data.as_of("invoices", ts).items() if v["status"] in BILLED}
        paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
        paid_today: dict[int, Decimal] = defaultdict(lambda: ZERO)
        for pay in data.as_of("payments", ts).values():
            if pay["status"] == "settled" and pay["invoice_id"] in invoices:
                paid[pay["invoice_id"]] += pay["amount"]
                if pay["paid_at"].date() == day:
                    paid_today[pay["invoice_id"]] += pay["amount"]
        rows: dict[tuple[int, str], dict[str, Any]] = {}
        for invoice_id, inv in invoices.items():
            row = rows.setdefault(
                (inv["account_id"], inv["currency"]),
                {"invoiced_amount_to_date": ZERO, "invoiced_amount_on_day": ZERO, "paid_amount_to_date": ZERO,
                 "paid_amount_on_day": ZERO, "outstanding_amount": ZERO, "open_invoice_count": 0,
                 "overdue_amount": ZERO, "overdue_invoice_count": 0, "max_days_past_due": 0},
            )  # fmt: skip
            row["invoiced_amount_to_date"] += inv["total_amount"]
            if inv["issued_at"].date() == day:
                row["invoiced_amount_on_day"] += inv["total_amount"]
            row["paid_amount_to_date"] += paid[invoice_id]
            row["paid_amount_on_day"] += paid_today[invoice_id]
            outstanding = max(inv["total_amount"] - paid[invoice_id], ZERO) if inv["status"] == "issued" else ZERO
            if outstanding > 0:
                row["outstanding_amount"] += outstanding
                row["open_invoice_count"] += 1
                late = (day - inv["due_date"]).days
                if late > 0:
                    row["overdue_amount"] += outstanding
                    row["overdue_invoice_count"] += 1
                    row["max_days_past_due"] = max(row["max_days_past_due"], late)
        for (account_id, currency), row in rows.items():
            out[(account_id, currency, day)] = row
        day += timedelta(days=1)
    return out


def scd2(data: Dataset, table: str, key: str, tracked: Iterable[str]) -> list[dict[str, Any]]:
    """SCD2 versions of ``table`` replayed from its history (the rules of docs/dbt.md, in Python)."""
    tracked = list(tracked)
    by_key: dict[Any, list[Any]] = defaultdict(list)
    for change in data.history(table):
        by_key[change.values[key]].append(change)
    versions: list[dict[str, Any]] = []
    for key_value, changes in by_key.items():
        # effective time of each change; the last change of an instant wins
        timed: dict[datetime, Any] = {}
        for n, change in enumerate(changes):
            at = change.committed_at
            if at is None:
                at = datetime(1900, 1, 1) if n == 0 and change.op == OP_SNAPSHOT else change.loaded_at
            timed[at] = change
        open_version: dict[str, Any] | None = None
        previous_attrs: tuple[Any, ...] | None = None
        for at, change in sorted(timed.items()):
            attrs = tuple(change.values[c] for c in tracked)
            if change.op == OP_DELETE:
                if open_version is not None:
                    open_version.update(valid_to=at, closed_by_delete=True)
                open_version, previous_attrs = None, None
                continue
            if open_version is not None and attrs == previous_attrs:
                continue  # nothing tracked changed: the version goes on
            if open_version is not None:
                open_version["valid_to"] = at
            open_version = {key: key_value, **dict(zip(tracked, attrs, strict=True)), "valid_from": at,
                            "valid_to": None, "closed_by_delete": False}  # fmt: skip
            versions.append(open_version)
            previous_attrs = attrs
    return versions
