"""T-SQL ``MERGE`` on user tables, logged for CDC as SQL Server logs it.

Supported: ``MERGE [INTO] target [AS t] USING <table | (SELECT …) | (VALUES …)> AS s [(cols)]
ON <cond>`` with ``WHEN MATCHED [AND …] THEN UPDATE SET … | DELETE`` and ``WHEN NOT MATCHED [BY
TARGET] [AND …] THEN INSERT [(cols)] VALUES (…)``; the first clause whose condition holds acts on a
row. ``WHEN NOT MATCHED BY SOURCE`` and ``OUTPUT`` are not supported (Msg 102). A target row
matched by more than one source row raises Msg 8672, as SQL Server does.

CDC rules (docs/emulator.md "MERGE"):
* On a table with a unique index (its primary key, or ``CREATE UNIQUE INDEX``), an update made by
  MERGE is logged as a delete (1) and an insert (2) of the row, not as an update pair (3/4): MERGE
  plans maintain unique indexes with split updates (documented by users of CDC, e.g. "Resolve
  MERGE Statement issue on CDC Enabled Table", c-sharpcorner; trace flag 8207 changes one-row
  updates back to 3/4). Without a unique index the update is a 3/4 pair.
* The insert of such a pair gets the lower ``__$seqval`` and the higher ``__$command_id``: the
  order KB 3030352 describes ("an insert operation may unexpectedly appear before a delete
  operation"), which Microsoft's documentation of ``cdc.<capture_instance>_CT`` answers with
  "[__$seqval] should not be used for ordering. Instead, use the __$command_id column." The
  emulator always produces the adverse order so that a reader ordering by seqval fails here.
"""

from __future__ import annotations

from typing import Any

import duckdb
from sqlglot import exp

from . import errors, keys
from .catalog import TableInfo, dq
from .dml import _distinct, _image, _insert_pending, _names, _with_rows, all_bits_mask, record_columns, update_mask
from .lsn import int_to_lsn
from .results import Result
from .storage import stored
from .translate import table_parts, to_duckdb, transform


def has_unique_index(session: Any, info: TableInfo) -> bool:
    """A primary key, a UNIQUE constraint or a unique index (also one an older emulator left to DuckDB)."""
    if info.uniques:
        return True
    rows = session.cur.execute(
        "SELECT count(*) FROM duckdb_indexes() WHERE is_unique AND lower(schema_name) = lower(?)"
        " AND lower(table_name) = lower(?)",
        [info.schema, info.name],
    ).fetchone()
    return bool(rows and rows[0])


def execute(session: Any, node: exp.Merge) -> Result:
    target = node.this
    if not isinstance(target, exp.Table):
        raise errors.syntax_error("MERGE")
    schema, name = table_parts(target)
    names = _names(node)
    info = session.engine.table_info(session, schema or "dbo", name)
    if info is None:
        raise errors.invalid_object(names.get(name.lower(), name))
    whens = node.args["whens"].expressions
    for when in whens:
        if when.args.get("source"):
            raise errors.SqlServerError(
                102, "Incorrect syntax near 'SOURCE'. (the emulator does not support WHEN NOT MATCHED BY SOURCE)", 15
            )
    if node.args.get("returning"):
        raise errors.SqlServerError(102, "Incorrect syntax near 'OUTPUT'. (not supported by the emulator)", 15)
    session.begin_write()
    tnode = transform(node, session.context())
    alias = target.alias or name
    ref = f"{dq(alias)}"
    cols = info.columns
    index_of = {c.name.lower(): i for i, c in enumerate(cols)}
    # One projection per source row: target rowid and image, then per clause its condition and values.
    proj = [f"{ref}.rowid AS __rid"] + [f"{ref}.{dq(c.name)}" for c in cols]
    plans: list[tuple[bool, str, int, dict[int, int]]] = []  # (matched, action, condition pos, col -> pos)
    for when in tnode.args["whens"].expressions:
        cond = when.args.get("condition")
        cond_pos = len(proj)
        proj.append(f"({to_duckdb(cond)})" if cond is not None else "TRUE")
        then = when.args["then"]
        positions: dict[int, int] = {}
        if isinstance(then, exp.Update):
            action = "update"
            for eq in then.expressions:
                col = info.column(eq.this.name) if isinstance(eq, exp.EQ) else None
                if col is None:
                    raise errors.invalid_column(eq.this.name if isinstance(eq, exp.EQ) else "?")
                positions[index_of[col.name.lower()]] = len(proj)
                proj.append(to_duckdb(stored(eq.expression, col.type, cast=True)))
        elif isinstance(then, exp.Insert):
            action = "insert"
            targets = then.this.expressions if isinstance(then.this, exp.Tuple) else [exp.column(c.name) for c in cols]
            values = then.expression.expressions if isinstance(then.expression, exp.Tuple) else []
            if len(targets) != len(values):
                raise errors.SqlServerError(
                    109,
                    "There are more columns in the INSERT statement than values specified in the VALUES clause.",
                    15,
                )
            for col_expr, value in zip(targets, values, strict=True):
                col = info.column(col_expr.name)
                if col is None:
                    raise errors.invalid_column(col_expr.name)
                positions[index_of[col.name.lower()]] = len(proj)
                proj.append(to_duckdb(stored(value, col.type, cast=True)))
        elif isinstance(then, exp.Var) and then.name.upper() == "DELETE":
            action = "delete"
        else:
            raise errors.syntax_error("MERGE")
        plans.append((bool(when.args.get("matched")), action, cond_pos, positions))
    using = to_duckdb(tnode.args["using"])
    on = to_duckdb(tnode.args["on"])
    sql = f"SELECT {', '.join(proj)} FROM {using} LEFT JOIN {info.qualified} AS {ref} ON {on}"
    rows = session.run_duck(sql, table=info, names=names).fetchall()
    ncols = len(cols)
    updates: list[tuple[int, list[Any], list[Any]]] = []
    deletes: list[tuple[int, list[Any]]] = []
    inserts: list[list[Any]] = []
    seen: set[int] = set()
    order: list[tuple[str, int]] = []  # (action, index into its list) in source-row order
    for row in rows:
        rid, image = row[0], list(row[1 : 1 + ncols])
        matched = rid is not None
        for is_matched, action, cond_pos, positions in plans:
            if is_matched != matched or not row[cond_pos]:
                continue
            if matched:
                if rid in seen:
                    raise errors.SqlServerError(
                        8672,
                        "The MERGE statement attempted to UPDATE or DELETE the same row more than once. This happens "
                        "when a target row matches more than one source row.",
                        16,
                    )
                seen.add(rid)
            if action == "update":
                after = list(image)
                for i, pos in positions.items():
                    after[i] = row[pos]
                order.append(("update", len(updates)))
                updates.append((rid, image, after))
            elif action == "delete":
                order.append(("delete", len(deletes)))
                deletes.append((rid, image))
            else:
                new = [None] * ncols
                for i, pos in positions.items():
                    new[i] = row[pos]
                order.append(("insert", len(inserts)))
                inserts.append(new)
            break
    if not order:
        return Result(None, 0)
    if keys.checked(info):
        rewritten = [rid for rid, _, _ in updates] + [rid for rid, _ in deletes]
        keys.check(session, info, [c.name for c in cols], [a for _, _, a in updates] + inserts, rewritten)
    if deletes:
        _with_rows(
            session,
            [("__rid", "BIGINT")],
            [[rid] for rid, _ in deletes],
            f'DELETE FROM {info.qualified} WHERE rowid IN (SELECT "__rid" FROM {{rows}})',
            info,
            names,
        )
    if updates:
        changed = sorted({i for _, b, a in updates for i in range(ncols) if _distinct(b[i], a[i])}) or [0]
        columns = [("__rid", "BIGINT")] + [(f"__a{i}", cols[i].duck_type) for i in changed]
        sets = ", ".join(f'{dq(cols[i].name)} = __v."__a{i}"' for i in changed)
        _with_rows(
            session,
            columns,
            [[rid] + [a[i] for i in changed] for rid, _, a in updates],
            f'UPDATE {info.qualified} AS "__t" SET {sets} FROM {{rows}} AS __v WHERE "__t".rowid = __v."__rid"',
            info,
            names,
        )
    inserted: list[list[Any]] = []
    if inserts:
        inserted = _insert_rows(session, info, inserts, names)
    if info.instances:
        _log(session, info, order, updates, deletes, inserted)
    return Result(None, len(order))


