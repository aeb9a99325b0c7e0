"""The database's default collation, SQL_Latin1_General_CP1_CI_AS, wherever SQL Server applies it:
``MERGE … ON``, joins, ``WHERE``, ``GROUP BY`` / ``DISTINCT`` and the uniqueness of PRIMARY KEY,
UNIQUE constraints and unique indexes, the check and the operation alike (issue 24).

Sources (docs/emulator.md "Collation" lists them with the rule each one backs):
* case-insensitive, trailing blanks ignored: collation name (CI) and KB 316626 / "How SQL Server
  compares strings with trailing spaces" (ANSI padding);
* width-insensitive for Unicode data: the description ``sys.fn_helpcollations()`` and
  ``sp_helpsort`` give for it, "Latin1-General, case-insensitive, accent-sensitive,
  kanatype-insensitive, width-insensitive for Unicode Data, SQL Server Sort Order 52 on Code Page
  1252 for non-Unicode Data";
* errors: "Database engine events and errors (2000 to 2999)", learn.microsoft.com/sql/relational-
  databases/errors-events/database-engine-events-and-errors-2000-to-2999 — 2601 (severity 14)
  "Cannot insert duplicate key row in object '%.*ls' with unique index '%.*ls'. The duplicate key
  value is %ls." and 2627 (severity 14) "Violation of %ls constraint '%.*ls'. Cannot insert
  duplicate key in object '%.*ls'. The duplicate key value is %ls." (%ls: PRIMARY KEY or UNIQUE KEY).
"""

from __future__ import annotations

import re

import pymssql
import pytest

from tests.emulator.conftest import Sql, track

TRAILER = b"DB-Lib error message 20018, severity 14:\nGeneral SQL Server error: Check messages from the SQL Server\n"
REPRO_MERGE = (
    "MERGE dbo.t AS t USING (SELECT 'XY30' AS code, 2 AS v) AS s ON t.code = s.code"
    " WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (code, v) VALUES (s.code, s.v);"
)


def error(client: Sql, statement: str) -> tuple[int, bytes]:
    with pytest.raises(pymssql.IntegrityError) as exc:
        client(statement)
    number, message = exc.value.args
    if isinstance(client.conn, pymssql.Connection) and number in (2601, 2627):
        # Over TDS pymssql keeps the server's ERROR token on the exception it wraps: SQL Server
        # reports both duplicate-key errors as "Msg 2627 (2601), Level 14, State 1".
        server = exc.value.__context__
        assert (server.severity, server.state) == (14, 1)  # type: ignore[union-attr]
    return number, message


def test_issue_24_reproduction_merge_matches_the_key_and_the_case_only_update_succeeds(sql: Sql) -> None:
    # Given the issue's table and row,
    sql("CREATE TABLE dbo.t (code varchar(20) NOT NULL PRIMARY KEY, v int NULL)")
    sql("INSERT INTO dbo.t VALUES ('xy30', 1)")
    track(sql, "t")
    # when MERGE's source row differs from it only in case, it matches: one row, the stored key kept;
    sql(REPRO_MERGE)
    assert sql("SELECT code, v FROM dbo.t") == [("xy30", 2)]
    # and the key update to a value the collation calls equal succeeds (same key to SQL Server),
    sql("UPDATE dbo.t SET code = 'XY30' WHERE code = 'xy30'")
    assert sql("SELECT code, v FROM dbo.t") == [("XY30", 2)]
    # captured as an update pair whose images hold the two spellings (the emulator's documented
    # choice: the index key did not change, so no split update; the pipeline handles both forms).
    sql.scan()
    rows = sql("SELECT [__$operation], code, v FROM cdc.dbo_t_CT ORDER BY [__$start_lsn], [__$seqval], [__$operation]")
    assert rows[-2:] == [(3, "xy30", 2), (4, "XY30", 2)]


