"""dbt build on seeded CDC data: the marts hold what an independent Python replay says they should.

One session build (tests/dbt/conftest.py) - every model, data test and unit test - then the tests
compare mart rows with tests/dbt/expected.py, which replays the generated change log directly.
"""

from __future__ import annotations

import itertools
import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tests.dbt import expected
from tests.dbt.conftest import DATABASE, DbtRun, past_cutoff

pytestmark = pytest.mark.integration


def _money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def _day(value: Any) -> date:
    return value.date() if hasattr(value, "date") and callable(value.date) else value


def test_build_runs_every_model_data_test_and_unit_test(built: DbtRun) -> None:
    results = built.results["build"]["results"]
    by_type: dict[str, int] = {}
    for result in results:
        kind = result["unique_id"].split(".")[0]
        by_type[kind] = by_type.get(kind, 0) + 1
        assert result["status"] in ("success", "pass"), f"{result['unique_id']}: {result['status']}"
    assert by_type["model"] == 19
    assert by_type["unit_test"] == 3
    assert by_type["test"] >= 100  # generic + singular data tests


def test_revenue_daily_equals_python_replay(built: DbtRun) -> None:
    rows = built.query("select * from MARTS.FCT_REVENUE_DAILY")
    actual = {
        (_day(r["revenue_date"]), r["currency"]): {
            "invoiced_amount": _money(r["invoiced_amount"]), "invoice_count": r["invoice_count"],
            "paid_amount": _money(r["paid_amount"]), "payment_count": r["payment_count"],
            "refunded_amount": _money(r["refunded_amount"]),
        }
        for r in rows
    }  # fmt: skip
    want = expected.revenue_daily(built.data)
    assert actual.keys() == want.keys()
    assert actual == want
    assert {currency for _, currency in want} == {"USD", "EUR", "GBP"}


def test_invoices_current_position_equals_python_replay(built: DbtRun) -> None:
    rows = built.query(
        "select invoice_id, status, total_amount, lines_amount, line_count, paid_amount,"
        " outstanding_amount, days_past_due from MARTS.FCT_INVOICES"
    )
    actual = {
        r["invoice_id"]: {
            "status": r["status"], "total_amount": _money(r["total_amount"]),
            "lines_amount": _money(r["lines_amount"]), "line_count": r["line_count"],
            "paid_amount": _money(r["paid_amount"]), "outstanding_amount": _money(r["outstanding_amount"]),
            "days_past_due": r["days_past_due"],
        }
        for r in rows
    }  # fmt: skip
    assert actual == expected.invoice_positions(built.data, built.today)  # the build's day
    statuses = {v["status"] for v in actual.values()}
    assert statuses == {"draft", "issued", "paid", "void", "refunded"}, "the dataset covers every status"


def _feature_rows(run: DbtRun) -> dict[tuple[int, str, date], dict[str, Any]]:
    rows = run.query("select * from MARTS.FCT_ACCOUNT_FEATURES_DAILY")
    money = ("invoiced_amount_to_date", "invoiced_amount_on_day", "paid_amount_to_date", "paid_amount_on_day",
             "outstanding_amount", "overdue_amount")  # fmt: skip
    counts = ("open_invoice_count", "overdue_invoice_count", "max_days_past_due")
    return {
        (r["account_id"], r["currency"], _day(r["as_of_date"])): {
            **{k: _money(r[k]) for k in money},
            **{k: int(r[k]) for k in counts},
        }
        for r in rows
    }


def test_account_features_equal_point_in_time_replay(built: DbtRun) -> None:
    """Invoiced / paid per account per day, outstanding and days late as of each day."""
    actual = _feature_rows(built)
    start = built.data.snapshot_at.date()
    want = expected.account_features(built.data, start, built.today)
    assert min(k[2] for k in actual) == start
    assert max(k[2] for k in actual) == built.today
    missing, extra = want.keys() - actual.keys(), actual.keys() - want.keys()
    assert not missing and not extra, f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
    wrong = {k: (actual[k], want[k]) for k in want if actual[k] != want[k]}
    assert not wrong, f"{len(wrong)} rows differ, e.g. {next(iter(wrong.items()))}"
    # the dataset exercises what the features are for
    assert any(v["overdue_invoice_count"] > 0 for v in want.values())
    assert any(v["paid_amount_on_day"] > 0 for v in want.values())


def test_account_features_incremental_run_took_the_merge_path(built: DbtRun) -> None:
    """The fixture ran the model a second time, incrementally (the emulator's MERGE path); the
    previous test compared the table *after* that run with the replay, row by row."""
    (result,) = built.results["incremental"]["results"]
    assert result["unique_id"] == "model.billing.fct_account_features_daily"
    assert result["status"] == "success"


