"""How an alert is sent now: one mail through an Airflow SMTP connection (the SMTP provider's
hook) and, when configured, the same alert to a Slack / Teams incoming webhook.

No texts here (``alerts.messages``) and no Airflow callbacks (``alerts.callbacks``). Every incident
notice comes through here, Deadline Alerts' included (``alerts.desk.deadline_missed`` runs the
desk in the triggerer). The webhook is posted after the mail went out: a notice whose mail failed
is sent again, both channels, at the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from include.cdc_pipeline.alerts.messages import webhook_text

log = logging.getLogger(__name__)


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
