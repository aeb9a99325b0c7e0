"""CDC machinery: enabling/disabling, the capture scan, cleanup, and the change functions.

Behaviour follows shared/docs/sqlserver-cdc-semantics.md; each rule there has a test in
tests/emulator/test_cdc_semantics.py named after it.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from . import errors
from .catalog import TableInfo, column_rows, dq, insert_columns, load_table
from .lsn import ZERO_LSN, format_lsn, int_to_lsn
from .sqltypes import SqlType, make_type
from .storage import round_datetime

CT_PREFIX_COLUMNS: list[tuple[str, SqlType, bool]] = [
    ("__$start_lsn", make_type("binary", ["10"]), False),
    ("__$end_lsn", make_type("binary", ["10"]), True),
    ("__$seqval", make_type("binary", ["10"]), False),
    ("__$operation", make_type("int", []), False),
    ("__$update_mask", make_type("varbinary", ["128"]), True),
]
CT_SUFFIX_COLUMNS: list[tuple[str, SqlType, bool]] = [("__$command_id", make_type("int", []), True)]
MAX_INSTANCE_NAME = 100


def _internal(engine: Any) -> duckdb.DuckDBPyConnection:
    return engine.cursor()


def _set_state(cur: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    cur.execute("DELETE FROM emu.state WHERE key = ?", [key])
    cur.execute("INSERT INTO emu.state VALUES (?, ?)", [key, value])


# -- enabling ----------------------------------------------------------------------------------
def _begin(session: Any) -> duckdb.DuckDBPyConnection:
    """CDC procedures run inside the caller's transaction (committed with it, or at once in
    autocommit mode), so they see that session's uncommitted DDL as SQL Server would."""
    session.begin_write()
    session.has_ddl = True
    return session.cur


def enable_db(session: Any) -> None:
    cur = _begin(session)
    _set_state(cur, "cdc_enabled", "1")


def disable_db(session: Any) -> None:
    cur = _begin(session)
    for schema, name in cur.execute(
        "SELECT DISTINCT o.schema_name, o.name FROM cdc.change_tables ct "
        "JOIN emu.objects o ON o.object_id = ct.source_object_id"
    ).fetchall():
        disable_table(session, schema, name, "all")
    _set_state(cur, "cdc_enabled", "0")
    cur.execute("DELETE FROM cdc.lsn_time_mapping; DELETE FROM cdc.ddl_history; DELETE FROM emu.commits")


def _cdc_enabled_now(session: Any) -> bool:
    row = session.cur.execute("SELECT value FROM emu.state WHERE key = 'cdc_enabled'").fetchall()
    return bool(row and row[0][0] == "1")


def _require_cdc_db(session: Any) -> None:
    engine = session.engine
    if not _cdc_enabled_now(session):
        raise errors.SqlServerError(
            22901,
            f"The database '{engine.db_name()}' is not enabled for Change Data Capture. Ensure that the "
            "correct database context is set and retry the operation. To report on the databases enabled "
            "for Change Data Capture, query the is_cdc_enabled column in the sys.databases catalog view.",
        )


