"""Where Snowflake is stricter than fakesnow: the behaviours the local Snowflake server models.

fakesnow is kinder than Snowflake in ways that hide production bugs (a stand-in kinder than the
real system is a test that cannot fail). :mod:`dev.snowflake_local` installs what this module
defines, each rule with the Snowflake documentation it follows:

* **Parquet binary columns are text unless ``BINARY_AS_TEXT = FALSE``.** "BINARY_AS_TEXT: Boolean
  that specifies whether to interpret columns with no defined logical data type as UTF-8 text.
  When set to FALSE, Snowflake interprets these columns as binary data. Default: TRUE"
  (https://docs.snowflake.com/en/sql-reference/sql/create-file-format, format type options,
  TYPE = PARQUET). A Parquet ``BYTE_ARRAY`` column without a logical type (what pyarrow writes
  for ``pa.binary()``) is therefore decoded as UTF-8 (invalid UTF-8 fails the COPY) and, loaded
  into a BINARY column, converted from text with the default ``BINARY_INPUT_FORMAT = HEX``
  (https://docs.snowflake.com/en/sql-reference/parameters#binary-input-format): bytes that are
  not hex digits fail, bytes that happen to be hex digits are silently re-interpreted.
* **Value size limits at COPY.** A VARCHAR declared without a length holds at most 16,777,216
  characters, a BINARY without a length 8,388,608 bytes
  (https://docs.snowflake.com/en/sql-reference/data-types-text; accounts before the 2025 size
  increase also cap a VARCHAR value at 16,777,216 bytes, which is what is modelled: the stricter
  of the two). A larger value fails the COPY (``ON_ERROR = ABORT_STATEMENT``, the default for
  bulk loads) instead of loading.
* **Session time zone America/Los_Angeles.** The ``TIMEZONE`` parameter defaults to
  America/Los_Angeles (https://docs.snowflake.com/en/sql-reference/parameters#timezone), so
  ``CURRENT_TIMESTAMP()`` is that zone's wall clock and ``CURRENT_TIMESTAMP()::TIMESTAMP_NTZ``
  keeps it, while ``SYSDATE()`` is UTC
  (https://docs.snowflake.com/en/sql-reference/functions/sysdate). fakesnow runs DuckDB in UTC;
  the local server sets DuckDB's ``TimeZone`` to America/Los_Angeles, and ``ALTER SESSION SET
  TIMEZONE = '…'`` changes it for one session.
* **``CREATE DATABASE`` needs the account-level privilege even with ``IF NOT EXISTS``.** Only
  roles granted CREATE DATABASE on the account may run it (by default SYSADMIN and
  ACCOUNTADMIN: https://docs.snowflake.com/en/user-guide/security-access-control-overview#system-defined-roles,
  https://docs.snowflake.com/en/sql-reference/sql/create-database "Access control requirements");
  Snowflake checks the privilege before looking at ``IF NOT EXISTS``, so a loader role with
  database-level grants gets "Insufficient privileges to operate on account" even when the
  database exists. Locally a session's role is the one it logged in with (``role=`` of the
  connector, ``role`` of the Airflow connection) or set by ``USE ROLE``; no role means the
  user's default role, SYSADMIN.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from typing import Any

# Default lengths of VARCHAR / BINARY declared without one (data-types-text, see above).
MAX_VARCHAR_BYTES = 16_777_216
MAX_BINARY_BYTES = 8_388_608

DEFAULT_TIMEZONE = "America/Los_Angeles"
# System-defined roles that hold CREATE DATABASE on the account by default (ACCOUNTADMIN inherits it).
ACCOUNT_CREATE_ROLES = frozenset({"SYSADMIN", "ACCOUNTADMIN"})

_CREATE_DATABASE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TRANSIENT\s+)?DATABASE\b", re.IGNORECASE)
_USE_ROLE = re.compile(r"^\s*USE\s+ROLE\s+(?P<role>\"[^\"]+\"|[A-Za-z_][\w$]*)\s*;?\s*$", re.IGNORECASE)
_ALTER_SESSION_TZ = re.compile(
    r"^\s*ALTER\s+SESSION\s+SET\s+TIMEZONE\s*=\s*'(?P<tz>[A-Za-z0-9_/+\-]+)'\s*;?\s*$", re.IGNORECASE
)
# Marker of the errors raised from inside DuckDB by the COPY conversions below.
_COPY_ERROR = "SNOWFLAKE_COPY_ERROR: "


# -- roles and CREATE DATABASE -----------------------------------------------------------------
def normalise_role(role: str | None) -> str:
    """A role name as Snowflake resolves it; no role = the local user's default role, SYSADMIN."""
    if not role:
        return "SYSADMIN"
    return role[1:-1] if role.startswith('"') and role.endswith('"') else role.upper()


