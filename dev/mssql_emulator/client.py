"""Client side of the emulator server: a session object for :class:`~dev.mssql_emulator.dbapi.Connection`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pymssql.exceptions as pe

from . import errors
from .protocol import ConnectionClosed, batches_to_ipc, ipc_to_batches, recv_frame, send_frame
from .results import Column, Result
from .translate import bind_params

FETCH_ROWS = 32768


class RemoteSession:
    """Speaks the emulator protocol over one TCP connection (one server-side session)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        database: str = "",
        autocommit: bool = False,
        login_timeout: float = 60,
        login: str | None = None,
    ) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=login_timeout or None)
        except OSError as exc:
            # pymssql reports an unreachable server as OperationalError 20009
            raise pe.OperationalError(
                (
                    20009,
                    (
                        "DB-Lib error message 20009, severity 9:\nUnable to connect: Adaptive Server is "
                        f"unavailable or does not exist ({host}:{port})\nNet-Lib error during {exc}\n"
                    ).encode(),
                )
            ) from None
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=1 << 20)
        self._lock = threading.RLock()
        self._generation = 0
        self.closed = False
        reply, _ = self._request({"op": "hello", "database": database, "autocommit": autocommit, "login": login})
        self.spid = reply.get("spid")
        self.database = reply.get("database")

    def _request(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        with self._lock:
            if self.closed:
                raise errors.SqlServerError(0, "Connection is closed.")
            try:
                send_frame(self.sock, header, payload)
                reply, payload = recv_frame(self.rfile)
            except (ConnectionClosed, OSError) as exc:
                self.closed = True
                raise errors.SqlServerError(20047, f"DBPROCESS is dead or not enabled ({exc})", 9) from None
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise errors.SqlServerError(
                int(err.get("number", 50000)), str(err.get("message", "")), int(err.get("severity", 16))
            )
        return reply, payload

    def execute(self, sql: str, params: Any = None) -> list[Result]:
        text = bind_params(sql, params)
        reply, _ = self._request({"op": "execute", "sql": text})
        self._generation += 1
        generation = self._generation
        results = []
        for index, meta in enumerate(reply["results"]):
            if meta["columns"] is None:
                results.append(Result(None, meta["rowcount"]))
            else:
                columns = [Column(name, duck_type) for name, duck_type in meta["columns"]]
                results.append(Result(columns, meta["rowcount"], self._pull(index, generation)))
        return results

    def _pull(self, index: int, generation: int) -> Iterator[pa.RecordBatch]:
        while True:
            if generation != self._generation:
                return  # a newer execute discarded this result on the server
            reply, payload = self._request({"op": "fetch", "index": index, "rows": FETCH_ROWS})
            yield from ipc_to_batches(payload)
            if reply.get("done"):
                return

    def commit(self) -> None:
        self._request({"op": "commit"})

    def rollback(self) -> None:
        if not self.closed:
            self._request({"op": "rollback"})

    def set_autocommit(self, status: bool) -> None:
        self._request({"op": "autocommit", "status": status})

    def bulk_apply(
        self, *, total_lsns: int, total_trans: int, transactions: pa.Table, changes: dict[str, pa.Table]
    ) -> dict[str, Any]:
        """Emulator extension: the workload generator's bulk fast path, run by the server."""
        parts, blobs = [], []
        for name, table in [("__transactions__", transactions), *changes.items()]:
            blob = batches_to_ipc(table.schema, table.to_batches())
            parts.append([name, len(blob)])
            blobs.append(blob)
        reply, _ = self._request(
            {"op": "bulk", "total_lsns": total_lsns, "total_trans": total_trans, "parts": parts}, b"".join(blobs)
        )
        return reply

    def capture(self) -> int:
        """Emulator extension: run the capture job to completion now."""
        reply, _ = self._request({"op": "capture"})
        return int(reply.get("transactions", 0))

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._request({"op": "close"})
        except errors.SqlServerError:
            pass
        finally:
            self.closed = True
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass


def server_status(host: str = "127.0.0.1", port: int = 11433, timeout: float = 2.0) -> dict[str, Any]:
    """The server's status dict; raises OSError when nothing answers."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        send_frame(sock, {"op": "status"})
        reply, _ = recv_frame(sock.makefile("rb"))
    return reply
