"""The status page's records (written by the CDC tasks) and the page model built from them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dev.localpipeline import MemoryHints  # the JSON store the DAG keeps in an Airflow Variable
from include.cdc_pipeline import health
from include.cdc_pipeline.config import load_source_config
from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.orchestration import run_record
from include.cdc_pipeline.planner import Window
from include.cdc_pipeline.status import figures as status

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SOURCE = load_source_config(ROOT / "include/config/sources/billing.yaml")


def _batch(rows: int, upper_committed_at: str, extract_s: float = 1.5, mode: str = "stream") -> Batch:
    window = Window(mode, "dbo_payments", lower="0000002A000001F40003", upper="0000002A000001F90001")
    return Batch(
        window, "dbo_payments:x-y", "billing/dbo_payments/x_y", rows, [], upper_committed_at, {"total_s": extract_s}
    )


def test_apply_records_the_batch_as_logged_in_cdc_batches() -> None:
    # Given a table whose apply loaded 300 changes (extract 1.5 s + apply 0.5 s, as CDC_BATCHES logs them),
    store = MemoryHints()
    record = status.record_apply(store, _batch(300, "2026-12-01T07:59:30"), {"apply_s": 0.5}, "scheduled__1", now=T0)
    # then the last batch holds rows, duration, rate and the source commit time it applied through,
    assert record["last_batch"] | {"applied_at": None} == {
        "run_id": "scheduled__1",
        "batch_id": "dbo_payments:x-y",
        "applied_at": None,
        "mode": "stream",
        "lower_lsn": "0000002A000001F40003",
        "upper_lsn": "0000002A000001F90001",
        "rows": 300,
        "extract_s": 1.5,
        "apply_s": 0.5,
        "duration_s": 2.0,
        "rows_per_s": 150.0,
        "credits": None,  # the apply's credits_used: none when the query history is not readable
        "reader": None,  # no driver named by this batch (figures.record_apply: batch.reader or None)
        "upper_committed_at": "2026-12-01T07:59:30",
    }
    # and with nothing captured beyond the batch, the lag it leaves is 0.
    assert record["applied_through"] == "2026-12-01T07:59:30" and record["lag_s"] == 0.0
    assert store.get() == record


def test_lag_of_a_run_is_captured_minus_applied_and_one_point_per_run() -> None:
    # Given the plan of run 2 found the source's cut committed at 07:59:30 and the table applied through 07:50
    # (written as record_plan does for a stream window),
    store = MemoryHints()
    store.set(
        {
            "run_id": "run2",
            "captured_through": "2026-12-01T07:59:30",
            "applied_through": "2026-12-01T07:50:00",
            "lag_s": 570.0,
            "points": [{"run_id": "run2", "at": T0.isoformat(), "lag_s": 570.0, "rows": 0, "mode": "stream"}],
        }
    )
    # when a batch capped below the cut (applied through 07:55) is applied in the same run,
    record = status.record_apply(store, _batch(10, "2026-12-01T07:55:00"), {"apply_s": 0.5}, "run2", now=T0)
    # then the lag left is cut − applied, and the run keeps one point: the lag it started with, and its rows.
    assert record["lag_s"] == 270.0
    assert [(p["run_id"], p["lag_s"], p["rows"], p["duration_s"]) for p in record["points"]] == [
        ("run2", 570.0, 10, 2.0)
    ]


def test_idle_plan_records_zero_lag_and_history_is_bounded() -> None:
    # Given a week and a day of idle runs every 5 minutes,
    store = MemoryHints()
    start = T0 - timedelta(days=8)
    for i in range(0, 8 * 24 * 12 + 1):
        window = Window("idle", "dbo_accounts", lower="00", upper="00")
        status.record_plan(store, window, None, f"run{i}", source=None, now=start + timedelta(minutes=5 * i))  # type: ignore[arg-type]
    record = store.get()
    assert record is not None
    # then the points cover the last 7 days only (a bounded Variable), each with lag 0 and no rows.
    points = record["points"]
    assert len(points) == 7 * 24 * 12 + 1 <= status.MAX_POINTS
    assert points[0]["at"] == (T0 - status.HISTORY).isoformat() and points[-1]["at"] == T0.isoformat()
    assert {(p["lag_s"], p["rows"]) for p in points} == {(0.0, 0)}
    assert record["mode"] == "idle" and record["lag_s"] == 0.0


def _view(records: dict, dag: dict | None = None, now: datetime = T0) -> dict:
    return status.source_view(
        SOURCE, records, dag if dag is not None else {"is_paused": False}, {}, [], now, now - timedelta(days=1)
    )


def test_table_states_from_the_records() -> None:
    # Given payments applied a batch a minute ago, accounts only idles, invoices failed two runs in a row,
    # invoice_lines last completed a run 3 hours ago (stuck_after 2 h) and products never ran,
    records: dict = {}
    for name, at in (("dbo_payments", T0 - timedelta(minutes=1)), ("dbo_invoice_lines", T0 - timedelta(hours=3))):
        store = MemoryHints()
        status.record_apply(store, _batch(5, "2026-12-01T07:00:00"), {"apply_s": 1}, "r0", now=at)
        records[status.status_key("billing", name)] = store.get()
        run = MemoryHints()
        run_record.record_success(run, "r0", now=at)
        records[f"cdc_runs__billing__{name}"] = run.get()
    idle = MemoryHints()
    status.record_plan(idle, Window("idle", "dbo_accounts"), None, "r1", source=None, now=T0)  # type: ignore[arg-type]
    records[status.status_key("billing", "dbo_accounts")] = idle.get()
    ok = MemoryHints()
    run_record.record_success(ok, "r1", now=T0)
    records["cdc_runs__billing__dbo_accounts"] = ok.get()
    failing = MemoryHints()
    for run_id in ("r1", "r2", "r2"):  # the retry of r2 counts once
        run_record.record_failure(failing, run_id, RuntimeError("login failed for user LOADER"), now=T0)
    records["cdc_runs__billing__dbo_invoices"] = failing.get()
    # then each row's state says so, with the failure streak and the runbook section to read.
    rows = {r["name"]: r for r in _view(records)["tables"]}
    assert {n: r["state"] for n, r in rows.items()} == {
        "dbo_accounts": "idle",
        "dbo_products": "no runs yet",
        "dbo_invoices": "failing",
        "dbo_invoice_lines": "stopped",
        "dbo_payments": "flowing",
    }
    assert rows["dbo_invoices"]["failures"] | {"since": None} == {
        "streak": 2,
        "alert_at": 3,
        "since": None,
        "last_error": "login failed for user LOADER (RuntimeError)",
        "last_success": None,
    }
    assert rows["dbo_invoices"]["links"]["runbook"] == "runbook#task-failed-errors-by-cause"
    assert rows["dbo_invoice_lines"]["links"]["runbook"] == "runbook#table-stuck-stuck_run-warn"
    assert rows["dbo_payments"]["links"]["task_group"] == "../dags/billing_cdc/tasks/group/tables"  # mapped by table
    assert rows["dbo_payments"]["last_batch"]["rows"] == 5
    # A paused DAG stops every table that is not failing.
    paused = {r["name"]: r["state"] for r in _view(records, {"is_paused": True})["tables"]}
    assert paused == {
        n: "failing" if n == "dbo_invoices" else "no runs yet" if n == "dbo_products" else "stopped" for n in rows
    }


def test_health_figures_give_freshness_and_retention_headroom() -> None:
    # Given a cdc_health round with retention headroom low for payments and a freshness alert for accounts,
    checks = [
        health.Check("billing", None, "capture_job", "ok", 0.5, 30, "minutes", "max LSN …"),
        health.Check("billing", "dbo_payments", "retention_headroom", "warn", 500.0, 864.0, "minutes", "500 min left"),
        health.Check("billing", "dbo_accounts", "freshness", "alert", 45.0, 30.0, "minutes", "lag 45 min"),
    ]
    records = {status.health_key("billing"): status.health_summary("billing", checks, now=T0)}
    rows = {r["name"]: r for r in _view(records)["tables"]}
    # then the rows show them with the time of the check, and the runbook section to read;
    assert rows["dbo_payments"]["retention"] == {
        "headroom_min": 500.0,
        "status": "warn",
        "checked_at": T0.isoformat(),
        "detail": "500 min left",
    }
    assert rows["dbo_payments"]["links"]["runbook"] == "runbook#retention-headroom-low-retention_headroom-warn--alert"
    assert rows["dbo_accounts"]["freshness"]["status"] == "late"
    assert rows["dbo_accounts"]["freshness"]["sla_s"] == 1800.0
    # a table no health round covered yet has no retention figure.
    assert rows["dbo_products"]["retention"] is None


def test_every_runbook_section_the_page_links_to_exists() -> None:
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs/runbook.md").read_text(), flags=re.M)
    assert set(status.RUNBOOK.values()) <= set(headings)


def test_open_incidents_come_first_with_their_age_and_tables() -> None:
    # Given the incident desk's ledger with one open incident (the source down, every table) and one resolved,
    from include.cdc_pipeline.alerts.incidents import Finding, decide

    down = [
        Finding(
            table=t.name, fingerprint="f1", origin="task", title="DB-Lib 20009: Unable to connect (OperationalError)",
            error="...", kind="network", runbook="Source or Snowflake unreachable, login or permission errors",
            at=(T0 - timedelta(minutes=40)).isoformat(), log_url="http://airflow/log", where="billing_cdc.cut",
        )
        for t in SOURCE.tables
    ]  # fmt: skip
    old = [Finding.from_dict(down[0].as_dict() | {"fingerprint": "f0", "title": "gone"})]
    ledger, _ = decide(None, old, T0 - timedelta(hours=2), name="billing", round_pass=True, realert_after=timedelta(1))
    ledger, _ = decide(ledger, [], T0 - timedelta(hours=1), name="billing", round_pass=True, realert_after=timedelta(1))
    ledger, _ = decide(ledger, down, T0 - timedelta(minutes=40), name="billing", round_pass=True,
                       realert_after=timedelta(hours=4))  # fmt: skip
    records = {"cdc_incidents__billing": ledger}
    page = status.page([SOURCE], records, {"billing_cdc": {"is_paused": False}}, {}, {}, now=T0)
    # then the page lists the open one on top: age, cause, every failing table, links;
    [incident] = page["incidents"]
    assert incident["id"] == "billing-2" and incident["age_s"] == 2400.0
    assert incident["title"].startswith("DB-Lib 20009") and len(incident["failing"]) == 5
    assert incident["runbook"] == "runbook#source-or-snowflake-unreachable-login-or-permission-errors"
    assert incident["log_url"] == "http://airflow/log"
    # the source's own section carries it too, and the resolved one is history, not shown.
    assert [i["id"] for i in page["sources"][0]["incidents"]] == ["billing-2"]


def test_an_incident_of_the_dags_serving_every_source_is_on_top_too() -> None:
    # Given cdc_health's deadline missed (the desk of all sources: cdc_health, cdc_preflight),
    from include.cdc_pipeline.alerts.incidents import Finding, decide

    late = Finding(
        table="-cdc_health", fingerprint="d1", origin="deadline", title="Deadline missed: cdc_health run still running",
        error="...", kind="deadline", runbook="Deadline missed", at=(T0 - timedelta(minutes=5)).isoformat(),
    )  # fmt: skip
    ledger, _ = decide(None, [late], T0 - timedelta(minutes=5), name="all_sources", round_pass=True,
                       realert_after=timedelta(hours=4))  # fmt: skip
    page = status.page([SOURCE], {"cdc_incidents__all_sources": ledger}, {"billing_cdc": {"is_paused": False}}, {}, {},
                       now=T0)  # fmt: skip
    # then the page lists it on top, under no source's section.
    [incident] = page["incidents"]
    assert incident["source"] == "all_sources" and incident["title"].startswith("Deadline missed")
    assert incident["age_s"] == 300.0 and page["sources"][0]["incidents"] == []
