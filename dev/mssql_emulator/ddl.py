"""CREATE / ALTER / DROP / TRUNCATE: DuckDB DDL plus the SQL Server-typed catalog rows.

Every DDL statement on a table with capture instances is recorded for ``cdc.ddl_history`` (the
capture job writes it, like SQL Server's log reader). The change tables themselves never change
shape: a column added later is not captured; a dropped captured column comes through as NULL.
"""

from __future__ import annotations

import re
from typing import Any

import sqlglot
from sqlglot import exp

from . import cdc, errors, keys
from .catalog import TableInfo, UniqueKey, column_rows, dq, insert_columns, pk_constraint_name
from .results import Result
from .sqltypes import SqlType, make_type
from .storage import has_rule, round_datetime, stored, stored_sql
from .translate import (
    ColumnDef,
    RawStatement,
    mark_source_forms,
    parse_alter_add,
    parse_column_def,
    parse_create_table,
    sqltype_from_datatype,
    table_parts,
    to_duckdb,
    transform,
)


def execute(session: Any, node: exp.Expression, raw: RawStatement) -> Result:
    if isinstance(node, exp.Create):
        kind = (node.args.get("kind") or "").upper()
        if kind == "TABLE":
            return create_table(session, raw)
        if kind == "SCHEMA":
            return create_schema(session, node)
        if kind.endswith("INDEX") and node.args.get("unique"):
            return create_unique_index(session, node)
        if kind in ("DATABASE", "STATISTICS") or kind.endswith("INDEX"):
            return Result(None, -1)  # one database per emulator; non-unique indexes carry no semantics here
        if kind == "VIEW":
            return create_view(session, node)
        raise errors.syntax_error(f"CREATE {kind}")
    if isinstance(node, exp.Alter):
        return alter_table(session, node, raw)
    if isinstance(node, exp.Drop):
        return drop(session, node)
    if isinstance(node, exp.TruncateTable):
        return truncate(session, node)
    raise errors.syntax_error(raw.first_word)


def create_unique_index(session: Any, node: exp.Create) -> Result:
    """``CREATE UNIQUE [NONCLUSTERED|CLUSTERED] INDEX ix ON t (cols)``: recorded and enforced by the
    emulator under the collation (Msg 2601, see :mod:`.keys`); MERGE logs its updates on such a
    table as SQL Server does."""
    index = node.this
    table = index.args.get("table")
    schema, name = table_parts(table)
    info = session.engine.table_info(session, schema or "dbo", name)
    if info is None:
        raise errors.invalid_object(f"{schema + '.' if schema else ''}{name}")
    columns = []
    for ordered in index.args["params"].args.get("columns") or []:
        col = info.column(ordered.this.name if isinstance(ordered, exp.Ordered) else ordered.name)
        if col is None:
            raise errors.invalid_column(ordered.this.name if isinstance(ordered, exp.Ordered) else ordered.name)
        columns.append(col.name)
    if any(u.name.lower() == index.name.lower() for u in info.uniques):
        raise errors.SqlServerError(
            1913,
            f"The operation failed because an index or statistics with name '{index.name}' already exists on "
            f"table '{info.display}'.",
        )
    _mark_ddl(session)
    if session.cur.execute(f"SELECT count(*) FROM (SELECT 1 FROM {info.qualified} LIMIT 1)").fetchone()[0]:
        keys.check_existing(session, info, UniqueKey(index.name, columns, "INDEX"))
    _record_unique(session.cur, info.object_id, index.name, False, columns)
    return Result(None, -1)


def _record_unique(cur: Any, object_id: int, name: str, is_constraint: bool, columns: list[str]) -> None:
    index_id = cur.execute(
        "SELECT coalesce(max(index_id), 1) + 1 FROM emu.unique_keys WHERE object_id = ?", [object_id]
    ).fetchone()[0]
    cur.executemany(
        "INSERT INTO emu.unique_keys VALUES (?, ?, ?, ?, ?, ?)",
        [[object_id, name, is_constraint, index_id, i + 1, c] for i, c in enumerate(columns)],
    )


def _mark_ddl(session: Any) -> None:
    session.begin_write()
    session.has_ddl = True


