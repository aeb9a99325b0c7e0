"""``EXEC``: the system procedures the emulator implements, and its own ``emu.*`` procedures.

Arguments follow T-SQL rules: named (``@name = value``) or positional, constants or variables.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb
from sqlglot import exp

from . import cdc, errors
from .results import Column, Result
from .translate import RawStatement, parse_statement

ProcFn = Callable[[Any, dict[str, Any]], Result | None]


def _arg_value(session: Any, node: exp.Expression) -> Any:
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, (exp.National,)):
        return node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if isinstance(node, exp.HexString):
        digits = node.this if len(node.this) % 2 == 0 else "0" + node.this
        return bytes.fromhex(digits)
    if isinstance(node, exp.Neg):
        value = _arg_value(session, node.this)
        return -value if value is not None else None
    if isinstance(node, (exp.Var, exp.Column)) and not isinstance(node, exp.Parameter):
        return node.name  # EXEC p @x = all  (bare word)
    return session.eval_scalar(node)


def parse_exec(session: Any, raw: RawStatement) -> tuple[str, list[Any], dict[str, Any]]:
    node = parse_statement(raw)
    if not isinstance(node, exp.Execute):
        raise errors.syntax_error(raw.first_word)
    target = node.this
    parts = [p.name for p in (target.args.get("catalog"), target.args.get("db")) if p is not None]
    parts.append(target.name)
    name = ".".join(parts).lower()
    positional: list[Any] = []
    named: dict[str, Any] = {}
    for arg in node.expressions or []:
        if isinstance(arg, exp.EQ) and isinstance(arg.this, exp.Parameter):
            named[arg.this.name.lower()] = _arg_value(session, arg.expression)
        else:
            positional.append(_arg_value(session, arg))
    return name, positional, named


def _bind(spec: list[str], positional: list[Any], named: dict[str, Any], proc: str) -> dict[str, Any]:
    args = dict(zip(spec, positional, strict=False))
    for key, value in named.items():
        if key not in spec:
            raise errors.SqlServerError(8145, f"@{key} is not a parameter for procedure {proc}.")
        args[key] = value
    return args


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None:
        return default
    return int(value)


# -- system procedures -------------------------------------------------------------------------
def sp_cdc_enable_db(session: Any, args: dict[str, Any]) -> None:
    cdc.enable_db(session)


def sp_cdc_disable_db(session: Any, args: dict[str, Any]) -> None:
    cdc.disable_db(session)


def sp_cdc_enable_table(session: Any, args: dict[str, Any]) -> None:
    for required in ("source_schema", "source_name"):
        if args.get(required) is None:
            raise errors.SqlServerError(
                201,
                f"Procedure or function 'sp_cdc_enable_table' expects parameter '@{required}', which was not supplied.",
            )
    if "role_name" not in args:
        raise errors.SqlServerError(
            201, "Procedure or function 'sp_cdc_enable_table' expects parameter '@role_name', which was not supplied."
        )
    cdc.enable_table(
        session,
        args["source_schema"],
        args["source_name"],
        args.get("role_name"),
        args.get("capture_instance"),
        _int(args.get("supports_net_changes")),
        args.get("index_name"),
        args.get("captured_column_list"),
        args.get("filegroup_name"),
        _int(args.get("allow_partition_switch"), 1),
    )


def sp_cdc_disable_table(session: Any, args: dict[str, Any]) -> None:
    cdc.disable_table(session, args["source_schema"], args["source_name"], args.get("capture_instance"))


def sp_cdc_scan(session: Any, args: dict[str, Any]) -> None:
    maxtrans = _int(args.get("maxtrans"), 500) or 500
    maxscans = _int(args.get("maxscans"), 10) or 10
    session.engine.capture(maxtrans, maxscans)


def sp_cdc_cleanup_change_table(session: Any, args: dict[str, Any]) -> None:
    cdc.cleanup_change_table(
        session.engine, args["capture_instance"], args.get("low_water_mark"), _int(args.get("threshold"))
    )


def sp_cdc_start_job(session: Any, args: dict[str, Any]) -> None:
    if str(args.get("job_type") or "capture").lower() == "capture":
        session.engine.start_capture_job(session.engine.capture_interval or 5.0)


def sp_cdc_stop_job(session: Any, args: dict[str, Any]) -> None:
    if str(args.get("job_type") or "capture").lower() == "capture":
        session.engine.stop_capture_job()


def sp_cdc_change_job(session: Any, args: dict[str, Any]) -> None:
    job = str(args.get("job_type") or "capture").lower()
    if job == "cleanup" and args.get("retention") is not None:
        session.engine.retention_minutes = int(args["retention"])
    if job == "capture":
        if args.get("maxtrans") is not None:
            session.engine.maxtrans = int(args["maxtrans"])
        if args.get("maxscans") is not None:
            session.engine.maxscans = int(args["maxscans"])
        if args.get("pollinginterval") is not None and session.engine.capture_interval:
            session.engine.start_capture_job(float(args["pollinginterval"]))


def sp_cdc_help_change_data_capture(session: Any, args: dict[str, Any]) -> Result:
    sql = (
        "SELECT o.schema_name AS source_schema, o.name AS source_table, ct.capture_instance, "
        "ct.object_id, ct.source_object_id, ct.start_lsn, ct.end_lsn, ct.supports_net_changes, "
        "ct.has_drop_pending, ct.role_name, ct.index_name, ct.filegroup_name, ct.create_date, "
        "(SELECT string_agg(column_name, ', ' ORDER BY index_ordinal) FROM cdc.index_columns ic "
        " WHERE ic.object_id = ct.object_id) AS index_column_list, "
        "(SELECT string_agg(column_name, ', ' ORDER BY column_ordinal) FROM cdc.captured_columns cc "
        " WHERE cc.object_id = ct.object_id) AS captured_column_list "
        "FROM cdc.change_tables ct JOIN emu.objects o ON o.object_id = ct.source_object_id "
        "WHERE (? IS NULL OR lower(o.schema_name) = lower(?)) AND (? IS NULL OR lower(o.name) = lower(?)) "
        "ORDER BY 1, 2, ct.create_date"
    )
    schema, table = args.get("source_schema"), args.get("source_name")
    rel = session.cur.execute(sql, [schema, schema, table, table])
    data = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else None
    columns = [Column(d[0], str(d[1])) for d in rel.description] if rel.description else []
    return Result(columns, -1, iter(data.to_batches()) if data is not None else iter(()))


# -- emulator-only procedures ------------------------------------------------------------------
def emu_set_clock(session: Any, args: dict[str, Any]) -> None:
    value = args.get("now")
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    frozen = _int(args.get("frozen"), 1)
    session.engine.clock.set(when, frozen=bool(frozen))


def emu_advance_clock(session: Any, args: dict[str, Any]) -> None:
    seconds = float(args.get("seconds") or 0) + 60 * float(args.get("minutes") or 0)
    session.engine.clock.advance(seconds)


def emu_reset_clock(session: Any, args: dict[str, Any]) -> None:
    session.engine.clock.reset()


def emu_run_cleanup_job(session: Any, args: dict[str, Any]) -> None:
    session.engine.run_cleanup_job(_int(args.get("retention_minutes")))


def emu_capture(session: Any, args: dict[str, Any]) -> None:
    """Capture everything committed so far (sp_cdc_scan is bounded by maxtrans × maxscans)."""
    session.engine.capture_all()


PROCEDURES: dict[str, tuple[list[str], ProcFn]] = {
    "sp_cdc_enable_db": ([], sp_cdc_enable_db),
    "sp_cdc_disable_db": ([], sp_cdc_disable_db),
    "sp_cdc_enable_table": (
        [
            "source_schema",
            "source_name",
            "role_name",
            "capture_instance",
            "supports_net_changes",
            "index_name",
            "captured_column_list",
            "filegroup_name",
            "allow_partition_switch",
        ],
        sp_cdc_enable_table,
    ),
    "sp_cdc_disable_table": (["source_schema", "source_name", "capture_instance"], sp_cdc_disable_table),
    "sp_cdc_scan": (["maxtrans", "maxscans", "continuous", "pollinginterval"], sp_cdc_scan),
    "sp_cdc_cleanup_change_table": (
        ["capture_instance", "low_water_mark", "threshold", "fcleanupfailed"],
        sp_cdc_cleanup_change_table,
    ),
    "sp_cdc_start_job": (["job_type"], sp_cdc_start_job),
    "sp_cdc_stop_job": (["job_type"], sp_cdc_stop_job),
    "sp_cdc_change_job": (
        ["job_type", "maxtrans", "maxscans", "continuous", "pollinginterval", "retention", "threshold"],
        sp_cdc_change_job,
    ),
    "sp_cdc_help_change_data_capture": (["source_schema", "source_name"], sp_cdc_help_change_data_capture),
    "emu.set_clock": (["now", "frozen"], emu_set_clock),
    "emu.advance_clock": (["seconds", "minutes"], emu_advance_clock),
    "emu.reset_clock": ([], emu_reset_clock),
    "emu.run_cleanup_job": (["retention_minutes"], emu_run_cleanup_job),
    "emu.capture": ([], emu_capture),
}


def execute(session: Any, raw: RawStatement) -> Result | None:
    name, positional, named = parse_exec(session, raw)
    key = name
    for prefix in ("master.sys.", "master.dbo.", "sys.", "dbo."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if key.count(".") == 2:  # <db>.sys.proc / <db>.emu.proc
        key = key.split(".", 1)[1]
        key = key[4:] if key.startswith("sys.") else key
    entry = PROCEDURES.get(key)
    if entry is None:
        raise errors.unknown_procedure(name)
    spec, fn = entry
    args = _bind(spec, positional, named, name)
    try:
        return fn(session, args)
    except duckdb.Error as exc:
        session._fail_statement()
        raise errors.from_duckdb(exc, spid=session.spid) from exc
