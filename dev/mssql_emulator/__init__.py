"""A local SQL Server CDC emulator on DuckDB, with a pymssql-compatible DB-API.

    from dev.mssql_emulator import connect
    conn = connect(database=":memory:")                       # in-process
    conn = connect(database="/tmp/billing.duckdb")            # in-process, file-backed
    conn = connect(server="127.0.0.1", port=11433, database="billing")   # client of a server

See docs/emulator.md for what is emulated and the known differences from SQL Server.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .client import RemoteSession
from .dbapi import Connection, Cursor
from .engine import Engine, Session
from .errors import SqlServerError
from .process import ServerProcess, start_server, stop_server

__all__ = [
    "Connection",
    "Cursor",
    "Engine",
    "ServerProcess",
    "Session",
    "SqlServerError",
    "connect",
    "open_engine",
    "start_server",
    "stop_server",
]

_registry_lock = threading.Lock()
_engines: dict[str, list[Any]] = {}  # path -> [engine, refcount]


def open_engine(database: str = ":memory:", **kwargs: Any) -> Engine:
    """An Engine for ``database``, shared by every in-process connection to the same file."""
    if database in ("", ":memory:"):
        return Engine(":memory:", **kwargs)
    key = os.path.abspath(database)
    with _registry_lock:
        entry = _engines.get(key)
        if entry is None or entry[0]._closed:
            entry = [Engine(key, **kwargs), 0]
            _engines[key] = entry
        entry[1] += 1
        return entry[0]


def _release(database: str, engine: Engine) -> None:
    if database in ("", ":memory:"):
        engine.close()
        return
    key = os.path.abspath(database)
    with _registry_lock:
        entry = _engines.get(key)
        if entry is None or entry[0] is not engine:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _engines[key]
            engine.close()


def connect(
    server: str | None = None,
    user: str | None = None,
    password: str | None = None,
    database: str = "",
    timeout: int = 0,
    login_timeout: int = 60,
    charset: str = "UTF-8",
    as_dict: bool = False,
    host: str = "",
    appname: str | None = None,
    port: str | int | None = None,
    autocommit: bool = False,
    *,
    engine: Engine | None = None,
    capture_interval: float = 0.0,
    **_ignored: Any,
) -> Connection:
    """Open a connection, mirroring ``pymssql.connect``.

    With ``server``/``host`` it is a client of a running emulator server (``user`` is the session's
    login, reported by ``SUSER_SNAME()``, ``IS_SRVROLEMEMBER`` and ``HAS_PERMS_BY_NAME``; none acts as
    ``sa``; ``password`` is ignored; ``database`` names the database). Otherwise ``database`` is a
    DuckDB file path or ``":memory:"`` opened in this process (``capture_interval`` > 0 starts
    a background capture job; by default capture runs on ``EXEC sys.sp_cdc_scan``). ``engine``
    attaches to an existing :class:`Engine` (several sessions on one in-memory database).
    """
    del password, timeout, charset, appname
    if engine is not None:
        return Connection(engine.session(autocommit=autocommit, login=user), as_dict=as_dict, autocommit=autocommit)
    target = server or host
    if target:
        hostname, _, inline_port = target.replace(",", ":").partition(":")
        real_port = int(port or inline_port or 11433)
        session = RemoteSession(
            hostname or "127.0.0.1",
            real_port,
            database=database,
            autocommit=autocommit,
            login_timeout=login_timeout,
            login=user,
        )
        return Connection(session, as_dict=as_dict, autocommit=autocommit)
    path = database or ":memory:"
    eng = open_engine(path, capture_interval=capture_interval)
    return Connection(
        eng.session(autocommit=autocommit, login=user),
        as_dict=as_dict,
        autocommit=autocommit,
        on_close=lambda: _release(path, eng),
    )
