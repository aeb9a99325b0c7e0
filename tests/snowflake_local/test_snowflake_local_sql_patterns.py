"""What the local Snowflake can and cannot run: the SQL shapes the ingestion uses, asserted on data.

These tests document the emulator (fakesnow 0.12.1 on duckdb 2.0 behind dev.snowflake_local);
docs/local-snowflake.md summarises them. An upgrade that changes a behaviour fails here first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import snowflake.connector
from snowflake.connector.errors import ProgrammingError

from tests.fixtures_snowflake import LocalSnowflake

pytestmark = pytest.mark.integration

DB = "PATTERNS"


@pytest.fixture(scope="module")
def conn(local_snowflake: LocalSnowflake) -> Iterator[Any]:
    """A session on PATTERNS.STAGING with a named stage (COPY needs a current database)."""
    with contextlib.closing(local_snowflake.connect()) as boot:
        cur = boot.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {DB}.STAGING")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {DB}.RAW")
        cur.execute(f"CREATE STAGE IF NOT EXISTS {DB}.STAGING.STG")
    with contextlib.closing(local_snowflake.connect(DB, "STAGING")) as c:
        yield c


@pytest.fixture
def cur(conn: Any) -> Any:
    return conn.cursor()


def _put(cur: Any, path: Path, target: str) -> None:
    (row,) = cur.execute(f"PUT file://{path} {target}").fetchall()
    assert row[6] == "UPLOADED"


# ------------------------------------------------------------------------------------------
# PUT / COPY / LIST / REMOVE
# ------------------------------------------------------------------------------------------

TS = dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
ALL_TYPES = pa.table(
    {
        "id": pa.array([1, 2], pa.int64()),
        "amount": pa.array([Decimal("1.25"), None], pa.decimal128(18, 2)),
        "big": pa.array([Decimal("12345678901234567890123456789012.1234"), None], pa.decimal128(38, 4)),
        "fine": pa.array([Decimal("1.0123456789"), None], pa.decimal128(38, 10)),
        "ts": pa.array([TS, None], pa.timestamp("us")),
        "ts_ns": pa.array([TS, None], pa.timestamp("ns")),
        "ts_ms": pa.array([TS.replace(microsecond=123000), None], pa.timestamp("ms")),
        "tstz": pa.array([TS.replace(tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")),
        "tstz_offset": pa.array(
            [TS.replace(tzinfo=dt.timezone(dt.timedelta(hours=2))), None], pa.timestamp("us", tz="+02:00")
        ),
        "d": pa.array([dt.date(2024, 1, 2), None], pa.date32()),
        "tm": pa.array([dt.time(3, 4, 5, 123456), None], pa.time64("us")),
        "flag": pa.array([True, None], pa.bool_()),
        "i32": pa.array([-5, None], pa.int32()),
        "f64": pa.array([1.5, None], pa.float64()),
        "name": pa.array(["héllo", None], pa.string()),
        "payload": pa.array([b"\x00\x01\xff", None], pa.binary()),
        "lsn": pa.array([bytes.fromhex("0000002a000001f40003"), None], pa.binary(10)),
        "note": pa.array(["large", None], pa.large_string()),
        "only_in_file": pa.array([1, 2], pa.int8()),
    }
)
ALL_TYPES_DDL = """
CREATE OR REPLACE TABLE ALL_TYPES (
  ID NUMBER(38,0), AMOUNT NUMBER(18,2), BIG NUMBER(38,4), FINE NUMBER(38,10),
  TS TIMESTAMP_NTZ, TS_NS TIMESTAMP_NTZ(9), TS_MS TIMESTAMP_NTZ, TSTZ TIMESTAMP_TZ, TSTZ_OFFSET TIMESTAMP_TZ,
  D DATE, TM TIME, FLAG BOOLEAN, I32 INT, F64 FLOAT, NAME VARCHAR(100), PAYLOAD BINARY,
  LSN BINARY, NOTE VARCHAR, ONLY_IN_TABLE VARCHAR
)"""
COPY_ALL = (
    "COPY INTO {db}.STAGING.ALL_TYPES FROM @{db}.STAGING.STG/all_types/{run}/"
    " FILE_FORMAT=(TYPE=PARQUET BINARY_AS_TEXT=FALSE) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"
)


def test_put_copy_parquet_all_types(cur: Any, tmp_path: Path) -> None:
    path = tmp_path / "chunk-0001.parquet"
    pq.write_table(ALL_TYPES, path)
    cur.execute(ALL_TYPES_DDL)
    _put(cur, path, f"@{DB}.STAGING.STG/all_types/run1/")
    result = cur.execute(COPY_ALL.format(db=DB, run="run1")).fetchall()
    assert [r[:4] for r in result] == [("stg/all_types/run1/chunk-0001.parquet", "LOADED", 2, 2)]

    rows = cur.execute("SELECT * FROM ALL_TYPES ORDER BY ID").fetchall()
    assert rows[0] == (
        1,
        Decimal("1.25"),
        Decimal("12345678901234567890123456789012.1234"),
        Decimal("1.0123456789"),
        TS,
        TS,  # ns in the file, but duckdb keeps µs
        TS.replace(microsecond=123000),
        TS.replace(tzinfo=dt.UTC),
        TS.replace(tzinfo=dt.UTC) - dt.timedelta(hours=2),  # same instant, offset not kept: UTC
        dt.date(2024, 1, 2),
        dt.time(3, 4, 5, 123456),
        True,
        -5,
        1.5,
        "héllo",
        bytearray(b"\x00\x01\xff"),
        bytearray(bytes.fromhex("0000002a000001f40003")),
        "large",
        None,  # a table column missing from the file loads as NULL
    )
    assert rows[1] == (2, *([None] * 18))  # NULL of every type stays NULL (timestamps included)

    types = cur.execute(
        f"SELECT column_name, data_type, numeric_precision, numeric_scale FROM {DB}.information_schema.columns"
        " WHERE table_schema = 'STAGING' AND table_name = 'ALL_TYPES' ORDER BY ordinal_position"
    ).fetchall()
    assert types == [
        ("ID", "NUMBER", 38, 0),
        ("AMOUNT", "NUMBER", 18, 2),
        ("BIG", "NUMBER", 38, 4),
        ("FINE", "NUMBER", 38, 10),
        ("TS", "TIMESTAMP_NTZ", None, None),
        ("TS_NS", "TIMESTAMP_NTZ", None, None),
        ("TS_MS", "TIMESTAMP_NTZ", None, None),
        ("TSTZ", "TIMESTAMP_TZ", None, None),
        ("TSTZ_OFFSET", "TIMESTAMP_TZ", None, None),
        ("D", "DATE", None, None),
        ("TM", "TIME", None, None),
        ("FLAG", "BOOLEAN", None, None),
        ("I32", "NUMBER", 38, 0),
        ("F64", "FLOAT", None, None),
        ("NAME", "TEXT", None, None),
        ("PAYLOAD", "BINARY", None, None),
        ("LSN", "BINARY", None, None),
        ("NOTE", "TEXT", None, None),
        ("ONLY_IN_TABLE", "TEXT", None, None),
    ]


def test_copy_load_history_force_and_purge(cur: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"ID": pa.array([1, 2, 3], pa.int64())}), path)
    cur.execute("CREATE OR REPLACE TABLE HIST_T (ID NUMBER(38,0))")
    _put(cur, path, "@STG/hist_t/run1/")  # unqualified: the session's database and schema
    copy = "COPY INTO HIST_T FROM @STG/hist_t/run1/ FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"
    assert cur.execute(copy).fetchall()[0][1] == "LOADED"
    skipped = cur.execute(copy).fetchall()[0]
    assert skipped[1] == "LOAD_SKIPPED" and skipped[6] == "File was loaded before."
    assert cur.execute("SELECT COUNT(*) FROM HIST_T").fetchone() == (3,)
    assert cur.execute(copy + " FORCE=TRUE PURGE=TRUE").fetchall()[0][1] == "LOADED"
    assert cur.execute("SELECT COUNT(*) FROM HIST_T").fetchone() == (6,)
    assert cur.execute("LIST @STG/hist_t/").fetchall() == []  # PURGE removed the loaded file
    empty = "COPY INTO HIST_T FROM @STG/nothing_here/ FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"
    assert cur.execute(empty).fetchall() == [("Copy executed with 0 files processed.",)]


def test_copy_without_match_by_column_name_fails(cur: Any, tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"A": [1], "B": ["x"]}), path)
    cur.execute("CREATE OR REPLACE TABLE NOMATCH (A INT, B VARCHAR)")
    _put(cur, path, "@STG/nomatch/run1/")
    with pytest.raises(ProgrammingError, match="one and only one column"):
        cur.execute("COPY INTO NOMATCH FROM @STG/nomatch/run1/ FILE_FORMAT=(TYPE=PARQUET)")


def test_copy_needs_a_current_database(local_snowflake: LocalSnowflake, tmp_path: Path) -> None:
    """fakesnow keeps COPY load history in the *session's* database: log in with a database."""
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"ID": [1]}), path)
    with contextlib.closing(local_snowflake.connect()) as c:
        cur = c.cursor()
        cur.execute(f"CREATE OR REPLACE TABLE {DB}.STAGING.NODB (ID INT)")
        _put(cur, path, f"@{DB}.STAGING.STG/nodb/run1/")
        with pytest.raises(ProgrammingError, match="_fs_load_history"):
            cur.execute(
                f"COPY INTO {DB}.STAGING.NODB FROM @{DB}.STAGING.STG/nodb/run1/"
                " FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"
            )


