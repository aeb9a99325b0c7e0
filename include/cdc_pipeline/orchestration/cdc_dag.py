"""Build the CDC DAG of a source config file: ``cut`` → per table (a task group) ``plan`` →
``extract_load`` → ``apply`` → ``publish``; its params, pools, retries, callbacks and Assets (one
per raw table, and the source's *published* Asset the dbt DAG is scheduled on).

The task bodies live in ``orchestration.tasks``, the callbacks in ``alerts.callbacks``.

Parse-time rules (DAG files are parsed every few seconds by the DAG processor): only read and
validate the YAML here; no connection, Variable or database call, and heavy imports (pyarrow,
the Snowflake connector, the pipeline code) happen inside the tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import DAG, Asset, Param, TaskGroup, TriggerRule, task

from include.cdc_pipeline.alerts.callbacks import failure_notifier, run_failure_summary, source_deadline_alert
from include.cdc_pipeline.config import SourceConfig, TableConfig, config_dir, load_source_config

SOURCE_POOL = "cdc_sqlserver"
SNOWFLAKE_POOL = "cdc_snowflake"


def snowflake_namespace(account: str) -> str:
    """``snowflake://<account>`` exactly as Cosmos names the marts' Assets (its OpenLineage namespace):
    the account goes through OpenLineage's ``fix_account_name`` (a bare locator gains the default
    region and cloud, ``xy12345`` → ``xy12345.us-west-1.aws``; ``org-account`` stays as is), as in
    ``cosmos.dataset`` (astronomer-cosmos 1.15), so raw tables and marts link up in the Assets view."""
    try:
        from openlineage.common.provider.snowflake import fix_account_name
    except ImportError:  # Cosmos then keeps the account as given, and so do we
        return f"snowflake://{account}"
    return f"snowflake://{fix_account_name(account)}"


def raw_asset(source: SourceConfig, table: TableConfig) -> Asset:
    """The Asset a table's load emits: ``snowflake://<account>/<DB>/<SCHEMA>/<TABLE>``, the URI Cosmos
    gives the same table (its dbt source), with the account of ``target.account``."""
    target = source.target
    parts = (target.database, target.raw_schema, table.snowflake_table)
    return Asset(
        name=".".join(_uri_part(p) for p in parts).lower(),
        uri=f"{snowflake_namespace(target.account)}/{'/'.join(_uri_part(p) for p in parts)}",
        group="cdc_raw",
    )


def _uri_part(name: str) -> str:
    """One name in an Asset URI or name, percent-encoded (RFC 3986) so that a table name holding
    ``/``, ``#``, ``?``, ``.``, a space or a non-ASCII letter stays one path segment, survives
    Airflow's URI normalisation (which drops fragments) and stays ASCII (MySQL metadata DBs);
    letters, digits, ``_``, ``-``, ``~`` and ``$`` are kept, so ``ANALYTICS/RAW/CUSTOMERS`` is unchanged."""
    return quote(name, safe="$").replace(".", "%2E")


def published_asset(source: SourceConfig) -> Asset:
    """The Asset a CDC run emits once every table of the run was applied up to the run's LSN cut
    (and at least one changed): the raw tables are then consistent with each other, so the dbt DAG
    is scheduled on this one, never on a single table's event."""
    target = source.target
    # No snowflake:// URI: that scheme names one table, this event covers the source's raw schema.
    return Asset(name=f"{target.database}.{target.raw_schema}.{source.name}".lower(), group="cdc_raw")


def _default_args(source: SourceConfig) -> dict[str, Any]:
    return {
        "owner": source.owner,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": failure_notifier(source),
    }


