"""Every table and column name SQL Server allows, end to end on the local stack (issue 16): the
emulator over TDS (pymssql, as production) and the local Snowflake. Raw must equal the source value
for value, history must hold every change once, and names that try to close a quote are data."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from include.cdc_pipeline.errors import TableConfigError
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.reconcile import reconcile
from include.cdc_pipeline.sql import sf_ident, sf_table, tsql_ident, tsql_name, tsql_string
from tests.integration.conftest import SALT, Harness

pytestmark = pytest.mark.integration

TABLE = "Order Details"
KEY = "Order ID"
COLUMNS = ["Unit Price", "Qty%", "select", "Ä-Name", "O'Brien", "a]b"]
DDL = (
    "CREATE TABLE dbo.[Order Details] ([Order ID] int NOT NULL PRIMARY KEY, [Unit Price] money NULL,"
    " [Qty%] int NULL, [select] nvarchar(20) NULL, [Ä-Name] nvarchar(40) NULL, [O'Brien] varchar(20) NULL,"
    " [a]]b] decimal(9,2) NULL)"
)


def enable(h: Harness, schema: str, table: str) -> None:
    h.sql(
        f"EXEC sys.sp_cdc_enable_table @source_schema = {tsql_string(schema)}, @source_name = {tsql_string(table)},"
        " @role_name = NULL"
    )


def upsert(h: Harness, key: int, values: tuple[Any, ...]) -> None:
    names = ", ".join(tsql_ident(c) for c in [KEY, *COLUMNS])
    h.sql(f"INSERT INTO {tsql_name('dbo', TABLE)} ({names}) VALUES (%s, %s, %s, %s, %s, %s, %s)", params=(key, *values))


def run_until_idle(h: Harness, config: Any) -> list[str]:
    modes = []
    for _ in range(10):
        modes.append(h.pipeline(config).run_once()["mode"])
        if modes[-1] == "idle":
            return modes
    raise AssertionError(f"not idle after 10 runs: {modes}")


def assert_live_rows(h: Harness, config: Any, count: int) -> None:
    """Raw equals the source value for value (reconcile), with ``count`` live rows."""
    result = reconcile(h.pipeline(config), salt=SALT)
    assert result.ok and result.source_rows == count, result


def raw_values(h: Harness, raw: str, key: int, columns: list[str]) -> list[tuple[Any, ...]]:
    return h.snowflake_rows(
        f"SELECT {', '.join(sf_ident(c) for c in columns)} FROM {raw} WHERE {sf_ident(KEY)} = {key}"
    )


def history_changes(h: Harness, config: Any, key: str) -> Counter[tuple[Any, ...]]:
    spec = config.tables[0]
    rows = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, {sf_ident(key)}"
        f" FROM {sf_table(h.database, 'RAW', spec.snowflake_table + '_HISTORY')} WHERE _CDC_OPERATION <> 0"
    )
    return Counter(rows)


def captured_changes(h: Harness, config: Any, instance: str, key: str) -> Counter[tuple[Any, ...]]:
    """The change table's changes after the first snapshot (those before it are in the snapshot)."""
    spec = config.tables[0]
    history = sf_table(h.database, "RAW", spec.snowflake_table + "_HISTORY")
    first_snapshot = h.snowflake_rows(f"SELECT MIN(_CDC_LSN) FROM {history} WHERE _CDC_OPERATION = 0")[0][0]
    rows = h.query(
        f"SELECT [__$start_lsn], [__$seqval], [__$operation], {tsql_ident(key)}"
        f" FROM {tsql_name('cdc', instance + '_CT')} WHERE [__$operation] <> 3"
    )
    return Counter((to_hex(lsn), to_hex(seq), op, k) for lsn, seq, op, k in rows if to_hex(lsn) > first_snapshot)


