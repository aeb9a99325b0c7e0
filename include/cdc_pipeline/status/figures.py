"""Figures of the CDC status page (plugins/cdc_status.py), kept in Airflow's metadata DB.

A page view must cost no warehouse query (a Snowflake warehouse bills a minute when it wakes),
so the CDC tasks and the ``cdc_health`` DAG write what the page shows as they go, and the page
reads only those records (plus Airflow's own DAG, run and task-instance rows):

- ``cdc_status__<source>__<table>`` (JSON Variable, written by the table's ``plan`` and ``apply``):
  capture instance, replication lag, the last batch and one point per DAG run (lag, rows loaded,
  duration) for the charts, bounded to ``HISTORY`` and ``MAX_POINTS``;
- ``cdc_runs__<source>__<table>`` (``orchestration.run_record``): the failure streak;
- ``cdc_health__<source>`` (written by ``cdc_health``): the latest check of each table (freshness,
  retention headroom) and of the capture job;
- ``cdc_incidents__<source>`` (written by the incident desk, include/cdc_pipeline/alerts/desk.py):
  the open incidents, shown at the top of the page with their age and affected tables.

Why Variables: the tasks already keep their hint and run record there (no new table, no schema
migration of Airflow's database, nothing extra to deploy on Astronomer); one small JSON value per
table is one row the page reads by key prefix. XCom would tie the figures to task instances (a
cleared task loses them, history depends on ``airflow db clean``).

Replication lag = source commit time of the newest change captured when the run started (the
run's LSN cut) − source commit time of the newest change applied to Snowflake. Both times are on
the source's clock, so the difference is exact. A table with nothing new has lag 0.

This module is free of Airflow: recording takes any JSON store (a Variable in the DAG), and the
page model is built from plain dicts the plugin reads from the metadata DB. Reading those rows and
serving the page is ``status.app``'s job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from include.cdc_pipeline import lsn as lsnlib
from include.cdc_pipeline.alerts import incidents as incidents_model
from include.cdc_pipeline.alerts.messages import runbook_anchor as runbook_anchor  # the page's links and app.py
from include.cdc_pipeline.alerts.state import ALL_SOURCES, LEDGER_PREFIX, ledger_key
from include.cdc_pipeline.config import SourceConfig, TableConfig
from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.offsets import HintStore
from include.cdc_pipeline.planner import Window
from include.cdc_pipeline.source import CdcSource

log = logging.getLogger(__name__)

HISTORY = timedelta(days=7)
MAX_POINTS = 2100  # a week of runs every 5 minutes (2016), with some slack
STATES = ("flowing", "snapshotting", "idle", "failing", "stopped", "no runs yet")
RANGES = {"day": timedelta(days=1), "week": timedelta(days=7)}
STATUS_PREFIX, RUNS_PREFIX, HEALTH_PREFIX = "cdc_status__", "cdc_runs__", "cdc_health__"
INCIDENTS_PREFIX = LEDGER_PREFIX  # cdc_incidents__<source>: the incident desk's ledger (alerts.state)


def status_key(source: str, table: str | None = None) -> str:
    """The Variable of one table's figures, or (no table) of the source's latest plan."""
    return f"{STATUS_PREFIX}{source}__{table}" if table is not None else f"{STATUS_PREFIX}{source}"


def health_key(source: str) -> str:
    return f"{HEALTH_PREFIX}{source}"


# -- recording (the CDC tasks) ----------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(later: str | None, earlier: str | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round(max((datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds(), 0.0), 3)


def _with_point(record: dict[str, Any], run_id: str, point: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The record's points with this run's point added or updated (one point per DAG run), bounded."""
    points = [p for p in record.get("points") or [] if p.get("run_id") != run_id]
    previous: dict[str, Any] = next((p for p in record.get("points") or [] if p.get("run_id") == run_id), {})
    points.append({**previous, **point, "run_id": run_id})
    since = (now - HISTORY).isoformat()
    points = [p for p in points if p["at"] >= since]
    return sorted(points, key=lambda p: p["at"])[-MAX_POINTS:]


