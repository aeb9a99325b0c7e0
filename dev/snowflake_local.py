"""Local Snowflake: one persistent fakesnow HTTP server that every local process shares.

Why a server of our own instead of ``fakesnow -s``: the stock server ignores ``-d`` and keeps
everything in memory, and the per-session ``FAKESNOW_DB_PATH`` gives each login its own DuckDB
instance (so a second login cannot open the files). Airflow task processes, dbt and the tests all
need to see the *same* databases, across restarts. So this module serves fakesnow's Starlette app
around ONE shared ``FakeSnow(db_path=DIR)`` and additionally:

- re-attaches every ``<DB>.db`` file found in ``DIR`` at start-up, so data survives a restart even
  for clients that log in without a database and use fully-qualified names;
- keeps fakesnow's global metadata (stages, file formats, VARCHAR lengths, comments) in
  ``DIR/_fs_global.db`` instead of memory, and the internal-stage files in ``DIR/stages``;
- bounds fakesnow's per-query results cache, which otherwise keeps every result set for the
  life of the process (a slow memory leak for a long-running shared server);
- takes an exclusive lock on ``DIR`` so two servers can never open the same DuckDB files;
- fixes what the pipeline trips over in fakesnow 0.12.1: ``REMOVE``/``RM`` and ``LIST @stage/path``
  on internal stages, NULL timestamps sent to clients as 1970-01-01, and ``CREATE DATABASE IF NOT
  EXISTS`` failing once a table depends on a fakesnow macro (see docs/local-snowflake.md);
- is as strict as Snowflake where fakesnow is kinder (dev/snowflake_strict.py): Parquet binary read
  as text unless ``BINARY_AS_TEXT = FALSE``, VARCHAR/BINARY size limits at COPY, the session time
  zone America/Los_Angeles, and ``CREATE DATABASE`` refused to roles without the account privilege.

CLI::

    python -m dev.snowflake_local start|stop|status|serve [--dir D] [--port P] [--host H]

``start`` runs ``serve`` detached in its own process group and waits for a real login +
``SELECT 1``; ``stop`` ends that process group by the pid recorded in ``DIR/server.pid``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from dev import procs
from dev import snowflake_access as access
from dev import snowflake_strict as strict
from dev.procs import alive as pid_alive

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = int(os.environ.get("CDC_LOCAL_SNOWFLAKE_PORT", "8765"))
DEFAULT_DIR = Path(os.environ.get("CDC_LOCAL_DIR", str(ROOT / ".local"))) / "snowflake"

# fakesnow accepts any credentials; these only make logs and connection definitions readable.
ACCOUNT = "fakesnow"
USER = "local"
PASSWORD = "local"  # noqa: S105 - the local emulator accepts anything

# Client timeouts. A server-side 500 (fakesnow bug or unsupported SQL) makes the connector retry
# the request until network_timeout expires (forever when unset), and a login retries until
# login_timeout: both must be finite locally. socket_timeout bounds one HTTP request: it must
# exceed the longest single statement, or the connector times out and *re-sends* the statement.
NETWORK_TIMEOUT = 60
LOGIN_TIMEOUT = 30
SOCKET_TIMEOUT = 600

PID_FILE = "server.pid"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
START_LOCK_FILE = "start.lock"
GLOBAL_DB_FILE = "_fs_global.db"
STAGE_DIR = "stages"
RESULTS_CACHE_SIZE = 512
START_TIMEOUT = 60.0
STOP_GRACE = 10.0

_SIMPLE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

log = logging.getLogger("dev.snowflake_local")


class LocalSnowflakeError(RuntimeError):
    """The local server could not be started, reached or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    """What ``DIR/server.pid`` records: enough for any process to find and stop the server."""

    pid: int
    port: int
    host: str
    dir: str


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