@pytest.mark.slow  # `make test`: injection-shaped names (below) and a % in a name (test_keys)
def test_order_details_with_any_column_names_replicates_value_for_value(harness: Harness) -> None:
    h = harness
    # Given Northwind's dbo.[Order Details] with column names SQL Server allows only delimited,
    h.sql(DDL)
    enable(h, "dbo", TABLE)
    rows = {
        1: (Decimal("14.0000"), 12, "first", "Äpfel", "Tim", Decimal("1.50")),
        2: (Decimal("9.8000"), 10, "second", "Öl", None, Decimal("-2.25")),
        3: (None, None, None, None, "Pat", None),
    }
    for key, values in rows.items():
        upsert(h, key, values)
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": TABLE, "primary_key": [KEY]}])
    spec = config.tables[0]
    # (the capture instance is SQL Server's default <schema>_<table>, space and all)
    assert [ci.name for ci in h.pipeline(config).instances()] == ["dbo_Order Details"]

    # When snapshotted,
    assert run_until_idle(h, config)[0] == "snapshot"
    # then raw holds the rows under the upper-cased names, quoted as they are.
    raw = sf_table(h.database, "RAW", spec.snowflake_table)
    assert spec.snowflake_table == "ORDER DETAILS"
    got = h.snowflake_rows(f"SELECT {', '.join(sf_ident(c) for c in [KEY, *COLUMNS])} FROM {raw} ORDER BY 1")
    assert got == [(k, *v) for k, v in sorted(rows.items())]

    # When rows are updated and deleted (each statement its own transaction) and streamed,
    target = tsql_name("dbo", TABLE)
    h.sql(
        f"UPDATE {target} SET [Qty%] = [Qty%] + 1, [a]]b] = %s, [O'Brien] = N'O''Neil' WHERE [Order ID] = 1",
        params=(Decimal("3.75"),),
    )
    h.sql(f"UPDATE {target} SET [Ä-Name] = N'Ärger', [select] = N'x%sy' WHERE [Order ID] = 3")
    h.sql(f"DELETE FROM {target} WHERE [Order ID] = 2")
    upsert(h, 4, (Decimal("1.0000"), 1, "%(p0)s", "ß", "'", Decimal("0.01")))
    h.capture()
    assert run_until_idle(h, config)[0] == "stream"
    # then raw equals the source value for value,
    assert_live_rows(h, config, 3)
    assert raw_values(h, raw, 1, ["Qty%", "a]b", "O'Brien"]) == [(13, Decimal("3.75"), "O'Neil")]
    # and history holds every captured change once.
    history = history_changes(h, config, KEY)
    assert max(history.values()) == 1
    assert set(history) == set(captured_changes(h, config, "dbo_Order Details", KEY))

    # When re-snapshotted after more changes, and changed again after that,
    streamed = set(history)
    h.sql(f"UPDATE {target} SET [Unit Price] = 99 WHERE [Order ID] = 4")
    h.capture()
    assert h.pipeline(config).run_once(resnapshot=True)["mode"] == "snapshot"
    raw_history = sf_table(h.database, "RAW", spec.snowflake_table + "_HISTORY")
    resnapshot_lsn = h.snowflake_rows(f"SELECT MAX(_CDC_LSN) FROM {raw_history} WHERE _CDC_OPERATION = 0")[0][0]
    h.sql(f"UPDATE {target} SET [Ä-Name] = N'Zoë', [Qty%] = 5 WHERE [Order ID] = 4")
    h.capture()
    assert run_until_idle(h, config)[0] == "stream"
    # then raw still equals the source, the snapshot covers the change before it, and history
    # holds every change streamed before and after it once.
    assert_live_rows(h, config, 3)
    assert raw_values(h, raw, 4, ["Ä-Name", "Unit Price"]) == [("Zoë", Decimal("99.0000"))]
    history = history_changes(h, config, KEY)
    assert max(history.values()) == 1
    after = {c for c in captured_changes(h, config, "dbo_Order Details", KEY) if c[0] > resnapshot_lsn}
    assert after and set(history) == streamed | after


