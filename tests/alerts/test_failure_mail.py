"""Failure e-mail through a real SMTP server: one mail per task that fails for good, after retries."""

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

            one = build("alerts_one_failure", ["dbo_invoices"])
            two = build("alerts_two_failures", ["dbo_invoices", "dbo_payments"])
            """
        )
    )
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    from tests.alerts.sample_dags import build

    return {
        "one": build("alerts_one_failure", ["dbo_invoices"]),
        "two": build("alerts_two_failures", ["dbo_invoices", "dbo_payments"]),
    }


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
    assert "[CDC FAILED] alerts_one_failure.tables.apply" in subject
    assert "table dbo_invoices" in subject and "(try 3)" in subject
    assert set(mail["To"].addresses[i].addr_spec for i in range(2)) == {"oncall@example.com", "dba@example.com"}
    for expected in (
        "alerts_one_failure",
        "tables.apply",
        "dbo_invoices",
        f"({LOWER}, {UPPER}] stream on dbo_x",
        "3 of 3",
        "RuntimeError: injected failure: MERGE exploded",
        "Log",
    ):
        assert expected in text, (expected, text)


def test_several_tables_failing_together_add_one_run_summary(mailbox, alert_dags) -> None:
    # Given two tables failing in the same run,
    dag = alert_dags["two"]
    run = dag.test()
    assert run.state == "failed"
    # then one mail per failed task plus one run summary listing both: three mails, not a storm.
    mails = mailbox.mails(expect=3)
    mailbox.mails(expect=4, timeout=1.0)
    subjects = sorted(m["Subject"] for m in mailbox.mails())
    assert len(subjects) == 3, subjects
    summary = [m for m in mailbox.mails() if m["Subject"].startswith("[CDC RUN FAILED]")]
    assert len(summary) == 1, subjects
    text = body_text(summary[0])
    assert "tables.apply[dbo_invoices]" in text and "tables.apply[dbo_payments]" in text
    assert "2 task(s) failed (dbo_invoices, dbo_payments)" in summary[0]["Subject"]
    assert mails
