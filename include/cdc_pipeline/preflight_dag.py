"""The ``cdc_preflight`` DAG: every preflight check at once, triggered by hand.

One task runs the checks of include/cdc_pipeline/preflight.py for every source config, logs one
line per check (with the fix under each failure), returns the findings as its XCom, and fails —
without retry: a retry would not change the answer — when any check failed, naming them all
(the failure mail goes to every source's on-call list; a crash of the task itself retries once).
It uses no pool of its own, so that a missing CDC pool is reported instead of hiding the task.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from include.cdc_pipeline.config import config_dir
from include.cdc_pipeline.health_dag import _sources, all_sources_default_args, on_call

DAG_ID = "cdc_preflight"


def run_task() -> list[dict[str, Any]]:
    """The task body: run, log, fail when a check failed."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from include.cdc_pipeline import preflight

    findings = preflight.run_preflight()
    text = preflight.report(findings)
    for line in text.splitlines():
        logging.getLogger(__name__).info("%s", line)
    failed = [f for f in findings if not f.ok]
    if failed:
        raise AirflowFailException(text.splitlines()[-1] + "\n" + "\n".join(f"{f.check}: {f.fix}" for f in failed))
    return preflight.as_dicts(findings)


def build_preflight_dag(doc_md: str | None = None) -> DAG:
    everyone, smtp_conn_id = on_call(_sources(config_dir()))
    with DAG(
        dag_id=DAG_ID,
        description="Checks connections, CDC, permissions, pools, the salt Variable and SMTP before a run",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=all_sources_default_args(everyone, smtp_conn_id, timedelta(seconds=30)),
        tags=["cdc", "preflight"],
        doc_md=doc_md or __doc__,
    ) as dag:

        @task(task_id="preflight")
        def preflight() -> list[dict[str, Any]]:
            """Run every preflight check (include/cdc_pipeline/preflight.py)."""
            return run_task()

        preflight()
    return dag
