"""End-to-end tests run DAGs with dag.test(): they need Airflow's metadata DB (SQLite, per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()
