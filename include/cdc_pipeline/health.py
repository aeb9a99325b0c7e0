"""CDC health checks: capture job alive, freshness per table, retention headroom, change-table size,
stuck or repeatedly failing table runs.

Plain functions over a `CdcSource` (SQL Server) and a `Warehouse` (Snowflake), so they are tested
against the emulator and the local Snowflake without Airflow. The ``cdc_health`` DAG
(include/cdc_pipeline/orchestration/health_dag.py) runs them, appends the figures to
``<db>.<control>.CDC_HEALTH``, and the incident desk (include/cdc_pipeline/alerts/desk.py) turns
anything not ``ok`` into incidents.

Time: ages are measured against the **source's clock** (``GETDATE()``), the clock that wrote
``cdc.lsn_time_mapping``, converted to UTC with the source's ``source_timezone`` -- the zone in which
the pipeline writes ``WATERMARK_COMMITTED_AT`` and ``_CDC_COMMITTED_AT``; Snowflake's ``UPDATED_AT``
is never mixed in. The run-record checks (stuck_run, failing_runs) compare the UTC times the CDC
tasks wrote with UTC now. Runbook for each check: docs/runbook.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from include.cdc_pipeline.config import SourceConfig, TableConfig
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import Watermark, ensure_control_table, read_watermark
from include.cdc_pipeline.snapshot import Snapshot, SnapshotStore
from include.cdc_pipeline.snowflake_sql import UTC_NOW
from include.cdc_pipeline.source import CaptureInstance, CdcSource
from include.cdc_pipeline.sql import sf_table
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

OK, WARN, ALERT, UNKNOWN = "ok", "warn", "alert", "unknown"
HEALTH_TABLE = "CDC_HEALTH"
HEALTH_COLUMNS = [
    ("CHECKED_AT", "TIMESTAMP_NTZ(6)"),  # UTC, when the check ran
    ("SOURCE_NAME", "VARCHAR"),
    ("TABLE_NAME", "VARCHAR"),  # NULL for source-wide checks (capture job)
    # capture_job | freshness | retention_headroom | change_table_rows | stuck_run | failing_runs | snapshot
    ("CHECK_NAME", "VARCHAR(40)"),
    ("STATUS", "VARCHAR(10)"),  # ok | warn | alert | unknown
    ("VALUE", "FLOAT"),
    ("THRESHOLD", "FLOAT"),
    ("UNIT", "VARCHAR(20)"),
    ("DETAIL", "VARCHAR"),
]


@dataclass(frozen=True)
class Check:
    """One figure of one check; a row of CDC_HEALTH."""

    source: str
    table: str | None
    check: str
    status: str
    value: float | None
    threshold: float | None
    unit: str
    detail: str

    @property
    def alerting(self) -> bool:
        return self.status in (WARN, ALERT)


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60, 2)


# -- source-wide ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptureState:
    max_lsn: Lsn | None
    max_lsn_time: datetime | None
    server_now: datetime
    last_write: datetime | None  # None: unknown (no VIEW SERVER STATE, or the emulator)


def capture_state(src: CdcSource) -> CaptureState:
    """The capture job's position and the server clock, plus the last write when it can be read."""
    max_lsn, max_lsn_time, server_now = src.capture_health()
    try:
        last_write = src.last_write()
    except Exception as exc:
        src.rollback()
        log.info(
            "source activity unknown (sys.dm_db_index_usage_stats not readable: %s); a stale max LSN is reported "
            "as a capture stall",
            str(exc).splitlines()[0],
        )
        last_write = None
    return CaptureState(max_lsn, max_lsn_time, server_now, last_write)


def cleanup_retention(src: CdcSource, configured_minutes: int) -> tuple[int, str]:
    """Retention of the CDC cleanup job in minutes: ``msdb.dbo.cdc_jobs`` when readable, else config."""
    try:
        minutes = src.cleanup_retention_minutes()
        if minutes is not None:
            return minutes, "msdb.dbo.cdc_jobs"
        log.info(
            "msdb.dbo.cdc_jobs has no cleanup job for this database: using retention_minutes=%d", configured_minutes
        )
    except Exception as exc:
        src.rollback()
        log.info(
            "msdb.dbo.cdc_jobs not readable (%s): using the configured retention_minutes=%d",
            str(exc).splitlines()[0],
            configured_minutes,
        )
    return configured_minutes, "config retention_minutes"


