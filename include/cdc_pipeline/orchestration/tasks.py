"""The task callables of the CDC DAG (``cut``, per table ``plan`` / ``extract_load`` / ``apply``,
``publish``), imported inside the tasks by ``cdc_dag``.

Each builds a ``TablePipeline`` with connections from the source config's connection ids (the
mssql and Snowflake providers' hooks) and calls one of its steps. Airflow state kept here, all in
JSON Variables (``VariableStore``): the per-table hint (so an idle poll costs no Snowflake query),
the run record (``run_record``: last success, failure streak) and the status page figures
(``status.figures``); the salt Variable is read here too. ``fail_fast`` turns the errors no retry
can fix (``NOT_RETRYABLE``) into an immediate task failure.

Not here: the replication logic (``pipeline`` and the modules it composes, Airflow-free), the
DAG's shape (``cdc_dag``), the alert texts and callbacks (``alerts``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

from include.cdc_pipeline.config import SourceConfig, TableConfig, load_source_config
from include.cdc_pipeline.errors import (
    ConfigError,
    DriverLoadError,
    RetentionGapError,
    SchemaDriftError,
    SourceRewoundError,
    TableConfigError,
    TableNotCapturedError,
    UnsupportedTypeError,
)
from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.orchestration import run_record
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.planner import Window
from include.cdc_pipeline.source import CdcSource, change_reader_connect
from include.cdc_pipeline.status import figures
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)
SALT_VARIABLE = "cdc_hash_salt_secret"

# Errors no retry can fix: a person must act, and each message names what to do. The task fails at
# once (AirflowFailException: no retry, so the failure callback mails within the first try) instead
# of paging ~3.5 minutes later after three retries with backoff. Every other error (network, a
# server restarting, a lock timeout, a COPY count mismatch) keeps its retries.
NOT_RETRYABLE: tuple[type[Exception], ...] = (
    RetentionGapError,  # raised only under retention_gap_policy: fail
    SourceRewoundError,
    SchemaDriftError,
    UnsupportedTypeError,
    TableNotCapturedError,
    TableConfigError,
    ConfigError,
    DriverLoadError,  # a native library is missing (change_reader: mssql-python; auto falls back to pymssql)
)
NOT_RETRYABLE_NOTE = "not retryable: a retry cannot fix this"


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn the errors of ``NOT_RETRYABLE`` into ``AirflowFailException`` (the cause stays chained)."""
    try:
        yield
    except NOT_RETRYABLE as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{type(exc).__name__} ({NOT_RETRYABLE_NOTE}): {exc}") from exc


@cache
def _config(path: str) -> SourceConfig:
    return load_source_config(Path(path))


def _table(source: SourceConfig, name: str) -> TableConfig:
    for table in source.tables:
        if table.name == name:
            return table
    raise KeyError(f"table {name!r} is not in source {source.name!r}")


class VariableStore:
    """A JSON Airflow Variable: the per-table hint (``cdc_state__<source>__<table>``) and run
    record (``cdc_runs__<source>__<table>``)."""

    def __init__(self, key: str, description: str) -> None:
        self.key, self.description = key, description

    @classmethod
    def hint(cls, source: str, table: str) -> VariableStore:
        return cls(f"cdc_state__{source}__{table}", "CDC hint (safe to delete: re-read from Snowflake)")

    @classmethod
    def runs(cls, source: str, table: str) -> VariableStore:
        return cls(f"cdc_runs__{source}__{table}", "CDC run record for the cdc_health DAG (safe to delete)")

    @classmethod
    def status(cls, source: str, table: str) -> VariableStore:
        return cls(figures.status_key(source, table), "CDC status page figures (safe to delete)")

    def get(self) -> dict[str, Any] | None:
        from airflow.sdk import Variable

        value = Variable.get(self.key, default=None, deserialize_json=True)
        return value if isinstance(value, dict) else None

    def set(self, value: dict[str, Any]) -> None:
        from airflow.sdk import Variable

        Variable.set(self.key, value, serialize_json=True, description=self.description)


def read_salt() -> str | None:
    """The salt, or None when unset (the pipeline then names the missing Variable)."""
    from airflow.sdk import Variable

    salt: str | None = Variable.get(SALT_VARIABLE, default=None)
    return salt


def build_pipeline(config_path: str, table_name: str) -> TablePipeline:
    source = _config(config_path)
    table = _table(source, table_name)

    def open_source() -> CdcSource:
        hook = MsSqlHook(mssql_conn_id=source.mssql_conn_id)
        return CdcSource(hook.get_conn(), lambda: change_reader_connect(hook, source.change_reader_options))

    def open_warehouse() -> Warehouse:
        from include.cdc_pipeline.snowflake import CdcSnowflakeHook

        return Warehouse(CdcSnowflakeHook(snowflake_conn_id=source.snowflake_conn_id).get_conn())

    return TablePipeline(
        source, table, open_source, open_warehouse, VariableStore.hint(source.name, table.name), read_salt
    )


