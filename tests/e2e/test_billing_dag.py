"""End to end through Airflow: the billing CDC DAG, run with dag.test() against the local stack.

SQL Server CDC emulator (server process, capture job running) → billing_cdc DAG (Airflow 3.3,
the same connections and hooks as production, selected by connection settings) → local
Snowflake. Asserts that every raw table equals its source table and that history holds each
captured change once, after an initial snapshot and after live traffic.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from dev.localpipeline import pipelines
from dev.workload.tsql import Workload
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.reconcile import reconcile
from tests.e2e.conftest import SALT, billing_config, connect_airflow, run_cdc_dag, wait_for_capture
from tests.fixtures_mssql import pymssql_connect

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
DATABASE = "E2E_ANALYTICS"


@pytest.fixture(scope="module")
def billing_stack(mssql_server: Any, local_snowflake: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Seed the billing source; point a copy of billing.yaml at a database of its own."""
    from airflow.models.variable import Variable  # the metadata-DB model: delete by key prefix
    from airflow.utils.session import create_session

    # The status figures and run records of source `billing` are per source and table, not per
    # target: start from none, whatever other tests of this session ran the billing DAG before.
    with create_session() as session:
        for prefix in ("cdc_status__billing__", "cdc_runs__billing__"):
            session.query(Variable).filter(Variable.key.startswith(prefix)).delete(synchronize_session=False)
    conn = pymssql_connect(mssql_server)
    Workload(conn, seed=42).init(accounts=60, products=15, invoices=120)
    conn.commit()
    return {"configs": billing_config(tmp_path_factory.mktemp("configs"), DATABASE), "conn": conn}


def _run_dag(monkeypatch: pytest.MonkeyPatch, stack: dict[str, Any], mssql_server: Any, local_snowflake: Any) -> Any:
    connect_airflow(monkeypatch, stack["configs"], mssql_server, local_snowflake, DATABASE, "billing")
    return run_cdc_dag(stack["configs"])


def _check(stack: dict[str, Any], mssql_server: Any, local_snowflake: Any) -> dict[str, int]:
    """Reconcile every table and compare its history with the change table; returns source row counts."""
    counts = {}
    for pipeline in pipelines(stack["configs"] / "billing.yaml", mssql_server.port, local_snowflake.port, salt=SALT):
        result = reconcile(pipeline, salt=SALT)
        assert result.ok, result
        counts[pipeline.table.name] = result.source_rows
        table = pipeline.table
        layout = pipeline.layout(pipeline.mappings(pipeline.instances()[-1].name))
        key = ", ".join(k for k in layout.key)
        history = pipeline.warehouse.execute(
            f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, {key} FROM {layout.history} WHERE _CDC_OPERATION <> 0"
        )
        snapshot = pipeline.warehouse.execute(
            f"SELECT SNAPSHOT_LSN FROM {DATABASE}.CONTROL.CDC_WATERMARKS WHERE TABLE_NAME = %s", (table.name,)
        )
        keys = ", ".join(f"[{k}]" for k in table.primary_key)
        captured = {
            (to_hex(lsn), to_hex(seq), op, *rest)
            for lsn, seq, op, *rest in pipeline.source.query(
                f"SELECT [__$start_lsn], [__$seqval], [__$operation], {keys} FROM cdc.[{table.name}_CT]"
                " WHERE [__$operation] <> 3"
            )
            if to_hex(lsn) > snapshot[0][0]
        }
        counted = Counter(tuple(r) for r in history)
        assert max(counted.values(), default=1) == 1, f"{table.name}: duplicated history"
        assert set(counted) == captured, f"{table.name}: history differs from the change table"
    return counts