def use_role(sql: str) -> str | None:
    """The role a ``USE ROLE x`` statement switches to, else None."""
    match = _USE_ROLE.match(sql)
    return normalise_role(match["role"]) if match else None


def create_database_denied(sql: str, role: str, account: str) -> dict[str, Any] | None:
    """Snowflake's error for a CREATE DATABASE by a role without the account privilege, else None.

    ``account`` is the account the server acts as; Snowflake names it (upper-cased) in the message.
    """
    if not _CREATE_DATABASE.match(sql) or role in ACCOUNT_CREATE_ROLES:
        return None
    return {
        "errno": 3001,
        "sqlstate": "42501",
        "msg": f"SQL access control error:\nInsufficient privileges to operate on account '{account.upper()}'",
    }


# -- session time zone --------------------------------------------------------------------------
def session_timezone(sql: str) -> str | None:
    """The zone of an ``ALTER SESSION SET TIMEZONE = 'zone'`` statement, else None."""
    match = _ALTER_SESSION_TZ.match(sql)
    return match["tz"] if match else None


# -- COPY INTO: BINARY_AS_TEXT and value sizes --------------------------------------------------
@dataclass(frozen=True)
class _CopyContext:
    binary_as_text: bool
    target_types: dict[str, str]  # upper-case column name -> DuckDB type


_copy_context: contextvars.ContextVar[_CopyContext | None] = contextvars.ContextVar("copy_context", default=None)


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().upper() in ("TRUE", "T", "YES", "Y", "ON", "1")


def _file_format_options(expr: Any, duck_conn: Any, database: str | None, schema: str | None) -> dict[str, Any]:
    from fakesnow.transforms.file_format import lookup_file_format
    from fakesnow.transforms.options import parse_options
    from sqlglot import exp

    for param in expr.args.get("params", []) or []:
        if isinstance(param.this, exp.Var) and param.this.name.upper() == "FILE_FORMAT":
            options = parse_options(param.expressions)
            if name := options.pop("FORMAT_NAME", None):
                options = {**lookup_file_format(duck_conn, str(name), database, schema), **options}
            return {k.upper(): v for k, v in options.items()}
    return {}


def _conversion(column: str, target_type: str, binary_as_text: bool, untyped_binary: bool) -> str | None:
    """DuckDB SQL for one Parquet column as Snowflake would load it, or None when nothing applies."""
    col = '"' + column.replace('"', '""') + '"'
    target = target_type.upper()
    is_text_target = target.startswith("VARCHAR") or target == "TEXT"
    is_binary_target = target in ("BLOB", "BYTEA", "VARBINARY", "BINARY")
    err = f"'{_COPY_ERROR}'"
    if untyped_binary and binary_as_text:
        # Snowflake reads the bytes as UTF-8 text ...
        text = (
            f"CASE WHEN {col} IS NULL THEN NULL WHEN try(decode({col})) IS NULL THEN "
            f"error({err} || 'Invalid UTF8 detected in string ''0x' || hex({col}) || '''') "
            f"ELSE decode({col}) END"
        )
        if is_binary_target:
            # ... and converts text to BINARY with BINARY_INPUT_FORMAT = HEX.
            hex_digits = "'([0-9A-Fa-f]{2})*'"
            value = (
                f"CASE WHEN ({text}) IS NULL THEN NULL WHEN NOT regexp_full_match(({text}), {hex_digits}) THEN "
                f"error({err} || 'The following string is not a legal hex-encoded value: ''' || "
                f"left(({text}), 100) || '''') ELSE unhex(({text})) END"
            )
            return _limit(value, "octet_length", MAX_BINARY_BYTES)
        if is_text_target:
            return _limit(text, "strlen", MAX_VARCHAR_BYTES)
        return text
    if is_binary_target and untyped_binary:
        return _limit(col, "octet_length", MAX_BINARY_BYTES)
    if is_text_target:
        return _limit(col, "strlen", MAX_VARCHAR_BYTES)
    return None


