"""What an alert says: the subjects and HTML bodies of the failure, run-summary and Deadline
mails, the plain-text form of an alert for a chat webhook, and the failure details read from an
Airflow callback context (DAG, task, table, LSN window from the mapped table task's input, try,
error, log URL).

Texts only: sending lives in ``alerts.channels``, the Airflow callbacks that decide when to send
in ``alerts.callbacks``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)


def _row(name: str, value: Any, pre: bool = False) -> str:
    text = html.escape("" if value is None else str(value))
    return f"<tr><td><b>{name}</b></td><td>{f'<pre>{text}</pre>' if pre else text}</td></tr>"


def _link_row(name: str, url: str | None) -> str:
    if not url:
        return _row(name, "n/a")
    safe = html.escape(url, quote=True)
    return f'<tr><td><b>{name}</b></td><td><a href="{safe}">{safe}</a></td></tr>'


def _table_of(context: dict[str, Any], ti: Any) -> str | None:
    """The table a task of the CDC DAG works on: its mapped instance is named by table (the task
    sets ``cdc_table`` in its context; the rendered map index keeps it)."""
    named = context.get("cdc_table") or getattr(ti, "rendered_map_index", None)
    return str(named) if named else None


def _table_in(task: str) -> str | None:
    """The table of a failed-task label ``tables.extract_load[dbo_x]`` (mapped instances are listed
    with their name in brackets; ``plan`` and ``publish`` serve every table)."""
    return task[task.index("[") + 1 : -1] if task.endswith("]") and "[" in task else None


def _window_of(context: dict[str, Any]) -> dict[str, Any] | None:
    """The table's planned window (mode, capture instance, lower/upper LSN): the table task puts
    it in its context (``cdc_window``) as soon as it knows it."""
    window = context.get("cdc_window")
    return dict(window) if isinstance(window, dict) else None


def failure_details(context: dict[str, Any]) -> dict[str, Any]:
    """What the on-call needs to know about a failed task, from the callback context."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    task_id = getattr(ti, "task_id", None) or "?"
    table = (context.get("params") or {}).get("cdc_table") or _table_of(context, ti)
    window = _window_of(context)
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


def summary_mail(dag_id: str, run_id: str, failed: Sequence[str] | None, reason: str | None) -> tuple[str, str]:
    """Subject and HTML body of the run summary: the failed tasks (None: unknown) and their tables."""
    tables = sorted({name for t in failed or [] if (name := _table_in(t))})
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


# -- Deadline Alerts: Jinja templates the SMTP notifier renders in the triggerer ------------------
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


def deadline_mail(interval: timedelta, dag_label: str = "") -> tuple[str, str]:
    """Subject and HTML body templates (Jinja, rendered when the deadline fires) of a Deadline mail."""
    fields = {"label": dag_label or "{{ dag_run.dag_id }}", "interval": _human(interval)}
    return _DEADLINE_SUBJECT.format(**fields), _DEADLINE_BODY.format(**fields)


def _human(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- chat -----------------------------------------------------------------------------------------
def webhook_text(subject: str, html_content: str) -> str:
    """The alert as plain text for a chat message: subject, then one line per table row / paragraph."""
    body = re.sub(r"</(tr|p|h3|li)>|<br\s*/?>", "\n", html_content)
    body = re.sub(r"</td>\s*<td>", ": ", body)
    body = html.unescape(re.sub(r"<[^>]+>", "", body))
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return "\n".join([f"*{subject}*", *lines])
