"""Chat webhook (Slack / Teams incoming webhook): the alert e-mail's content also goes to a real
HTTP endpoint started by the test; a webhook outage never stops the e-mail."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from dev.smtp_sink import body_text
from include.cdc_pipeline.alerts.channels import send_alert
from include.cdc_pipeline.alerts.incidents import Finding, decide
from include.cdc_pipeline.alerts.messages import incident_mail, webhook_text


@pytest.fixture
def webhook() -> Iterator[dict[str, Any]]:
    """A local HTTP endpoint recording the JSON bodies POSTed to it (a thread of this process)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_port}/hooks/oncall", "received": received}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _failure() -> tuple[str, str]:
    finding = Finding(
        table="dbo_invoices", fingerprint="f1", origin="task", title="MERGE exploded (RuntimeError)",
        error="MERGE exploded\nRuntimeError", kind="other", runbook="Task failed (errors by cause)",
        at="2026-03-01T02:00:00+00:00", log_url="http://airflow/log", run="billing_cdc/manual__1",
        where="billing_cdc.dbo_invoices.apply (try 4 of 4, run manual__1); LSN window (0A, 2A] stream on dbo_invoices",
    )  # fmt: skip
    _, [opened] = decide(
        None, [finding], datetime(2026, 3, 1, 2, tzinfo=UTC), name="billing", round_pass=False,
        realert_after=timedelta(hours=4),
    )  # fmt: skip
    return incident_mail(opened, "billing", timedelta(hours=4))


def test_alert_goes_to_mail_and_webhook(mailbox, webhook, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CHAT_ONCALL", json.dumps({"conn_type": "http", "host": webhook["url"]}))
    subject, body = _failure()
    send_alert(["oncall@example.com"], subject, body, webhook_conn_id="chat_oncall")
    [mail] = mailbox.mails(expect=1)
    assert mail["Subject"] == subject and "MERGE exploded" in body_text(mail)
    [posted] = webhook["received"]
    text = posted["text"]
    assert text.splitlines()[0] == f"*{subject}*"
    for line in ("Failing now: 1 table: dbo_invoices", "Cause: MERGE exploded (RuntimeError)"):
        assert line in text.splitlines(), (line, text)
    assert "LSN window (0A, 2A] stream on dbo_invoices" in text and "<td>" not in text


def test_webhook_outage_never_stops_the_mail(mailbox, webhook, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CHAT_DOWN", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/x"}))
    subject, body = _failure()
    send_alert(["oncall@example.com"], subject, body, webhook_conn_id="chat_down")
    assert len(mailbox.mails(expect=1)) == 1
    assert webhook["received"] == []


def test_webhook_text_is_plain() -> None:
    text = webhook_text(
        "[CDC INCIDENT billing-1] billing", "<h3>CDC health</h3><table><tr><td>a &amp; b</td><td>1</td></tr></table>"
    )
    assert text == "*[CDC INCIDENT billing-1] billing*\nCDC health\na & b: 1"
