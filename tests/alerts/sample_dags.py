"""Small DAGs shaped like the CDC DAG (``<table>.plan`` → ``<table>.apply``) using the project's notifiers.

dag.test() runs only DAGs it can find in a DAG bundle: tests write a DAG file that calls `build`
into a temporary dags folder (fixture ``alert_dags``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from include.cdc_pipeline.alerts.callbacks import failure_notifier, run_failure_summary
from include.cdc_pipeline.config import SourceConfig

SOURCE = SourceConfig.model_validate(
    {
        "name": "alerts",
        "target": {"database": "ALERTS"},
        "alert_emails": ["oncall@example.com", "dba@example.com"],
        "tables": [{"schema": "dbo", "table": "accounts", "primary_key": ["id"]}],
    }
)
LOWER, UPPER = "00" * 9 + "0A", "00" * 9 + "2A"


def build(dag_id: str, failing_tables: list[str]) -> Any:
    """A small DAG shaped like the CDC DAG (``<table>.plan`` → ``<table>.apply``) with the project's notifiers."""
    from airflow.sdk import DAG, TaskGroup, task

    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        max_active_runs=1,
        default_args={
            "owner": "data-platform",
            "retries": 2,
            "retry_delay": timedelta(seconds=0),
            "on_failure_callback": failure_notifier(SOURCE),
        },
        on_failure_callback=run_failure_summary(SOURCE),
        tags=["test"],
    ) as dag:
        for name in ["dbo_accounts", "dbo_invoices", "dbo_payments"]:
            with TaskGroup(group_id=name):

                @task(task_id="plan")
                def plan() -> dict[str, Any]:
                    return {"mode": "stream", "capture_instance": "dbo_x", "lower": LOWER, "upper": UPPER}

                @task(task_id="apply")
                def apply(window: dict[str, Any], fail: bool) -> None:
                    if fail:
                        raise RuntimeError("injected failure: MERGE exploded")

                apply(plan(), name in failing_tables)
    return dag