def test_list_and_remove_stage_paths(cur: Any, tmp_path: Path) -> None:
    for name in ("a.parquet", "b.parquet"):
        pq.write_table(pa.table({"ID": [1]}), tmp_path / name)
        _put(cur, tmp_path / name, f"@{DB}.STAGING.STG/lr/run1/")
    _put(cur, tmp_path / "a.parquet", "@STG/lr/run2/")

    listed = cur.execute("LIST @STG/lr/").fetchall()
    assert [r[0] for r in listed] == ["stg/lr/run1/a.parquet", "stg/lr/run1/b.parquet", "stg/lr/run2/a.parquet"]
    assert [d.name for d in cur.description] == ["name", "size", "md5", "last_modified"]
    assert all(isinstance(r[1], int) and len(r[2]) == 32 and r[3].endswith("GMT") for r in listed)
    whole = [r[0] for r in cur.execute("LIST @STG").fetchall()]  # fakesnow's own LIST
    assert {"stg/lr/run1/a.parquet", "stg/lr/run2/a.parquet"} <= set(whole)

    assert cur.execute(f"REMOVE @{DB}.STAGING.STG/lr/run1/b.parquet").fetchall() == [
        ("stg/lr/run1/b.parquet", "removed")
    ]
    assert cur.execute("RM @STG/lr/run1/").fetchall() == [("stg/lr/run1/a.parquet", "removed")]
    assert cur.execute("REMOVE @STG/lr/run1/").fetchall() == []
    assert [r[0] for r in cur.execute("LIST @STG/lr/").fetchall()] == ["stg/lr/run2/a.parquet"]
    with pytest.raises(ProgrammingError, match="does not exist"):
        cur.execute("REMOVE @NO_SUCH_STAGE/x/")
    with pytest.raises(ProgrammingError, match="not implemented"):
        cur.execute("LIST @STG PATTERN='.*run2.*'")