def test_primary_key_is_unique_under_the_collation_with_sql_servers_2627(client: Sql) -> None:
    client("CREATE TABLE dbo.pk (code varchar(20) NOT NULL CONSTRAINT pk_code PRIMARY KEY, v int NULL)")
    client("INSERT INTO dbo.pk VALUES ('xy30', 1)")
    for duplicate in ("XY30", "xy30  ", "Xy30 "):
        number, message = error(client, f"INSERT INTO dbo.pk VALUES ('{duplicate}', 2)")
        assert number == 2627
        assert message == (
            b"Violation of PRIMARY KEY constraint 'pk_code'. Cannot insert duplicate key in object 'dbo.pk'. "
            b"The duplicate key value is (" + duplicate.encode() + b")." + TRAILER
        )
    assert client("SELECT code, v FROM dbo.pk") == [("xy30", 1)]


def test_generated_primary_key_name_and_composite_key_value(client: Sql) -> None:
    client("CREATE TABLE dbo.t (code varchar(20) NOT NULL PRIMARY KEY, v int NULL)")
    client("INSERT INTO dbo.t VALUES ('xy30', 1)")
    number, message = error(client, "INSERT INTO dbo.t VALUES ('XY30', 1)")
    assert number == 2627
    assert re.fullmatch(
        rb"Violation of PRIMARY KEY constraint 'PK__t__[0-9A-F]{16}'\. Cannot insert duplicate key in object "
        rb"'dbo\.t'\. The duplicate key value is \(XY30\)\.DB-Lib.*",
        message,
        re.DOTALL,
    )
    client("CREATE TABLE dbo.c (region char(2) NOT NULL, code nvarchar(10) NOT NULL, PRIMARY KEY (region, code))")
    client("INSERT INTO dbo.c VALUES ('EU', N'ab')")
    client("INSERT INTO dbo.c VALUES ('US', N'AB')")  # another region: another key
    number, message = error(client, "INSERT INTO dbo.c VALUES ('eu', N'Ab ')")
    assert number == 2627 and b"The duplicate key value is (eu, Ab )." in message


def test_key_update_and_merge_insert_that_collide_under_the_collation_fail_with_2627(client: Sql) -> None:
    client("CREATE TABLE dbo.m (k varchar(10) NOT NULL CONSTRAINT pk_m PRIMARY KEY, v int NULL)")
    client("INSERT INTO dbo.m VALUES ('ab', 1), ('cd', 2)")
    number, message = error(client, "UPDATE dbo.m SET k = 'AB' WHERE k = 'cd'")
    assert number == 2627 and b"The duplicate key value is (AB)." in message
    # two source rows MERGE does not match, equal under the collation: the second one collides
    number, message = error(
        client,
        "MERGE dbo.m AS t USING (VALUES ('q', 1), ('Q ', 2)) AS s (k, v) ON t.k = s.k"
        " WHEN NOT MATCHED THEN INSERT (k, v) VALUES (s.k, s.v);",
    )
    assert number == 2627 and b"The duplicate key value is (Q )." in message
    # a multi-row key update that swaps case is fine: every new key is unique
    client("UPDATE dbo.m SET k = UPPER(k)")
    assert sorted(client("SELECT k, v FROM dbo.m")) == [("AB", 1), ("CD", 2)]


def test_unique_index_is_2601_and_unique_constraint_2627_under_the_collation(client: Sql) -> None:
    client("CREATE TABLE dbo.u (id int NOT NULL PRIMARY KEY, email nvarchar(80) NOT NULL, sku varchar(10) NULL)")
    client("CREATE UNIQUE NONCLUSTERED INDEX ux_u_email ON dbo.u (email)")
    client("INSERT INTO dbo.u VALUES (1, N'a@example.com', 'S1')")
    number, message = error(client, "INSERT INTO dbo.u VALUES (2, N'A@Example.com', 'S2')")
    assert number == 2601
    assert message == (
        b"Cannot insert duplicate key row in object 'dbo.u' with unique index 'ux_u_email'. "
        b"The duplicate key value is (A@Example.com)." + TRAILER
    )
    client(
        "CREATE TABLE dbo.w (id int NOT NULL PRIMARY KEY, code nvarchar(10) NOT NULL CONSTRAINT uq_w_code UNIQUE,"
        " a int NULL, b varchar(5) NULL, CONSTRAINT uq_w_ab UNIQUE NONCLUSTERED (a, b))"
    )
    client("INSERT INTO dbo.w VALUES (1, N'x', 1, 'p'), (2, N'y', 1, NULL)")
    number, message = error(client, "INSERT INTO dbo.w VALUES (3, N'X ', 2, 'q')")
    assert number == 2627
    assert message.startswith(
        b"Violation of UNIQUE KEY constraint 'uq_w_code'. Cannot insert duplicate key in object 'dbo.w'. "
        b"The duplicate key value is (X )."
    )
    number, message = error(client, "UPDATE dbo.w SET b = 'P' WHERE id = 2")
    assert number == 2627 and b"constraint 'uq_w_ab'" in message and b"The duplicate key value is (1, P)." in message
    # SQL Server's unique constraints and indexes allow one NULL, not two
    number, message = error(client, "INSERT INTO dbo.w VALUES (4, N'z', 1, NULL)")
    assert number == 2627 and b"The duplicate key value is (1, <NULL>)." in message


