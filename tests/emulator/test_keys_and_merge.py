"""SQL Server behaviours around keys that the pipeline must survive (issue 12, cases 1, 4, 5, 14):
the default collation's comparison and sort order, pymssql's literal parameters, T-SQL MERGE and
unique indexes, key updates logged as delete + insert or as an update pair, and __$command_id.
Sources are cited in dev/mssql_emulator (translate.py "collation", dml.split_update, merge.py)."""

from __future__ import annotations

from datetime import datetime

import pymssql
import pytest

from tests.emulator.conftest import Sql

KEYS = ["abctest", "abc-test", "abctest1", "abc-test1", "O'Brien", "pad  "]


@pytest.fixture
def keyed(sql: Sql) -> Sql:
    sql("CREATE TABLE dbo.k (k varchar(20) NOT NULL PRIMARY KEY, n nvarchar(20) NULL)")
    for value in KEYS:
        sql("INSERT INTO dbo.k (k, n) VALUES (%s, %s)", (value, value))
    return sql


def test_varchar_order_by_uses_the_sql_collation_code_page_order(keyed: Sql) -> None:
    # KB 322112: a SQL collation sorts non-Unicode data character by character, '-' before letters.
    assert [r[0] for r in keyed("SELECT k FROM dbo.k ORDER BY k")] == [
        "abc-test",
        "abc-test1",
        "abctest",
        "abctest1",
        "O'Brien",
        "pad  ",
    ]


def test_nvarchar_order_by_uses_the_unicode_word_sort(keyed: Sql) -> None:
    # Microsoft's example: abctest, abc-test, abctest1, abc-test1 under SQL_Latin1_General_CP1_CI_AS.
    assert [r[0] for r in keyed("SELECT n FROM dbo.k ORDER BY n")][:4] == [
        "abctest",
        "abc-test",
        "abctest1",
        "abc-test1",
    ]


def test_varchar_compared_with_a_pymssql_str_parameter_uses_the_unicode_rules(keyed: Sql) -> None:
    # pymssql sends str as N'…': the varchar column is converted, the comparison is Unicode; so
    # "after abc-test" skips abctest, which ORDER BY k places after it.
    after = [r[0] for r in keyed("SELECT k FROM dbo.k WHERE k > %s ORDER BY k", ("abc-test",))]
    assert "abctest" not in after
    cast = [r[0] for r in keyed("SELECT k FROM dbo.k WHERE k > CAST(%s AS varchar(20)) ORDER BY k", ("abc-test",))]
    assert cast == ["abc-test1", "abctest", "abctest1", "O'Brien", "pad  "]


def test_default_collation_compares_case_insensitively_ignoring_trailing_blanks(keyed: Sql) -> None:
    assert keyed("SELECT k FROM dbo.k WHERE k = %s", ("PAD",)) == [("pad  ",)]
    assert keyed("SELECT k FROM dbo.k WHERE k = 'ABCTEST'") == [("abctest",)]
    assert keyed("SELECT count(*) FROM dbo.k WHERE n = N'o''brien   '") == [(1,)]


def test_pymssql_sends_datetime_parameters_with_millisecond_precision(sql: Sql) -> None:
    sql("CREATE TABLE dbo.d (t datetime2(7) NOT NULL PRIMARY KEY)")
    sql("INSERT INTO dbo.d (t) VALUES ('2026-01-01 10:00:00.0005'), ('2026-01-01 10:00:00.0015')")
    # 10:00:00.0015 goes out as '2026-01-01 10:00:00.001': the row itself compares greater.
    assert sql("SELECT count(*) FROM dbo.d WHERE t > %s", (datetime(2026, 1, 1, 10, 0, 0, 1500),)) == [(1,)]


def test_case_only_key_update_is_an_update_pair_with_different_key_text(tracked_k: Sql) -> None:
    tracked_k("INSERT INTO dbo.k (k, v) VALUES ('abc', 1)")
    tracked_k("UPDATE dbo.k SET k = 'ABC ' WHERE k = 'abc'")
    tracked_k.scan()
    rows = tracked_k("SELECT [__$operation], k FROM cdc.dbo_k_CT ORDER BY [__$start_lsn], [__$seqval], [__$operation]")
    assert rows == [(2, "abc"), (3, "abc"), (4, "ABC ")]


def test_trace_flag_8207_logs_a_single_row_key_update_as_an_update_pair(tracked_k: Sql) -> None:
    tracked_k("INSERT INTO dbo.k (k, v) VALUES ('a', 1), ('b', 2)")
    tracked_k("DBCC TRACEON (8207, -1)")
    tracked_k("UPDATE dbo.k SET k = 'c' WHERE k = 'a'")  # one row: 3/4
    tracked_k("UPDATE dbo.k SET k = CONCAT(k, 'x')")  # two rows: still delete + insert
    tracked_k("DBCC TRACEOFF (8207, -1)")
    tracked_k.scan()
    rows = tracked_k(
        "SELECT [__$operation], k FROM cdc.dbo_k_CT WHERE [__$operation] <> 2 OR k LIKE '%x'"
        " ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]"
    )
    assert rows[:2] == [(3, "a"), (4, "c")]
    assert sorted(rows[2:]) == [(1, "b"), (1, "c"), (2, "bx"), (2, "cx")]