# ------------------------------------------------------------------------------------------
# Types and statements that differ from Snowflake
# ------------------------------------------------------------------------------------------


def test_binary_with_length_is_rejected_use_plain_binary(cur: Any) -> None:
    with pytest.raises(ProgrammingError, match="does not take any type parameters"):
        cur.execute("CREATE OR REPLACE TABLE BIN_LEN (LSN BINARY(10))")
    cur.execute("CREATE OR REPLACE TABLE BIN_LEN (LSN BINARY)")
    cur.execute("INSERT INTO BIN_LEN VALUES (TO_BINARY('0000002A000001F40003', 'HEX'))")
    assert cur.execute("SELECT HEX_ENCODE(LSN) FROM BIN_LEN").fetchone() == ("0000002A000001F40003",)


def test_binary_order_is_unsigned_bytewise(cur: Any) -> None:
    got = cur.execute(
        "SELECT TO_BINARY('80', 'HEX') > TO_BINARY('7F', 'HEX'),"
        " TO_BINARY('0000002A000001F40003', 'HEX') > TO_BINARY('0000002A000001F40002', 'HEX'),"
        " TO_BINARY('FF', 'HEX') = X'FF'"
    ).fetchone()
    assert got == (True, True, True)


def test_unsupported_statements(cur: Any) -> None:
    for sql in ("DROP STAGE IF EXISTS STG_NOPE", "DROP DATABASE IF EXISTS NOPE_DB"):
        with pytest.raises(ProgrammingError, match="syntax error"):
            cur.execute(sql)
    # an offset literal: cast works (normalised to UTC, offset dropped), implicit insert does not
    utc = dt.datetime(2023, 12, 31, 22, 0, tzinfo=dt.UTC)
    assert cur.execute("SELECT '2024-01-01 00:00:00 +02:00'::TIMESTAMP_TZ").fetchone() == (utc,)
    cur.execute("CREATE OR REPLACE TABLE TZ_T (TZ TIMESTAMP_TZ)")
    with pytest.raises(ProgrammingError, match="Unknown TimeZone"):
        cur.execute("INSERT INTO TZ_T VALUES ('2024-01-01 00:00:00 +02:00')")
    cur.execute("INSERT INTO TZ_T VALUES ('2024-01-01 00:00:00 +02:00'::TIMESTAMP_TZ)")
    assert cur.execute("SELECT TZ FROM TZ_T").fetchall() == [(utc,)]


def test_create_database_has_no_public_schema(local_snowflake: LocalSnowflake) -> None:
    with contextlib.closing(local_snowflake.connect()) as c:
        cur = c.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS NOPUBLIC")
        schemas = {r[0] for r in cur.execute("SELECT schema_name FROM NOPUBLIC.information_schema.schemata")}
        assert "PUBLIC" not in schemas  # Snowflake creates PUBLIC; create schemas explicitly


