"""Keys, order and timelines on the local stack, against the emulator's production behaviour
(issue 12, cases 1, 4, 5, 6 and the key parts of 14). Each test asserts data: the raw table equals
the source value for value (reconcile, which compares keys exactly, as Snowflake does), and history
holds every change once."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dev.mssql_emulator import Engine
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.errors import CdcError, SourceRewoundError
from include.cdc_pipeline.reconcile import reconcile
from tests.integration.conftest import SALT, Harness

pytestmark = pytest.mark.integration

# Hyphens and apostrophes sort differently in varchar (code page) and nvarchar (word sort) order;
# trailing blanks and case are ignored by the default collation's comparisons.
CHAR_KEYS = [
    "ABC-TEST",
    "ABCTEST",
    "ABCTEST1",
    "abc-test1",
    "O'Brien",
    "OBrien",
    "O-Brien ",
    "pad  ",
    "pad-",
    "Z",
    "a'b'c",
    "ab",
    "-",
    "'",
]


def table_config(h: Harness, table: str, key: list[str], chunk_rows: int = 7, **extra: Any) -> SourceConfig:
    return h.source_config(
        [{"schema": "dbo", "table": table, "primary_key": key, **extra}],
        chunk_rows=chunk_rows,
    )


def enable(h: Harness, table: str) -> None:
    h.sql(f"EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'{table}', @role_name=NULL")


def history_once(h: Harness, table: str, key: list[str]) -> list[tuple[Any, ...]]:
    """History rows (op, *key), asserting that no change is in it twice."""
    keys = ", ".join(f'"{k.upper()}"' for k in key)
    rows = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, {keys} FROM {h.database}.RAW.{table.upper()}_HISTORY"
        " WHERE NOT COALESCE(_CDC_LOST_TIMELINE, FALSE)"
    )
    counted = Counter(rows)
    assert max(counted.values(), default=1) == 1, f"a change is in history twice: {counted.most_common(2)}"
    return [r[2:] for r in rows]


def assert_raw_equals_source(h: Harness, config: SourceConfig) -> None:
    result = reconcile(h.pipeline(config), salt=SALT)
    assert result.ok, result


# -- case 1: snapshot paging on character and datetime2 keys --------------------------------------
@pytest.mark.parametrize(
    "chunk_rows", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)]
)
def test_snapshot_pages_on_character_and_datetime2_keys_read_every_row_once(harness: Harness, chunk_rows: int) -> None:
    h = harness
    # Given a varchar key under the default collation and a datetime2(7) key with sub-millisecond values,
    h.sql("CREATE TABLE dbo.codes (code varchar(20) NOT NULL PRIMARY KEY, label nvarchar(40) NULL)")
    for key in CHAR_KEYS:
        h.sql("INSERT INTO dbo.codes (code, label) VALUES (%s, %s)", params=(key, f"label of {key}"))
    h.sql("CREATE TABLE dbo.ticks (at datetime2(7) NOT NULL, seq int NOT NULL, PRIMARY KEY (at, seq))")
    base = datetime(2026, 1, 1, 10, 0, 0)
    for i in range(9):  # 0.0015 s apart: pymssql would send them as 10:00:00.001, .003, …
        h.sql(
            "INSERT INTO dbo.ticks (at, seq) VALUES (%s, %s)",
            params=((base + timedelta(microseconds=1500 * i)).isoformat(), i),
        )
    enable(h, "codes")
    enable(h, "ticks")
    h.capture()
    for table, key, count in (("codes", ["code"], len(CHAR_KEYS)), ("ticks", ["at", "seq"], 9)):
        config = table_config(h, table, key, chunk_rows)
        # when the table is snapshotted in pages of 1..3 rows,
        result = h.pipeline(config).run_once()
        # then every row is read exactly once, and raw equals the source.
        assert result["mode"] == "snapshot" and result["rows"] == count, (table, result)
        assert_raw_equals_source(h, config)
        assert sorted(history_once(h, table, key)) == sorted(
            (0, *row) for row in h.query(f"SELECT {', '.join(key)} FROM dbo.{table}")
        )


# -- case 4 and 14: key changes -------------------------------------------------------------------
def test_key_changes_leave_no_phantom_rows_in_raw_or_history(harness: Harness) -> None:
    h = harness
    # Given a varchar-keyed table (case-insensitive source collation) loaded into Snowflake,
    h.sql("CREATE TABLE dbo.tags (tag varchar(20) NOT NULL PRIMARY KEY, n int NOT NULL)")
    h.sql("INSERT INTO dbo.tags (tag, n) VALUES ('abc', 1), ('pad', 2), ('a', 3), ('b', 4), ('m1', 5), ('m2', 6)")
    enable(h, "tags")
    h.capture()
    config = table_config(h, "tags", ["tag"], chunk_rows=2)
    h.pipeline(config).run_once()
    # when keys change in every way SQL Server logs it:
    h.sql("UPDATE dbo.tags SET tag = 'ABC' WHERE tag = 'abc'")  # case only: an update pair (3/4)
    h.sql("UPDATE dbo.tags SET tag = 'pad  ' WHERE tag = 'pad'")  # trailing blanks only: 3/4
    h.sql("DBCC TRACEON (8207, -1)")
    h.sql("UPDATE dbo.tags SET tag = 'c' WHERE tag = 'a'")  # one-row key update under TF 8207: 3/4
    h.sql("DBCC TRACEOFF (8207, -1)")
    h.sql("UPDATE dbo.tags SET tag = 'bb' WHERE tag = 'b'")  # delete + insert
    h.sql(  # T-SQL MERGE: an update of a key, an update of a value, an insert
        "MERGE dbo.tags AS t USING (VALUES ('m1', 'm1x', 50), ('m2', 'm2', 60), ('new', 'new', 7)) AS s (old, tag, n)"
        " ON t.tag = s.old WHEN MATCHED THEN UPDATE SET tag = s.tag, n = s.n"
        " WHEN NOT MATCHED THEN INSERT (tag, n) VALUES (s.tag, s.n);"
    )
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"
    # then raw holds exactly the source's keys (the old spellings are deleted, not left behind),
    assert_raw_equals_source(h, config)
    live = h.snowflake_rows(f"SELECT TAG FROM {h.database}.RAW.TAGS WHERE NOT _CDC_DELETED ORDER BY TAG")
    assert [r[0] for r in live] == sorted(r[0] for r in h.query("SELECT tag FROM dbo.tags"))
    # and history records the old keys' deletes, each change once.
    history = history_once(h, "tags", ["tag"])
    for old in ("abc", "pad", "a", "b", "m1", "m2"):
        assert (1, old) in history, old
    for new in ("ABC", "pad  ", "c", "bb", "m1x", "new"):
        assert any(op in (2, 4) and key == new for op, key in history), new


# -- case 5: order within a transaction -------------------------------------------------------------
def test_changes_are_applied_in_command_id_order_not_seqval_order(harness: Harness) -> None:
    h = harness
    # Given a table with a primary key (a unique index), loaded,
    h.sql("CREATE TABLE dbo.stock (sku varchar(10) NOT NULL PRIMARY KEY, qty int NOT NULL)")
    h.sql("INSERT INTO dbo.stock (sku, qty) VALUES ('A', 1), ('B', 2)")
    enable(h, "stock")
    h.capture()
    config = table_config(h, "stock", ["sku"])
    h.pipeline(config).run_once()
    # when a MERGE updates a row: logged as delete + insert, the insert first in seqval order (KB 3030352),
    h.sql(
        "MERGE dbo.stock AS t USING (VALUES ('A', 10), ('C', 3)) AS s (sku, qty) ON t.sku = s.sku"
        " WHEN MATCHED THEN UPDATE SET qty = s.qty WHEN NOT MATCHED THEN INSERT (sku, qty) VALUES (s.sku, s.qty);"
    )
    h.capture()
    h.pipeline(config).run_once()
    # then the row is updated, not deleted: changes are ordered by __$command_id,
    assert_raw_equals_source(h, config)
    rows = h.snowflake_rows(
        f"SELECT SKU, QTY, _CDC_DELETED, _CDC_OPERATION, _CDC_COMMAND_ID FROM {h.database}.RAW.STOCK ORDER BY SKU"
    )
    assert [r[:4] for r in rows] == [("A", 10, False, 2), ("B", 2, False, 0), ("C", 3, False, 2)]
    # and history, in (LSN, command id, seqval, operation) order, ends the key's story with the insert.
    ordered = h.snowflake_rows(
        f"SELECT _CDC_OPERATION, QTY FROM {h.database}.RAW.STOCK_HISTORY WHERE SKU = 'A'"
        " ORDER BY _CDC_LSN, _CDC_COMMAND_ID, _CDC_SEQVAL, _CDC_OPERATION"
    )
    assert ordered == [(0, 1), (1, 1), (2, 10)]
    history_once(h, "stock", ["sku"])


# -- case 14: keys the pipeline cannot trust, and names pymssql would mangle --------------------------
def test_nullable_key_column_is_rejected_naming_the_column(harness: Harness) -> None:
    h = harness
    h.sql("CREATE TABLE dbo.loose (code varchar(10) NULL, n int NULL)")
    h.sql("CREATE UNIQUE INDEX ux_loose ON dbo.loose (code)")
    enable(h, "loose")
    config = table_config(h, "loose", ["code"])
    with pytest.raises(CdcError, match=r"primary_key column 'code' is nullable"):
        h.pipeline(config).run_once()


def test_percent_sign_in_a_column_name(harness: Harness) -> None:
    h = harness
    h.sql("CREATE TABLE dbo.rates (id int NOT NULL PRIMARY KEY, [rate%] decimal(5,2) NULL, [a%%b] int NULL)")
    h.sql("INSERT INTO dbo.rates (id, [rate%], [a%%b]) VALUES (1, 2.50, 7), (2, 3.75, 8)")
    enable(h, "rates")
    h.capture()
    config = table_config(h, "rates", ["id"], chunk_rows=1)
    h.pipeline(config).run_once()
    h.sql("UPDATE dbo.rates SET [rate%] = 4.00 WHERE id = 2")
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"
    assert_raw_equals_source(h, config)
    # A name pymssql would take for a placeholder is carried (issue 16: the reader switches to named
    # placeholders); names holding both placeholder forms are a clear error, not a mangled statement.
    # Created in-process: through pymssql itself the DDL's [x%sy] would already be mangled (to xNULLy).
    direct = h.engine.connect(autocommit=True)
    direct.cursor().execute("CREATE TABLE dbo.odd (id int NOT NULL PRIMARY KEY, [x%sy] int NULL)")
    direct.cursor().execute("INSERT INTO dbo.odd (id, [x%sy]) VALUES (1, 5)")
    direct.cursor().execute("CREATE TABLE dbo.odder (id int NOT NULL PRIMARY KEY, [x%sy] int NULL, [z%(a)s] int NULL)")
    direct.close()
    enable(h, "odd")
    enable(h, "odder")
    h.capture()
    odd = table_config(h, "odd", ["id"])
    h.pipeline(odd).run_once()
    assert_raw_equals_source(h, odd)
    assert h.snowflake_rows(f'SELECT "X%SY" FROM {h.database}.RAW.ODD') == [(5,)]
    with pytest.raises(CdcError, match=r"names \['x%sy'\] contain '%s'/'%d' and \['z%\(a\)s'\] contain"):
        h.pipeline(table_config(h, "odder", ["id"])).run_once()


# -- case 6: re-snapshot after a restore ------------------------------------------------------------
# `make test-all` only: `make test` restores and re-snapshots in test_property_keys.
@pytest.mark.slow
@pytest.mark.parametrize("delete_mode", ["soft", "hard"])
def test_resnapshot_after_a_restore_repairs_raw_and_history(harness: Harness, tmp_path: Path, delete_mode: str) -> None:
    h = harness
    db, backup = tmp_path / "billing.duckdb", tmp_path / "backup.duckdb"

    def reopen(from_backup: bool = False) -> None:
        # The server behind the harness (TDS) serves the reopened file from then on.
        h.close_connections()
        h.engine.close()
        if from_backup:
            shutil.copyfile(backup, db)
        h.replace_engine(Engine(str(db)))

    reopen()
    h.sql("EXEC sys.sp_cdc_enable_db")
    h.sql("CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, v nvarchar(20) NOT NULL)")
    h.sql("INSERT INTO dbo.items (id, v) VALUES (1, N'one'), (2, N'two'), (3, N'three'), (4, N'four')")
    enable(h, "items")
    h.capture()
    config = table_config(h, "items", ["id"], delete_mode=delete_mode)
    h.pipeline(config).run_once()
    # Given a backup taken here,
    h.close_connections()
    h.engine.close()
    shutil.copyfile(db, backup)
    reopen()
    # a timeline loaded into Snowflake after it (row 1 updated, row 2 deleted, row 5 inserted),
    h.sql("UPDATE dbo.items SET v = N'lost' WHERE id = 1")
    h.sql("DELETE FROM dbo.items WHERE id = 2")
    h.sql("INSERT INTO dbo.items (id, v) VALUES (5, N'five')")
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"
    # and the database restored from the backup: that timeline is gone, its LSNs will be reused,
    reopen(from_backup=True)
    with pytest.raises(SourceRewoundError):
        h.pipeline(config).plan()
    # when the table is re-snapshotted (the remedy the error names),
    assert h.pipeline(config).run_once(resnapshot=True)["mode"] == "snapshot"
    # then raw is the restored source: row 1 back to its value, row 2 live again, row 5 deleted,
    assert_raw_equals_source(h, config)
    rows = h.snowflake_rows(f"SELECT ID, V, _CDC_DELETED FROM {h.database}.RAW.ITEMS ORDER BY ID")
    expected = [(1, "one", False), (2, "two", False), (3, "three", False), (4, "four", False), (5, "five", True)]
    assert rows == (expected if delete_mode == "soft" else expected[:4])
    # and a new change that reuses a lost change's LSN, seqval, operation and key still lands.
    h.sql("UPDATE dbo.items SET v = N'new' WHERE id = 1")
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"
    assert_raw_equals_source(h, config)
    lost = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, V FROM {h.database}.RAW.ITEMS_HISTORY"
        " WHERE ID = 1 AND _CDC_OPERATION = 4 ORDER BY _CDC_LOST_TIMELINE NULLS FIRST"
    )
    assert [r[3] for r in lost] == ["new", "lost"] and lost[0][:3] == lost[1][:3]  # same position, two timelines
    history = history_once(h, "items", ["id"])
    assert (4, 1) in history and (1, 5) in history
