"""The incident decision (alerts.incidents) and the desk's passes over a store in memory: one mail when
something breaks, nothing while it repeats, one when it is fixed; the lease under two simultaneous
first failures (real threads, the real SMTP sink)."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dev.smtp_sink import body_text
from include.cdc_pipeline.alerts import desk as incident_desk
from include.cdc_pipeline.alerts import state
from include.cdc_pipeline.alerts.incidents import FAILING, MOVED, RECOVERED, Finding, decide
from include.cdc_pipeline.alerts.messages import incident_mail

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
TABLES = ["dbo_accounts", "dbo_invoice_lines", "dbo_invoices", "dbo_payments", "dbo_products"]
FOUR_HOURS = timedelta(hours=4)


def found(table: str, fp: str = "f-down", at: datetime = T0, run: str = "billing_cdc/r1", **kw: Any) -> Finding:
    fields: dict[str, Any] = {
        "origin": "task",
        "title": "DB-Lib 20009: Unable to connect (OperationalError)",
        "error": "DB-Lib 20009: Unable to connect\npymssql.exceptions.OperationalError",
        "kind": "network",
        "runbook": "Source or Snowflake unreachable, login or permission errors",
        "log_url": "http://airflow/log/plan",
        "where": "billing_cdc.plan (try 4 of 4, run r1)",
    } | kw
    return Finding(table=table, fingerprint=fp, at=at.isoformat(), run=run, **fields)


def step(ledger: Any, findings: list[Finding], now: datetime, round_pass: bool = True) -> tuple[Any, list[Any]]:
    return decide(ledger, findings, now, name="billing", round_pass=round_pass, realert_after=FOUR_HOURS)


def test_one_cause_across_tables_and_runs_is_one_incident() -> None:
    # Given the source down at `plan` (every table affected), reported by the first failure,
    down = [found(t) for t in TABLES]
    ledger, notices = step(None, down, T0, round_pass=False)
    # then one incident opens, naming every table;
    [opened] = notices
    assert opened.kind == "opened" and sorted(opened.incident["tables"]) == TABLES
    # the end of that run and two more failed runs send nothing.
    ledger, notices = step(ledger, down, T0 + timedelta(seconds=30))
    assert notices == []
    for minutes in (5, 10):
        again = [found(t, at=T0 + timedelta(minutes=minutes), run=f"billing_cdc/r{minutes}") for t in TABLES]
        ledger, first = step(ledger, again, T0 + timedelta(minutes=minutes), round_pass=False)
        ledger, end = step(ledger, again, T0 + timedelta(minutes=minutes, seconds=30))
        assert first == end == []
    # When every table completed a run again (no finding stands), one "resolved" with the duration.
    ledger, notices = step(ledger, [], T0 + timedelta(minutes=25))
    [resolved] = notices
    assert resolved.kind == "resolved"
    assert all(s["state"] == RECOVERED for s in resolved.incident["tables"].values())
    subject, _ = incident_mail(resolved, "billing", FOUR_HOURS)
    assert subject.startswith("[CDC RESOLVED billing-1] billing: DB-Lib 20009") and "after 25m (5 tables)" in subject
    ledger, notices = step(ledger, [], T0 + timedelta(minutes=30))
    assert notices == [] and ledger["incidents"][0]["status"] == "resolved"


def test_a_table_failing_for_another_cause_is_its_own_incident() -> None:
    ledger, _ = step(None, [found(t) for t in TABLES], T0, round_pass=False)
    # Given the source back, four tables completed and dbo_products stopped on schema drift,
    drift = found(
        "dbo_products", fp="f-drift", at=T0 + timedelta(minutes=20), run="billing_cdc/r5",
        title="dbo_products.UNIT_PRICE is NUMBER(18,4) in Snowflake ... (SchemaDriftError)", kind="config",
        retryable=False,
    )  # fmt: skip
    # the failing task's own first pass waits: the table already fails in an open incident;
    ledger, notices = step(ledger, [drift], T0 + timedelta(minutes=20), round_pass=False)
    assert notices == []
    # at the end of the run, the outage resolves and the drift opens its own incident.
    ledger, notices = step(ledger, [drift], T0 + timedelta(minutes=21))
    assert sorted(n.kind for n in notices) == ["opened", "resolved"]
    resolved = next(n for n in notices if n.kind == "resolved").incident
    assert resolved["tables"]["dbo_products"]["state"] == MOVED
    assert resolved["tables"]["dbo_products"]["moved_to_id"] == "billing-2"
    opened = next(n for n in notices if n.kind == "opened").incident
    assert list(opened["tables"]) == ["dbo_products"] and not opened["retryable"]
    _, body = incident_mail(next(n for n in notices if n.kind == "resolved"), "billing", FOUR_HOURS)
    assert "dbo_products (now: incident billing-2)" in body


def test_tables_joining_an_incident_are_named_in_one_update_per_pass() -> None:
    # Given an incident opened by dbo_accounts' failure (the first failing task pages at once),
    ledger, [opened] = step(None, [found("dbo_accounts")], T0, round_pass=False)
    assert list(opened.incident["tables"]) == ["dbo_accounts"]
    # when its siblings fail for the same cause seconds later, they are first passes: no mail each,
    same_run = [
        found("dbo_accounts"),
        *(found(t, at=T0 + timedelta(seconds=5)) for t in ("dbo_invoices", "dbo_products")),
    ]
    for n in (2, 3):
        ledger, notices = step(ledger, same_run[:n], T0 + timedelta(seconds=10), round_pass=False)
        assert notices == []
    # and the end of the run names both in one update,
    ledger, [grown] = step(ledger, same_run, T0 + timedelta(seconds=40))
    assert grown.kind == "grown" and grown.new_tables == ["dbo_invoices", "dbo_products"]
    subject, _ = incident_mail(grown, "billing", FOUR_HOURS)
    assert subject.startswith("[CDC INCIDENT billing-1 UPDATE] billing: 2 more failing")
    # the next run failing the same way sends nothing,
    ledger, notices = step(ledger, [replace(f, run="billing_cdc/r2") for f in same_run], T0 + timedelta(minutes=5))
    assert notices == []
    # while dbo_payments failing in a later run is another update, of its own.
    later = [*same_run, found("dbo_payments", at=T0 + timedelta(minutes=10), run="billing_cdc/r3")]
    ledger, [grown] = step(ledger, later, T0 + timedelta(minutes=10))
    assert grown.kind == "grown" and grown.new_tables == ["dbo_payments"]


def test_every_table_failing_for_one_new_cause_is_a_cause_change() -> None:
    ledger, _ = step(None, [found(t) for t in TABLES], T0, round_pass=False)
    login = [
        found(t, fp="f-login", at=T0 + timedelta(minutes=5), run="billing_cdc/r2", title="SQL Server 18456: Login")
        for t in TABLES
    ]
    ledger, first = step(ledger, login, T0 + timedelta(minutes=5), round_pass=False)
    assert first == []  # decided at the end of the run
    ledger, [changed] = step(ledger, login, T0 + timedelta(minutes=5, seconds=30))
    assert changed.kind == "cause" and changed.previous.startswith("DB-Lib 20009")
    assert changed.incident["fingerprint"] == "f-login" and len(ledger["incidents"]) == 1
    subject, body = incident_mail(changed, "billing", FOUR_HOURS)
    assert "the cause changed — SQL Server 18456" in subject and "Before" in body


def test_a_reminder_after_realert_after_then_silence() -> None:
    ledger, _ = step(None, [found("dbo_accounts")], T0, round_pass=False)
    ledger, notices = step(ledger, [found("dbo_accounts")], T0 + timedelta(hours=3, minutes=59))
    assert notices == []
    ledger, [reminder] = step(ledger, [found("dbo_accounts")], T0 + timedelta(hours=4))
    assert reminder.kind == "reminder"
    ledger, notices = step(ledger, [found("dbo_accounts")], T0 + timedelta(hours=4, minutes=5))
    assert notices == []


def test_a_stalled_capture_job_that_makes_every_table_late_is_one_incident() -> None:
    desk = incident_desk.Desk(name="billing", tables=tuple(TABLES), to=("oncall@example.com",))
    late = {"status": "alert", "value": 95.0, "threshold": 30.0, "unit": "minutes", "detail": "lag 95 min"}
    summary = {
        "checked_at": T0.isoformat(),
        "capture_job": {"status": "alert", "value": 95.0, "detail": "capture job stalled: max LSN 95 min behind"},
        "tables": {t: {"freshness": late, "stuck_run": {"status": "ok"}} for t in TABLES},
    }
    findings = incident_desk.health_findings(desk, summary, failing=set())
    _, notices = step(None, findings, T0)
    [opened] = notices
    assert sorted(opened.incident["tables"]) == ["-capture", *TABLES]
    assert opened.incident["title"] == "Capture job stalled"
    subject, body = incident_mail(opened, "billing", FOUR_HOURS)
    assert subject == "[CDC INCIDENT billing-1] billing: Capture job stalled — 5 tables"
    assert "the capture job" in body and "lag 95 min" in body
    # Without the stall, a table late because its task fails is no finding of its own.
    summary["capture_job"] = {"status": "ok"}
    alone = incident_desk.health_findings(desk, summary, failing={"dbo_accounts"})
    assert sorted(f.table for f in alone) == TABLES[1:] and {f.kind for f in alone} == {"health:freshness"}


def _context(task_id: str, rendered: str | None = None) -> dict[str, Any]:
    class Ti:
        dag_id, run_id, try_number, max_tries, log_url = "billing_cdc", "r1", 1, 3, "http://airflow/log"

    ti = Ti()
    ti.task_id, ti.rendered_map_index = task_id, rendered  # type: ignore[attr-defined]
    return {"ti": ti, "run_id": "r1", "exception": RuntimeError("boom")}


def test_the_tables_of_a_failing_task() -> None:
    desk = incident_desk.Desk(name="billing", tables=tuple(TABLES), dag_id="billing_cdc")
    assert incident_desk.affected_tables(_context("tables.apply", "dbo_payments"), desk) == ["dbo_payments"]
    named = _context("tables.extract_load") | {"cdc_table": "dbo_invoices"}  # set by the task as it starts
    assert incident_desk.affected_tables(named, desk) == ["dbo_invoices"]
    assert incident_desk.affected_tables(_context("plan"), desk) == TABLES
    assert incident_desk.affected_tables(_context("dbo_payments.apply"), desk) == ["dbo_payments"]  # a table's group
    worker = _context("tables.snapshot", "snapshot worker 1") | {"cdc_tables": ["dbo_invoices", "dbo_payments"]}
    assert incident_desk.affected_tables(worker, desk) == ["dbo_invoices", "dbo_payments"]
    two = _context("tables.snapshot_chunk", "dbo_invoices, dbo_payments")
    assert incident_desk.affected_tables(two, desk) == ["dbo_invoices", "dbo_payments"]
    dbt = _context("stg_accounts.run") | {"dag": type("D", (), {"dag_id": "billing_dbt"})()}
    assert incident_desk.affected_tables(dbt, desk) == ["-billing_dbt"]


def test_two_simultaneous_first_failures_send_exactly_one_mail(mailbox: Any) -> None:
    # Given two tables of one run failing for the same cause at the same moment, each running its
    # own first pass over the same ledger (real threads; the store is shared, as the metadata DB is),
    desk = incident_desk.Desk(name="billing", tables=tuple(TABLES), to=("oncall@example.com",), settle_s=0.2)
    store = state.MemoryVariables()
    start = threading.Barrier(2)
    sent: list[list[Any]] = []

    def fail(table: str) -> None:
        incident_desk.write_reports(store, desk, [found(table)])
        start.wait()
        sent.append(incident_desk.run_pass(desk, round_pass=False, store=store))

    threads = [threading.Thread(target=fail, args=(t,)) for t in ("dbo_accounts", "dbo_payments")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then exactly one pass opened the incident, and one mail went out, naming both tables.
    assert sorted(len(s) for s in sent) == [0, 1]
    mails = mailbox.mails(expect=1)
    mailbox.mails(expect=2, timeout=1.0)
    assert len(mailbox.mails()) == 1, [m["Subject"] for m in mailbox.mails()]
    text = body_text(mails[0])
    assert "dbo_accounts" in text and "dbo_payments" in text
    ledger = store.get(state.ledger_key("billing"))
    assert [i["status"] for i in ledger["incidents"]] == ["open"]
    assert all(s["state"] == FAILING for s in ledger["incidents"][0]["tables"].values())


def test_a_stalled_snapshot_is_an_incident() -> None:
    desk = incident_desk.Desk(name="billing", tables=tuple(TABLES), to=("oncall@example.com",))
    stalled = {"status": "warn", "value": 40.0, "detail": "snapshot 3/8 chunks, no chunk finished for 2h"}
    summary = {"checked_at": T0.isoformat(), "tables": {"dbo_invoices": {"snapshot": stalled}}}
    [finding] = incident_desk.health_findings(desk, summary, failing=set())
    assert (finding.table, finding.kind) == ("dbo_invoices", "health:snapshot")
    assert finding.runbook == "Snapshot stalled (`snapshot` warn)" and "no chunk finished" in finding.error


def test_a_healthy_round_pass_takes_no_lease_and_writes_nothing() -> None:
    store = state.MemoryVariables()
    desk = incident_desk.Desk(name="billing", tables=tuple(TABLES), to=("oncall@example.com",))
    assert incident_desk.run_pass(desk, round_pass=True, store=store) == []
    assert store.values == {}


def test_a_notice_that_could_not_be_sent_is_sent_by_the_next_pass(
    mailbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an SMTP server that refuses connections (a port nothing listens on) when a table fails,
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = mailbox.airflow_conn() | {"port": closed}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DOWN", json.dumps(down))
    store = state.MemoryVariables()
    desk = incident_desk.Desk(name="billing", tables=tuple(TABLES), to=("oncall@example.com",), settle_s=0.0)
    incident_desk.write_reports(store, desk, [found("dbo_accounts")])
    # when the first pass cannot send the page,
    unsent = replace(desk, smtp_conn_id="smtp_down")
    assert incident_desk.run_pass(unsent, round_pass=False, store=store) == []
    # then no incident is recorded as notified, and the next pass (SMTP back) sends it, once.
    assert store.get(state.ledger_key("billing")) is None
    [opened] = incident_desk.run_pass(desk, round_pass=False, store=store)
    assert opened.kind == "opened" and len(mailbox.mails(expect=1)) == 1
    assert incident_desk.run_pass(desk, round_pass=True, store=store) == []