def enable_table(
    session: Any,
    source_schema: str,
    source_name: str,
    role_name: str | None = None,
    capture_instance: str | None = None,
    supports_net_changes: int | None = None,
    index_name: str | None = None,
    captured_column_list: str | None = None,
    filegroup_name: str | None = None,
    allow_partition_switch: int | None = 1,
) -> str:
    """``sys.sp_cdc_enable_table``: create a capture instance; returns its name."""
    _require_cdc_db(session)
    engine = session.engine
    with engine.ddl_lock:
        cur = session.cur
        info = load_table(cur, source_schema, source_name)
        if info is None:
            raise errors.SqlServerError(
                22931,
                f"Source table '{source_schema}.{source_name}' does not exist in the current database. "
                "Ensure that the correct database context is set. Specify a valid schema and table "
                "name for the database.",
            )
        # Default <schema>_<table>, names used as they are (spaces, brackets, quotes); "whether
        # specified or derived, @capture_instance trims any white space to the right of the string"
        # (learn.microsoft.com/en-us/sql/relational-databases/system-stored-procedures/
        # sys-sp-cdc-enable-table-transact-sql).
        ci = (capture_instance or f"{info.schema}_{info.name}").rstrip()
        if len(ci) > MAX_INSTANCE_NAME:
            raise errors.SqlServerError(22930, f"The capture instance name '{ci}' exceeds 100 characters.")
        if len(info.instances) >= 2:
            raise errors.SqlServerError(
                22962,
                f"Two capture instances already exist for source table '{info.display}'. A table can "
                "have at most two capture instances. If the current tracking options are not "
                "appropriate, disable change tracking for the obsolete instance by using "
                "sys.sp_cdc_disable_table and retry the operation.",
            )
        exists = cur.execute(
            "SELECT 1 FROM cdc.change_tables WHERE lower(capture_instance) = lower(?)", [ci]
        ).fetchone()
        if exists:
            raise errors.SqlServerError(
                22926,
                f"Could not create a capture instance because the capture instance name '{ci}' already "
                "exists in the current database. Specify an explicit unique name for the parameter "
                "@capture_instance.",
            )
        net = bool(info.pk) if supports_net_changes is None else bool(supports_net_changes)
        if net and not info.pk:
            raise errors.SqlServerError(
                22939,
                "The parameter @supports_net_changes is set to 1, but the source table does not have a "
                "primary key defined and no alternate unique index has been specified.",
            )
        if captured_column_list:
            wanted = [c.strip().strip("[]").strip() for c in captured_column_list.split(",") if c.strip()]
            columns = []
            for w in wanted:
                col = info.column(w)
                if col is None:
                    raise errors.SqlServerError(
                        22914,
                        f"Column '{w}' in the captured column list is not a column of source table '{info.display}'.",
                    )
                columns.append(col)
            columns.sort(key=lambda c: c.column_id)
            missing = [k for k in info.pk if k.lower() not in {c.name.lower() for c in columns}]
            if missing:
                raise errors.SqlServerError(
                    22945,
                    f"Could not create a capture instance because the index column '{missing[0]}' is "
                    "not in the captured column list. When an index is used to uniquely identify rows, "
                    "the index columns must be captured.",
                )
        else:
            columns = list(info.columns)
        _begin(session)
        ct_id = engine.new_object_id(cur)
        start_lsn = engine.alloc_lsn()
        now = round_datetime(engine.clock.now())  # create_date is datetime
        col_defs = [
            f"{dq(name)} {t.duck_type()}{'' if nullable else ' NOT NULL'}" for name, t, nullable in CT_PREFIX_COLUMNS
        ]
        col_defs += [f"{dq(c.name)} {c.type.duck_type()}" for c in columns]
        col_defs += [f"{dq(name)} {t.duck_type()}" for name, t, _ in CT_SUFFIX_COLUMNS]
        cur.execute(f"CREATE TABLE cdc.{dq(ci + '_CT')} ({', '.join(col_defs)})")
        pending_defs = ['"__tran" BIGINT'] + [
            d for d in col_defs if not d.startswith(('"__$start_lsn"', '"__$end_lsn"'))
        ]
        cur.execute(f"CREATE TABLE emu.{dq('pending_' + ci)} ({', '.join(pending_defs)})")
        pk_name = info.pk_name if info.pk else None
        cur.execute(
            "INSERT INTO cdc.change_tables VALUES (?, 0, ?, ?, ?, NULL, ?, NULL, ?, ?, ?, ?, ?)",
            [
                ct_id,
                info.object_id,
                ci,
                start_lsn,
                net,
                role_name,
                index_name or pk_name,
                filegroup_name,
                now,
                bool(allow_partition_switch),
            ],
        )
        # Computed columns are captured with their type but always NULL in the change table
        # ("Data Type Considerations for Change Data Capture", learn.microsoft.com cc645593).
        computed = {
            r[0]
            for r in cur.execute(
                "SELECT column_id FROM emu.computed_columns WHERE object_id = ?", [info.object_id]
            ).fetchall()
        }
        cur.executemany(
            "INSERT INTO cdc.captured_columns VALUES (?, ?, ?, ?, ?, ?, NULL)",
            [[ct_id, c.name, c.column_id, c.type.name, i + 1, c.column_id in computed] for i, c in enumerate(columns)],
        )
        if info.pk:
            cur.executemany(
                "INSERT INTO cdc.index_columns VALUES (?, ?, ?, ?)",
                [[ct_id, info.column(k).name, i + 1, info.column(k).column_id] for i, k in enumerate(info.pk)],
            )
        cur.execute(
            "INSERT INTO emu.objects VALUES (?, 'cdc', ?, 'U', ?, ?, true, NULL)", [ct_id, f"{ci}_CT", now, now]
        )
        ct_columns = [(name, t, nullable) for name, t, nullable in CT_PREFIX_COLUMNS]
        ct_columns += [(c.name, c.type, True) for c in columns]
        ct_columns += CT_SUFFIX_COLUMNS
        insert_columns(
            cur,
            column_rows(ct_id, [(i + 1, name, t, nullable, False) for i, (name, t, nullable) in enumerate(ct_columns)]),
        )
    return ci


