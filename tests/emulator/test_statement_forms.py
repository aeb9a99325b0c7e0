"""Statement forms SQL Server accepts that the emulator refused (issue 24): string concatenation
with ``+``, the empty binary constant ``0x``, and ``IF [NOT] EXISTS (…) <statement>``.

Sources:
* "+ (String Concatenation) (Transact-SQL)", learn.microsoft.com/sql/t-sql/language-elements/
  string-concatenation-transact-sql: "An operator in a string expression that concatenates two or
  more character or binary strings, columns, or a combination of strings and column names into one
  expression"; "SET CONCAT_NULL_YIELDS_NULL (Transact-SQL)": when ON (the default, and what every
  driver sets), "concatenating a null value with a string yields a NULL result".
* "Constants (Transact-SQL)", learn.microsoft.com/sql/t-sql/data-types/constants-transact-sql:
  binary constants "0xAE, 0x12Ef, 0x69048AEFDD010E, 0x (empty binary string)". pymssql sends an
  empty ``bytearray`` parameter as ``0x``.
* "IF...ELSE (Transact-SQL)", learn.microsoft.com/sql/t-sql/language-elements/if-else-transact-sql:
  ``IF Boolean_expression { sql_statement | statement_block } [ ELSE { sql_statement |
  statement_block } ]``; "If the Boolean expression contains a SELECT statement, the SELECT statement
  must be enclosed in parentheses"; a statement block is ``BEGIN … END``.
"""

from __future__ import annotations

from tests.emulator.conftest import Sql


def test_plus_concatenates_character_and_binary_strings(client: Sql) -> None:
    assert client("SELECT N'a' + N'b', 'x' + 'y' + 'z', 1 + 2") == [("ab", "xyz", 3)]
    assert client("SELECT 0x01 + 0x02FF") == [(b"\x01\x02\xff",)]
    client("CREATE TABLE dbo.s (id int NOT NULL PRIMARY KEY, name nvarchar(20) NULL, code varchar(5) NULL)")
    client("INSERT INTO dbo.s VALUES (1, N'ann', 'A1'), (2, NULL, 'B2')")
    client("UPDATE dbo.s SET name = name + N'!' WHERE id = 1")
    rows = client("SELECT id, name + N' (' + code + ')', N'#' + CAST(id AS nvarchar(5)) FROM dbo.s ORDER BY id")
    assert rows == [(1, "ann! (A1)", "#1"), (2, None, "#2")]  # NULL + string is NULL


def test_the_empty_binary_constant(client: Sql) -> None:
    assert client("SELECT 0x, DATALENGTH(0x)") == [(b"", 0)]
    client("CREATE TABLE dbo.b (id int NOT NULL PRIMARY KEY, v varbinary(10) NULL)")
    client("INSERT INTO dbo.b VALUES (1, 0x), (2, NULL)")
    client("INSERT INTO dbo.b VALUES (%s, %s)", (3, bytearray(b"")))  # pymssql sends 0x
    assert client("SELECT id, v FROM dbo.b ORDER BY id") == [(1, b""), (2, None), (3, b"")]
    assert client("SELECT count(*) FROM dbo.b WHERE v = 0x") == [(2,)]


def test_if_not_exists_runs_its_statement_only_when_the_condition_holds(client: Sql) -> None:
    create = (
        "IF NOT EXISTS (SELECT 1 FROM sys.tables WHERE name = 'k')"
        " CREATE TABLE dbo.k (k varchar(10) NOT NULL PRIMARY KEY, v int NULL)"
    )
    client(create)
    client(create)  # idempotent: the second run does nothing
    upsert = "IF NOT EXISTS (SELECT 1 FROM dbo.k WHERE k = %s) INSERT INTO dbo.k (k, v) VALUES (%s, %s)"
    client(upsert, ("a", "a", 1))
    client(upsert, ("A", "A", 2))  # exists under the collation: skipped
    assert client("SELECT k, v FROM dbo.k") == [("a", 1)]
    client("IF EXISTS (SELECT 1 FROM dbo.k WHERE v = 1) UPDATE dbo.k SET v = 10 ELSE DELETE FROM dbo.k")
    assert client("SELECT k, v FROM dbo.k") == [("a", 10)]
    client("IF (SELECT count(*) FROM dbo.k) > 5 DELETE FROM dbo.k; ELSE INSERT INTO dbo.k VALUES ('b', 2);")
    assert client("SELECT count(*) FROM dbo.k") == [(2,)]


def test_if_with_statement_blocks_and_a_result_set(client: Sql) -> None:
    client("CREATE TABLE dbo.k (k varchar(10) NOT NULL PRIMARY KEY, v int NULL)")
    client(
        "IF NOT EXISTS (SELECT 1 FROM dbo.k) BEGIN INSERT INTO dbo.k VALUES ('a', 1); "
        "INSERT INTO dbo.k VALUES ('b', CASE WHEN 1 = 1 THEN 2 END); END ELSE BEGIN DELETE FROM dbo.k; END"
    )
    assert client("SELECT k, v FROM dbo.k ORDER BY k") == [("a", 1), ("b", 2)]
    assert client("IF EXISTS (SELECT 1 FROM dbo.k WHERE k = 'A') SELECT v FROM dbo.k WHERE k = 'a' ELSE SELECT 0") == [
        (1,)
    ]


def test_len_excludes_trailing_blanks_and_datalength_counts_bytes(client: Sql) -> None:
    """LEN: "LEN excludes trailing spaces. If that is a problem, consider using the DATALENGTH function,
    which doesn't trim the string" ("LEN (Transact-SQL)", learn.microsoft.com/sql/t-sql/functions/
    len-transact-sql, whose example gives LEN 21 and DATALENGTH 22 for a varchar and 44 for an
    nvarchar holding 'Test of 22 characters '); "DATALENGTH (Transact-SQL)", learn.microsoft.com/
    sql/t-sql/functions/datalength-transact-sql: the number of bytes used to represent an expression,
    NULL for NULL. varchar holds one byte per character in code page 1252, nvarchar two (UTF-16)."""
    assert client("SELECT LEN('ab '), LEN(N'ab  '), LEN(' ab'), LEN(''), LEN(NULL)") == [(2, 2, 3, 0, None)]
    assert client("SELECT DATALENGTH('ab '), DATALENGTH(N'ab '), DATALENGTH(0x0102), DATALENGTH(NULL)") == [
        (3, 6, 2, None)
    ]
    client(
        "CREATE TABLE dbo.l (id int NOT NULL PRIMARY KEY, v varchar(40) NULL, n nvarchar(40) NULL, c char(5) NULL,"
        " b varbinary(10) NULL, big bigint NULL, at datetime NULL)"
    )
    client(
        "INSERT INTO dbo.l VALUES (1, 'Test of 22 characters ', N'Test of 22 characters ', 'ab', 0x00FF00, 7,"
        " '2026-01-01'), (2, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    assert client(
        "SELECT LEN(v), DATALENGTH(v), LEN(n), DATALENGTH(n), LEN(c), DATALENGTH(c), DATALENGTH(b),"
        " DATALENGTH(id), DATALENGTH(big), DATALENGTH(at) FROM dbo.l ORDER BY id"
    ) == [(21, 22, 21, 44, 2, 5, 3, 4, 8, 8), (None, None, None, None, None, None, None, 4, None, None)]
    assert client("SELECT id FROM dbo.l WHERE DATALENGTH(v) > LEN(v)") == [(1,)]
