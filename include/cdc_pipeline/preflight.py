"""Preflight: is everything the CDC DAGs need in place, with the configured connections?

Run before the first deployment and after any change of connections, pools or Variables — by the
manually triggered ``cdc_preflight`` DAG, by ``python -m include.cdc_pipeline.orchestration.preflight_dag``
in an Airflow environment, or by ``make preflight`` on the local stack (that module supplies what
the checks need from the Airflow wiring: the DAGs' pools, the salt Variable). Every check runs and
all are reported together; each failure names its fix.

Per source config (``include/config/sources/*.yaml``):

* SQL Server reachable (connection ``mssql_conn_id``);
* CDC enabled on the database, and on every configured table (the exact ``sys.sp_cdc_enable_table``
  call for one that is not); the configured key and listed columns are captured, their types mapped;
* the login is not ``sysadmin`` and can read the ``cdc`` schema, each change table and each source
  table (snapshots read it) — ``IS_SRVROLEMEMBER`` / ``HAS_PERMS_BY_NAME``;
* Snowflake reachable (``snowflake_conn_id``), a warehouse in use, and the role can create and
  insert in the target schemas (a probe table is created, written and dropped in each);
* SMTP answers (``smtp_conn_id``);
* the salt Variable ``cdc_hash_salt_secret`` (or its secrets-backend entry) when a table hashes columns;
* the account's roles, grants, users, warehouses, monitors and PII tags against ``include/config/access.yaml``
  (once, with the first source's Snowflake connection; every difference named as the statement that fixes it).

Across the DAGs: every pool a task uses exists and has slots. Airflow 3 tasks have no metadata-DB
access, so from a worker the pools are read through Airflow's REST API (connection ``airflow_api``:
host = the API's base URL; password = an API token, or login + password exchanged at
``/auth/token``); a process with metadata-DB access (the CLI entry point, ``airflow dags test``)
reads them directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.cdc_pipeline.config import ChangeReader, SourceConfig, load_source_config, source_files
from include.cdc_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from include.cdc_pipeline.source import CdcSource

log = logging.getLogger(__name__)

API_CONN_ID = "airflow_api"
PROBE_TABLE = "CDC_PREFLIGHT_PROBE"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check; ``fix`` says what to do when it failed."""

    check: str
    ok: bool
    detail: str
    fix: str = ""
    # passed, but something runs degraded (e.g. the change reader fell back to pymssql): reported, not failed
    warning: bool = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _unreachable(name: str, exc: BaseException, fix: str) -> list[Finding]:
    """The one finding of a service that cannot be reached (the checks needing it cannot run)."""
    return [Finding(f"{name} reachable", False, _first_line(exc), fix)]


# -- SQL Server ----------------------------------------------------------------------------------
def reader_login_fix(source: SourceConfig, login: str = "cdc_reader") -> str:
    """The T-SQL that gives a dedicated, least-privileged login what the pipeline reads."""
    tables = ", ".join(f"{t.source_schema}.{t.table}" for t in source.tables)
    return (
        f"CREATE LOGIN {login} WITH PASSWORD = '…'; then in the source database: CREATE USER {login} FOR LOGIN "
        f"{login}; GRANT SELECT ON SCHEMA::cdc TO {login}; GRANT SELECT ON <each table: {tables}> TO {login} "
        f"(or ALTER ROLE db_datareader ADD MEMBER {login}); and use that login in connection `{source.mssql_conn_id}`"
    )


