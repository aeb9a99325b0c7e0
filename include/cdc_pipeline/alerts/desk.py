"""The incident desk: the Airflow side of ``alerts.incidents`` — what a failure reports, where each
pass runs, what it reads, and the mails (runbook: docs/runbook.md, "Incidents").

**Where e-mails are decided**: only in a pass (:func:`run_pass`) that holds the source's lease
(``alerts.state``), from the reports and records in Airflow's metadata DB — never straight from a
failure. Passes run:

- **first pass**, in the failure callback of any task of the source's DAGs (``IncidentNotifier``:
  after the last retry, or at once for an error no retry can fix): the callback writes the report of
  each table the task worked on (:func:`affected_tables`), then a pass that may only *open*
  incidents — the page goes out within seconds of the failure;
- **round passes**, which also update, remind and resolve: at the end of every CDC and dbt run
  (``RunEnd``, the DAGs' ``on_failure_callback`` and, where wired, ``on_success_callback``), at the end of
  every ``cdc_health`` round (a failed round too: its DAG's failure callback), and when a Deadline
  Alert fires (``deadline_missed``, in the triggerer).

**Resolution is detected** by round passes: a table's report stands until the table completed a
run after it — an ``apply`` (its run record ``cdc_runs__<source>__<table>``) or an idle poll (the
source's latest plan, ``cdc_status__<source>``, names it idle). The end-of-run callback sees it as
soon as the run that fixes things ends (every DAG wires it: the CDC DAG's ``on_success_callback``
is ``callbacks.run_success_callback``; a run that fails for another reason resolves at its end
through the failure callback), a cdc_health round within 15 minutes in any case.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.cdc_pipeline.alerts import classify, state
from include.cdc_pipeline.alerts.incidents import Finding, Notice, decide, open_incidents
from include.cdc_pipeline.alerts.messages import failure_details, incident_mail

if TYPE_CHECKING:
    from include.cdc_pipeline.config import SourceConfig

log = logging.getLogger(__name__)
CAPTURE = "-capture"
RUNNING_STATES = ("queued", "running")


@dataclass(frozen=True)
class Desk:
    """One ledger: a source (its tables, DAGs, on-call list, channels) or a DAG of all sources."""

    name: str
    tables: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # table names to leave out of fingerprints (slug, schema.table, Snowflake name)
    to: tuple[str, ...] = ()
    smtp_conn_id: str = "smtp_default"
    webhook_conn_id: str | None = None
    realert_after_s: float = 4 * 3600.0
    dag_id: str | None = None  # the source's CDC DAG: its tasks map to tables
    settle_s: float = 1.0  # the lease's settle time (alerts.state.Lease)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, source: SourceConfig, to: Sequence[str]) -> Desk:
        names = {n for t in source.tables for n in (t.name, f"{t.source_schema}.{t.table}", t.table, t.snowflake_table)}
        return cls(
            name=source.name,
            tables=tuple(t.name for t in source.tables),
            names=tuple(sorted(names)),
            to=tuple(to),
            smtp_conn_id=source.smtp_conn_id,
            webhook_conn_id=source.alert_webhook_conn_id,
            realert_after_s=source.realert_after.total_seconds(),
            dag_id=source.dag_id,
        )

    @property
    def realert_after(self) -> timedelta:
        return timedelta(seconds=self.realert_after_s)

    def as_kwargs(self) -> dict[str, Any]:
        """JSON for a Deadline Alert's callback kwargs (serialized with the DAG). Without the tables,
        their names and the DAG id: a deadline pass never maps tasks to tables or fingerprints an
        error (at 1,000 tables they would be thousands of strings in every serialized DAG)."""
        skip = ("dag_id", "tables", "names")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k not in skip}

    @classmethod
    def from_kwargs(cls, data: Mapping[str, Any]) -> Desk:
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__
        }
        return cls(**fields)


# -- what a failing task affects --------------------------------------------------------------------
def _dag_id(context: Mapping[str, Any]) -> str | None:
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    return getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None)


def affected_tables(context: Mapping[str, Any], desk: Desk) -> list[str]:
    """The tables a failing task worked on: the one place that maps a task to tables.

    - a task that carries several tables names them in its context as a list (``cdc_tables``: a
      snapshot worker's tables);
    - a mapped table task (``tables.extract_load`` / ``tables.apply``): the table it names — in its
      context (``cdc_table``, set by the task as it starts) or its rendered map index (the DAG's
      ``map_index_template``), several names joined by commas or blanks;
    - a task in a table's own task group (``<table>.<step>``): that table;
    - any other task of the CDC DAG (``plan``, ``publish``) or a whole-run failure: every table;
    - a task of another DAG (the dbt DAG, cdc_health, cdc_preflight): that DAG, as the part ``-<dag_id>``.
    """
    dag_id = _dag_id(context)
    if not desk.tables or (dag_id and dag_id != desk.dag_id):
        return [f"-{dag_id or 'dag'}"]
    ti = context.get("ti") or context.get("task_instance")
    known = set(desk.tables)
    several = context.get("cdc_tables")
    if isinstance(several, list | tuple) and (tables := [str(n) for n in several if str(n) in known]):
        return list(dict.fromkeys(tables))
    for named in (context.get("cdc_table"), getattr(ti, "rendered_map_index", None)):
        tables = [n for n in re.split(r"[\s,]+", str(named or "")) if n in known]
        if tables:
            return list(dict.fromkeys(tables))
    task_id = str(getattr(ti, "task_id", "") or "")
    group = task_id.split(".", 1)[0]
    if "." in task_id and group in known:
        return [group]
    return list(desk.tables)


# -- reports ----------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def failure_findings(context: Mapping[str, Any], desk: Desk, now: datetime | None = None) -> list[Finding]:
    """The findings of a task that failed for good, one per table it affects."""
    now = now or _now()
    details = failure_details(dict(context))
    error = details.get("error")
    if not isinstance(error, BaseException):
        error = RuntimeError(str(error or "the task failed (no exception in the callback context)"))
    info = classify.error_info(error)
    verdict = classify.classify(error)
    at_once = type(error).__name__ == "AirflowFailException"
    tries = f"try {details['try_number']} of {(details.get('max_tries') or 0) + 1}"
    where = f"{details['dag_id']}.{details['task_id']} ({tries}, run {details.get('run_id')})"
    window = f"; LSN window {details['lsn_window']}" if details.get("lsn_window") else ""
    common: dict[str, Any] = {
        "fingerprint": classify.fingerprint(desk.name, error, desk.names),
        "origin": "task",
        "title": info.summary,
        "error": info.text,
        "kind": verdict.kind,
        "runbook": verdict.runbook,
        "at": now.isoformat(),
        "log_url": details.get("log_url"),
        "where": where + window,
        "run": f"{details['dag_id']}/{details.get('run_id')}",
        "retryable": not at_once and verdict.retryable,
    }
    return [Finding(table=table, **common) for table in affected_tables(context, desk)]


def write_reports(store: state.Variables, desk: Desk, findings: Sequence[Finding]) -> None:
    for finding in findings:
        key = state.failure_key(desk.name, finding.table)
        store.set(key, finding.as_dict(), "CDC incident report: the table's latest final failure (safe to delete)")


def record_completion(store: state.Variables, desk: Desk, part: str, run_id: str, now: datetime | None = None) -> None:
    """A part that is no table (``-<dag_id>``) completed a run: its failure report no longer stands
    (the run record's shape, orchestration.run_record)."""
    at = (now or _now()).isoformat()
    store.set(
        state.runs_key(desk.name, part),
        {"succeeded_at": at, "succeeded_run": run_id, "failed_runs": 0},
        "CDC run record (safe to delete)",
    )


def _completed_after(record: Mapping[str, Any] | None, plan: Mapping[str, Any], table: str, at: str) -> bool:
    """Whether the table completed a run after ``at``: an apply (its run record) or an idle poll
    (the source's latest plan found it idle)."""
    done = [(record or {}).get("succeeded_at")]
    if table in (plan.get("idle") or []):
        done.append(plan.get("checked_at"))
    return any(isinstance(d, str) and datetime.fromisoformat(d) > datetime.fromisoformat(at) for d in done)


def _dagrun_state(dag_id: str, run_id: str) -> str | None:
    """The DAG run's state (None: unknown from here)."""
    try:
        if state._in_task_sdk():
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            return str(RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id))
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            found = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        return str(found) if found is not None else None
    except Exception as exc:
        log.info("state of %s %s unknown here: %s", dag_id, run_id, exc)
        return None


def current_findings(desk: Desk, store: state.Variables) -> list[Finding]:
    """What is wrong now: standing failure reports, the latest cdc_health round, missed deadlines."""
    found: list[Finding] = []
    plan = store.get(state.source_plan_key(desk.name))
    plan = plan if isinstance(plan, dict) else {}
    for key in store.keys(state.failure_key(desk.name, "")):
        report = store.get(key)
        if not isinstance(report, dict) or "fingerprint" not in report:
            continue
        finding = Finding.from_dict(report)
        if not _completed_after(store.get(state.runs_key(desk.name, finding.table)), plan, finding.table, finding.at):
            found.append(finding)
    failing = {f.table for f in found}
    summary = store.get(state.health_key(desk.name))
    if isinstance(summary, dict):
        found += health_findings(desk, summary, failing)
    for key in store.keys(state.deadline_key(desk.name, "")):
        report = store.get(key)
        if not isinstance(report, dict) or "fingerprint" not in report:
            continue
        run_state = _dagrun_state(report["dag_id"], report["run_id"])
        if run_state is None or run_state.rsplit(".", 1)[-1].lower() in RUNNING_STATES:
            found.append(Finding.from_dict(report))
    return found


_HEALTH = {  # check -> (title, runbook section)
    "freshness": ("Freshness SLA missed", "Freshness SLA missed (`freshness` alert)"),
    "retention_headroom": ("Retention headroom low", "Retention headroom low (`retention_headroom` warn / alert)"),
    "stuck_run": ("Table stuck: no completed run", "Table stuck (`stuck_run` warn)"),
    "capture_job": ("Capture job stalled", "Capture job stalled (`capture_job` alert)"),
    "snapshot": ("Snapshot stalled: no chunk finished", "Snapshot stalled (`snapshot` warn)"),
}


def health_findings(desk: Desk, summary: Mapping[str, Any], failing: set[str]) -> list[Finding]:
    """The latest cdc_health round as findings, a symptom folded into its cause: with the capture
    job stalled, every late table is part of that one incident; a table that fails in a task is
    late, stuck or repeatedly failing because it fails (no finding of its own); failing_runs is
    what incidents replace (the reminder after ``realert_after``)."""
    at = str(summary.get("checked_at") or _now().isoformat())
    capture = summary.get("capture_job") or {}
    stalled = capture.get("status") == "alert"

    def finding(table: str, check: str, status: str, figure: Mapping[str, Any]) -> Finding:
        title, runbook = _HEALTH[check]
        title += " (changes lost)" if check == "retention_headroom" and status == "alert" else ""
        return Finding(
            table=table,
            fingerprint=classify.fingerprint_of(desk.name, f"health:{check}:{status}"),
            origin="health",
            title=title,
            error=str(figure.get("detail") or ""),
            kind=f"health:{check}",
            runbook=runbook,
            at=at,
            retryable=False,
            detail=str(figure.get("detail") or "") or None,
        )

    found = []
    if stalled:
        found.append(finding(CAPTURE, "capture_job", "alert", capture))
    for table, checks in sorted((summary.get("tables") or {}).items()):
        for check, figure in sorted(checks.items()):
            status = (figure or {}).get("status")
            if status not in ("warn", "alert") or check not in _HEALTH:
                continue
            if check == "freshness" and stalled:
                late = finding(table, "capture_job", "alert", capture)
                found.append(Finding.from_dict(late.as_dict() | {"detail": figure.get("detail")}))
            elif check in ("freshness", "stuck_run") and table in failing:
                continue
            else:
                found.append(finding(table, check, status, figure))
    return found


# -- passes -----------------------------------------------------------------------------------------
def run_pass(
    desk: Desk, *, round_pass: bool, store: state.Variables | None = None, now: datetime | None = None
) -> list[Notice]:
    """Decide under the source's lease, send, keep the ledger; the notices sent. Nothing wrong and no
    incident open (a healthy run's end, the usual case): no lease, no write. A notice that could not
    be sent leaves the ledger as it was, so the next pass decides and sends it again."""
    store = store or state.Variables()
    key = state.ledger_key(desk.name)
    if not open_incidents(store.get(key)) and not current_findings(desk, store):
        return []
    lease = state.Lease(store, desk.name, settle=desk.settle_s)
    if not lease.acquire():
        return []
    try:
        ledger = store.get(key)
        ledger, notices = decide(
            ledger if isinstance(ledger, dict) else None,
            current_findings(desk, store),
            now or _now(),
            name=desk.name,
            round_pass=round_pass,
            realert_after=desk.realert_after,
        )
        unsent = [notice for notice in notices if not send(desk, notice)]
        if unsent:
            log.error("%s: %d incident notice(s) not sent; the next pass sends them again", desk.name, len(unsent))
            return [notice for notice in notices if notice not in unsent]
        store.set(key, ledger, "CDC incidents: open and recently resolved (status page; safe to delete)")
        return notices
    finally:
        lease.release()


def send(desk: Desk, notice: Notice) -> bool:
    """One incident mail (and the webhook post); whether it went out (a failure is logged, never raised)."""
    from include.cdc_pipeline.alerts.channels import send_alert

    subject, body = incident_mail(notice, desk.name, desk.realert_after)
    try:
        send_alert(list(desk.to), subject, body, smtp_conn_id=desk.smtp_conn_id, webhook_conn_id=desk.webhook_conn_id)
    except Exception:
        log.exception("could not send the incident mail %r", subject)
        return False
    return True


def report_failure(desk: Desk, context: Mapping[str, Any], store: state.Variables | None = None) -> list[Notice]:
    """A task failed for good: report its tables, then a first pass — unless every table it affects
    already fails for this cause in an open incident (one read: the usual case when a whole run
    fails, and on every further run of an outage)."""
    store = store or state.Variables()
    findings = failure_findings(context, desk)
    write_reports(store, desk, findings)
    if not findings:
        return []
    ledger = store.get(state.ledger_key(desk.name))
    covered = {t for i in open_incidents(ledger) if i["fingerprint"] == findings[0].fingerprint for t in i["tables"]}
    if all(f.table in covered for f in findings):
        log.info("%s: %s is part of an open incident; no mail", desk.name, findings[0].title)
        return []
    return run_pass(desk, round_pass=False, store=store)


def report_run_failure(desk: Desk, context: Mapping[str, Any], store: state.Variables | None = None) -> None:
    """A DAG run failed with no failed task (it timed out): every table it carried is affected."""
    store = store or state.Variables()
    dag_id = _dag_id(context) or "?"
    run_id = str(context.get("run_id") or getattr(context.get("dag_run"), "run_id", "?"))
    reason = str(context.get("reason") or "the run failed without a failed task")
    tables = list(desk.tables) if dag_id == desk.dag_id else [f"-{dag_id}"]
    now = _now()
    findings = [
        Finding(
            table=table,
            fingerprint=classify.fingerprint_of(desk.name, "run", dag_id, classify.normalise(reason)),
            origin="run",
            title=f"DAG run of {dag_id} failed: {reason}",
            error=reason,
            kind="timeout",
            runbook="Run failed without a failed task",
            at=now.isoformat(),
            where=f"{dag_id} run {run_id}",
            run=f"{dag_id}/{run_id}",
        )
        for table in tables
    ]
    write_reports(store, desk, findings)


async def deadline_missed(desk: dict[str, Any], context: dict[str, Any] | None = None, **_: Any) -> None:
    """A Deadline Alert's callback (``AsyncCallback``, run in the triggerer): a report for the DAG
    run, then a round pass — in a thread, as Variables and SMTP calls block."""
    await asyncio.to_thread(_deadline_missed, Desk.from_kwargs(desk), context or {})


def _deadline_missed(desk: Desk, context: Mapping[str, Any]) -> None:
    store = state.Variables()
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id, run_id = str(run.get("dag_id") or desk.extra.get("dag") or "?"), str(run.get("run_id") or "?")
    interval = desk.extra.get("interval", "")
    title = f"Deadline missed: {dag_id} run still running {interval} after it was queued".replace("  ", " ")
    finding = Finding(
        table=f"-{dag_id}",
        fingerprint=classify.fingerprint_of(desk.name, "deadline", dag_id),
        origin="deadline",
        title=title,
        error=f"run {run_id} of {dag_id}, queued at {run.get('queued_at')}, deadline {deadline.get('deadline_time')}, "
        f"state {run.get('state')}",
        kind="deadline",
        runbook="Deadline missed",
        at=_now().isoformat(),
        where=f"{dag_id} run {run_id}",
        run=f"{dag_id}/{run_id}",
    )
    report = finding.as_dict() | {"dag_id": dag_id, "run_id": run_id}
    store.set(state.deadline_key(desk.name, dag_id), report, "CDC missed deadline (safe to delete)")
    run_pass(desk, round_pass=True, store=store)
