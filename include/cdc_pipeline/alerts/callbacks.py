"""When alerts go out, as Airflow wires them, and to whom (runbook: docs/runbook.md, "Incidents").

Every alert goes through the incident desk (``alerts.desk``, decisions in ``alerts.incidents``):
one mail when something breaks, one when it is fixed, per source and cause.

* **Task failure** (`failure_notifier`): ``on_failure_callback`` fires once per task instance, after
  its last retry (retries with backoff happen before it), or in the first try for an error no retry
  can fix (``orchestration.tasks.fail_fast``). It reports the tables the task worked on and runs a
  first pass: a new cause opens an incident (one mail), a known one sends nothing.
* **End of a run** (`run_failure_summary`, `run_success_callback`): the DAG-level callbacks run a
  round pass — incidents grow, change cause, remind or resolve; a run that failed without a failed
  task (``dagrun_timeout``) is reported for every table it carried.
* **Deadline Alert** (`deadline_alert`): a ``DeadlineAlert`` whose callback is
  ``alerts.desk.deadline_missed`` (an ``AsyncCallback``: Airflow 3.3 runs it in the **triggerer**
  with the deadline's context — ``dag_run`` and ``deadline`` — plus the JSON kwargs given here; the
  triggerer serves Variables to it), so a slow run is an incident like any other.
* **Recipients** (`alert_emails`): the source's on-call list, else ``DEFAULT_ALERT_EMAILS``; the
  chat webhook (``alert_webhook_conn_id``) gets every incident mail too.

Nothing here opens a connection at import or DAG-parse time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from include.cdc_pipeline.alerts import desk as incident_desk
from include.cdc_pipeline.alerts import state
from include.cdc_pipeline.alerts.desk import Desk
from include.cdc_pipeline.alerts.messages import human_span
from include.cdc_pipeline.config import SourceConfig

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

DEFAULT_ALERT_EMAILS = ("oncall@example.com",)


def alert_emails(source: SourceConfig | None) -> list[str]:
    """The source's on-call list, else the default one."""
    return list(source.alert_emails) if source is not None and source.alert_emails else list(DEFAULT_ALERT_EMAILS)


def source_desk(source: SourceConfig) -> Desk:
    """The incident desk of a source: its tables, DAGs, on-call list and channels."""
    return Desk.of(source, alert_emails(source))


class IncidentNotifier(BaseNotifier):
    """``on_failure_callback`` of a task: report its tables to the desk, which decides whether to mail."""

    def __init__(self, desk: Desk) -> None:
        super().__init__()
        self.desk = desk

    def notify(self, context: Any) -> None:
        try:
            incident_desk.report_failure(self.desk, context)
        except Exception:  # a callback must never hide the task's own error
            log.exception("%s: could not report the failure to the incident desk", self.desk.name)


def failure_notifier(source: SourceConfig) -> IncidentNotifier:
    """The failure callback of the source's tasks (CDC DAG, dbt DAG, its cdc_health check)."""
    return IncidentNotifier(source_desk(source))


def all_sources_desk(to: Sequence[str], smtp_conn_id: str = "smtp_default") -> Desk:
    """The desk of what concerns no single source (the cdc_preflight DAG, cdc_health's Deadline
    Alert): its parts are its DAGs."""
    return Desk(name=state.ALL_SOURCES, to=tuple(to), smtp_conn_id=smtp_conn_id)


def task_failure_notifier(to: Sequence[str], smtp_conn_id: str = "smtp_default") -> IncidentNotifier:
    """The failure callback of tasks of no single source (a DAG serving all sources)."""
    return IncidentNotifier(all_sources_desk(to, smtp_conn_id))


# -- end of a run -----------------------------------------------------------------------------------
def _failed_tasks(dag_id: str, run_id: str) -> list[str] | None:
    """Task ids in state ``failed`` in the run; None when they cannot be read from here."""
    try:  # DAG processor (production): through the supervisor, like any Task SDK process
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id])
        return sorted(
            t for t, s in (states.get(run_id) or {}).items() if str(s) in ("failed", "TaskInstanceState.FAILED")
        )
    except Exception as exc:
        log.debug("task states through the supervisor unavailable: %s", exc)
    try:  # dag.test(): callbacks run in the process that holds the metadata DB session
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = (
                session.query(TaskInstance.task_id, TaskInstance.map_index, TaskInstance._rendered_map_index)
                .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.state == "failed")
                .all()
            )
        # a mapped instance by its name: tables.extract_load[dbo_invoices]
        return sorted(task if index < 0 else f"{task}[{name or index}]" for task, index, name in rows)
    except Exception as exc:
        log.warning("cannot list the failed tasks of %s %s: %s", dag_id, run_id, exc)
        return None


