"""On-call notifications: e-mail through the SMTP provider's notifier.

`on_failure_callback` fires once per task instance, after its last retry, so one failed table
yields one mail (retries with backoff happen before it).
"""

from __future__ import annotations

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from include.cdc_pipeline.config import SourceConfig

_SUBJECT = "[CDC FAILED] {{ dag.dag_id }}.{{ ti.task_id }} (try {{ ti.try_number }})"
_BODY = """
<h3>Task failed after its last retry</h3>
<table>
<tr><td>DAG</td><td>{{ dag.dag_id }}</td></tr>
<tr><td>Task</td><td>{{ ti.task_id }}</td></tr>
<tr><td>Run</td><td>{{ run_id }}</td></tr>
<tr><td>Try</td><td>{{ ti.try_number }}</td></tr>
<tr><td>Table</td><td>{{ params.get('cdc_table', ti.task_id.split('.')[0]) }}</td></tr>
<tr><td>Error</td><td><pre>{{ exception }}</pre></td></tr>
<tr><td>Log</td><td><a href="{{ ti.log_url }}">{{ ti.log_url }}</a></td></tr>
</table>
"""


def failure_notifier(source: SourceConfig) -> SmtpNotifier:
    """One e-mail to the source's on-call list when a task fails for good."""
    return SmtpNotifier(
        to=list(source.alert_emails),
        smtp_conn_id=source.smtp_conn_id,
        subject=_SUBJECT,
        html_content=_BODY,
    )
