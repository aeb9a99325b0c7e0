"""Type fidelity, value by value: SQL Server → (reader) → Parquet → COPY → Snowflake RAW.

Each row of CASES is one SQL Server type, the literal inserted at the source, and the value a
Snowflake client must read back from the raw table. Known emulator limits are stated inline.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

# (column, SQL Server type, T-SQL literal, expected Snowflake value)
CASES: list[tuple[str, str, str, Any]] = [
    ("c_tinyint", "tinyint", "255", 255),
    ("c_smallint", "smallint", "-32768", -32768),
    ("c_int", "int", "2147483647", 2147483647),
    ("c_bigint", "bigint", "-9223372036854775808", -9223372036854775808),
    ("c_bit", "bit", "1", True),
    ("c_decimal", "decimal(38,10)", "1234567890123456789012345678.0123456789",
     Decimal("1234567890123456789012345678.0123456789")),
    ("c_numeric", "numeric(9,3)", "-0.001", Decimal("-0.001")),
    ("c_money", "money", "922337203685477.5807", Decimal("922337203685477.5807")),
    ("c_smallmoney", "smallmoney", "-214748.3648", Decimal("-214748.3648")),
    ("c_float", "float", "1.7976931348623157E+308", 1.7976931348623157e308),
    ("c_real", "real", "0.5", 0.5),
    ("c_char", "char(5)", "'ab'", "ab   "),  # char pads to its length
    ("c_varchar", "varchar(20)", "'plain ascii'", "plain ascii"),
    ("c_nchar", "nchar(3)", "N'é'", "é  "),
    ("c_nvarchar", "nvarchar(50)", "N'Grüße ✓ 日本'", "Grüße ✓ 日本"),
    ("c_nvarchar_max", "nvarchar(max)", "N'" + "long " * 2000 + "'", "long " * 2000),
    ("c_xml", "xml", "N'<a b=\"1\">x</a>'", '<a b="1">x</a>'),
    ("c_date", "date", "'0001-01-01'", date(1, 1, 1)),
    ("c_time", "time(7)", "'23:59:59.1234567'", time(23, 59, 59, 123456)),  # Python keeps microseconds
    ("c_datetime", "datetime", "'2026-02-28T13:14:15.997'", datetime(2026, 2, 28, 13, 14, 15, 997000)),
    ("c_datetime2", "datetime2(7)", "'9999-12-31T23:59:59.9999999'", datetime(9999, 12, 31, 23, 59, 59, 999999)),
    ("c_smalldatetime", "smalldatetime", "'2026-01-01T10:30:00'", datetime(2026, 1, 1, 10, 30)),
    # TIMESTAMP_TZ: the same instant; the local emulator returns it in UTC (Snowflake keeps +05:30).
    ("c_dto", "datetimeoffset(7)", "'2026-06-01T12:00:00.5+05:30'",
     datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ("c_guid", "uniqueidentifier", "'6F9619FF-8B86-D011-B42D-00C04FC964FF'", "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
    ("c_varbinary", "varbinary(max)", "0x00FF10", b"\x00\xff\x10"),
    ("c_binary", "binary(4)", "0xDEADBEEF", b"\xde\xad\xbe\xef"),
]  # fmt: skip


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, datetime) and expected.tzinfo is not None:
        return isinstance(actual, datetime) and actual.astimezone(UTC) == expected.astimezone(UTC)
    if isinstance(expected, bytes):
        return bytes(actual) == expected
    if isinstance(expected, Decimal):
        return isinstance(actual, Decimal) and actual == expected
    return type(actual) is type(expected) and actual == expected


def test_every_type_round_trips_value_by_value(harness: Harness) -> None:
    h = harness
    columns = ", ".join(f"{name} {type_} NULL" for name, type_, _, _ in CASES)
    h.sql(
        f"CREATE TABLE dbo.types (id int NOT NULL PRIMARY KEY, {columns})",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'types', @role_name=NULL",
    )
    names, literals = ", ".join(c for c, *_ in CASES), ", ".join(v for _, _, v, _ in CASES)
    h.sql(f"INSERT INTO dbo.types (id, {names}) VALUES (1, {literals})")
    h.sql("INSERT INTO dbo.types (id) VALUES (2)")  # every column NULL
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "types", "primary_key": ["id"]}])
    h.pipeline(config).run_once()  # snapshot path
    h.sql(f"INSERT INTO dbo.types (id, {names}) VALUES (3, {literals})")
    h.capture()
    assert h.pipeline(config).run_once()["mode"] == "stream"  # change-table path

    select = ", ".join(c.upper() for c, *_ in CASES)
    rows = {r[0]: r[1:] for r in h.snowflake_rows(f"SELECT ID, {select} FROM {h.database}.RAW.TYPES")}
    problems = []
    for row_id in (1, 3):
        for (name, type_, _, expected), actual in zip(CASES, rows[row_id], strict=True):
            if not _same(actual, expected):
                problems.append(f"row {row_id} {name} {type_}: got {actual!r}, want {expected!r}")
    assert problems == [], "\n".join(problems)
    assert all(value is None for value in rows[2])
    guid = rows[1][[c for c, *_ in CASES].index("c_guid")]
    assert uuid.UUID(guid) == uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF")
