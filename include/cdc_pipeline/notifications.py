"""On-call notifications: e-mail through the SMTP provider (runbook: docs/runbook.md).

* **Task failure** (`failure_notifier`): ``on_failure_callback`` fires once per task instance,
  after its last retry (retries with backoff happen before it), so one failed table yields one
  mail naming DAG, task, table, LSN window (from the table's ``plan`` XCom), try, error and log URL.
  Errors no retry can fix (``runner.NOT_RETRYABLE``) fail the task in its first try, so that mail
  goes out at once.
* **Run summary** (`run_failure_summary`): the DAG-level ``on_failure_callback``. It mails only when
  the per-task mails do not already tell the story: when two or more tasks failed together (one
  mail listing them all) or when the run failed without a failed task (e.g. ``dagrun_timeout``).
* **Deadline Alert** (`deadline_alert`): a `DeadlineAlert` whose callback is the provider's
  `SmtpNotifier`, run by the triggerer when a run is still going ``interval`` after it was queued.
* **Health alerts** (`send_alert`): plain mails from the ``cdc_health`` DAG.
* **Chat webhook** (optional, `alert_webhook_conn_id` in a source's YAML): task failures, run
  summaries and health alerts are also posted to a Slack / Teams incoming webhook (`send_webhook`).
  Deadline Alerts are e-mail only (their callback runs in the triggerer through `SmtpNotifier`).

Nothing here opens a connection at import or DAG-parse time.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from include.cdc_pipeline.config import SourceConfig

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

DEFAULT_ALERT_EMAILS = ("oncall@example.com",)


def _row(name: str, value: Any, pre: bool = False) -> str:
    text = html.escape("" if value is None else str(value))
    return f"<tr><td><b>{name}</b></td><td>{f'<pre>{text}</pre>' if pre else text}</td></tr>"


def _link_row(name: str, url: str | None) -> str:
    if not url:
        return _row(name, "n/a")
    safe = html.escape(url, quote=True)
    return f'<tr><td><b>{name}</b></td><td><a href="{safe}">{safe}</a></td></tr>'


def _table_of(task_id: str) -> str | None:
    """Task ids of the CDC DAG are ``<schema>_<table>.<step>``: the group is the table."""
    return task_id.split(".", 1)[0] if "." in task_id else None


def _window_of(ti: Any, table: str | None) -> dict[str, Any] | None:
    """The table's plan XCom (mode, capture instance, lower/upper LSN) of this run, if there is one."""
    if ti is None or table is None:
        return None
    try:
        window = ti.xcom_pull(task_ids=f"{table}.plan")
    except Exception as exc:  # the plan task itself may be the one that failed
        log.info("no plan XCom for %s: %s", table, exc)
        return None
    return window if isinstance(window, dict) else None