def check_capture(source: SourceConfig, state: CaptureState) -> Check:
    """Alive = the max LSN's time keeps up with the server clock while the source is written to."""
    threshold = _minutes(source.capture_stall_after)
    if state.max_lsn is None or state.max_lsn_time is None:
        return Check(
            source.name, None, "capture_job", ALERT, None, threshold, "minutes",
            "no captured LSN at all: the capture job never ran (or CDC is not enabled on the database)",
        )  # fmt: skip
    lag = state.server_now - state.max_lsn_time
    at = str(state.max_lsn)
    if lag <= source.capture_stall_after:
        return Check(source.name, None, "capture_job", OK, _minutes(lag), threshold, "minutes", f"max LSN {at}")
    if state.last_write is not None and state.last_write <= state.max_lsn_time:
        detail = f"max LSN {at} at {state.max_lsn_time} is old, but nothing was written since: source quiet"
        return Check(source.name, None, "capture_job", OK, _minutes(lag), threshold, "minutes", detail)
    activity = f"last write {state.last_write}" if state.last_write is not None else "source activity unknown"
    detail = (
        f"capture job stalled: max LSN {at} committed at {state.max_lsn_time}, {_minutes(lag)} min behind the "
        f"server clock ({state.server_now}); {activity}. Check the cdc.<db>_capture Agent job "
        "(EXEC sys.sp_cdc_start_job @job_type = N'capture')."
    )
    return Check(source.name, None, "capture_job", ALERT, _minutes(lag), threshold, "minutes", detail)


# -- per table ----------------------------------------------------------------------------------
def _instance(instances: Sequence[CaptureInstance], mark: Watermark) -> CaptureInstance:
    for ci in instances:
        if ci.name.lower() == mark.capture_instance.lower():
            return ci
    return instances[0]


def table_checks(
    source: SourceConfig,
    table: TableConfig,
    src: CdcSource,
    mark: Watermark | None,
    now: datetime,
    retention_minutes: int,
) -> list[Check]:
    """Freshness, retention headroom and change-table rows of one table (``now``: the source clock, UTC)."""
    name = table.name
    sla = source.setting(table, "freshness_sla")
    instances = src.capture_instances(table.source_schema, table.table)
    if not instances:
        detail = f"{table.source_schema}.{table.table} has no capture instance (CDC disabled, or table dropped)"
        return [Check(source.name, name, "freshness", ALERT, None, _minutes(sla), "minutes", detail)]
    if mark is None:
        detail = "no watermark yet: the table was never loaded (initial snapshot pending or failing)"
        return [Check(source.name, name, "freshness", WARN, None, _minutes(sla), "minutes", detail)]
    current = _instance(instances, mark)
    position_time = source.to_utc(src.lsn_to_time(mark.position))
    return [
        check_freshness(source, table, src, instances, mark, position_time, now),
        check_headroom(source, table, current, mark, position_time, now, retention_minutes),
        *(check_change_table(source, table, src, ci) for ci in instances),
    ]


def check_freshness(
    source: SourceConfig,
    table: TableConfig,
    src: CdcSource,
    instances: Sequence[CaptureInstance],
    mark: Watermark,
    position_time: datetime | None,
    now: datetime,
) -> Check:
    """Lag = now − commit time of the newest change applied, while the source holds newer changes."""
    sla = source.setting(table, "freshness_sla")
    position = mark.position
    pending = None
    for ci in instances:  # roll-over: a newer instance may hold the newer changes
        if ci.start_lsn > position or ci.name.lower() == mark.capture_instance.lower():
            pending = pending or src.first_change_after(ci.name, position)
    applied_at = mark.committed_at or position_time
    if pending is None:
        detail = f"up to date at {mark.lsn} (applied through {applied_at}); no newer change in the source"
        return Check(source.name, table.name, "freshness", OK, 0.0, _minutes(sla), "minutes", detail)
    if applied_at is None:  # position time gone from lsn_time_mapping: bound by the first pending change
        applied_at = source.to_utc(src.lsn_to_time(pending))
    lag = now - applied_at if applied_at is not None else None
    status = ALERT if lag is None or lag > sla else OK
    detail = (
        f"newest applied change committed at {applied_at} (watermark {mark.lsn}); the source holds newer changes "
        f"from {pending}; lag {_minutes(lag) if lag is not None else '?'} min, SLA {_minutes(sla)} min"
    )
    return Check(
        source.name, table.name, "freshness", status, _minutes(lag) if lag else None, _minutes(sla), "minutes", detail
    )  # fmt: skip


