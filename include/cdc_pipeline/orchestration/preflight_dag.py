"""The ``cdc_preflight`` DAG: every preflight check at once, triggered by hand.

One task runs the checks of include/cdc_pipeline/preflight.py for every source config, logs one
line per check (with the fix under each failure), returns the findings as its XCom, and fails —
without retry: a retry would not change the answer — when any check failed, naming them all
(the failure mail goes to every source's on-call list; a crash of the task itself retries once).
It uses no pool of its own, so that a missing CDC pool is reported instead of hiding the task.

The same checks from a shell where the Airflow CLI works (``make preflight`` locally)::

    python -m include.cdc_pipeline.orchestration.preflight_dag [--json]

The checks themselves live in include/cdc_pipeline/preflight.py; this module supplies what they
need from the Airflow wiring: the pools the CDC and health DAGs' tasks run in (built from the
same DAG builders) and the salt Variable the CDC tasks read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, task

from include.cdc_pipeline.alerts.callbacks import RunEnd, all_sources_desk
from include.cdc_pipeline.config import SourceConfig, config_dir
from include.cdc_pipeline.orchestration.health_dag import _sources, all_sources_default_args, on_call

if TYPE_CHECKING:
    from include.cdc_pipeline.preflight import Finding

DAG_ID = "cdc_preflight"


def required_pools(sources: Sequence[tuple[Path, SourceConfig]]) -> dict[str, list[str]]:
    """Pool → the tasks (``dag.task``) that run in it, over the CDC and health DAGs."""
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag
    from include.cdc_pipeline.orchestration.health_dag import build_health_dag

    dags = [build_cdc_dag(path.stem, path.parent) for path, _ in sources]
    dags.append(build_health_dag())
    pools: dict[str, list[str]] = {}
    for dag in dags:
        for op in dag.tasks:
            pools.setdefault(op.pool, []).append(f"{dag.dag_id}.{op.task_id}")
    return pools


def run_preflight(
    paths: Iterable[Path] | None = None,
    *,
    pools: Callable[[], dict[str, int]] | None = None,
    get_salt: Callable[[], str | None] | None = None,
) -> list[Finding]:
    """Every preflight check for every source config (all of ``include/config/sources`` unless
    ``paths``), with this environment's pools (``preflight.read_pools``) and salt Variable."""
    from include.cdc_pipeline import preflight
    from include.cdc_pipeline.orchestration.tasks import SALT_VARIABLE, read_salt

    return preflight.run_preflight(
        paths,
        required_pools=required_pools,
        salt_variable=SALT_VARIABLE,
        get_salt=get_salt or read_salt,
        pools=pools or preflight.read_pools,
    )


def run_task() -> list[dict[str, Any]]:
    """The task body: run, log, fail when a check failed."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from include.cdc_pipeline import preflight

    findings = run_preflight()
    text = preflight.report(findings)
    log = logging.getLogger(__name__)
    for line in text.splitlines():  # a warning (e.g. the change reader's fallback) stands out in the task log
        log.log(logging.WARNING if line.startswith("WARN") else logging.INFO, "%s", line)
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
        # a failed preflight is an incident (of all sources) until a run passes
        on_failure_callback=RunEnd([all_sources_desk(everyone, smtp_conn_id)]),
        on_success_callback=RunEnd([all_sources_desk(everyone, smtp_conn_id)], success=True),
        tags=["cdc", "preflight"],
        doc_md=doc_md or __doc__,
    ) as dag:

        @task(task_id="preflight")
        def preflight() -> list[dict[str, Any]]:
            """Run every preflight check (include/cdc_pipeline/preflight.py)."""
            return run_task()

        preflight()
    return dag


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m include.cdc_pipeline.orchestration.preflight_dag [--json]``: the checks with this
    environment's Airflow connections, Variables and pools; exit status 1 when any failed."""
    from include.cdc_pipeline import preflight

    findings = run_preflight()
    print(
        json.dumps(preflight.as_dicts(findings), indent=2) if argv and "--json" in argv else preflight.report(findings)
    )
    return 0 if all(f.ok for f in findings) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