def _computed_sql(session: Any, col: ColumnDef) -> str:
    """A computed column as a DuckDB virtual generated column (typed when the T-SQL says so)."""
    assert col.computed_sql is not None
    try:
        expression = mark_source_forms(sqlglot.parse_one(col.computed_sql, read="tsql"), col.computed_sql)
    except sqlglot.errors.ParseError as exc:
        raise errors.syntax_error(col.computed_sql[:30]) from exc
    duck = to_duckdb(transform(expression, session.context(dynamic_time=True), top_level=False))
    typed = f" {col.type.duck_type()}" if col.type is not None else ""
    return f"{dq(col.name)}{typed} GENERATED ALWAYS AS ({duck}) VIRTUAL"


# DuckDB type of an untyped computed column's expression -> the SQL Server type reported for it.
# SQL Server derives it by its own expression typing rules; these agree for the usual arithmetic
# and string expressions (docs/emulator.md, known differences). CAST(… AS type) is always exact.
_DUCK_TO_SQL = {
    "TINYINT": "smallint",
    "UTINYINT": "tinyint",
    "SMALLINT": "smallint",
    "INTEGER": "int",
    "BIGINT": "bigint",
    "BOOLEAN": "bit",
    "DOUBLE": "float",
    "FLOAT": "real",
    "VARCHAR": "nvarchar",
    "DATE": "date",
    "TIMESTAMP": "datetime2",
}


def _inferred_type(duck_type: str, column: str) -> SqlType:
    base, _, rest = duck_type.partition("(")
    if base == "DECIMAL":
        return make_type("decimal", [a.strip() for a in rest.rstrip(")").split(",")])
    if base == "HUGEINT":
        return make_type("decimal", ["38", "0"])
    if base in _DUCK_TO_SQL:
        name = _DUCK_TO_SQL[base]
        return make_type(name, ["4000"] if name == "nvarchar" else ["7"] if name == "datetime2" else [])
    raise errors.SqlServerError(
        50000, f"Emulator error: cannot type computed column '{column}' ({duck_type}); write AS CAST(… AS type)"
    )


def _column_sql(session: Any, col: ColumnDef, seq_name: str | None) -> str:
    if col.computed_sql is not None:
        return _computed_sql(session, col)
    parts = [f"{dq(col.name)} {col.type.duck_type()}"]
    if not col.nullable:
        parts.append("NOT NULL")
    if seq_name is not None:
        parts.append("DEFAULT nextval('" + seq_name.replace("'", "''") + "')")
    elif col.default_sql:
        try:
            default = mark_source_forms(sqlglot.parse_one(col.default_sql, read="tsql"), col.default_sql)
        except sqlglot.errors.ParseError as exc:
            raise errors.syntax_error(col.default_sql) from exc
        value = transform(default, session.context(dynamic_time=True), top_level=False)
        parts.append(f"DEFAULT ({to_duckdb(stored(value, col.type))})")
    return " ".join(parts)


def create_table(session: Any, raw: RawStatement) -> Result:
    table = parse_create_table(raw)
    schema = table.schema or "dbo"
    if table.name.startswith("#"):
        raise errors.SqlServerError(102, "Incorrect syntax near '#'. (temporary tables are not emulated)", 15)
    if session.engine.table_info(session, schema, table.name) is not None:
        raise errors.SqlServerError(2714, f"There is already an object named '{table.name}' in the database.")
    _mark_ddl(session)
    cur = session.cur
    object_id = session.engine.new_object_id(cur)
    defs = []
    for col in table.columns:
        seq_name = None
        if col.identity is not None:
            seq_name = f"{dq(schema)}.{dq(f'__identity_{table.name}_{col.name}')}"
            session.run_duck(f"CREATE SEQUENCE {seq_name} START {col.identity[0]} INCREMENT {col.identity[1]}")
        defs.append(_column_sql(session, col, seq_name))
    if table.pk:
        names = {c.name.lower(): c.name for c in table.columns}
        for k in table.pk:
            if k.lower() not in names:
                raise errors.invalid_column(k)
        defs.append("PRIMARY KEY (" + ", ".join(f"{dq(names[k.lower()])}" for k in table.pk) + ")")
    session.run_duck(f"CREATE TABLE {dq(schema)}.{dq(table.name)} ({', '.join(defs)})")
    if any(c.computed_sql is not None and c.type is None for c in table.columns):
        duck_types = dict(
            cur.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
                [schema, table.name],
            ).fetchall()
        )
        for c in table.columns:
            if c.computed_sql is not None and c.type is None:
                c.type = _inferred_type(duck_types[c.name], c.name)
    now = round_datetime(session.engine.clock.now())  # sys.objects dates are datetime
    pk_name = table.pk_name or (pk_constraint_name(table.name, object_id) if table.pk else None)
    cur.execute(
        "INSERT INTO emu.objects VALUES (?, ?, ?, 'U', ?, ?, false, ?)",
        [object_id, schema, table.name, now, now, pk_name],
    )
    insert_columns(
        cur,
        column_rows(
            object_id,
            [(i + 1, c.name, c.type, c.nullable, c.identity is not None) for i, c in enumerate(table.columns)],
        ),
    )
    computed = [[object_id, i + 1, c.computed_sql, c.persisted] for i, c in enumerate(table.columns) if c.computed_sql]
    if computed:
        cur.executemany("INSERT INTO emu.computed_columns VALUES (?, ?, ?, ?)", computed)
    names = {c.name.lower(): c.name for c in table.columns}
    if table.pk:
        cur.executemany(
            "INSERT INTO emu.key_columns VALUES (?, ?, ?)",
            [[object_id, i + 1, names[k.lower()]] for i, k in enumerate(table.pk)],
        )
    for serial, (unique_name, unique_columns) in enumerate(table.uniques):
        for c in unique_columns:
            if c.lower() not in names:
                raise errors.invalid_column(c)
        name = unique_name or pk_constraint_name(table.name, object_id, "UQ", serial + 1)
        _record_unique(cur, object_id, name, True, [names[c.lower()] for c in unique_columns])
    return Result(None, -1)


