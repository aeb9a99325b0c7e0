"""Build the CDC DAG of a source config file: ``plan`` (one task: the LSN cut and every table's
decision) → per table with work, a mapped task group ``tables`` of ``extract_load`` → ``apply``
(named by table in the grid) → ``publish``; its params, pools, retries, callbacks and Assets (one
per raw table, through the source's asset alias, and the source's *published* Asset the dbt DAG
is scheduled on). An idle table costs no task instance: an idle run is one ``plan`` process.

The task bodies live in ``orchestration.tasks``, the callbacks in ``alerts.callbacks``.

Parse-time rules (DAG files are parsed every few seconds by the DAG processor): only read and
validate the YAML here; no connection, Variable or database call, and heavy imports (pyarrow,
the Snowflake connector, the pipeline code) happen inside the tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task, task_group

from include.cdc_pipeline.alerts.callbacks import (
    failure_notifier,
    run_failure_summary,
    run_success_callback,
    source_deadline_alert,
)
from include.cdc_pipeline.config import SourceConfig, config_dir, load_source_config
from include.cdc_pipeline.orchestration.assets import published_asset, raw_alias, raw_asset, snowflake_namespace

__all__ = ["MAP_INDEX_TEMPLATE", "build_cdc_dag", "published_asset", "raw_alias", "raw_asset", "snowflake_namespace"]

SOURCE_POOL = "cdc_sqlserver"
# The grid names each mapped table task by its table (set by the task: orchestration.tasks.MAP_INDEX_KEY).
MAP_INDEX_TEMPLATE = "{{ cdc_table }}"
SNOWFLAKE_POOL = "cdc_snowflake"


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
        f"`{source.target.database}` (config: `{path.name}`). **plan** reads the source's max LSN once "
        "(the run's cut) and decides every table in one task (idle tables cost no Snowflake query and no "
        "task); then each table with work, a mapped **tables** group named by table: **extract_load** "
        "(change rows → Parquet → PUT → COPY into staging) → **apply** (MERGE into raw, append history, "
        "advance the watermark); **publish** emits the source's Asset when every table is applied and one "
        "changed (the raw tables then hold the same transactions; the dbt DAG runs on it).\n\n"
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
        # a run that completes resolves the incidents of the tables it completed (alerts.desk)
        on_success_callback=run_success_callback(source),
        **({"deadline": deadline} if (deadline := source_deadline_alert(source)) else {}),
    ) as dag:
        config_path = str(path)

        @task(task_id="plan", pool=SOURCE_POOL)
        def plan(**context: Any) -> list[dict[str, Any]]:
            """Read the run's LSN cut, plan every table, start the snapshots it decides: the work items
            of the tables group (a table with a window, or a snapshot worker)."""
            from include.cdc_pipeline.orchestration.tasks import plan_source

            return plan_source(config_path, context)

        @task_group(group_id="tables", tooltip="one mapped instance per table with work, or snapshot worker")
        def tables(item: dict[str, Any]) -> Any:
            @task(task_id="extract_load", pool=SOURCE_POOL, map_index_template=MAP_INDEX_TEMPLATE)
            def extract_load(item: dict[str, Any], **context: Any) -> dict[str, Any]:
                """Read the table's window of changes into Parquet chunks, PUT and COPY them into staging;
                or, as a snapshot worker, load key-range chunks of the snapshotting tables."""
                from include.cdc_pipeline.orchestration.tasks import extract_load_item

                return extract_load_item(config_path, item, context)

            @task(
                task_id="apply",
                pool=SNOWFLAKE_POOL,
                map_index_template=MAP_INDEX_TEMPLATE,
                outlets=[raw_alias(source)],
            )
            def apply(staged: dict[str, Any], **context: Any) -> dict[str, Any] | None:
                """MERGE staging into raw, append history, then advance the watermark; after a window
                capped by max_transactions_per_batch, catch up with further capped windows up to the
                run's cut (reading the source too) for at most catch_up_seconds."""
                from include.cdc_pipeline.orchestration.tasks import apply_item

                return apply_item(config_path, staged, context)

            return apply(extract_load(item))  # type: ignore[arg-type]  # @task: an XComArg stands for the value

        # ALL_SUCCESS: skipped (never run) when no table had work and no snapshot is loading, so an
        # idle run is one process.
        @task(task_id="publish", trigger_rule=TriggerRule.ALL_SUCCESS, outlets=[published_asset(source)])
        def publish(applied: Any, **context: Any) -> dict[str, Any]:
            """Every table with work is applied up to the cut: announce it (skipped when nothing changed)."""
            from include.cdc_pipeline.orchestration.tasks import publish_run

            return publish_run(config_path, _results(applied), context)

        publish(tables.expand(item=plan()))
    return dag


def _results(value: Any) -> list[Any]:
    """The results of a mapped task as a list: Airflow 3.3 hands a mapped task group expanded once
    the value itself, not a sequence of one, and a mapped task that never ran nothing."""
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)