def test_unicode_data_compares_width_insensitively(sql: Sql) -> None:
    sql("CREATE TABLE dbo.n (k nvarchar(10) NOT NULL PRIMARY KEY)")
    sql("INSERT INTO dbo.n VALUES (N'ab1')")
    assert sql("SELECT k FROM dbo.n WHERE k = N'ＡＢ１'") == [("ab1",)]  # full-width forms
    with pytest.raises(pymssql.IntegrityError) as exc:
        sql("INSERT INTO dbo.n VALUES (N'Ａｂ１')")
    assert exc.value.args[0] == 2627


@pytest.fixture
def heap(client: Sql) -> Sql:
    client("CREATE TABLE dbo.g (k varchar(10) NULL, n nvarchar(10) NULL, v int NULL)")
    client("INSERT INTO dbo.g VALUES ('a', N'x', 1), ('A', N'X ', 2), ('a  ', N'ｘ', 3), ('b', N'y', 4)")
    client("CREATE TABLE dbo.h (k varchar(10) NOT NULL PRIMARY KEY, label nvarchar(10) NULL)")
    client("INSERT INTO dbo.h VALUES ('A ', N'first'), ('B', N'second')")
    return client


def test_group_by_and_distinct_fold_values_the_collation_calls_equal(heap: Sql) -> None:
    groups = heap("SELECT k, count(*), sum(v) FROM dbo.g GROUP BY k ORDER BY k")
    assert [(k.rstrip().upper(), c, s) for k, c, s in groups] == [("A", 3, 6), ("B", 1, 4)]
    assert len(heap("SELECT DISTINCT k FROM dbo.g")) == 2
    assert len(heap("SELECT DISTINCT n FROM dbo.g")) == 2  # Unicode: case, trailing blanks and width
    assert heap("SELECT count(DISTINCT k), count(DISTINCT n) FROM dbo.g") == [(2, 2)]
    assert heap("SELECT k, v FROM dbo.g WHERE k IN ('B', 'z')") == [("b", 4)]
    assert heap("SELECT count(*) FROM dbo.g WHERE k LIKE 'A%'") == [(3,)]


def test_joins_and_derived_tables_compare_under_the_collation(heap: Sql) -> None:
    rows = heap("SELECT g.v, h.label FROM dbo.g AS g JOIN dbo.h AS h ON g.k = h.k ORDER BY g.v")
    assert rows == [(1, "first"), (2, "first"), (3, "first"), (4, "second")]
    rows = heap("SELECT h.label FROM dbo.h AS h JOIN (SELECT 'b' AS k) AS s ON h.k = s.k")
    assert rows == [("second",)]
    rows = heap("SELECT h.label FROM (VALUES (N'a')) AS s (k) JOIN dbo.h AS h ON s.k = h.k")
    assert rows == [("first",)]
    assert heap("SELECT count(*) FROM dbo.g WHERE k IN (SELECT k FROM dbo.h)") == [(4,)]
    heap("DELETE FROM dbo.g WHERE k = 'A'")
    assert heap("SELECT k FROM dbo.g") == [("b",)]