def check_headroom(
    source: SourceConfig,
    table: TableConfig,
    instance: CaptureInstance,
    mark: Watermark,
    position_time: datetime | None,
    now: datetime,
    retention_minutes: int,
) -> Check:
    """Minutes left before CDC cleanup purges changes the table has not loaded yet.

    The cleanup job keeps ``retention_minutes`` of changes: once the table's position is older
    than that, the capture instance's ``start_lsn`` moves past it and the changes in between are
    lost (the pipeline then stops with a retention gap, or re-snapshots).
    """
    retention = timedelta(minutes=retention_minutes)
    if int(mark.position) + 1 < int(instance.start_lsn):
        detail = (
            f"changes lost: watermark 0x{mark.lsn} is older than {instance.name} start_lsn "
            f"{instance.start_lsn}; re-snapshot the table"
        )
        return Check(source.name, table.name, "retention_headroom", ALERT, 0.0, None, "minutes", detail)
    at = position_time or mark.committed_at
    if at is None:
        detail = f"commit time of watermark 0x{mark.lsn} unknown (no longer in cdc.lsn_time_mapping)"
        return Check(source.name, table.name, "retention_headroom", UNKNOWN, None, None, "minutes", detail)
    age = now - at
    headroom = retention - age
    warn_at = retention * source.retention_warn_fraction
    status = ALERT if age >= retention else WARN if age >= warn_at else OK
    detail = (
        f"position 0x{mark.lsn} on {instance.name} is {_minutes(age)} min old; cleanup retention "
        f"{retention_minutes} min; {_minutes(headroom)} min left (warn below "
        f"{_minutes(retention - warn_at)} min)"
    )
    return Check(
        source.name, table.name, "retention_headroom", status, _minutes(headroom),
        _minutes(retention - warn_at), "minutes", detail,
    )  # fmt: skip


def check_change_table(source: SourceConfig, table: TableConfig, src: CdcSource, instance: CaptureInstance) -> Check:
    """Rows in the instance's change table (growth: compare with the previous CDC_HEALTH row)."""
    rows = src.change_table_rows(instance.name)
    detail = f"cdc.{instance.name}_CT holds {rows} rows"
    return Check(source.name, table.name, "change_table_rows", OK, float(rows), None, "rows", detail)


def run_record_checks(
    source: SourceConfig, table: TableConfig, record: dict[str, Any] | None, now: datetime
) -> list[Check]:
    """A stuck table (no completed run for ``stuck_after``) and a failure streak of
    ``failing_runs_alert`` DAG runs, from the table's run record (include/cdc_pipeline/orchestration/run_record.py).
    ``now`` is aware UTC, the clock the CDC tasks wrote the record with."""
    name, stuck = table.name, _minutes(source.stuck_after)
    if not record:
        detail = "no run recorded yet (the CDC DAG has not run this table since the run record was introduced)"
        return [Check(source.name, name, "stuck_run", UNKNOWN, None, stuck, "minutes", detail)]
    failed, limit = int(record.get("failed_runs") or 0), source.failing_runs_alert
    error = f"; last error: {record['last_error']}" if failed else ""
    # run_record.py writes succeeded_at on success and failing_since on a streak's first failure
    if record.get("succeeded_at"):
        age = now - datetime.fromisoformat(record["succeeded_at"])
        detail = f"last completed run {record.get('succeeded_run')} at {record['succeeded_at']}{error}"
    else:
        age = now - datetime.fromisoformat(record["failing_since"])
        detail = f"never completed a run; failing since {record['failing_since']}{error}"
    status = WARN if age > source.stuck_after else OK
    if status == WARN:
        detail += (
            f". No completed run for {_minutes(age)} min (over {stuck} min): is the DAG paused, the scheduler "
            "down, a pool full, or a task hung? Check the DAG's runs in the Airflow UI."
        )
    streak = (
        f"failed {failed} DAG run(s) in a row (alert at {limit}) since {record.get('failing_since')}, latest "
        f"{record.get('failed_run')}{error}"
        if failed
        else "no failed run since the last completed one"
    )
    return [
        Check(source.name, name, "stuck_run", status, _minutes(age), stuck, "minutes", detail),
        Check(
            source.name, name, "failing_runs", ALERT if failed >= limit else OK, float(failed), float(limit),
            "runs", streak,
        ),
    ]  # fmt: skip


