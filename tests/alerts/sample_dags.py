"""Small DAGs shaped like the CDC DAG (``plan`` → mapped ``tables.apply`` named by table) using the
project's callbacks.

Each is the CDC DAG of a source of its own (``<name>_cdc``), so its tasks map to that source's
tables. dag.test() runs only DAGs it can find in a DAG bundle: tests write a DAG file that calls
`build` into a temporary dags folder (fixture ``alert_dags``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from include.cdc_pipeline.alerts.callbacks import failure_notifier, run_failure_summary
from include.cdc_pipeline.config import SourceConfig

TABLES = ["dbo_accounts", "dbo_invoices", "dbo_payments"]
LOWER, UPPER = "00" * 9 + "0A", "00" * 9 + "2A"


def source(name: str) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": name,
            "target": {"database": "ALERTS"},
            "alert_emails": ["oncall@example.com", "dba@example.com"],
            "tables": [{"schema": "dbo", "table": t.removeprefix("dbo_"), "primary_key": ["id"]} for t in TABLES],
        }
    )


def build(name: str, failing_tables: list[str]) -> Any:
    """The DAG ``<name>_cdc``: ``plan`` → mapped ``tables.apply``, one instance per table named by
    it, the window in its input; ``apply`` fails for ``failing_tables``."""
    from airflow.sdk import DAG, task, task_group

    from include.cdc_pipeline.orchestration.cdc_dag import MAP_INDEX_TEMPLATE

    config = source(name)
    with DAG(
        dag_id=config.dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        max_active_runs=1,
        default_args={
            "owner": "data-platform",
            "retries": 2,
            "retry_delay": timedelta(seconds=0),
            "on_failure_callback": failure_notifier(config),
        },
        on_failure_callback=run_failure_summary(config),
        tags=["test"],
    ) as dag:

        @task(task_id="plan")
        def plan() -> list[dict[str, Any]]:
            window = {"mode": "stream", "capture_instance": "dbo_x", "lower": LOWER, "upper": UPPER}
            return [{"table": name, "window": window} for name in TABLES]

        @task_group(group_id="tables")
        def tables(item: dict[str, Any]) -> Any:
            @task(task_id="apply", map_index_template=MAP_INDEX_TEMPLATE)
            def apply(item: dict[str, Any]) -> None:
                from include.cdc_pipeline.orchestration.tasks import _name_map_index

                _name_map_index(item["table"], item["window"])
                if item["table"] in failing_tables:
                    raise RuntimeError("injected failure: MERGE exploded")

            return apply(item)

        tables.expand(item=plan())
    return dag