def test_key_update_delete_and_insert_carry_their_own_command_ids(tracked_k: Sql) -> None:
    tracked_k("INSERT INTO dbo.k (k, v) VALUES ('a', 1)")
    tracked_k("UPDATE dbo.k SET k = 'b'")
    tracked_k.scan()
    (d_seq, d_cmd), (i_seq, i_cmd) = tracked_k(
        "SELECT [__$seqval], [__$command_id] FROM cdc.dbo_k_CT WHERE [__$start_lsn] = "
        "(SELECT max([__$start_lsn]) FROM cdc.dbo_k_CT) ORDER BY [__$operation]"
    )
    assert d_seq == i_seq and d_cmd < i_cmd  # one row: one seqval (Debezium PR #7728), ordered by command id


MERGE = (
    "MERGE INTO dbo.k AS t USING (VALUES ('a', 10), ('z', 26)) AS s (k, v) ON t.k = s.k"
    " WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (k, v) VALUES (s.k, s.v);"
)


def test_merge_update_on_a_table_with_a_unique_index_is_a_delete_and_insert_in_kb3030352_order(
    tracked_k: Sql,
) -> None:
    tracked_k("INSERT INTO dbo.k (k, v) VALUES ('a', 1), ('b', 2)")
    tracked_k(MERGE)
    tracked_k.scan()
    assert tracked_k("SELECT k, v FROM dbo.k ORDER BY k") == [("a", 10), ("b", 2), ("z", 26)]
    last = "(SELECT max([__$start_lsn]) FROM cdc.dbo_k_CT)"
    by_seqval = tracked_k(
        f"SELECT [__$operation], k, v FROM cdc.dbo_k_CT WHERE [__$start_lsn] = {last}"
        " ORDER BY [__$seqval], [__$operation]"
    )
    by_command = tracked_k(
        f"SELECT [__$operation], k, v FROM cdc.dbo_k_CT WHERE [__$start_lsn] = {last}"
        " ORDER BY [__$command_id], [__$seqval], [__$operation]"
    )
    assert by_seqval[:2] == [(2, "a", 10), (1, "a", 1)]  # the insert first: replaying this loses the row
    assert by_command == [(1, "a", 1), (2, "a", 10), (2, "z", 26)]


def test_merge_update_without_a_unique_index_is_an_update_pair(sql: Sql) -> None:
    sql("CREATE TABLE dbo.h (k varchar(10) NOT NULL, v int NULL)")
    sql("INSERT INTO dbo.h (k, v) VALUES ('a', 1)")
    sql("EXEC sys.sp_cdc_enable_db")
    sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'h', @role_name = NULL")
    sql("MERGE dbo.h USING (SELECT 'a' AS k, 5 AS v) AS s ON h.k = s.k WHEN MATCHED THEN UPDATE SET v = s.v;")
    sql.scan()
    assert sql("SELECT [__$operation], k, v FROM cdc.dbo_h_CT ORDER BY [__$seqval], [__$operation]") == [
        (3, "a", 1),
        (4, "a", 5),
    ]
    sql("CREATE UNIQUE NONCLUSTERED INDEX ux_h ON dbo.h (k)")
    sql("MERGE dbo.h USING (SELECT 'a' AS k, 6 AS v) AS s ON h.k = s.k WHEN MATCHED THEN UPDATE SET v = s.v;")
    sql.scan()
    ops = sql("SELECT [__$operation] FROM cdc.dbo_h_CT WHERE v = 6 OR ([__$operation] = 1 AND v = 5)")
    assert sorted(o[0] for o in ops) == [1, 2]
    with pytest.raises(pymssql.IntegrityError):
        sql("INSERT INTO dbo.h (k, v) VALUES ('a', 7)")


def test_merge_delete_clause_conditions_and_duplicate_source_rows(tracked_k: Sql) -> None:
    tracked_k("INSERT INTO dbo.k (k, v) VALUES ('a', 1), ('b', 2)")
    tracked_k(
        "MERGE dbo.k AS t USING (VALUES ('a', 0), ('b', 3)) AS s (k, v) ON t.k = s.k"
        " WHEN MATCHED AND s.v = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v;"
    )
    assert tracked_k("SELECT k, v FROM dbo.k") == [("b", 3)]
    with pytest.raises(pymssql.OperationalError) as exc:
        tracked_k(
            "MERGE dbo.k AS t USING (VALUES ('b', 1), ('b', 2)) AS s (k, v) ON t.k = s.k"
            " WHEN MATCHED THEN UPDATE SET v = s.v;"
        )
    assert exc.value.args[0] == 8672


@pytest.fixture
def tracked_k(sql: Sql) -> Sql:
    sql("CREATE TABLE dbo.k (k varchar(20) NOT NULL PRIMARY KEY, v int NULL)")
    sql("EXEC sys.sp_cdc_enable_db")
    sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'k', @role_name = NULL")
    return sql