def check_sqlserver(source: SourceConfig, open_source: Callable[[], CdcSource]) -> list[Finding]:
    """SQL Server checks over one connection (``open_source`` returns a ``CdcSource``)."""
    from include.cdc_pipeline.errors import CdcError, TableNotCapturedError, UnsupportedTypeError
    from include.cdc_pipeline.pipeline import TablePipeline
    from include.cdc_pipeline.source import enable_table_call
    from include.cdc_pipeline.sql import tsql_name

    name = f"{source.name}: SQL Server"
    try:
        src = open_source()
        version, database, login = src.server_identity()
    except Exception as exc:
        return _unreachable(
            name,
            exc,
            f"check connection `{source.mssql_conn_id}` (host, port, database, login, password) and that the "
            "server accepts connections from the workers",
        )
    findings = [Finding(f"{name} reachable", True, f"database {database} as login {login}; {version[:60]}")]
    if source.change_reader != ChangeReader.PYMSSQL and src.arrow_connect is not None:
        findings.append(_check_change_reader(name, source, src.arrow_connect))
    cdc_on = src.database_cdc_enabled()
    findings.append(
        Finding(
            f"{name} CDC on database {database}",
            bool(cdc_on),
            "enabled" if cdc_on else "CDC is not enabled on the database",
            ""
            if cdc_on
            else f"as sysadmin in {database}: EXEC sys.sp_cdc_enable_db (and keep SQL Server Agent running)",
        )
    )
    sysadmin, cdc_schema = src.login_rights()
    findings.append(
        Finding(
            f"{name} login {login} is not sysadmin",
            sysadmin == 0,
            "not a member of sysadmin" if sysadmin == 0 else f"IS_SRVROLEMEMBER('sysadmin') = {sysadmin}",
            "" if sysadmin == 0 else "replication must not run as sysadmin: " + reader_login_fix(source),
        )
    )
    findings.append(
        Finding(
            f"{name} login {login} can read the cdc schema",
            cdc_schema == 1,
            f"HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT') = {cdc_schema}",
            "" if cdc_schema == 1 else f"GRANT SELECT ON SCHEMA::cdc TO <user of login {login}>",
        )
    )
    for table in source.tables:
        where = f"{table.source_schema}.{table.table}"
        check = f"{name} table {where}"
        quoted = tsql_name(table.source_schema, table.table)  # OBJECT_ID parses the name: quote its parts
        if src.object_id(quoted) is None:
            findings.append(
                Finding(
                    check,
                    False,
                    f"{where} does not exist in {database}",
                    f"fix schema/table of {where} in the YAML of source {source.name}",
                )
            )
            continue
        pipeline = TablePipeline(source, table, lambda: src, _no_warehouse, _NoHints())
        try:
            instance = pipeline.instances()[-1]
            pipeline.mappings(instance.name)
        except (CdcError, UnsupportedTypeError) as exc:
            # The messages name their remedy; for a table without CDC it is the exact enable call.
            fix = enable_table_call(table) if isinstance(exc, TableNotCapturedError) else str(exc)
            findings.append(Finding(check, False, _first_line(exc), fix))
            continue
        objects = (tsql_name("cdc", f"{instance.name}_CT"), quoted)  # as HAS_PERMS_BY_NAME and GRANT take them
        missing = [obj for obj, ok in zip(objects, src.can_select(*objects), strict=True) if not ok]
        findings.append(
            Finding(
                check,
                not missing,
                f"captured by {instance.name}"
                + (f"; login {login} cannot SELECT {', '.join(missing)}" if missing else "; readable"),
                "; ".join(f"GRANT SELECT ON {obj} TO <user of login {login}>" for obj in missing),
            )
        )
    return findings


def _check_change_reader(name: str, source: SourceConfig, connect: Callable[[], Any]) -> Finding:
    """The change-table read's own connection (mssql-python): its native library loads, it logs in.

    A driver that cannot load fails the check under ``change_reader: mssql-python`` (every stream
    window would fail) and is a warning under ``auto`` (windows are read with pymssql: slower,
    nothing stops)."""
    from include.cdc_pipeline.errors import DriverLoadError

    check = f"{name} change reader (mssql-python) connects"
    try:
        connect().close()
    except DriverLoadError as exc:
        auto = source.change_reader == ChangeReader.AUTO
        return Finding(
            check,
            auto,
            (f"change_reader auto reads with pymssql instead (slower): {exc}" if auto else str(exc)),
            "install the OS packages of packages.txt (the image installs them; locally `make setup`), "
            "or set change_reader: pymssql",
            warning=auto,
        )
    except Exception as exc:
        return Finding(
            check,
            False,
            _first_line(exc),
            f"for TLS errors see the connection's extra `encryption` and `change_reader_options` of source "
            f"{source.name} (README Connections); or set change_reader: pymssql",
        )
    return Finding(check, True, f"change_reader {source.change_reader.value}")


