"""Table pipelines wired straight to the local stack, without Airflow.

For the demo's summary, the end-to-end tests and the benchmarks: the same TablePipeline the
DAG runs, with connections opened directly (pymssql, snowflake.connector) and the hint
kept in memory instead of an Airflow Variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dev.localenv import LOCAL_SALT
from include.cdc_pipeline.config import SourceConfig, load_source_config
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.source import CdcSource, mssql_python_connect, odbc_connection_string
from include.cdc_pipeline.warehouse import Warehouse


class MemoryHints:
    """HintStore kept in a dict (one per table)."""

    def __init__(self) -> None:
        self.value: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        return dict(self.value) if self.value else None

    def set(self, value: dict[str, Any]) -> None:
        self.value = dict(value)


def open_source(mssql_port: int, database: str = "billing") -> CdcSource:
    """The source reader over pymssql (TDS) to the local emulator, as MsSqlHook would open it, and its
    change-table read over mssql-python (as source.change_reader_connect opens it from the hook)."""
    import pymssql

    from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD

    text = odbc_connection_string("127.0.0.1", mssql_port, database, DEFAULT_LOGIN, DEFAULT_PASSWORD)
    return CdcSource(
        pymssql.connect(
            server="127.0.0.1", port=str(mssql_port), user=DEFAULT_LOGIN, password=DEFAULT_PASSWORD, database=database
        ),
        lambda: mssql_python_connect(text),
    )


def open_warehouse(snowflake_port: int, database: str | None = None) -> Warehouse:
    import snowflake.connector

    from dev.snowflake_local import connection_params

    return Warehouse(snowflake.connector.connect(**connection_params(snowflake_port, database=database)))


def pipelines(
    config: SourceConfig | Path,
    mssql_port: int,
    snowflake_port: int,
    hints: dict[str, MemoryHints] | None = None,
    salt: str = LOCAL_SALT,
    database: str = "billing",
) -> list[TablePipeline]:
    """One pipeline per configured table; pass the same ``hints`` dict to keep state across calls.
    ``database``: the source database the emulator serves on ``mssql_port``."""
    source = config if isinstance(config, SourceConfig) else load_source_config(config)
    hints = hints if hints is not None else {}
    result = []
    for table in source.tables:
        result.append(
            TablePipeline(
                source,
                table,
                lambda: open_source(mssql_port, database),
                lambda: open_warehouse(snowflake_port),
                hints.setdefault(table.name, MemoryHints()),
                lambda: salt,
            )
        )
    return result
