"""The emulator as a TCP server: one process owns the DuckDB file, many clients connect.

Each client connection gets its own :class:`~dev.mssql_emulator.engine.Session` (own transaction
scope) served by its own thread. Result sets stream: the client pulls ``fetch`` chunks of Arrow
batches, so a million-row change window never sits whole in either process's memory. The
background capture job runs in the same process (SQL Server Agent's role).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Any

import pyarrow as pa

from . import errors
from .engine import Engine, Session
from .protocol import PROTOCOL_VERSION, ConnectionClosed, batches_to_ipc, ipc_to_batches, recv_frame, send_frame
from .results import Result
from .tds import TDS_PACKET_TYPES, serve_connection

log = logging.getLogger(__name__)
DEFAULT_FETCH_ROWS = 32768
# The SQL login TDS clients must present (``serve --login/--password``); a local stand-in's default.
DEFAULT_LOGIN = "sa"
DEFAULT_PASSWORD = "local"  # noqa: S105 - the local stand-in's documented default, not a secret


class _Handler(socketserver.StreamRequestHandler):
    server: EmulatorTCPServer

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session: Session | None = None
        self.results: list[Result] = []

    def handle(self) -> None:
        engine = self.server.engine
        try:
            first = self.request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first and first[0] in TDS_PACKET_TYPES:
            # a SQL Server client (TDS); the emulator's own protocol starts with a length prefix (0x00)
            serve_connection(self.request, engine, self.server.login, self.server.password)
            return
        if first and first[0] != 0x00:
            # Neither TDS 7.x nor the emulator's own protocol (a 4-byte length below 16 MiB): TDS 8.0
            # (Encrypt=Strict) opens with a TLS ClientHello (0x16), which this server without TLS
            # cannot answer. Close at once: the client fails its handshake instead of hanging.
            log.info("closing a connection that starts with byte 0x%02X (TLS or unknown protocol)", first[0])
            return
        try:
            while True:
                try:
                    header, request_payload = recv_frame(self.rfile)
                except (ConnectionClosed, ConnectionError, OSError):
                    return
                op = header.get("op")
                try:
                    reply, payload = self.dispatch(engine, op, header, request_payload)
                except errors.SqlServerError as exc:
                    reply, payload = (
                        {
                            "ok": False,
                            "error": {"number": exc.number, "message": exc.message, "severity": exc.severity},
                        },
                        b"",
                    )
                except Exception as exc:
                    log.exception("internal error serving %s", op)
                    reply, payload = (
                        {
                            "ok": False,
                            "error": {"number": 50000, "severity": 16, "message": f"Emulator internal error: {exc}"},
                        },
                        b"",
                    )
                try:
                    send_frame(self.request, reply, payload)
                except OSError:
                    return
                if op == "close":
                    return
        finally:
            self._discard()
            if self.session is not None:
                self.session.close()

    def _discard(self) -> None:
        for result in self.results:
            result.dispose()
        self.results = []

    def dispatch(
        self, engine: Engine, op: str | None, header: dict[str, Any], request_payload: bytes = b""
    ) -> tuple[dict[str, Any], bytes]:
        if op == "status":
            return {"ok": True, **status(engine)}, b""
        if op == "hello":
            if self.session is None:
                self.session = engine.session(autocommit=bool(header.get("autocommit")), login=header.get("login"))
            return {
                "ok": True,
                "spid": self.session.spid,
                "version": PROTOCOL_VERSION,
                "database": engine.db_name(),
            }, b""
        session = self.session
        if session is None:
            raise errors.SqlServerError(0, "Connection is closed.")
        if op == "execute":
            self._discard()
            self.results = session.execute(header["sql"])
            metas = []
            for result in self.results:
                metas.append(
                    {
                        "columns": [[c.name, c.duck_type] for c in result.columns]
                        if result.columns is not None
                        else None,
                        "rowcount": result.rowcount,
                    }
                )
            return {"ok": True, "results": metas}, b""
        if op == "fetch":
            index = int(header["index"])
            want = max(int(header.get("rows") or DEFAULT_FETCH_ROWS), 1)
            if index >= len(self.results) or self.results[index].batches is None or self.results[index].disposed:
                return {"ok": True, "done": True}, b""
            result = self.results[index]
            batches: list[pa.RecordBatch] = []
            got = 0
            done = False
            assert result.batches is not None
            while got < want:
                try:
                    batch = next(result.batches)
                except StopIteration:
                    done = True
                    break
                if result.disposed:
                    done = True
                    break
                if batch.num_rows:
                    batches.append(batch)
                    got += batch.num_rows
            if done:
                result.dispose()
                result.batches = None
            payload = batches_to_ipc(batches[0].schema, batches) if batches else b""
            return {"ok": True, "done": done, "rows": got}, payload
        if op == "commit":
            session.commit()
            return {"ok": True}, b""
        if op == "rollback":
            session.rollback()
            return {"ok": True}, b""
        if op == "autocommit":
            session.set_autocommit(bool(header.get("status")))
            return {"ok": True}, b""
        if op == "close":
            self._discard()
            session.close()
            self.session = None
            return {"ok": True}, b""
        if op == "bulk":
            parts: dict[str, pa.Table] = {}
            offset = 0
            for name, length in header["parts"]:
                parts[name] = pa.Table.from_batches(ipc_to_batches(request_payload[offset : offset + length]))
                offset += length
            transactions = parts.pop("__transactions__")
            out = engine.bulk_apply(
                total_lsns=int(header["total_lsns"]),
                total_trans=int(header["total_trans"]),
                transactions=transactions,
                changes=parts,
            )
            return {"ok": True, **out}, b""
        if op == "capture":
            count = engine.capture_all()
            return {"ok": True, "transactions": count}, b""
        raise errors.SqlServerError(50000, f"unknown protocol operation {op!r}")


class EmulatorTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, engine: Engine, host: str, port: int, login: str = DEFAULT_LOGIN, password: str = DEFAULT_PASSWORD
    ) -> None:
        self.engine = engine
        self.login = login
        self.password = password
        super().__init__((host, port), _Handler)


def status(engine: Engine) -> dict[str, Any]:
    cur = engine.cursor()
    try:
        max_lsn = cur.execute("SELECT max(start_lsn) FROM cdc.lsn_time_mapping").fetchall()[0][0]
        pending = cur.execute("SELECT count(*) FROM emu.commits").fetchall()[0][0]
    finally:
        cur.close()
    return {
        "database": engine.db_name(),
        "path": engine.path,
        "sessions": len(engine.sessions),
        "capture_interval": engine.capture_interval,
        "cdc_enabled": engine.cdc_enabled(),
        "max_lsn": bytes(max_lsn).hex().upper() if max_lsn is not None else None,
        "uncaptured_transactions": int(pending),
        "capture_errors": engine.capture_errors,
    }


def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 11433,
    ready: threading.Event | None = None,
    login: str = DEFAULT_LOGIN,
    password: str = DEFAULT_PASSWORD,
) -> EmulatorTCPServer:
    """Create the server (bound and listening); call ``serve_forever()`` on the result."""
    server = EmulatorTCPServer(engine, host, port, login, password)
    if ready is not None:
        ready.set()
    return server


def serve_in_thread(engine: Engine, host: str = "127.0.0.1", port: int = 0) -> tuple[EmulatorTCPServer, int]:
    """Serve ``engine`` from a background thread of this process (tests); returns (server, port)."""
    server = EmulatorTCPServer(engine, host, port)
    thread = threading.Thread(target=server.serve_forever, name="mssql-emulator-server", daemon=True)
    thread.start()
    return server, server.server_address[1]
