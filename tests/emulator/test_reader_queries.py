"""The query shapes established CDC readers (Debezium, Airbyte) and this project's reader send."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pymssql
import pytest

from dev.mssql_emulator import Engine
from tests.emulator.conftest import Sql

TSQL_DIR = Path(__file__).resolve().parents[2] / "include" / "sql" / "tsql"
# Production-only lookups of the health checks: objects the emulator does not have. On SQL
# Server they need extra permissions too, so the health code treats any error there (such as 208)
# as "not available" and falls back to configuration (see include/cdc_pipeline/health.py).
NOT_EMULATED = {
    "cdc_cleanup_retention.sql": "msdb.dbo.cdc_jobs",
    "source_activity.sql": "sys.dm_db_index_usage_stats",
}
ACCOUNT_COLS = "account_id, account_name, email, country, segment, credit_limit, is_active, created_at, updated_at"


@pytest.fixture
def billing(sql: Sql) -> Sql:
    from dev.workload.tsql import Workload

    Workload(sql.conn, seed=3, rollback_fraction=0.0).init(accounts=20, products=10, invoices=20)
    sql.conn.commit()
    sql.scan()  # the capture job's first scan after enabling CDC: max LSN becomes known
    return sql


def _changes(sql: Sql, n: int = 30, seed: int = 5) -> None:
    from dev.workload.tsql import Workload

    Workload(sql.conn, seed=seed, rollback_fraction=0.1).run(transactions=n)
    sql.scan()


def test_debezium_direct_mode_change_table_joined_to_lsn_time_mapping(billing: Sql) -> None:
    low = billing.one("SELECT sys.fn_cdc_get_min_lsn(N'dbo_accounts')")
    _changes(billing)
    high = billing.one("SELECT sys.fn_cdc_get_max_lsn()")
    rows = billing(
        "SELECT ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation], ct.[account_id], ct.[email], m.tran_end_time "
        "FROM cdc.[dbo_accounts_CT] AS ct JOIN cdc.lsn_time_mapping AS m ON m.start_lsn = ct.[__$start_lsn] "
        "WHERE ct.[__$start_lsn] > %s AND ct.[__$start_lsn] <= %s "
        "ORDER BY ct.[__$start_lsn], ct.[__$command_id], ct.[__$seqval], ct.[__$operation]",
        (low, high),
    )
    expected = billing(
        "SELECT [__$start_lsn], [__$seqval], [__$operation], account_id, email FROM cdc.dbo_accounts_CT "
        "ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]"
    )
    assert [r[:5] for r in rows] == expected and expected
    assert all(r[5] is not None for r in rows)


def test_debezium_function_mode_get_all_changes(billing: Sql) -> None:
    _changes(billing)
    cols = ", ".join(f"[{c.strip()}]" for c in ACCOUNT_COLS.split(","))
    rows = billing(
        f"SELECT [__$start_lsn], [__$seqval], [__$operation], {cols} FROM cdc.fn_cdc_get_all_changes_dbo_accounts("
        "sys.fn_cdc_get_min_lsn(N'dbo_accounts'), sys.fn_cdc_get_max_lsn(), N'all') "
        "ORDER BY [__$start_lsn], [__$seqval], [__$operation]"
    )
    direct = billing(
        f"SELECT [__$start_lsn], [__$seqval], [__$operation], {cols} FROM cdc.dbo_accounts_CT "
        "WHERE [__$operation] <> 3 ORDER BY 1, 2, 3"
    )
    assert rows == direct and rows


def test_bounded_window_over_lsn_time_mapping(billing: Sql) -> None:
    watermark = billing.one("SELECT sys.fn_cdc_get_max_lsn()") or bytes(10)
    _changes(billing, n=20)
    template = (
        (TSQL_DIR / "bounded_upper_lsn.sql").read_text()
        if (TSQL_DIR / "bounded_upper_lsn.sql").exists()
        else (
            "SELECT MAX(w.start_lsn) AS upper_lsn FROM (SELECT TOP (%s) m.start_lsn FROM cdc.lsn_time_mapping AS m "
            "WHERE m.start_lsn > %s AND m.tran_id <> 0x00 ORDER BY m.start_lsn) AS w"
        )
    )
    txns = [
        r[0]
        for r in billing(
            "SELECT start_lsn FROM cdc.lsn_time_mapping WHERE start_lsn > %s AND tran_id <> 0x00 ORDER BY start_lsn",
            (watermark,),
        )
    ]
    assert len(txns) >= 5
    assert billing.one(template, (5, watermark)) == txns[4]
    top = billing(
        "SELECT TOP (%s) start_lsn FROM cdc.lsn_time_mapping WHERE start_lsn > %s AND tran_id <> 0x00 "
        "ORDER BY start_lsn",
        (3, watermark),
    )
    assert [r[0] for r in top] == txns[:3]


def test_reader_metadata_queries(billing: Sql) -> None:
    assert billing.one("SELECT sys.fn_cdc_get_max_lsn() AS max_lsn") is None or True
    row = billing(
        "SELECT capture_instance, start_lsn, source_object_id, create_date FROM cdc.change_tables "
        "WHERE capture_instance = %s",
        ("dbo_accounts",),
    )[0]
    assert row[0] == "dbo_accounts" and row[2] == billing.one("SELECT OBJECT_ID(N'dbo.accounts')")
    listing = billing(
        "SELECT ct.capture_instance, ct.start_lsn, "
        "OBJECT_SCHEMA_NAME(ct.source_object_id) AS source_schema, "
        "OBJECT_NAME(ct.source_object_id) AS source_table FROM cdc.change_tables AS ct ORDER BY 1"
    )
    assert [(r[0], r[2], r[3]) for r in listing] == [
        ("dbo_accounts", "dbo", "accounts"),
        ("dbo_invoice_lines", "dbo", "invoice_lines"),
        ("dbo_invoices", "dbo", "invoices"),
        ("dbo_payments", "dbo", "payments"),
        ("dbo_products", "dbo", "products"),
    ]
    cols = billing(
        "SELECT column_name, column_ordinal, column_type FROM cdc.captured_columns AS cc "
        "JOIN cdc.change_tables AS ct ON cc.object_id = ct.object_id WHERE ct.capture_instance = %s "
        "ORDER BY column_ordinal",
        ("dbo_invoices",),
    )
    assert [c[0] for c in cols] == [
        "invoice_id",
        "account_id",
        "invoice_number",
        "status",
        "issued_at",
        "due_date",
        "currency",
        "total_amount",
        "updated_at",
    ]
    assert cols[0][2] == "bigint" and cols[7][2] == "decimal"


def test_sys_columns_reports_sql_server_types(billing: Sql) -> None:
    rows = billing(
        "SELECT c.name, t.name AS type_name, c.max_length, c.precision, c.scale, c.is_nullable "
        "FROM sys.columns c JOIN sys.types t ON c.user_type_id = t.user_type_id "
        "WHERE c.object_id = OBJECT_ID(%s) ORDER BY c.column_id",
        ("dbo.accounts",),
    )
    assert rows == [
        ("account_id", "int", 4, 10, 0, False),
        ("account_name", "nvarchar", 400, 0, 0, False),
        ("email", "nvarchar", 640, 0, 0, True),
        ("country", "char", 2, 0, 0, False),
        ("segment", "varchar", 20, 0, 0, False),
        ("credit_limit", "money", 8, 19, 4, False),
        ("is_active", "bit", 1, 1, 0, False),
        ("created_at", "datetime2", 7, 23, 3, False),
        ("updated_at", "datetime2", 7, 23, 3, False),
    ]
    pay = billing(
        "SELECT c.name, t.name, c.max_length, c.precision, c.scale FROM sys.columns c "
        "JOIN sys.types t ON c.user_type_id = t.user_type_id "
        "WHERE c.object_id = OBJECT_ID(N'[dbo].[payments]') "
        "ORDER BY c.column_id"
    )
    assert pay[3] == ("amount", "decimal", 9, 18, 2) and pay[7] == ("external_ref", "uniqueidentifier", 16, 0, 0)
    lines = billing(
        "SELECT c.name, t.name FROM sys.columns c JOIN sys.types t ON c.user_type_id = t.user_type_id "
        "WHERE c.object_id = OBJECT_ID(%s) ORDER BY c.column_id",
        ("cdc.dbo_invoice_lines_CT",),
    )
    assert [r[0] for r in lines][5:7] == ["invoice_id", "line_no"]


@pytest.mark.parametrize("template", sorted(p.name for p in TSQL_DIR.glob("*.sql")) if TSQL_DIR.exists() else [])
def test_project_tsql_templates_run(billing: Sql, template: str) -> None:
    """Every T-SQL template of the production reader runs against the emulator."""
    _changes(billing, n=5)
    text = (TSQL_DIR / template).read_text()
    low = billing.one("SELECT sys.fn_cdc_get_min_lsn(N'dbo_accounts')")
    params: list[Any] = []
    for match in re.finditer(r"(\w+\s*(?:=|>|<|>=|<=|<>)\s*|TOP\s*\(\s*|OBJECT_ID\(\s*|\()?%s", text):
        context = (match.group(1) or "").upper()
        if "TOP" in context:
            params.append(10)
        elif "OBJECT_ID" in context:
            params.append("cdc.dbo_accounts_CT")
        elif "INSTANCE" in context or "NAME" in context:
            params.append("dbo_accounts")
        else:
            params.append(low)
    if template in NOT_EMULATED:
        with pytest.raises(pymssql.exceptions.ProgrammingError) as caught:
            billing.cur.execute(text, tuple(params) or None)
        assert caught.value.args[0] == 208 and NOT_EMULATED[template].split(".")[-1] in caught.value.args[1].decode()
        return
    billing.cur.execute(text, tuple(params) or None)
    if billing.cur.description:
        billing.cur.fetchall()


def test_key_chunked_snapshot_composite_key(billing: Sql) -> None:
    keys = billing("SELECT invoice_id, line_no FROM dbo.invoice_lines ORDER BY invoice_id, line_no")
    seen: list[tuple[Any, ...]] = []
    last = None
    while True:
        if last is None:
            page = billing(
                "SELECT TOP (%s) [invoice_id], [line_no] FROM [dbo].[invoice_lines] ORDER BY [invoice_id], [line_no]",
                (7,),
            )
        else:
            page = billing(
                "SELECT TOP (%s) [invoice_id], [line_no] FROM [dbo].[invoice_lines] "
                "WHERE ([invoice_id] > %s) "
                "OR ([invoice_id] = %s AND [line_no] > %s) ORDER BY [invoice_id], [line_no]",
                (7, last[0], last[0], last[1]),
            )
        if not page:
            break
        seen.extend(page)
        last = page[-1]
    assert seen == keys and len(keys) > 7


def test_snapshot_then_stream_handoff(billing: Sql) -> None:
    """max LSN before the snapshot, snapshot, stream from increment(max): nothing lost."""
    _changes(billing, n=10, seed=1)
    before = billing.one("SELECT sys.fn_cdc_get_max_lsn()")
    snapshot = {r[0]: r for r in billing(f"SELECT {ACCOUNT_COLS} FROM dbo.accounts")}
    _changes(billing, n=40, seed=2)
    start = billing.one("SELECT sys.fn_cdc_increment_lsn(%s)", (before,))
    for r in billing(
        f"SELECT [__$operation], {ACCOUNT_COLS} FROM cdc.fn_cdc_get_all_changes_dbo_accounts(%s, "
        "sys.fn_cdc_get_max_lsn(), N'all') ORDER BY [__$start_lsn], [__$seqval], [__$operation]",
        (start,),
    ):
        if r[0] == 1:
            snapshot.pop(r[1], None)
        else:
            snapshot[r[1]] = r[1:]
    assert sorted(snapshot.values()) == sorted(billing(f"SELECT {ACCOUNT_COLS} FROM dbo.accounts"))


def test_idle_table_window_still_advances(billing: Sql) -> None:
    """Changes elsewhere move max LSN, so an idle table's empty window is still valid and can advance."""
    before = billing.one("SELECT sys.fn_cdc_get_max_lsn()")
    billing("UPDATE dbo.products SET is_active = 0 WHERE product_id = 1")
    billing.scan()
    after = billing.one("SELECT sys.fn_cdc_get_max_lsn()")
    assert after > before
    rows = billing(
        "SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_payments(sys.fn_cdc_increment_lsn(%s), %s, N'all')",
        (before, after),
    )
    assert rows == []