def test_null_timestamps_reach_the_client_as_null(cur: Any) -> None:
    cur.execute("CREATE OR REPLACE TABLE NULL_TS (A TIMESTAMP_NTZ, B TIMESTAMP_TZ, C TIMESTAMP_NTZ)")
    cur.execute("INSERT INTO NULL_TS VALUES (NULL, NULL, '2024-01-01 00:00:00'), ('2024-01-02 00:00:00', NULL, NULL)")
    rows = cur.execute("SELECT A, B, C FROM NULL_TS ORDER BY A NULLS FIRST").fetchall()
    assert rows == [(None, None, dt.datetime(2024, 1, 1)), (dt.datetime(2024, 1, 2), None, None)]
    frame = cur.execute("SELECT A, C FROM NULL_TS").fetch_pandas_all()
    assert int(frame["A"].isna().sum()) == 1 and int(frame["C"].isna().sum()) == 1


# ------------------------------------------------------------------------------------------
# MERGE
# ------------------------------------------------------------------------------------------

NEWER = {
    "binary": ("(s.LSN > t.LSN OR (s.LSN = t.LSN AND (s.SEQVAL > t.SEQVAL OR (s.SEQVAL = t.SEQVAL AND s.OP > t.OP))))"),
    "hex": (
        "(HEX_ENCODE(s.LSN) || HEX_ENCODE(s.SEQVAL) || LPAD(s.OP::VARCHAR, 2, '0'))"
        " > (HEX_ENCODE(t.LSN) || HEX_ENCODE(t.SEQVAL) || LPAD(t.OP::VARCHAR, 2, '0'))"
    ),
    "tuple_local_only": "(s.LSN, s.SEQVAL, s.OP) > (t.LSN, t.SEQVAL, t.OP)",
}
MERGE = """
MERGE INTO {db}.RAW.CUSTOMERS t USING (
  SELECT ID, NAME, LSN, SEQVAL, OP FROM {db}.STAGING.CUSTOMERS_BATCH
  QUALIFY ROW_NUMBER() OVER (PARTITION BY ID ORDER BY LSN DESC, SEQVAL DESC, OP DESC) = 1
) s ON t.ID = s.ID
WHEN MATCHED AND {newer} AND s.OP = 1 THEN UPDATE SET
  t.LSN = s.LSN, t.SEQVAL = s.SEQVAL, t.OP = s.OP, t._CDC_DELETED = TRUE
WHEN MATCHED AND {newer} THEN UPDATE SET
  t.NAME = s.NAME, t.LSN = s.LSN, t.SEQVAL = s.SEQVAL, t.OP = s.OP, t._CDC_DELETED = FALSE
WHEN NOT MATCHED THEN INSERT (ID, NAME, LSN, SEQVAL, OP, _CDC_DELETED)
  VALUES (s.ID, s.NAME, s.LSN, s.SEQVAL, s.OP, s.OP = 1)
"""


def _lsn(n: int, sub: int = 1) -> str:
    return f"TO_BINARY('{n:016X}{sub:04X}', 'HEX')"


def _load_batch(cur: Any, changes: list[tuple[int, str, int, int, int]]) -> None:
    cur.execute(
        f"CREATE OR REPLACE TRANSIENT TABLE {DB}.STAGING.CUSTOMERS_BATCH"
        " (ID NUMBER(38,0), NAME VARCHAR, LSN BINARY, SEQVAL BINARY, OP NUMBER(38,0))"
    )
    values = ", ".join(f"({k}, '{v}', {_lsn(lsn)}, {_lsn(lsn, seq)}, {op})" for k, v, lsn, seq, op in changes)
    cur.execute(f"INSERT INTO {DB}.STAGING.CUSTOMERS_BATCH VALUES {values}")


def _state(cur: Any) -> list[tuple[Any, ...]]:
    return cur.execute(
        f"SELECT ID, NAME, HEX_ENCODE(LSN), OP, _CDC_DELETED FROM {DB}.RAW.CUSTOMERS ORDER BY ID"
    ).fetchall()