def _no_warehouse() -> Any:
    raise AssertionError("the preflight's SQL Server checks never open Snowflake")


class _NoHints:
    def get(self) -> None:
        return None

    def set(self, value: dict[str, Any]) -> None:
        raise AssertionError("the preflight writes no hint")


# -- Snowflake -------------------------------------------------------------------------------------
def check_snowflake(source: SourceConfig, open_warehouse: Callable[[], Any]) -> list[Finding]:
    """Reachable, a warehouse in use, and create + insert in every target schema (probe table)."""
    from include.cdc_pipeline.sql import sf_ident, sf_table

    name = f"{source.name}: Snowflake"
    t = source.target
    try:
        wh = open_warehouse()
        wh.execute("SELECT 1")
        # The login's answer (sessionInfo) names the session's warehouse and role; the connector keeps
        # them. The warehouse is None when it is not set or the role may not use it.
        role, warehouse = wh.connection.role, wh.connection.warehouse
    except Exception as exc:
        return _unreachable(
            name,
            exc,
            f"check connection `{source.snowflake_conn_id}` (account, user, password or key, role, warehouse)",
        )
    findings = [Finding(f"{name} reachable", True, f"role {role}")]
    findings.append(
        Finding(
            f"{name} warehouse in use",
            bool(warehouse),
            f"warehouse {warehouse}" if warehouse else "no current warehouse (unset, or the role may not use it)",
            ""
            if warehouse
            else f"set `warehouse` in connection `{source.snowflake_conn_id}` and "
            f"GRANT USAGE ON WAREHOUSE <warehouse> TO ROLE {role}",
        )
    )
    for schema in dict.fromkeys([t.staging_schema, t.raw_schema, t.control_schema]):
        probe = sf_table(t.database, schema, PROBE_TABLE)
        try:
            wh.execute(f"CREATE DATABASE IF NOT EXISTS {sf_ident(t.database)}")
            wh.execute(f"CREATE SCHEMA IF NOT EXISTS {sf_table(t.database, schema)}")
            wh.execute(f"CREATE OR REPLACE TRANSIENT TABLE {probe} (CHECKED_AT TIMESTAMP_NTZ)")
            wh.execute(f"INSERT INTO {probe} SELECT SYSDATE()")
            (rows,) = wh.execute(f"SELECT COUNT(*) FROM {probe}")[0]
            wh.execute(f"DROP TABLE IF EXISTS {probe}")
            findings.append(
                Finding(f"{name} create + insert in {t.database}.{schema}", rows == 1, f"probe rows {rows}")
            )
        except Exception as exc:
            findings.append(
                Finding(
                    f"{name} create + insert in {t.database}.{schema}",
                    False,
                    _first_line(exc),
                    f"GRANT USAGE ON DATABASE {t.database} TO ROLE {role}; GRANT USAGE, CREATE TABLE, CREATE STAGE ON "
                    f"SCHEMA {t.database}.{schema} TO ROLE {role} (or create the schema and grant OWNERSHIP)",
                )
            )
    return findings


def check_access(sources: Sequence[SourceConfig], open_connection: Callable[[], Any]) -> Finding:
    """The account against the access spec (include/cdc_pipeline/governance/check.py)."""
    from include.cdc_pipeline.governance.check import check_access as compare

    found = compare(sources, open_connection)
    return Finding(found.check, found.ok, found.detail, found.fix)