def _rollback_quietly(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.execute("ROLLBACK")


def disable_table(session: Any, source_schema: str, source_name: str, capture_instance: str | None) -> None:
    """``sys.sp_cdc_disable_table``: drop one capture instance, or ``'all'`` of the table's."""
    _require_cdc_db(session)
    with session.engine.ddl_lock:
        cur = session.cur
        info = load_table(cur, source_schema, source_name)
        if info is None:
            raise errors.SqlServerError(
                22931, f"Source table '{source_schema}.{source_name}' does not exist in the current database."
            )
        if capture_instance is None or capture_instance.lower() == "all":
            targets = info.instances
        else:
            targets = [i for i in info.instances if i.name.lower() == capture_instance.lower()]
            if not targets:
                raise errors.SqlServerError(
                    22960,
                    f"The capture instance '{capture_instance}' is not valid for source table "
                    f"'{info.display}'. Specify a valid capture instance name and retry the operation.",
                )
        _begin(session)
        for inst in targets:
            cur.execute(f"DROP TABLE IF EXISTS {inst.ct_table}")
            cur.execute(f"DROP TABLE IF EXISTS {inst.pending_table}")
            for sql in (
                "DELETE FROM cdc.change_tables WHERE object_id = ?",
                "DELETE FROM cdc.captured_columns WHERE object_id = ?",
                "DELETE FROM cdc.index_columns WHERE object_id = ?",
                "DELETE FROM cdc.ddl_history WHERE object_id = ?",
                "DELETE FROM emu.pending_ddl WHERE object_id = ?",
                "DELETE FROM emu.columns WHERE object_id = ?",
                "DELETE FROM emu.objects WHERE object_id = ?",
            ):
                cur.execute(sql, [inst.object_id])


# -- capture -----------------------------------------------------------------------------------
def scan_once(engine: Any, cur: duckdb.DuckDBPyConnection, maxtrans: int, *, idle_rows: bool = True) -> int:
    """One log scan: capture up to ``maxtrans`` committed transactions, oldest commit LSN first.

    Under the commit lock the scan's snapshot is taken and the current end of the log noted, so
    everything committed with a lower LSN is in the snapshot. If nothing was waiting but the log
    moved on, an idle-period row (``tran_id = 0x00…``) advances ``fn_cdc_get_max_lsn()``.
    """
    with engine.commit_lock:
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE __emu_scan AS SELECT * FROM emu.commits ORDER BY commit_lsn LIMIT ?",
                [maxtrans],
            )
            log_end = engine.current_lsn_int()
        except duckdb.Error:
            _rollback_quietly(cur)
            raise
    try:
        count = cur.execute("SELECT count(*) FROM __emu_scan").fetchone()[0]
        if count:
            instances = cur.execute("SELECT capture_instance FROM cdc.change_tables").fetchall()
            for (ci,) in instances:
                cols = [
                    r[0]
                    for r in cur.execute(
                        "SELECT column_name FROM cdc.captured_columns cc JOIN cdc.change_tables ct "
                        "ON cc.object_id = ct.object_id WHERE ct.capture_instance = ? ORDER BY column_ordinal",
                        [ci],
                    ).fetchall()
                ]
                col_sql = ", ".join(f"p.{dq(c)}" for c in cols)
                cur.execute(
                    f'INSERT INTO cdc.{dq(ci + "_CT")} SELECT s.commit_lsn, NULL, p."__$seqval", p."__$operation", '
                    f'p."__$update_mask"{", " + col_sql if cols else ""}, p."__$command_id" '
                    f"FROM emu.{dq('pending_' + ci)} p JOIN __emu_scan s ON p.__tran = s.tran_id "
                    f'ORDER BY s.commit_lsn, p."__$seqval", p."__$operation"'
                )
                cur.execute(f"DELETE FROM emu.{dq('pending_' + ci)} WHERE __tran IN (SELECT tran_id FROM __emu_scan)")
            cur.execute(
                "INSERT INTO cdc.lsn_time_mapping SELECT commit_lsn, sys.round_datetime(begin_time), "
                "sys.round_datetime(end_time), "
                "sys.int_to_lsn(tran_id), begin_lsn FROM __emu_scan WHERE has_changes ORDER BY commit_lsn"
            )
            cur.execute(
                "INSERT INTO cdc.ddl_history SELECT d.source_object_id, d.object_id, d.required_column_update, "
                "d.ddl_command, d.ddl_lsn, sys.round_datetime(s.end_time) FROM emu.pending_ddl d JOIN __emu_scan s "
                "ON d.tran_id = s.tran_id ORDER BY d.ddl_lsn"
            )
            cur.execute("DELETE FROM emu.pending_ddl WHERE tran_id IN (SELECT tran_id FROM __emu_scan)")
            cur.execute("DELETE FROM emu.commits WHERE tran_id IN (SELECT tran_id FROM __emu_scan)")
        elif idle_rows and engine.cdc_enabled(cur):
            has_instances = cur.execute("SELECT count(*) FROM cdc.change_tables").fetchone()[0]
            top = cur.execute("SELECT max(start_lsn) FROM cdc.lsn_time_mapping").fetchone()[0]
            if has_instances and (top is None or int.from_bytes(bytes(top), "big") < log_end):
                now = round_datetime(engine.clock.now())
                cur.execute(
                    "INSERT INTO cdc.lsn_time_mapping VALUES (?, ?, ?, ?, NULL)",
                    [int_to_lsn(log_end), now, now, ZERO_LSN],
                )
        cur.execute("DROP TABLE IF EXISTS __emu_scan")
        cur.execute("COMMIT")
    except duckdb.Error:
        _rollback_quietly(cur)
        raise
    return int(count)


