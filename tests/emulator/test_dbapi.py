"""pymssql compatibility: values, parameters, cursors, transactions, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pymssql
import pytest

from dev.mssql_emulator import Engine, connect
from tests.emulator.conftest import Sql

DB_LIB = b"DB-Lib error message 20018, severity 16:\nGeneral SQL Server error: Check messages from the SQL Server\n"


@pytest.fixture
def typed(sql: Sql) -> Sql:
    sql("""CREATE TABLE dbo.types (
        id int NOT NULL PRIMARY KEY, b bigint NULL, s smallint NULL, ti tinyint NULL, bit_col bit NULL,
        dec decimal(18,4) NULL, num numeric(10,2) NULL, m money NULL, sm smallmoney NULL, f float NULL, r real NULL,
        c char(2) NULL, vc varchar(20) NULL, nc nchar(3) NULL, nvc nvarchar(max) NULL, d date NULL, t time(3) NULL,
        dt datetime NULL, dt2 datetime2(3) NULL, dt7 datetime2 NULL, dto datetimeoffset NULL,
        u uniqueidentifier NULL, vb varbinary(max) NULL, bn binary(10) NULL, x xml NULL)""")
    return sql


def test_result_values_have_pymssql_types(typed: Sql) -> None:
    u = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
    typed(
        "INSERT INTO dbo.types VALUES (1, 9000000000, 7, 200, 1, 12.3456, 99.5, 1000.25, 3.5, 1.5, 2.5, 'US', "
        "'abc', N'xyz', N'ünïcode', '2026-01-02', '10:11:12.123', '2026-01-02 03:04:05.678', "
        "'2026-01-02 03:04:05.678', '2026-01-02 03:04:05.1234567', '2026-01-02 03:04:05 +02:00', %s, 0x0102, "
        "0x00000000000000000001, N'<a/>')",
        (u,),
    )
    row = typed("SELECT * FROM dbo.types")[0]
    assert row[:5] == (1, 9000000000, 7, 200, True)
    assert row[5] == Decimal("12.3456") and str(row[6]) == "99.50" and str(row[7]) == "1000.2500"
    assert str(row[8]) == "3.5000" and row[9] == 1.5 and isinstance(row[10], float)
    assert row[11:15] == ("US", "abc", "xyz", "ünïcode")
    assert row[15] == date(2026, 1, 2) and row[16] == time(10, 11, 12, 123000)
    assert row[17] == datetime(2026, 1, 2, 3, 4, 5, 677000) and row[17].tzinfo is None  # datetime: 1/300 s
    assert row[18] == datetime(2026, 1, 2, 3, 4, 5, 678000)
    assert row[19] == datetime(2026, 1, 2, 3, 4, 5, 123456)  # 100 ns ticks truncated to µs
    assert row[20].tzinfo is not None and row[20] == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert row[21] == u and isinstance(row[21], uuid.UUID)
    assert row[22] == b"\x01\x02" and row[23] == bytes(9) + b"\x01" and row[24] == "<a/>"
    codes = {d[0]: d[1] for d in typed.cur.description}
    assert codes["id"] == pymssql.NUMBER and codes["dec"] == pymssql.DECIMAL and codes["vc"] == pymssql.STRING
    assert codes["dt2"] == pymssql.DATETIME and codes["vb"] == pymssql.BINARY


def test_parameters_pymssql_style(typed: Sql) -> None:
    typed(
        "INSERT INTO dbo.types (id, vc, vb, dt2, dec, bit_col) VALUES (%s, %s, %s, %s, %s, %s)",
        (1, "it's", b"\x00\xff", datetime(2026, 5, 6, 7, 8, 9, 123456), Decimal("1.5"), True),
    )
    typed("INSERT INTO dbo.types (id, vc) VALUES (%(id)s, %(v)s)", {"id": 2, "v": "named"})
    assert typed("SELECT id, vc, vb, dt2, dec, bit_col FROM dbo.types WHERE vb = %s", (b"\x00\xff",)) == [
        (1, "it's", b"\x00\xff", datetime(2026, 5, 6, 7, 8, 9, 123000), Decimal("1.5000"), True)
    ]
    assert typed("SELECT vc FROM dbo.types WHERE id = %(id)s", {"id": 2}) == [("named",)]
    assert typed("SELECT '100%'") == [("100%",)]  # no params: no substitution (as pymssql)


def test_cursor_fetch_api_and_description(sql: Sql) -> None:
    sql("CREATE TABLE dbo.n (i int NOT NULL PRIMARY KEY)")
    sql("INSERT INTO dbo.n VALUES " + ", ".join(f"({i})" for i in range(10)))
    cur = sql.conn.cursor()
    cur.execute("SELECT i, i * 2 AS doubled, i + 1 FROM dbo.n ORDER BY i")
    assert [d[0] for d in cur.description] == ["i", "doubled", ""]
    assert cur.fetchone() == (0, 0, 1)
    assert cur.fetchmany(3) == [(1, 2, 2), (2, 4, 3), (3, 6, 4)]
    assert len(cur.fetchall()) == 6 and cur.fetchone() is None
    cur.execute("UPDATE dbo.n SET i = i + 100 WHERE i < 5")
    assert cur.rowcount == 5 and cur.description is None
    dcur = sql.conn.cursor(as_dict=True)
    dcur.execute("SELECT TOP (2) i FROM dbo.n ORDER BY i")
    assert dcur.fetchall() == [{"i": 5}, {"i": 6}]
    with pytest.raises(pymssql.ColumnsWithoutNamesError):
        dcur.execute("SELECT 1")
    cur.execute("SELECT 1 AS a; SELECT 2 AS b")
    assert cur.fetchall() == [(1,)] and cur.nextset() and cur.fetchall() == [(2,)] and cur.nextset() is None
    assert list(sql.conn.cursor().__enter__().__class__.__mro__)  # cursors are context managers


def test_default_is_implicit_transaction_dml_needs_commit(tmp_path: object) -> None:
    engine = Engine(":memory:")
    try:
        a, b = engine.connect(), engine.connect()
        ca, cb = a.cursor(), b.cursor()
        ca.execute("CREATE TABLE dbo.z (id int NOT NULL PRIMARY KEY)")
        a.commit()
        ca.execute("INSERT INTO dbo.z VALUES (1)")
        cb.execute("SELECT COUNT(*) FROM dbo.z")
        assert cb.fetchone() == (0,)
        a.rollback()
        ca.execute("INSERT INTO dbo.z VALUES (2)")
        a.commit()
        cb.execute("SELECT id FROM dbo.z")
        assert cb.fetchall() == [(2,)]
        a.autocommit(True)
        ca.execute("INSERT INTO dbo.z VALUES (3)")
        cb.execute("SELECT COUNT(*) FROM dbo.z")
        assert cb.fetchone() == (2,)
        ca.execute("BEGIN TRAN; INSERT INTO dbo.z VALUES (4); ROLLBACK TRAN")
        ca.execute("SELECT @@TRANCOUNT")
        assert ca.fetchone() == (0,)
    finally:
        engine.close()


def test_connect_in_process_file_and_context_manager(tmp_path: object) -> None:
    path = f"{tmp_path}/db.duckdb"
    with connect(database=path) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE dbo.k (id int NOT NULL PRIMARY KEY, v nvarchar(10) NULL)")
        cur.execute("INSERT INTO dbo.k VALUES (1, N'a')")
        conn.commit()
    with connect(database=path) as conn:  # reopened: data persisted
        cur = conn.cursor()
        cur.execute("SELECT v FROM dbo.k")
        assert cur.fetchall() == [("a",)]
    with pytest.raises(pymssql.InterfaceError):
        cur.execute("SELECT 1")


@pytest.mark.parametrize(
    ("sql_text", "number", "cls", "message"),
    [
        ("SELECT * FROM dbo.nope", 208, pymssql.ProgrammingError, b"Invalid object name 'dbo.nope'."),
        ("SELECT nope FROM dbo.e", 207, pymssql.ProgrammingError, b"Invalid column name 'nope'."),
        ("INSERT INTO dbo.e VALUES (1, N'dup')", 2627, pymssql.IntegrityError, b"Violation of PRIMARY KEY constraint"),
        ("INSERT INTO dbo.e (id, v) VALUES (NULL, N'x')", 515, pymssql.IntegrityError, b"Cannot insert the value NULL"),
        ("SELEC 1", 102, pymssql.ProgrammingError, b"Incorrect syntax near"),
        (
            "EXEC dbo.no_such_proc",
            2812,
            pymssql.ProgrammingError,
            b"Could not find stored procedure 'dbo.no_such_proc'.",
        ),
        ("COMMIT", 3902, pymssql.OperationalError, b"The COMMIT TRANSACTION request has no corresponding"),
    ],
)
def test_errors_are_pymssql_exceptions_with_number_and_message(
    sql: Sql, sql_text: str, number: int, cls: type, message: bytes
) -> None:
    sql("CREATE TABLE dbo.e (id int NOT NULL PRIMARY KEY, v nvarchar(10) NULL)")
    sql("INSERT INTO dbo.e VALUES (1, N'a')")
    with pytest.raises(cls) as exc:
        sql(sql_text)
    num, msg = exc.value.args  # (number, message) as pymssql raises a statement's error
    assert num == number and msg.startswith(message) and isinstance(msg, bytes)
    if number in (208, 207, 2812):
        assert msg.endswith(DB_LIB)
    assert sql("SELECT COUNT(*) FROM dbo.e") == [(1,)]  # the session is still usable


def test_pk_violation_message_names_table_and_key(sql: Sql) -> None:
    sql("CREATE TABLE dbo.c2 (a int NOT NULL, b int NOT NULL, CONSTRAINT pk_c2 PRIMARY KEY (a, b))")
    sql("INSERT INTO dbo.c2 VALUES (1, 2)")
    with pytest.raises(pymssql.IntegrityError) as exc:
        sql("INSERT INTO dbo.c2 VALUES (1, 2)")
    assert exc.value.args[1].startswith(
        b"Violation of PRIMARY KEY constraint 'pk_c2'. Cannot insert duplicate key in object 'dbo.c2'. "
        b"The duplicate key value is (1, 2)."
    )


def test_tsql_surface(sql: Sql) -> None:
    sql(
        "CREATE TABLE [dbo].[Weird Name] ([key] int IDENTITY(1,1) NOT NULL PRIMARY KEY NONCLUSTERED, "
        "[val] nvarchar(20) NOT NULL DEFAULT (N'dflt'), created datetime2(3) NOT NULL DEFAULT (SYSDATETIME()))"
    )
    sql("INSERT INTO [dbo].[Weird Name] ([val]) VALUES (N'a'), (N'b')")
    sql("INSERT INTO [dbo].[Weird Name] (created) VALUES ('2026-01-01')")
    assert sql("SELECT [key], [val] FROM [dbo].[Weird Name] ORDER BY [key]") == [(1, "a"), (2, "b"), (3, "dflt")]
    assert sql("SELECT TOP 1 [val] FROM [Weird Name] ORDER BY [key] DESC") == [("dflt",)]
    sql("DECLARE @x int = 2; DECLARE @lsn binary(10); SET @lsn = 0x01")
    assert sql("DECLARE @k int = 2; SELECT [val] FROM [dbo].[Weird Name] WHERE [key] = @k") == [("b",)]
    assert sql(
        "SELECT ISNULL(NULL, 5), LEN(N'abc'), DATEADD(day, 1, CAST('2026-01-01' AS date)), "
        "CAST(1.5 AS money), CONVERT(nvarchar(10), 42)"
    )[0][:2] == (5, 3)
    sql("ALTER TABLE [dbo].[Weird Name] ADD extra bigint NULL")
    assert sql(
        "SELECT c.name FROM sys.columns c WHERE c.object_id = OBJECT_ID(N'dbo.[Weird Name]') ORDER BY column_id"
    ) == [("key",), ("val",), ("created",), ("extra",)]
    sql("DROP TABLE [dbo].[Weird Name]")
    assert sql.one("SELECT OBJECT_ID(N'dbo.[Weird Name]')") is None


def test_truncate_on_a_cdc_table_is_refused(tracked: Sql) -> None:
    with pytest.raises(pymssql.OperationalError) as exc:
        tracked("TRUNCATE TABLE dbo.t")
    assert exc.value.args[0] == 4711
