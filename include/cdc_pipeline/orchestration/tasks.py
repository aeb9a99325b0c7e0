"""The task callables of the CDC DAG (``plan``, per table with work ``extract_load`` / ``apply``,
``publish``), imported inside the tasks by ``cdc_dag``.

``plan_source`` plans every table of the source in one task (``source_plan``): it reads the run's
LSN cut, decides per table, keeps the source-wide state and returns the work items the table
tasks are mapped over: idle tables get no task instance. The table tasks build a
``TablePipeline`` with connections from the source config's connection ids (the mssql and
Snowflake providers' hooks) and call one of its steps.

Airflow state kept here, all in JSON Variables (``VariableStore``): per source, the hints of every
table and the latest plan (written once per run by ``plan``, the only writer); per table, the
hint an ``apply`` leaves, the run record (``run_record``: last success, failure streak) and the
status page figures (``status.figures``), written only by that table's own tasks; the salt
Variable is read here too. ``fail_fast`` turns the errors no retry can fix (``NOT_RETRYABLE``) into
an immediate task failure.

Not here: the replication logic (``pipeline`` and the modules it composes, Airflow-free), the
DAG's shape (``cdc_dag``), the alert texts and callbacks (``alerts``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

from include.cdc_pipeline import native
from include.cdc_pipeline.alerts import classify
from include.cdc_pipeline.config import ChangeReader, SourceConfig, TableConfig, load_source_config
from include.cdc_pipeline.errors import (
    ConfigError,
    DriverLoadError,
    RetentionGapError,
    SchemaDriftError,
    SnapshotStarted,
    SourceRewoundError,
    TableConfigError,
    TableNotCapturedError,
    UnsupportedTypeError,
)
from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import HintStore
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
    """Turn the errors no retry can fix into ``AirflowFailException`` (the cause stays chained):
    ``NOT_RETRYABLE``, and the driver and server errors ``alerts.classify`` names (login failed,
    permission denied, database not accessible, object not found, by SQL Server / Snowflake number)."""
    try:
        yield
    except Exception as exc:
        verdict = classify.not_retryable(exc, NOT_RETRYABLE)
        if verdict is None:
            raise
        from airflow.sdk.exceptions import AirflowFailException

        if isinstance(exc, NOT_RETRYABLE):
            raise AirflowFailException(f"{type(exc).__name__} ({NOT_RETRYABLE_NOTE}): {exc}") from exc
        what = f"{NOT_RETRYABLE_NOTE}: {verdict.meaning}"
        raise AirflowFailException(f"{type(exc).__name__} ({what}): {classify.error_info(exc).text}") from exc


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
    def source_hints(cls, source: str) -> VariableStore:
        return cls(f"cdc_state__{source}", "CDC hints of every table of the source (safe to delete)")

    @classmethod
    def source_status(cls, source: str) -> VariableStore:
        return cls(figures.status_key(source), "CDC status page: the source's latest plan (safe to delete)")

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


def build_pipeline(config_path: str, table_name: str, hints: HintStore | None = None) -> TablePipeline:
    """A table's pipeline on the source config's connections; its hint is ``TableHint`` unless
    the caller keeps hints itself (the plan task: the source's record)."""
    source = _config(config_path)
    table = _table(source, table_name)

    def open_source() -> CdcSource:
        hook = MsSqlHook(mssql_conn_id=source.mssql_conn_id)
        return CdcSource(hook.get_conn(), lambda: change_reader_connect(hook, source.change_reader_options))

    store = hints if hints is not None else TableHint(source.name, table.name)
    return TablePipeline(source, table, open_source, lambda: _warehouse(source), store, read_salt)


class TableHint:
    """A table task's hint: the newer of the table's own Variable (what its last ``apply`` left)
    and its entry in the source's hints (what the last ``plan`` left); written to the table's own
    Variable, never to the source's, which only ``plan`` writes (table tasks run concurrently)."""

    def __init__(self, source: str, table: str) -> None:
        self.own = VariableStore.hint(source, table)
        self.source_store, self.table = VariableStore.source_hints(source), table

    def get(self) -> dict[str, Any] | None:
        from include.cdc_pipeline.source_plan import newer_hint

        shared = ((self.source_store.get() or {}).get("tables") or {}).get(self.table)
        return newer_hint(self.own.get(), shared)

    def set(self, value: dict[str, Any]) -> None:
        self.own.set(value)


def _wants_resnapshot(context: dict[str, Any], table: TableConfig) -> bool:
    requested = (context.get("params") or {}).get("resnapshot") or []
    return "*" in requested or table.name in requested or f"{table.source_schema}.{table.table}" in requested


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


def plan_source(config_path: str, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Read the run's LSN cut, plan every table (``source_plan``), start the snapshots it decided
    (``snapshot``), and return what the run's mapped table tasks work on: one item per table with a
    window or a planning error (idle tables get none), and one per snapshot worker while any table's
    snapshot has chunks left. Idle tables are recorded here (hint, status, completed run), in one
    Variable each for the whole source."""
    from include.cdc_pipeline import lsn as lsnlib
    from include.cdc_pipeline.source_plan import SourceHints, source_planner

    with fail_fast():
        source = _config(config_path)
    run_id = context["run_id"]
    opened: list[Warehouse] = []

    def open_warehouse() -> Warehouse:
        if not opened:
            opened.append(_warehouse(source))
        return opened[0]

    with fail_fast():  # a failed login, a permission denied: in the first try, for the whole source
        conn = MsSqlHook(mssql_conn_id=source.mssql_conn_id).get_conn()
        try:
            src = CdcSource(conn)
            max_lsn = src.max_lsn()
            cut = lsnlib.to_hex(max_lsn) if max_lsn else None
            names = [t.name for t in source.tables]
            hints = SourceHints(
                VariableStore.source_hints(source.name), lambda name: VariableStore.hint(source.name, name), names
            )
            plan = source_planner(source, src, open_warehouse, hints).plan(
                cut, lambda table: _wants_resnapshot(context, table)
            )
            if source.change_reader == ChangeReader.MSSQL_PYTHON and any(p.mode == "stream" for p in plan.work):
                native.check_mssql_python_loads()  # no fallback allowed: fail once, for every table
            captured_at = src.lsn_to_time(max_lsn) if max_lsn else None
            started, snapshotting, initial = _snapshots(config_path, source, plan, hints, max_lsn, open_warehouse)
        finally:
            conn.close()
            for wh in opened:
                wh.connection.close()
    work = [p for p in plan.work if p.mode != "snapshot"]  # (a started snapshot is worker work)
    hints.save({p.table for p in work} | set(snapshotting), run_id)
    captured = source.to_utc(captured_at) if captured_at else None
    _record_source_status(source, plan, captured.isoformat() if captured else None, run_id)
    log.info(
        "%s: planned %d tables up to LSN %s: %s; SQL Server statements: %d; Snowflake queries: %d; "
        "per-table hints read: %d",
        source.name,
        len(plan.tables),
        cut,
        ", ".join(f"{n} {mode}" for mode, n in sorted(plan.modes.items())),
        plan.source_statements + 2,
        opened[0].queries if opened else 0,
        hints.read_per_table,
    )
    for p in plan.work:
        log.info("%s.%s: %s", source.name, p.table, _plan_line(p))
    if started:
        log.info("%s: snapshots started (the stream goes on beside them): %s", source.name, ", ".join(started))
    items = [
        {"table": p.table, "window": p.window.as_dict() if p.window is not None else None, "error": p.error, "cut": cut}
        for p in work
    ]
    if snapshotting:
        # Snapshot workers are items of the same mapped group as the tables (Airflow maps a task
        # over one upstream return value): each its own task instance, on any Airflow worker.
        now = datetime.now(UTC)
        seconds = _snapshot_seconds(source, now)
        until = (now + timedelta(seconds=seconds)).isoformat()  # from now: a worker that waits for a slot has less
        log.info("%s: %d snapshot worker(s) for %s, taking chunks for up to %d s", source.name,
                 source.snapshot_workers, ", ".join(snapshotting), seconds)  # fmt: skip
        items += [
            {"table": f"snapshot worker {n}", "kind": "snapshot",
             "worker": {"worker": n, "tables": snapshotting, "until": until, "initial": initial}}
            for n in range(source.snapshot_workers)
        ]  # fmt: skip
    return items


def _snapshots(
    config_path: str,
    source: SourceConfig,
    plan: Any,
    hints: Any,
    cut: Any,
    open_warehouse: Callable[[], Warehouse],
) -> tuple[list[str], list[str], list[str]]:
    """Start the snapshots the plan decided (at the run's cut), then find every table whose
    snapshot still has work (from the tables' hints: no Snowflake query when none is). Returns
    (started, still snapshotting, of those the ones whose first load it is)."""
    from include.cdc_pipeline.offsets import TargetHints, hint_target
    from include.cdc_pipeline.snapshot import SnapshotStore

    started = []
    for p in plan.tables:
        if p.mode == "snapshot" and p.window is not None:
            try:
                view = TargetHints(hints.view(p.table), hint_target(source))
                build_pipeline(config_path, p.table, view).start_snapshot(p.window, cut)
                started.append(p.table)
            except Exception as exc:  # this table's own task plans (and starts) it again
                log.warning("%s.%s: starting its snapshot failed (%s)", source.name, p.table, exc)
                p.window, p.error, p.exception = None, " ".join(str(exc).split()), exc
    flagged = {name: hint["snapshot"] for name, hint in hints.hints.items() if hint.get("snapshot")}
    if not flagged:
        return started, [], []
    t = source.target
    store = SnapshotStore(open_warehouse, t.database, t.control_schema, source.name)
    active = [s for s in store.active(list(flagged)) if s.snapshot_id == flagged.get(s.table)]
    for name in set(flagged) - {s.table for s in active}:
        hints.hints[name].pop("snapshot", None)  # complete (or replaced): the table only streams now
    # Nobody works on them at the start of a run: what earlier, crashed workers held is free again.
    store.free([s.snapshot_id for s in active])
    return started, sorted(s.table for s in active), sorted(s.table for s in active if s.kind == "initial")


def _snapshot_seconds(source: SourceConfig, now: datetime) -> int:
    """How long a run's snapshot workers take chunks: ``snapshot_run_seconds``, within the source's
    Deadline Alert (a snapshot must not make every run late), and ending before the schedule's next
    run is due: that run (its stream) starts on time, or later by the one chunk a worker finishes."""
    seconds = source.snapshot_run_seconds
    if source.deadline is not None:
        seconds = min(seconds, max(30, int(source.deadline.total_seconds() * 0.6)))
    due = _next_run_in(source.schedule, now)
    if due is not None:
        seconds = min(seconds, max(30, int(due * 0.8)))
    return seconds


def _next_run_in(schedule: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` to the schedule's next tick (cron or @preset, parsed by croniter, the
    parser Airflow's cron timetables use, in Airflow's default time zone as the DAG's schedule is);
    None for manual runs or a schedule without ticks."""
    from airflow.settings import TIMEZONE
    from croniter import croniter  # type: ignore[import-untyped]

    if not schedule or not croniter.is_valid(schedule):
        return None
    local = now.astimezone(TIMEZONE)
    following: datetime = croniter(schedule, local).get_next(datetime)
    return (following - local).total_seconds()


def snapshot_worker(config_path: str, worker: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """One snapshot worker of this run: split, claim, load and finalize chunks of the source's
    snapshotting tables until none is left or its time is up (``snapshot.run_workers``); several
    run at once, on as many Airflow workers as the pool allows."""
    from include.cdc_pipeline.snapshot import SnapshotStore, SnapshotWork, run_workers

    source = _config(config_path)
    number = worker["worker"]
    _name_map_index(f"snapshot worker {number}")
    try:  # the tables a failure of this worker affects (alerts.desk: incidents name them)
        from airflow.sdk import get_current_context

        get_current_context()["cdc_tables"] = list(worker["tables"])  # type: ignore[typeddict-unknown-key]
    except Exception:  # outside a task
        log.debug("no task context for the worker's tables", exc_info=True)
    owner = f"{context['run_id']}#{number}"
    t = source.target
    opened: list[Warehouse] = []

    def open_warehouse() -> Warehouse:
        if not opened:
            opened.append(_warehouse(source))
        return opened[0]

    store = SnapshotStore(open_warehouse, t.database, t.control_schema, source.name)
    works = {name: SnapshotWork(build_pipeline(config_path, name), store) for name in worker["tables"]}

    def on_chunk(snapshot: Any, progress: dict[str, Any]) -> None:
        line = figures.snapshot_progress(snapshot, progress)
        log.info("%s.%s: snapshot %s", source.name, snapshot.table, line["text"])
        _record_status(figures.record_snapshot, config_path, snapshot.table, line, context["run_id"])

    try:
        with fail_fast():
            left = (datetime.fromisoformat(worker["until"]) - datetime.now(UTC)).total_seconds()
            # one chunk at least, however late the worker started: the snapshot always progresses
            result = run_workers(works, store, owner, time.monotonic() + max(left, 1.0), on_chunk)
    except Exception as exc:
        for name in worker["tables"]:
            try:
                run_record.record_failure(_run_store(config_path, name), context["run_id"], exc)
            except Exception:
                log.warning("could not record the failure of %s in its run record", name, exc_info=True)
        raise
    for done in result["finished"]:
        _succeeded(config_path, done["table"], context)
        _record_status(figures.record_snapshot, config_path, done["table"], {**done, "state": "done"},
                       context["run_id"])  # fmt: skip
    result["initial_pending"] = sorted(
        {s.table for s in store.active(worker["initial"]) if s.kind == "initial"} if worker["initial"] else set()
    )
    log.info("%s: %s", owner, {k: v for k, v in result.items() if k != "finished"})
    return result


def _plan_line(p: Any) -> str:
    if p.window is None:
        return f"planning failed ({p.error}); its task plans it again"
    w = p.window
    return f"{w.mode} window ({w.lower}, {w.upper}] on {w.capture_instance}: {w.reason}"


def _record_source_status(source: SourceConfig, plan: Any, captured: str | None, run_id: str) -> None:
    """The source's plan for the status page and the health checks (best effort)."""
    try:
        figures.record_source_plan(VariableStore.source_status(source.name), plan, captured, run_id)
    except Exception:
        log.warning("could not record the plan of %s for the status page", source.name, exc_info=True)


def _warehouse(source: SourceConfig) -> Warehouse:
    from include.cdc_pipeline.snowflake import CdcSnowflakeHook

    return Warehouse(CdcSnowflakeHook(snowflake_conn_id=source.snowflake_conn_id).get_conn())


def _name_map_index(table_name: str, window: dict[str, Any] | None = None) -> None:
    """Name this mapped task instance by its table in the grid (``map_index_template``), and keep
    the table's window in the task's context for the failure callback's mail."""
    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
        context[MAP_INDEX_KEY] = table_name  # type: ignore[literal-required]
        if window is not None:
            context["cdc_window"] = window  # type: ignore[typeddict-unknown-key]
    except Exception:  # outside a task (tests calling the callables directly)
        log.debug("no task context to name the map index", exc_info=True)


MAP_INDEX_KEY = "cdc_table"


def extract_load_item(config_path: str, item: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """One table's work of this run: its planned window read into staging. A table whose planning
    failed in ``plan`` is planned here (a retry plans again; an error no retry fixes fails now)."""
    table_name = item["table"]
    if item.get("kind") == "snapshot":
        return {"table": table_name, "batch": None, "snapshot": snapshot_worker(config_path, item["worker"], context)}
    _name_map_index(table_name, item.get("window"))
    with _tracked(config_path, table_name, context):
        pipeline = build_pipeline(config_path, table_name)
        if item.get("window"):
            fields = {k: v for k, v in item["window"].items() if k in Window.__dataclass_fields__}
            window = Window(**fields)
        else:
            log.warning("%s: planning failed in the plan task (%s): planning it here", pipeline.label,
                        item.get("error"))  # fmt: skip
            window = pipeline.plan(resnapshot=_wants_resnapshot(context, pipeline.table), cut=item.get("cut"))
            _name_map_index(table_name, window.as_dict())
        log.info("%s: %s window (%s, %s] on %s: %s", pipeline.label, window.mode, window.lower, window.upper,
                 window.capture_instance, window.reason)  # fmt: skip
        if window.mode == "idle":
            _succeeded(config_path, table_name, context)
            return {"table": table_name, "batch": None}
        if window.mode == "snapshot":  # its chunks load from the next run on (the stream goes on)
            cut = item.get("cut")
            pipeline.start_snapshot(window, Lsn.from_hex(cut) if cut else None)
            return {"table": table_name, "batch": None}
        _record_status(figures.record_plan, config_path, table_name, window, item.get("cut"), context["run_id"],
                       pipeline.source)  # fmt: skip
        try:
            batch = pipeline.extract_load(window)
        except SnapshotStarted as started:  # the window was purged while read: re-snapshot (policy)
            log.warning("%s", started)
            return {"table": table_name, "batch": None}
    log.info(
        "%s: staged %d rows for window (%s, %s] (read with %s): %s",
        pipeline.label,
        batch.rows,
        batch.window.lower,
        batch.window.upper,
        batch.reader,
        batch.timings,
    )
    return {"table": table_name, "batch": batch.as_dict()}


def apply_item(config_path: str, staged: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    """MERGE one table's staged batch into raw and history, then advance its watermark; its raw
    table's Asset event goes out through the DAG's asset alias."""
    table_name = staged["table"]
    _name_map_index(table_name, (staged.get("batch") or {}).get("window"))
    if staged.get("snapshot") is not None:  # a snapshot worker: the tables whose snapshot it completed
        for done in staged["snapshot"]["finished"]:
            _emit_raw_asset(config_path, done["table"], context)
        return {"table": table_name, "snapshot": staged["snapshot"]}
    if staged.get("batch") is None:
        return None  # planned again in extract_load and found idle, or its snapshot started
    batch = Batch.from_dict(staged["batch"])
    with _tracked(config_path, table_name, context):
        pipeline = build_pipeline(config_path, table_name)
        result = pipeline.apply(batch)
    log.info("%s: applied %s", pipeline.label, result)
    _succeeded(config_path, table_name, context)
    _record_status(figures.record_apply, config_path, table_name, batch, result, context["run_id"])
    _emit_raw_asset(config_path, table_name, context)
    return result


def _emit_raw_asset(config_path: str, table_name: str, context: dict[str, Any]) -> None:
    from include.cdc_pipeline.orchestration.assets import raw_alias, raw_asset

    source = _config(config_path)
    events = context.get("outlet_events")
    if events is not None:
        events[raw_alias(source)].add(raw_asset(source, _table(source, table_name)))


def _record_status(record: Any, config_path: str, table_name: str, *args: Any) -> None:
    """Keep the status page's figures (include/cdc_pipeline/status/figures.py); best effort, never fails the task."""
    try:
        record(VariableStore.status(_config(config_path).name, table_name), *args)
    except Exception:
        log.warning("could not record the status page figures of %s", table_name, exc_info=True)


def publish_run(config_path: str, applied: list[dict[str, Any] | None], context: dict[str, Any]) -> dict[str, Any]:
    """After every table with work was applied up to the run's cut: succeed (emitting the source's
    Asset event) when some table changed, skip when nothing did (no event, the marts are not rebuilt)
    and while a table's first load is still in chunks (the marts would see part of it)."""
    from airflow.sdk.exceptions import AirflowSkipException

    snapshots = [result["snapshot"] for result in applied if result and result.get("snapshot")]
    changed = {result["table"] for result in applied if result and result.get("rows")}
    changed |= {done["table"] for result in snapshots for done in result.get("finished", [])}
    waiting = sorted({name for result in snapshots for name in result.get("initial_pending", [])})
    if waiting:
        raise AirflowSkipException(f"first load still in chunks for {', '.join(waiting)}: the marts wait for it")
    if not changed:
        raise AirflowSkipException("no table changed in this run, nothing to publish")
    names = sorted(changed)
    log.info("%s: published a consistent cut; changed tables: %s", _config(config_path).name, ", ".join(names))
    return {"changed_tables": names}
