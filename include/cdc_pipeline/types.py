"""Type mapping SQL Server → Arrow (Parquet) → Snowflake, explicit and in one place.

The row path gets Python values from pymssql and builds Arrow arrays of the types below; the
Arrow path (``arrow_changes``, mssql-python) casts the driver's Arrow arrays to the same types.
Either writes Parquet, and COPY INTO loads them into columns of the Snowflake types below.
README "Type mapping" shows this table.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from include.cdc_pipeline.errors import UnsupportedTypeError


@dataclass(frozen=True)
class SourceColumn:
    """A column as SQL Server describes it (sys.columns + sys.types of the change table)."""

    name: str
    type_name: str
    max_length: int = 0
    precision: int = 0
    scale: int = 0
    nullable: bool = True
    computed: bool = False  # a computed column of the source table (CDC captures it as NULL)


@dataclass(frozen=True)
class ColumnMapping:
    """How one source column travels: Arrow type, Snowflake type, value conversion."""

    source: SourceColumn
    target_name: str
    arrow_type: pa.DataType
    snowflake_type: str
    convert: Callable[[Any], Any] | None = None  # None: the driver's value is already right
    hashed: bool = False


def _uuid_text(value: Any) -> Any:
    # SQL Server prints uniqueidentifiers upper-case; keep that form so joins with source extracts match.
    return None if value is None else str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).upper()


def _offset_text(value: Any) -> Any:
    """datetimeoffset → ISO-8601 text with its offset; TIMESTAMP_TZ keeps the offset on load."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _text(value: Any) -> Any:
    return None if value is None else str(value)


_INTS = {
    "tinyint": (pa.int16(), "NUMBER(3,0)"),
    "smallint": (pa.int16(), "NUMBER(5,0)"),
    "int": (pa.int32(), "NUMBER(10,0)"),
    "bigint": (pa.int64(), "NUMBER(19,0)"),
}
_TEXT = {"char", "varchar", "nchar", "nvarchar", "text", "ntext", "sysname", "xml"}
_BINARY = {"binary", "varbinary", "image", "timestamp", "rowversion"}


def map_column(column: SourceColumn, *, hashed: bool = False) -> ColumnMapping:
    """The mapping of one SQL Server column; raises UnsupportedTypeError for unknown types."""
    name = column.name.upper()
    kind = column.type_name.lower()
    if hashed:
        return ColumnMapping(column, name, pa.string(), "VARCHAR(64)", hashed=True)
    if kind in _INTS:
        arrow, sf = _INTS[kind]
        return ColumnMapping(column, name, arrow, sf)
    if kind == "bit":
        return ColumnMapping(column, name, pa.bool_(), "BOOLEAN")
    if kind in ("decimal", "numeric"):
        p, s = column.precision or 18, column.scale
        return ColumnMapping(column, name, pa.decimal128(p, s), f"NUMBER({p},{s})")
    if kind in ("money", "smallmoney"):
        p = 19 if kind == "money" else 10
        return ColumnMapping(column, name, pa.decimal128(p, 4), f"NUMBER({p},4)")
    if kind in ("float", "real"):
        return ColumnMapping(column, name, pa.float64(), "FLOAT")
    if kind in _TEXT:
        return ColumnMapping(column, name, pa.string(), "VARCHAR", convert=_text if kind == "xml" else None)
    if kind == "uniqueidentifier":
        return ColumnMapping(column, name, pa.string(), "VARCHAR(36)", convert=_uuid_text)
    if kind == "date":
        return ColumnMapping(column, name, pa.date32(), "DATE")
    if kind == "time":
        return ColumnMapping(column, name, pa.time64("us"), f"TIME({min(column.scale or 7, 9)})")
    if kind in ("datetime2", "datetime", "smalldatetime"):
        scale = {"datetime": 3, "smalldatetime": 0}.get(kind, column.scale if column.scale is not None else 7)
        return ColumnMapping(column, name, pa.timestamp("us"), f"TIMESTAMP_NTZ({scale})")
    if kind == "datetimeoffset":
        return ColumnMapping(column, name, pa.string(), "TIMESTAMP_TZ", convert=_offset_text)
    if kind in _BINARY:
        return ColumnMapping(column, name, pa.binary(), "BINARY")
    raise UnsupportedTypeError(
        f"column {column.name!r} has SQL Server type {column.type_name!r}, which the pipeline does not map; "
        "exclude it (exclude_columns) or extend include/cdc_pipeline/types.py"
    )


def hasher(salt: str) -> Callable[[Any], Any]:
    """Salted SHA-256 as hex; the clear value never leaves the worker."""
    prefix = salt.encode()

    def _hash(value: Any) -> Any:
        if value is None:
            return None
        text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
        return hashlib.sha256(prefix + text.encode("utf-8")).hexdigest()

    return _hash


def arrow_column(mapping: ColumnMapping, values: Sequence[Any], salt: str | None = None) -> pa.Array:
    """Build one Arrow array from the driver's values of a column."""
    if mapping.hashed:
        if salt is None:
            raise ValueError(f"column {mapping.source.name} is hashed but no salt was given")
        fn = hasher(salt)
        values = [fn(v) for v in values]
    elif mapping.convert is not None:
        fn = mapping.convert
        values = [fn(v) for v in values]
    return pa.array(values, type=mapping.arrow_type)