def test_names_that_try_injection_are_replicated_literally(harness: Harness) -> None:
    h = harness
    # Given victim tables on both sides,
    h.sql("CREATE TABLE dbo.victim (id int NOT NULL PRIMARY KEY)", "INSERT INTO dbo.victim (id) VALUES (1)")
    for statement in (
        f"CREATE DATABASE {h.database}",
        f"CREATE SCHEMA {h.database}.RAW",
        f"CREATE TABLE {h.database}.RAW.VICTIM (ID INT)",
        f"INSERT INTO {h.database}.RAW.VICTIM VALUES (1)",
    ):
        h.snowflake_rows(statement)
    source_table = "x]; DROP TABLE dbo.victim; --"
    column = "v'); DROP TABLE dbo.victim; --"
    quoted = 'w"); DROP TABLE dbo.victim; --'  # kept under its own (upper-cased) name
    h.sql(
        f"CREATE TABLE {tsql_name('dbo', source_table)} (id int NOT NULL PRIMARY KEY,"
        f" {tsql_ident(column)} nvarchar(20) NULL, {tsql_ident(quoted)} int NULL)"
    )
    enable(h, "dbo", source_table)
    h.sql(
        f"INSERT INTO {tsql_name('dbo', source_table)} (id, {tsql_ident(column)}, {tsql_ident(quoted)})"
        " VALUES (1, N'one', 10), (2, N'two', 20)"
    )
    h.capture()
    victim_target = f'X"; DROP TABLE {h.database}.RAW.VICTIM; --'
    renamed = 'c"; DROP TABLE x; --'
    config = h.source_config(
        [
            {
                "schema": "dbo",
                "table": source_table,
                "primary_key": ["id"],
                "target_table": victim_target,
                "column_names": {column: renamed},
            }
        ]
    )
    # When replicated (snapshot, then a change),
    run_until_idle(h, config)
    h.sql(f"UPDATE {tsql_name('dbo', source_table)} SET {tsql_ident(column)} = N'uno' WHERE id = 1")
    h.capture()
    run_until_idle(h, config)
    # then the names are data: the target table holds the source rows under the literal names,
    raw = sf_table(h.database, "RAW", victim_target)
    assert h.snowflake_rows(f"SELECT ID, {sf_ident(renamed)}, {sf_ident(quoted)} FROM {raw} ORDER BY 1") == [
        (1, "uno", 10),
        (2, "two", 20),
    ]
    assert reconcile(h.pipeline(config), salt=SALT).ok
    # and nothing was executed: both victim tables still exist with their row.
    assert h.query("SELECT id FROM dbo.victim") == [(1,)]
    assert h.snowflake_rows(f"SELECT ID FROM {h.database}.RAW.VICTIM") == [(1,)]


def test_two_source_tables_mapping_to_one_snowflake_table_are_rejected_at_load(harness: Harness) -> None:
    with pytest.raises(ValidationError) as caught:
        harness.source_config(
            [
                {"schema": "dbo", "table": "order details", "primary_key": ["id"]},
                {"schema": "sales", "table": "Order Details", "primary_key": ["id"]},
            ]
        )
    assert "two tables share target ORDER DETAILS: 'dbo.order details' and 'sales.Order Details'" in str(caught.value)


def test_two_columns_mapping_to_one_snowflake_column_are_rejected_at_the_first_run(harness: Harness) -> None:
    h = harness
    # Given a rename override that lands on another column's name,
    h.sql("CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, [Qty%] int NULL, QTY_PCT int NULL)")
    enable(h, "dbo", "t")
    h.capture()
    config = h.source_config(
        [{"schema": "dbo", "table": "t", "primary_key": ["id"], "column_names": {"Qty%": "qty_pct"}}]
    )
    # when the table is first run, then it stops naming both columns, before anything is loaded.
    with pytest.raises(
        TableConfigError,
        match=re.escape("source column 'QTY_PCT' and source column 'Qty%' both map to Snowflake column 'QTY_PCT'"),
    ):
        h.pipeline(config).run_once()


