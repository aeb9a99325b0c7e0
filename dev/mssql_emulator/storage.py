"""What a value becomes when SQL Server stores it in a column: the rules the emulator applies on
every write path (INSERT, UPDATE, MERGE, DEFAULT, ALTER COLUMN, the bulk path), so that the table,
the change tables and every reader see the value SQL Server would hold.

* ``char(n)``/``nchar(n)``: blank-padded to n.
* ``char``/``varchar``/``text`` hold code page 1252 (the default collation's): a character it has
  no place for is stored as its best fit where Windows has one for the full-width forms
  (``Ａ`` → ``A``, U+3000 → blank) and as ``?`` otherwise, as SQL Server converts Unicode to a
  non-Unicode column ("Collation and Unicode support", learn.microsoft.com/sql/relational-databases/
  collations/collation-and-unicode-support: "characters that are not in the code page are replaced
  by ?" unless a best-fit mapping exists; Windows' best-fit table for 1252, bestfit1252.txt, maps
  U+FF01-FF5E to ASCII). Other best fits (``ā`` → ``a``) are not modelled: they become ``?``.
* ``datetime``: rounded to 1/300-second ticks, shown as .000, .003 or .007 ("datetime
  (Transact-SQL)", learn.microsoft.com/sql/t-sql/data-types/datetime-transact-sql: "Rounded to
  increments of .000, .003, or .007 seconds"; 23:59:59.999 becomes the next day, .995-.998 become
  .997, .992-.994 .993, .990-.991 .990). Stored as DuckDB ``TIMESTAMP_MS`` holding the millisecond
  SQL Server displays for the tick (tick t of a second shows as round(t * 10 / 3) ms), which the TDS
  encoder turns back into the same tick.
* ``smalldatetime``: rounded to the minute, "Values that are 29.998 seconds or less are rounded
  down to the nearest minute. Values of 29.999 seconds or more are rounded up"
  (learn.microsoft.com/sql/t-sql/data-types/smalldatetime-transact-sql).
* ``datetimeoffset``: the UTC instant and the offset in minutes, ``STRUCT(dto_utc, dto_offset)``:
  "The data is stored in the database and processed, compared, sorted, and indexed in the server as
  in UTC. The time zone offset is preserved in the database for retrieval"
  (learn.microsoft.com/sql/t-sql/data-types/datetimeoffset-transact-sql). A value is read from its
  text (``'2026-06-01T12:00:00.5+05:30'``, ``'… -08:00'``, ``'…Z'``; none: +00:00, as the
  documentation's "DATE + TIME: The TIMEZONE defaults to +00:00"), so any expression converts.
  Comparisons use the instant; conversion to date, time, datetime and datetime2 copies the local
  date and time ("the time zone is truncated").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlglot
from sqlglot import exp

from .sqltypes import DATETIMEOFFSET_DUCK, SqlType

# DuckDB macros (created with the catalog's, in schema sys). x: anything that casts to TIMESTAMP.
MACROS = r"""
CREATE OR REPLACE MACRO sys.round_datetime(x) AS CAST(
    date_trunc('second', CAST(x AS TIMESTAMP)) + to_milliseconds(
        (((epoch_us(CAST(x AS TIMESTAMP)) - epoch_us(date_trunc('second', CAST(x AS TIMESTAMP)))) * 3 + 5000)
            // 10000 * 10 + 1) // 3)
    AS TIMESTAMP_MS);
CREATE OR REPLACE MACRO sys.dto_minutes(t) AS CASE
    WHEN regexp_matches(t, ':\d{2}(\.\d*)?\s*[+-]\d{1,2}(:?\d{2})?$') THEN
        (CASE WHEN regexp_extract(t, '([+-])\d{1,2}:?(\d{2})?$', 1) = '-' THEN -1 ELSE 1 END)
        * (CAST(regexp_extract(t, '[+-](\d{1,2}):?(\d{2})?$', 1) AS INTEGER) * 60
           + coalesce(TRY_CAST(regexp_extract(t, '[+-]\d{1,2}:?(\d{2})?$', 1) AS INTEGER), 0))
    ELSE 0 END;
CREATE OR REPLACE MACRO sys.text_to_datetimeoffset(t) AS CASE
    WHEN t IS NULL THEN NULL
    WHEN starts_with(t, '{') THEN CAST(t AS STRUCT(dto_utc TIMESTAMP, dto_offset SMALLINT))
    ELSE struct_pack(
        dto_utc := CAST(regexp_replace(t, '(:\d{2}(\.\d*)?)\s*(Z|[+-]\d{1,2}(:?\d{2})?)$', '\1') AS TIMESTAMP)
            - to_minutes(sys.dto_minutes(t)),
        dto_offset := CAST(sys.dto_minutes(t) AS SMALLINT)) END;
CREATE OR REPLACE MACRO sys.to_datetimeoffset(x) AS sys.text_to_datetimeoffset(trim(CAST(x AS VARCHAR)));
CREATE OR REPLACE MACRO sys.dto_local(d) AS
    struct_extract(d, 'dto_utc') + to_minutes(CAST(struct_extract(d, 'dto_offset') AS INTEGER));
CREATE OR REPLACE MACRO sys.dto_text(d) AS CASE WHEN d IS NULL THEN NULL ELSE
    strftime(sys.dto_local(d), '%Y-%m-%d %H:%M:%S.%f') || '0 '
    || CASE WHEN struct_extract(d, 'dto_offset') < 0 THEN '-' ELSE '+' END
    || lpad(CAST(abs(struct_extract(d, 'dto_offset')) // 60 AS VARCHAR), 2, '0') || ':'
    || lpad(CAST(abs(struct_extract(d, 'dto_offset')) % 60 AS VARCHAR), 2, '0') END;
CREATE OR REPLACE MACRO sys.round_smalldatetime(x) AS CAST(
    date_trunc('minute', CAST(x AS TIMESTAMP)) + CASE
        WHEN epoch_us(CAST(x AS TIMESTAMP)) - epoch_us(date_trunc('minute', CAST(x AS TIMESTAMP))) >= 29998500
        THEN INTERVAL 1 MINUTE ELSE INTERVAL 0 MINUTE END
    AS TIMESTAMP_S);
"""

# Code page 1252 (``varchar``): full-width forms to their ASCII best fit, what the page lacks to "?".
_FULL_WIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
_BEST_FIT = "".join(chr(c) for c in range(0x21, 0x7F)) + " "
_CP1252_HIGH = bytes(b for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)).decode("cp1252")
MACROS += f"""
CREATE OR REPLACE MACRO sys.to_cp1252(x) AS regexp_replace(
    translate(CAST(x AS VARCHAR), '{_FULL_WIDTH}', '{_BEST_FIT.replace("'", "''")}'),
    '[^\\x{{00}}-\\x{{7F}}\\x{{A0}}-\\x{{FF}}{_CP1252_HIGH}]', '?', 'g');
"""


def round_datetime(value: datetime) -> datetime:
    """A Python datetime as a SQL Server ``datetime`` holds it (see the module docstring)."""
    second = value.replace(microsecond=0)
    ticks = (value.microsecond * 3 + 5000) // 10000
    return second + timedelta(milliseconds=(ticks * 10 + 1) // 3)


def round_smalldatetime(value: datetime) -> datetime:
    minute = value.replace(second=0, microsecond=0)
    return minute + timedelta(minutes=1) if value - minute >= timedelta(seconds=29.9985) else minute


def _char_length(sql_type: SqlType) -> int | None:
    if sql_type.name in ("char", "nchar") and (sql_type.length or 0) > 0:
        return int(sql_type.length or 0)
    return None


_CODE_PAGE = frozenset({"char", "varchar", "text"})


def has_rule(sql_type: SqlType | None) -> bool:
    """Whether values written to a column of this type change on the way in."""
    return sql_type is not None and (
        _char_length(sql_type) is not None or sql_type.name in _MACRO or sql_type.name in _CODE_PAGE
    )


_MACRO = {"datetime": "round_datetime", "smalldatetime": "round_smalldatetime", "datetimeoffset": "to_datetimeoffset"}


def _sys_call(name: str, arg: exp.Expression) -> exp.Expression:
    return exp.Dot(this=exp.to_identifier("sys"), expression=exp.Anonymous(this=name, expressions=[arg]))


def stored(expr: exp.Expression, sql_type: SqlType, *, cast: bool = False) -> exp.Expression:
    """``expr`` (a translated, DuckDB-side expression) as a column of ``sql_type`` stores it;
    ``cast``: also cast to the storage type (where the caller relies on the result's type)."""
    macro = _MACRO.get(sql_type.name)
    if macro is not None:
        return _sys_call(macro, expr)
    if cast:
        expr = exp.Cast(this=expr, to=exp.DataType.build(sql_type.duck_type(), dialect="duckdb"))
    if sql_type.name in _CODE_PAGE:
        expr = _sys_call("to_cp1252", expr)
    n = _char_length(sql_type)
    if n is None:
        return expr
    x = expr.sql(dialect="duckdb", identify=True)
    return sqlglot.parse_one(f"CASE WHEN length({x}) < {n} THEN rpad({x}, {n}, ' ') ELSE {x} END", read="duckdb")


def stored_sql(expr_sql: str, sql_type: SqlType) -> str:
    """:func:`stored` (with the cast) for SQL text."""
    node = stored(sqlglot.parse_one(expr_sql, read="duckdb"), sql_type, cast=True)
    return node.sql(dialect="duckdb", identify=True)


def upgrade_datetimeoffset(cur: Any) -> None:
    """A file written by an emulator that stored datetimeoffset as DuckDB TIMESTAMPTZ (UTC): its
    columns become the (instant, offset) storage, offset +00:00. The emulator creates no other
    TIMESTAMPTZ column."""
    columns = cur.execute(
        "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND data_type = 'TIMESTAMP WITH TIME ZONE'"
    ).fetchall()
    for schema, table, column in columns:
        name = '"' + column.replace('"', '""') + '"'
        qualified = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
        cur.execute(
            f"ALTER TABLE {qualified} ALTER COLUMN {name} TYPE {DATETIMEOFFSET_DUCK} USING CASE WHEN {name} "
            f"IS NOT NULL THEN struct_pack(dto_utc := timezone('UTC', {name}), dto_offset := CAST(0 AS SMALLINT)) END"
        )