def test_switch_to_a_second_capture_instance(billing: Sql) -> None:
    billing(
        "INSERT INTO dbo.products (product_id, sku, product_name, unit_price, currency, is_active, updated_at) "
        "VALUES (1001, 'X', N'x', 1, 'USD', 1, '2026-02-01')"
    )
    billing("ALTER TABLE dbo.products ADD weight_kg decimal(9,3) NULL")
    billing(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'products', @role_name = NULL, "
        "@capture_instance = N'dbo_products_v2', @supports_net_changes = 1"
    )
    billing("UPDATE dbo.products SET weight_kg = 1.5 WHERE product_id = 1001")
    billing.scan()
    new_start = billing.one("SELECT start_lsn FROM cdc.change_tables WHERE capture_instance = N'dbo_products_v2'")
    old = billing(
        "SELECT [__$operation], product_id FROM cdc.dbo_products_CT WHERE [__$start_lsn] < %s AND [__$operation] <> 3",
        (new_start,),
    )
    new = billing("SELECT [__$operation], product_id, weight_kg FROM cdc.dbo_products_v2_CT WHERE [__$operation] <> 3")
    assert (2, 1001) in old
    assert new == [(4, 1001, pytest.approx(1.5))]


def test_latest_change_per_key_by_lsn_seqval_operation(billing: Sql) -> None:
    billing(
        "BEGIN TRAN; UPDATE dbo.accounts SET email = N'one' WHERE account_id = 1; "
        "UPDATE dbo.accounts SET email = N'two' WHERE account_id = 1; COMMIT"
    )
    billing.scan()
    rows = billing(
        "SELECT [__$start_lsn], [__$seqval], [__$operation], email FROM cdc.dbo_accounts_CT "
        "WHERE account_id = 1 AND [__$operation] = 4 ORDER BY [__$start_lsn], [__$seqval], [__$operation]"
    )
    assert len({r[0] for r in rows[-2:]}) == 1  # several changes of the key share one start_lsn
    assert rows[-1][3] == "two"


def test_two_sessions_each_have_their_own_transaction(engine: Engine) -> None:
    a, b = Sql(engine.connect()), Sql(engine.connect())
    a("CREATE TABLE dbo.x (id int NOT NULL PRIMARY KEY)")
    a.conn.commit()
    a("INSERT INTO dbo.x VALUES (1)")
    assert b("SELECT id FROM dbo.x") == []  # not committed yet
    a.conn.commit()
    assert b("SELECT id FROM dbo.x") == [(1,)]  # READ COMMITTED: b's open implicit transaction sees it