@pytest.mark.parametrize("form", list(NEWER))
def test_merge_latest_change_per_key_is_idempotent(cur: Any, form: str) -> None:
    cur.execute(
        f"CREATE OR REPLACE TABLE {DB}.RAW.CUSTOMERS (ID NUMBER(38,0), NAME VARCHAR, LSN BINARY,"
        " SEQVAL BINARY, OP NUMBER(38,0), _CDC_DELETED BOOLEAN)"
    )
    merge = MERGE.format(db=DB, newer=NEWER[form])
    # (id, name, lsn, seqval, op): op 1 delete, 2 insert, 3 update-before, 4 update-after
    _load_batch(
        cur,
        [
            (1, "a1", 10, 1, 2),
            (1, "a2", 20, 1, 3),
            (1, "a3", 20, 1, 4),  # same lsn/seqval: op 4 wins over 3
            (2, "b1", 10, 2, 2),
            (3, "c1", 10, 3, 2),
            (3, "c1", 30, 1, 1),  # deleted last
            (4, "d1", 16, 1, 2),  # 0x10: bytewise order, not string-of-decimal order
            (4, "d2", 9, 1, 4),
        ],
    )
    assert cur.execute(merge).fetchall() == [(4, 0)]
    first = _state(cur)
    assert [(r[0], r[1], r[3], r[4]) for r in first] == [
        (1, "a3", 4, False),
        (2, "b1", 2, False),
        (3, "c1", 1, True),
        (4, "d1", 2, False),
    ]
    assert cur.execute(merge).fetchall() == [(0, 0)]  # replay changes nothing
    assert _state(cur) == first

    # an older change for key 1 and a newer one for key 2 in the next batch
    _load_batch(cur, [(1, "stale", 15, 1, 4), (2, "b2", 40, 1, 4), (3, "c-back", 50, 1, 2)])
    assert cur.execute(merge).fetchall() == [(0, 2)]
    assert [(r[0], r[1], r[4]) for r in _state(cur)] == [
        (1, "a3", False),
        (2, "b2", False),
        (3, "c-back", False),
        (4, "d1", False),
    ]


def test_merge_newer_with_array_construct_fails(cur: Any) -> None:
    cur.execute(
        f"CREATE OR REPLACE TABLE {DB}.RAW.CUSTOMERS (ID NUMBER(38,0), NAME VARCHAR, LSN BINARY,"
        " SEQVAL BINARY, OP NUMBER(38,0), _CDC_DELETED BOOLEAN)"
    )
    _load_batch(cur, [(1, "a", 10, 1, 2)])
    newer = "ARRAY_CONSTRUCT(s.LSN, s.SEQVAL, s.OP) > ARRAY_CONSTRUCT(t.LSN, t.SEQVAL, t.OP)"
    with pytest.raises(ProgrammingError, match="list_value"):
        cur.execute(MERGE.format(db=DB, newer=newer))


def test_merge_when_matched_delete(cur: Any) -> None:
    cur.execute("CREATE OR REPLACE TABLE HARD (K INT, V VARCHAR)")
    cur.execute("INSERT INTO HARD VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    result = cur.execute(
        "MERGE INTO HARD t USING (SELECT 1 AS K, 1 AS OP UNION ALL SELECT 2, 4 UNION ALL SELECT 9, 2) s"
        " ON t.K = s.K WHEN MATCHED AND s.OP = 1 THEN DELETE WHEN MATCHED THEN UPDATE SET t.V = 'upd'"
        " WHEN NOT MATCHED THEN INSERT (K, V) VALUES (s.K, 'new')"
    ).fetchall()
    assert result == [(1, 1, 1)]  # inserted, updated, deleted
    assert cur.rowcount == 3
    assert cur.execute("SELECT K, V FROM HARD ORDER BY K").fetchall() == [(2, "upd"), (3, "c"), (9, "new")]


# ------------------------------------------------------------------------------------------
# History, DDL, bindings, information_schema
# ------------------------------------------------------------------------------------------


def test_history_anti_join_insert_is_idempotent(cur: Any) -> None:
    _load_batch(cur, [(1, "a1", 10, 1, 2), (1, "a2", 20, 1, 4), (2, "b1", 10, 2, 2)])
    cur.execute(
        f"CREATE OR REPLACE TABLE {DB}.RAW.CUSTOMERS_HISTORY"
        " (ID NUMBER(38,0), NAME VARCHAR, LSN BINARY, SEQVAL BINARY, OP NUMBER(38,0))"
    )
    insert = (
        f"INSERT INTO {DB}.RAW.CUSTOMERS_HISTORY (ID, NAME, LSN, SEQVAL, OP)"
        f" SELECT s.ID, s.NAME, s.LSN, s.SEQVAL, s.OP FROM {DB}.STAGING.CUSTOMERS_BATCH s"
        f" WHERE NOT EXISTS (SELECT 1 FROM {DB}.RAW.CUSTOMERS_HISTORY h"
        " WHERE h.LSN = s.LSN AND h.SEQVAL = s.SEQVAL AND h.OP = s.OP)"
    )
    assert cur.execute(insert).fetchall() == [(3,)]
    assert cur.execute(insert).fetchall() == [(0,)]
    assert cur.execute(f"SELECT COUNT(*) FROM {DB}.RAW.CUSTOMERS_HISTORY").fetchone() == (3,)