# -- all checks of a source -----------------------------------------------------------------------
def run_checks(
    source: SourceConfig,
    src: CdcSource,
    wh: Warehouse,
    run_records: Callable[[TableConfig], dict[str, Any] | None] | None = None,
) -> list[Check]:
    """Every check of one source. Snowflake is read once per table (the watermark); the run records
    (Airflow Variables in the DAG) are read through ``run_records`` when given."""
    t = source.target
    state = capture_state(src)
    checks = [check_capture(source, state)]
    retention, origin = cleanup_retention(src, source.retention_minutes)
    log.info("%s: cleanup retention %d min (%s)", source.name, retention, origin)
    wh.use_schema(t.database, t.control_schema)
    ensure_control_table(wh, t.database, t.control_schema)
    now = datetime.now(UTC)
    snapshots = {s.table: s for s in SnapshotStore(lambda: wh, t.database, t.control_schema, source.name).active()}
    for table in source.tables:
        mark = read_watermark(wh, t.database, t.control_schema, source.name, table.name)
        server_now = source.to_utc(state.server_now)
        assert server_now is not None
        found = table_checks(source, table, src, mark, server_now, retention)
        if table.name in snapshots:
            found = [*snapshot_annotated(found), snapshot_check(source, table, snapshots[table.name], wh, now)]
        checks.extend(found)
        if run_records is not None:
            checks.extend(run_record_checks(source, table, run_records(table), now))
    return checks


def snapshot_annotated(checks: Sequence[Check]) -> list[Check]:
    """A snapshotting table's freshness still measures its stream (which goes on beside the
    chunks); its detail says so, so a late table is not taken for a stalled snapshot or vice versa."""
    note = "; a snapshot of the table is loading in chunks, the stream runs beside it"
    return [replace(c, detail=c.detail + note) if c.check == "freshness" else c for c in checks]


def snapshot_check(source: SourceConfig, table: TableConfig, snapshot: Snapshot, wh: Warehouse, now: datetime) -> Check:
    """A snapshot in chunks: how far it is, and a warning when no chunk finished for ``stuck_after``."""
    t = source.target
    progress = SnapshotStore(lambda: wh, t.database, t.control_schema, source.name).progress(snapshot.snapshot_id)
    last = progress["last_finished"] or snapshot.started_at
    idle = (now.replace(tzinfo=None) - last) if isinstance(last, datetime) else None
    stalled = idle is not None and idle > source.stuck_after
    detail = (
        f"{snapshot.kind} snapshot {snapshot.snapshot_id} at LSN {snapshot.snapshot_lsn}: {progress['done']}/"
        f"{progress['chunks']} chunks, {progress['rows']:,} rows; state {snapshot.state}"
        + (f"; no chunk finished for {_minutes(idle)} min (the CDC DAG's runs load them)" if stalled and idle else "")
    )
    done = progress["done"] / progress["chunks"] if progress["chunks"] else 0.0
    return Check(source.name, table.name, "snapshot", WARN if stalled else OK, round(100 * done, 1), 100.0, "%", detail)


def ensure_health_table(wh: Warehouse, database: str, schema: str) -> str:
    table = sf_table(database, schema, HEALTH_TABLE)
    columns = ", ".join(f"{name} {type_}" for name, type_ in HEALTH_COLUMNS)
    wh.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    return table


def previous_values(wh: Warehouse, database: str, schema: str, source: str, check: str) -> dict[str, float]:
    """The last recorded VALUE of ``check`` per table (change-table growth between checks)."""
    table = sf_table(database, schema, HEALTH_TABLE)
    rows = wh.execute(
        f"SELECT TABLE_NAME, VALUE FROM {table} WHERE SOURCE_NAME = %(source)s AND CHECK_NAME = %(check)s"
        " QUALIFY ROW_NUMBER() OVER (PARTITION BY TABLE_NAME ORDER BY CHECKED_AT DESC) = 1",
        {"source": source, "check": check},
    )
    return {name: value for name, value in rows if value is not None}


def with_growth(checks: list[Check], previous: dict[str, float]) -> list[Check]:
    out = []
    for c in checks:
        if c.check == "change_table_rows" and c.table in previous and c.value is not None:
            grown = c.value - previous[c.table]
            c = Check(**(asdict(c) | {"detail": f"{c.detail} ({grown:+.0f} since the previous check)"}))
        out.append(c)
    return out


def record(wh: Warehouse, database: str, schema: str, checks: Sequence[Check]) -> int:
    """Append the checks to CDC_HEALTH (one row each, same CHECKED_AT)."""
    table = ensure_health_table(wh, database, schema)
    for c in checks:
        wh.execute(
            f"INSERT INTO {table} (CHECKED_AT, SOURCE_NAME, TABLE_NAME, CHECK_NAME, STATUS, VALUE, THRESHOLD, UNIT,"
            f" DETAIL) SELECT {UTC_NOW}, %(source)s, %(table)s, %(check)s, %(status)s,"
            " %(value)s, %(threshold)s, %(unit)s, %(detail)s",
            {k: getattr(c, k) for k in ("source", "table", "check", "status", "value", "threshold", "unit", "detail")},
        )
    return len(checks)
