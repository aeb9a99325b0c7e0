"""CDC health checks on the local stack (SQL Server CDC emulator + local Snowflake), with a frozen source clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dev.localpipeline import MemoryHints  # a run record kept in memory (Airflow Variable in the DAG)
from dev.smtp_sink import body_text
from include.cdc_pipeline import health
from include.cdc_pipeline.orchestration import run_record
from include.cdc_pipeline.source import CdcSource
from include.cdc_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 8, 0, 0)
TABLE = {"schema": "dbo", "table": "orders", "primary_key": ["id"], "freshness_sla": "30m"}


def _loaded(h: Any, **overrides: Any) -> Any:
    """dbo.orders with CDC, two rows, snapshotted into Snowflake at T0 (clock frozen)."""
    h.engine.clock.set(T0)
    h.sql(
        "CREATE TABLE dbo.orders (id int NOT NULL PRIMARY KEY, amount decimal(10,2))",
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'orders', @role_name = NULL",
        "INSERT INTO dbo.orders VALUES (1, 10.00), (2, 20.00)",
    )
    h.capture()
    config = h.source_config([TABLE], **overrides)
    assert h.pipeline(config).run_once()["mode"] == "snapshot"
    return config


def _checks(h: Any, config: Any) -> dict[tuple[str, str | None], health.Check]:
    wh = Warehouse(h.snowflake.connect())
    checks = health.run_checks(config, CdcSource(h.connect()), wh)
    return {(c.check, c.table): c for c in checks}


def test_healthy_table_reports_ok(harness) -> None:
    config = _loaded(harness)
    harness.engine.clock.advance(60)
    checks = _checks(harness, config)
    assert checks[("freshness", "dbo_orders")].status == "ok"
    assert checks[("retention_headroom", "dbo_orders")].status == "ok"
    assert checks[("capture_job", None)].status == "ok"
    assert checks[("change_table_rows", "dbo_orders")].value == 2


def test_source_moved_on_while_ingestion_paused_raises_freshness_alert(harness, mailbox) -> None:
    # Given a loaded table whose DAG is paused (capture stall threshold 2 h: the source is quiet after
    # the update, and the emulator cannot tell a quiet source from a stalled job),
    config = _loaded(harness, capture_stall_after="2h")
    # when the source changes and 45 minutes pass (SLA 30 min) with the capture job running,
    harness.engine.clock.advance(5 * 60)
    harness.sql("UPDATE dbo.orders SET amount = 11.00 WHERE id = 1")
    harness.capture()
    harness.engine.clock.advance(40 * 60)
    harness.capture()
    checks = _checks(harness, config)
    # then freshness alerts with the lag measured from the applied data's commit time,
    fresh = checks[("freshness", "dbo_orders")]
    assert fresh.status == "alert", fresh
    assert fresh.value == pytest.approx(45, abs=0.1) and fresh.threshold == 30
    assert "holds newer changes" in fresh.detail
    # and the capture job itself is fine.
    assert checks[("capture_job", None)].status == "ok"
    # The round's incident pass (as the cdc_health task runs it) mails once, naming table and check;
    # the next round with the table still late sends nothing.
    from include.cdc_pipeline.alerts import desk as incident_desk
    from include.cdc_pipeline.alerts.callbacks import source_desk
    from include.cdc_pipeline.alerts.state import MemoryVariables, health_key
    from include.cdc_pipeline.status import figures

    desk = dataclasses.replace(source_desk(config), settle_s=0.0)
    store = MemoryVariables()
    store.set(health_key(config.name), figures.health_summary(config.name, list(checks.values())), "round")
    assert [n.kind for n in incident_desk.run_pass(desk, round_pass=True, store=store)] == ["opened"]
    assert incident_desk.run_pass(desk, round_pass=True, store=store) == []
    [mail] = mailbox.mails(expect=1)
    assert mail["Subject"] == "[CDC INCIDENT src-1] src: Freshness SLA missed — 1 table"
    text = body_text(mail)
    assert "dbo_orders — newest applied change committed at" in text and "lag 45.0 min" in text


def test_watermark_near_retention_limit_warns(harness) -> None:
    # Given a 60-minute cleanup retention (warn at 80 %) and a table loaded at T0,
    config = _loaded(harness, retention_minutes=60, retention_warn_fraction=0.8)
    # when 50 minutes pass with changes the table has not loaded,
    harness.engine.clock.advance(50 * 60)
    harness.sql("INSERT INTO dbo.orders VALUES (3, 30.00)")
    harness.capture()
    check = _checks(harness, config)[("retention_headroom", "dbo_orders")]
    # then the headroom check warns: 10 minutes left before changes are purged.
    assert check.status == "warn", check
    assert check.value == pytest.approx(10, abs=0.1)
    assert "cleanup retention 60 min" in check.detail
    # and past the retention it alerts.
    harness.engine.clock.advance(15 * 60)
    assert _checks(harness, config)[("retention_headroom", "dbo_orders")].status == "alert"


def test_stopped_capture_job_is_reported(harness) -> None:
    # Given a loaded table,
    config = _loaded(harness, capture_stall_after="15m")
    # when the source keeps being written to but nothing is captured for 20 minutes,
    for i in range(4):
        harness.engine.clock.advance(5 * 60)
        harness.sql(f"INSERT INTO dbo.orders VALUES ({10 + i}, 1.00)")
    check = _checks(harness, config)[("capture_job", None)]
    # then the capture job is reported as stalled.
    assert check.status == "alert", check
    assert check.value == pytest.approx(20, abs=0.1)
    assert "capture job stalled" in check.detail


def test_checks_are_recorded_in_cdc_health(harness) -> None:
    config = _loaded(harness)
    wh = Warehouse(harness.snowflake.connect())
    checks = health.run_checks(config, CdcSource(harness.connect()), wh)
    t = config.target
    assert health.record(wh, t.database, t.control_schema, checks) == len(checks)
    previous = health.previous_values(wh, t.database, t.control_schema, config.name, "change_table_rows")
    assert previous == {"dbo_orders": 2.0}
    rows = harness.snowflake_rows(f"SELECT CHECK_NAME, STATUS FROM {t.database}.CONTROL.CDC_HEALTH ORDER BY CHECK_NAME")
    assert ("freshness", "ok") in rows and ("capture_job", "ok") in rows


def _record_checks(config: Any, store: MemoryHints, now: datetime) -> dict[str, health.Check]:
    table = config.tables[0]
    return {c.check: c for c in health.run_record_checks(config, table, store.get(), now)}


def test_repeatedly_failing_runs_alert_once_the_streak_reaches_the_limit(harness) -> None:
    config = harness.source_config([TABLE], failing_runs_alert=3, stuck_after="2h")
    store, t0 = MemoryHints(), datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    run_record.record_success(store, "run-0", t0)
    # Given two runs that failed, the second after two tries,
    run_record.record_failure(store, "run-1", RuntimeError("boom"), t0 + timedelta(minutes=15))
    run_record.record_failure(store, "run-2", RuntimeError("first try"), t0 + timedelta(minutes=30))
    run_record.record_failure(
        store, "run-2", TimeoutError("Snowflake timed out\ntraceback…"), t0 + timedelta(minutes=31)
    )
    checks = _record_checks(config, store, t0 + timedelta(minutes=35))
    # then the retries of one run count once, and two is below the limit;
    assert checks["failing_runs"].status == "ok" and checks["failing_runs"].value == 2
    assert "Snowflake timed out (TimeoutError)" in checks["failing_runs"].detail
    # a third failed run alerts, naming the streak's start and the latest error;
    run_record.record_failure(store, "run-3", RuntimeError("still broken"), t0 + timedelta(minutes=45))
    checks = _record_checks(config, store, t0 + timedelta(minutes=50))
    failing = checks["failing_runs"]
    assert failing.status == "alert" and failing.value == 3 and failing.threshold == 3
    assert "since 2026-03-01T08:15:00+00:00" in failing.detail and "still broken (RuntimeError)" in failing.detail
    assert checks["stuck_run"].status == "ok" and checks["stuck_run"].value == 50
    # and a completed run ends the streak.
    run_record.record_success(store, "run-4", t0 + timedelta(minutes=60))
    checks = _record_checks(config, store, t0 + timedelta(minutes=61))
    assert checks["failing_runs"].status == "ok" and checks["failing_runs"].value == 0


def test_table_without_a_completed_run_for_too_long_is_reported_stuck(harness) -> None:
    config = harness.source_config([TABLE], stuck_after="2h")
    store, t0 = MemoryHints(), datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    run_record.record_success(store, "scheduled__2026-03-01T08:00", t0)
    assert _record_checks(config, store, t0 + timedelta(minutes=119))["stuck_run"].status == "ok"
    stuck = _record_checks(config, store, t0 + timedelta(minutes=150))["stuck_run"]
    assert stuck.status == "warn" and stuck.value == 150 and stuck.threshold == 120
    assert "scheduled__2026-03-01T08:00" in stuck.detail and "DAG paused" in stuck.detail
    # A table with no record at all (never run by the DAG) is unknown, not ok.
    assert _record_checks(config, MemoryHints(), t0)["stuck_run"].status == "unknown"


def test_cdc_tasks_record_their_failures_and_successes(harness, monkeypatch, tmp_path) -> None:
    # Given the CDC task functions with the run record in memory, and a config whose connection is missing,
    from include.cdc_pipeline.orchestration import tasks

    store = MemoryHints()
    monkeypatch.setattr(tasks.VariableStore, "runs", classmethod(lambda cls, source, table: store))
    config = tmp_path / "src.yaml"
    config.write_text(
        "name: src\nmssql_conn_id: no_such_connection\ntarget: {database: HEALTH}\n"
        "alert_emails: [oncall@example.com]\ntables: [{schema: dbo, table: orders, primary_key: [id]}]\n"
    )
    # when the table's task (planning it itself: the plan task could not) fails in two tries of one run,
    item = {"table": "dbo_orders", "window": None, "error": "planning failed", "cut": None}
    for _ in range(2):
        with pytest.raises(Exception, match="no_such_connection"):
            tasks.extract_load_item(str(config), item, {"run_id": "manual__1"})
    # then the run record holds one failed run naming the error.
    assert store.value is not None
    assert store.value["failed_runs"] == 1 and store.value["failed_run"] == "manual__1"
    assert "no_such_connection" in store.value["last_error"]
