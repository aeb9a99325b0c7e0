"""One page when something breaks, one when it is fixed (issue #27), on real DAG runs.

The real ``billing_cdc`` DAG of a 5-table source (dag.test()) against an emulator server of its own,
the local Snowflake and the SMTP sink:

1. a first run loads every table;
2. the source goes down (its server process stops) for three runs: ``plan`` fails after its retries
   in each → exactly **one** mail, naming the five tables, the error as a person reads it, the first
   log and the runbook section;
3. the source comes back with one table's column altered (schema drift): four tables complete, the
   drifted one fails at once → exactly one **resolved** mail for the outage, and the drift is an
   incident of its own: one more mail.

Retries are made short with Airflow's own cap on retry delays (``[core] max_task_retry_delay``, 1 s
here; the DAG keeps its 3 retries with exponential backoff).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.mssql_emulator import connect
from dev.mssql_emulator.process import start_server
from dev.smtp_sink import body_text
from tests.alerts.billing_source import billing_yaml, seeded_server
from tests.fixtures_mssql import mssql_airflow_conn

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CONFIG = billing_yaml("INCIDENTS", ("accounts", "products", "invoices", "invoice_lines", "payments"))
TABLES = ["dbo_accounts", "dbo_invoice_lines", "dbo_invoices", "dbo_payments", "dbo_products"]


@pytest.fixture(scope="module")
def source_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The billing tables in an emulator database file of this module (servers come and go on it)."""
    db_path = tmp_path_factory.mktemp("incidents_mssql") / "billing.duckdb"
    seeded_server(db_path, seed=7).stop()
    yield db_path


def _run(dag: Any) -> tuple[Any, dict[tuple[str, str | None], tuple[str, int]]]:
    """One run; its task instances by (task id, table of a mapped instance) → (state, try)."""
    run = dag.test()
    tis = {(ti.task_id, ti.rendered_map_index): (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    return run, tis


def test_an_outage_pages_once_and_resolves_once_and_drift_is_its_own_incident(
    source_db: Path, local_snowflake: Any, mailbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.definitions._internal import abstractoperator

    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

    monkeypatch.setattr(abstractoperator, "MAX_RETRY_DELAY", 1)  # [core] max_task_retry_delay = 1 (seconds)
    (tmp_path / "billing.yaml").write_text(CONFIG)
    server = start_server(source_db, capture_interval=0.5, log_path=tmp_path / "server.log")
    port = server.port
    monkeypatch.setenv("CDC_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("CDC_DEADLINES", "off")
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(mssql_airflow_conn(server)))
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(local_snowflake.airflow_conn(database="INCIDENTS")))
    dag = build_cdc_dag("billing", directory=tmp_path)
    try:
        # Given every table loaded,
        run, tis = _run(dag)
        assert run.state == "success", tis
        assert mailbox.mails() == []
        # when the source is down for three runs,
        server.stop()
        for attempt in range(3):
            run, tis = _run(dag)
            assert run.state == "failed" and tis[("plan", None)] == ("failed", 4), tis  # a network error's retries
            mails = mailbox.mails(expect=1)
            mailbox.mails(expect=2, timeout=1.0)  # give a second (unwanted) mail the chance to arrive
            assert len(mailbox.mails()) == 1, (attempt, [m["Subject"] for m in mailbox.mails()])
        # then one mail tells the whole story: the five tables, the readable error, log and runbook.
        [opened] = mails
        subject, text = opened["Subject"], html.unescape(body_text(opened))
        assert subject.startswith("[CDC INCIDENT billing-1] billing: DB-Lib 20009: Unable to connect"), subject
        assert subject.endswith("— 5 tables"), subject
        for table in TABLES:
            assert table in text
        assert "Net-Lib error during Connection refused" in text and "pymssql.exceptions.OperationalError" in text
        for unreadable in ("b'", "\\n", "&#x27;"):
            assert unreadable not in text
        assert "billing_cdc.plan (try 4 of 4" in text and "First log" in text
        assert "docs/runbook.md#source-or-snowflake-unreachable-login-or-permission-errors" in text

        # When the source is back, with dbo.products' unit_price altered (a scale Snowflake cannot
        # take in place) and changed,
        server = start_server(source_db, port=port, capture_interval=0.5, log_path=tmp_path / "server2.log")
        conn = connect(server=server.host, port=server.port, database="billing")
        for statement in (
            "ALTER TABLE dbo.products ALTER COLUMN unit_price decimal(18,6) NOT NULL",
            "UPDATE dbo.products SET unit_price = 1.234567 WHERE product_id = 1",
            "EXEC sys.sp_cdc_scan",
        ):
            conn.cursor().execute(statement)
            conn.commit()
        conn.close()
        run, tis = _run(dag)
        # then the other tables complete (idle ones in `plan`), the drifted one failed in its first try,
        assert run.state == "failed", tis
        failed = {key: t for key, t in tis.items() if t[0] == "failed"}
        assert failed and all(key[1] == "dbo_products" and t[1] == 1 for key, t in failed.items()), tis
        assert tis[("plan", None)][0] == "success"
        applied = {name: t[0] for (task, name), t in tis.items() if task == "tables.apply" and name != "dbo_products"}
        assert set(applied.values()) <= {"success"}, applied
        # one mail says the outage is resolved, and one opens the drift's own incident.
        mails = mailbox.mails(expect=3)
        mailbox.mails(expect=4, timeout=1.0)
        subjects = [m["Subject"] for m in mailbox.mails()]
        assert len(subjects) == 3, subjects
        resolved = [m for m in mailbox.mails() if m["Subject"].startswith("[CDC RESOLVED billing-1]")]
        drift = [m for m in mailbox.mails() if m["Subject"].startswith("[CDC INCIDENT billing-2]")]
        assert len(resolved) == 1 and len(drift) == 1, subjects
        assert "resolved after" in resolved[0]["Subject"] and "(5 tables)" in resolved[0]["Subject"]
        resolved_text = html.unescape(body_text(resolved[0]))
        assert "dbo_products (now: incident billing-2)" in resolved_text
        drift_text = html.unescape(body_text(drift[0]))
        assert "SchemaDriftError" in drift[0]["Subject"] and "— 1 table" in drift[0]["Subject"]
        assert "a retry cannot fix this" in drift_text and "UNIT_PRICE" in drift_text
        assert mails
    finally:
        server.stop()