def failure_details(context: dict[str, Any]) -> dict[str, Any]:
    """What the on-call needs to know about a failed task, from the callback context."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    task_id = getattr(ti, "task_id", None) or "?"
    table = (context.get("params") or {}).get("cdc_table") or _table_of(task_id)
    window = _window_of(ti, table)
    lsn_window = None
    if window:
        lsn_window = f"({window.get('lower') or 'start'}, {window.get('upper') or '?'}] {window.get('mode', '')}"
        if window.get("capture_instance"):
            lsn_window += f" on {window['capture_instance']}"
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # needs the API base URL; never let it stop the mail
        log_url = None
    return {
        "dag_id": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?"),
        "task_id": task_id,
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "table": table,
        "lsn_window": lsn_window,
        "try_number": getattr(ti, "try_number", None),
        "max_tries": getattr(ti, "max_tries", None),
        "error": context.get("exception"),
        "log_url": log_url,
    }


def failure_mail(details: dict[str, Any]) -> tuple[str, str]:
    """Subject and HTML body of the one mail for a task that failed for good."""
    where = f"{details['dag_id']}.{details['task_id']}"
    table = f" table {details['table']}" if details.get("table") else ""
    subject = f"[CDC FAILED] {where}{table} (try {details['try_number']})"
    error = details.get("error")
    error_text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    from airflow.sdk.exceptions import AirflowFailException

    headline = (
        "Task failed at once, without retries: a retry cannot fix this error (see what to do below)"
        if isinstance(error, AirflowFailException)
        else "Task failed after its last retry"
    )
    body = (
        f"<h3>{headline}</h3><table>"
        + _row("DAG", details["dag_id"])
        + _row("Task", details["task_id"])
        + _row("Table", details.get("table") or "n/a")
        + _row("LSN window", details.get("lsn_window") or "n/a (no plan yet in this run)")
        + _row("Run", details.get("run_id"))
        + _row("Try", f"{details['try_number']} of {(details.get('max_tries') or 0) + 1}")
        + _row("Error", error_text, pre=True)
        + _link_row("Log", details.get("log_url"))
        + "</table><p>Runbook: docs/runbook.md, section “Task failed”.</p>"
    )
    return subject, body


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
                session.query(TaskInstance.task_id)
                .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.state == "failed")
                .all()
            )
        return sorted(r[0] for r in rows)
    except Exception as exc:
        log.warning("cannot list the failed tasks of %s %s: %s", dag_id, run_id, exc)
        return None


def summary_mail(dag_id: str, run_id: str, failed: Sequence[str] | None, reason: str | None) -> tuple[str, str]:
    tables = sorted({_table_of(t) or t for t in failed or []})
    subject = f"[CDC RUN FAILED] {dag_id}: {len(failed or [])} task(s) failed" + (
        f" ({', '.join(tables)})" if tables else ""
    )
    items = "".join(f"<li>{html.escape(t)}</li>" for t in failed or []) or "<li>none (see reason)</li>"
    body = (
        "<h3>DAG run failed</h3><table>"
        + _row("DAG", dag_id)
        + _row("Run", run_id)
        + _row("Reason", reason)
        + _row("Tables", ", ".join(tables) or "n/a")
        + f"</table><p>Failed tasks:</p><ul>{items}</ul>"
        "<p>Each failed task also sent its own mail with error and LSN window. Runbook: docs/runbook.md.</p>"
    )
    return subject, body


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
_DEADLINE_SUBJECT = "[CDC DEADLINE MISSED] {label}: run {{{{ dag_run.run_id }}}} still running after {interval}"
_DEADLINE_BODY = (
    "<h3>Deadline missed</h3><table>"
    "<tr><td><b>DAG</b></td><td>{{{{ dag_run.dag_id }}}}</td></tr>"
    "<tr><td><b>Run</b></td><td>{{{{ dag_run.run_id }}}}</td></tr>"
    "<tr><td><b>Queued at</b></td><td>{{{{ dag_run.queued_at }}}}</td></tr>"
    "<tr><td><b>Deadline</b></td><td>{{{{ deadline.deadline_time }}}} (queued + {interval})</td></tr>"
    "<tr><td><b>State</b></td><td>{{{{ dag_run.state }}}}</td></tr>"
    "</table><p>The run is slow or stuck. Runbook: docs/runbook.md, section “Deadline missed”.</p>"
)


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

    label = dag_label or "{{ dag_run.dag_id }}"
    fields = {"label": label, "interval": _human(interval)}
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": list(to),
                "smtp_conn_id": smtp_conn_id,
                "subject": _DEADLINE_SUBJECT.format(**fields),
                "html_content": _DEADLINE_BODY.format(**fields),
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


def _human(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- plain alerts -----------------------------------------------------------------------------------
def send_alert(
    to: Sequence[str],
    subject: str,
    html_content: str,
    smtp_conn_id: str = "smtp_default",
    webhook_conn_id: str | None = None,
) -> None:
    """Send one mail now (health alerts, run summary) through the SMTP connection, and the same
    alert to the chat webhook when one is configured."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=list(to), subject=subject, html_content=html_content, from_email=hook.from_email or None
        )
    log.info("alert sent to %s: %s", ", ".join(to), subject)
    if webhook_conn_id:
        send_webhook(webhook_conn_id, subject, html_content)


def webhook_text(subject: str, html_content: str) -> str:
    """The alert as plain text for a chat message: subject, then one line per table row / paragraph."""
    body = re.sub(r"</(tr|p|h3|li)>|<br\s*/?>", "\n", html_content)
    body = re.sub(r"</td>\s*<td>", ": ", body)
    body = html.unescape(re.sub(r"<[^>]+>", "", body))
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return "\n".join([f"*{subject}*", *lines])


def send_webhook(conn_id: str, subject: str, html_content: str) -> None:
    """POST ``{"text": …}`` to the URL of connection ``conn_id`` (extra ``url``, else its host):
    the payload Slack incoming webhooks and Teams/Power Automate "post a message" flows accept.
    Best effort: a chat outage must not hide the e-mail, so errors are logged, never raised."""
    import requests
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
        url = (conn.extra_dejson or {}).get("url") or conn.host
        if not url or not str(url).startswith(("http://", "https://")):
            raise ValueError(f"connection {conn_id!r} has no webhook URL (extra 'url' or host 'https://…')")
        response = requests.post(url, json={"text": webhook_text(subject, html_content)}, timeout=10)
        response.raise_for_status()
        log.info("alert posted to webhook %s: %s", conn_id, subject)
    except Exception as exc:
        log.error("could not post the alert to webhook %s (the e-mail was sent): %s", conn_id, exc)
