"""The dbt DAG of a source: raw CDC tables -> dbt (astronomer-cosmos) -> marts.

Parse-time rules (this module runs whenever the DAG processor parses ``dags/billing_dbt.py``):
the dbt graph comes from a pre-built ``manifest.json`` (``python -m dev.dbt_local manifest``;
about 0.5 s to render instead of ~7 s for ``dbt ls``), and nothing here opens a connection, reads
an Airflow Variable or touches a database. The Snowflake profile is resolved from the Airflow
connection only when a task runs.

Shape of a run::

    source_freshness  ->  dbt (Cosmos task group: one task per model, its tests right after it)

* **Schedule**: any of the source's raw-table Assets (``AssetAny``). The CDC DAG skips idle tables
  (no Asset event), so "all of" would stall the marts whenever one table is quiet (products change
  a few times a month); "any of" refreshes them as soon as some table changed. Several events
  arriving together are consumed by one run; ``max_active_runs=1`` serialises the rest.
* **Freshness**: ``dbt source freshness`` on the current-state raw tables first; an ``error``
  threshold (stale busy table) fails the run before stale marts are published, and alerts.
* **Tests**: data tests and unit tests of a model run right after it (``TestBehavior.AFTER_EACH``);
  a failing test fails its task and everything downstream is not built.
* **Profile**: ``snowflake_default`` through Cosmos' Snowflake user/password mapping, extended to
  forward ``protocol`` from the connection extras (the stock mapping forwards host and port only,
  which cannot reach the local emulator over http). The dbt target name is ``$CDC_DBT_TARGET``
  (``prod`` unless set; the local stack sets ``local``, which turns on the emulator macros).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, AssetAny
from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ExecutionMode,
    LoadMode,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
    TestBehavior,
)
from cosmos.constants import InvocationMode, SourceRenderingBehavior
from cosmos.operators.local import DbtSourceLocalOperator
from cosmos.profiles.snowflake.user_pass import SnowflakeUserPasswordProfileMapping

from include.cdc_pipeline.config import SourceConfig, config_dir, load_source_config
from include.cdc_pipeline.dag_factory import raw_asset
from include.cdc_pipeline.notifications import failure_notifier

DBT_ROOT = Path(__file__).resolve().parents[1] / "dbt"
TARGET_ENV = "CDC_DBT_TARGET"  # dbt target name: "prod" (default) or "local" (emulator macros on)
EXECUTION_MODE_ENV = "CDC_DBT_EXECUTION_MODE"  # override of the measured default (docs/dbt.md)
DEFAULT_EXECUTION_MODE = ExecutionMode.LOCAL
MARTS_SCHEMA = "MARTS"


class SnowflakeConnectionProfileMapping(SnowflakeUserPasswordProfileMapping):
    """Cosmos' user/password mapping, plus ``protocol`` from the connection extras.

    ``SnowflakeUserPasswordProfileMapping`` maps ``host`` and ``port`` but not ``protocol``; a
    production account never needs it (https is the default), the local emulator does (http).
    """

    airflow_param_mapping = {
        **SnowflakeUserPasswordProfileMapping.airflow_param_mapping,
        "protocol": "extra.protocol",
    }


def project_dir(project: str) -> Path:
    return DBT_ROOT / project


def manifest_path(project: str) -> Path:
    return project_dir(project) / "target" / "manifest.json"


def target_name() -> str:
    return os.environ.get(TARGET_ENV, "prod").strip() or "prod"


def execution_mode() -> ExecutionMode:
    value = os.environ.get(EXECUTION_MODE_ENV)
    return ExecutionMode(value.lower()) if value else DEFAULT_EXECUTION_MODE


def profile_config(source: SourceConfig, project: str) -> ProfileConfig:
    """dbt profile from the source's Snowflake connection (read when a task runs, never at parse)."""
    return ProfileConfig(
        profile_name=project,
        target_name=target_name(),
        profile_mapping=SnowflakeConnectionProfileMapping(
            conn_id=source.snowflake_conn_id,
            # Every model sets its schema (STAGING_DBT / MARTS); the connection's schema is the
            # raw one, which dbt must not write to by default.
            profile_args={"schema": MARTS_SCHEMA, "threads": 4},
        ),
    )


