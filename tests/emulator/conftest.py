"""Fixtures for the SQL Server CDC emulator tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from dev.mssql_emulator import Engine
from dev.mssql_emulator.dbapi import Connection

T0 = datetime(2026, 1, 1, 9, 0, 0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running emulator test (excluded with -m 'not slow')")


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An in-memory emulated database with a frozen clock (deterministic commit times)."""
    eng = Engine(":memory:")
    eng.clock.set(T0)
    try:
        yield eng
    finally:
        eng.close()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """A pymssql-like connection in autocommit mode (each statement commits; BEGIN TRAN works)."""
    c = engine.connect(autocommit=True)
    try:
        yield c
    finally:
        c.close()


class Sql:
    """Tiny helper: run T-SQL, get rows."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cur = conn.cursor()

    def __call__(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.cur.execute(sql, params)
        return self.cur.fetchall() if self.cur.description else []

    def one(self, sql: str, params: Any = None) -> Any:
        rows = self(sql, params)
        return rows[0][0] if rows else None

    def scan(self) -> None:
        self.cur.execute("EXEC emu.capture")


@pytest.fixture
def sql(conn: Connection) -> Sql:
    return Sql(conn)


@pytest.fixture
def tracked(sql: Sql) -> Sql:
    """dbo.t (id PK, name, amount) with CDC enabled: instance dbo_t."""
    sql("CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, amount decimal(18,2) NULL)")
    sql("EXEC sys.sp_cdc_enable_db")
    sql(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, "
        "@supports_net_changes = 1"
    )
    return sql


def ct_rows(sql: Sql, instance: str = "dbo_t", columns: str = "id, name, amount") -> list[tuple[Any, ...]]:
    """Change rows in apply order: (start_lsn, seqval, operation, update_mask, <columns>)."""
    return sql(
        f"SELECT [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], {columns} "
        f"FROM cdc.[{instance}_CT] ORDER BY [__$start_lsn], [__$seqval], [__$operation]"
    )


@pytest.fixture
def tds(engine: Engine) -> Iterator[Sql]:
    """The same database as ``sql``, through pymssql over TDS (a server thread of this process)."""
    import pymssql

    from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD, serve_in_thread

    server, port = serve_in_thread(engine)
    conn = pymssql.connect(
        server="127.0.0.1", port=str(port), user=DEFAULT_LOGIN, password=DEFAULT_PASSWORD, autocommit=True
    )
    try:
        yield Sql(conn)
    finally:
        conn.close()
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["in-process", "tds"])
def client(request: pytest.FixtureRequest, sql: Sql) -> Sql:
    """The in-process connection, then pymssql over TDS to the same database: a test taking it runs
    once with each, so both paths must give the same values and errors."""
    return sql if request.param == "in-process" else request.getfixturevalue("tds")


def track(sql: Sql, table: str) -> Sql:
    """Enable CDC on the database and on ``dbo.<table>`` (capture instance ``dbo_<table>``)."""
    sql("EXEC sys.sp_cdc_enable_db")
    sql(f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{table}', @role_name = NULL")
    return sql
