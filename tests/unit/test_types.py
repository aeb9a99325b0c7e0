"""The SQL Server → Arrow → Snowflake type mapping, salted hashing and type changes (pure functions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from include.cdc_pipeline.errors import UnsupportedTypeError
from include.cdc_pipeline.snowflake_sql import type_change
from include.cdc_pipeline.types import SourceColumn, arrow_column, hasher, map_column


@pytest.mark.parametrize(
    ("column", "arrow_type", "snowflake_type"),
    [
        (SourceColumn("a", "int"), pa.int32(), "NUMBER(10,0)"),
        (SourceColumn("a", "bigint"), pa.int64(), "NUMBER(19,0)"),
        (SourceColumn("a", "tinyint"), pa.int16(), "NUMBER(3,0)"),
        (SourceColumn("a", "bit"), pa.bool_(), "BOOLEAN"),
        (SourceColumn("a", "decimal", precision=18, scale=4), pa.decimal128(18, 4), "NUMBER(18,4)"),
        (SourceColumn("a", "money"), pa.decimal128(19, 4), "NUMBER(19,4)"),
        (SourceColumn("a", "float"), pa.float64(), "FLOAT"),
        (SourceColumn("a", "nvarchar", max_length=-1), pa.string(), "VARCHAR"),
        (SourceColumn("a", "xml"), pa.string(), "VARCHAR"),
        (SourceColumn("a", "uniqueidentifier"), pa.string(), "VARCHAR(36)"),
        (SourceColumn("a", "date"), pa.date32(), "DATE"),
        (SourceColumn("a", "time", scale=7), pa.time64("us"), "TIME(7)"),
        (SourceColumn("a", "datetime2", scale=3), pa.timestamp("us"), "TIMESTAMP_NTZ(3)"),
        (SourceColumn("a", "datetime"), pa.timestamp("us"), "TIMESTAMP_NTZ(3)"),
        (SourceColumn("a", "datetimeoffset", scale=7), pa.string(), "TIMESTAMP_TZ"),
        (SourceColumn("a", "varbinary", max_length=-1), pa.binary(), "BINARY"),
    ],
)
def test_type_mapping(column: SourceColumn, arrow_type: pa.DataType, snowflake_type: str) -> None:
    mapping = map_column(column)
    assert (mapping.arrow_type, mapping.snowflake_type, mapping.target_name) == (arrow_type, snowflake_type, "A")


def test_unknown_type_names_column_and_type() -> None:
    with pytest.raises(UnsupportedTypeError, match=r"'shape'.*'geography'"):
        map_column(SourceColumn("shape", "geography"))


def test_value_conversions_keep_meaning() -> None:
    guid = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
    assert arrow_column(map_column(SourceColumn("g", "uniqueidentifier")), [guid, None]).to_pylist() == [
        "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        None,
    ]
    offset = datetime(2026, 3, 1, 10, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert arrow_column(map_column(SourceColumn("o", "datetimeoffset")), [offset]).to_pylist() == [
        "2026-03-01 10:30:00.123456+02:00"
    ]
    money = arrow_column(map_column(SourceColumn("m", "money")), [Decimal("12.3400"), Decimal("-0.0001")])
    assert money.to_pylist() == [Decimal("12.3400"), Decimal("-0.0001")]
    naive = datetime(2026, 1, 2, 3, 4, 5, 678000)
    assert arrow_column(map_column(SourceColumn("t", "datetime2", scale=3)), [naive]).to_pylist() == [naive]
    assert naive.tzinfo is None and UTC is not None


def test_hash_is_salted_sha256_and_never_clear() -> None:
    mapping = map_column(SourceColumn("email", "nvarchar"), hashed=True)
    values = arrow_column(mapping, ["a@example.com", None], salt="s1").to_pylist()
    assert values[0] == hasher("s1")("a@example.com") and len(values[0]) == 64 and values[1] is None
    assert values[0] != hasher("s2")("a@example.com")
    assert "a@example.com" not in values
    with pytest.raises(ValueError, match="no salt"):
        arrow_column(mapping, ["x"])


@pytest.mark.parametrize(
    ("existing", "wanted", "expected"),
    [
        ("NUMBER(10,2)", "NUMBER(10,2)", "fits"),
        ("NUMBER(10,2)", "NUMBER(16,2)", "widen NUMBER(16,2)"),  # decimal(10,2) -> decimal(16,2)
        ("NUMBER(10,0)", "NUMBER(19,0)", "widen NUMBER(19,0)"),  # int -> bigint
        ("NUMBER(19,0)", "NUMBER(10,0)", "fits"),  # bigint -> int: every value still fits
        ("NUMBER(12,4)", "NUMBER(10,2)", "fits"),  # fewer digits on both sides of the point
        ("NUMBER(10,2)", "NUMBER(12,4)", "scale 2 → 4"),  # Snowflake cannot change the scale
        ("VARCHAR(36)", "VARCHAR", "widen VARCHAR(16777216)"),
        ("VARCHAR(16777216)", "VARCHAR", "fits"),
        ("TIMESTAMP_NTZ(3)", "TIMESTAMP_NTZ(7)", "precision 3 → 7"),  # would truncate: refused
        ("TIMESTAMP_NTZ(7)", "TIMESTAMP_NTZ(3)", "fits"),
        ("NUMBER(10,0)", "VARCHAR", "type NUMBER → TEXT"),
        ("BIGINT", "NUMBER(19,0)", "fits"),  # DuckDB's name for Snowflake's NUMBER(38,0) default
    ],
)
def test_snowflake_type_change_rules(existing: str, wanted: str, expected: str) -> None:
    # Issue 12 case 7: ALTER COLUMN on the source changes the change table's type in place.
    assert type_change(existing, wanted) == expected
