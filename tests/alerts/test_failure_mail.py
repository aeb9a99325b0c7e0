"""Failure e-mail through a real SMTP server: one mail per incident, after the retries of a transient
error; several tables failing together for one cause are one mail."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dev.smtp_sink import body_text
from tests.alerts.sample_dags import LOWER, UPPER


@pytest.fixture
def alert_dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The sample DAGs, found by dag.test() in a dags folder of their own."""
    from airflow import settings

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "alert_samples.py").write_text(
        textwrap.dedent(
            """
            # airflow dag file for the alert tests
            from tests.alerts.sample_dags import build

            one = build("alertsone", ["dbo_invoices"])
            two = build("alertstwo", ["dbo_invoices", "dbo_payments"])
            """
        )
    )
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    from tests.alerts.sample_dags import build

    return {"one": build("alertsone", ["dbo_invoices"]), "two": build("alertstwo", ["dbo_invoices", "dbo_payments"])}


def test_one_failed_task_sends_exactly_one_mail_after_retries(mailbox, alert_dags) -> None:
    # Given a DAG whose apply of dbo_invoices always fails (2 retries),
    dag = alert_dags["one"]
    # when it runs,
    run = dag.test()
    # then the task failed after its last try, and exactly one mail names everything on-call needs.
    assert run.state == "failed"
    (ti,) = [t for t in run.get_task_instances() if t.state == "failed"]
    assert (ti.task_id, ti.rendered_map_index, ti.try_number) == ("tables.apply", "dbo_invoices", 3)
    mails = mailbox.mails(expect=1)
    mailbox.mails(expect=2, timeout=1.0)  # give a second (unwanted) mail the chance to arrive
    mails = mailbox.mails()
    assert len(mails) == 1, [m["Subject"] for m in mails]
    mail = mails[0]
    subject, text = mail["Subject"], body_text(mail)
    assert subject == "[CDC INCIDENT alertsone-1] alertsone: injected failure: MERGE exploded (RuntimeError) — 1 table"
    assert {a.addr_spec for a in mail["To"].addresses} == {"oncall@example.com", "dba@example.com"}
    for expected in (
        "Failing now: 1 table: dbo_invoices",
        "alertsone_cdc.tables.apply (try 3 of 3, run manual__",
        f"LSN window ({LOWER}, {UPPER}] stream on dbo_x",
        "Error: injected failure: MERGE exploded",
        "RuntimeError",
        "failed after its retries",
        "First log: http",
        "Runbook: docs/runbook.md#task-failed-errors-by-cause",
    ):
        assert expected in text, (expected, text)


def test_several_tables_failing_together_for_one_cause_page_once_then_name_the_rest(mailbox, alert_dags) -> None:
    # Given two tables failing for the same cause in the same run,
    run = alert_dags["two"].test()
    assert run.state == "failed"
    # then the first failure pages, and the end of the run names the other table in one update,
    mailbox.mails(expect=2)
    mailbox.mails(expect=3, timeout=1.0)
    subjects = [m["Subject"] for m in mailbox.mails()]
    assert subjects[0] == (
        "[CDC INCIDENT alertstwo-1] alertstwo: injected failure: MERGE exploded (RuntimeError) — 1 table"
    )
    assert subjects[1].startswith("[CDC INCIDENT alertstwo-1 UPDATE] alertstwo: 1 more failing")
    # and the incident holds both tables (the status page shows them; so does the resolved mail).
    from include.cdc_pipeline.alerts.state import Variables, ledger_key

    [incident] = Variables().get(ledger_key("alertstwo"))["incidents"]
    assert sorted(incident["tables"]) == ["dbo_invoices", "dbo_payments"] and incident["status"] == "open"
    # A second run failing the same way sends nothing.
    assert alert_dags["two"].test().state == "failed"
    mailbox.mails(expect=3, timeout=1.0)
    assert len(mailbox.mails()) == 2
