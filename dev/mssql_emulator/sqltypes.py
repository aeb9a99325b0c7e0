"""SQL Server data types: their DuckDB storage type and the metadata ``sys.columns`` reports.

The emulator stores data in DuckDB but must answer metadata queries (``sys.columns`` joined to
``sys.types``, ``cdc.captured_columns.column_type``) exactly as SQL Server would, because the
reader builds its Snowflake DDL from ``max_length``/``precision``/``scale``. So the declared SQL
Server type is kept alongside the DuckDB column and these numbers are computed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# system_type_id (== user_type_id for built-in types), max_length, precision, scale of sys.types.
SYS_TYPES: dict[str, tuple[int, int, int, int]] = {
    "image": (34, 16, 0, 0),
    "text": (35, 16, 0, 0),
    "uniqueidentifier": (36, 16, 0, 0),
    "date": (40, 3, 10, 0),
    "time": (41, 5, 16, 7),
    "datetime2": (42, 8, 27, 7),
    "datetimeoffset": (43, 10, 34, 7),
    "tinyint": (48, 1, 3, 0),
    "smallint": (52, 2, 5, 0),
    "int": (56, 4, 10, 0),
    "smalldatetime": (58, 4, 16, 0),
    "real": (59, 4, 24, 0),
    "money": (60, 8, 19, 4),
    "datetime": (61, 8, 23, 3),
    "float": (62, 8, 53, 0),
    "sql_variant": (98, 8016, 0, 0),
    "ntext": (99, 16, 0, 0),
    "bit": (104, 1, 1, 0),
    "decimal": (106, 17, 38, 38),
    "numeric": (108, 17, 38, 38),
    "smallmoney": (122, 4, 10, 4),
    "bigint": (127, 8, 19, 0),
    "varbinary": (165, 8000, 0, 0),
    "varchar": (167, 8000, 0, 0),
    "binary": (173, 8000, 0, 0),
    "char": (175, 8000, 0, 0),
    "timestamp": (189, 8, 0, 0),
    "nvarchar": (231, 8000, 0, 0),
    "nchar": (239, 8000, 0, 0),
    "xml": (241, -1, 0, 0),
    "sysname": (231, 256, 0, 0),
}
# sysname is an alias type: same system_type_id as nvarchar, its own user_type_id.
SYSNAME_USER_TYPE_ID = 256

_ALIASES = {
    "integer": "int",
    "dec": "decimal",
    "double precision": "float",
    "character": "char",
    "rowversion": "timestamp",
    "national character varying": "nvarchar",
}

# datetimeoffset: "stored in the database and processed, compared, sorted, and indexed in the server as in
# UTC. The time zone offset is preserved in the database for retrieval." (datetimeoffset (Transact-SQL))
DATETIMEOFFSET_DUCK = "STRUCT(dto_utc TIMESTAMP, dto_offset SMALLINT)"
_STRING_TYPES = {"char", "varchar", "nchar", "nvarchar"}
_BINARY_TYPES = {"binary", "varbinary"}
LOB_MAX_TYPES = {"varchar", "nvarchar", "varbinary"}  # with length MAX
LEGACY_LOB_TYPES = {"text", "ntext", "image"}


@dataclass(frozen=True)
class SqlType:
    """A declared SQL Server column type. ``length`` is in characters/bytes, -1 for MAX."""

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None

    # -- DuckDB side ---------------------------------------------------------------------
    def duck_type(self) -> str:
        """DuckDB storage type; chosen so values round-trip with SQL Server's precision."""
        n = self.name
        if n in ("int",):
            return "INTEGER"
        if n == "bigint":
            return "BIGINT"
        if n == "smallint":
            return "SMALLINT"
        if n == "tinyint":
            return "UTINYINT"
        if n == "bit":
            return "BOOLEAN"
        if n in ("decimal", "numeric"):
            return f"DECIMAL({self.precision if self.precision is not None else 18},{self.scale or 0})"
        if n == "money":
            return "DECIMAL(19,4)"
        if n == "smallmoney":
            return "DECIMAL(10,4)"
        if n == "float":
            return "FLOAT" if (self.precision or 53) <= 24 else "DOUBLE"
        if n == "real":
            return "FLOAT"
        if n == "date":
            return "DATE"
        if n == "time":
            return "TIME"
        if n in ("datetime", "smalldatetime"):
            return "TIMESTAMP_MS" if n == "datetime" else "TIMESTAMP_S"
        if n == "datetime2":
            scale = 7 if self.scale is None else self.scale
            # DuckDB rounds to the storage precision on cast, as SQL Server rounds datetime2(n).
            return "TIMESTAMP_S" if scale == 0 else "TIMESTAMP_MS" if scale <= 3 else "TIMESTAMP"
        if n == "datetimeoffset":
            return DATETIMEOFFSET_DUCK  # the UTC instant and the offset (.storage)
        if n == "uniqueidentifier":
            return "UUID"
        if n in _BINARY_TYPES or n in ("image", "timestamp"):
            return "BLOB"
        return "VARCHAR"  # char/varchar/nchar/nvarchar/text/ntext/xml/sql_variant/sysname

    # -- sys.columns side ----------------------------------------------------------------
    @property
    def system_type_id(self) -> int:
        return SYS_TYPES[self.name][0]

    @property
    def user_type_id(self) -> int:
        return SYSNAME_USER_TYPE_ID if self.name == "sysname" else SYS_TYPES[self.name][0]

    @property
    def is_max(self) -> bool:
        return self.length == -1

    def max_length(self) -> int:
        """Bytes, as sys.columns reports them (-1 for MAX, nvarchar counts two bytes a char)."""
        n = self.name
        if n in _STRING_TYPES or n in _BINARY_TYPES:
            length = 1 if self.length is None else self.length
            if length == -1:
                return -1
            return length * 2 if n in ("nchar", "nvarchar") else length
        if n in ("decimal", "numeric"):
            p = self.precision or 18
            return 5 if p <= 9 else 9 if p <= 19 else 13 if p <= 28 else 17
        if n == "datetime2":
            s = 7 if self.scale is None else self.scale
            return 6 if s <= 2 else 7 if s <= 4 else 8
        if n == "time":
            s = 7 if self.scale is None else self.scale
            return 3 if s <= 2 else 4 if s <= 4 else 5
        if n == "datetimeoffset":
            s = 7 if self.scale is None else self.scale
            return 8 if s <= 2 else 9 if s <= 4 else 10
        if n == "float":
            return 4 if (self.precision or 53) <= 24 else 8
        return SYS_TYPES[n][1]

    def sys_precision(self) -> int:
        n = self.name
        if n in ("decimal", "numeric"):
            return self.precision or 18
        if n in ("datetime2", "time", "datetimeoffset"):
            s = 7 if self.scale is None else self.scale
            base = {"datetime2": 19, "time": 8, "datetimeoffset": 26}[n]
            return base + s + (1 if s else 0)
        if n == "float":
            return 24 if (self.precision or 53) <= 24 else 53
        return SYS_TYPES[n][2]

    def sys_scale(self) -> int:
        n = self.name
        if n in ("decimal", "numeric"):
            return self.scale or 0
        if n in ("datetime2", "time", "datetimeoffset"):
            return 7 if self.scale is None else self.scale
        return SYS_TYPES[n][3]

    def sql(self) -> str:
        """The type as T-SQL text, e.g. ``nvarchar(200)``, ``decimal(18,4)``, ``varbinary(max)``."""
        n = self.name
        if n in _STRING_TYPES or n in _BINARY_TYPES:
            return f"{n}({'max' if self.length == -1 else self.length or 1})"
        if n in ("decimal", "numeric"):
            return f"{n}({self.precision or 18},{self.scale or 0})"
        if n in ("datetime2", "time", "datetimeoffset") and self.scale is not None:
            return f"{n}({self.scale})"
        if n == "float" and self.precision is not None:
            return f"float({self.precision})"
        return n

    @property
    def is_lob_max(self) -> bool:
        """(n)varchar(max)/varbinary(max): op 3 holds NULL unless the column changed."""
        return self.name in LOB_MAX_TYPES and self.length == -1

    @property
    def is_legacy_lob(self) -> bool:
        """text/ntext/image: ops 1 and 3 hold NULL."""
        return self.name in LEGACY_LOB_TYPES


