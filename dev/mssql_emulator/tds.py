"""The emulator's SQL Server front-end: TDS 7.4 without TLS, so SQL Server's own drivers connect.

pymssql (FreeTDS), python-tds, connectorx (tiberius) and Microsoft's mssql-python reach the
emulator as they would reach SQL Server, as long as they do not insist on encryption: PRELOGIN
is answered with ``ENCRYPT_NOT_SUP``. What is served (MS-TDS, [MS-TDS] section numbers):

* PRELOGIN (2.2.6.5) and LOGIN7 (2.2.6.4) with a SQL login; a wrong login or password gets
  error 18456 "Login failed for user '…'." severity 14 state 1, as SQL Server answers, and the
  connection is closed. A database other than the emulated one gets 4060 then 18456.
* SQL batches (2.2.6.7), run statement by statement through the engine's :class:`Session`.
* RPC (2.2.6.6): ``sp_executesql``, ``sp_prepare``/``sp_execute``/``sp_prepexec``/``sp_unprepare``
  and named procedures (run as ``EXEC``). Parameters become the session's variables.
* Transaction manager requests (2.2.6.9: begin, commit, rollback, each optionally beginning anew).
* ATTENTION (cancel): the answer is a DONE with the attention flag; a result being streamed stops.
* Tokens: COLMETADATA, ROW/NBCROW (encoded column-wise, :mod:`.tdstypes`), DONE/DONEINPROC/
  DONEPROC with row counts, RETURNSTATUS, RETURNVALUE, ERROR/INFO with SQL Server's number,
  state and severity, ENVCHANGE (database, language, collation, packet size, begin/commit/
  rollback transaction: FreeTDS echoes the transaction descriptor in its next requests).
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import struct
from typing import Any

from . import errors, security
from .engine import Engine, Session
from .results import Result
from .tdstypes import COLLATION, encode_rows, int_param_bytes, read_type_info, read_value, wire_column
from .translate import literal_sql, split_batch

log = logging.getLogger(__name__)

# packet types (2.2.3.1.1)
SQL_BATCH, RPC, REPLY, ATTENTION, TRANSACTION_MANAGER, LOGIN7, PRELOGIN = 0x01, 0x03, 0x04, 0x06, 0x0E, 0x10, 0x12
TDS_PACKET_TYPES = frozenset({SQL_BATCH, RPC, ATTENTION, TRANSACTION_MANAGER, LOGIN7, PRELOGIN})
# tokens (2.2.7)
COLMETADATA, RETURNSTATUS, RETURNVALUE, ERROR, INFO, LOGINACK, ENVCHANGE = 0x81, 0x79, 0xAC, 0xAA, 0xAB, 0xAD, 0xE3
FEATUREEXTACK, DONE, DONEPROC, DONEINPROC = 0xAE, 0xFD, 0xFE, 0xFF
DONE_FINAL, DONE_MORE, DONE_ERROR, DONE_INXACT, DONE_COUNT, DONE_ATTN = 0x00, 0x01, 0x02, 0x04, 0x10, 0x20
# ENVCHANGE types
ENV_DATABASE, ENV_LANGUAGE, ENV_PACKETSIZE, ENV_COLLATION = 1, 2, 4, 7
ENV_BEGIN_TRAN, ENV_COMMIT_TRAN, ENV_ROLLBACK_TRAN = 8, 9, 10
TDS74 = 0x74000004
SERVER_NAME = "mssql-emulator"
SERVER_VERSION = (16, 0, 1000)  # reported as SQL Server 2022 (16.x)
DEFAULT_PACKET_SIZE = 4096
MAX_PACKET_SIZE = 32767
FLUSH_BYTES = 1 << 18
PROC_NAMES = {10: "sp_executesql", 11: "sp_prepare", 12: "sp_execute", 13: "sp_prepexec", 15: "sp_unprepare"}
_DECLARED_NAME = re.compile(r"@([\w$#@]+)")


class ClientGone(Exception):
    """The client closed the connection."""


def _b_varchar(text: str) -> bytes:
    return bytes([len(text)]) + text.encode("utf-16-le")


def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + text.encode("utf-16-le")


def message_token(number: int, message: str, severity: int, state: int = 1, *, info: bool = False) -> bytes:
    body = (
        struct.pack("<iBB", number, state, severity)
        + _us_varchar(message)
        + _b_varchar(SERVER_NAME)
        + _b_varchar("")
        + struct.pack("<i", 1)
    )
    return bytes([INFO if info else ERROR]) + struct.pack("<H", len(body)) + body


def done_token(status: int, rowcount: int = 0, *, token: int = DONE, curcmd: int = 0) -> bytes:
    return struct.pack("<BHHQ", token, status, curcmd, max(rowcount, 0))


def envchange(kind: int, new: bytes, old: bytes) -> bytes:
    body = bytes([kind]) + new + old
    return bytes([ENVCHANGE]) + struct.pack("<H", len(body)) + body


def _env_text(kind: int, new: str, old: str) -> bytes:
    return envchange(kind, _b_varchar(new), _b_varchar(old))


class TdsConnection:
    """One client connection speaking TDS; owns one engine :class:`Session`."""

    def __init__(self, sock: socket.socket, engine: Engine, login: str, password: str) -> None:
        self.sock = sock
        self.engine = engine
        self.login_name = login
        self.password = password
        self.session: Session | None = None
        self.packet_size = DEFAULT_PACKET_SIZE
        self._in = bytearray()
        self._out = bytearray()
        self._packet_id = 1
        self._pending: list[tuple[int, bytes]] = []
        self._tran_serial = 0
        self._tran_descriptor = b"\x00" * 8
        self._prepared: dict[int, tuple[str, list[str]]] = {}
        self._next_handle = 1

    # -- transport --------------------------------------------------------------------------------
    def _recv(self, n: int) -> bytes:
        while len(self._in) < n:
            chunk = self.sock.recv(max(65536, n - len(self._in)))
            if not chunk:
                raise ClientGone()
            self._in += chunk
        data = bytes(self._in[:n])
        del self._in[:n]
        return data

    def read_message(self) -> tuple[int, bytes]:
        """One client message (its packets joined), as (packet type, payload)."""
        if self._pending:
            return self._pending.pop(0)
        parts: list[bytes] = []
        while True:
            kind, status, length = struct.unpack(">BBH", self._recv(8)[:4])
            parts.append(self._recv(length - 8))
            if status & 0x01:
                return kind, b"".join(parts)

    def _attention_waiting(self) -> bool:
        """Whether the client sent ATTENTION while a response was being written (cancel)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable and len(self._in) < 8:
            return False
        try:
            kind, payload = self.read_message()
        except (ClientGone, OSError):
            raise ClientGone() from None
        if kind == ATTENTION:
            return True
        self._pending.append((kind, payload))
        return False

    def write(self, data: bytes) -> None:
        self._out += data

    def flush(self, final: bool) -> None:
        """Send whole packets of the buffered stream; the rest too (with EOM) when ``final``."""
        size = self.packet_size - 8
        spid = self.session.spid if self.session else 0
        out = self._out
        chunks: list[bytes] = []
        pos = 0
        while len(out) - pos > size or (final and pos <= len(out)):
            body = out[pos : pos + size]
            pos += len(body)
            last = final and pos >= len(out)
            chunks.append(
                struct.pack(">BBHHBB", REPLY, 0x01 if last else 0x00, len(body) + 8, spid, self._packet_id, 0)
            )
            chunks.append(bytes(body))
            self._packet_id = (self._packet_id + 1) % 256
            if last:
                break
        del out[:pos]
        if chunks:
            self.sock.sendall(b"".join(chunks))

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if not self._handshake():
                return
            while True:
                kind, payload = self.read_message()
                try:
                    if kind == SQL_BATCH:
                        self.sql_batch(payload)
                    elif kind == RPC:
                        self.rpc(payload)
                    elif kind == TRANSACTION_MANAGER:
                        self.transaction_manager(payload)
                    elif kind == ATTENTION:
                        self.write(done_token(DONE_ATTN))
                    else:
                        self.write(message_token(102, f"Unexpected TDS packet type 0x{kind:02X}.", 16))
                        self.write(done_token(DONE_ERROR))
                except ClientGone:
                    raise
                except Exception as exc:  # a bug of the emulator: report it, keep the connection
                    log.exception("internal error serving a TDS request")
                    self.write(message_token(50000, f"Emulator internal error: {exc}", 16))
                    self.write(done_token(DONE_ERROR))
                self.flush(True)
        except (ClientGone, ConnectionError, OSError):
            return
        finally:
            if self.session is not None:
                with contextlib.suppress(Exception):
                    self.session.close()

    # -- login ------------------------------------------------------------------------------------
    def _handshake(self) -> bool:
        kind, payload = self.read_message()
        if kind == PRELOGIN:
            self.write(self._prelogin_reply())
            self.flush(True)
            kind, payload = self.read_message()
        if kind != LOGIN7:
            return False
        return self._login(payload)

    @staticmethod
    def _prelogin_reply() -> bytes:
        major, minor, build = SERVER_VERSION
        options = [
            (0x00, struct.pack(">BBHH", major, minor, build, 0)),  # VERSION
            (0x01, b"\x02"),  # ENCRYPTION: ENCRYPT_NOT_SUP
            (0x02, b"\x00"),  # INSTOPT
            (0x03, b""),  # THREADID
            (0x04, b"\x00"),  # MARS off
        ]
        offset = len(options) * 5 + 1
        head, body = bytearray(), bytearray()
        for token, value in options:
            head += struct.pack(">BHH", token, offset + len(body), len(value))
            body += value
        return bytes(head) + b"\xff" + bytes(body)

    def _login(self, p: bytes) -> bool:
        def field(at: int, password: bool = False) -> str:
            offset, chars = struct.unpack_from("<HH", p, at)
            raw = p[offset : offset + chars * 2]
            if password:
                raw = bytes((((b ^ 0xA5) & 0x0F) << 4) | ((b ^ 0xA5) >> 4) for b in raw)
            return raw.decode("utf-16-le", errors="replace")

        tds_version = struct.unpack_from("<I", p, 4)[0]
        requested_packet = struct.unpack_from("<I", p, 8)[0]
        option_flags3 = p[27]
        user, password, database = field(40), field(44, True), field(68)
        # The server's own login (sa by default), or one a sysadmin created with CREATE LOGIN … WITH
        # PASSWORD (security.py): the session then runs as that login (SUSER_SNAME, IS_SRVROLEMEMBER).
        session = self.engine.session(autocommit=True, login=user)  # IMPLICIT_TRANSACTIONS OFF, as SQL Server
        server_login = user.lower() == self.login_name.lower() and password == self.password
        if not server_login and not security.password_matches(session.cur, user, password):
            session.close()
            self._login_failed(user)
            return False
        db_name = self.engine.db_name()
        if database and database.lower() != db_name.lower():
            session.close()
            self.write(
                message_token(4060, f'Cannot open database "{database}" requested by the login. The login failed.', 11)
            )
            self._login_failed(user)
            return False
        self.session = session
        if requested_packet:
            self.packet_size = max(512, min(requested_packet, MAX_PACKET_SIZE))
        version = min(tds_version, TDS74) if tds_version >= 0x72000000 else TDS74
        major, minor, build = SERVER_VERSION
        prog = _b_varchar("Microsoft SQL Server")
        ack = bytes([1]) + struct.pack(">I", version) + prog + struct.pack(">BBH", major, minor, build)
        self.write(_env_text(ENV_DATABASE, db_name, "master"))
        self.write(message_token(5701, f"Changed database context to '{db_name}'.", 0, 2, info=True))
        self.write(envchange(ENV_COLLATION, bytes([len(COLLATION)]) + COLLATION, b"\x00"))
        self.write(_env_text(ENV_LANGUAGE, "us_english", ""))
        self.write(message_token(5703, "Changed language setting to us_english.", 0, 1, info=True))
        self.write(bytes([LOGINACK]) + struct.pack("<H", len(ack)) + ack)
        self.write(_env_text(ENV_PACKETSIZE, str(self.packet_size), str(DEFAULT_PACKET_SIZE)))
        if option_flags3 & 0x10:  # fExtension: acknowledge no feature
            self.write(bytes([FEATUREEXTACK, 0xFF]))
        self.write(done_token(DONE_FINAL))
        self.flush(True)
        return True

    def _login_failed(self, user: str) -> None:
        # SQL Server hides the reason from the client (state 1); the error log has the detail.
        self.write(message_token(18456, f"Login failed for user '{user}'.", 14, 1))
        self.write(done_token(DONE_ERROR))
        self.flush(True)

    # -- requests ---------------------------------------------------------------------------------
    @staticmethod
    def _skip_headers(payload: bytes) -> int:
        """Offset after ALL_HEADERS (2.2.5.3), present in every request from TDS 7.2."""
        if len(payload) >= 4:
            total = struct.unpack_from("<I", payload, 0)[0]
            if 4 <= total <= len(payload):
                return total
        return 0

    def sql_batch(self, payload: bytes) -> None:
        text = payload[self._skip_headers(payload) :].decode("utf-16-le", errors="replace")
        self.run_statements(text, in_proc=False)
        self._finish(DONE)

    def _finish(self, token: int, returnvalues: bytes = b"") -> None:
        """Close a request: RETURNSTATUS and RETURNVALUEs for procedures, then the final DONE*."""
        if token == DONEPROC:
            self.write(struct.pack("<Bi", RETURNSTATUS, 0 if not self._last_error else 1) + returnvalues)
        status = self._last_status | (DONE_ERROR if self._last_error else 0)
        self.write(done_token(status, self._last_count, token=token, curcmd=self._last_cmd))

    def run_statements(self, text: str, *, in_proc: bool, variables: dict[str, Any] | None = None) -> None:
        """Run a batch statement by statement, writing each one's tokens; the final DONE is left to
        the caller (``self._last_*``) so that a procedure can close with DONEPROC."""
        session = self.session
        assert session is not None
        self._last_error = self._cancelled = False
        self._last_status, self._last_count, self._last_cmd = DONE_FINAL, 0, 0
        saved = dict(session.variables)
        if variables:
            session.variables.update(variables)
        pending_done: bytes | None = None
        try:
            for raw in split_batch(text):
                before = session.trancount
                try:
                    results = session.execute(raw.text)
                except errors.SqlServerError:
                    self._transaction_envchange(before, session.trancount, rollback=True)
                    raise
                self._transaction_envchange(before, session.trancount, rollback=raw.first_word == "ROLLBACK")
                for result in results:
                    if pending_done is not None:
                        self.write(pending_done)
                    pending_done = self._send_result(result, in_proc)
                    if self._cancelled or self._last_error:
                        break
                if self._cancelled or self._last_error:
                    break
        except errors.SqlServerError as exc:
            if pending_done is not None:
                self.write(pending_done)
                pending_done = None
            self.write(message_token(exc.number, exc.message, exc.severity))
            self._last_error = True
        finally:
            if variables is not None:
                session.variables.clear()
                session.variables.update(saved)
        if pending_done is not None and not self._cancelled:
            # the last statement's DONE becomes the request's final DONE (status/count kept); inside
            # a procedure (RPC) its DONEINPROC is sent too, before RETURNSTATUS and DONEPROC: "a
            # DONEINPROC token is sent for each executed SQL statement within a stored procedure"
            # ([MS-TDS] 2.2.7.7, 2.2.2.7); Microsoft's Rust driver (mssql-python's mssql-odbc) fails
            # on a result set ended by RETURNSTATUS.
            if in_proc:
                self.write(pending_done)
            _, status, curcmd, count = struct.unpack("<BHHQ", pending_done)
            self._last_status, self._last_count, self._last_cmd = status & ~DONE_MORE, count, curcmd

    _cancelled = False
    _last_error = False
    _last_status = DONE_FINAL
    _last_count = 0
    _last_cmd = 0

    def _send_result(self, result: Result, in_proc: bool) -> bytes:
        """Write one statement's tokens; returns its DONE (with the MORE flag) still unwritten."""
        token = DONEINPROC if in_proc else DONE
        inxact = DONE_INXACT if self.session and self.session.trancount else 0
        if result.columns is None:
            count = result.rowcount
            return done_token(DONE_MORE | inxact | (DONE_COUNT if count >= 0 else 0), count, token=token, curcmd=0xC3)
        columns = [wire_column(c.name[:128], c.duck_type, getattr(c, "sql_type", None)) for c in result.columns]
        self.write(struct.pack("<BH", COLMETADATA, len(columns)) + b"".join(c.metadata() for c in columns))
        rows = 0
        try:
            for batch in result.stream():
                if batch.num_rows == 0:
                    continue
                self.write(encode_rows(batch, columns))
                rows += batch.num_rows
                if len(self._out) >= FLUSH_BYTES:
                    self.flush(False)
                    if self._attention_waiting():
                        result.dispose()
                        self._cancelled = True
                        self._last_status, self._last_count = DONE_ATTN, 0
                        return b""
        except errors.SqlServerError as exc:
            self.write(message_token(exc.number, exc.message, exc.severity))
            self._last_error = True
            return done_token(DONE_MORE | inxact, rows, token=token, curcmd=0xC1)
        finally:
            result.dispose()
        return done_token(DONE_MORE | DONE_COUNT | inxact, rows, token=token, curcmd=0xC1)

    def _transaction_envchange(self, before: int, after: int, *, rollback: bool) -> None:
        if before == 0 and after > 0:
            self._tran_serial += 1
            self._tran_descriptor = struct.pack(
                "<Q", (self.session.spid << 32 if self.session else 0) + self._tran_serial
            )
            self.write(envchange(ENV_BEGIN_TRAN, b"\x08" + self._tran_descriptor, b"\x00"))
        elif before > 0 and after == 0:
            kind = ENV_ROLLBACK_TRAN if rollback else ENV_COMMIT_TRAN
            self.write(envchange(kind, b"\x00", b"\x08" + self._tran_descriptor))

    # -- RPC --------------------------------------------------------------------------------------
    def rpc(self, payload: bytes) -> None:
        pos = self._skip_headers(payload)
        while pos < len(payload):
            name_len = struct.unpack_from("<H", payload, pos)[0]
            pos += 2
            if name_len == 0xFFFF:
                proc_id = struct.unpack_from("<H", payload, pos)[0]
                pos += 2
                name = PROC_NAMES.get(proc_id, f"proc#{proc_id}")
            else:
                name = payload[pos : pos + name_len * 2].decode("utf-16-le")
                pos += name_len * 2
            pos += 2  # option flags
            params: list[tuple[str, bool, Any]] = []
            while pos < len(payload) and payload[pos] not in (0x80, 0xFF, 0xFE):
                plen = payload[pos]
                pname = payload[pos + 1 : pos + 1 + plen * 2].decode("utf-16-le")
                pos += 1 + plen * 2
                status = payload[pos]
                pos += 1
                ptype, pos = read_type_info(payload, pos)
                value, pos = read_value(ptype, payload, pos)
                params.append((pname, bool(status & 0x01), value))
            if pos < len(payload):
                pos += 1  # batch separator
            self._cancelled = False
            returnvalues = self._call(name, params)
            more = pos < len(payload)
            if more:
                self._finish_more(returnvalues)
            else:
                self._finish(DONEPROC, returnvalues)

    def _finish_more(self, returnvalues: bytes) -> None:
        self.write(struct.pack("<Bi", RETURNSTATUS, 1 if self._last_error else 0) + returnvalues)
        status = self._last_status | DONE_MORE | (DONE_ERROR if self._last_error else 0)
        self.write(done_token(status, self._last_count, token=DONEPROC, curcmd=self._last_cmd))

    def _call(self, name: str, params: list[tuple[str, bool, Any]]) -> bytes:
        bare = name.lower().rsplit(".", 1)[-1]
        values = [v for _, _, v in params]
        if bare == "sp_executesql":
            stmt = values[0] if values else ""
            decl = values[1] if len(values) > 1 else ""
            self.run_statements(str(stmt), in_proc=True, variables=self._bind(params[2:], decl))
            return b""
        if bare in ("sp_prepare", "sp_prepexec"):
            handle = self._next_handle
            self._next_handle += 1
            decl, stmt = (values[1] or "", values[2] or "")
            self._prepared[handle] = (str(stmt), _DECLARED_NAME.findall(str(decl)))
            if bare == "sp_prepexec":
                self.run_statements(str(stmt), in_proc=True, variables=self._bind(params[3:], str(decl)))
            else:
                self._reset_last()
            return self._returnvalue(params[0][0], handle)
        if bare == "sp_execute":
            stmt, names = self._prepared.get(int(values[0]), ("", []))
            if not stmt:
                return self._proc_error(8179, f"Could not find prepared statement with handle {values[0]}.")
            self.run_statements(stmt, in_proc=True, variables=self._bind(params[1:], names))
            return b""
        if bare == "sp_unprepare":
            self._prepared.pop(int(values[0] or 0), None)
            self._reset_last()
            return b""
        args = ", ".join((f"{pname} = " if pname else "") + literal_sql(value) for pname, _, value in params)
        self.run_statements(f"EXEC {name} {args}".strip(), in_proc=True)
        return b""

    def _reset_last(self) -> None:
        self._last_error = False
        self._last_status, self._last_count, self._last_cmd = DONE_FINAL, 0, 0

    def _proc_error(self, number: int, message: str) -> bytes:
        self._reset_last()
        self.write(message_token(number, message, 16))
        self._last_error = True
        return b""

    @staticmethod
    def _bind(params: list[tuple[str, bool, Any]], decl: str | list[str]) -> dict[str, Any]:
        """Parameter values as session variables, by name (or by position in the declaration)."""
        declared = decl if isinstance(decl, list) else _DECLARED_NAME.findall(decl or "")
        out: dict[str, Any] = {}
        for i, (pname, _, value) in enumerate(params):
            key = pname.lstrip("@") if pname else (declared[i] if i < len(declared) else f"P{i + 1}")
            out[key.lower()] = value
        return out

    @staticmethod
    def _returnvalue(name: str, value: int) -> bytes:
        body = (
            struct.pack("<H", 0) + _b_varchar(name) + b"\x01" + struct.pack("<IH", 0, 0x0001) + int_param_bytes(value)
        )
        return bytes([RETURNVALUE]) + body

    # -- transaction manager ----------------------------------------------------------------------
    def transaction_manager(self, payload: bytes) -> None:
        pos = self._skip_headers(payload)
        request = struct.unpack_from("<H", payload, pos)[0]
        pos += 2
        session = self.session
        assert session is not None
        if request == 5:  # TM_BEGIN_XACT
            text = "BEGIN TRANSACTION"
        elif request in (7, 8):  # TM_COMMIT_XACT / TM_ROLLBACK_XACT
            pos += 1 + payload[pos] * 2  # transaction name
            flags = payload[pos] if pos < len(payload) else 0
            text = ("COMMIT TRANSACTION" if request == 7 else "ROLLBACK TRANSACTION") + (
                "; BEGIN TRANSACTION" if flags & 0x01 else ""
            )
        else:
            self.write(message_token(8509, "Unsupported transaction manager request.", 16))
            self.write(done_token(DONE_ERROR))
            return
        self.run_statements(text, in_proc=False)
        self._finish(DONE)


def serve_connection(sock: socket.socket, engine: Engine, login: str, password: str) -> None:
    TdsConnection(sock, engine, login, password).run()