# -- SMTP, salt ------------------------------------------------------------------------------------
def check_smtp(conn_id: str) -> Finding:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    try:
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            ok, message = hook.test_connection()
    except Exception as exc:
        ok, message = False, _first_line(exc)
    return Finding(
        f"SMTP `{conn_id}` answers",
        ok,
        message,
        "" if ok else f"check connection `{conn_id}` (host, port, TLS/SSL, login): alerts cannot be sent",
    )


def check_salt(sources: Sequence[SourceConfig], get_salt: Callable[[], str | None], salt_variable: str) -> Finding:
    hashing = sorted(f"{s.name}.{t.name}" for s in sources for t in s.tables if t.hash_columns)
    check = f"Variable `{salt_variable}` set"
    if not hashing:
        return Finding(check, True, "not needed: no table has hash_columns")
    try:
        salt = get_salt()
    except Exception as exc:
        salt, error = None, _first_line(exc)
    else:
        error = "not set"
    return Finding(
        check,
        bool(salt),
        f"set ({len(salt)} characters)" if salt else f"{error}; needed by {', '.join(hashing)}",
        ""
        if salt
        else f"set the Airflow Variable `{salt_variable}` (deployment env var "
        f"AIRFLOW_VAR_{salt_variable.upper()} or the secrets backend's variables prefix) to a long random secret; "
        "never change it once data is loaded",
    )


