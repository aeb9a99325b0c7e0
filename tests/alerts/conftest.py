"""Alert tests: a real SMTP sink (tests/fixtures_smtp.py) and Airflow's metadata DB for dag.test()."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


from tests.integration.conftest import harness  # noqa: E402, F401  (emulator + local Snowflake per test)