# -- cleanup -----------------------------------------------------------------------------------
def cleanup_change_table(
    engine: Any, capture_instance: str, low_water_mark: bytes | None, threshold: int | None = None
) -> int:
    """``sys.sp_cdc_cleanup_change_table``: raise the instance's start_lsn, delete older rows.

    Msg 22957 when the new low water mark is outside ``[start_lsn, max lsn]``.
    """
    del threshold  # deletes happen in one statement; the batch size has no observable effect here
    with engine.ddl_lock:
        cur = _internal(engine)
        try:
            row = cur.execute(
                "SELECT capture_instance, start_lsn FROM cdc.change_tables WHERE lower(capture_instance) = lower(?)",
                [capture_instance],
            ).fetchone()
            if row is None:
                raise errors.SqlServerError(
                    22964, f"The capture instance '{capture_instance}' does not exist in the current database."
                )
            ci, start_lsn = row[0], bytes(row[1])
            if low_water_mark is None:
                return 0
            lwm = bytes(low_water_mark).ljust(10, b"\x00")
            max_lsn = cur.execute("SELECT max(start_lsn) FROM cdc.lsn_time_mapping").fetchone()[0]
            max_lsn = bytes(max_lsn) if max_lsn is not None else None
            if max_lsn is None or lwm < start_lsn or lwm > max_lsn:
                raise errors.SqlServerError(
                    22957,
                    f"LSN {format_lsn(lwm)}, specified as the new low endpoint for the change table associated "
                    f"with capture instance '{ci}', is not within the Change Data Capture timeline "
                    f"[{format_lsn(start_lsn)}, {format_lsn(max_lsn)}].",
                )
            cur.execute("BEGIN TRANSACTION")
            deleted = cur.execute(f'DELETE FROM cdc.{dq(ci + "_CT")} WHERE "__$start_lsn" < ?', [lwm]).fetchone()[0]
            cur.execute("UPDATE cdc.change_tables SET start_lsn = ? WHERE capture_instance = ?", [lwm, ci])
            cur.execute("COMMIT")
            return int(deleted)
        except duckdb.Error as exc:
            _rollback_quietly(cur)
            raise errors.from_duckdb(exc) from exc
        finally:
            cur.close()