# -- pools -----------------------------------------------------------------------------------------
def metadata_pools() -> dict[str, int]:
    """Pool name → slots, from the metadata DB (raises in a task process: Airflow 3 blocks it)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        return {p.pool: p.slots for p in session.query(Pool).all()}  # type: ignore[misc]  # pool: nullable column, never NULL


def api_pools(conn_id: str = API_CONN_ID) -> dict[str, int]:
    """Pool name → slots through Airflow's REST API (``GET /api/v2/pools``)."""
    import requests
    from airflow.sdk import Connection

    conn = Connection.get(conn_id)
    base = (conn.host or "").rstrip("/")
    if conn.port and "://" in base and base.count(":") == 1:
        base = f"{base}:{conn.port}"
    token = conn.password
    if conn.login:
        reply = requests.post(
            f"{base}/auth/token", json={"username": conn.login, "password": conn.password}, timeout=30
        )
        reply.raise_for_status()
        token = reply.json()["access_token"]
    reply = requests.get(
        f"{base}/api/v2/pools", params={"limit": 1000}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    reply.raise_for_status()
    return {p["name"]: p["slots"] for p in reply.json()["pools"]}


def read_pools() -> dict[str, int]:
    """The pools from the metadata DB when this process may read it, else through the REST API."""
    try:
        return metadata_pools()
    except RuntimeError as exc:
        log.info("metadata DB not readable from here (%s): reading pools through connection %s", exc, API_CONN_ID)
    try:
        return api_pools()
    except Exception as exc:
        raise RuntimeError(
            f"cannot read the pools: no metadata-DB access in an Airflow 3 task, and the REST API failed "
            f"({_first_line(exc)}). Define connection `{API_CONN_ID}` (host: the Airflow API base URL; password: an "
            "API token, or login + password), or run `python -m include.cdc_pipeline.orchestration.preflight_dag` "
            "where "
            "`airflow pools list` works"
        ) from exc


def check_pools(required: dict[str, list[str]], existing: Callable[[], dict[str, int]]) -> list[Finding]:
    try:
        pools = existing()
    except Exception as exc:
        return [Finding("pools readable", False, _first_line(exc), str(exc).rsplit(". ", 1)[-1])]
    findings = []
    for pool, tasks in sorted(required.items()):
        slots = pools.get(pool)
        shown = ", ".join(tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
        ok = bool(slots and slots > 0)
        detail = f"{slots} slots; used by {shown}" if slots is not None else f"missing; used by {shown}"
        fix = (
            ""
            if ok
            else f"airflow pools set {pool} <slots> '<description>' (or Admin → Pools in the Airflow UI, or the "
            "REST API): a task whose pool does not exist is never scheduled, silently"
        )
        findings.append(Finding(f"pool `{pool}` exists with slots", ok, detail, fix))
    return findings


# -- all together ----------------------------------------------------------------------------------
def run_preflight(
    paths: Iterable[Path] | None = None,
    *,
    required_pools: Callable[[Sequence[tuple[Path, SourceConfig]]], dict[str, list[str]]],
    salt_variable: str,
    get_salt: Callable[[], str | None],
    pools: Callable[[], dict[str, int]] = read_pools,
) -> list[Finding]:
    """Every check for every source config; never stops at the first failure. ``required_pools``
    (pool -> the tasks that use it), ``salt_variable`` and ``get_salt`` come from the Airflow wiring
    (include/cdc_pipeline/orchestration/preflight_dag.py)."""
    from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

    from include.cdc_pipeline.snowflake import CdcSnowflakeHook
    from include.cdc_pipeline.source import CdcSource, change_reader_connect
    from include.cdc_pipeline.warehouse import Warehouse

    findings: list[Finding] = []
    sources: list[tuple[Path, SourceConfig]] = []
    for path in paths if paths is not None else source_files():
        try:
            sources.append((path, load_source_config(path)))
        except ConfigError as exc:
            findings.append(Finding(f"config {path.name} valid", False, str(exc), "fix the field named above"))
    for _, source in sources:

        def open_source(s: SourceConfig = source) -> CdcSource:
            hook = MsSqlHook(mssql_conn_id=s.mssql_conn_id)
            return CdcSource(hook.get_conn(), lambda: change_reader_connect(hook, s.change_reader_options))

        def open_warehouse(s: SourceConfig = source) -> Warehouse:
            return Warehouse(CdcSnowflakeHook(snowflake_conn_id=s.snowflake_conn_id).get_conn())

        findings += check_sqlserver(source, open_source)
        findings += check_snowflake(source, open_warehouse)
    if sources:  # roles, grants, PII tags against include/config/access.yaml (account-wide: once)
        first: SourceConfig = sources[0][1]
        findings.append(check_access([s for _, s in sources], lambda: _access_connection(first)))
    for conn_id in dict.fromkeys(s.smtp_conn_id for _, s in sources):
        findings.append(check_smtp(conn_id))
    findings.append(check_salt([s for _, s in sources], get_salt, salt_variable))
    findings += check_pools(required_pools(sources), pools)
    return findings


def report(findings: Sequence[Finding]) -> str:
    """A plain-text report: one line per check, the fix under each failure, a verdict last."""
    lines = []
    for f in findings:
        lines.append(f"{'FAIL' if not f.ok else 'WARN' if f.warning else 'ok  '}  {f.check}: {f.detail}")
        if (not f.ok or f.warning) and f.fix:
            lines.append(f"      fix: {f.fix}")
    failed = [f for f in findings if not f.ok]
    warned = [f for f in findings if f.ok and f.warning]
    lines.append(
        f"preflight: {len(findings) - len(failed)} of {len(findings)} checks passed"
        + (f" ({len(warned)} with a warning: {', '.join(f.check for f in warned)})" if warned else "")
        + (f"; FAILED: {', '.join(f.check for f in failed)}" if failed else "")
    )
    return "\n".join(lines)


def as_dicts(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]


def _access_connection(source: SourceConfig) -> Any:
    """The connection the access check reads grants with: the access spec's ``check_conn_id`` (a
    role that may read every grant), else the source's own Snowflake connection."""
    from include.cdc_pipeline.governance.spec import load_access_spec
    from include.cdc_pipeline.snowflake import CdcSnowflakeHook

    conn_id = load_access_spec().check_conn_id or source.snowflake_conn_id
    return CdcSnowflakeHook(snowflake_conn_id=conn_id).get_conn()
