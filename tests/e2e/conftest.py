"""End-to-end tests run DAGs with dag.test(): they need Airflow's metadata DB (SQLite, per session)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_mssql import mssql_airflow_conn

ROOT = Path(__file__).resolve().parents[2]
SALT = "e2e-salt"


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


def billing_config(directory: Path, database: str) -> Path:
    """A copy of include/config/sources/billing.yaml that writes to Snowflake database ``database``."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "include/config/sources/billing.yaml").read_text()
    (directory / "billing.yaml").write_text(text.replace("database: ANALYTICS", f"database: {database}"))
    return directory


def wait_for_capture(conn: Any) -> None:
    """Capture is asynchronous (the server's job scans every 0.5 s); scan now instead of waiting."""
    conn.cursor().execute("EXEC sys.sp_cdc_scan")
    conn.commit()


def connect_airflow(
    monkeypatch: pytest.MonkeyPatch,
    configs: Path,
    mssql_server: Any,
    local_snowflake: Any,
    database: str,
    source_db: str,
) -> None:
    """Point the DAGs' connections, config directory and hashing salt at the test's stack."""
    monkeypatch.setenv("CDC_CONFIG_DIR", str(configs))
    monkeypatch.setenv("CDC_DEADLINES", "off")  # dag.test() cannot finish runs with deadlines in 3.3
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(mssql_airflow_conn(mssql_server, source_db)))
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(local_snowflake.airflow_conn(database=database)))
    monkeypatch.setenv("AIRFLOW_VAR_CDC_HASH_SALT_SECRET", SALT)


def run_cdc_dag(configs: Path) -> Any:
    """One run of the billing CDC DAG with dag.test() (connections set by connect_airflow)."""
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

    return build_cdc_dag("billing", directory=configs).test()
