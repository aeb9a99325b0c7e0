"""The ``cdc_health`` DAG: CDC health checks for every source config, every 15 minutes.

One task per source (`check_<source>`): capture job alive, freshness per table, retention
headroom, change-table rows, stuck or repeatedly failing table runs
(include/cdc_pipeline/health.py). Figures are appended to ``<db>.<control>.CDC_HEALTH`` and the
latest round is kept in the Variable ``cdc_health__<source>`` for the CDC status page and the
incident desk: each round ends with an incident round pass (include/cdc_pipeline/alerts/desk.py),
so what is not ok opens, updates or resolves the source's incidents — a stalled capture job that
makes every table late is one incident — and incidents whose tables completed runs again are
resolved here within 15 minutes at the latest. The task succeeds even when it alerts, and fails
only when it cannot check (its failure callback reports it to the same desk).

Parse time: only the YAML files are read; a broken one is skipped here (its own DAG file shows
the import error) so the other sources keep their health checks.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from include.cdc_pipeline.alerts.callbacks import (
    DEFAULT_ALERT_EMAILS,
    RunEnd,
    alert_emails,
    all_sources_desk,
    deadline_alert,
    failure_notifier,
    source_desk,
    task_failure_notifier,
)
from include.cdc_pipeline.config import SourceConfig, config_dir, load_source_config, source_files
from include.cdc_pipeline.errors import ConfigError

log = logging.getLogger(__name__)
DAG_ID = "cdc_health"
SOURCE_POOL = "cdc_sqlserver"


def run_source_checks(config_path: str, run_id: str | None = None) -> dict[str, Any]:
    """Run and record the checks of one source, then an incident round pass (the task body;
    importable for tests). The round marks the check itself done (``-cdc_health``: a failure of
    an earlier round no longer stands) and turns what is not ok into incidents."""
    from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

    from include.cdc_pipeline import health
    from include.cdc_pipeline.alerts import desk as incident_desk
    from include.cdc_pipeline.alerts.state import Variables
    from include.cdc_pipeline.orchestration.tasks import VariableStore
    from include.cdc_pipeline.snowflake import CdcSnowflakeHook
    from include.cdc_pipeline.source import CdcSource
    from include.cdc_pipeline.status import figures
    from include.cdc_pipeline.warehouse import Warehouse

    source = load_source_config(Path(config_path))
    src = CdcSource(MsSqlHook(mssql_conn_id=source.mssql_conn_id).get_conn())
    wh = Warehouse(CdcSnowflakeHook(snowflake_conn_id=source.snowflake_conn_id).get_conn())
    t = source.target
    plan = VariableStore.source_status(source.name).get()  # idle tables completed the latest planned run

    def run_record(table: Any) -> dict[str, Any] | None:
        return figures.with_source_plan(table.name, None, VariableStore.runs(source.name, table.name).get(), plan)[1]

    checks = health.run_checks(source, src, wh, run_record)
    health.ensure_health_table(wh, t.database, t.control_schema)
    previous = health.previous_values(wh, t.database, t.control_schema, source.name, "change_table_rows")
    checks = health.with_growth(checks, previous)
    health.record(wh, t.database, t.control_schema, checks)
    # The status page's copy (Airflow metadata DB): the page never queries Snowflake.
    VariableStore(figures.health_key(source.name), "latest cdc_health figures for the CDC status page").set(
        figures.health_summary(source.name, checks)
    )
    for c in checks:
        log.log(logging.WARNING if c.alerting else logging.INFO, "%s %s %s: %s", c.status, c.check, c.table, c.detail)
    desk, store = source_desk(source), Variables()
    incident_desk.record_completion(store, desk, f"-{DAG_ID}", run_id or "manual")
    notices = incident_desk.run_pass(desk, round_pass=True, store=store)
    return {
        "checks": len(checks),
        "alerting": [f"{c.check}:{c.table}" for c in checks if c.alerting],
        "incident_mails": [f"{n.kind} {n.incident['id']}" for n in notices],
    }


def _sources(directory: Path) -> list[tuple[Path, SourceConfig]]:
    found = []
    for path in source_files(directory):
        try:
            found.append((path, load_source_config(path)))
        except ConfigError as exc:
            log.warning("cdc_health: skipping %s (invalid config; its own DAG shows the error): %s", path.name, exc)
    return found


def on_call(sources: list[tuple[Path, SourceConfig]]) -> tuple[list[str], str]:
    """Every source's on-call addresses (or the default list) and the SMTP connection to use: the
    recipients of DAGs that serve all sources (cdc_health, cdc_preflight)."""
    everyone = sorted({e for _, s in sources for e in alert_emails(s)}) or list(DEFAULT_ALERT_EMAILS)
    return everyone, sources[0][1].smtp_conn_id if sources else "smtp_default"


def all_sources_default_args(everyone: list[str], smtp_conn_id: str, retry_delay: timedelta) -> dict[str, Any]:
    """Task defaults of a DAG serving all sources: one retry, one mail per failed task to all on-call."""
    return {
        "owner": "data-platform",
        "retries": 1,
        "retry_delay": retry_delay,
        "on_failure_callback": task_failure_notifier(everyone, smtp_conn_id),
    }


def build_health_dag(
    directory: Path | None = None,
    schedule: str | None = "*/15 * * * *",
    deadline: timedelta | None = timedelta(minutes=10),
) -> DAG:
    sources = _sources(directory or config_dir())
    everyone, smtp_conn_id = on_call(sources)
    # Its Deadline Alert and its runs' ends go to the desk of all sources: each run's end resolves a
    # missed deadline (and a failed round's report) there, as a CDC run's end does for its source.
    shared = all_sources_desk(everyone, smtp_conn_id)
    rows = "\n".join(f"| `{s.name}` | {', '.join(s.alert_emails)} | {s.retention_minutes} min |" for _, s in sources)
    with DAG(
        dag_id=DAG_ID,
        description="CDC health: capture job, freshness, retention headroom, change-table growth, stuck runs",
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=all_sources_default_args(everyone, smtp_conn_id, timedelta(minutes=1)),
        on_failure_callback=RunEnd([*(source_desk(s) for _, s in sources), shared]),
        on_success_callback=RunEnd([shared], success=True),
        tags=["cdc", "monitoring"],
        doc_md=__doc__
        + "\n\n| source | on-call | retention |\n|---|---|---|\n"
        + rows
        + "\n\nRunbook: `docs/runbook.md`.",
        dagrun_timeout=timedelta(minutes=30),
        **(
            {"deadline": alert}
            if deadline and (alert := deadline_alert(deadline, everyone, smtp_conn_id, DAG_ID, shared))
            else {}
        ),
    ) as dag:
        for path, source in sources:
            config_path = str(path)

            @task(
                task_id=f"check_{source.name}",
                pool=SOURCE_POOL,
                owner=source.owner,
                on_failure_callback=failure_notifier(source),
            )
            def check(config_path: str = config_path, **context: Any) -> dict[str, Any]:
                """Capture job, freshness, retention headroom and change-table rows of one source."""
                return run_source_checks(config_path, context.get("run_id"))

            check()
    return dag