def test_ddl_forms(cur: Any) -> None:
    cur.execute("CREATE OR REPLACE TABLE DDL_T (K INT, V VARCHAR)")
    cur.execute("INSERT INTO DDL_T VALUES (1, 'a')")
    cur.execute("ALTER TABLE DDL_T ADD COLUMN AMOUNT NUMBER(18,2)")
    cur.execute("ALTER TABLE DDL_T ADD COLUMN IF NOT EXISTS AMOUNT NUMBER(18,2)")
    cur.execute("ALTER TABLE DDL_T ADD COLUMN C1 VARCHAR, C2 INT")
    assert cur.execute("SELECT * FROM DDL_T").fetchall() == [(1, "a", None, None, None)]

    cur.execute("CREATE OR REPLACE TRANSIENT TABLE DDL_TR (A INT)")
    cur.execute("CREATE TRANSIENT TABLE IF NOT EXISTS DDL_TR (A INT)")
    cur.execute("CREATE TABLE IF NOT EXISTS DDL_LIKE LIKE DDL_T")
    cur.execute("INSERT INTO DDL_LIKE (K) VALUES (5)")
    cur.execute("CREATE TABLE IF NOT EXISTS DDL_LIKE LIKE DDL_T")  # idempotent: keeps the rows
    assert cur.execute("SELECT K FROM DDL_LIKE").fetchall() == [(5,)]
    cur.execute("CREATE OR REPLACE TRANSIENT TABLE DDL_LIKE2 LIKE DDL_T")
    cols = cur.execute(
        f"SELECT column_name, data_type, numeric_scale FROM {DB}.information_schema.columns"
        " WHERE table_schema = 'STAGING' AND table_name = 'DDL_LIKE2' ORDER BY ordinal_position"
    ).fetchall()
    assert cols == [
        ("K", "NUMBER", 0),
        ("V", "TEXT", None),
        ("AMOUNT", "NUMBER", 2),
        ("C1", "TEXT", None),
        ("C2", "NUMBER", 0),
    ]
    kinds = dict(
        cur.execute(
            f"SELECT table_name, table_type FROM {DB}.information_schema.tables"
            " WHERE table_schema = 'STAGING' AND table_name IN ('DDL_TR', 'DDL_LIKE2')"
        ).fetchall()
    )
    assert kinds == {"DDL_TR": "BASE TABLE", "DDL_LIKE2": "BASE TABLE"}  # TRANSIENT is not reported

    cur.execute("DROP TABLE IF EXISTS DDL_LIKE2")
    cur.execute("DROP TABLE IF EXISTS DDL_LIKE2")
    cur.execute("TRUNCATE TABLE DDL_T")
    assert cur.execute("SELECT COUNT(*) FROM DDL_T").fetchone() == (0,)
    cur.execute(
        "CREATE OR REPLACE TABLE DFLT (A INT, LOADED_AT TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP()::TIMESTAMP_NTZ)"
    )
    cur.execute("INSERT INTO DFLT (A) VALUES (1)")
    loaded_at = cur.execute("SELECT LOADED_AT FROM DFLT").fetchone()[0]
    # the session time zone's wall clock (America/Los_Angeles by default), not UTC: see below
    la_now = dt.datetime.now(ZoneInfo("America/Los_Angeles")).replace(tzinfo=None)
    assert abs(loaded_at - la_now) < dt.timedelta(minutes=1)


# ------------------------------------------------------------------------------------------
# Where Snowflake is stricter than fakesnow (dev/snowflake_strict.py models each rule)
# ------------------------------------------------------------------------------------------


def _copy_file(cur: Any, tmp_path: Path, table: pa.Table, ddl: str, name: str, options: str = "") -> Any:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    cur.execute(ddl)
    _put(cur, path, f"@STG/{name}/")
    return cur.execute(
        f"COPY INTO {name} FROM @STG/{name}/ FILE_FORMAT=(TYPE=PARQUET{options})"
        " MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE FORCE=TRUE"
    ).fetchall()


def test_parquet_binary_is_utf8_text_unless_binary_as_text_false(cur: Any, tmp_path: Path) -> None:
    """docs.snowflake.com/en/sql-reference/sql/create-file-format: BINARY_AS_TEXT (PARQUET) defaults
    to TRUE, "interpret columns with no defined logical data type as UTF-8 text"; text then becomes
    BINARY through BINARY_INPUT_FORMAT = HEX."""
    ddl = "CREATE OR REPLACE TABLE {name} (K INT, B BINARY)"
    bad = pa.table({"K": [1], "B": pa.array([b"\x00\xff"], pa.binary())})
    with pytest.raises(ProgrammingError, match="Invalid UTF8 detected"):
        _copy_file(cur, tmp_path, bad, ddl.format(name="BAT_UTF8"), "BAT_UTF8")
    text = pa.table({"K": [1], "B": pa.array([b"ok"], pa.binary())})
    with pytest.raises(ProgrammingError, match="not a legal hex-encoded value"):
        _copy_file(cur, tmp_path, text, ddl.format(name="BAT_HEX"), "BAT_HEX")
    # bytes that happen to be hex digits load, re-interpreted: 'AB0c' (4 bytes) becomes 0xAB0C
    hexlike = pa.table({"K": [1], "B": pa.array([b"AB0c"], pa.binary())})
    _copy_file(cur, tmp_path, hexlike, ddl.format(name="BAT_MANGLE"), "BAT_MANGLE")
    assert cur.execute("SELECT B FROM BAT_MANGLE").fetchall() == [(bytearray(b"\xab\x0c"),)]
    # BINARY_AS_TEXT = FALSE: the bytes as they are
    _copy_file(cur, tmp_path, bad, ddl.format(name="BAT_OFF"), "BAT_OFF", " BINARY_AS_TEXT = FALSE")
    assert cur.execute("SELECT B FROM BAT_OFF").fetchall() == [(bytearray(b"\x00\xff"),)]
    # a string column (UTF8 logical type) is text either way
    named = pa.table({"K": [1], "S": pa.array(["x"], pa.string())})
    _copy_file(cur, tmp_path, named, "CREATE OR REPLACE TABLE BAT_STR (K INT, S VARCHAR)", "BAT_STR")
    assert cur.execute("SELECT S FROM BAT_STR").fetchall() == [("x",)]