def cleanup_job(engine: Any, retention_minutes: int) -> dict[str, Any]:
    """The daily cleanup job: low water mark = LSN of the last transaction that ended at or before
    ``MAX(tran_end_time) - retention``; every instance is cleaned up to it, then
    ``lsn_time_mapping`` rows below the lowest remaining ``start_lsn`` are deleted."""
    cur = _internal(engine)
    try:
        top = cur.execute("SELECT max(tran_end_time) FROM cdc.lsn_time_mapping").fetchone()[0]
        report: dict[str, Any] = {"low_water_mark": None, "deleted": {}}
        if top is None:
            return report
        cutoff = top - timedelta(minutes=retention_minutes)
        lwm = cur.execute(
            "SELECT max(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_end_time <= ?", [cutoff]
        ).fetchone()[0]
        if lwm is None:
            return report
        lwm = bytes(lwm)
        report["low_water_mark"] = lwm
        for ci, start in cur.execute("SELECT capture_instance, start_lsn FROM cdc.change_tables").fetchall():
            if bytes(start) < lwm:
                report["deleted"][ci] = cleanup_change_table(engine, ci, lwm)
        low = cur.execute("SELECT min(start_lsn) FROM cdc.change_tables").fetchone()[0]
        bound = min(bytes(low), lwm) if low is not None else lwm
        cur.execute("DELETE FROM cdc.lsn_time_mapping WHERE start_lsn < ?", [bound])
        return report
    finally:
        cur.close()


# -- cdc.fn_cdc_get_all_changes_<ci> / fn_cdc_get_net_changes_<ci> ------------------------------
ALL_OPTIONS = {"all", "all update old"}
NET_OPTIONS = {"all", "all with mask", "all with merge"}


def _instance(session: Any, ci: str) -> tuple[str, bytes, bool, list[str], list[str]] | None:
    cur = session.cur
    row = cur.execute(
        "SELECT capture_instance, object_id, start_lsn, supports_net_changes FROM cdc.change_tables "
        "WHERE lower(capture_instance) = lower(?)",
        [ci],
    ).fetchone()
    if row is None:
        return None
    name, ct_id, start_lsn, net = row
    cols = [
        r[0]
        for r in cur.execute(
            "SELECT column_name FROM cdc.captured_columns WHERE object_id = ? ORDER BY column_ordinal", [ct_id]
        ).fetchall()
    ]
    keys = [
        r[0]
        for r in cur.execute(
            "SELECT column_name FROM cdc.index_columns WHERE object_id = ? ORDER BY index_ordinal", [ct_id]
        ).fetchall()
    ]
    return name, bytes(start_lsn), bool(net), cols, keys


def _pad(value: Any) -> bytes | None:
    if value is None:
        return None
    raw = bytes(value)
    return raw.ljust(10, b"\x00") if len(raw) < 10 else raw


