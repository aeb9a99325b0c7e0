"""Pytest plugin: the SQL Server CDC emulator as a server process for the whole test session.

``mssql_server`` starts ``python -m dev.mssql_emulator serve`` (own process group, background
capture job every 0.5 s) on a free port with a database file in a temporary directory, and stops
it by the pid it started at session end, checking that the process is gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from dev.mssql_emulator.process import ServerProcess, start_server
from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD


@pytest.fixture(scope="session")
def mssql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("mssql_emulator")
    server = start_server(directory / "billing.duckdb", capture_interval=0.5, log_path=directory / "server.log")
    yield server
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def mssql_airflow_conn(server: ServerProcess, database: str = "billing") -> dict[str, Any]:
    """The Airflow connection (JSON form) to the emulator server: a plain mssql connection, the
    provider's MsSqlHook reaches it with pymssql over TDS exactly as it reaches SQL Server."""
    return {
        "conn_type": "mssql",
        "host": server.host,
        "port": server.port,
        "schema": database,
        "login": DEFAULT_LOGIN,
        "password": DEFAULT_PASSWORD,
    }


def pymssql_connect(
    server: ServerProcess, database: str = "billing", *, autocommit: bool = False, password: str = DEFAULT_PASSWORD
) -> Any:
    """A pymssql connection to the emulator server (TDS), as a test's own SQL client."""
    import pymssql

    return pymssql.connect(
        server=server.host,
        port=str(server.port),
        user=DEFAULT_LOGIN,
        password=password,
        database=database,
        autocommit=autocommit,
        login_timeout=10,
    )