def create_schema(session: Any, node: exp.Create) -> Result:
    name = node.this.name if isinstance(node.this, (exp.Table, exp.Identifier)) else str(node.this)
    _mark_ddl(session)
    session.run_duck(f"CREATE SCHEMA IF NOT EXISTS {dq(name)}")
    exists = session.cur.execute("SELECT 1 FROM emu.schemas WHERE lower(name) = lower(?)", [name]).fetchone()
    if not exists:
        session.cur.execute(
            "INSERT INTO emu.schemas SELECT greatest(max(schema_id) + 1, 6), ? FROM emu.schemas", [name]
        )
    return Result(None, -1)


def create_view(session: Any, node: exp.Create) -> Result:
    _mark_ddl(session)
    sql = to_duckdb(transform(node, session.context(dynamic_time=True), top_level=False))
    session.run_duck(sql)
    return Result(None, -1)


def _record_ddl(session: Any, info: TableInfo, command: str, required_column_update: bool = False) -> None:
    """Queue a cdc.ddl_history row per capture instance (written by the capture job)."""
    if not info.instances:
        return
    tran = session.ensure_tran_id()
    lsn = session.engine.alloc_lsn()
    session.cur.executemany(
        "INSERT INTO emu.pending_ddl VALUES (?, ?, ?, ?, ?, ?)",
        [[tran, info.object_id, inst.object_id, required_column_update, command, lsn] for inst in info.instances],
    )
    session.has_cdc_ddl = True


def _table_info_or_208(session: Any, table: exp.Table) -> TableInfo:
    schema, name = table_parts(table)
    info = session.engine.table_info(session, schema or "dbo", name)
    if info is None:
        raise errors.invalid_object(f"{schema}.{name}" if schema else name)
    return info


