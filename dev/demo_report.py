"""What the demo prints: per-table batches (mode, LSN window, rows, timings) and a reconciliation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from dev.localenv import ROOT
from dev.localpipeline import pipelines
from include.cdc_pipeline.reconcile import reconcile

CONFIG = ROOT / "include" / "config" / "sources" / "billing.yaml"
logging.getLogger("snowflake.connector").setLevel(logging.WARNING)


def _ports(env: Mapping[str, str]) -> tuple[int, int]:
    return int(env.get("CDC_LOCAL_MSSQL_PORT", "11433")), int(env.get("CDC_LOCAL_SNOWFLAKE_PORT", "8765"))


def snowflake_now(env: Mapping[str, str]) -> datetime:
    """The local Snowflake's UTC clock (APPLIED_AT is written with it: SYSDATE())."""
    mssql_port, snowflake_port = _ports(env)
    return pipelines(CONFIG, mssql_port, snowflake_port)[0].warehouse.execute("SELECT SYSDATE()")[0][0]


def print_batches(env: Mapping[str, str], since: datetime, title: str) -> None:
    """Batches applied since ``since`` (CONTROL.CDC_BATCHES); tables without one were idle."""
    mssql_port, snowflake_port = _ports(env)
    tables = pipelines(CONFIG, mssql_port, snowflake_port)
    rows = tables[0].warehouse.execute(
        "SELECT TABLE_NAME, MODE, LOWER_LSN, UPPER_LSN, ROWS_STAGED, ROWS_MERGED, HISTORY_APPENDED,"
        " EXTRACT_SECONDS, APPLY_SECONDS FROM ANALYTICS.CONTROL.CDC_BATCHES WHERE APPLIED_AT >= %(since)s"
        " ORDER BY TABLE_NAME, APPLIED_AT",
        {"since": since},
    )
    print(f"\n== {title}: batches applied (ANALYTICS.CONTROL.CDC_BATCHES)")
    print(
        f"{'table':<20}{'mode':<10}{'LSN window (lower, upper]':<48}{'changes':>8}{'merged':>8}{'hist+':>8}"
        f"{'extract s':>11}{'apply s':>9}"
    )
    seen = set()
    for table, mode, lower, upper, staged, merged, hist, ext, app in rows:
        seen.add(table)
        window = f"({lower or '-'}, {upper}]"
        print(f"{table:<20}{mode:<10}{window:<48}{staged:>8}{merged:>8}{hist:>8}{ext or 0:>11.2f}{app or 0:>9.2f}")
    for pipeline in tables:
        if pipeline.table.name not in seen:
            print(f"{pipeline.table.name:<20}{'idle':<10}(no new changes: no Snowflake query was needed)")


def compare_source_and_raw(env: Mapping[str, str]) -> bool:
    """Reconcile every table: source rows vs live raw rows, value for value."""
    mssql_port, snowflake_port = _ports(env)
    print("\n== source (SQL Server CDC emulator) vs Snowflake ANALYTICS.RAW")
    print(f"{'table':<20}{'source rows':>12}{'raw live':>10}{'raw deleted':>12}{'history':>10}  result")
    ok = True
    for pipeline in pipelines(CONFIG, mssql_port, snowflake_port):
        result = reconcile(pipeline, salt=env.get("AIRFLOW_VAR_CDC_HASH_SALT_SECRET"))
        layout = pipeline.layout(pipeline.mappings(pipeline.instances()[-1].name))
        history = pipeline.warehouse.execute(f"SELECT COUNT(*) FROM {layout.history}")[0][0]
        verdict = (
            "identical"
            if result.ok
            else f"DIFFERENT missing={result.missing} extra={result.extra} changed={result.different}"
        )
        ok &= result.ok
        print(
            f"{result.table:<20}{result.source_rows:>12}{result.raw_live_rows:>10}{result.raw_deleted_rows:>12}"
            f"{history:>10}  {verdict}"
        )
    return ok


def print_marts(env: Mapping[str, str]) -> bool:
    """Headline numbers of the dbt marts, with the invoiced and paid totals checked against the source."""
    mssql_port, snowflake_port = _ports(env)
    pipeline = pipelines(CONFIG, mssql_port, snowflake_port)[0]
    wh, source = pipeline.warehouse, pipeline.source
    marts = {
        currency: (invoiced, invoices, paid)
        for currency, invoiced, invoices, paid in wh.execute(
            # Casts: the local emulator returns SUM over NUMBER(38, 2) as a float.
            "SELECT CURRENCY, SUM(INVOICED_AMOUNT)::NUMBER(38, 2), SUM(INVOICE_COUNT)::INTEGER,"
            " SUM(PAID_AMOUNT)::NUMBER(38, 2)"
            " FROM ANALYTICS.MARTS.FCT_REVENUE_DAILY GROUP BY CURRENCY ORDER BY CURRENCY"
        )
    }
    invoiced = {
        currency: (total, count)
        for currency, total, count in source.query(
            "SELECT currency, SUM(total_amount), COUNT(*) FROM dbo.invoices"
            " WHERE status IN ('issued', 'paid', 'refunded') GROUP BY currency"
        )
    }
    paid = dict(
        source.query(
            "SELECT i.currency, SUM(p.amount) FROM dbo.payments AS p JOIN dbo.invoices AS i"
            " ON i.invoice_id = p.invoice_id WHERE p.status = 'settled' GROUP BY i.currency"
        )
    )
    print("\n== marts (dbt via Cosmos, ANALYTICS.MARTS) vs the source tables")
    print(f"{'currency':<10}{'invoiced':>16}{'invoices':>10}{'paid':>16}  source")
    ok = set(marts) == set(invoiced)
    for currency, (total, count, paid_total) in marts.items():
        expected = (*invoiced.get(currency, (None, None)), paid.get(currency, 0))
        same = (total, count, paid_total) == expected
        ok &= same
        verdict = "same" if same else f"DIFFERENT {expected}"
        print(f"{currency:<10}{total:>16,.2f}{count:>10}{paid_total:>16,.2f}  {verdict}")
    print("\nreceivables today by ageing bucket (fct_receivables_ageing):")
    for bucket, count, outstanding in wh.execute(
        "SELECT AGEING_BUCKET, COUNT(*), SUM(OUTSTANDING_AMOUNT) FROM ANALYTICS.MARTS.FCT_RECEIVABLES_AGEING"
        " GROUP BY AGEING_BUCKET ORDER BY AGEING_BUCKET"
    ):
        print(f"  {bucket:<10}{count:>6} invoices {outstanding:>16,.2f}")
    ((accounts, versions),) = wh.execute("SELECT COUNT_IF(IS_CURRENT), COUNT(*) FROM ANALYTICS.MARTS.DIM_ACCOUNTS")
    ((features, days),) = wh.execute(
        "SELECT COUNT(*), COUNT(DISTINCT AS_OF_DATE) FROM ANALYTICS.MARTS.FCT_ACCOUNT_FEATURES_DAILY"
    )
    print(f"dim_accounts: {accounts} current accounts, {versions} versions (SCD2 from the CDC history)")
    print(f"fct_account_features_daily: {features} rows over {days} day(s) (point in time, for data science)")
    return ok