class RunEnd:
    """DAG-level callback (``on_failure_callback`` / ``on_success_callback``): a round pass of each desk."""

    def __init__(self, desks: Sequence[Desk], success: bool = False) -> None:
        self.desks = list(desks)
        self.success = success
        self.__name__ = "cdc_incidents_run_end"

    def __call__(self, context: Context) -> None:
        dag = context.get("dag")
        dag_run = context.get("dag_run")
        dag_id = getattr(dag, "dag_id", "") or getattr(dag_run, "dag_id", "?")
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or "?"
        timed_out = not self.success and _failed_tasks(dag_id, run_id) == []
        store = state.Variables()
        for desk in self.desks:
            try:
                if timed_out:
                    incident_desk.report_run_failure(desk, context, store)
                if self.success and dag_id != desk.dag_id:  # the dbt DAG (its tasks report as a part)
                    incident_desk.record_completion(store, desk, f"-{dag_id}", run_id)
                incident_desk.run_pass(desk, round_pass=True, store=store)
            except Exception:
                log.exception("%s: incident pass at the end of %s %s failed", desk.name, dag_id, run_id)


def run_failure_summary(source: SourceConfig) -> RunEnd:
    """``on_failure_callback`` of a source's DAG (the name it had when it mailed a run summary)."""
    return RunEnd([source_desk(source)])


def run_success_callback(source: SourceConfig) -> RunEnd:
    """``on_success_callback`` of a source's DAG: a run that succeeds resolves what it fixed at once."""
    return RunEnd([source_desk(source)], success=True)


# -- Deadline Alerts --------------------------------------------------------------------------------
def deadlines_enabled() -> bool:
    """False when ``CDC_DEADLINES=off``: for the tests' in-process ``dag.test()`` runs only.

    Airflow 3.3's ``dag.test()`` cannot finish a *successful* run of a DAG with a DeadlineAlert:
    ``DagRun.update_state`` looks the alerts up by id, but the test path hands it their
    serialized dicts (``AttributeError: 'dict' object has no attribute 'hex'``). Deadlines never
    fire there anyway (no run is queued), so the end-to-end tests switch them off; the scheduler
    path (`make airflow`, Astronomer) keeps them, and so does the demo, whose ``airflow dags test``
    runs go through ``dev/dag_test.py`` (it works around that defect, so the DAG the demo writes to
    the metadata DB is the one the DAG processor writes: one version, listed once).
    """
    return os.environ.get("CDC_DEADLINES", "on").lower() not in ("off", "0", "false")


def deadline_alert(
    interval: timedelta,
    to: Iterable[str],
    smtp_conn_id: str = "smtp_default",
    dag_label: str = "",
    desk: Desk | None = None,
) -> Any | None:
    """A DeadlineAlert that reports to the incident desk (``desk``, else one named after the DAG
    mailing ``to``) when a run is not done ``interval`` after it was queued (None when deadlines
    are switched off, see ``deadlines_enabled``).

    The callback runs asynchronously in the **triggerer** (``AsyncCallback``), so it fires only with
    a scheduler and a triggerer running (not under ``dag.test()`` / ``airflow dags test``, which
    never queue a run).
    """
    if not deadlines_enabled():
        return None
    from airflow.sdk import (  # type: ignore[attr-defined]  # task-sdk 1.3's __init__.pyi omits these exports
        AsyncCallback,
        DeadlineAlert,
        DeadlineReference,
    )

    desk = desk or Desk(name=dag_label or "deadlines", to=tuple(to), smtp_conn_id=smtp_conn_id)
    kwargs = desk.as_kwargs()
    kwargs["extra"] = {**kwargs.get("extra", {}), "dag": dag_label, "interval": human_span(interval.total_seconds())}
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(incident_desk.deadline_missed, kwargs={"desk": kwargs}),
    )


def source_deadline_alert(source: SourceConfig, dbt_dag_id: str | None = None) -> Any | None:
    """The Deadline Alert of the source's CDC DAG (``deadline`` in its YAML) or, given
    ``dbt_dag_id``, of its dbt DAG (``dbt_deadline``, else ``deadline``); None when unset."""
    interval = (source.dbt_deadline or source.deadline) if dbt_dag_id else source.deadline
    if interval is None:
        return None
    desk = source_desk(source)
    return deadline_alert(interval, desk.to, desk.smtp_conn_id, dbt_dag_id or source.dag_id, desk)