def alter_table(session: Any, node: exp.Alter, raw: RawStatement) -> Result:
    if (node.args.get("kind") or "").upper() != "TABLE":
        raise errors.syntax_error("ALTER")
    info = _table_info_or_208(session, node.this)
    _mark_ddl(session)
    cur = session.cur
    actions = node.args.get("actions") or []
    required_update = False
    if actions and all(isinstance(a, exp.ColumnDef) for a in actions):
        new_cols = parse_alter_add(raw)
        next_id = cur.execute(
            "SELECT coalesce(max(column_id), 0) + 1 FROM emu.columns WHERE object_id = ?", [info.object_id]
        ).fetchone()[0]
        rows = []
        for offset, col in enumerate(new_cols):
            if col.computed_sql is not None:
                raise errors.SqlServerError(
                    102, "Incorrect syntax near 'AS'. (ALTER TABLE … ADD of a computed column is not emulated)", 15
                )
            if info.column(col.name) is not None:
                raise errors.SqlServerError(
                    2705,
                    f"Column names in each table must be unique. Column name '{col.name}' in table "
                    f"'{info.display}' is specified more than once.",
                )
            session.run_duck(f"ALTER TABLE {info.qualified} ADD COLUMN {_column_sql(session, col, None)}")
            rows.append((next_id + offset, col.name, col.type, col.nullable, False))
        insert_columns(cur, column_rows(info.object_id, rows))
    else:
        for action in actions:
            if isinstance(action, exp.Drop) and (action.args.get("kind") or "").upper() == "COLUMN":
                for col_node in action.args.get("tables") or []:
                    col = info.column(col_node.name)
                    if col is None:
                        raise errors.SqlServerError(
                            4924,
                            f"ALTER TABLE DROP COLUMN failed because column '{col_node.name}' does not "
                            f"exist in table '{info.name}'.",
                        )
                    for unique in info.uniques:
                        if col.name.lower() in {k.lower() for k in unique.columns}:
                            what = "index" if unique.kind == "INDEX" else "object"
                            raise errors.SqlServerError(
                                5074, f"The {what} '{unique.name}' is dependent on column '{col.name}'."
                            )
                    session.run_duck(f"ALTER TABLE {info.qualified} DROP COLUMN {dq(col.name)}")
                    cur.execute(
                        "DELETE FROM emu.columns WHERE object_id = ? AND lower(name) = lower(?)",
                        [info.object_id, col.name],
                    )
                    cur.execute(
                        "DELETE FROM emu.computed_columns WHERE object_id = ? AND column_id = ?",
                        [info.object_id, col.column_id],
                    )
            elif isinstance(action, exp.AlterColumn) and action.args.get("dtype") is not None:
                col = info.column(action.this.name)
                if col is None:
                    raise errors.invalid_column(action.this.name)
                new_type = _alter_column_type(raw, col.name) or sqltype_from_datatype(action.args["dtype"])
                _refuse_if_computed_depends(session, info, col.name)
                session.run_duck(
                    f"ALTER TABLE {info.qualified} ALTER COLUMN {dq(col.name)} TYPE {_retype(col.name, new_type)}"
                )
                row = column_rows(info.object_id, [(col.column_id, col.name, new_type, col.nullable, False)])[0]
                cur.execute(
                    "UPDATE emu.columns SET type_sql = ?, type_name = ?, system_type_id = ?, user_type_id = ?, "
                    "max_length = ?, precision = ?, scale = ? WHERE object_id = ? AND column_id = ?",
                    [row[3], row[4], row[5], row[6], row[7], row[8], row[9], info.object_id, col.column_id],
                )
                for inst in info.instances:
                    if any(c.name.lower() == col.name.lower() for c in inst.columns):
                        _alter_change_table_column(session, inst, col.name, new_type)
                        required_update = True
            else:
                raise errors.SqlServerError(
                    102, "Incorrect syntax near 'ALTER'. (only ADD, DROP COLUMN and ALTER COLUMN are emulated)", 15
                )
    cur.execute(
        "UPDATE emu.objects SET modify_date = ? WHERE object_id = ?",
        [round_datetime(session.engine.clock.now()), info.object_id],
    )
    _record_ddl(session, info, raw.text, required_update)
    return Result(None, -1)


def _refuse_if_computed_depends(session: Any, info: TableInfo, column: str) -> None:
    """SQL Server refuses ALTER COLUMN of a column a computed column uses (Msg 5074)."""
    pattern = re.compile(rf"(?<![\w@#$])\[?{re.escape(column)}\]?(?![\w@#$])", re.IGNORECASE)
    for column_id, definition in session.cur.execute(
        "SELECT column_id, definition FROM emu.computed_columns WHERE object_id = ?", [info.object_id]
    ).fetchall():
        if pattern.search(definition):
            dependent = next(c.name for c in info.columns if c.column_id == column_id)
            raise errors.SqlServerError(5074, f"The column '{dependent}' is dependent on column '{column}'.")