def expand_function(
    session: Any, low_name: str, name: str, args: list[exp.Expression], alias: str | None
) -> exp.Expression:
    """Validate the LSN range (Msg 313 when outside the instance's validity interval, exactly where
    SQL Server fails) and replace the call with the equivalent query over the change table."""
    net = low_name.startswith("fn_cdc_get_net_changes_")
    prefix = "fn_cdc_get_net_changes_" if net else "fn_cdc_get_all_changes_"
    ci = name[len(prefix) :]
    found = _instance(session, ci)
    if found is None or (net and not found[2]):
        raise errors.invalid_object(f"cdc.{name}")
    ci, start_lsn, _, cols, keys = found
    fn_display = f"cdc.{prefix}"
    if len(args) != 3:
        raise errors.insufficient_arguments(fn_display)
    from_lsn = _pad(session.eval_scalar(args[0]))
    to_lsn = _pad(session.eval_scalar(args[1]))
    option = session.eval_scalar(args[2])
    option = " ".join(str(option).lower().split()) if option is not None else None
    max_lsn = session.cur.execute("SELECT max(start_lsn) FROM cdc.lsn_time_mapping").fetchone()[0]
    max_lsn = bytes(max_lsn) if max_lsn is not None else None
    valid = (
        from_lsn is not None
        and to_lsn is not None
        and max_lsn is not None
        and from_lsn >= start_lsn
        and to_lsn <= max_lsn
        and from_lsn <= to_lsn
        and option in (NET_OPTIONS if net else ALL_OPTIONS)
    )
    if not valid:
        raise errors.insufficient_arguments(fn_display)
    lo, hi = f"unhex('{from_lsn.hex()}')", f"unhex('{to_lsn.hex()}')"
    table = f"cdc.{dq(ci + '_CT')}"
    col_list = "".join(f", {dq(c)}" for c in cols)
    if not net:
        op_filter = "" if option == "all update old" else ' AND "__$operation" <> 3'
        sql = (
            f'SELECT "__$start_lsn", "__$seqval", "__$operation", "__$update_mask"{col_list} FROM {table} '
            f'WHERE "__$start_lsn" >= {lo} AND "__$start_lsn" <= {hi}{op_filter}'
        )
    else:
        sql = _net_changes_sql(table, cols, keys, lo, hi, option)
    subquery = sqlglot.parse_one(sql, read="duckdb")
    return exp.Subquery(this=subquery, alias=exp.TableAlias(this=exp.to_identifier(alias or f"fn_{ci}")))


def _net_changes_sql(table: str, cols: list[str], keys: list[str], lo: str, hi: str, option: str) -> str:
    part = ", ".join(f"{dq(k)}" for k in keys)
    nbytes = max((len(cols) + 7) // 8, 1)
    all_mask = f"unhex('{((1 << len(cols)) - 1).to_bytes(nbytes, 'big').hex()}')"
    using = ", ".join(f"{dq(k)}" for k in keys)
    if option == "all with merge":
        op = 'CASE WHEN l."__$operation" = 1 THEN 1 ELSE 5 END'
    else:
        op = 'CASE WHEN l."__$operation" = 1 THEN 1 WHEN f.__first_op = 2 THEN 2 ELSE 4 END'
    if option == "all with mask":
        mask = (
            f'CASE WHEN l."__$operation" <> 1 AND f.__first_op <> 2 THEN coalesce('
            f"unhex(lpad(hex(m.__mask), {nbytes * 2}, '0')), {all_mask}) END"
        )
    else:
        mask = "NULL::BLOB"
    col_sel = "".join(f", l.{dq(c)}" for c in cols)
    return (
        f'WITH w AS (SELECT *, row_number() OVER (PARTITION BY {part} ORDER BY "__$start_lsn", "__$seqval", '
        f'"__$operation") AS __first, row_number() OVER (PARTITION BY {part} ORDER BY "__$start_lsn" DESC, '
        f'"__$seqval" DESC, "__$operation" DESC) AS __last FROM {table} '
        f'WHERE "__$start_lsn" >= {lo} AND "__$start_lsn" <= {hi} AND "__$operation" <> 3), '
        f'f AS (SELECT {part}, "__$operation" AS __first_op FROM w WHERE __first = 1), '
        f'm AS (SELECT {part}, bit_or(sys.lsn_to_int("__$update_mask")) AS __mask FROM w '
        f'WHERE "__$operation" = 4 GROUP BY {part}) '
        f'SELECT l."__$start_lsn", {op} AS "__$operation", {mask} AS "__$update_mask"{col_sel} '
        f"FROM w l JOIN f USING ({using}) LEFT JOIN m USING ({using}) "
        f'WHERE l.__last = 1 AND NOT (f.__first_op = 2 AND l."__$operation" = 1)'
    )


def table_instances(info: TableInfo) -> list[str]:
    return [i.name for i in info.instances]
