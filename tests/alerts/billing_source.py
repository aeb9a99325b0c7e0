"""The `billing` source of the alert tests that run the real ``billing_cdc`` DAG (dags/cdc_billing.py
builds it from ``CDC_CONFIG_DIR``): its YAML, and an emulator server seeded with the billing tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dev.mssql_emulator import connect
from dev.mssql_emulator.process import ServerProcess, start_server
from dev.workload.tsql import Workload

KEYS = {
    "accounts": "account_id",
    "products": "product_id",
    "invoices": "invoice_id",
    "invoice_lines": "invoice_id, line_no",
    "payments": "payment_id",
}


def billing_yaml(database: str, tables: tuple[str, ...] = ("products", "payments"), **fields: Any) -> str:
    """The source YAML: connections mssql_billing / snowflake_default / smtp_default, no schedule,
    the given Snowflake database, tables of the billing workload, and any further top-level fields."""
    extra = "".join(f"{name}: {value}\n" for name, value in fields.items())
    rows = "".join(f"  - {{schema: dbo, table: {t}, primary_key: [{KEYS[t]}]}}\n" for t in tables)
    return (
        "name: billing\nmssql_conn_id: mssql_billing\nsnowflake_conn_id: snowflake_default\n"
        f"smtp_conn_id: smtp_default\nschedule: null\nalert_emails: [oncall@example.com]\n{extra}"
        f"target: {{database: {database}}}\ntables:\n{rows}"
    )


def seeded_server(db_path: Path, seed: int) -> ServerProcess:
    """An emulator server on ``db_path`` holding the billing tables (a few rows each), CDC enabled."""
    server = start_server(db_path, capture_interval=0.5, log_path=db_path.with_suffix(".log"))
    conn = connect(server=server.host, port=server.port, database="billing")
    Workload(conn, seed=seed).init(accounts=8, products=5, invoices=8)
    conn.commit()
    conn.close()
    return server