def _default_args(source: SourceConfig) -> dict[str, Any]:
    return {
        "owner": source.owner,
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "on_failure_callback": failure_notifier(source),
    }


def _doc_md(source: SourceConfig, project: str, mode: ExecutionMode, doc: str | None) -> str:
    tables = ", ".join(f"`{source.target.raw_schema}.{t.snowflake_table}`" for t in source.tables)
    return (
        f"{doc or ''}\n\n## This DAG\n\ndbt project `include/dbt/{project}` (docs: `docs/dbt.md`), run by "
        f"astronomer-cosmos in `{mode.value}` execution mode from a pre-built manifest. Triggered when any "
        f"of {tables} changed (Assets emitted by `{source.dag_id}`). First `dbt source freshness` "
        "(error threshold fails the run), then every model followed by its tests. Target: "
        f"`{target_name()}`; profile from connection `{source.snowflake_conn_id}`."
    )


def build_dbt_dag(
    config_name: str,
    project: str | None = None,
    *,
    dag_id: str | None = None,
    mode: ExecutionMode | None = None,
    directory: Path | None = None,
    doc_md: str | None = None,
) -> DAG:
    """The dbt DAG for ``<config dir>/<config_name>.yaml`` and dbt project ``include/dbt/<project>``."""
    source = load_source_config((directory or config_dir()) / f"{config_name}.yaml")
    project = project or source.name
    mode = mode or execution_mode()
    manifest = manifest_path(project)
    if not manifest.is_file():
        # A clear import error beats a silent fallback to `dbt ls` (7 s per parse, needs dbt).
        raise FileNotFoundError(
            f"{manifest} is missing: build it with `python -m dev.dbt_local manifest` (make manifest); "
            "the Docker image builds it at deploy time"
        )
    profile = profile_config(source, project)
    project_config = ProjectConfig(dbt_project_path=project_dir(project), project_name=project, install_dbt_deps=False)
    # Given to ProjectConfig, a local path becomes an ObjectStoragePath, whose first use loads
    # Airflow's provider registry: ~0.6 s of every parse. A pathlib.Path has the same interface here.
    project_config.manifest_path = manifest
    # dbt-core is installed next to Airflow: run it in-process (dbtRunner), no subprocess per task.
    execution = ExecutionConfig(execution_mode=mode, invocation_mode=InvocationMode.DBT_RUNNER)
    operator_args: dict[str, Any] = {"install_deps": False, "emit_datasets": False}

    with DAG(
        dag_id=dag_id or f"{source.name}_dbt",
        description=f"dbt marts of {source.name} (Cosmos), refreshed when its raw tables change",
        schedule=AssetAny(*(raw_asset(source, table) for table in source.tables)),
        start_date=datetime.fromisoformat(source.start_date),
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(source),
        tags=["dbt", "cosmos", "snowflake", f"source:{source.name}", *source.tags],
        doc_md=_doc_md(source, project, mode, doc_md),
        dagrun_timeout=timedelta(hours=2),
    ) as dag:
        freshness = DbtSourceLocalOperator(
            task_id="source_freshness",
            doc_md="`dbt source freshness` of the current-state raw tables (warn: log only, error: fail).",
            project_dir=str(project_dir(project)),
            profile_config=profile,
            select=[f"source:{project}"],
            invocation_mode=InvocationMode.DBT_RUNNER,
            install_deps=False,
            emit_datasets=False,
        )
        models = DbtTaskGroup(
            group_id="dbt",
            project_config=project_config,
            profile_config=profile,
            execution_config=execution,
            render_config=RenderConfig(
                load_method=LoadMode.DBT_MANIFEST,
                test_behavior=TestBehavior.AFTER_EACH,
                source_rendering_behavior=SourceRenderingBehavior.NONE,
            ),
            operator_args=operator_args,
            default_args=_default_args(source),
        )
        freshness >> models
    return dag
