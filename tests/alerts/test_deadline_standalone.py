"""Deadline Alert e-mail under a real scheduler + triggerer (`airflow standalone`), ~30 s: the
triggerer runs the incident desk's callback (Variables through its supervisor, the lease, SMTP).

Deadline Alerts fire only when a scheduler queues the run (dag.test() never sets ``queued_at``),
and the e-mail callback runs in the triggerer. The test starts `airflow standalone` in its own
process group with a throw-away AIRFLOW_HOME and a DAG scheduled ``@once`` (unpaused: the scheduler
queues its run as soon as it is parsed) whose task outlives its 5 s deadline,
waits for the mail in the SMTP sink, and ends every process of the session it started.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dev import procs
from tests.fixtures_snowflake import free_port  # the one free-port helper of the tests

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

DAG_FILE = '''
"""Airflow dag for the deadline test: one task sleeping past a 5 s Deadline Alert."""
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from include.cdc_pipeline.alerts.callbacks import deadline_alert

with DAG(
    dag_id="deadline_probe",
    schedule="@once",  # unpaused at creation: the scheduler queues the run as soon as it is parsed
    start_date=datetime(2026, 1, 1),
    max_active_runs=1,
    deadline=deadline_alert(timedelta(seconds=5), ["oncall@example.com"], "smtp_default", "deadline_probe"),
    tags=["test"],
    doc_md="deadline test",
) as dag:

    @task(owner="data-platform", retries=1)
    def slow() -> None:
        time.sleep(60)

    slow()
'''


def test_missed_deadline_sends_mail(tmp_path: Path, smtp_sink) -> None:
    smtp_sink.clear()
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    (dags / "deadline_probe.py").write_text(textwrap.dedent(DAG_FILE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    port = free_port()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(port),
            # The LocalExecutor's workers reach the execution API at base_url (default port 8080:
            # another Airflow, or nothing): point them at this instance's own API server.
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp_sink.airflow_conn()),
            "PYTHONPATH": str(ROOT),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    log = tmp_path / "standalone.log"
    proc = procs.spawn([airflow, "standalone"], env, log)
    try:
        deadline = time.monotonic() + 240
        mails = []
        while time.monotonic() < deadline and not mails:
            time.sleep(2)
            mails = [m for m in smtp_sink.mails() if "[CDC INCIDENT deadline_probe-1]" in m["Subject"]]
        assert mails, f"no deadline mail (see {log})"
        # the triggerer ran the incident desk: one incident, named after the DAG and its deadline
        assert "Deadline missed: deadline_probe run still running 5s after it was queued" in mails[0]["Subject"]
    finally:
        # standalone exits on SIGTERM but its scheduler ignores it, and each task runs in a process
        # group of its own: end the whole session the test started, then check nothing is left.
        procs.stop_pid(proc.pid, grace=5)  # raises naming any process that outlived SIGKILL
        proc.wait(timeout=10)
