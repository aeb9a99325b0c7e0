"""The dbt DAG of a source: raw CDC tables -> dbt (astronomer-cosmos) -> marts.

Parse-time rules (this module runs whenever the DAG processor parses ``dags/billing_dbt.py``):
the dbt graph comes from a pre-built ``manifest.json`` (where it lives and how it is built:
``include/cdc_pipeline/orchestration/dbt_manifest.py``; 0.3-0.45 s to parse here instead of ~7 s for
``dbt ls``), and nothing here opens a connection, reads an Airflow Variable or touches a
database. The Snowflake profile is resolved from the Airflow connection only when a task runs.

Shape of a run (Cosmos task group ``dbt``)::

    source freshness (one task per raw table with a threshold) -> model -> its tests -> ...

In WATCHER mode (the default, chosen by measurement: docs/dbt.md) one producer task runs
``dbt source freshness`` and then a single ``dbt build``; every source/model/test task reports its
node's outcome from the producer's XComs.

* **Schedule**: the source's *published* Asset, emitted by the CDC DAG's last task once every
  table of a run was applied up to the run's LSN cut and at least one changed. The marts are
  therefore always built from raw tables that hold the same source transactions (an invoice never
  arrives before its account), once per CDC run with changes, never on an idle run.
* **Freshness**: ``dbt source freshness`` on the current-state raw tables before anything is
  built. A source past its ``error`` threshold: its task fails (the run fails and alerts) and no
  model built from it runs, so stale marts are never published; a ``warn`` only logs.
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
from typing import Any, ClassVar

from airflow.sdk import DAG, TriggerRule
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
from cosmos.constants import DbtResourceType, InvocationMode, SourceRenderingBehavior
from cosmos.profiles.snowflake.base import SnowflakeBaseProfileMapping
from cosmos.profiles.snowflake.user_pass import SnowflakeUserPasswordProfileMapping

from include.cdc_pipeline.alerts.callbacks import (
    failure_notifier,
    run_failure_summary,
    run_success_callback,
    source_deadline_alert,
)
from include.cdc_pipeline.config import SourceConfig, config_dir, load_source_config
from include.cdc_pipeline.orchestration.assets import published_asset
from include.cdc_pipeline.orchestration.dbt_manifest import dbt_executable, manifest_path, project_dir

TARGET_ENV = "CDC_DBT_TARGET"  # dbt target name: "prod" (default) or "local" (emulator macros on)
EXECUTION_MODE_ENV = "CDC_DBT_EXECUTION_MODE"  # override of the measured default (docs/dbt.md)
INVOCATION_MODE_ENV = "CDC_DBT_INVOCATION_MODE"  # subprocess | dbt_runner (default: see invocation_mode)
DEFAULT_EXECUTION_MODE = ExecutionMode.WATCHER  # measured: docs/dbt.md "Execution mode"
MARTS_SCHEMA = "MARTS"


class SnowflakeConnectionProfileMapping(SnowflakeUserPasswordProfileMapping):
    """The dbt profile of an Airflow Snowflake connection, authenticated as the loader's hook is.

    * **Key pair** when the connection's extras carry ``private_key_content`` (PEM, or base64 of the
      PEM, as the provider accepts) or ``private_key_file`` (a path on the worker); the connection's
      password, if any, is the key's passphrase. Same fields, same meaning as the provider's
      SnowflakeHook, so one connection serves the loader and dbt.
    * **Password** otherwise.

    Cosmos ships one mapping per method and picks one by reading the connection, which a DAG may not
    do at parse time; this one decides when the profile is rendered (a task runs). Secrets reach dbt
    as environment variables, never in profiles.yml. Plus ``protocol`` from the extras, which the
    stock mapping does not forward (https is the default; the local emulator speaks http).
    """

    airflow_param_mapping: ClassVar[dict[str, Any]] = {
        **SnowflakeUserPasswordProfileMapping.airflow_param_mapping,
        "protocol": "extra.protocol",
        "private_key": "extra.private_key_content",
        "private_key_path": "extra.private_key_file",
        "private_key_passphrase": "password",
    }
    _credential_fields = ("password", "private_key", "private_key_path", "private_key_passphrase")

    def key_pair(self) -> str | None:
        """``"content"``, ``"file"`` or None (password), from the connection's extras."""
        extras = self.conn.extra_dejson
        content, path = extras.get("private_key_content"), extras.get("private_key_file")
        if content and path:
            raise ValueError(
                f"connection {self.conn_id}: private_key_content and private_key_file are mutually exclusive"
            )
        return "content" if content else "file" if path else None

    @property
    def secret_fields(self) -> list[str]:  # per connection, not per class (cosmos: a class attribute)
        method = self.key_pair()
        if method is None:
            return ["password"]
        return (["private_key"] if method == "content" else []) + (
            ["private_key_passphrase"] if self.conn.password else []
        )

    def get_dbt_value(self, name: str) -> Any:
        value = super().get_dbt_value(name)
        if name == "private_key" and value:
            return self._decode_private_key_content(value)  # dbt wants the PEM text
        return value

    @property
    def profile(self) -> dict[str, Any | None]:
        profile_vars = dict(SnowflakeBaseProfileMapping.profile.fget(self))
        for name in self._credential_fields:
            profile_vars.pop(name, None)
        if self.key_pair() == "file":
            profile_vars["private_key_path"] = self.get_dbt_value("private_key_path")
        for name in self.secret_fields:
            profile_vars[name] = self.get_env_var_format(name)
        profile: dict[str, Any | None] = self.filter_null(profile_vars)
        return profile


