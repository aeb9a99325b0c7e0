"""Pytest plugin: a local Snowflake server (fakesnow over http) for the whole test session.

Register from tests/conftest.py with ``pytest_plugins = ["tests.fixtures_snowflake"]``.

- ``local_snowflake`` (session): starts ``dev.snowflake_local`` on a free port in a temporary
  directory, yields a :class:`LocalSnowflake`, and at session end stops the server by the pid it
  started and checks the process is gone (a leaked server would hold the port and the files).
- ``snowflake_default_env`` (function): sets ``AIRFLOW_CONN_SNOWFLAKE_DEFAULT`` so production code
  (``CdcSnowflakeHook(snowflake_conn_id="snowflake_default")``) reaches that server.

Each test should use its own database (or schema) name: the server is shared by the session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dev import snowflake_local
from dev.procs import free_port  # the one free-port helper (re-exported for the tests)


@dataclass(frozen=True)
class LocalSnowflake:
    """A running local Snowflake server and helpers to reach it."""

    port: int
    dir: Path
    pid: int
    host: str = snowflake_local.DEFAULT_HOST

    def connection_params(self, database: str | None = None, schema: str | None = None) -> dict[str, Any]:
        """``snowflake.connector.connect`` kwargs (with timeouts: a server error never hangs a test)."""
        return snowflake_local.connection_params(self.port, self.host, database, schema)

    def connect(self, database: str | None = None, schema: str | None = None, **kwargs: Any) -> Any:
        """A ``snowflake.connector`` connection; extra kwargs (e.g. ``paramstyle``) pass through."""
        import snowflake.connector

        return snowflake.connector.connect(**{**self.connection_params(database, schema), **kwargs})

    def airflow_conn(
        self,
        database: str = "ANALYTICS",
        schema: str = "RAW",
        warehouse: str = "LOCAL_WH",
        role: str = "SYSADMIN",
    ) -> dict[str, Any]:
        """An Airflow connection (JSON form) of type snowflake that reaches this server."""
        return snowflake_local.airflow_connection(self.port, self.host, database, schema, warehouse, role)

    def airflow_conn_uri(self, database: str = "ANALYTICS", schema: str = "RAW") -> str:
        """The value for ``AIRFLOW_CONN_<ID>``: Airflow accepts JSON there as well as a URI."""
        return json.dumps(self.airflow_conn(database, schema))

    def airflow_env(
        self, conn_id: str = "snowflake_default", database: str = "ANALYTICS", schema: str = "RAW"
    ) -> dict[str, str]:
        """Environment defining the connection ``conn_id`` (for os.environ or a subprocess)."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.airflow_conn_uri(database, schema)}


@pytest.fixture(scope="session")
def local_snowflake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSnowflake]:
    """One local Snowflake server for the test session, stopped (by pid) at the end."""
    db_dir = tmp_path_factory.mktemp("local_snowflake")
    port = free_port()
    pid = snowflake_local.start(db_dir, port)
    try:
        yield LocalSnowflake(port=port, dir=db_dir, pid=pid)
    finally:
        snowflake_local.stop_pid(pid)
        (db_dir / snowflake_local.PID_FILE).unlink(missing_ok=True)
        assert not snowflake_local.pid_alive(pid), f"local Snowflake pid {pid} still running"


@pytest.fixture
def snowflake_default_env(local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch) -> LocalSnowflake:
    """``AIRFLOW_CONN_SNOWFLAKE_DEFAULT`` pointing at the session's local Snowflake."""
    for key, value in local_snowflake.airflow_env().items():
        monkeypatch.setenv(key, value)
    return local_snowflake