def _wants_resnapshot(context: dict[str, Any], table: TableConfig) -> bool:
    requested = (context.get("params") or {}).get("resnapshot") or []
    return "*" in requested or table.name in requested or f"{table.source_schema}.{table.table}" in requested


def read_cut(config_path: str) -> str | None:
    """The run's LSN cut: the source's max LSN, read once so every table stops at the same point."""
    from include.cdc_pipeline import lsn as lsnlib

    with fail_fast():
        source = _config(config_path)
    conn = MsSqlHook(mssql_conn_id=source.mssql_conn_id).get_conn()
    try:
        max_lsn = CdcSource(conn).max_lsn()
    finally:
        conn.close()
    cut = lsnlib.to_hex(max_lsn) if max_lsn else None
    log.info("%s: this run reads every table up to LSN %s", source.name, cut)
    return cut


def _run_store(config_path: str, table_name: str) -> VariableStore:
    return VariableStore.runs(_config(config_path).name, table_name)


@contextmanager
def _tracked(config_path: str, table_name: str, context: dict[str, Any]) -> Iterator[None]:
    """Record a failure of the table's task in its run record (cdc_health's ``failing_runs``); an
    error no retry can fix fails the task at once (``fail_fast``)."""
    with fail_fast():
        try:
            yield
        except Exception as exc:
            try:
                run_record.record_failure(_run_store(config_path, table_name), context["run_id"], exc)
            except Exception:  # the task's own error is what matters
                log.warning("could not record the failure of %s in its run record", table_name, exc_info=True)
            raise


def _succeeded(config_path: str, table_name: str, context: dict[str, Any]) -> None:
    run_record.record_success(_run_store(config_path, table_name), context["run_id"])


def plan_table(config_path: str, table_name: str, context: dict[str, Any], cut: str | None = None) -> dict[str, Any]:
    with _tracked(config_path, table_name, context):
        pipeline = build_pipeline(config_path, table_name)
        window = pipeline.plan(resnapshot=_wants_resnapshot(context, pipeline.table), cut=cut)
    log.info(
        "%s: %s window (%s, %s] on %s: %s; Snowflake queries: %d",
        *(pipeline.label, window.mode, window.lower, window.upper, window.capture_instance, window.reason),
        pipeline.snowflake_queries,
    )
    if window.mode == "idle":
        _succeeded(config_path, table_name, context)
    _record_status(figures.record_plan, config_path, table_name, window, cut, context["run_id"], pipeline.source)
    return window.as_dict() | {"snowflake_queries": pipeline.snowflake_queries}


def _skip_if_idle(window: dict[str, Any]) -> None:
    if window["mode"] == "idle":
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("idle: no new changes for this table")


def extract_load_table(
    config_path: str, table_name: str, window: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any]:
    _skip_if_idle(window)
    with _tracked(config_path, table_name, context):
        pipeline = build_pipeline(config_path, table_name)
        fields = {k: v for k, v in window.items() if k in Window.__dataclass_fields__}
        batch = pipeline.extract_load(Window(**fields))
    log.info(
        "%s: staged %d rows for window (%s, %s]: %s",
        pipeline.label,
        batch.rows,
        batch.window.lower,
        batch.window.upper,
        batch.timings,
    )
    return batch.as_dict()


def apply_table(config_path: str, table_name: str, batch: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    _skip_if_idle(batch["window"])
    with _tracked(config_path, table_name, context):
        pipeline = build_pipeline(config_path, table_name)
        result = pipeline.apply(Batch.from_dict(batch))
    log.info("%s: applied %s", pipeline.label, result)
    _succeeded(config_path, table_name, context)
    _record_status(figures.record_apply, config_path, table_name, Batch.from_dict(batch), result, context["run_id"])
    return result


def _record_status(record: Any, config_path: str, table_name: str, *args: Any) -> None:
    """Keep the status page's figures (include/cdc_pipeline/status/figures.py); best effort, never fails the task."""
    try:
        record(VariableStore.status(_config(config_path).name, table_name), *args)
    except Exception:
        log.warning("could not record the status page figures of %s", table_name, exc_info=True)


def publish_run(config_path: str, table_names: list[str], context: dict[str, Any]) -> dict[str, Any]:
    """After every table of the run was applied: succeed (emitting the source's Asset event) when
    some table changed, skip when the whole run was idle (no event, the marts are not rebuilt)."""
    applied = context["ti"].xcom_pull(task_ids=[f"{name}.apply" for name in table_names])
    changed = sorted(name for name, result in zip(table_names, applied, strict=True) if result)
    if not changed:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("idle run: no table changed, nothing to publish")
    log.info("%s: published a consistent cut; changed tables: %s", _config(config_path).name, ", ".join(changed))
    return {"changed_tables": changed}