def test_billing_dag_snapshot_then_stream(billing_stack, mssql_server, local_snowflake, monkeypatch) -> None:
    # Given the seeded billing database, when the DAG runs for the first time, every table is snapshotted;
    run = _run_dag(monkeypatch, billing_stack, mssql_server, local_snowflake)
    assert run.state == "success"
    assert _check(billing_stack, mssql_server, local_snowflake)["dbo_accounts"] == 60
    # when live traffic follows and the DAG runs again, only the changes are streamed;
    conn = billing_stack["conn"]
    result = Workload(conn, seed=7).run(transactions=150)
    assert result.transactions > 0
    wait_for_capture(conn)
    run = _run_dag(monkeypatch, billing_stack, mssql_server, local_snowflake)
    assert run.state == "success"
    # then raw equals the source and history holds each change once.
    counts = _check(billing_stack, mssql_server, local_snowflake)
    assert all(counts.values()), counts
    # A third run with nothing new is idle for every table: no Snowflake query in plan.
    run = _run_dag(monkeypatch, billing_stack, mssql_server, local_snowflake)
    assert run.state == "success"
    plans = {ti.task_id: ti for ti in run.get_task_instances() if ti.task_id.endswith(".plan")}
    assert plans and all(ti.state == "success" for ti in plans.values())
    applied = [ti for ti in run.get_task_instances() if ti.task_id.endswith(".apply")]
    assert applied and all(ti.state == "skipped" for ti in applied)
    # Each table's run record (read by the cdc_health DAG) names this completed run, with no failure streak.
    from airflow.models import Variable  # the metadata DB itself: this test runs outside any task

    for ti in plans.values():
        table = ti.task_id.removesuffix(".plan")
        record = Variable.get(f"cdc_runs__billing__{table}", deserialize_json=True)  # noqa: AIR311
        assert record["succeeded_run"] == run.run_id and record["failed_runs"] == 0, record
    # The status page's figures (metadata DB) match CONTROL.CDC_BATCHES: last batch and its commit time.
    _check_status_page(billing_stack, mssql_server, local_snowflake, run)


def _check_status_page(stack: dict[str, Any], mssql_server: Any, local_snowflake: Any, idle_run: Any) -> None:
    from airflow.utils.session import create_session

    from include.cdc_pipeline.config import load_source_config
    from include.cdc_pipeline.status import figures as status
    from include.cdc_pipeline.status.app import read_dags, read_last_task_instances, read_records

    source = load_source_config(stack["configs"] / "billing.yaml")
    with create_session() as session:
        records = read_records(session)
        dags = read_dags(session, [source.dag_id])
        last_tis = read_last_task_instances(session, source)
    view = status.page([source], records, dags, {source.dag_id: last_tis}, {})["sources"][0]
    warehouse = pipelines(stack["configs"] / "billing.yaml", mssql_server.port, local_snowflake.port, salt=SALT)[0]
    logged = {
        table: (rows, extract_s + apply_s, committed)
        for table, rows, extract_s, apply_s, committed in warehouse.warehouse.execute(
            f"SELECT TABLE_NAME, ROWS_STAGED, EXTRACT_SECONDS, APPLY_SECONDS, UPPER_COMMITTED_AT"
            f" FROM {DATABASE}.CONTROL.CDC_BATCHES QUALIFY ROW_NUMBER() OVER (PARTITION BY TABLE_NAME"
            " ORDER BY APPLIED_AT DESC) = 1"
        )
    }
    assert {row["name"] for row in view["tables"]} == set(logged)
    for row in view["tables"]:
        rows, seconds, committed = logged[row["name"]]
        batch = row["last_batch"]
        assert batch["rows"] == rows and abs(batch["duration_s"] - seconds) < 0.002, (row["name"], batch, rows)
        assert datetime.fromisoformat(row["applied_through"]) == committed
        # the third run was idle for every table: lag 0, and the row's log link is that run's plan
        assert row["lag_s"] == 0.0 and row["last_run"] == idle_run.run_id
        assert row["links"]["last_task"]["run_id"] == idle_run.run_id
        assert row["state"] in ("flowing", "idle") and row["failures"]["streak"] == 0
        assert [p["mode"] for p in row["points"]] == ["snapshot", "stream", "idle"]