def test_a_duplicate_key_ends_the_statement_and_the_transaction_goes_on(client: Sql) -> None:
    """With SET XACT_ABORT OFF, the default, a duplicate key terminates the statement, not the
    transaction: "When SET XACT_ABORT is OFF, in some cases only the Transact-SQL statement that
    raised the error is rolled back and the transaction continues processing" ("SET XACT_ABORT
    (Transact-SQL)", learn.microsoft.com/sql/t-sql/statements/set-xact-abort-transact-sql; its
    example commits the statements around a failed one). The failed statement leaves nothing: none
    of its rows, no change rows."""
    client("CREATE TABLE dbo.k (code varchar(10) NOT NULL CONSTRAINT pk_k PRIMARY KEY, v int NULL)")
    client("CREATE UNIQUE INDEX ux_k_v ON dbo.k (v)")
    client("CREATE TABLE dbo.i (id int NOT NULL CONSTRAINT pk_i PRIMARY KEY, v int NULL)")
    client("INSERT INTO dbo.k VALUES ('a', 1)")
    track(client, "k")
    client("BEGIN TRAN")
    client("INSERT INTO dbo.k VALUES ('b', 2)")
    assert error(client, "UPDATE dbo.k SET code = 'A' WHERE code = 'b'")[0] == 2627
    assert error(client, "INSERT INTO dbo.k VALUES ('c', 3), ('d', 1)")[0] == 2601  # 'c' is undone too
    merge = (
        "MERGE dbo.k AS t USING (VALUES ('b', 20), ('e', 1)) AS s (code, v) ON t.code = s.code"
        " WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (code, v) VALUES (s.code, s.v);"
    )
    assert error(client, merge)[0] == 2601  # 'e' takes a's v; b's update is undone with it
    client("INSERT INTO dbo.i VALUES (1, 1)")
    assert error(client, "INSERT INTO dbo.i VALUES (2, 2), (1, 3)")[0] == 2627  # a key DuckDB holds too
    assert client("SELECT @@TRANCOUNT") == [(1,)]
    client("INSERT INTO dbo.k VALUES ('f', 6)")
    client("COMMIT")
    assert sorted(client("SELECT code, v FROM dbo.k")) == [("a", 1), ("b", 2), ("f", 6)]
    assert client("SELECT id, v FROM dbo.i") == [(1, 1)]
    client("EXEC emu.capture")
    changes = client("SELECT [__$operation], code, v FROM cdc.dbo_k_CT ORDER BY [__$seqval]")
    assert changes == [(2, "b", 2), (2, "f", 6)]


def test_a_failed_statement_outside_a_transaction_leaves_nothing(client: Sql) -> None:
    """Autocommit: the failing statement is its own transaction, rolled back whole (same page)."""
    client("CREATE TABLE dbo.k (code varchar(10) NOT NULL PRIMARY KEY, v int NULL)")
    client("INSERT INTO dbo.k VALUES ('a', 1)")
    assert error(client, "INSERT INTO dbo.k VALUES ('b', 2), ('A', 3)")[0] == 2627
    assert client("SELECT @@TRANCOUNT") == [(0,)]
    client("INSERT INTO dbo.k VALUES ('c', 3)")
    assert sorted(client("SELECT code FROM dbo.k")) == [("a",), ("c",)]


def test_with_xact_abort_on_a_duplicate_key_rolls_the_transaction_back(client: Sql) -> None:
    """XACT_ABORT ON: "When SET XACT_ABORT is ON, if a Transact-SQL statement raises a run-time error, the entire
    transaction is terminated and rolled back" ("SET XACT_ABORT (Transact-SQL)", as above): the
    earlier insert is gone, @@TRANCOUNT is 0 and a ROLLBACK finds no transaction (Msg 3903)."""
    client("CREATE TABLE dbo.k (code varchar(10) NOT NULL PRIMARY KEY, v int NULL)")
    client("INSERT INTO dbo.k VALUES ('a', 1)")
    client("SET XACT_ABORT ON")
    client("BEGIN TRAN")
    client("INSERT INTO dbo.k VALUES ('b', 2)")
    assert error(client, "INSERT INTO dbo.k VALUES ('A', 3)")[0] == 2627
    assert client("SELECT @@TRANCOUNT") == [(0,)]
    with pytest.raises(pymssql.OperationalError) as exc:
        client("ROLLBACK")
    assert exc.value.args[0] == 3903
    client("SET XACT_ABORT OFF")
    client("BEGIN TRAN")
    client("INSERT INTO dbo.k VALUES ('c', 3)")
    assert error(client, "INSERT INTO dbo.k VALUES ('A', 4)")[0] == 2627
    client("COMMIT")
    assert sorted(client("SELECT code FROM dbo.k")) == [("a",), ("c",)]


