"""Integration fixtures: a SQL Server CDC emulator per test + the session's local Snowflake.

Each test gets its own emulator database (in memory, served over TDS from a thread of the test
process) and its own Snowflake database name, so tests never see each other's data. Everything
that talks to the source - the pipeline under test (the production TablePipeline) and the
tests' own T-SQL - goes through pymssql, the driver production uses. The test keeps the
engine object for what SQL Server's operators control: the clock and the capture job.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymssql
import pytest

from dev.localpipeline import MemoryHints
from dev.mssql_emulator import Engine
from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD, EmulatorTCPServer, serve_in_thread
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.source import CdcSource, mssql_python_connect, odbc_connection_string
from include.cdc_pipeline.warehouse import Warehouse

SALT = "test-salt"


@dataclass
class Harness:
    """One emulated SQL Server database, one Snowflake database, and pipelines between them."""

    engine: Engine
    snowflake: Any  # tests.fixtures_snowflake.LocalSnowflake
    database: str
    hints: dict[str, MemoryHints] = field(default_factory=dict)
    source_hints: MemoryHints = field(default_factory=MemoryHints)  # the planning step's record
    _sql: Any = None
    _server: EmulatorTCPServer | None = None
    _port: int = 0
    _conns: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The TDS port of this test's source (served from a thread of the test process)."""
        if self._server is None:
            self._server, self._port = serve_in_thread(self.engine)
        return self._port

    def connect(self) -> Any:
        """A pymssql connection to this test's source (TDS, as MsSqlHook opens it)."""
        conn = pymssql.connect(
            server="127.0.0.1", port=str(self.port), user=DEFAULT_LOGIN, password=DEFAULT_PASSWORD, autocommit=False
        )
        self._conns.append(conn)
        return conn

    def connect_arrow(self) -> Any:
        """An mssql-python connection to this test's source (the change-table read's driver)."""
        return mssql_python_connect(odbc_connection_string("127.0.0.1", self.port, "", DEFAULT_LOGIN, DEFAULT_PASSWORD))

    def replace_engine(self, engine: Engine) -> None:
        """Swap the database behind the server (a source re-created or restored); new connections see it."""
        old, self.engine, self._sql = self.engine, engine, None
        self.close_connections()
        if self._server is not None:
            self._server.engine = engine
        old.close()

    def close_connections(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(pymssql.Error):
                conn.close()
        self._conns.clear()

    def close(self) -> None:
        self.close_connections()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.engine.close()

    def sql(self, *statements: str, params: Sequence[Any] | None = None) -> None:
        """Run T-SQL statements on the source, each committed on its own."""
        if self._sql is None:
            self._sql = self.connect()
        cursor = self._sql.cursor()
        for statement in statements:
            cursor.execute(statement, params)
            self._sql.commit()

    def query(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        cursor = conn.cursor()
        cursor.execute(statement, params)
        rows = list(cursor.fetchall())
        conn.close()
        self._conns.remove(conn)
        return rows

    def capture(self) -> None:
        """Run the capture job once (changes become visible in the change tables)."""
        self.engine.capture_all()

    def source_config(self, tables: list[dict[str, Any]], **overrides: Any) -> SourceConfig:
        return SourceConfig.model_validate(
            {
                "name": "src",
                "target": {"database": self.database},
                "alert_emails": ["oncall@example.com"],
                "chunk_rows": 7,
                "tables": tables,
                **overrides,
            }
        )

    def pipeline(
        self, config: SourceConfig, table: int = 0, counter: list[Warehouse] | None = None, role: str | None = None
    ) -> TablePipeline:
        """The production pipeline of one table; ``role``: the Snowflake role it runs as (default: the
        local server's, SYSADMIN)."""

        def warehouse() -> Warehouse:
            wh = Warehouse(self.snowflake.connect(**({"role": role} if role else {})))
            if counter is not None:
                counter.append(wh)
            return wh

        spec = config.tables[table]
        return TablePipeline(
            config,
            spec,
            lambda: CdcSource(self.connect(), self.connect_arrow),
            warehouse,
            self.hints.setdefault(spec.name, MemoryHints()),
            lambda: SALT,
        )

    def run_source_once(self, config: SourceConfig) -> dict[str, str]:
        """One run as the DAG runs it: every table planned in one step (``source_plan``, the plan
        task's wiring), then each table with work extract-loaded and applied (a snapshot loaded
        whole). Returns each table's mode."""
        from include.cdc_pipeline.source_plan import SourceHints, source_planner

        source = CdcSource(self.connect(), self.connect_arrow)
        names = [t.name for t in config.tables]
        hints = SourceHints(self.source_hints, lambda name: self.hints.setdefault(name, MemoryHints()), names)
        cut = source.max_lsn()
        plan = source_planner(config, source, lambda: Warehouse(self.snowflake.connect()), hints).plan(
            cut and cut.hex, lambda table: False
        )
        hints.save([p.table for p in plan.work])
        for p in plan.work:
            if p.exception is not None:
                raise p.exception
            pipeline = self.pipeline(config, names.index(p.table))
            assert p.window is not None
            if p.window.mode == "snapshot":
                pipeline.snapshot(p.window)
            else:
                pipeline.apply(pipeline.extract_load(p.window))
        return {p.table: p.mode for p in plan.tables}

    def snowflake_rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.snowflake.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            return list(cursor.fetchall())
        finally:
            conn.close()


_ids = itertools.count()


@pytest.fixture
def harness(local_snowflake: Any) -> Iterator[Harness]:
    engine = Engine(":memory:")
    database = f"IT_{uuid.uuid4().hex[:8].upper()}_{next(_ids)}"
    h = Harness(engine, local_snowflake, database)
    h.sql("EXEC sys.sp_cdc_enable_db")
    yield h
    h.close()


@pytest.fixture
def make_harness(local_snowflake: Any) -> Iterator[Callable[[], Harness]]:
    made: list[Harness] = []

    def make() -> Harness:
        h = Harness(Engine(":memory:"), local_snowflake, f"IT_{uuid.uuid4().hex[:8].upper()}_{next(_ids)}")
        made.append(h)
        h.sql("EXEC sys.sp_cdc_enable_db")
        return h

    yield make
    for h in made:
        h.close()
