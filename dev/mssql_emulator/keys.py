"""Uniqueness of PRIMARY KEY, UNIQUE constraints and unique indexes, as SQL Server judges it.

SQL Server compares key values under the column's collation: with the default
SQL_Latin1_General_CP1_CI_AS, ``'xy30'``, ``'XY30'`` and ``'xy30 '`` are one key (see
:mod:`.collation`), and a unique constraint or index holds at most one NULL. DuckDB's own PRIMARY
KEY compares bytes and treats NULLs as distinct, so the emulator checks these keys itself: a
statement's new key values (the rows an INSERT adds, the after images of an UPDATE or MERGE) against
the rows of the table it does not remove or rewrite, and against each other, before it writes. The
check uses the same key as ``MERGE … ON``, joins and ``WHERE`` (:func:`.collation.key_sql`), so the
check and the operation agree. A violation is SQL Server's error ("Database engine events and
errors (2000 to 2999)", learn.microsoft.com/sql/relational-databases/errors-events/database-engine-
events-and-errors-2000-to-2999):

* 2627, severity 14: "Violation of %ls constraint '%.*ls'. Cannot insert duplicate key in object
  '%.*ls'. The duplicate key value is %ls." (PRIMARY KEY / UNIQUE KEY constraints);
* 2601, severity 14: "Cannot insert duplicate key row in object '%.*ls' with unique index '%.*ls'.
  The duplicate key value is %ls." (unique indexes).

Primary keys without character columns are checked too although DuckDB holds them as well: the
check runs before the statement writes, so a violation ends only the statement (SET XACT_ABORT
OFF), where DuckDB's own violation would abort the transaction. DuckDB keeps every primary key as a
byte-exact key, so two sessions writing byte-equal keys at once still conflict; keys equal only
under the collation, written by two sessions at once, are not caught (docs/emulator.md, known
differences).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from . import errors
from .catalog import TableInfo, UniqueKey, dq
from .collation import CHARACTER_TYPES, key_sql
from .duckdb_cursor import settle

NEW_ROWS = "__emu_new_keys"
KEPT_OUT = "__emu_rewritten_rows"


def checked(info: TableInfo) -> list[UniqueKey]:
    """The keys the emulator checks: every PRIMARY KEY, UNIQUE constraint and unique index. A key
    without character columns is DuckDB's too, but DuckDB's violation aborts the transaction, where
    SQL Server ends only the statement."""
    return list(info.uniques)


def _equal(info: TableInfo, unique: UniqueKey, left: str, right: str) -> str:
    """SQL: the two rows (aliases) have the same key under the collation; NULL equals NULL."""
    parts = []
    for name in unique.columns:
        col = info.column(name)
        assert col is not None
        a, b = f"{left}.{dq(col.name)}", f"{right}.{dq(col.name)}"
        if col.type.name in CHARACTER_TYPES:
            a, b = key_sql(a), key_sql(b)
        parts.append(f"{a} IS NOT DISTINCT FROM {b}")
    return " AND ".join(parts)


def key_text(values: Sequence[Any]) -> str:
    """The duplicate key value as SQL Server prints it: ``(EU, 5)``, NULL as ``<NULL>``."""
    out = []
    for v in values:
        if v is None:
            out.append("<NULL>")
        elif isinstance(v, bool):
            out.append("1" if v else "0")
        elif isinstance(v, (bytes, bytearray, memoryview)):
            out.append("0x" + bytes(v).hex().upper())
        elif isinstance(v, datetime):
            out.append(v.isoformat(sep=" ", timespec="milliseconds" if v.microsecond % 1000 == 0 else "microseconds"))
        else:
            out.append(str(v))
    return "(" + ", ".join(out) + ")"


def violation(info: TableInfo, unique: UniqueKey, values: Sequence[Any]) -> errors.SqlServerError:
    if unique.kind == "INDEX":
        return errors.SqlServerError(
            2601,
            f"Cannot insert duplicate key row in object '{info.display}' with unique index '{unique.name}'. "
            f"The duplicate key value is {key_text(values)}.",
            14,
        )
    return errors.SqlServerError(
        2627,
        f"Violation of {unique.kind} constraint '{unique.name}'. Cannot insert duplicate key in object "
        f"'{info.display}'. The duplicate key value is {key_text(values)}.",
        14,
    )


def check(
    session: Any,
    info: TableInfo,
    columns: Sequence[str],
    rows: pa.Table | Sequence[Sequence[Any]],
    rewritten: Sequence[int] = (),
) -> None:
    """Refuse a statement whose new rows (``rows``: values of ``columns``, in statement order) would
    duplicate a checked key, among themselves or with the table's rows other than ``rewritten``
    (rowids the statement deletes or updates). The check runs before the statement writes, so a
    violation ends only the statement and the transaction goes on, as in SQL Server with SET
    XACT_ABORT OFF; with XACT_ABORT ON it rolls the transaction back (``terminate_statement``)."""
    position = {c.lower(): i for i, c in enumerate(columns)}
    keys = [u for u in checked(info) if all(c.lower() in position for c in u.columns)]
    n = rows.num_rows if isinstance(rows, pa.Table) else len(rows)
    if not keys or n == 0:
        return
    needed = sorted({position[c.lower()] for u in keys for c in u.columns})
    arrays: dict[str, Any] = {"__i": pa.array(range(n), pa.int64())}
    for p in needed:
        col = info.column(columns[p])
        assert col is not None
        if isinstance(rows, pa.Table):
            arrays[col.name] = rows.column(p)
        else:
            arrays[col.name] = pa.array([r[p] for r in rows])
    new = pa.table(arrays)
    casts = ", ".join(
        f"CAST({dq(c.name)} AS {c.duck_type}) AS {dq(c.name)}"
        for c in (info.column(columns[p]) for p in needed)
        if c is not None
    )
    found: list[tuple[int, UniqueKey]] = []
    cur = session.cur
    settle(cur)
    cur.register(NEW_ROWS, new)
    cur.register(KEPT_OUT, pa.table({"rid": pa.array(list(rewritten), pa.int64())}))
    try:
        for unique in keys:
            sql = (
                f"WITH n AS (SELECT __i, {casts} FROM {NEW_ROWS}) SELECT min(i) FROM ("
                f"SELECT n.__i AS i FROM n JOIN {info.qualified} AS t ON {_equal(info, unique, 't', 'n')} "
                f"WHERE t.rowid NOT IN (SELECT rid FROM {KEPT_OUT}) "
                f"UNION ALL SELECT b.__i FROM n AS a JOIN n AS b ON a.__i < b.__i AND {_equal(info, unique, 'a', 'b')})"
            )
            row = session.run_duck(sql, table=info).fetchone()
            if row and row[0] is not None:
                found.append((int(row[0]), unique))
    finally:
        with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses even this
            cur.unregister(NEW_ROWS)
            cur.unregister(KEPT_OUT)
    if not found:
        return
    index, unique = min(found, key=lambda f: f[0])
    values = new.slice(index, 1).to_pylist()[0]
    session.terminate_statement()
    raise violation(info, unique, [values[info.column(c).name] for c in unique.columns])  # type: ignore[union-attr]


def check_existing(session: Any, info: TableInfo, unique: UniqueKey) -> None:
    """``CREATE UNIQUE INDEX`` on rows that already hold a duplicate: Msg 1505."""
    cols = ", ".join(f"t.{dq(c)}" for c in unique.columns)
    row = session.run_duck(
        f"SELECT {cols} FROM {info.qualified} AS t JOIN {info.qualified} AS u "
        f"ON t.rowid > u.rowid AND {_equal(info, unique, 't', 'u')} LIMIT 1",
        table=info,
    ).fetchone()
    if row is not None:
        session.terminate_statement()
        raise errors.SqlServerError(
            1505,
            f"The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for the object "
            f"name '{info.display}' and the index name '{unique.name}'. The duplicate key value is "
            f"{key_text(row)}.",
        )
