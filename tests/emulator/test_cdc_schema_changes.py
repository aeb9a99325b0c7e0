"""CDC semantics of source schema changes (issue 12): ALTER COLUMN and computed columns.

Sources: "About change data capture", section "Handling changes to source tables" (a data type
change of a tracked column is propagated to the change table); "Data Type Considerations for
Change Data Capture" (computed columns appear in the change table with their type, always NULL);
cdc.captured_columns (is_computed). Links in docs/emulator.md.
"""

from __future__ import annotations

from decimal import Decimal

import pymssql
import pytest

from tests.emulator.conftest import Sql, ct_rows


def _ct_type(sql: Sql, column: str) -> tuple[str, int, int, int]:
    return sql(
        "SELECT t.name, c.[precision], c.scale, c.max_length FROM sys.columns AS c "
        "INNER JOIN sys.types AS t ON c.user_type_id = t.user_type_id "
        "WHERE c.object_id = OBJECT_ID(N'cdc.dbo_t_CT') AND c.name = %s",
        (column,),
    )[0]


def test_alter_column_changes_the_change_table_type_in_place(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name, amount) VALUES (1, N'a', 5.25)")
    tracked("ALTER TABLE dbo.t ALTER COLUMN amount decimal(28,4) NULL")
    tracked("ALTER TABLE dbo.t ALTER COLUMN name nvarchar(200) NULL")
    tracked("INSERT INTO dbo.t (id, name, amount) VALUES (2, N'b', 123456789012345678901234.5678)")
    tracked.scan()
    assert _ct_type(tracked, "amount") == ("decimal", 28, 4, 13)
    assert _ct_type(tracked, "name") == ("nvarchar", 0, 0, 400)
    assert tracked("SELECT column_type FROM cdc.captured_columns WHERE column_name = N'amount'") == [("decimal",)]
    # Earlier change rows are converted with the column; later ones hold values the old type could not.
    assert [r[6] for r in ct_rows(tracked)] == [Decimal("5.2500"), Decimal("123456789012345678901234.5678")]
    history = tracked("SELECT ddl_command, required_column_update FROM cdc.ddl_history ORDER BY ddl_lsn")
    assert history == [
        ("ALTER TABLE dbo.t ALTER COLUMN amount decimal(28,4) NULL", True),
        ("ALTER TABLE dbo.t ALTER COLUMN name nvarchar(200) NULL", True),
    ]


def test_computed_columns_are_captured_as_null(sql: Sql) -> None:
    sql(
        "CREATE TABLE dbo.c (id int NOT NULL PRIMARY KEY, qty int NOT NULL, price decimal(10,2) NOT NULL,"
        " total AS ([qty] * [price]) PERSISTED, tag AS CAST(CONCAT(N'#', [id]) AS nvarchar(12)))"
    )
    sql("EXEC sys.sp_cdc_enable_db")
    sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'c', @role_name = NULL")
    sql("INSERT INTO dbo.c (id, qty, price) VALUES (1, 2, 3.50)")
    sql("UPDATE dbo.c SET qty = 4 WHERE id = 1")
    sql("DELETE FROM dbo.c WHERE id = 1")
    sql("INSERT INTO dbo.c (id, qty, price) VALUES (2, 1, 1.00)")
    sql.scan()
    # The source table computes the values ...
    assert sql("SELECT total, tag FROM dbo.c") == [(Decimal("1.00"), "#2")]
    # ... the catalog says which columns are computed, with their types ...
    assert sql(
        "SELECT name, is_computed FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.c') ORDER BY column_id"
    ) == [("id", False), ("qty", False), ("price", False), ("total", True), ("tag", True)]
    assert sql("SELECT column_name, column_type, is_computed FROM cdc.captured_columns ORDER BY column_ordinal") == [
        ("id", "int", False),
        ("qty", "int", False),
        ("price", "decimal", False),
        ("total", "decimal", True),
        ("tag", "nvarchar", True),
    ]
    # ... and every change row holds NULL for them, whatever the operation.
    rows = sql("SELECT [__$operation], qty, total, tag FROM cdc.dbo_c_CT ORDER BY [__$start_lsn], [__$seqval]")
    assert [r[0] for r in rows] == [2, 3, 4, 1, 2]
    assert all(r[2] is None and r[3] is None for r in rows)
    # SQL Server refuses to change the type of a column a computed column uses (Msg 5074).
    with pytest.raises(pymssql.OperationalError) as refused:
        sql("ALTER TABLE dbo.c ALTER COLUMN price decimal(12,2) NOT NULL")
    assert refused.value.args[0] == 5074 and b"'total' is dependent on column 'price'" in refused.value.args[1]
