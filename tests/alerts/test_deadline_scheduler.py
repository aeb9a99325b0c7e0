"""Deadline Alert e-mail under a real scheduler, DAG processor and triggerer: the triggerer runs
the incident desk's callback (Variables through its supervisor, the lease, SMTP).

Deadline Alerts fire only when a scheduler queues the run (dag.test() never sets ``queued_at``),
and the e-mail callback runs in the triggerer. The test migrates a throw-away AIRFLOW_HOME, starts
`airflow scheduler`, `airflow dag-processor` and `airflow triggerer`, each in a session of its own,
with a DAG scheduled ``@once`` (unpaused: the scheduler queues its run as soon as it is parsed)
whose run cannot finish (``max_active_tasks=0``: its task is never queued, so no worker and no API
server are needed) and misses its 5 s deadline; it waits for the mail in the SMTP sink and ends
every process of the sessions it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dev import procs

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
COMPONENTS = ("scheduler", "dag-processor", "triggerer")  # no API server: no task ever runs

DAG_FILE = '''
"""Airflow dag for the deadline test: a run that cannot finish misses its 5 s Deadline Alert."""
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from include.cdc_pipeline.alerts.callbacks import deadline_alert

with DAG(
    dag_id="deadline_probe",
    schedule="@once",  # unpaused at creation: the scheduler queues the run as soon as it is parsed
    start_date=datetime(2026, 1, 1),
    max_active_runs=1,
    max_active_tasks=0,  # the task is never queued: the run stays running past its deadline
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
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "1",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp_sink.airflow_conn()),
            "PYTHONPATH": str(ROOT),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    started = [procs.spawn([airflow, c], env, tmp_path / f"{c}.log") for c in COMPONENTS]
    try:
        deadline = time.monotonic() + 240
        mails = []
        while time.monotonic() < deadline and not mails:
            time.sleep(1)
            mails = [m for m in smtp_sink.mails() if "[CDC INCIDENT deadline_probe-1]" in m["Subject"]]
        assert mails, f"no deadline mail (see the logs in {tmp_path})"
        # the triggerer ran the incident desk: one incident, named after the DAG and its deadline
        assert "Deadline missed: deadline_probe run still running 5s after it was queued" in mails[0]["Subject"]
    finally:
        # the scheduler ignores SIGTERM and serves logs from a child: end each whole session the
        # test started, all at once (nothing to keep: SIGKILL after 2 s), then check nothing is left.
        with ThreadPoolExecutor(len(started)) as pool:
            # stop_pid raises naming any process that outlived SIGKILL
            list(pool.map(lambda proc: procs.stop_pid(proc.pid, grace=2), started))
        for proc in started:
            proc.wait(timeout=10)
