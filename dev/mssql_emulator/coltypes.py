"""Declared SQL Server types of result columns, for the TDS column metadata.

DuckDB reports its own storage type for a result column (``VARCHAR`` for ``varchar(40)``,
``nvarchar(100)`` and ``xml`` alike; ``TIMESTAMP_MS`` for ``datetime`` and ``datetime2(3)``). SQL
Server reports the declared type, and drivers act on it (code page of ``varchar``, 1/300 s
``datetime`` ticks, ``money``). For the common shape - a select list of plain column references to
tables of the FROM clause, as the CDC reader's queries are - the declared type is looked up in the
catalog; any other column keeps the type derived from DuckDB's (:mod:`.tdstypes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from .sqltypes import SqlType, parse_type

if TYPE_CHECKING:
    from .engine import Session
    from .results import Column

# cdc.lsn_time_mapping is an engine table, not in the user catalog (SQL Server's definition)
_LSN_TIME_MAPPING = {
    "start_lsn": parse_type("binary(10)"),
    "tran_begin_time": parse_type("datetime"),
    "tran_end_time": parse_type("datetime"),
    "tran_id": parse_type("varbinary(10)"),
    "tran_begin_lsn": parse_type("binary(10)"),
}


def annotate(session: Session, node: exp.Expression, columns: list[Column]) -> None:
    """Set ``sql_type`` on the result columns that are plain references to a table's column."""
    if not isinstance(node, exp.Select) or len(node.expressions) != len(columns):
        return
    tables: dict[str, tuple[str, str]] = {}
    sources = [node.args.get("from_") or node.args.get("from"), *(node.args.get("joins") or [])]
    for src in sources:
        table = src.this if src is not None else None
        if isinstance(table, exp.Table) and table.name:
            tables[table.alias_or_name.lower()] = (table.db or "dbo", table.name)
    if not tables:
        return
    for column, item in zip(columns, node.expressions, strict=True):
        ref = item.this if isinstance(item, exp.Alias) else item
        if not isinstance(ref, exp.Column) or not isinstance(ref.this, exp.Identifier):
            continue
        qualifier = ref.table.lower()
        candidates = [tables[qualifier]] if qualifier in tables else [] if qualifier else list(tables.values())
        for schema, name in candidates:
            found = _declared(session, schema, name, ref.name)
            if found is not None:
                column.sql_type = found
                break


def _declared(session: Session, schema: str, table: str, column: str) -> SqlType | None:
    if schema.lower() == "cdc" and table.lower() == "lsn_time_mapping":
        return _LSN_TIME_MAPPING.get(column.lower())
    info: Any = session.engine.table_info(session, schema, table)
    if info is None:
        return None
    col = info.column(column)
    return col.type if col is not None else None