def test_copy_rejects_values_over_the_default_lengths(cur: Any, tmp_path: Path) -> None:
    """docs.snowflake.com/en/sql-reference/data-types-text: VARCHAR without a length holds
    16,777,216 characters (16 MB on accounts before the 2025 increase), BINARY 8,388,608 bytes."""
    ddl = "CREATE OR REPLACE TABLE {name} (K INT, V VARCHAR, B BINARY)"
    fits = pa.table({"K": [1], "V": ["v" * 16_777_216], "B": pa.array([b"b" * 8_388_608], pa.binary())})
    _copy_file(cur, tmp_path, fits, ddl.format(name="LOB_OK"), "LOB_OK", " BINARY_AS_TEXT = FALSE")
    assert cur.execute("SELECT LENGTH(V), LENGTH(B) FROM LOB_OK").fetchall() == [(16_777_216, 8_388_608)]
    text = pa.table({"K": [1], "V": ["é" * 8_388_609]})  # 8,388,609 characters, 16,777,218 bytes
    with pytest.raises(ProgrammingError, match=r"Max LOB size \(16777216\) exceeded"):
        _copy_file(cur, tmp_path, text, ddl.format(name="LOB_V"), "LOB_V", " BINARY_AS_TEXT = FALSE")
    blob = pa.table({"K": [1], "B": pa.array([b"b" * 8_388_609], pa.binary())})
    with pytest.raises(ProgrammingError, match=r"Max LOB size \(8388608\) exceeded"):
        _copy_file(cur, tmp_path, blob, ddl.format(name="LOB_B"), "LOB_B", " BINARY_AS_TEXT = FALSE")


def test_session_time_zone_defaults_to_los_angeles(local_snowflake: LocalSnowflake, conn: Any) -> None:
    """docs.snowflake.com/en/sql-reference/parameters#timezone: TIMEZONE defaults to
    America/Los_Angeles; CURRENT_TIMESTAMP() is in it, SYSDATE() is UTC."""
    with contextlib.closing(local_snowflake.connect(DB, "STAGING")) as c:
        cur = c.cursor()
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ntz, sysdate, utc = cur.execute(
            "SELECT CURRENT_TIMESTAMP()::TIMESTAMP_NTZ, SYSDATE(),"
            " CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ"
        ).fetchone()
        after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        assert before <= sysdate <= after and before <= utc <= after
        offset = ZoneInfo("America/Los_Angeles").utcoffset(before)
        assert before + offset <= ntz <= after + offset  # LA wall clock
        # SYSDATE() stays UTC inside a MERGE (fakesnow rewrites MERGE into several statements)
        cur.execute("CREATE OR REPLACE TABLE TZ_MERGE (K INT, MERGED_AT TIMESTAMP_NTZ)")
        cur.execute(
            "MERGE INTO TZ_MERGE t USING (SELECT 1 AS K) s ON t.K = s.K"
            " WHEN NOT MATCHED THEN INSERT (K, MERGED_AT) VALUES (s.K, SYSDATE())"
        )
        (merged_at,) = cur.execute("SELECT MERGED_AT FROM TZ_MERGE").fetchone()
        assert before <= merged_at <= dt.datetime.now(dt.UTC).replace(tzinfo=None)
        cur.execute("ALTER SESSION SET TIMEZONE = 'UTC'")  # per session
        assert before <= cur.execute("SELECT CURRENT_TIMESTAMP()::TIMESTAMP_NTZ").fetchone()[0]
    with contextlib.closing(local_snowflake.connect(DB)) as other:
        later = other.cursor().execute("SELECT CURRENT_TIMESTAMP()::TIMESTAMP_NTZ").fetchone()[0]
        assert later < dt.datetime.now(dt.UTC).replace(tzinfo=None) + offset + dt.timedelta(minutes=1)
        assert later < before or offset == dt.timedelta(0)