def _alter_change_table_column(session: Any, inst: Any, column: str, new_type: SqlType) -> None:
    """ALTER COLUMN of a captured column changes the change table's column type in place, so that
    capture does not lose data of tracked columns ("About change data capture", section "Handling
    changes to source tables", learn.microsoft.com/sql/relational-databases/track-changes/
    about-change-data-capture-sql-server); earlier change rows are converted with it. Added columns,
    by contrast, are not captured (the change table keeps its shape)."""
    retype = _retype(column, new_type)
    session.run_duck(f"ALTER TABLE {inst.ct_table} ALTER COLUMN {dq(column)} TYPE {retype}")
    session.run_duck(f"ALTER TABLE {inst.pending_table} ALTER COLUMN {dq(column)} TYPE {retype}")
    ct_column_id = session.cur.execute(
        "SELECT column_id FROM emu.columns WHERE object_id = ? AND lower(name) = lower(?)", [inst.object_id, column]
    ).fetchone()[0]
    row = column_rows(inst.object_id, [(ct_column_id, column, new_type, True, False)])[0]
    session.cur.execute(
        "UPDATE emu.columns SET type_sql = ?, type_name = ?, system_type_id = ?, user_type_id = ?, "
        "max_length = ?, precision = ?, scale = ? WHERE object_id = ? AND column_id = ?",
        [row[3], row[4], row[5], row[6], row[7], row[8], row[9], inst.object_id, ct_column_id],
    )
    session.cur.execute(
        "UPDATE cdc.captured_columns SET column_type = ? WHERE object_id = ? AND lower(column_name) = lower(?)",
        [new_type.name, inst.object_id, column],
    )


def _retype(column: str, new_type: SqlType) -> str:
    """``TYPE <duck type>`` of ALTER COLUMN, converting the stored values as SQL Server stores them
    in the new type (datetime ticks, char(n) padding: :mod:`.storage`)."""
    duck = new_type.duck_type()
    return f"{duck} USING {stored_sql(dq(column), new_type)}" if has_rule(new_type) else duck


def _alter_column_type(raw: RawStatement, column: str) -> SqlType | None:
    """The exact new type of ``ALTER TABLE t ALTER COLUMN c <type>`` (from tokens)."""
    toks = raw.tokens
    for i, tok in enumerate(toks):
        if tok.text.upper() == "COLUMN" and i + 1 < len(toks) and toks[i + 1].text.lower() == column.lower():
            try:
                return parse_column_def(toks[i + 1 :], raw.text).type
            except errors.SqlServerError:
                return None
    return None


def drop(session: Any, node: exp.Drop) -> Result:
    kind = (node.args.get("kind") or "").upper()
    if kind == "SCHEMA":
        _mark_ddl(session)
        name = node.this.name
        session.run_duck(f"DROP SCHEMA {dq(name)}")
        session.cur.execute("DELETE FROM emu.schemas WHERE lower(name) = lower(?)", [name])
        return Result(None, -1)
    if kind == "VIEW":
        _mark_ddl(session)
        session.run_duck(to_duckdb(transform(node, session.context(), top_level=False)))
        return Result(None, -1)
    if kind != "TABLE":
        raise errors.syntax_error(f"DROP {kind}")
    tables = node.args.get("tables") or ([node.this] if node.this is not None else [])
    for table in tables:
        schema, name = table_parts(table)
        info = session.engine.table_info(session, schema or "dbo", name)
        if info is None:
            if node.args.get("exists"):
                continue
            raise errors.SqlServerError(
                3701,
                f"Cannot drop the table '{schema + '.' if schema else ''}{name}', because it does not exist "
                "or you do not have permission.",
            )
        if info.instances:
            # SQL Server drops the table's capture instances with it.
            cdc.disable_table(session, info.schema, info.name, "all")
        _mark_ddl(session)
        session.run_duck(f"DROP TABLE {info.qualified}")
        cur = session.cur
        for sql in (
            "DELETE FROM emu.columns WHERE object_id = ?",
            "DELETE FROM emu.computed_columns WHERE object_id = ?",
            "DELETE FROM emu.key_columns WHERE object_id = ?",
            "DELETE FROM emu.unique_keys WHERE object_id = ?",
            "DELETE FROM emu.objects WHERE object_id = ?",
        ):
            cur.execute(sql, [info.object_id])
    return Result(None, -1)


def truncate(session: Any, node: exp.TruncateTable) -> Result:
    for table in node.expressions:
        info = _table_info_or_208(session, table)
        if info.instances:
            raise errors.SqlServerError(
                4711,
                f"Cannot truncate table '{info.display}' because it is published for replication or "
                "enabled for Change Data Capture.",
            )
        session.begin_write()
        session.run_duck(f"DELETE FROM {info.qualified}")
    return Result(None, -1)
