"""Shared test set-up: an isolated Airflow home per test session, no real services assumed.

This file is loaded by every pytest run in the project, including `astro dev parse` inside the
Astro image (.astro/test_dag_integrity_default.py), which has Airflow and pytest but none of the
dev packages: it must import nothing beyond the standard library and pytest. Fixtures that start
local services (local Snowflake, the SQL Server CDC emulator, SMTP sink) are registered by
tests/conftest.py; each starts its process and stops it by pid.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Must happen before Airflow is imported anywhere: a throw-away AIRFLOW_HOME with its own SQLite DB.
_HOME = Path(tempfile.mkdtemp(prefix="cdc-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")
