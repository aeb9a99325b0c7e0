"""The pure Snowflake SQL builders (include/cdc_pipeline/snowflake_sql.py), read back with sqlglot.

Each statement is parsed with sqlglot's Snowflake dialect and checked for what it does (which
table, which columns, which conditions), not compared as a whole string. Names are chosen to break
naive quoting: a space, a ``%`` (a driver placeholder character) and a double quote.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import sqlglot
from sqlglot import exp

from include.cdc_pipeline import snowflake_sql as q
from include.cdc_pipeline.config import DeleteMode
from include.cdc_pipeline.types import SourceColumn, map_column

ODD = {"Order Id": "int", "qty%": "decimal", 'note"s': "nvarchar"}


def layout(delete_mode: DeleteMode = DeleteMode.SOFT, key: tuple[str, ...] = ("ORDER ID",)) -> q.TableLayout:
    columns = tuple(
        replace(map_column(SourceColumn(name, kind, 200, 12, 2)), target_name=name.upper())
        for name, kind in ODD.items()
    )
    return q.TableLayout("DB", "RAW", "STAGING", "ORDER DETAILS", "BILLING__ORDER DETAILS", columns, key, delete_mode)


def parse(sql: str) -> exp.Expression:
    """Parameters (``%(name)s``) become string literals, as the driver would bind them."""
    expression = sqlglot.parse_one(re.sub(r"%\((\w+)\)s", r"'\1'", sql), dialect="snowflake")
    assert expression is not None
    return expression


def table_parts(table: exp.Expression) -> tuple[str, str, str]:
    assert isinstance(table, exp.Table)
    return table.catalog, table.db, table.name


def column_names(node: exp.Expression) -> list[str]:
    return [c.name for c in node.find_all(exp.Column)]


def action(then: exp.Expression) -> str:
    """What a WHEN branch does: sqlglot keeps ``THEN DELETE`` as a bare keyword."""
    return then.name.title() if isinstance(then, exp.Var) else type(then).__name__


def test_change_order_is_lsn_command_id_seqval_operation() -> None:
    # Given the apply order of the project (KB 3030352: seqval alone can misorder a transaction)
    order = parse(f"SELECT 1 FROM x AS s ORDER BY {q.change_order('s', descending=True)}").args["order"]
    # Then the ORDER BY lists exactly those four columns, all descending, all on the alias
    assert [o.this.name for o in order.expressions] == ["_CDC_LSN", "_CDC_COMMAND_ID", "_CDC_SEQVAL", "_CDC_OPERATION"]
    assert all(o.args.get("desc") for o in order.expressions)
    assert {o.this.table for o in order.expressions} == {"s"}


def test_odd_names_stay_one_identifier_each() -> None:
    # When the staging table is created for columns named with a space, a % and a double quote
    create = parse(q.create_staging(layout()))
    assert isinstance(create, exp.Create) and create.args.get("replace")
    assert table_parts(create.this.this) == ("DB", "STAGING", "BILLING__ORDER DETAILS")
    # Then each name arrives intact, followed by the staging metadata columns
    defined = [c.name for c in create.this.expressions]
    assert defined == ["ORDER ID", "QTY%", 'NOTE"S', *(name for name, _ in q.STAGE_META)]


def test_merge_matches_on_the_key_and_keeps_the_latest_change_per_key() -> None:
    merge = parse(q.merge_raw(layout()))
    assert isinstance(merge, exp.Merge)
    assert table_parts(merge.this) == ("DB", "RAW", "ORDER DETAILS")
    # ON compares the key columns of target and source, nothing else
    on = merge.args["on"]
    assert sorted((c.table, c.name) for c in on.find_all(exp.Column)) == [("s", "ORDER ID"), ("t", "ORDER ID")]
    # USING reads the staging table, one row per key: ROW_NUMBER over the key by the change order
    using = merge.args["using"]
    assert table_parts(using.find(exp.Table)) == ("DB", "STAGING", "BILLING__ORDER DETAILS")
    window = using.find(exp.Window)
    assert [p.name for p in window.args["partition_by"]] == ["ORDER ID"]
    assert [o.this.name for o in window.args["order"].expressions] == [
        "_CDC_LSN",
        "_CDC_COMMAND_ID",
        "_CDC_SEQVAL",
        "_CDC_OPERATION",
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # soft: a matched delete flags the row; an unmatched delete still inserts it (flagged)
        (DeleteMode.SOFT, [(True, "Update"), (True, "Update"), (False, "Insert"), (False, "Insert")]),
        # hard: a matched delete removes the row; an unmatched delete inserts nothing
        (DeleteMode.HARD, [(True, "Delete"), (True, "Update"), (False, "Insert")]),
    ],
)
def test_merge_branches_per_delete_mode(mode: DeleteMode, expected: list[tuple[bool, str]]) -> None:
    merge = parse(q.merge_raw(layout(mode)))
    whens = merge.args["whens"].expressions
    assert [(bool(w.args.get("matched")), action(w.args["then"])) for w in whens] == expected
    # Every matched branch applies only a newer change (or a snapshot row): the LSN is compared
    for when in whens:
        if when.args.get("matched"):
            assert "_CDC_LSN" in column_names(when.args["condition"])
    # An insert writes every source and raw metadata column, in one list
    insert = whens[-1].args["then"] if mode is DeleteMode.HARD else whens[2].args["then"]
    written = [c.name for c in insert.this.expressions]
    assert written == [*layout().names, *(name for name, _ in q.RAW_META)]


def test_merge_update_never_rewrites_the_key() -> None:
    merge = parse(q.merge_raw(layout()))
    upsert = merge.args["whens"].expressions[1].args["then"]
    assigned = [e.this.name for e in upsert.expressions]
    assert "ORDER ID" not in assigned
    assert {"QTY%", 'NOTE"S', "_CDC_LSN", "_CDC_DELETED"} <= set(assigned)


def test_history_append_skips_changes_already_there() -> None:
    insert = parse(q.append_history(layout()))
    assert isinstance(insert, exp.Insert)
    assert table_parts(insert.this.this) == ("DB", "RAW", "ORDER DETAILS_HISTORY")
    written = [c.name for c in insert.this.expressions]
    assert written == [*layout().names, *(n for n, _ in q.STAGE_META), "_CDC_LOADED_AT", "_CDC_BATCH_ID"]
    # The anti-join matches a change by LSN, seqval, operation and key, within the window's LSNs
    anti = insert.find(exp.Exists).this
    matched = {c.name for c in anti.args["where"].find_all(exp.Column) if c.table == "s"}
    assert matched == {"_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION", "ORDER ID"}
    bounds = {(type(b).__name__, b.expression.name) for b in anti.find_all(exp.GTE, exp.LTE)}
    assert bounds == {("GTE", "lower"), ("LTE", "upper")}


def test_lost_timeline_flags_only_history_above_the_snapshot() -> None:
    update = parse(q.mark_lost_timeline(layout()))
    assert isinstance(update, exp.Update)
    assert table_parts(update.this) == ("DB", "RAW", "ORDER DETAILS_HISTORY")
    assert [e.this.name for e in update.expressions] == ["_CDC_LOST_TIMELINE"]
    above = update.find(exp.GT)
    assert (above.this.name, above.expression.name) == ("_CDC_LSN", "snap")


@pytest.mark.parametrize(("mode", "raw_statement"), [(DeleteMode.SOFT, exp.Update), (DeleteMode.HARD, exp.Delete)])
def test_delete_unseen_writes_history_then_raw(mode: DeleteMode, raw_statement: type[exp.Expression]) -> None:
    to_history, in_raw = (parse(s) for s in q.delete_unseen_after_snapshot(layout(mode)))
    assert isinstance(to_history, exp.Insert)
    assert table_parts(to_history.this.this)[2] == "ORDER DETAILS_HISTORY"
    assert isinstance(in_raw, raw_statement)
    assert table_parts(in_raw.this)[2] == "ORDER DETAILS"
    # "unseen" is judged by the load time against the snapshot's start, never by a staging table
    for statement in (to_history, in_raw):
        assert not [t for t in statement.find_all(exp.Table) if t.db == "STAGING"]
        older = [lt for lt in statement.find_all(exp.LT) if lt.this.name == "_CDC_LOADED_AT"]
        assert [lt.expression.name for lt in older] == ["started"]


@pytest.mark.parametrize("mode", [DeleteMode.SOFT, DeleteMode.HARD])
def test_a_snapshot_chunk_replaces_only_rows_that_are_not_newer(mode: DeleteMode) -> None:
    merge = parse(q.merge_snapshot_chunk(layout(mode)))
    assert isinstance(merge, exp.Merge)
    matched = merge.args["whens"].expressions[0]
    condition = matched.args["condition"]
    assert isinstance(condition, exp.LTE)
    assert [(c.table, c.name) for c in (condition.this, condition.expression)] == [("t", "_CDC_LSN"), ("s", "_CDC_LSN")]
    # hard delete mode: a key the stream deleted after the chunk's LSN (history) is not brought back
    history = [t.name for t in merge.find_all(exp.Table) if t.name.endswith("_HISTORY")]
    assert history == (["ORDER DETAILS_HISTORY"] if mode is DeleteMode.HARD else [])


def test_copy_reads_parquet_binary_as_bytes_by_column_name() -> None:
    copy = parse(q.copy_into_staging(layout(), "DB.STAGING.CDC_STAGE", "billing/dbo_orders/x_y"))
    assert isinstance(copy, exp.Copy)
    assert table_parts(copy.this) == ("DB", "STAGING", "BILLING__ORDER DETAILS")
    params = {p.this.name: p for p in copy.args["params"]}
    file_format = {prop.this.name: prop.args["value"].sql() for prop in params["FILE_FORMAT"].expressions}
    assert file_format == {"TYPE": "PARQUET", "BINARY_AS_TEXT": "FALSE"}
    assert params["MATCH_BY_COLUMN_NAME"].expression.name == "CASE_INSENSITIVE"
    assert {params["FORCE"].expression.sql(), params["PURGE"].expression.sql()} == {"TRUE"}


def test_ddl_builders_quote_the_column() -> None:
    raw = layout().raw
    add = parse(q.add_column(raw, "qty%", "NUMBER(12,2)"))
    assert [c.name for c in add.find_all(exp.ColumnDef)] == ["QTY%"]
    widen = parse(q.widen_column(raw, 'note"s', "VARCHAR(400)"))
    altered = widen.find(exp.AlterColumn)
    assert (altered.this.name, altered.args["dtype"].sql("snowflake")) == ('NOTE"S', "VARCHAR(400)")


@pytest.mark.parametrize(
    ("existing", "wanted", "expected"),
    [
        ("BINARY(16)", "BINARY", "widen BINARY(8388608)"),  # binary(16) -> varbinary(max)
        ("BINARY(8388608)", "BINARY(16)", "fits"),
        ("TIMESTAMP_NTZ(3)", "TIMESTAMP_TZ(3)", "type TIMESTAMP → TIMESTAMP_TZ"),  # refused: values would change
        ("NUMBER(38,0)", "NUMBER(38,2)", "scale 0 → 2"),
        ("BOOLEAN", "BOOLEAN", "fits"),
    ],
)
def test_type_change_widens_or_refuses(existing: str, wanted: str, expected: str) -> None:
    assert q.type_change(existing, wanted) == expected
