"""A ``varchar``/``char`` column holds code page 1252 (the default collation's), on every write path,
so the emulator never keeps a value SQL Server could not store and an in-process read and a driver's
read of a row agree.

Source: "Collation and Unicode support" (learn.microsoft.com/sql/relational-databases/collations/
collation-and-unicode-support): non-Unicode data is stored in the collation's code page, and
characters that are not in it are replaced by a best-fit character where Windows has one, else by
``?``. Windows' best-fit table for 1252 (bestfit1252.txt) maps the full-width forms U+FF01-FF5E to
ASCII. Found by test_property_collation: the emulator kept ``ａｂ`` and ``ＺＺ`` in a varchar key, two
keys that a driver read as one, ``??``.
"""

from __future__ import annotations

from tests.emulator.conftest import Sql, ct_rows, track


def test_varchar_holds_code_page_1252_on_every_write_path(sql: Sql, client: Sql) -> None:
    sql("CREATE TABLE dbo.cp (id int NOT NULL PRIMARY KEY, v varchar(20) NULL, c char(3) NULL, n nvarchar(20) NULL)")
    track(sql, "cp")
    # INSERT (literals and a pymssql/in-process parameter), UPDATE and MERGE, Unicode into varchar
    client("INSERT INTO dbo.cp VALUES (1, N'ａｂ', N'Ｘ', N'ａｂ'), (2, N'ā€é', N'∞', N'ā')")
    client("INSERT INTO dbo.cp (id, v) VALUES (3, %s)", ("ＺＺ top",))
    client("UPDATE dbo.cp SET v = N'日本' WHERE id = 1")
    client(
        "MERGE dbo.cp AS t USING (SELECT 2 AS id, N'Ｑ１' AS v) AS s ON t.id = s.id"
        " WHEN MATCHED THEN UPDATE SET v = s.v;"
    )
    expected = [(1, "??", "X  ", "ａｂ"), (2, "Q1", "?  ", "ā"), (3, "ZZ top", None, None)]
    assert client("SELECT id, v, c, n FROM dbo.cp ORDER BY id") == expected
    # and the change table holds what the table held at each step (nvarchar keeps its Unicode).
    sql.scan()
    images = [(r[2], *r[4:]) for r in ct_rows(sql, "dbo_cp", "id, v, c, n") if r[2] in (2, 4)]
    assert images == [
        (2, 1, "ab", "X  ", "ａｂ"),
        (2, 2, "?€é", "?  ", "ā"),
        (2, 3, "ZZ top", None, None),
        (4, 1, "??", "X  ", "ａｂ"),
        (2, 2, "Q1", "?  ", "ā"),  # a MERGE update on a keyed table: delete + insert (docs/emulator.md)
    ]