def test_receivables_at_past_cutoff_equal_state_rebuilt_from_history(built: DbtRun) -> None:
    cutoff = past_cutoff(built)
    sql = (built.target_path / "compiled" / "billing" / "models" / "marts" / "fct_receivables_ageing.sql").read_text()
    assert f"'{cutoff.isoformat()}'::date" in sql
    rows = built.query(sql)
    actual = {
        r["invoice_id"]: {
            "paid_amount": _money(r["paid_amount"]), "outstanding_amount": _money(r["outstanding_amount"]),
            "days_past_due": r["days_past_due"], "ageing_bucket": r["ageing_bucket"],
        }
        for r in rows
    }  # fmt: skip
    want = expected.receivables(built.data, cutoff)
    assert actual == want
    assert len(want) >= 5 and len({v["ageing_bucket"] for v in want.values()}) >= 2
    # ... and it is not simply today's picture: later payments and voids changed the open items.
    assert set(want) != {r["invoice_id"] for r in built.query("select invoice_id from MARTS.FCT_RECEIVABLES_AGEING")}


def _intervals_ok(versions: list[dict[str, Any]], key: str) -> list[str]:
    problems = []
    by_key: dict[Any, list[dict[str, Any]]] = {}
    for v in versions:
        by_key.setdefault(v[key], []).append(v)
    for k, vs in by_key.items():
        vs.sort(key=lambda v: v["valid_from"])
        for a, b in itertools.pairwise(vs):
            if a["valid_to"] is None:
                problems.append(f"{key}={k}: open version followed by another")
            elif b["valid_from"] < a["valid_to"]:
                problems.append(f"{key}={k}: overlap at {b['valid_from']}")
            elif b["valid_from"] > a["valid_to"] and not a["closed_by_delete"]:
                problems.append(f"{key}={k}: gap {a['valid_to']} .. {b['valid_from']}")
        for v in vs:
            if v["valid_to"] is not None and v["valid_to"] <= v["valid_from"]:
                problems.append(f"{key}={k}: empty interval at {v['valid_from']}")
            if v["is_current"] != (v["valid_to"] is None):
                problems.append(f"{key}={k}: is_current disagrees with valid_to")
    return problems


@pytest.mark.parametrize(
    ("relation", "key"),
    [
        ("MARTS.DIM_ACCOUNTS", "account_id"),
        ("MARTS.DIM_PRODUCTS", "product_id"),
        ("STAGING_DBT.INT_INVOICE_VERSIONS", "invoice_id"),
        ("STAGING_DBT.INT_PAYMENT_VERSIONS", "payment_id"),
    ],
)
def test_scd2_intervals_have_no_overlap_or_gap(built: DbtRun, relation: str, key: str) -> None:
    versions = built.query(f"select {key}, valid_from, valid_to, is_current, closed_by_delete from {relation}")
    assert versions
    assert _intervals_ok(versions, key) == []


def test_dim_accounts_equals_history_replay(built: DbtRun) -> None:
    tracked = ["account_name", "email", "country", "segment", "credit_limit", "is_active", "created_at"]
    want = expected.scd2(built.data, "accounts", "account_id", tracked)
    rows = built.query(
        "select account_id, account_name, email_hash, country_code, segment, credit_limit, is_active, created_at,"
        " valid_from, valid_to, closed_by_delete from MARTS.DIM_ACCOUNTS"
    )
    actual = sorted(
        (r["account_id"], r["valid_from"], r["valid_to"], r["segment"], _money(r["credit_limit"]), r["is_active"],
         r["email_hash"], r["closed_by_delete"])
        for r in rows
    )  # fmt: skip
    wanted = sorted(
        (v["account_id"], v["valid_from"], v["valid_to"], v["segment"], _money(v["credit_limit"]), v["is_active"],
         v["email"], v["closed_by_delete"])
        for v in want
    )  # fmt: skip
    assert actual == wanted
    # the dataset has re-segmentations, a no-op update (collapsed) and a deleted account
    assert any(v["closed_by_delete"] for v in want)
    assert max(sum(1 for v in want if v["account_id"] == a) for a in {v["account_id"] for v in want}) >= 3


def test_dim_products_equals_history_replay(built: DbtRun) -> None:
    want = expected.scd2(
        built.data, "products", "product_id", ["sku", "product_name", "unit_price", "currency", "is_active"]
    )
    rows = built.query(
        "select product_id, list_price, is_active, valid_from, valid_to, closed_by_delete from MARTS.DIM_PRODUCTS"
    )
    actual = sorted((r["product_id"], r["valid_from"], r["valid_to"], _money(r["list_price"]), r["is_active"],
                     r["closed_by_delete"]) for r in rows)  # fmt: skip
    wanted = sorted((v["product_id"], v["valid_from"], v["valid_to"], _money(v["unit_price"]), v["is_active"],
                     v["closed_by_delete"]) for v in want)  # fmt: skip
    assert actual == wanted


def test_emails_reach_the_marts_only_hashed(built: DbtRun) -> None:
    hashes = [r["email_hash"] for r in built.query("select email_hash from MARTS.DIM_ACCOUNTS")]
    assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)


def test_database_is_isolated(built: DbtRun) -> None:
    assert built.query(f"select count(*) as n from {DATABASE}.RAW.INVOICES_HISTORY")[0]["n"] == len(
        built.data.changes["invoices"]
    )