def record_plan(
    store: HintStore,
    window: Window,
    cut: str | None,
    run_id: str,
    source: CdcSource,
    now: datetime | None = None,
) -> dict[str, Any]:
    """After ``plan``: the lag when the run started. Commit times come from the source's
    ``cdc.lsn_time_mapping`` (two SQL Server lookups when the table has work, none when idle)."""

    def lsn_time(value: str) -> datetime | None:
        return source.lsn_to_time(lsnlib.Lsn.from_hex(value))

    now = now or datetime.now(UTC)
    record = dict(store.get() or {})
    if window.mode == "idle":
        # Nothing of this table after its position up to the cut: everything captured is applied.
        captured = applied = record.get("applied_through")
        lag: float | None = 0.0
    else:
        upper = cut or window.upper
        captured = _iso(lsn_time(upper)) if upper else None
        applied = _iso(lsn_time(window.lower)) if window.mode == "stream" and window.lower else None
        lag = _seconds(captured, applied)
    record.update(
        capture_instance=window.capture_instance,
        run_id=run_id,
        step="plan",
        mode=window.mode,
        observed_at=now.isoformat(),
        captured_through=captured,
        applied_through=applied,
        lag_s=lag,
    )
    point = {"at": now.isoformat(), "lag_s": lag, "rows": 0, "duration_s": None, "mode": window.mode}
    record["points"] = _with_point(record, run_id, point, now)
    store.set(record)
    return record