def connection_params(
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    database: str | None = None,
    schema: str | None = None,
    *,
    network_timeout: int = NETWORK_TIMEOUT,
    login_timeout: int = LOGIN_TIMEOUT,
    socket_timeout: int = SOCKET_TIMEOUT,
) -> dict[str, Any]:
    """Keyword arguments for ``snowflake.connector.connect`` that reach the local server.

    The timeouts are not optional decoration: without them a server error hangs the client.
    """
    params: dict[str, Any] = {
        "account": ACCOUNT,
        "user": USER,
        "password": PASSWORD,
        "host": host,
        "port": port,
        "protocol": "http",
        "network_timeout": network_timeout,
        "login_timeout": login_timeout,
        "socket_timeout": socket_timeout,
        # Out-of-band telemetry would try to reach Snowflake's public endpoint.
        "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    }
    if database:
        params["database"] = database
    if schema:
        params["schema"] = schema
    return params


def airflow_connection(
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    database: str = "ANALYTICS",
    schema: str = "RAW",
    warehouse: str = "LOCAL_WH",
    role: str = "SYSADMIN",
) -> dict[str, Any]:
    """The Airflow connection (JSON form, type snowflake) that reaches the local server.

    One definition for the local stack, the test fixtures and the benchmarks: the extras the
    project's hook forwards (``protocol``, timeouts) are what make it reach fakesnow safely.
    """
    return {
        "conn_type": "snowflake",
        "login": USER,
        "password": PASSWORD,
        "schema": schema,
        "extra": {
            "account": ACCOUNT,
            "database": database,
            "warehouse": warehouse,
            "role": role,
            "host": host,
            "port": port,
            "protocol": "http",
            "network_timeout": NETWORK_TIMEOUT,
            "login_timeout": LOGIN_TIMEOUT,
            # Bounds one statement; shorter makes the connector re-send a still-running one.
            "socket_timeout": SOCKET_TIMEOUT,
        },
    }


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_ready(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: int = 5) -> bool:
    """True when a real login and ``SELECT 1`` succeed: an open port alone proves nothing."""
    if not _port_open(host, port):
        return False
    import snowflake.connector

    try:
        conn = snowflake.connector.connect(
            **connection_params(port, host, network_timeout=timeout, login_timeout=timeout, socket_timeout=timeout)
        )
    except Exception:  # any failure means "not ready"; the caller decides what to do
        return False
    try:
        with contextlib.closing(conn.cursor()) as cur:
            row = cur.execute("SELECT 1").fetchone()  # type: ignore[union-attr]
            return row is not None and row[0] == 1
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------


def _pid_path(db_dir: Path) -> Path:
    return db_dir / PID_FILE


def read_pid_file(db_dir: Path | str) -> ServerInfo | None:
    """The recorded server, or None when there is no (readable) pid file."""
    path = _pid_path(Path(db_dir))
    try:
        data = json.loads(path.read_text())
        return ServerInfo(pid=int(data["pid"]), port=int(data["port"]), host=str(data["host"]), dir=data["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_pid_file(info: ServerInfo) -> None:
    path = _pid_path(Path(info.dir))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(info)))
    tmp.replace(path)


def _is_our_server(pid: int) -> bool:
    """Guard against pid reuse: only signal a process that really is a ``serve`` of this module."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc: trust the pid file
    return b"dev.snowflake_local" in cmdline and b"serve" in cmdline


def _log_tail(db_dir: Path, lines: int = 30) -> str:
    try:
        return "\n".join((db_dir / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(
    host: str, port: int, timeout: float = START_TIMEOUT, pid: int | None = None, db_dir: Path | None = None
) -> None:
    """Block until the server answers a login + ``SELECT 1``, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    import snowflake.connector  # noqa: F401 - ~3 s cold: import it while the server boots

    while True:
        # liveness first: another process answering on the port must not pass for our server
        if pid is not None and not pid_alive(pid):
            tail = _log_tail(db_dir) if db_dir else ""
            raise LocalSnowflakeError(f"local Snowflake (pid {pid}) exited during start-up:\n{tail}")
        if is_ready(host, port, timeout=5):
            return
        if time.monotonic() >= deadline:
            raise LocalSnowflakeError(f"local Snowflake on {host}:{port} not ready after {timeout:.0f}s")
        time.sleep(0.1)


def start(
    db_dir: Path | str = DEFAULT_DIR,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    timeout: float = START_TIMEOUT,
) -> int:
    """Start the server detached (own process group) and return its pid once it is ready.

    Idempotent: when the pid file names a live server, wait for it to be ready and return its pid.
    """
    return _start(db_dir, port, host, timeout)[0]


def _start(db_dir: Path | str, port: int, host: str, timeout: float) -> tuple[int, bool]:
    """(pid, whether this call launched it)."""
    db_dir = Path(db_dir).resolve()
    db_dir.mkdir(parents=True, exist_ok=True)
    # Serialise concurrent `start`s on one directory (e.g. `make demo` and a test run): the
    # second one waits, then finds the first server in the pid file instead of racing it.
    with open(db_dir / START_LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start_locked(db_dir, port, host, timeout)


def _start_locked(db_dir: Path, port: int, host: str, timeout: float) -> tuple[int, bool]:
    info = read_pid_file(db_dir)
    if info is not None:
        if pid_alive(info.pid) and _is_our_server(info.pid):
            if info.port != port:
                log.warning("local Snowflake already runs for %s on port %s (asked: %s)", db_dir, info.port, port)
            wait_ready(info.host, info.port, timeout, pid=info.pid, db_dir=db_dir)
            return info.pid, False
        _pid_path(db_dir).unlink(missing_ok=True)  # stale

    if _port_open(host, port):
        raise LocalSnowflakeError(f"port {host}:{port} is already in use by another process")

    args = ["serve", "--dir", str(db_dir), "--port", str(port), "--host", host]
    proc = procs.spawn(procs.python_module("dev.snowflake_local", *args), procs.project_env(), db_dir / LOG_FILE)
    # serve writes the same record itself; writing it here closes the window in which a second
    # `start` would not see the first one.
    _write_pid_file(ServerInfo(pid=proc.pid, port=port, host=host, dir=str(db_dir)))
    try:
        wait_ready(host, port, timeout, pid=proc.pid, db_dir=db_dir)
    except BaseException:
        procs.stop_pid(proc.pid, grace=2.0)
        proc.wait(timeout=5)
        _pid_path(db_dir).unlink(missing_ok=True)
        raise
    return proc.pid, True


def stop_pid(pid: int, grace: float = STOP_GRACE) -> bool:
    """Stop the server whose pid the caller got from :func:`start`. True when it was running."""
    if not (pid_alive(pid) and _is_our_server(pid)):
        return False
    try:
        procs.stop_pid(pid, grace)
    except procs.StopError as exc:
        raise LocalSnowflakeError(f"local Snowflake (pid {pid}) did not exit: {exc}") from exc
    return True


def stop(db_dir: Path | str = DEFAULT_DIR, grace: float = STOP_GRACE) -> bool:
    """Stop the server recorded in ``DIR/server.pid``. Idempotent; True when one was stopped."""
    db_dir = Path(db_dir).resolve()
    info = read_pid_file(db_dir)
    if info is None:
        return False
    stopped = stop_pid(info.pid, grace)
    _pid_path(db_dir).unlink(missing_ok=True)
    return stopped


def status(db_dir: Path | str = DEFAULT_DIR, port: int | None = None) -> tuple[bool, ServerInfo | None]:
    """(ready, recorded server). Ready means a login + ``SELECT 1`` succeeded."""
    db_dir = Path(db_dir).resolve()
    info = read_pid_file(db_dir)
    if info is not None and not pid_alive(info.pid):
        info = None
    host = info.host if info else DEFAULT_HOST
    use_port = port if port is not None else (info.port if info else DEFAULT_PORT)
    return is_ready(host, use_port), info


# --------------------------------------------------------------------------------------------
# Server side
# --------------------------------------------------------------------------------------------


class _BoundedDict(dict):  # type: ignore[type-arg]
    """fakesnow's results cache, capped: keeps the newest ``maxlen`` results (dicts keep order)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.maxlen:
            del self[next(iter(self))]


def _make_fakesnow(db_dir: Path, results_cache_size: int = RESULTS_CACHE_SIZE) -> Any:
    """A FakeSnow whose databases, global metadata and stage files all live under ``db_dir``."""
    from fakesnow import info_schema, macros
    from fakesnow.instance import GLOBAL_DATABASE_NAME, FakeSnow
    from fakesnow.transforms import show

    _patch_idempotent_macros()
    fs = FakeSnow(db_path=db_dir)
    fs.results_cache = _BoundedDict(results_cache_size)
    duck = fs.duck_conn
    # Snowflake's default session time zone, not fakesnow's UTC (dev/snowflake_strict.py).
    duck.execute(f"SET GLOBAL TimeZone = '{strict.DEFAULT_TIMEZONE}'")
    # Global metadata (stages, file formats, VARCHAR lengths, comments) defaults to memory.
    global_file = str(db_dir / GLOBAL_DB_FILE).replace("'", "''")
    duck.execute(f"DETACH {GLOBAL_DATABASE_NAME}")
    duck.execute(f"ATTACH '{global_file}' AS {GLOBAL_DATABASE_NAME}")
    duck.execute(info_schema.fs_global_creation_sql())
    duck.execute(show.fs_global_creation_sql())
    # fakesnow only attaches a database file on CREATE DATABASE or on a login naming it; attach
    # them all so fully-qualified names work for every client after a restart.
    for db_file in sorted(db_dir.glob("*.db")):
        name = db_file.stem
        if db_file.name == GLOBAL_DB_FILE:
            continue
        if not _SIMPLE_IDENT.match(name):
            log.warning("not attaching %s: unusual database name", db_file)
            continue
        path = str(db_file).replace("'", "''")
        duck.execute(f"ATTACH IF NOT EXISTS '{path}' AS \"{name}\"")
        duck.execute(info_schema.per_db_creation_sql(name))
        duck.execute(macros.creation_sql(name))
        log.info("attached database %s from %s", name, db_file)
    return fs


def _patch_null_timestamps() -> None:
    """Fix fakesnow 0.12.1 returning NULL timestamps as 1970-01-01 to clients, and send zoned
    timestamps in UTC.

    ``fakesnow.arrow.timestamp_to_sf_struct`` builds the epoch/fraction struct without a validity
    mask, so the connector decodes a NULL TIMESTAMP_* as epoch 0. Storage and SQL (``IS NULL``) are
    right; only the wire format is wrong. Re-wrap the struct with the null mask of the input.
    It also only knows UTC-zoned values; with DuckDB in Snowflake's default session zone
    (America/Los_Angeles, dev/snowflake_strict.py) TIMESTAMP_TZ values arrive zoned: convert them
    (same instant; the offset is not kept locally, a documented difference).
    """
    import pyarrow as pa
    from fakesnow import arrow

    original = arrow.timestamp_to_sf_struct
    if getattr(original, "_null_mask_fix", False):
        return

    def timestamp_to_sf_struct(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
        if isinstance(ts, pa.ChunkedArray):
            ts = ts.combine_chunks()
        if isinstance(ts.type, pa.TimestampType) and ts.type.tz and ts.type.tz != "UTC":
            ts = ts.cast(pa.timestamp(ts.type.unit, tz="UTC"))
        struct = original(ts)
        if ts.null_count == 0:
            return struct
        fields = [struct.type.field(i) for i in range(struct.type.num_fields)]
        children = [struct.field(i) for i in range(struct.type.num_fields)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=ts.is_null())

    timestamp_to_sf_struct._null_mask_fix = True  # type: ignore[attr-defined]
    arrow.timestamp_to_sf_struct = timestamp_to_sf_struct


# REMOVE/RM and LIST/LS of a path inside a named internal stage: fakesnow 0.12.1 cannot parse
# REMOVE, and reads a LIST path as part of the stage name. PATTERN= and table stages (@%t) are
# left to fakesnow (which reports them as unsupported).
_STAGE_PATH_CMD = re.compile(
    r"^\s*(?P<cmd>REMOVE|RM|LIST|LS)\s+@(?P<stage>[A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*){0,2})"
    r"(?P<path>/[^\s;']*)?\s*;?\s*$",
    re.IGNORECASE,
)


def _text_column(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": "text",
        "byteLength": 16777216,
        "length": 16777216,
        "scale": None,
        "precision": None,
        "collation": None,
    }


def _stage_path_command(match: re.Match[str], conn: Any) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Run REMOVE/LIST on ``@stage[/path]`` against the stage directory: (rowtype, rows).

    Names are matched by prefix of the path inside the stage, as Snowflake does; output rows and
    their order follow Snowflake (REMOVE: name, result; LIST: name, size, md5, last_modified).
    """
    import hashlib
    from email.utils import formatdate

    from fakesnow.transforms import stage

    cmd = match["cmd"].upper()
    catalog, schema, name = stage.parts_from_var(match["stage"], conn.database, conn.schema)
    fqname = f"{catalog}.{schema}.{name}"
    sql = (
        "SELECT 1 FROM _fs_global._fs_information_schema._fs_stages"
        " WHERE database_name = ? AND schema_name = ? AND name = ?"
    )
    cursor = conn._duck_conn.cursor()  # a fresh cursor: never disturb the session's own state
    try:
        if cursor.execute(sql, [catalog, schema, name]).fetchone() is None:
            raise stage.not_found_error(fqname)
    finally:
        cursor.close()
    root = Path(stage.internal_dir(fqname))
    prefix = (match["path"] or "/").lstrip("/")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix().startswith(prefix))
    shown = [f"{name.lower()}/{p.relative_to(root).as_posix()}" for p in files]
    if cmd in ("REMOVE", "RM"):
        for p in files:
            p.unlink()
        return [_text_column("name"), _text_column("result")], [[n, "removed"] for n in shown]
    rows: list[list[Any]] = []
    for p, n in zip(files, shown, strict=True):
        st = p.stat()
        md5 = hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
        rows.append([n, str(st.st_size), md5, formatdate(st.st_mtime, usegmt=True)])
    size = {**_text_column("size"), "type": "fixed", "byteLength": None, "length": None}
    size.update(precision=38, scale=0)
    return [_text_column("name"), size, _text_column("md5"), _text_column("last_modified")], rows


# Session token -> the role the session acts as (see dev/snowflake_strict.py: CREATE DATABASE).
_session_roles: dict[str, str] = {}
# Roles, grants, tags and masking (dev/snowflake_access.py); build_app loads it from the data directory.
_access = access.AccessModel()


def _error_response(errno: int, sqlstate: str, msg: str) -> Any:
    """A SQL error as Snowflake's query endpoint returns it (the connector raises ProgrammingError)."""
    from starlette.responses import JSONResponse

    code = f"{errno:06d}"
    data = {"errorCode": code, "sqlState": sqlstate}
    return JSONResponse({"data": data, "code": code, "message": msg, "success": False})


def _rows_response(conn: Any, rowtype: list[dict[str, Any]], rows: list[list[Any]]) -> Any:
    import uuid

    from fakesnow import statement_type
    from starlette.responses import JSONResponse

    return JSONResponse(
        {
            "data": {
                "parameters": [{"name": "TIMEZONE", "value": strict.DEFAULT_TIMEZONE}],
                "rowtype": rowtype,
                "total": len(rows),
                "queryId": str(uuid.uuid4()),
                "statementTypeId": statement_type.SELECT,
                "finalDatabaseName": conn.database,
                "finalSchemaName": conn.schema,
                "queryResultFormat": "json",
                "rowset": rows,
            },
            "success": True,
        }
    )


async def _login_request(request: Any) -> Any:
    """fakesnow's login, plus the session's warehouse and role in ``sessionInfo``, and the role
    remembered for the session rules of dev/snowflake_strict.py.

    Snowflake's login answer names the session's current warehouse and role; the connector keeps
    them as ``connection.warehouse`` / ``connection.role`` (None when the role may not use the
    warehouse). fakesnow omits both; it has no access control, so the requested ones are in use.
    """
    import fakesnow.server as fs_server
    from starlette.responses import JSONResponse

    response = await fs_server.login_request(request)
    payload = json.loads(bytes(response.body))
    with contextlib.suppress(Exception):
        _session_roles[payload["data"]["token"]] = strict.normalise_role(request.query_params.get("roleName"))
    info = payload.get("data", {}).get("sessionInfo")
    if isinstance(info, dict):
        for param, key in (("warehouse", "warehouseName"), ("roleName", "roleName")):
            value = request.query_params.get(param)
            info[key] = value.upper() if value and not value.startswith('"') else value
    return JSONResponse(payload, status_code=response.status_code)


async def _query_request(request: Any) -> Any:
    """fakesnow's query endpoint, plus REMOVE/LIST on stage paths (see ``_STAGE_PATH_CMD``) and
    the session rules of dev/snowflake_strict.py (roles, ``ALTER SESSION SET TIMEZONE``)."""
    import gzip

    import fakesnow.server as fs_server
    import snowflake.connector.errors
    from starlette.concurrency import run_in_threadpool

    STATS["queries"] += 1
    body = await request.body()  # Starlette caches it: fakesnow's handler reads it again
    try:
        raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        sql = json.loads(raw).get("sqlText") or ""
        token = fs_server.to_token(request)
        conn = fs_server.sessions.get(token)
    except Exception:
        sql, token, conn = "", None, None
    if conn is None:
        return await fs_server.query_request(request)
    if (role := strict.use_role(sql)) is not None:
        _session_roles[token] = role  # and fakesnow accepts the statement
    if denied := strict.create_database_denied(sql, _session_roles.get(token, strict.normalise_role(None)), ACCOUNT):
        return _error_response(**denied)
    session = access.Session(_session_roles.get(token, strict.normalise_role(None)), conn.database, conn.schema)
    answer = await run_in_threadpool(_access.handle, sql, session, conn)
    if answer is not None and answer.error is not None:
        errno, sqlstate, msg = answer.error
        return _error_response(errno, sqlstate, msg)
    if answer is not None and answer.sql is None:
        rows = [[None if v is None else str(v) for v in row] for row in answer.rows]
        return _rows_response(conn, [_text_column(c) for c in answer.columns], rows)
    if answer is not None:  # masked columns: fakesnow runs the rewritten statement
        payload = json.loads(raw)
        payload["sqlText"] = answer.sql
        data = json.dumps(payload).encode()
        request._body = gzip.compress(data) if request.headers.get("Content-Encoding") == "gzip" else data
    if access.creates_object(sql):
        response = await fs_server.query_request(request)
        if json.loads(bytes(response.body)).get("success"):
            _access.created(sql, session)
        return response
    if (zone := strict.session_timezone(sql)) is not None:
        try:
            await run_in_threadpool(conn._duck_conn.execute, f"SET TimeZone = '{zone}'")
        except Exception:
            return _error_response(2001, "22023", f"invalid value [{zone}] for parameter 'TIMEZONE'")
        return _rows_response(conn, [_text_column("status")], [["Statement executed successfully."]])
    match = _STAGE_PATH_CMD.match(sql)
    if match is None or (match["cmd"].upper() in ("LIST", "LS") and not match["path"]):
        return await fs_server.query_request(request)
    try:
        rowtype, rows = await run_in_threadpool(_stage_path_command, match, conn)
    except snowflake.connector.errors.Error as e:
        return _error_response(e.errno, e.sqlstate, e.msg)
    return _rows_response(conn, rowtype, rows)


# Statements the server answered since it started (benchmarks read them: GET /cdc-local/stats).
STATS = {"queries": 0}


async def _stats_request(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(dict(STATS))


def query_count(port: int, host: str = DEFAULT_HOST) -> int:
    """How many statements the server on ``port`` has answered (``STATS``)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/cdc-local/stats", timeout=10) as response:
        return int(json.loads(response.read())["queries"])


def _build_starlette(fs_app: Any) -> Any:
    """fakesnow's routes with the query and login endpoints wrapped (:func:`_query_request`,
    :func:`_login_request`), plus the statement counter of :data:`STATS`."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    wrapped = {"/queries/v1/query-request": _query_request, "/session/v1/login-request": _login_request}
    routes = [Route(r.path, wrapped[r.path], methods=["POST"]) if r.path in wrapped else r for r in fs_app.routes]
    routes.append(Route("/cdc-local/stats", _stats_request, methods=["GET"]))
    return Starlette(debug=False, routes=routes)


def _patch_idempotent_macros() -> None:
    """Make fakesnow's per-database macro creation safe on an existing database file.

    fakesnow runs ``CREATE OR REPLACE MACRO <db>._fs_to_timestamp …`` (and others) whenever a
    database is attached: on ``CREATE DATABASE [IF NOT EXISTS]`` and on a login naming a database
    that is not attached yet. Once a table depends on one of them (``DEFAULT
    CURRENT_TIMESTAMP()::TIMESTAMP_NTZ`` does), DuckDB refuses the replace, so that statement fails
    with an HTTP 500 and, after a restart, the database could not be re-attached at all. The
    macros are stored in the database file, so "create if not exists" is equivalent.
    """
    from fakesnow import macros

    original = macros.creation_sql
    if getattr(original, "_idempotent_fix", False):
        return

    def creation_sql(catalog: str) -> str:
        return original(catalog).replace("CREATE OR REPLACE MACRO", "CREATE MACRO IF NOT EXISTS")

    creation_sql._idempotent_fix = True  # type: ignore[attr-defined]
    macros.creation_sql = creation_sql


def _patch_quoted_names() -> None:
    """Let fakesnow record the text lengths (and comments) of columns whose quoted names hold a
    single quote: it writes them into its information schema as SQL literals without doubling the
    quote, so ``CREATE TABLE t ("O'BRIEN" VARCHAR)`` failed with a parser error (HTTP 500), while
    Snowflake takes any character in a double-quoted identifier
    (docs.snowflake.com/en/sql-reference/identifiers-syntax). Likewise COPY INTO looks its target
    table up by an unquoted name (``"ORDER DETAILS"`` failed there)."""
    from fakesnow import copy_into, info_schema
    from sqlglot import exp

    if getattr(info_schema.insert_text_lengths_sql, "_quoted_names_fix", False):
        return
    lengths, comment = info_schema.insert_text_lengths_sql, info_schema.insert_table_comment_sql

    def q(text: Any) -> Any:
        return text.replace("'", "''") if isinstance(text, str) else text

    def insert_text_lengths_sql(catalog: str, schema: str, table: str, text_lengths: list[tuple[str, int]]) -> str:
        return lengths(q(catalog), q(schema), q(table), [(q(name), size) for name, size in text_lengths])

    def insert_table_comment_sql(catalog: str, schema: str, table: str, text: str) -> str:
        return comment(q(catalog), q(schema), q(table), q(text))

    def describe_table(
        table: exp.Table, duck_conn: Any, current_database: str | None, current_schema: str | None
    ) -> list[tuple[str, str]]:
        parts = (table.catalog or current_database, table.db or current_schema, table.name)
        name = ".".join(exp.to_identifier(p, quoted=True).sql(dialect="duckdb") for p in parts)
        return [(row[0], row[1]) for row in duck_conn.execute(f"DESCRIBE {name}").fetchall()]

    copy_into._describe_table = describe_table
    insert_text_lengths_sql._quoted_names_fix = True  # type: ignore[attr-defined]
    info_schema.insert_text_lengths_sql = insert_text_lengths_sql
    info_schema.insert_table_comment_sql = insert_table_comment_sql


def _patch_direct_describe() -> None:
    """Type a result by asking DuckDB to describe the statement it ran, not by parsing it again.

    fakesnow builds every result's row type from ``DESCRIBE <the DuckDB statement it ran>``, which
    it re-parses with sqlglot and passes through all of its ~70 Snowflake-to-DuckDB rewrites
    (statement already rewritten, so they change nothing): measured, 45 % of the server's CPU on a
    small SELECT and 15 % over the test suite. DuckDB describes the same statement, with the same
    parameters, on the same connection; what it cannot describe that way takes fakesnow's path
    (kept as ``_describe_through_fakesnow``; tests/snowflake_local compares the two).
    """
    from fakesnow.cursor import FakeSnowflakeCursor

    if hasattr(FakeSnowflakeCursor, "_describe_through_fakesnow"):
        return
    FakeSnowflakeCursor._describe_through_fakesnow = FakeSnowflakeCursor._describe_last_sql  # type: ignore[attr-defined]

    def describe_last_sql(self: Any) -> list[Any]:
        try:
            return describe_directly(self)
        except Exception:  # fakesnow's own path decides, and raises what it raises
            return list(self._describe_through_fakesnow())

    FakeSnowflakeCursor._describe_last_sql = describe_last_sql  # type: ignore[method-assign]


def describe_directly(cursor: Any) -> list[Any]:
    """DuckDB's ``DESCRIBE`` of the statement a fakesnow cursor ran last (its result's columns)."""
    return list(cursor._duck_conn.execute(f"DESCRIBE {cursor._last_sql}", cursor._last_params).fetchall())


def build_app(db_dir: Path | str) -> Any:
    """fakesnow's Starlette app, rewired to one persistent FakeSnow under ``db_dir``.

    fakesnow.server looks ``shared_fs`` and ``stage.LOCAL_BUCKET_PATH`` up at request time, so
    rebinding the module attributes is enough (one server per process).
    """
    import fakesnow.server as fs_server
    from fakesnow.transforms import stage

    db_dir = Path(db_dir).resolve()
    db_dir.mkdir(parents=True, exist_ok=True)
    stage_dir = db_dir / STAGE_DIR
    stage_dir.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        os.rmdir(stage.LOCAL_BUCKET_PATH)  # the empty temp dir fakesnow made at import
    stage.LOCAL_BUCKET_PATH = str(stage_dir)
    _patch_null_timestamps()
    _patch_quoted_names()
    _patch_direct_describe()
    strict.install_copy_rules()
    strict.install_sysdate_in_merge()
    global _access
    _access = access.AccessModel(db_dir)
    fs_server.shared_fs = _make_fakesnow(db_dir)
    return _build_starlette(fs_server.app)


@contextlib.contextmanager
def _dir_lock(db_dir: Path) -> Iterator[IO[str]]:
    """Exclusive lock on the data directory for the life of the server (released by the kernel)."""
    fh = open(db_dir / LOCK_FILE, "w")  # noqa: SIM115 - held for the lifetime of the server
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalSnowflakeError(f"another local Snowflake server already uses {db_dir}") from None
        yield fh
    finally:
        fh.close()


class _Terminated(Exception):
    """SIGTERM reached the serve process outside uvicorn's own signal handling."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(signum)


def serve(db_dir: Path | str = DEFAULT_DIR, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT; returns the process exit code."""
    import uvicorn

    # uvicorn handles SIGTERM/SIGINT itself, then restores the previous handlers and re-raises the
    # signal; with the default SIGTERM action that would kill us before the databases are
    # checkpointed. This handler turns that (and a SIGTERM during boot) into a clean return.
    signal.signal(signal.SIGTERM, _raise_terminated)
    db_dir = Path(db_dir).resolve()
    db_dir.mkdir(parents=True, exist_ok=True)
    _configure_logging()
    server: uvicorn.Server | None = None
    try:
        with _dir_lock(db_dir):
            me = ServerInfo(pid=os.getpid(), port=port, host=host, dir=str(db_dir))
            try:
                app = build_app(db_dir)
                _write_pid_file(me)
                config = uvicorn.Config(
                    app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=5
                )
                server = uvicorn.Server(config)
                server.run()
            finally:
                _shutdown_fakesnow()
                if read_pid_file(db_dir) == me:
                    _pid_path(db_dir).unlink(missing_ok=True)
    except _Terminated:
        pass
    return 0 if server is not None and server.started else 1


def _configure_logging() -> None:
    """Log this module like uvicorn does; fakesnow.server already writes through uvicorn's handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _shutdown_fakesnow() -> None:
    """Close every session and the DuckDB connection, so the database files are checkpointed."""
    import fakesnow.server as fs_server

    if not isinstance(fs_server.shared_fs.results_cache, _BoundedDict):
        return  # build_app never ran: nothing of ours to close
    for conn in list(fs_server.sessions.values()):
        with contextlib.suppress(Exception):
            conn.close()
    fs_server.sessions.clear()
    duck = fs_server.shared_fs.duck_conn
    with contextlib.suppress(Exception):
        names = duck.execute(
            "SELECT database_name FROM duckdb_databases() WHERE NOT internal AND path IS NOT NULL"
        ).fetchall()
        for (name,) in names:
            # Closing alone leaves the WAL un-checkpointed while any cursor object is still alive;
            # replay on the next start is safe, but a checkpointed file is self-contained.
            with contextlib.suppress(Exception):
                duck.execute(f'CHECKPOINT "{name}"')
    with contextlib.suppress(Exception):
        duck.close()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``start|stop|status|serve``; exit codes: 0 ok/ready, 1 not ready or failed."""
    parser = argparse.ArgumentParser(prog="python -m dev.snowflake_local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "serve"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"data directory (default {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"listen address (default {DEFAULT_HOST})")
    parser.add_argument("--timeout", type=float, default=START_TIMEOUT, help="start: readiness deadline (s)")
    args = parser.parse_args(argv)
    # The connector's vendored requests warns about urllib3/chardet versions on import: noise here.
    warnings.filterwarnings("ignore", message=r"urllib3 .* doesn't match a supported version")
    db_dir: Path = args.dir.resolve()
    port: int = args.port if args.port is not None else DEFAULT_PORT

    try:
        if args.command == "serve":
            return serve(db_dir, port, args.host)
        if args.command == "start":
            pid, launched = _start(db_dir, port, args.host, timeout=args.timeout)
            info = read_pid_file(db_dir)
            state = "started" if launched else "already running"
            shown_port = info.port if info else port
            print(f"local Snowflake {state}: pid={pid} port={shown_port} dir={db_dir}")
            return 0
        if args.command == "stop":
            stopped = stop(db_dir)
            print(f"local Snowflake {'stopped' if stopped else 'was not running'} (dir={db_dir})")
            return 0
        ready, info = status(db_dir, args.port)
        shown_port = args.port if args.port is not None else (info.port if info else port)
        print(
            f"local Snowflake {'ready' if ready else 'NOT ready'}: "
            f"pid={info.pid if info else '-'} port={shown_port} dir={db_dir}"
        )
        return 0 if ready else 1
    except LocalSnowflakeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
