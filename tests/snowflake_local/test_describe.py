"""The local Snowflake types results by asking DuckDB directly (dev/snowflake_local.py,
``_patch_direct_describe``): the row type every client sees must be the one fakesnow's own path
gives, for the statements and column types the pipeline and dbt use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dev import snowflake_local as sl

STATEMENTS = [
    """CREATE TABLE T (ID NUMBER(38,0) NOT NULL, AMOUNT NUMBER(18,3), CODE VARCHAR(20), NOTE TEXT,
       PAYLOAD BINARY, AT_NTZ TIMESTAMP_NTZ, AT_TZ TIMESTAMP_TZ, AT_LTZ TIMESTAMP_LTZ, DAY DATE,
       OK BOOLEAN, RATIO FLOAT, DOC VARIANT, TAGS ARRAY, META OBJECT)""",
    """INSERT INTO T SELECT 1, 12.5, 'a', 'b', TO_BINARY('0A0B', 'HEX'), '2026-01-01 00:00:00'::TIMESTAMP_NTZ,
       '2026-01-01 00:00:00 +01:00'::TIMESTAMP_TZ, '2026-01-01 00:00:00'::TIMESTAMP_LTZ, '2026-01-01'::DATE,
       TRUE, 0.5, PARSE_JSON('{"a": 1}'), ARRAY_CONSTRUCT(1, 2), OBJECT_CONSTRUCT('k', 'v')""",
    "SELECT * FROM T",
    "SELECT ID, AMOUNT * 2 AS DOUBLED, UPPER(CODE) AS CODE, COUNT(*) OVER () AS N FROM T WHERE ID > 0",
    "SELECT COUNT(*), SUM(AMOUNT), MAX(AT_NTZ), COUNT_IF(OK), COALESCE(SUM(RATIO), 0) FROM T",
    "SELECT DOC:a::INT AS A, TAGS[0] AS FIRST, META:k::VARCHAR AS K, TO_VARCHAR(PAYLOAD, 'HEX') AS HEX FROM T",
    "SELECT DATEADD(day, 1, DAY) AS NEXT_DAY, DATEDIFF(second, AT_NTZ, SYSDATE()) AS AGE,"
    " CONVERT_TIMEZONE('UTC', AT_TZ) AS UTC FROM T",
    "UPDATE T SET CODE = 'c' WHERE ID = 1",
    """MERGE INTO T USING (SELECT 1 AS ID, 'd' AS CODE) AS S ON T.ID = S.ID
       WHEN MATCHED THEN UPDATE SET CODE = S.CODE WHEN NOT MATCHED THEN INSERT (ID, CODE) VALUES (S.ID, S.CODE)""",
    "DELETE FROM T WHERE ID = 2",
    "DESCRIBE TABLE T",
    "SHOW TABLES LIKE 'T'",
    "SELECT 1 FROM INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = 'S'",
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'S' AND table_name = 'T'",
]


@pytest.fixture
def cursor(tmp_path: Path) -> Any:
    sl._patch_direct_describe()
    conn = sl._make_fakesnow(tmp_path).connect(database="DB", schema="S")
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS DB")
        cur.execute("CREATE SCHEMA IF NOT EXISTS DB.S")
        cur.execute("USE SCHEMA DB.S")
        yield cur
    conn.close()


def test_direct_describe_gives_the_row_type_fakesnow_gives(cursor: Any) -> None:
    for sql in STATEMENTS:
        cursor.execute(sql)
        direct, through_fakesnow = sl.describe_directly(cursor), cursor._describe_through_fakesnow()
        assert [tuple(r[:2]) for r in direct] == [tuple(r[:2]) for r in through_fakesnow], sql
        assert cursor.description, sql  # the row type clients read


def test_a_bound_parameter_is_described_with_its_statement(cursor: Any) -> None:
    cursor.execute("CREATE TABLE P (ID INT, NAME VARCHAR)")
    cursor.execute("SELECT ID, NAME FROM P WHERE ID = %s AND NAME = %s", (1, "x"))
    assert [(d.name, d.type_code) for d in cursor.description] == [("ID", 0), ("NAME", 2)]