def _doc_md(source: SourceConfig, path: Path) -> str:
    rows = "\n".join(
        f"| {_md_code(t.name)} | {_md_code(f'{t.source_schema}.{t.table}')} "
        f"| {_md_code(f'{source.target.raw_schema}.{t.snowflake_table}')} "
        f"| {', '.join(_md_code(k) for k in t.primary_key)} | {source.setting(t, 'delete_mode').value} |"
        for t in source.tables
    )
    return (
        f"# {source.dag_id}\n\n{source.description}\n\n"
        f"Replicates SQL Server CDC from connection `{source.mssql_conn_id}` into Snowflake "
        f"`{source.target.database}` (config: `{path.name}`). **cut** reads the source's max LSN once; "
        "then each table: **plan** its LSN window up to the cut (no Snowflake query when idle) → "
        "**extract_load** (change rows → Parquet → PUT → COPY into staging) → **apply** (MERGE into "
        "raw, append history, advance the watermark); **publish** emits the source's Asset when every "
        "table is applied and one changed (the raw tables then hold the same transactions; the dbt "
        "DAG runs on it).\n\n"
        'Trigger with `resnapshot` = a list of table names or `schema.table` source names (or `["*"]`) '
        "to reload tables from a fresh snapshot.\n\n"
        "| table name | source | raw table | key | deletes |\n|---|---|---|---|---|\n" + rows
    )


def _md_code(text: str) -> str:
    """A name as a Markdown code span inside a table row: any backtick, ``|`` or space stays text."""
    return "`` " + text.replace("|", "\\|") + " ``"


def build_cdc_dag(config_name: str, directory: Path | None = None) -> DAG:
    """Build the DAG for ``<directory>/<config_name>.yaml`` (raises ConfigError naming the field)."""
    path = (directory or config_dir()) / f"{config_name}.yaml"
    source = load_source_config(path)

    with DAG(
        dag_id=source.dag_id,
        description=source.description or f"SQL Server CDC → Snowflake for {source.name}",
        schedule=source.schedule,
        start_date=datetime.fromisoformat(source.start_date),
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(source),
        tags=["cdc", "sqlserver", "snowflake", f"source:{source.name}", *source.tags],
        doc_md=_doc_md(source, path),
        params={
            "resnapshot": Param(
                [],
                type="array",
                description='Tables to reload from a fresh snapshot, e.g. ["dbo_accounts"] or ["*"].',
            ),
        },
        dagrun_timeout=timedelta(hours=6),
        on_failure_callback=run_failure_summary(source),
        **({"deadline": deadline} if (deadline := source_deadline_alert(source)) else {}),
    ) as dag:
        config_path = str(path)

        @task(task_id="cut", pool=SOURCE_POOL)
        def cut() -> str | None:
            """Read the source's max LSN once: every table of this run stops there."""
            from include.cdc_pipeline.orchestration.tasks import read_cut

            return read_cut(config_path)

        @task(task_id="publish", trigger_rule=TriggerRule.NONE_FAILED, outlets=[published_asset(source)])
        def publish(**context: Any) -> dict[str, Any]:
            """Every table is applied up to the cut: announce it (skipped when nothing changed)."""
            from include.cdc_pipeline.orchestration.tasks import publish_run

            return publish_run(config_path, [t.name for t in source.tables], context)

        run_cut = cut()
        applied = [_table_group(config_path, source, table, run_cut) for table in source.tables]
        applied >> publish()
    return dag


def _table_group(config_path: str, source: SourceConfig, table: TableConfig, run_cut: Any) -> Any:
    with TaskGroup(group_id=table.name, tooltip=f"{table.source_schema}.{table.table}"):

        @task(task_id="plan", pool=SOURCE_POOL)
        def plan(cut: str | None, **context: Any) -> dict[str, Any]:
            """Decide this run's LSN window for the table (or that it is idle)."""
            from include.cdc_pipeline.orchestration.tasks import plan_table

            return plan_table(config_path, table.name, context, cut=cut)

        @task(task_id="extract_load", pool=SOURCE_POOL)
        def extract_load(window: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Read the window's change rows into Parquet chunks, PUT and COPY them into staging."""
            from include.cdc_pipeline.orchestration.tasks import extract_load_table

            return extract_load_table(config_path, table.name, window, context)

        @task(task_id="apply", pool=SNOWFLAKE_POOL, outlets=[raw_asset(source, table)])
        def apply(batch: dict[str, Any], **context: Any) -> dict[str, Any]:
            """MERGE staging into raw, append history, then advance the watermark; after a window
            capped by max_transactions_per_batch, catch up with further capped windows up to the
            run's cut (reading the source too) for at most catch_up_seconds."""
            from include.cdc_pipeline.orchestration.tasks import apply_table

            return apply_table(config_path, table.name, batch, context)

        return apply(extract_load(plan(run_cut)))  # type: ignore[arg-type]  # @task: an XComArg stands for the value