_TYPE_RE = re.compile(r"^\s*([a-z_0-9 ]+?)\s*(?:\(\s*([^)]*)\s*\))?\s*$", re.IGNORECASE)


class UnknownTypeError(ValueError):
    """A type name the emulator does not know (reported as Msg 2715)."""


def parse_type(text: str) -> SqlType:
    """Parse ``nvarchar(200)``, ``decimal(18, 4)``, ``datetime2(3)``, ``varbinary(max)``…"""
    match = _TYPE_RE.match(text.replace("[", "").replace("]", ""))
    if not match:
        raise UnknownTypeError(text)
    name = " ".join(match.group(1).lower().split())
    name = _ALIASES.get(name, name)
    if name not in SYS_TYPES:
        raise UnknownTypeError(text)
    args = [a.strip().lower() for a in match.group(2).split(",")] if match.group(2) else []
    return make_type(name, args)


def make_type(name: str, args: list[str]) -> SqlType:
    """Build a SqlType from a type name and its textual arguments (``['max']``, ``['18', '4']``)."""
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in SYS_TYPES:
        raise UnknownTypeError(name)
    if name in _STRING_TYPES or name in _BINARY_TYPES:
        if not args:
            return SqlType(name, 1)
        return SqlType(name, -1 if args[0] == "max" else int(args[0]))
    if name in ("decimal", "numeric"):
        precision = int(args[0]) if args else 18
        scale = int(args[1]) if len(args) > 1 else 0
        return SqlType(name, precision=precision, scale=scale)
    if name in ("datetime2", "time", "datetimeoffset"):
        return SqlType(name, scale=int(args[0]) if args else 7)
    if name == "float":
        precision = int(args[0]) if args else 53
        return SqlType("real", precision=24) if precision <= 24 else SqlType("float", precision=53)
    if name == "real":
        return SqlType("real", precision=24)
    return SqlType(name)


def is_datetimeoffset(duck_type: str) -> bool:
    """Whether a DuckDB result type is the emulator's datetimeoffset storage."""
    return duck_type.replace('"', "").replace(" ", "").upper() == DATETIMEOFFSET_DUCK.replace(" ", "").upper()


def api_type_code(duck_type: str) -> int:
    """pymssql's DB-API type code for a result column: STRING 1, BINARY 2, NUMBER 3, DATETIME 4, DECIMAL 5."""
    t = duck_type.upper()
    if t.startswith("DECIMAL"):
        return 5
    if is_datetimeoffset(duck_type):
        return 4
    if t in ("BLOB",):
        return 2
    if t.startswith(("TIMESTAMP", "DATE", "TIME")):
        return 4
    if t in (
        "INTEGER",
        "BIGINT",
        "SMALLINT",
        "TINYINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "HUGEINT",
        "UHUGEINT",
        "BOOLEAN",
        "FLOAT",
        "DOUBLE",
    ):
        return 3
    return 1