def _insert_rows(session: Any, info: TableInfo, rows: list[list[Any]], names: dict[str, str]) -> list[list[Any]]:
    """Insert the rows (NULL where MERGE gave no value: defaults and identity are not modelled)."""
    col_sql = ", ".join(f"{dq(c.name)}" for c in info.columns)
    one = "(" + ", ".join(f"CAST(? AS {c.duck_type})" for c in info.columns) + ")"
    sql = f"INSERT INTO {info.qualified} ({col_sql}) VALUES {', '.join([one] * len(rows))} RETURNING *"
    try:
        cur = session.cur.execute(sql, [v for row in rows for v in row])
        return [list(r) for r in cur.fetchall()]
    except duckdb.Error as exc:
        session._fail_statement()
        raise errors.from_duckdb(exc, table=info.display, pk_name=info.pk_name, names=names, spid=session.spid) from exc


def _log(
    session: Any,
    info: TableInfo,
    order: list[tuple[str, int]],
    updates: list[tuple[int, list[Any], list[Any]]],
    deletes: list[tuple[int, list[Any]]],
    inserted: list[list[Any]],
) -> None:
    tran = session.ensure_tran_id()
    split = has_unique_index(session, info)
    index_of = {c.name.lower(): i for i, c in enumerate(info.columns)}
    n = len(order)
    base = session.engine.alloc_lsns(2 * n)
    cmd0 = session.command_seq
    session.command_seq += 2 * n
    for inst in info.instances:
        idx = [index_of.get(c.name.lower()) for c in inst.columns]
        all_mask = all_bits_mask(len(inst.columns))
        records: list[list[Any]] = []
        for rn, (action, k) in enumerate(order):
            seq, cmd = base + 2 * rn, cmd0 + 2 * rn + 1
            if action == "insert":
                row = inserted[k]
                records.append([tran, int_to_lsn(seq), 2, all_mask, *_image(inst, idx, row, row, 2), cmd])
            elif action == "delete":
                row = deletes[k][1]
                records.append([tran, int_to_lsn(seq), 1, all_mask, *_image(inst, idx, row, row, 1), cmd])
            else:
                _, before, after = updates[k]
                if split and not (n == 1 and 8207 in session.engine.trace_flags):
                    # KB 3030352 order: the insert holds the lower seqval, the command ids the true order.
                    records.append([tran, int_to_lsn(seq + 1), 1, all_mask, *_image(inst, idx, before, after, 1), cmd])
                    records.append([tran, int_to_lsn(seq), 2, all_mask, *_image(inst, idx, before, after, 2), cmd + 1])
                    continue
                mask = update_mask(inst, idx, before, after, len(all_mask))
                records.append([tran, int_to_lsn(seq), 3, mask, *_image(inst, idx, before, after, 3), cmd])
                records.append([tran, int_to_lsn(seq), 4, mask, *_image(inst, idx, before, after, 4), cmd])
        _insert_pending(session, inst, record_columns(inst), records)
    session.has_changes = True
