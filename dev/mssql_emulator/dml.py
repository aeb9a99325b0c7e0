"""INSERT / UPDATE / DELETE, with change capture for tables that have capture instances.

For a tracked table every statement also writes the rows the SQL Server log reader would later
find, into ``emu."pending_<ci>"`` (same DuckDB transaction): operation 2 for inserts, 1 for
deletes, 3+4 (same seqval) for updates, and for an update that changes the primary key a delete
(1) of the old row plus an insert (2) of the new one. All deletes of such a statement get lower
seqvals than all its inserts, so replaying ``(start_lsn, seqval, operation)`` order never deletes
a row the same statement just re-inserted (e.g. renumbering ``line_no = line_no + 1``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from . import errors, keys
from .catalog import InstanceInfo, TableInfo, dq
from .collation import collation_equal
from .duckdb_cursor import settle
from .lsn import int_to_lsn
from .results import Result
from .storage import has_rule, stored
from .translate import table_parts, to_duckdb, transform

ROWS_VIEW = "__emu_rows"


def _target(node: exp.Expression) -> exp.Table:
    target = node.this
    if isinstance(target, exp.Schema):
        target = target.this
    if not isinstance(target, exp.Table):
        tables = node.args.get("tables") or []
        if tables:
            target = tables[0]
    if not isinstance(target, exp.Table):
        raise errors.syntax_error(node.key.upper())
    return target


def _names(node: exp.Expression) -> dict[str, str]:
    out = {}
    for t in node.find_all(exp.Table):
        db = t.args.get("db")
        out[t.name.lower()] = f"{db.name}.{t.name}" if db is not None else t.name
    return out


def execute(session: Any, node: exp.Expression) -> Result:
    """Run one DML statement in ``session`` (a :class:`~dev.mssql_emulator.engine.Session`)."""
    target = _target(node)
    schema, name = table_parts(target)
    names = _names(node)
    info: TableInfo | None = None
    if (schema or "dbo").lower() not in ("cdc", "sys", "emu"):
        info = session.engine.table_info(session, schema or "dbo", name)
    if info is None and (schema or "dbo").lower() not in ("cdc", "emu"):
        raise errors.invalid_object(names.get(name.lower(), name))
    if isinstance(node, exp.Delete) and node.args.get("tables") and not node.this:
        node = node.copy()
        node.set("this", node.args["tables"][0])
        node.set("tables", None)
    session.begin_write()
    checked = bool(info is not None and keys.checked(info))
    if info is not None and checked and isinstance(node, exp.Update):  # only an UPDATE of key columns needs it
        assigned = {e.this.name.lower() for e in node.expressions if isinstance(e, exp.EQ)}
        checked = any(c.lower() in assigned for u in keys.checked(info) for c in u.columns)
    joined = bool(node.args.get("from_") or node.args.get("using"))
    if info is None or not (info.instances or (checked and not joined and not isinstance(node, exp.Delete))):
        tnode = transform(node, session.context())
        if info is not None:
            tnode = _store_values(tnode, info)
        cur = session.run_duck(to_duckdb(tnode), table=info, names=names)
        row = cur.fetchone()
        return Result(None, int(row[0]) if row else 0)
    if joined:
        raise errors.SqlServerError(
            102,
            "Incorrect syntax near 'FROM'. (the emulator does not support UPDATE/DELETE … FROM on a "
            "CDC-tracked table; use a WHERE … IN (SELECT …) predicate)",
            15,
        )
    if isinstance(node, exp.Insert):
        return _insert(session, node, info, names)
    if isinstance(node, exp.Update):
        return _update(session, node, info, names)
    return _delete(session, node, info, names)


# -- values as the columns store them (char(n) padding, datetime ticks: see .storage) -------------
def _store_values(node: exp.Expression, info: TableInfo) -> exp.Expression:
    """Apply the storage rules to the columns an (already translated) INSERT or UPDATE writes."""
    if not any(has_rule(c.type) for c in info.columns):
        return node
    if isinstance(node, exp.Update):
        for eq in node.expressions:
            col = info.column(eq.this.name) if isinstance(eq, exp.EQ) and isinstance(eq.this, exp.Column) else None
            if col is not None and has_rule(col.type):
                eq.set("expression", stored(eq.expression, col.type))
        return node
    if not isinstance(node, exp.Insert) or node.expression is None:
        return node
    target = node.this
    names = [i.name for i in target.expressions] if isinstance(target, exp.Schema) else [c.name for c in info.columns]
    cols = [info.column(n) for n in names]
    if not any(c is not None and has_rule(c.type) for c in cols):
        return node
    aliases = ", ".join(f'"__c{i}"' for i in range(len(names)))
    proj = ", ".join(
        to_duckdb(stored(exp.column(f"__c{i}", quoted=True), c.type)) if c is not None else f'"__c{i}"'
        for i, c in enumerate(cols)
    )
    source = sqlglot.parse_one(f"SELECT {proj} FROM ({to_duckdb(node.expression)}) AS __src({aliases})", read="duckdb")
    node.set("expression", source)
    return node


# -- masks -------------------------------------------------------------------------------------
def all_bits_mask(ncols: int) -> bytes:
    """Update mask of operations 1 and 2: every captured column's bit set."""
    nbytes = max((ncols + 7) // 8, 1)
    return ((1 << ncols) - 1).to_bytes(nbytes, "big")


def _blob_literal(value: bytes) -> str:
    return f"unhex('{value.hex()}')"


# -- INSERT ------------------------------------------------------------------------------------
def _insert(session: Any, node: exp.Insert, info: TableInfo, names: dict[str, str]) -> Result:
    """INSERT into a tracked table (logged) or one whose keys the emulator checks (:mod:`.keys`):
    the new rows are computed first, checked, then inserted."""
    tnode = _store_values(transform(node, session.context()), info)
    returning = " RETURNING *" if info.instances else ""
    source = tnode.expression
    try:
        if keys.checked(info) and isinstance(source, (exp.Query, exp.Values)):
            target = tnode.this
            columns = (
                [i.name for i in target.expressions]
                if isinstance(target, exp.Schema)
                else [c.name for c in info.columns]
            )
            settle(session.cur)
            new = session.cur.sql(to_duckdb(source)).to_arrow_table()
            if new.num_columns == len(columns):  # otherwise the INSERT itself fails, as it should
                keys.check(session, info, columns, new)
            col_sql = ", ".join(dq(c) for c in columns)
            settle(session.cur)
            session.cur.register(ROWS_VIEW, new)
            try:
                cur = session.cur.execute(
                    f"INSERT INTO {info.qualified} ({col_sql}) SELECT * FROM {ROWS_VIEW}{returning}"
                )
                rows = cur.fetchall()
            finally:
                with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses even this
                    session.cur.unregister(ROWS_VIEW)
        else:
            cur = session.cur.execute(to_duckdb(tnode) + returning)
            rows = cur.fetchall()
    except duckdb.Error as exc:
        session._fail_statement()
        raise errors.from_duckdb(exc, table=info.display, pk_name=info.pk_name, names=names, spid=session.spid) from exc
    if not info.instances:
        return Result(None, int(rows[0][0]) if rows else 0)
    returned_cols = [d[0] for d in cur.description]
    n = len(rows)
    if n == 0:
        return Result(None, 0)
    tran = session.ensure_tran_id()
    base = session.engine.alloc_lsns(n)
    cmd0 = session.command_seq
    session.command_seq += n
    by_name = {c.lower(): i for i, c in enumerate(returned_cols)}
    for inst in info.instances:
        mask = all_bits_mask(len(inst.columns))
        idx = [by_name.get(c.name.lower()) for c in inst.columns]
        records = [
            [tran, int_to_lsn(base + i), 2, mask, *_image(inst, idx, row, row, 2), cmd0 + i + 1]
            for i, row in enumerate(rows)
        ]
        _insert_pending(session, inst, record_columns(inst), records)
    session.has_changes = True
    return Result(None, n)


def record_columns(inst: InstanceInfo) -> list[str]:
    """Columns of a pending change record: transaction, seqval, operation, mask, image, command id."""
    return ["__tran", "__$seqval", "__$operation", "__$update_mask", *[c.name for c in inst.columns], "__$command_id"]


def update_mask(inst: InstanceInfo, idx: list[int | None], before: Any, after: Any, nbytes: int) -> bytes:
    """Update mask of an update pair (3/4): the bits of the captured columns whose value changed."""
    bits = 0
    for col, j in zip(inst.columns, idx, strict=True):
        if j is not None and _distinct(before[j], after[j]):
            bits |= 1 << (col.ordinal - 1)
    return bits.to_bytes(nbytes, "big")


def _insert_pending(session: Any, inst: InstanceInfo, col_names: list[str], records: list[list[Any]]) -> None:
    """Write change records: one parameterised VALUES statement for OLTP-sized batches, Arrow for big ones."""
    cols = ", ".join(f"{dq(c)}" for c in col_names)
    if len(records) <= 200:
        one = "(" + ", ".join(["?"] * len(col_names)) + ")"
        params = [v for rec in records for v in rec]
        session.run_duck(f"INSERT INTO {inst.pending_table} ({cols}) VALUES {', '.join([one] * len(records))}", params)
        return
    table = pa.Table.from_pylist([dict(zip(col_names, rec, strict=True)) for rec in records])
    cur = session.cur
    settle(cur)
    cur.register(ROWS_VIEW, table)
    try:
        session.run_duck(f"INSERT INTO {inst.pending_table} ({cols}) SELECT {cols} FROM {ROWS_VIEW}")
    finally:
        cur.unregister(ROWS_VIEW)


# -- UPDATE and DELETE ----------------------------------------------------------------------------
def _affected_rows(
    session: Any,
    node: exp.Expression,
    info: TableInfo,
    names: dict[str, str],
    assignments: dict[str, exp.Expression] | None,
) -> list[tuple[Any, ...]]:
    """The rows a statement will touch: ``(rowid, before image…, after image…)``, in key order
    (the order SQL Server's clustered index scan logs them)."""
    target = _target(node)
    alias = target.alias or None
    ref = f"{dq(alias)}" if alias else info.qualified
    from_sql = info.qualified + (f" AS {dq(alias)}" if alias else "")
    proj = [f"{ref}.rowid"] + [f"{ref}.{dq(c.name)}" for c in info.columns]
    if assignments is not None:
        for col in info.columns:
            expr = assignments.get(col.name.lower())
            if expr is None:
                proj.append(f"{ref}.{dq(col.name)}")
            else:
                proj.append(to_duckdb(stored(expr, col.type, cast=True)))
    where = node.args.get("where")
    where_sql = (" " + to_duckdb(where)) if where is not None else ""
    order = ", ".join(f"{ref}.{dq(k)}" for k in info.pk) if info.pk else f"{ref}.rowid"
    limit = node.args.get("limit")
    limit_sql = (" " + to_duckdb(limit)) if limit is not None else ""
    sql = f"SELECT {', '.join(proj)} FROM {from_sql}{where_sql} ORDER BY {order}{limit_sql}"
    return session.run_duck(sql, table=info, names=names).fetchall()


def _with_rows(
    session: Any,
    columns: list[tuple[str, str]],
    rows: list[list[Any]],
    sql_template: str,
    info: TableInfo,
    names: dict[str, str],
) -> int:
    """Run ``sql_template`` (with ``{rows}`` standing for a relation of ``rows``) and return its count:
    a parameterised VALUES list for OLTP-sized sets, an Arrow scan for large ones."""
    col_sql = ", ".join(f"{dq(name)}" for name, _ in columns)
    if len(rows) <= 200:
        one = "(" + ", ".join(f"CAST(? AS {t})" for _, t in columns) + ")"
        relation = f"(SELECT * FROM (VALUES {', '.join([one] * len(rows))}) AS __v({col_sql}))"
        params = [v for row in rows for v in row]
        return _count(session.run_duck(sql_template.format(rows=relation), params, table=info, names=names))
    table = pa.Table.from_pylist([{name: v for (name, _), v in zip(columns, row, strict=True)} for row in rows])
    cur = session.cur
    settle(cur)
    cur.register(ROWS_VIEW, table)
    try:
        casts = ", ".join(f"CAST({dq(name)} AS {t}) AS {dq(name)}" for name, t in columns)
        relation = f"(SELECT {casts} FROM {ROWS_VIEW})"
        return _count(session.run_duck(sql_template.format(rows=relation), table=info, names=names))
    finally:
        cur.unregister(ROWS_VIEW)


def _count(cur: Any) -> int:
    row = cur.fetchall()
    return int(row[0][0]) if row else 0


def _update(session: Any, node: exp.Update, info: TableInfo, names: dict[str, str]) -> Result:
    node = transform(node, session.context())
    assignments: dict[str, exp.Expression] = {}
    for eq in node.expressions:
        if not isinstance(eq, exp.EQ) or not isinstance(eq.this, exp.Column):
            raise errors.syntax_error("SET")
        col = info.column(eq.this.name)
        if col is None:
            raise errors.invalid_column(eq.this.name)
        assignments[col.name.lower()] = eq.expression
    rows = _affected_rows(session, node, info, names, assignments)
    n = len(rows)
    if n == 0:
        return Result(None, 0)
    ncols = len(info.columns)
    index_of = {c.name.lower(): i for i, c in enumerate(info.columns)}
    assigned = [index_of[c] for c in assignments]
    columns = [("__rid", "BIGINT")] + [(f"__a{i}", info.columns[i].duck_type) for i in assigned]
    values = [[row[0]] + [row[1 + ncols + i] for i in assigned] for row in rows]
    sets = ", ".join(f'{dq(info.columns[i].name)} = __v."__a{i}"' for i in assigned)
    if any(c.lower() in assignments for u in keys.checked(info) for c in u.columns):
        keys.check(
            session, info, [c.name for c in info.columns], [row[1 + ncols :] for row in rows], [r[0] for r in rows]
        )
    _with_rows(
        session,
        columns,
        values,
        f'UPDATE {info.qualified} AS "__t" SET {sets} FROM {{rows}} AS __v WHERE "__t".rowid = __v."__rid"',
        info,
        names,
    )
    if not info.instances:
        return Result(None, n)
    tran = session.ensure_tran_id()
    base = session.engine.alloc_lsns(2 * n)
    cmd0 = session.command_seq
    session.command_seq += 2 * n
    pk_idx = [index_of[k.lower()] for k in info.pk]
    befores = [row[1 : 1 + ncols] for row in rows]
    afters = [row[1 + ncols :] for row in rows]
    key_changed = [split_update(session, b, a, pk_idx, n) for b, a in zip(befores, afters, strict=True)]
    for inst in info.instances:
        idx = [index_of.get(c.name.lower()) for c in inst.columns]
        all_mask = all_bits_mask(len(inst.columns))
        nbytes = len(all_mask)
        same: list[list[Any]] = []
        deletes: list[list[Any]] = []
        inserts: list[list[Any]] = []
        for rn in range(n):
            b, a = befores[rn], afters[rn]
            seq = int_to_lsn(base + rn)
            cmd = cmd0 + rn + 1
            if key_changed[rn]:
                # The delete and the insert carry their own command ids (deletes first); a
                # single-row key update logs both at one seqval (Debezium PR #7728 observed it).
                ins_seq = seq if n == 1 else int_to_lsn(base + n + rn)
                deletes.append([tran, seq, 1, all_mask, *_image(inst, idx, b, a, 1), cmd])
                inserts.append([tran, ins_seq, 2, all_mask, *_image(inst, idx, b, a, 2), cmd0 + n + rn + 1])
                continue
            mask = update_mask(inst, idx, b, a, nbytes)
            same.append([tran, seq, 3, mask, *_image(inst, idx, b, a, 3), cmd])
            same.append([tran, seq, 4, mask, *_image(inst, idx, b, a, 4), cmd])
        _insert_pending(session, inst, record_columns(inst), same + deletes + inserts)
    session.has_changes = True
    return Result(None, n)


def split_update(session: Any, before: Sequence[Any], after: Sequence[Any], pk_idx: list[int], rows: int) -> bool:
    """Whether SQL Server logs this row's UPDATE as a delete (1) + insert (2) instead of 3/4.

    * An update that changes the clustered/primary key is a "split update": delete + insert.
    * "Changes" is judged by the collation: under the case-insensitive default collation a
      case-only or trailing-blank change of a key leaves the index key equal, so the row is
      updated in place and logged as an update pair (3/4) whose before and after images carry
      different key text (*unconfirmed* in Microsoft's documentation; the adverse case is modelled).
    * Trace flag 8207 ("Enables singleton updates for Transactional Replication and CDC": an update
      of a unique column that affects only one row is logged as an UPDATE, not as a DELETE/INSERT
      pair; Microsoft, DBCC TRACEON - Trace Flags) makes a one-row key update a 3/4 pair too.
    """
    if all(collation_equal(before[i], after[i], session.cur) for i in pk_idx):
        return False
    return not (rows == 1 and 8207 in session.engine.trace_flags)


def _distinct(a: Any, b: Any) -> bool:
    """SQL's IS DISTINCT FROM for Python values."""
    if a is None or b is None:
        return (a is None) != (b is None)
    return bool(a != b)


def _image(inst: InstanceInfo, idx: list[int | None], before: Any, after: Any, op: int) -> list[Any]:
    """Captured column values of one change record, with SQL Server's LOB rules: text/ntext/image are
    NULL in operations 1 and 3; (n)varchar(max)/varbinary(max) are NULL in operation 3 unless changed.
    Computed columns are always NULL (CDC does not capture their values, even when persisted)."""
    src = before if op in (1, 3) else after
    out = []
    for col, j in zip(inst.columns, idx, strict=True):
        if j is None or col.computed:
            out.append(None)  # dropped from the source after the instance was created, or computed
        elif (op in (1, 3) and col.type.is_legacy_lob) or (
            op == 3 and col.type.is_lob_max and not _distinct(before[j], after[j])
        ):
            out.append(None)
        else:
            out.append(src[j])
    return out


def _delete(session: Any, node: exp.Delete, info: TableInfo, names: dict[str, str]) -> Result:
    node = transform(node, session.context())
    rows = _affected_rows(session, node, info, names, None)
    n = len(rows)
    if n == 0:
        return Result(None, 0)
    _with_rows(
        session,
        [("__rid", "BIGINT")],
        [[row[0]] for row in rows],
        f'DELETE FROM {info.qualified} WHERE rowid IN (SELECT "__rid" FROM {{rows}})',
        info,
        names,
    )
    tran = session.ensure_tran_id()
    base = session.engine.alloc_lsns(n)
    cmd0 = session.command_seq
    session.command_seq += n
    index_of = {c.name.lower(): i for i, c in enumerate(info.columns)}
    for inst in info.instances:
        idx = [index_of.get(c.name.lower()) for c in inst.columns]
        mask = all_bits_mask(len(inst.columns))
        records = [
            [tran, int_to_lsn(base + rn), 1, mask, *_image(inst, idx, row[1:], row[1:], 1), cmd0 + rn + 1]
            for rn, row in enumerate(rows)
        ]
        _insert_pending(session, inst, record_columns(inst), records)
    session.has_changes = True
    return Result(None, n)