def test_intersect_and_except_compare_under_the_collation(heap: Sql) -> None:
    """EXCEPT and INTERSECT return distinct rows, character columns compared under their collation
    and NULLs equal ("Set Operators - EXCEPT and INTERSECT (Transact-SQL)", learn.microsoft.com/sql/
    t-sql/language-elements/set-operators-except-and-intersect-transact-sql: "Returns distinct rows
    by comparing the results of two queries"; character columns compared "according to the rules of
    collation precedence"; "two NULL values are considered equal"; the result's column names are the
    left query's): 'a', 'A' and 'a  ' are one row, as for DISTINCT."""

    def folded(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return sorted(tuple(v.rstrip().upper() if isinstance(v, str) else v for v in r) for r in rows)  # type: ignore[misc]

    assert folded(heap("SELECT k FROM dbo.g INTERSECT SELECT k FROM dbo.h")) == [("A",), ("B",)]
    assert folded(heap("SELECT k FROM dbo.g EXCEPT SELECT k FROM dbo.h WHERE label = N'second'")) == [("A",)]
    assert heap("SELECT k FROM dbo.g EXCEPT SELECT k FROM dbo.h") == []
    assert folded(heap("SELECT n FROM dbo.g EXCEPT SELECT N'X'")) == [("Y",)]  # width-insensitive too
    heap("INSERT INTO dbo.g VALUES (NULL, NULL, 5)")
    assert heap("SELECT k, n FROM dbo.g WHERE v = 5 INTERSECT SELECT NULL, NULL") == [(None, None)]
    rows = heap("SELECT k AS key_text, v FROM dbo.g WHERE v < 3 INTERSECT SELECT 'A', 2 FROM dbo.h ORDER BY key_text")
    assert rows == [("A", 2)]
    assert heap.cur.description[0][0] == "key_text"


# Punctuation in the order the emulator's rule gives it: before digits and letters, among itself by
# code point (the order among punctuation characters is the emulator's choice; see docs/emulator.md).
SORTED_KEYS = ["a:", "a@", "a[", "a\\", "a]", "a^", "a_b", "a{", "a|", "a}", "a~", "a1", "ab", "AC"]


def test_punctuation_sorts_before_digits_and_letters_in_order_by_and_keyset_comparisons(client: Sql) -> None:
    """Non-alphanumeric characters sort before digits and letters: for Unicode data the Windows
    word sort, "all punctuation marks and other non-alphanumeric characters, except the hyphen and
    the apostrophe, come before any alphanumeric character" (Microsoft, "StringSorter.STRINGSORT",
    learn.microsoft.com/previous-versions/visualstudio/visual-studio-6.0/aa254109; the string sort
    treats hyphen and apostrophe "like any other nonalphanumeric symbols. They precede the
    alphanumeric symbols"), and for varchar under SQL_Latin1_General_CP1_CI_AS the code page's sort
    order puts punctuation before digits and letters (KB 322112). So `_ [ \\ ] ^ { | } ~` sort
    before `1` and `b`, in ORDER BY and in the keyset comparisons `>` / `<` alike."""
    client("CREATE TABLE dbo.o (k varchar(10) NOT NULL PRIMARY KEY, n nvarchar(10) NULL)")
    shuffled = SORTED_KEYS[::2] + SORTED_KEYS[1::2]
    client("INSERT INTO dbo.o VALUES " + ", ".join(f"('{v}', N'{v}')" for v in shuffled))
    assert [r[0] for r in client("SELECT k FROM dbo.o ORDER BY k")] == SORTED_KEYS
    assert [r[0] for r in client("SELECT n FROM dbo.o ORDER BY n")] == SORTED_KEYS
    for i, after in enumerate(SORTED_KEYS):
        rest = SORTED_KEYS[i + 1 :]
        assert [r[0] for r in client(f"SELECT k FROM dbo.o WHERE k > '{after}' ORDER BY k")] == rest
        assert [r[0] for r in client("SELECT n FROM dbo.o WHERE n > %s ORDER BY n", (after,))] == rest
        assert len(client(f"SELECT k FROM dbo.o WHERE k < '{after}'")) == i
