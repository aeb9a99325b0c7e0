"""A DAG run by the demo's ``airflow dags test`` is registered once: the DAG processor's next parse
finds the same DAG (same hash) and adds no second version.

The demo ran ``dags test`` with Deadline Alerts switched off (an Airflow 3.3 defect makes
``dag.test()`` fail a successful run of a DAG with a deadline), so the DAG it wrote had no deadline;
`make airflow`'s DAG processor then wrote the DAG with it, a second version, and ``airflow dags
list`` (one row per serialized version) listed ``billing_cdc`` and ``billing_dbt`` twice.
``dev/dag_test.py`` runs ``dags test`` with the deadline instead. This test runs it on a DAG with a
Deadline Alert in a throw-away Airflow home, then ``airflow dags reserialize`` (what the DAG
processor does), and reads the metadata DB.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# In `make test-all` (32 s): `make demo` runs every DAG through dev/dag_test.py's workaround anyway.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_FILE = '''
"""Airflow dag with a Deadline Alert, for the DAG version test."""
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from include.cdc_pipeline.alerts.callbacks import deadline_alert

with DAG(
    dag_id="versioned_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    deadline=deadline_alert(timedelta(hours=1), ["oncall@example.com"], "smtp_default", "versioned_probe"),
) as dag:

    @task
    def noop() -> int:
        return 1

    noop()
'''


def test_dags_test_writes_the_version_the_dag_processor_writes(tmp_path: Path) -> None:
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    dags.mkdir()
    (dags / "versioned_probe.py").write_text(textwrap.dedent(DAG_FILE))
    db = home / "airflow.db"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CDC_DEADLINES", None)

    # One process, as three CLI calls would do it (an Airflow import each costs seconds): migrate
    # the DB, `python -m dev.dag_test versioned_probe`, `airflow dags reserialize`.
    script = textwrap.dedent(
        """
        import sys
        from airflow.utils import db
        db.initdb()
        from dev import dag_test
        dag_test.main(["versioned_probe"])
        from airflow.__main__ import main
        sys.argv = ["airflow", "dags", "reserialize"]
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"{result.stdout[-3000:]}{result.stderr[-3000:]}"

    with sqlite3.connect(db) as conn:
        versions = conn.execute("SELECT COUNT(*) FROM serialized_dag WHERE dag_id = 'versioned_probe'").fetchone()
        states = conn.execute("SELECT state FROM dag_run WHERE dag_id = 'versioned_probe'").fetchall()
        alerts = conn.execute("SELECT COUNT(*) FROM deadline_alert").fetchone()
        open_deadlines = conn.execute("SELECT COUNT(*) FROM deadline").fetchone()
    assert states == [("success",)]  # the run with its deadline succeeded (the 3.3 defect is worked around)
    assert alerts == (1,)  # the DAG as written by `dags test` carries its Deadline Alert
    assert open_deadlines == (0,)  # the successful run pruned its deadline, as under the scheduler
    assert versions == (1,)  # the DAG processor's parse found the same DAG: one version, listed once
