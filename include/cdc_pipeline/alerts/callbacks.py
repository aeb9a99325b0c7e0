"""When alerts go out, as Airflow wires them, and to whom (runbook: docs/runbook.md).

* **Task failure** (`failure_notifier`): ``on_failure_callback`` fires once per task instance,
  after its last retry (retries with backoff happen before it), so one failed table yields one
  mail naming DAG, task, table, LSN window (from the table's ``plan`` XCom), try, error and log URL.
  Errors no retry can fix (``orchestration.tasks.NOT_RETRYABLE``) fail the task in its first try,
  so that mail goes out at once.
* **Run summary** (`run_failure_summary`): the DAG-level ``on_failure_callback``. It mails only when
  the per-task mails do not already tell the story: when two or more tasks failed together (one
  mail listing them all) or when the run failed without a failed task (e.g. ``dagrun_timeout``).
  It reads the run's failed tasks from Airflow (through the supervisor, else the metadata DB).
* **Deadline Alert** (`deadline_alert`): a `DeadlineAlert` whose callback is the provider's
  `SmtpNotifier`, run by the triggerer when a run is still going ``interval`` after it was queued.
* **Recipients** (`alert_emails`): the source's on-call list, else ``DEFAULT_ALERT_EMAILS``.
* **Chat webhook** (optional, `alert_webhook_conn_id` in a source's YAML): task failures, run
  summaries and health alerts are also posted to a Slack / Teams incoming webhook.
  Deadline Alerts are e-mail only (their callback runs in the triggerer through `SmtpNotifier`).

The texts live in ``alerts.messages``, the sending (SMTP, webhook; the health DAG's plain alerts)
in ``alerts.channels``. Nothing here opens a connection at import or DAG-parse time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from include.cdc_pipeline.alerts.channels import send_alert, send_webhook
from include.cdc_pipeline.alerts.messages import deadline_mail, failure_details, failure_mail, summary_mail
from include.cdc_pipeline.config import SourceConfig

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

DEFAULT_ALERT_EMAILS = ("oncall@example.com",)


class CdcFailureNotifier(SmtpNotifier):
    """SmtpNotifier whose subject and body are built in Python from the failure context, plus the
    same alert to a chat webhook when one is configured.

    (Jinja alone cannot reach the plan XCom of another task safely, nor quote an error text that
    itself contains ``{{``.)
    """

    def __init__(self, *, webhook_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.webhook_conn_id = webhook_conn_id

    def notify(self, context: Any) -> None:
        self.subject, self.html_content = failure_mail(failure_details(dict(context)))
        super().notify(context)
        if self.webhook_conn_id:
            send_webhook(self.webhook_conn_id, self.subject, self.html_content)


def alert_emails(source: SourceConfig | None) -> list[str]:
    """The source's on-call list, else the default one."""
    return list(source.alert_emails) if source is not None and source.alert_emails else list(DEFAULT_ALERT_EMAILS)


def failure_notifier(source: SourceConfig) -> SmtpNotifier:
    """One e-mail to the source's on-call list when a task fails for good (and its webhook, if any)."""
    return CdcFailureNotifier(
        to=alert_emails(source), smtp_conn_id=source.smtp_conn_id, webhook_conn_id=source.alert_webhook_conn_id
    )


def task_failure_notifier(to: Sequence[str], smtp_conn_id: str = "smtp_default") -> SmtpNotifier:
    """The same per-task failure mail for tasks of no single source (the health DAG's defaults)."""
    return CdcFailureNotifier(to=list(to), smtp_conn_id=smtp_conn_id)


# -- run-level summary ----------------------------------------------------------------------------
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


class RunFailureSummary:
    """DAG ``on_failure_callback``: one summary mail when several tasks failed (or none did)."""

    def __init__(
        self, to: Sequence[str], smtp_conn_id: str = "smtp_default", webhook_conn_id: str | None = None
    ) -> None:
        self.to = list(to)
        self.smtp_conn_id = smtp_conn_id
        self.webhook_conn_id = webhook_conn_id
        self.__name__ = "cdc_run_failure_summary"

    def __call__(self, context: Context) -> None:
        dag = context.get("dag")
        dag_run = context.get("dag_run")
        dag_id = getattr(dag, "dag_id", "") or getattr(dag_run, "dag_id", "?")
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or "?"
        failed = _failed_tasks(dag_id, run_id)
        if failed is not None and len(failed) == 1:
            log.info("%s %s: one failed task, its own mail is enough; no summary", dag_id, run_id)
            return
        subject, body = summary_mail(dag_id, run_id, failed, context.get("reason"))
        send_alert(self.to, subject, body, smtp_conn_id=self.smtp_conn_id, webhook_conn_id=self.webhook_conn_id)


def run_failure_summary(source: SourceConfig) -> RunFailureSummary:
    return RunFailureSummary(alert_emails(source), source.smtp_conn_id, source.alert_webhook_conn_id)


# -- Deadline Alerts --------------------------------------------------------------------------------
def deadlines_enabled() -> bool:
    """False when ``CDC_DEADLINES=off``: for runs under ``airflow dags test`` / ``dag.test()`` only.

    Airflow 3.3's ``dag.test()`` cannot finish a *successful* run of a DAG with a DeadlineAlert:
    ``DagRun.update_state`` looks the alerts up by id, but the test path hands it their
    serialized dicts (``AttributeError: 'dict' object has no attribute 'hex'``). Deadlines never
    fire there anyway (no run is queued), so the local dag-test paths (the demo, the end-to-end
    tests) switch them off; the scheduler path (`make airflow`, Astronomer) keeps them.
    """
    return os.environ.get("CDC_DEADLINES", "on").lower() not in ("off", "0", "false")


def deadline_alert(
    interval: timedelta,
    to: Iterable[str],
    smtp_conn_id: str = "smtp_default",
    dag_label: str = "",
) -> Any | None:
    """A DeadlineAlert e-mailing ``to`` when a run is not done ``interval`` after it was queued
    (None when deadlines are switched off, see ``deadlines_enabled``).

    The callback is the SMTP provider's notifier run asynchronously in the **triggerer**
    (``AsyncCallback``), so it fires only with a scheduler and a triggerer running (not under
    ``dag.test()`` / ``airflow dags test``, which never queue a run).
    """
    if not deadlines_enabled():
        return None
    from airflow.sdk import (  # type: ignore[attr-defined]  # task-sdk 1.3's __init__.pyi omits these exports
        AsyncCallback,
        DeadlineAlert,
        DeadlineReference,
    )

    subject, html_content = deadline_mail(interval, dag_label)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": list(to),
                "smtp_conn_id": smtp_conn_id,
                "subject": subject,
                "html_content": html_content,
            },
        ),
    )


def source_deadline_alert(source: SourceConfig, dbt_dag_id: str | None = None) -> Any | None:
    """The Deadline Alert of the source's CDC DAG (``deadline`` in its YAML) or, given
    ``dbt_dag_id``, of its dbt DAG (``dbt_deadline``, else ``deadline``); None when unset."""
    interval = (source.dbt_deadline or source.deadline) if dbt_dag_id else source.deadline
    if interval is None:
        return None
    return deadline_alert(interval, alert_emails(source), source.smtp_conn_id, dbt_dag_id or source.dag_id)