def test_create_database_if_not_exists_needs_the_account_privilege(local_snowflake: LocalSnowflake, conn: Any) -> None:
    """docs.snowflake.com/en/sql-reference/sql/create-database (access control requirements): the
    CREATE DATABASE privilege is checked even when the database exists; SYSADMIN and ACCOUNTADMIN
    hold it by default, a loader role with database-level grants does not."""
    with contextlib.closing(local_snowflake.connect(role="CDC_LOADER")) as c:
        cur = c.cursor()
        with pytest.raises(ProgrammingError, match="Insufficient privileges to operate on account") as caught:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")  # exists (module fixture)
        assert caught.value.errno == 3001 and caught.value.sqlstate == "42501"
        assert [r[1] for r in cur.execute(f"SHOW DATABASES LIKE '{DB}'").fetchall() if r[1] == DB] == [DB]
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {DB}.LOADER_OWN")  # database-level grants suffice
        cur.execute("USE ROLE SYSADMIN")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")


def test_bindings(local_snowflake: LocalSnowflake, cur: Any) -> None:
    cur.execute("CREATE OR REPLACE TABLE BIND_T (A INT, B VARCHAR, C TIMESTAMP_NTZ, D NUMBER(18,2), E BINARY)")
    cur.execute("INSERT INTO BIND_T VALUES (%s, %s, %s, %s, %s)", (1, "x", TS, Decimal("1.23"), b"\x00\x01"))
    cur.execute("INSERT INTO BIND_T (A, B) VALUES (%(a)s, %(b)s)", {"a": 2, "b": "y"})
    cur.executemany("INSERT INTO BIND_T (A, B) VALUES (%s, %s)", [(3, "p"), (4, "q")])
    assert cur.rowcount == 2
    assert cur.execute("SELECT A, B, C, D, E FROM BIND_T WHERE A = %s", (1,)).fetchone() == (
        1,
        "x",
        TS,
        Decimal("1.23"),
        bytearray(b"\x00\x01"),
    )
    with contextlib.closing(local_snowflake.connect(DB, "STAGING", paramstyle="qmark")) as qconn:
        qcur = qconn.cursor()
        qcur.execute("INSERT INTO BIND_T (A, B, E) VALUES (?, ?, ?)", [5, "z", b"\xff"])
        qcur.executemany("INSERT INTO BIND_T (A, B) VALUES (?, ?)", [[6, "m"], [7, "n"]])
        assert qcur.execute("SELECT B, E FROM BIND_T WHERE A = ?", [5]).fetchone() == ("z", bytearray(b"\xff"))
    assert cur.execute("SELECT COUNT(*) FROM BIND_T").fetchone() == (7,)
    # hex text → BINARY: TO_BINARY(…, 'HEX') is the same everywhere; a ::BINARY cast is not
    assert cur.execute("SELECT TO_BINARY(%s, 'HEX')", ("0A0B",)).fetchone() == (bytearray(b"\x0a\x0b"),)
    assert cur.execute("SELECT %s::BINARY", ("0A0B",)).fetchone() == (bytearray(b"0A0B"),)  # Snowflake: 0x0A0B


def test_information_schema_columns(cur: Any) -> None:
    cur.execute(
        "CREATE OR REPLACE TABLE INFO_T (A NUMBER(38,0) NOT NULL, B VARCHAR(50), C TIMESTAMP_NTZ,"
        " D TIMESTAMP_TZ, E DATE, F BINARY, G BOOLEAN, H NUMBER(18,4), I FLOAT)"
    )
    rows = cur.execute(
        "SELECT column_name, data_type, numeric_precision, numeric_scale, character_maximum_length, is_nullable"
        f" FROM {DB}.information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position",
        ("STAGING", "INFO_T"),
    ).fetchall()
    assert rows == [
        ("A", "NUMBER", 38, 0, None, "NO"),
        ("B", "TEXT", None, None, 50, "YES"),
        ("C", "TIMESTAMP_NTZ", None, None, None, "YES"),
        ("D", "TIMESTAMP_TZ", None, None, None, "YES"),
        ("E", "DATE", None, None, None, "YES"),
        ("F", "BINARY", None, None, None, "YES"),
        ("G", "BOOLEAN", None, None, None, "YES"),
        ("H", "NUMBER", 18, 4, None, "YES"),
        ("I", "FLOAT", None, None, None, "YES"),
    ]


def test_connection_params_are_complete(local_snowflake: LocalSnowflake) -> None:
    params = local_snowflake.connection_params("X", "Y")
    assert params["protocol"] == "http" and params["port"] == local_snowflake.port
    assert params["network_timeout"] and params["login_timeout"] and params["socket_timeout"]
    assert (params["database"], params["schema"]) == ("X", "Y")
    with contextlib.closing(snowflake.connector.connect(**local_snowflake.connection_params())) as c:
        assert c.cursor().execute("SELECT 1").fetchone() == (1,)