def _limit(value: str, size_fn: str, limit: int) -> str:
    err = f"'{_COPY_ERROR}'"
    return (
        f"CASE WHEN {size_fn}({value}) > {limit} THEN error({err} || 'Max LOB size ({limit}) exceeded, actual size "
        f"of parsed column is ' || {size_fn}({value})) ELSE {value} END"
    )


def _untyped_binary_columns(url: str) -> set[str]:
    """Parquet (fixed-length) byte-array columns without a logical type (pyarrow's ``binary``,
    ``binary(n)``), upper-cased."""
    import pyarrow.parquet as pq
    from fakesnow.transforms import stage

    try:
        schema = pq.ParquetFile(stage.file_path(url)).schema
    except OSError:
        return set()
    return {
        col.name.upper()
        for col in schema
        if col.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
        and col.logical_type.type == "NONE"
        and col.converted_type == "NONE"
    }


def install_copy_rules() -> None:
    """Wrap fakesnow's COPY INTO so Parquet loads follow the rules in the module docstring."""
    import duckdb
    import snowflake.connector.errors
    import sqlglot
    from fakesnow import copy_into as fs_copy
    from fakesnow import cursor as fs_cursor
    from sqlglot import exp

    if getattr(fs_cursor.copy_into, "_strict", False):
        return
    original_copy, original_inserts = fs_copy.copy_into, fs_copy._inserts

    def inserts(expr: Any, params: Any, urls: list[str], parquet_info: Any = None) -> list[Any]:
        built = original_inserts(expr, params, urls, parquet_info)
        ctx = _copy_context.get()
        if ctx is None or parquet_info is None or not parquet_info.target_columns:
            return built
        for insert, url in zip(built, urls, strict=True):
            untyped = _untyped_binary_columns(url)
            for alias in insert.expression.expressions:
                if not isinstance(alias, exp.Alias) or not isinstance(alias.this, exp.Column):
                    continue
                target = alias.alias.upper()
                sql = _conversion(alias.this.name, ctx.target_types.get(target, ""), ctx.binary_as_text,
                                  alias.this.name.upper() in untyped)  # fmt: skip
                if sql is not None:
                    alias.set("this", sqlglot.parse_one(sql, read="duckdb"))
        return built

    def copy_into(duck_conn: Any, database: str | None, schema: str | None, expr: Any, *args: Any, **kw: Any) -> str:
        options = _file_format_options(expr, duck_conn, database, schema)
        token = None
        if str(options.get("TYPE", "CSV")).upper() == "PARQUET":
            table = fs_copy._extract_table(expr.this)
            types = fs_copy._describe_table(table, duck_conn, database, table.db or schema)
            binary_as_text = _truthy(options.get("BINARY_AS_TEXT", True))
            token = _copy_context.set(_CopyContext(binary_as_text, {n.upper(): t for n, t in types}))
        try:
            return original_copy(duck_conn, database, schema, expr, *args, **kw)
        except duckdb.InvalidInputException as e:
            message = str(e.args[0])
            if _COPY_ERROR not in message:
                raise
            detail = message.split(_COPY_ERROR, 1)[1].splitlines()[0]
            raise snowflake.connector.errors.ProgrammingError(msg=detail, errno=100069, sqlstate="22P02") from None
        finally:
            if token is not None:
                _copy_context.reset(token)

    copy_into._strict = True  # type: ignore[attr-defined]
    fs_copy._inserts = inserts
    fs_cursor.copy_into = copy_into


def install_sysdate_in_merge() -> None:
    """Keep ``SYSDATE()`` UTC inside MERGE.

    fakesnow rewrites a MERGE into several statements through sqlglot's default dialect, which
    prints ``SYSDATE()`` as ``CURRENT_TIMESTAMP()``: harmless in UTC, but with Snowflake's
    America/Los_Angeles session zone the MERGE would write the local wall clock where Snowflake
    writes UTC. ``CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())`` survives the rewrite.
    """
    import sqlglot
    from fakesnow import transforms
    from sqlglot import exp

    original = transforms.merge
    if getattr(original, "_sysdate_fix", False):
        return
    utc_now = sqlglot.parse_one("CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())", read="snowflake")

    def merge(expression: Any) -> Any:
        if isinstance(expression, exp.Merge):
            expression = expression.transform(
                lambda node: (
                    utc_now.copy() if isinstance(node, exp.CurrentTimestamp) and node.args.get("sysdate") else node
                )
            )
        return original(expression)

    merge._sysdate_fix = True  # type: ignore[attr-defined]
    transforms.merge = merge