def test_emulator_names_capture_objects_as_sql_server_does(harness: Harness) -> None:
    h = harness
    # Given dbo.[Order Details] with bracketed column names, CDC enabled with the default instance name,
    h.sql(DDL)
    enable(h, "dbo", TABLE)
    upsert(h, 1, (Decimal("1.5000"), 3, "s", "Ä", "O", Decimal("2.00")))
    h.capture()
    # then the capture instance is <schema>_<table> as is, its change table and function take
    # bracketed names, and the catalog returns the names verbatim (NVARCHAR over TDS).
    assert h.query("SELECT capture_instance FROM cdc.change_tables") == [("dbo_Order Details",)]
    assert h.query(
        "SELECT c.name FROM sys.columns AS c WHERE c.object_id = OBJECT_ID(%s) ORDER BY c.column_id",
        (tsql_name("dbo", TABLE),),
    ) == [(KEY,), *((c,) for c in COLUMNS)]
    changes = h.query(
        "DECLARE @from binary(10) = sys.fn_cdc_get_min_lsn(N'dbo_Order Details');"
        " DECLARE @to binary(10) = sys.fn_cdc_get_max_lsn();"
        f" SELECT [__$operation], {', '.join(tsql_ident(c) for c in [KEY, *COLUMNS])}"
        " FROM cdc.[fn_cdc_get_all_changes_dbo_Order Details](@from, @to, N'all')"
    )
    assert changes == [(2, 1, Decimal("1.5000"), 3, "s", "Ä", "O", Decimal("2.00"))]
    assert h.query("SELECT COUNT(*) FROM cdc.[dbo_Order Details_CT]") == [(1,)]
    # OBJECT_ID parses delimited parts: doubled brackets, dots inside brackets; malformed is NULL.
    h.sql("CREATE TABLE [dbo].[a.b]]c] (id int NOT NULL PRIMARY KEY)")
    found = h.query(
        "SELECT OBJECT_ID(N'[dbo].[a.b]]c]'), OBJECT_ID(N'dbo.Order Details'), OBJECT_ID(N'[dbo].[a.b'),"
        " OBJECT_ID(N'dbo.a')"
    )[0]
    assert found[0] is not None and found[1] is not None and found[2:] == (None, None)
    # and a trailing blank of a derived capture instance name is trimmed (sp_cdc_enable_table docs).
    h.sql("CREATE TABLE dbo.[t ] (id int NOT NULL PRIMARY KEY)")
    enable(h, "dbo", "t ")
    assert ("dbo_t",) in h.query("SELECT capture_instance FROM cdc.change_tables")


def test_emulator_grants_and_checks_permissions_on_such_names(harness: Harness) -> None:
    h = harness
    # Given dbo.[Order Details] and a reader login granted SELECT on it by its bracketed name,
    h.sql(DDL, "CREATE TABLE [dbo].[a.b]]c] (id int NOT NULL PRIMARY KEY)")
    h.sql(
        "CREATE LOGIN reader WITH PASSWORD = 'x'",
        "CREATE USER reader FOR LOGIN reader",
        f"GRANT SELECT ON {tsql_name('dbo', TABLE)} TO reader",
    )
    reader = h.engine.connect(login="reader")
    cursor = reader.cursor()
    # then HAS_PERMS_BY_NAME reads the names as SQL Server does (what the preflight asks).
    cursor.execute(
        "SELECT HAS_PERMS_BY_NAME(N'[dbo].[Order Details]', 'OBJECT', 'SELECT'),"
        " HAS_PERMS_BY_NAME(N'[dbo].[a.b]]c]', 'OBJECT', 'SELECT'),"
        " HAS_PERMS_BY_NAME(N'[dbo].[nothing]', 'OBJECT', 'SELECT')"
    )
    assert cursor.fetchone() == (1, 0, None)
    reader.close()
