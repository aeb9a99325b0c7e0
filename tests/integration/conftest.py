"""Integration fixtures: an in-process SQL Server CDC emulator per test + the session's local Snowflake.

Each test gets its own emulator database (in memory) and its own Snowflake database name, so
tests never see each other's data; the pipeline under test is the production TablePipeline.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from dev.localpipeline import MemoryHints
from dev.mssql_emulator import Engine
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.source import CdcSource
from include.cdc_pipeline.warehouse import Warehouse

SALT = "test-salt"


@dataclass
class Harness:
    """One emulated SQL Server database, one Snowflake database, and pipelines between them."""

    engine: Engine
    snowflake: Any  # tests.fixtures_snowflake.LocalSnowflake
    database: str
    hints: dict[str, MemoryHints] = field(default_factory=dict)
    _sql: Any = None

    def sql(self, *statements: str, params: Sequence[Any] | None = None) -> None:
        """Run T-SQL statements on the source, each committed on its own."""
        if self._sql is None:
            self._sql = self.engine.connect()
        cursor = self._sql.cursor()
        for statement in statements:
            cursor.execute(statement, params)
            self._sql.commit()

    def query(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self.engine.connect().cursor()
        cursor.execute(statement, params)
        return list(cursor.fetchall())

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

    def pipeline(self, config: SourceConfig, table: int = 0, counter: list[Warehouse] | None = None) -> TablePipeline:
        def warehouse() -> Warehouse:
            wh = Warehouse(self.snowflake.connect())
            if counter is not None:
                counter.append(wh)
            return wh

        spec = config.tables[table]
        return TablePipeline(
            config,
            spec,
            lambda: CdcSource(self.engine.connect()),
            warehouse,
            self.hints.setdefault(spec.name, MemoryHints()),
            lambda: SALT,
        )

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
    engine.close()


@pytest.fixture
def make_harness(local_snowflake: Any) -> Iterator[Callable[[], Harness]]:
    engines: list[Engine] = []

    def make() -> Harness:
        engine = Engine(":memory:")
        engines.append(engine)
        h = Harness(engine, local_snowflake, f"IT_{uuid.uuid4().hex[:8].upper()}_{next(_ids)}")
        h.sql("EXEC sys.sp_cdc_enable_db")
        return h

    yield make
    for engine in engines:
        engine.close()
