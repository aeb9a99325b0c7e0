"""The workload generator (dev/workload): schema, determinism by seed, business consistency, bulk fast
path, and its two sinks (T-SQL, in-memory CDC log) agreeing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dev.mssql_emulator import Engine
from dev.workload.cdclog import OP_SNAPSHOT, CdcLog, Dataset
from dev.workload.oltp import OltpMix
from dev.workload.schema import COLUMNS, HASHED, TABLES
from dev.workload.tsql import Workload, load_state
from include.cdc_pipeline.types import hasher
from tests.emulator.conftest import T0, Sql

ROOT = Path(__file__).resolve().parents[2]


def _engine() -> Engine:
    eng = Engine(":memory:")
    eng.clock.set(T0)
    return eng


def _dump(engine: Engine) -> dict[str, Any]:
    """Every source table and change table, in key / apply order (the whole observable state)."""
    sql = Sql(engine.connect(autocommit=True))
    out: dict[str, Any] = {}
    for t in TABLES:
        cols = ", ".join(COLUMNS[t])
        out[t] = sql(f"SELECT {cols} FROM dbo.{t} ORDER BY {cols}")
        out[f"{t}_CT"] = sql(f"SELECT * FROM cdc.dbo_{t}_CT ORDER BY [__$start_lsn], [__$seqval], [__$operation]")
    out["lsn_time_mapping"] = sql("SELECT * FROM cdc.lsn_time_mapping ORDER BY start_lsn")
    return out


def _run(
    seed: int,
    *,
    transactions: int = 60,
    fast_bulk: int | None = None,
    slow_bulk: int | None = None,
    rollback_fraction: float = 0.1,
) -> tuple[dict[str, Any], Any]:
    engine = _engine()
    try:
        conn = engine.connect()
        w = Workload(conn, seed=seed, rollback_fraction=rollback_fraction)
        w.init(accounts=15, products=8, invoices=15)
        engine.capture_all(idle_rows=False)
        if fast_bulk is not None:
            result = w.bulk(fast_bulk, fast=True, chunk_changes=70)
        elif slow_bulk is not None:
            result = w.bulk(slow_bulk, fast=False)
        else:
            result = w.run(transactions=transactions)
        engine.capture_all(idle_rows=False)
        return _dump(engine), result
    finally:
        engine.close()


def test_init_creates_the_demo_schema_exactly(sql: Sql) -> None:
    Workload(sql.conn, seed=1).init(accounts=5, products=3, invoices=5)
    cols = sql(
        "SELECT OBJECT_NAME(c.object_id), c.name, t.name, c.max_length, c.precision, c.scale, c.is_nullable "
        "FROM sys.columns c JOIN sys.types t ON c.user_type_id = t.user_type_id "
        "WHERE OBJECT_SCHEMA_NAME(c.object_id) = N'dbo' ORDER BY 1, c.column_id"
    )
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for row in cols:
        by_table.setdefault(row[0], []).append(row[1:])
    assert by_table["invoices"] == [
        ("invoice_id", "bigint", 8, 19, 0, False),
        ("account_id", "int", 4, 10, 0, False),
        ("invoice_number", "varchar", 30, 0, 0, False),
        ("status", "varchar", 20, 0, 0, False),
        ("issued_at", "datetime2", 7, 23, 3, True),
        ("due_date", "date", 3, 10, 0, True),
        ("currency", "char", 3, 0, 0, False),
        ("total_amount", "decimal", 9, 18, 2, False),
        ("updated_at", "datetime2", 7, 23, 3, False),
    ]
    assert [c[0] for c in by_table["payments"]] == COLUMNS["payments"]
    assert sql("SELECT capture_instance FROM cdc.change_tables ORDER BY 1") == [(f"dbo_{t}",) for t in sorted(TABLES)]
    assert sql(
        "SELECT column_name FROM cdc.index_columns ic JOIN cdc.change_tables ct ON ic.object_id = ct.object_id "
        "WHERE ct.capture_instance = N'dbo_invoice_lines' ORDER BY index_ordinal"
    ) == [("invoice_id",), ("line_no",)]


def test_generator_is_deterministic_by_seed() -> None:
    first, r1 = _run(11)
    second, r2 = _run(11)
    other, _ = _run(12)
    timing = {"seconds": 0, "changes_per_second": 0}
    assert first == second and r1.as_dict() | timing == r2.as_dict() | timing
    assert first["invoices"] != other["invoices"]


def test_result_counts_match_the_change_tables() -> None:
    dump, result = _run(5, transactions=80)
    for t in TABLES:
        ops = [r[3] for r in dump[f"{t}_CT"]]
        assert result.changes[t]["insert"] == ops.count(2)
        assert result.changes[t]["delete"] == ops.count(1)
        assert result.changes[t]["update"] == ops.count(4) == ops.count(3)
    assert result.rolled_back > 0
    assert result.captured_changes == sum(1 for t in TABLES for r in dump[f"{t}_CT"] if r[3] != 3)


def test_business_invariants_hold(sql: Sql) -> None:
    w = Workload(sql.conn, seed=9, rollback_fraction=0.05)
    w.init(accounts=20, products=10, invoices=30)
    result = w.run(transactions=150)
    assert result.operations["renumber_line"] + result.operations["delete_draft"] > 0
    mismatched = sql(
        "SELECT i.invoice_id FROM dbo.invoices i LEFT JOIN (SELECT invoice_id, SUM(line_amount) AS s "
        "FROM dbo.invoice_lines GROUP BY invoice_id) l ON l.invoice_id = i.invoice_id "
        "WHERE i.total_amount <> COALESCE(l.s, 0)"
    )
    assert mismatched == []
    statuses = {r[0] for r in sql("SELECT DISTINCT status FROM dbo.invoices")}
    assert statuses <= {"draft", "issued", "paid", "void", "refunded"}
    paid = sql(
        "SELECT i.invoice_id, i.total_amount, p.amount FROM dbo.invoices i JOIN dbo.payments p "
        "ON p.invoice_id = i.invoice_id WHERE i.status IN ('paid', 'refunded')"
    )
    assert paid and all(total == amount for _, total, amount in paid)
    assert sql(
        "SELECT COUNT(*) FROM dbo.invoice_lines l LEFT JOIN dbo.invoices i ON i.invoice_id = l.invoice_id "
        "WHERE i.invoice_id IS NULL"
    ) == [(0,)]
    assert all(isinstance(r[0], Decimal) for r in sql("SELECT credit_limit FROM dbo.accounts"))


@pytest.mark.slow  # the generator's own guarantees: `make test` keeps test_business_invariants_hold
def test_foreign_keys_hold_across_generator_restarts(sql: Sql) -> None:
    # The demo starts a new generator process per traffic phase: each reloads its model from the
    # database. An account with invoices must never be deleted (the emulator enforces no FKs).
    Workload(sql.conn, seed=3).init(accounts=40, products=5, invoices=15)
    for seed in range(4, 7):
        Workload(sql.conn, seed=seed).run(transactions=120)
    orphans = {
        "invoices": "SELECT COUNT(*) FROM dbo.invoices i LEFT JOIN dbo.accounts a ON a.account_id = i.account_id"
        " WHERE a.account_id IS NULL",
        "payments": "SELECT COUNT(*) FROM dbo.payments p LEFT JOIN dbo.invoices i ON i.invoice_id = p.invoice_id"
        " WHERE i.invoice_id IS NULL",
    }
    assert {name: sql(query)[0][0] for name, query in orphans.items()} == {"invoices": 0, "payments": 0}


@pytest.mark.slow  # the generator's own guarantees: `make test` keeps test_business_invariants_hold
def test_bulk_fast_path_is_indistinguishable_from_transaction_by_transaction() -> None:
    fast, r_fast = _run(21, fast_bulk=300)
    slow, r_slow = _run(21, slow_bulk=300)
    assert r_fast.as_dict() | {"seconds": 0, "changes_per_second": 0} == r_slow.as_dict() | {
        "seconds": 0,
        "changes_per_second": 0,
    }
    assert r_fast.captured_changes >= 300
    for key in fast:
        assert fast[key] == slow[key], key


def test_cli_init_and_run_in_process(tmp_path: Path) -> None:
    db = tmp_path / "billing.duckdb"
    base = [sys.executable, "-m", "dev.workload", "--db", str(db), "--seed", "4"]
    out = subprocess.run(
        [*base, "init", "--accounts", "5", "--products", "3", "--invoices", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout)["mode"] == "init"
    out = subprocess.run(
        [*base, "bulk", "--changes", "200"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    stats = json.loads(out.stdout)
    assert stats["captured_changes"] >= 200 and set(stats["changes"]) == set(TABLES)


@pytest.mark.slow
def test_bulk_fast_path_equivalence_larger() -> None:
    fast, _ = _run(77, fast_bulk=3000)
    slow, _ = _run(77, slow_bulk=3000)
    assert fast == slow


def test_cdc_log_sink_logs_what_the_change_tables_capture() -> None:
    """The two sinks of one traffic agree: the same seeded mix, run through T-SQL into the emulator
    and into the in-memory CDC log, gives the same transactions with the same changes (operation,
    after image or deleted row, in log order); personal data lands hashed."""
    salt = "test-salt"
    engine = _engine()
    try:
        conn = engine.connect()
        Workload(conn, seed=31, rollback_fraction=0.1).init(accounts=12, products=6, invoices=12)
        engine.capture_all(idle_rows=False)
        sql = Sql(engine.connect(autocommit=True))
        assert sql.one("SELECT sys.fn_cdc_get_max_lsn()") is None  # populated before CDC: nothing captured yet
        state = load_state(conn)
        Workload(conn, seed=32, rollback_fraction=0.1).run(transactions=120)
        engine.capture_all(idle_rows=False)
        captured: list[tuple[bytes, bytes, str, int, dict[str, Any]]] = []
        for t in TABLES:
            rows = sql(
                f"SELECT [__$start_lsn], [__$seqval], [__$operation], {', '.join(COLUMNS[t])} FROM cdc.dbo_{t}_CT "
                "WHERE [__$operation] <> 3"
            )
            for lsn, seqval, op, *values in rows:
                row = dict(zip(COLUMNS[t], values, strict=True))
                if row.get("external_ref") is not None:
                    row["external_ref"] = uuid.UUID(str(row["external_ref"]))
                for col in HASHED.get(t, ()):
                    row[col] = hasher(salt)(row[col])
                captured.append((lsn, seqval, t, op, row))
    finally:
        engine.close()

    data = Dataset(anchor=T0, snapshot_at=T0)
    log = CdcLog(data, salt=salt)
    log.snapshot(state, T0)
    mix = OltpMix(seed=32, rollback_fraction=0.1, state=state, start_time=state.latest)
    for _ in range(120):
        tx = mix.next_tx()
        log.commit(tx, mix.now)
        if not tx.rollback:
            state.apply(tx)
    logged = [c for t in TABLES for c in data.changes[t] if c.op != OP_SNAPSHOT]

    def transactions(rows: list[tuple[Any, Any, str, int, dict[str, Any]]]) -> list[list[Any]]:
        grouped: dict[Any, list[Any]] = {}
        for lsn, _seq, table, op, values in sorted(rows, key=lambda r: (r[0], r[1], r[3])):
            grouped.setdefault(lsn, []).append((table, op, values))
        return list(grouped.values())

    want = transactions(captured)
    got = transactions([(c.lsn, c.seqval, c.table, c.op, c.values) for c in logged])
    assert len(want) > 50 and {op for tx in want for _, op, _ in tx} == {1, 2, 4}
    assert got == want
