"""Issue 12, schema cases: what SQL Server's CDC does to the change table when the source changes.

The emulator models each behaviour with its source (docs/emulator.md); the tests assert data:
raw equals the source value for value, history holds every change once, or a named error.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from include.cdc_pipeline.errors import SchemaDriftError
from include.cdc_pipeline.reconcile import reconcile
from tests.integration.conftest import SALT, Harness
from tests.integration.test_pipeline import assert_converged, run_until_idle

pytestmark = pytest.mark.integration

PRICES_DDL = (
    "CREATE TABLE dbo.prices (id int NOT NULL PRIMARY KEY, amount decimal(10,2) NOT NULL, qty int NULL,"
    " code varchar(5) NULL, at datetime2(3) NULL)"
)
ENABLE_PRICES = "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'prices', @role_name=NULL"
PRICES = {"schema": "dbo", "table": "prices", "primary_key": ["id"]}


def _raw_types(h: Harness, table: str) -> dict[str, tuple[Any, ...]]:
    rows = h.snowflake_rows(
        f"SELECT column_name, numeric_precision, numeric_scale FROM {h.database}.information_schema.columns"
        f" WHERE table_schema = 'RAW' AND table_name = '{table}'"
    )
    return {name: (precision, scale) for name, precision, scale in rows}


def _prices(h: Harness) -> Any:
    h.sql(PRICES_DDL, ENABLE_PRICES)
    h.sql("INSERT INTO dbo.prices VALUES (1, 12345678.90, 7, 'ab', '2026-01-01 10:00:00.123')")
    h.capture()
    config = h.source_config([PRICES])
    assert h.pipeline(config).run_once()["mode"] == "snapshot"
    return config


def test_alter_column_widening_widens_raw_and_history(harness: Harness) -> None:
    # Case 7. SQL Server changes the change table's column type in place on ALTER COLUMN.
    h = harness
    config = _prices(h)
    h.sql("ALTER TABLE dbo.prices ALTER COLUMN amount decimal(16,2) NOT NULL")
    h.sql("ALTER TABLE dbo.prices ALTER COLUMN qty bigint NULL")
    h.sql("ALTER TABLE dbo.prices ALTER COLUMN code varchar(40) NULL")
    h.sql("INSERT INTO dbo.prices VALUES (2, 12345678901234.56, 5000000000, 'a-code-longer-than-five', NULL)")
    h.sql("UPDATE dbo.prices SET amount = 99999999999999.99, qty = 3000000000 WHERE id = 1")
    h.capture()
    run_until_idle(h, config)
    # Raw and history now hold the wider values exactly ...
    assert_converged(h, config)
    for table in ("PRICES", "PRICES_HISTORY"):
        types = _raw_types(h, table)
        assert types["AMOUNT"] == (16, 2) and types["QTY"][0] >= 19, (table, types)
    # ... and the history row of the update carries them too.
    assert h.snowflake_rows(
        f"SELECT AMOUNT, QTY FROM {h.database}.RAW.PRICES_HISTORY WHERE ID = 1 AND _CDC_OPERATION = 4"
    ) == [(Decimal("99999999999999.99"), 3000000000)]


@pytest.mark.parametrize(
    ("column", "new_type", "value"),
    [
        ("amount", "decimal(12,4) NOT NULL", "1.2345"),  # a scale change: NUMBER(10,2) would round
        ("qty", "varchar(20) NULL", "'12abc'"),  # another type family altogether
    ],
)
def test_alter_column_that_cannot_widen_stops_naming_the_column(
    harness: Harness, column: str, new_type: str, value: str
) -> None:
    # Case 7: a change Snowflake cannot apply in place (scale, type) must not round or convert
    # silently: the table stops with an error naming the column. (A timestamp precision increase
    # is refused the same way, tests/unit: the local Snowflake reports every timestamp as (9).)
    h = harness
    config = _prices(h)
    h.sql(f"ALTER TABLE dbo.prices ALTER COLUMN {column} {new_type}")
    h.sql(f"UPDATE dbo.prices SET {column} = {value} WHERE id = 1")
    h.capture()
    with pytest.raises(SchemaDriftError, match=rf"(?i)\.{column}\b"):
        h.pipeline(config).run_once()
    mark = h.snowflake_rows(f"SELECT _CDC_OPERATION FROM {h.database}.RAW.PRICES")
    assert mark == [(0,)]  # nothing was applied


def test_computed_columns_agree_between_snapshot_and_stream(harness: Harness, caplog: Any) -> None:
    # Case 8. CDC never captures computed columns (NULL in the change table, even when persisted),
    # while a snapshot reads their values: the pipeline leaves them out, with a warning.
    h = harness
    h.sql(
        "CREATE TABLE dbo.lines (id int NOT NULL PRIMARY KEY, qty int NOT NULL, price decimal(10,2) NOT NULL,"
        " total AS ([qty] * [price]) PERSISTED, label AS CAST(CONCAT(N'#', [id]) AS nvarchar(12)))",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'lines', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.lines (id, qty, price) VALUES (1, 2, 3.50), (2, 1, 10.00)")
    h.capture()
    assert h.query("SELECT total FROM cdc.dbo_lines_CT") == [(None,), (None,)]
    config = h.source_config([{"schema": "dbo", "table": "lines", "primary_key": ["id"]}])
    with caplog.at_level(logging.WARNING):
        h.pipeline(config).run_once()
        h.sql("UPDATE dbo.lines SET qty = 5 WHERE id = 1")
        h.sql("INSERT INTO dbo.lines (id, qty, price) VALUES (3, 4, 2.25)")
        h.capture()
        assert h.pipeline(config).run_once()["mode"] == "stream"
    assert_converged(h, config)
    columns = set(_raw_types(h, "LINES"))
    assert {"ID", "QTY", "PRICE"} <= columns and not columns & {"TOTAL", "LABEL"}
    assert any("computed" in r.message and "total" in r.message for r in caplog.records)


def test_resnapshot_after_drop_column(harness: Harness) -> None:
    # Case 9. A dropped column stays in the change table (NULL from then on); a re-snapshot reads
    # the source table, which no longer has it.
    h = harness
    h.sql(
        "CREATE TABLE dbo.notes (id int NOT NULL PRIMARY KEY, body nvarchar(100) NULL, legacy varchar(10) NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'notes', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.notes VALUES (1, N'one', 'x'), (2, N'two', 'y')")
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "notes", "primary_key": ["id"]}])
    h.pipeline(config).run_once()
    h.sql("ALTER TABLE dbo.notes DROP COLUMN legacy")
    h.sql("UPDATE dbo.notes SET body = N'uno' WHERE id = 1")
    h.sql("INSERT INTO dbo.notes VALUES (3, N'three')")
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"
    pipeline = h.pipeline(config)
    result = pipeline.snapshot(pipeline.plan(resnapshot=True))
    assert result["mode"] == "snapshot" and result["rows"] == 3
    assert reconcile(h.pipeline(config), salt=SALT).ok
    rows = h.snowflake_rows(f"SELECT ID, BODY, LEGACY FROM {h.database}.RAW.NOTES ORDER BY ID")
    assert rows == [(1, "uno", None), (2, "two", None), (3, "three", None)]