def skip_dependents_of_stale_sources(
    context: Any, dag: Any, task_group: Any, nodes: dict[str, Any] | None, sources_json: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """Watcher-mode freshness policy: what is built from a source past its *error* threshold is
    left out of the run; a *warn* only logs.

    Cosmos' default skips a model only when all of its inputs are stale, and treats warn as stale.
    Here any model reading a stale source, directly or not, is skipped (stale marts are never
    published), the source's own task fails (the run fails and alerts), and everything else is built.
    """
    stale = {
        result["unique_id"]
        for result in (sources_json or {}).get("results", [])
        if result.get("status") in ("error", "runtime error")
    }
    if not stale or not nodes:
        return []
    dependents: dict[str, set[str]] = {}
    for unique_id, node in nodes.items():
        for parent in node.depends_on:
            dependents.setdefault(parent, set()).add(unique_id)
    reached: set[str] = set()
    queue = list(stale)
    while queue:
        for child in dependents.get(queue.pop(), set()):
            if child not in reached:
                reached.add(child)
                queue.append(child)
    buildable = {DbtResourceType.MODEL, DbtResourceType.SEED, DbtResourceType.SNAPSHOT}
    return [(uid, "skipped") for uid in sorted(reached) if uid in nodes and nodes[uid].resource_type in buildable]


def target_name() -> str:
    return os.environ.get(TARGET_ENV, "prod").strip() or "prod"


def execution_mode() -> ExecutionMode:
    value = os.environ.get(EXECUTION_MODE_ENV)
    return ExecutionMode(value.lower()) if value else DEFAULT_EXECUTION_MODE


def invocation_mode(mode: ExecutionMode) -> InvocationMode:
    """How dbt is started. Measured defaults (docs/dbt.md): the watcher producer runs dbt as a
    subprocess (in-process, Cosmos serialises every dbt event to JSON in a callback, which doubled
    the build time here); LOCAL mode runs many short dbt commands, best in-process."""
    value = os.environ.get(INVOCATION_MODE_ENV)
    if value:
        return InvocationMode(value.lower())
    return InvocationMode.SUBPROCESS if mode is ExecutionMode.WATCHER else InvocationMode.DBT_RUNNER


def profile_config(source: SourceConfig, project: str) -> ProfileConfig:
    """dbt profile from the source's Snowflake connection (read when a task runs, never at parse).

    dbt may have a connection and role of its own (``dbt_snowflake_conn_id``, ``dbt_role``); by
    default it uses the loader's.
    """
    # Every model sets its schema (STAGING_DBT / MARTS); the connection's schema is the raw one,
    # which dbt must not write to by default.
    args: dict[str, Any] = {"schema": MARTS_SCHEMA, "threads": 4}
    if source.dbt_role:
        args["role"] = source.dbt_role
    return ProfileConfig(
        profile_name=project,
        target_name=target_name(),
        profile_mapping=SnowflakeConnectionProfileMapping(
            conn_id=source.dbt_snowflake_conn_id or source.snowflake_conn_id, profile_args=args
        ),
    )


def _default_args(source: SourceConfig) -> dict[str, Any]:
    return {
        "owner": source.owner,
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "on_failure_callback": failure_notifier(source),
    }


def _doc_md(source: SourceConfig, project: str, mode: ExecutionMode, doc: str | None, freshness: bool) -> str:
    first = (
        "First `dbt source freshness` (a source past its error threshold fails the run and blocks its models), then"
        if freshness
        else "No source-freshness step (the CDC health DAG checks freshness SLAs);"
    )
    return (
        f"{doc or ''}\n\n## This DAG\n\ndbt project `include/dbt/{project}` (docs: `docs/dbt.md`), run by "
        f"astronomer-cosmos in `{mode.value}` execution mode from a pre-built manifest. Triggered when "
        f"`{source.dag_id}` published a run with changes (all raw tables up to the same LSN). {first} "
        "every model followed by its tests. Target: "
        f"`{target_name()}`; profile from connection `{source.dbt_snowflake_conn_id or source.snowflake_conn_id}`."
    )


def build_dbt_dag(
    config_name: str,
    project: str | None = None,
    *,
    dag_id: str | None = None,
    mode: ExecutionMode | None = None,
    directory: Path | None = None,
    doc_md: str | None = None,
    source_freshness: bool = True,
) -> DAG:
    """The dbt DAG for ``<config dir>/<config_name>.yaml`` and dbt project ``include/dbt/<project>``.

    ``source_freshness=False`` leaves out the `dbt source freshness` step and its source tasks (the
    build alone: benchmarks/bench_dbt.py compares it with a plain `dbt build`); the CDC health DAG
    still checks each table's freshness SLA.
    """
    source = load_source_config((directory or config_dir()) / f"{config_name}.yaml")
    project = project or source.name
    mode = mode or execution_mode()
    manifest = manifest_path(project)
    if not manifest.is_file():
        # A clear import error beats a silent fallback to `dbt ls` (7 s per parse, needs dbt).
        raise FileNotFoundError(
            f"{manifest} is missing: build it with `make manifest` "
            "(python -m include.cdc_pipeline.orchestration.dbt_manifest); "
            "the image build (Dockerfile) builds it for astro dev start, parse and deploy"
        )
    profile = profile_config(source, project)
    project_config = ProjectConfig(dbt_project_path=project_dir(project), project_name=project, install_dbt_deps=False)
    # Given to ProjectConfig, a local path becomes an ObjectStoragePath, whose first use loads
    # Airflow's provider registry: ~0.6 s of every parse. A pathlib.Path has the same interface here.
    project_config.manifest_path = manifest
    # Watcher producer: `dbt source freshness`, then one `dbt build` (dbt CLI of this environment).
    execution = ExecutionConfig(
        execution_mode=mode,
        invocation_mode=invocation_mode(mode),
        dbt_executable_path=dbt_executable(),
        setup_operator_args=(
            {"freshness_callback": skip_dependents_of_stale_sources} if mode is ExecutionMode.WATCHER else None
        ),
    )
    operator_args: dict[str, Any] = {"install_deps": False, "emit_datasets": False}

    sources = SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS if source_freshness else SourceRenderingBehavior.NONE
    dag_id = dag_id or f"{source.name}_dbt"
    with DAG(
        dag_id=dag_id,
        description=f"dbt marts of {source.name} (Cosmos), refreshed when its raw tables change",
        schedule=published_asset(source),
        start_date=datetime.fromisoformat(source.start_date),
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(source),
        tags=["dbt", "cosmos", "snowflake", f"source:{source.name}", *source.tags],
        doc_md=_doc_md(source, project, mode, doc_md, source_freshness),
        dagrun_timeout=timedelta(hours=2),
        on_failure_callback=run_failure_summary(source),
        # a run that succeeds resolves the dbt DAG's own incidents (its failures report as part -<dag_id>)
        on_success_callback=run_success_callback(source),
        # dbt_deadline, else the source's deadline (off under dag.test(): alerts.callbacks.deadlines_enabled).
        **({"deadline": deadline} if (deadline := source_deadline_alert(source, dag_id)) else {}),
    ) as dag:
        DbtTaskGroup(
            group_id="dbt",
            project_config=project_config,
            profile_config=profile,
            execution_config=execution,
            render_config=RenderConfig(
                load_method=LoadMode.DBT_MANIFEST,
                test_behavior=TestBehavior.AFTER_EACH,
                # sources with a freshness threshold become tasks upstream of their models
                source_rendering_behavior=sources,
            ),
            operator_args=operator_args,
            default_args=_default_args(source),
        )
        if mode is ExecutionMode.WATCHER:
            _consumers_after_producer(dag)
    return dag


def _consumers_after_producer(dag: DAG) -> None:
    """Watcher mode: one producer task runs `dbt build`; every model/test task is a sensor that
    reports its node's result from the producer's XComs.

    Cosmos runs the sensors *alongside* the producer inside a task group. Here they run after it
    (``none_failed``), which keeps every outcome exact and works with any executor, including the
    serial ``dag.test()`` (where a sensor started first would wait forever for a producer that
    never gets its turn):

    * producer succeeded -> each sensor reads its node's status (all passed: dbt build exits 0);
    * producer failed (a model or test failed) -> sensors are upstream_failed, the run fails, the
      producer's log names the node, its failure callback alerts;
    * producer retried -> Cosmos skips the retry by design, and the sensors fall back to running
      their own node (`dbt run` / `dbt test --select <node>`), so a retry still rebuilds exactly
      what failed, with per-node tasks;
    * a source past its freshness error threshold -> its models are left out of the build
      (skip_dependents_of_stale_sources), its own task fails, their tasks are upstream_failed.
    """
    from cosmos.operators._watcher.base import BaseConsumerSensor

    producers = [t for t in dag.tasks if t.task_id.split(".")[-1] == "dbt_producer_watcher"]
    if len(producers) != 1:
        raise RuntimeError(f"expected one Cosmos watcher producer in {dag.dag_id}, found {len(producers)}")
    producer = producers[0]
    for task in dag.tasks:
        if isinstance(task, BaseConsumerSensor):
            task.trigger_rule = TriggerRule.NONE_FAILED
            if producer.task_id not in task.upstream_task_ids:
                producer >> task