def record_source_plan(
    store: HintStore, plan: Any, captured_through: str | None, run_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """After ``plan``: the run's plan of every table, in one record for the source (written by the
    one planning task). Idle tables are only named here: their figures stay in their own record,
    untouched (no write per idle table and run), and the page and the health checks read them as
    "idle, checked at" this plan (``with_source_plan``)."""
    record = {
        "run_id": run_id,
        "checked_at": plan.checked_at,
        "recorded_at": (now or datetime.now(UTC)).isoformat(),
        "cut": plan.cut,
        "captured_through": captured_through,
        "modes": dict(plan.modes),
        "idle": sorted(p.table for p in plan.tables if p.mode == "idle"),
        "work": {p.table: {"mode": p.mode, "error": p.error} for p in plan.work},
    }
    store.set(record)
    return record


def with_source_plan(
    table: str, status: Mapping[str, Any] | None, run: Mapping[str, Any] | None, plan: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A table's figures and run record as of the source's latest plan: a table that plan found
    idle completed that run (its failure streak ends) with nothing to apply (lag 0, checked at the
    plan's time), whatever its own, older records say."""
    status, run = dict(status or {}), dict(run) if run else None
    if not plan or table not in (plan.get("idle") or []):
        return status, run
    checked = str(plan.get("checked_at") or "")
    if checked > str(status.get("observed_at") or ""):
        status.update(
            run_id=plan.get("run_id"),
            step="plan",
            mode="idle",
            observed_at=checked,
            captured_through=status.get("applied_through"),
            lag_s=0.0 if status.get("applied_through") or status.get("last_batch") else status.get("lag_s"),
        )
    last = max(str((run or {}).get("succeeded_at") or ""), str((run or {}).get("failed_at") or ""))
    if checked > last:
        run = {**(run or {}), "succeeded_at": checked, "succeeded_run": plan.get("run_id"), "failed_runs": 0}
    return status, run


def record_apply(
    store: HintStore, batch: Batch, result: Mapping[str, Any], run_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """After ``apply``: the batch (as logged in CONTROL.CDC_BATCHES) and the lag it leaves."""
    now = now or datetime.now(UTC)
    record = dict(store.get() or {})
    extract_s = batch.timings.get("total_s")
    apply_s = result.get("apply_s")
    duration = round((extract_s or 0.0) + (apply_s or 0.0), 3)
    applied = batch.upper_committed_at
    # The run's cut is the newest captured change; a batch capped below it leaves lag behind.
    captured = record.get("captured_through") if record.get("run_id") == run_id else None
    captured = max(filter(None, [captured, applied]), default=None)
    lag = _seconds(captured, applied)
    record.update(
        capture_instance=batch.window.capture_instance,
        run_id=run_id,
        step="apply",
        mode=batch.window.mode,
        observed_at=now.isoformat(),
        captured_through=captured,
        applied_through=applied,
        lag_s=lag,
        last_batch={
            "run_id": run_id,
            "batch_id": batch.batch_id,
            "applied_at": now.isoformat(),
            "mode": batch.window.mode,
            "lower_lsn": batch.window.lower,
            "upper_lsn": batch.window.upper,
            "rows": batch.rows,
            "extract_s": extract_s,
            "apply_s": apply_s,
            "duration_s": duration,
            "rows_per_s": round(batch.rows / duration, 3) if duration else None,
            "credits": result.get("credits_used"),  # CDC_BATCHES.CREDITS_USED (None: history not readable)
            "upper_committed_at": applied,
            "reader": batch.reader or None,  # the driver that read it (a fallback says why)
        },
    )
    point = {"at": now.isoformat(), "rows": batch.rows, "duration_s": duration, "mode": batch.window.mode,
             "credits": result.get("credits_used")}  # fmt: skip
    if batch.window.mode == "snapshot":
        point["lag_s"] = None  # a first load has no earlier position to lag behind
    record["points"] = _with_point(record, run_id, point, now)
    store.set(record)
    return record


def snapshot_progress(snapshot: Any, progress: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A snapshot's progress as the task log and the status page show it: chunks done / total,
    rows, rate and ETA (the rate of the chunks so far, over the time since the first was claimed)."""
    now = now or datetime.now(UTC)
    first = progress.get("first_claimed")
    elapsed = (now.replace(tzinfo=None) - first).total_seconds() if isinstance(first, datetime) else None
    rate = progress["rows"] / elapsed if elapsed and elapsed > 0 else None
    left = progress["chunks"] - progress["done"]
    per_chunk = progress["rows"] / progress["done"] if progress["done"] else None
    eta = left * per_chunk / rate if rate and per_chunk is not None else None
    text = (
        f"{snapshot.snapshot_id}: {progress['done']}/{progress['chunks']} chunks, {progress['rows']:,} rows"
        + (f", {rate:,.0f} rows/s" if rate else "")
        + (f", ETA {eta:.0f} s" if eta is not None and left else "")
    )
    return {
        "snapshot_id": snapshot.snapshot_id,
        "kind": snapshot.kind,
        "state": "running" if left else "finalizing",
        "snapshot_lsn": snapshot.snapshot_lsn,
        "chunks": progress["chunks"],
        "done": progress["done"],
        "rows": progress["rows"],
        "rows_per_s": round(rate, 1) if rate else None,
        "eta_s": round(eta) if eta is not None and left else None,
        "text": text,
    }


def record_snapshot(store: HintStore, line: Mapping[str, Any], run_id: str, now: datetime | None = None) -> None:
    """A snapshot worker's progress of the table (or its completion), for the status page. Workers
    of one table write the same record, each what the control table held when it read it; a line
    read before another worker's later write (fewer chunks done, or the snapshot already recorded
    done by the worker that finalized it) is dropped, so the record never goes back."""
    now = now or datetime.now(UTC)
    record = dict(store.get() or {})
    shown = record.get("snapshot") or {}
    later = shown.get("state") == "done" or int(shown.get("done") or 0) > int(line.get("done") or 0)
    if line.get("state") != "done" and shown.get("snapshot_id") == line.get("snapshot_id") and later:
        return
    record["snapshot"] = {**{k: v for k, v in line.items() if k != "text"}, "observed_at": now.isoformat(),
                          "run_id": run_id}  # fmt: skip
    if line.get("state") == "done":  # the snapshot's batch, as CONTROL.CDC_BATCHES logs it
        seconds = float(line.get("seconds") or 0.0)
        record["last_batch"] = {
            "run_id": run_id,
            "batch_id": line.get("snapshot_id"),
            "applied_at": now.isoformat(),
            "mode": "snapshot",
            "lower_lsn": None,
            "upper_lsn": line.get("snapshot_lsn"),
            "rows": line.get("rows"),
            "extract_s": seconds,
            "apply_s": 0.0,
            "duration_s": round(seconds, 3),
            "rows_per_s": round(float(line.get("rows") or 0) / seconds, 3) if seconds else None,
            "upper_committed_at": None,
            "reader": "pymssql",
        }
        point = {"at": now.isoformat(), "rows": line.get("rows"), "duration_s": round(seconds, 3),
                 "mode": "snapshot", "lag_s": None}  # fmt: skip
        record["points"] = _with_point(record, run_id, point, now)
    store.set(record)


def health_summary(source: str, checks: Iterable[Any], now: datetime | None = None) -> dict[str, Any]:
    """The latest ``cdc_health`` round of one source, per table and check (the page's freshness,
    retention headroom and capture-job figures)."""
    tables: dict[str, dict[str, Any]] = {}
    capture: dict[str, Any] | None = None
    for c in checks:
        figure = {k: getattr(c, k) for k in ("status", "value", "threshold", "unit", "detail")}
        if c.table is None:
            capture = figure if c.check == "capture_job" else capture
        else:
            tables.setdefault(c.table, {})[c.check] = figure
    return {
        "source": source,
        "checked_at": (now or datetime.now(UTC)).isoformat(),
        "capture_job": capture,
        "tables": tables,
    }


# -- the page model (the plugin) --------------------------------------------------------------------
RUNBOOK = {  # docs/runbook.md headings the page links to, by what the row shows
    "failing": "Task failed (errors by cause)",
    "failing_runs": "Table keeps failing (`failing_runs` alert)",
    "stopped": "Table stuck (`stuck_run` warn)",
    "late": "Freshness SLA missed (`freshness` alert)",
    "retention": "Retention headroom low (`retention_headroom` warn / alert)",
    "capture": "Capture job stalled (`capture_job` alert)",
    "snapshotting": "Snapshot stalled (`snapshot` warn)",
    "ok": "On-call runbook: CDC → Snowflake alerts",
}


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _table_state(
    source: SourceConfig,
    table: TableConfig,
    status: Mapping[str, Any] | None,
    run: Mapping[str, Any] | None,
    paused: bool | None,
    now: datetime,
) -> tuple[str, str]:
    if run and int(run.get("failed_runs") or 0) >= 1:
        return "failing", f"failed {run['failed_runs']} DAG run(s) in a row: {run.get('last_error', '')}"
    if not status and not run:
        return "no runs yet", "the CDC DAG has not run this table yet"
    if paused is None:
        return "stopped", f"DAG {source.dag_id} is not in Airflow's database (not parsed yet, or removed)"
    if paused:
        return "stopped", f"DAG {source.dag_id} is paused: no run will start"
    snapshot = (status or {}).get("snapshot") or {}
    if snapshot.get("state") in ("running", "finalizing"):
        # Its stream goes on beside the chunks; the page says how far the chunks are.
        # under a minute in seconds, as the task log says it (whole minutes would read "ETA 0 min")
        eta_s = snapshot.get("eta_s")
        eta = "" if not eta_s else f", ETA {eta_s} s" if eta_s < 60 else f", ETA {round(eta_s / 60)} min"
        return "snapshotting", (
            f"{snapshot.get('kind') or 'snapshot'} in chunks: {snapshot.get('done')}/{snapshot.get('chunks')} done, "
            f"{snapshot.get('rows') or 0:,} rows{eta}; the stream runs beside it"
        )
    completed = _parse((run or {}).get("succeeded_at"))
    if completed is not None and now - completed > source.stuck_after:
        return "stopped", f"no completed run since {completed:%Y-%m-%d %H:%M} UTC (over {source.stuck_after})"
    applied = _parse(((status or {}).get("last_batch") or {}).get("applied_at"))
    window = max(source.setting(table, "freshness_sla"), timedelta(hours=1))
    if applied is not None and now - applied <= window:
        return "flowing", f"changes applied at {applied:%H:%M} UTC"
    return "idle", "runs complete; no new changes to apply"


def _freshness(sla: timedelta, lag: float | None, health: Mapping[str, Any] | None) -> dict[str, Any]:
    figure = {"sla_s": sla.total_seconds(), "status": "unknown", "basis": "no lag measured yet"}
    if lag is not None:
        late = lag > sla.total_seconds()
        figure.update(status="late" if late else "ok", basis="lag at the last run")
    if health and health.get("status") in ("warn", "alert"):
        figure.update(status="late", basis=f"cdc_health: {health.get('detail')}")
    return figure


def _retention(health: Mapping[str, Any] | None, checked_at: str | None) -> dict[str, Any] | None:
    if not health:
        return None
    return {
        "headroom_min": health.get("value"),
        "status": health.get("status"),
        "checked_at": checked_at,
        "detail": health.get("detail"),
    }


def _links(
    source: SourceConfig, table: TableConfig, last_ti: Mapping[str, Any] | None, topics: Sequence[str]
) -> dict[str, Any]:
    # Relative to the page (<base_url>/cdc-status/): keeps working behind a base_url prefix.
    dag = source.dag_id
    log_link = None
    if last_ti:
        mapped = last_ti.get("map_index", -1)
        log_link = (
            f"../dags/{dag}/runs/{_quote(last_ti['run_id'])}/tasks/{_quote(last_ti['task_id'])}"
            + (f"/mapped/{mapped}" if mapped is not None and mapped >= 0 else "")
            + f"?try_number={last_ti.get('try_number') or 1}"
        )
    topic = next((t for t in topics if t in RUNBOOK), "ok")
    return {
        # the table's tasks are mapped instances of the group "tables", named by table
        "task_group": f"../dags/{dag}/tasks/group/tables",
        "table": table.name,
        "last_log": log_link,
        "last_task": last_ti,
        "runbook": f"runbook#{runbook_anchor(RUNBOOK[topic])}",
    }


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def table_row(
    source: SourceConfig,
    table: TableConfig,
    status: Mapping[str, Any] | None,
    run: Mapping[str, Any] | None,
    health: Mapping[str, Any] | None,
    paused: bool | None,
    last_ti: Mapping[str, Any] | None,
    now: datetime,
    since: datetime,
) -> dict[str, Any]:
    status = status or {}
    state, reason = _table_state(source, table, status, run, paused, now)
    checks = ((health or {}).get("tables") or {}).get(table.name) or {}
    freshness = _freshness(source.setting(table, "freshness_sla"), status.get("lag_s"), checks.get("freshness"))
    retention = _retention(checks.get("retention_headroom"), (health or {}).get("checked_at"))
    failed = int((run or {}).get("failed_runs") or 0)
    # The runbook section for the row's most pressing finding.
    topics = [
        *(["failing_runs"] if failed >= source.failing_runs_alert else []),
        state,
        *(["retention"] if retention and retention["status"] in ("warn", "alert") else []),
        *(["late"] if freshness["status"] == "late" else []),
    ]
    t = source.target
    return {
        "name": table.name,
        "source_table": f"{table.source_schema}.{table.table}",
        "raw_table": f"{t.database}.{t.raw_schema}.{table.snowflake_table}",
        "capture_instance": status.get("capture_instance") or table.capture_instance,
        "state": state,
        "state_reason": reason,
        "lag_s": status.get("lag_s"),
        "captured_through": status.get("captured_through"),
        "applied_through": status.get("applied_through"),
        "observed_at": status.get("observed_at"),
        "last_run": status.get("run_id"),
        "last_batch": status.get("last_batch"),
        "snapshot": status.get("snapshot"),
        "freshness": freshness,
        "retention": retention,
        "failures": {
            "streak": failed,
            "alert_at": source.failing_runs_alert,
            "since": (run or {}).get("failing_since") if failed else None,
            "last_error": (run or {}).get("last_error") if failed else None,
            "last_success": (run or {}).get("succeeded_at"),
        },
        "links": _links(source, table, last_ti, topics),
        "points": [p for p in status.get("points") or [] if (_parse(p.get("at")) or now) >= since],
    }


def source_view(
    source: SourceConfig,
    records: Mapping[str, Any],
    dag: Mapping[str, Any] | None,
    last_tis: Mapping[str, Any],
    dag_runs: Sequence[Mapping[str, Any]],
    now: datetime,
    since: datetime,
) -> dict[str, Any]:
    """One source: summary, one row per configured table, and its DAG runs in the chart range.

    ``records`` maps Variable keys to their JSON values; ``dag`` is the DAG's row (``is_paused``),
    None when Airflow does not know it; ``last_tis`` the latest task instance per table."""
    health = records.get(health_key(source.name))
    paused = None if dag is None else bool(dag.get("is_paused"))
    plan = records.get(status_key(source.name))
    rows = []
    for table in source.tables:
        status, run = with_source_plan(
            table.name,
            records.get(status_key(source.name, table.name)),
            records.get(f"{RUNS_PREFIX}{source.name}__{table.name}"),
            plan,
        )
        rows.append(table_row(source, table, status, run, health, paused, last_tis.get(table.name), now, since))
    per_run: dict[str, dict[str, int]] = {}
    for row in rows:
        for p in row["points"]:
            per_run.setdefault(p["run_id"], {})[row["name"]] = int(p.get("rows") or 0)
    runs = [
        {**r, "rows": per_run.get(r["run_id"], {})}
        for r in sorted(dag_runs, key=lambda r: r.get("start") or "")
        if (_parse(r.get("start")) or now) >= since
    ]
    lags = [r["lag_s"] for r in rows if r["lag_s"] is not None]
    batches = [r["last_batch"] for r in rows if r["last_batch"]]
    return {
        "name": source.name,
        "incidents": incident_rows(source.name, records.get(ledger_key(source.name)), now),
        "dag_id": source.dag_id,
        "description": source.description,
        "schedule": source.schedule,
        "paused": paused,
        "dag_link": f"../dags/{source.dag_id}",
        "summary": {
            "tables": len(rows),
            "states": {s: sum(1 for r in rows if r["state"] == s) for s in STATES},
            "max_lag_s": max(lags) if lags else None,
            "rows_in_range": sum(sum(r["rows"].values()) for r in runs),
            "last_batch_at": max((b["applied_at"] for b in batches), default=None),
            "capture_job": (health or {}).get("capture_job"),
            "health_checked_at": (health or {}).get("checked_at"),
        },
        "tables": rows,
        "runs": runs,
    }


def page(
    sources: Sequence[SourceConfig],
    records: Mapping[str, Any],
    dags: Mapping[str, Mapping[str, Any]],
    last_tis: Mapping[str, Mapping[str, Any]],
    dag_runs: Mapping[str, Sequence[Mapping[str, Any]]],
    range_name: str = "day",
    now: datetime | None = None,
    config_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The status page's data: every source the user may read, with its tables and runs."""
    now = now or datetime.now(UTC)
    since = now - RANGES[range_name]
    views = [
        source_view(s, records, dags.get(s.dag_id), last_tis.get(s.dag_id, {}), dag_runs.get(s.dag_id, []), now, since)
        for s in sources
    ]
    shared = incident_rows(ALL_SOURCES, records.get(ledger_key(ALL_SOURCES)), now)  # cdc_health, cdc_preflight
    return {
        "generated_at": now.isoformat(),
        "range": range_name,
        "since": since.isoformat(),
        "states": list(STATES),
        "config_errors": list(config_errors),
        # every open incident of the sources shown, oldest first: the top of the page
        "incidents": sorted([*(i for v in views for i in v["incidents"]), *shared], key=lambda i: i["opened_at"]),
        "sources": views,
    }


def incident_rows(source: str, ledger: Mapping[str, Any] | None, now: datetime) -> list[dict[str, Any]]:
    """The open incidents of a source's ledger (``cdc_incidents__<source>``, written by the incident
    desk): cause, age, the tables (or parts) it affects and their state, links."""
    rows = []
    for incident in incidents_model.open_incidents(ledger):
        opened = _parse(incident.get("opened_at")) or now
        tables = [
            {"name": name, "label": incidents_model.label(name), **{k: state.get(k) for k in ("state", "since")}}
            for name, state in sorted(incident.get("tables", {}).items())
        ]
        rows.append(
            {
                "id": incident["id"],
                "source": source,
                "title": incident.get("title"),
                "kind": incident.get("kind"),
                "opened_at": incident.get("opened_at"),
                "age_s": round((now - opened).total_seconds(), 1),
                "notified_at": incident.get("notified_at"),
                "tables": tables,
                "failing": [t["label"] for t in tables if t["state"] == incidents_model.FAILING],
                "log_url": incident.get("log_url"),
                "where": incident.get("where"),
                "runbook": f"runbook#{runbook_anchor(incident.get('runbook') or RUNBOOK['ok'])}",
            }
        )
    return rows
