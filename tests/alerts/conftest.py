"""Alert tests: a real SMTP sink (tests/fixtures_smtp.py) and Airflow's metadata DB for dag.test()."""

from __future__ import annotations

import pytest

INCIDENT_PREFIXES = ("cdc_incidents__", "cdc_failure__", "cdc_deadline__", "cdc_incident_lease__")


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture(autouse=True)
def no_incidents(airflow_db: None) -> None:
    """Every test starts without incident state: the DAG runs of these tests share one source name
    (dags/cdc_billing.py builds `billing` from CDC_CONFIG_DIR) and one metadata DB per process."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete, or_

    with create_session() as session:
        session.execute(delete(Variable).where(or_(*(Variable.key.startswith(p) for p in INCIDENT_PREFIXES))))


from tests.integration.conftest import harness  # noqa: E402, F401  (emulator + local Snowflake per test)
