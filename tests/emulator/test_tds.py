"""The emulator as SQL Server's drivers see it: TDS 7.4 from a server process.

pymssql (the driver of the mssql provider) must get SQL Server's error numbers as its usual
exception classes, and an independent TDS implementation (python-tds, connectorx/tiberius) must
read the same change rows: together they show the emulator speaks the protocol, not one client's
dialect of it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import connectorx as cx
import pymssql
import pytds
import pytest

from dev.mssql_emulator import ServerProcess, start_server
from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD
from tests.fixtures_mssql import pymssql_connect

DB = "billing"
ROWS = [
    (1, "ünïcode ✓", Decimal("12.3400"), datetime(2026, 1, 2, 3, 4, 5, 123000), b"\x00\x01", True),
    (2, None, Decimal("-0.0100"), datetime(2026, 2, 3, 4, 5, 6), None, False),
    (3, "x" * 5000, None, None, b"\xff" * 9000, None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tds")
    proc = start_server(tmp / f"{DB}.duckdb", capture_interval=0.2, log_path=tmp / "server.log")
    try:
        conn = _pymssql(proc, autocommit=True)
        cur = conn.cursor()
        cur.execute("EXEC sys.sp_cdc_enable_db")
        cur.execute(
            "CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, name nvarchar(max) NULL, price money NULL,"
            " updated datetime2(3) NULL, payload varbinary(max) NULL, active bit NULL)"
        )
        cur.execute("EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'items', @role_name=NULL")
        conn.close()
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, Path(proc.log_path or "").read_text() if proc.log_path else code


def _pymssql(server: ServerProcess, *, autocommit: bool = False, password: str = DEFAULT_PASSWORD) -> Any:
    return pymssql_connect(server, DB, autocommit=autocommit, password=password)


def _pytds(server: ServerProcess) -> pytds.Connection:
    return pytds.connect(
        server=server.host, port=server.port, user=DEFAULT_LOGIN, password=DEFAULT_PASSWORD, database=DB, timeout=30
    )


def _insert_rows(server: ServerProcess) -> tuple[bytes, bytes]:
    """Insert ROWS in one transaction through pymssql; returns the LSN range holding them.

    ``sys.fn_cdc_get_max_lsn()`` is "the maximum LSN from the start_lsn column in the
    cdc.lsn_time_mapping system table" (https://learn.microsoft.com/en-us/sql/relational-databases/
    system-functions/sys-fn-cdc-get-max-lsn-transact-sql): NULL until the capture job has written
    a row there, which it may not have done yet when this runs first (SQL Server's capture job,
    like the emulator's, runs on its own schedule). NULL then means "nothing captured": every
    change row lies above the zero LSN."""
    conn = _pymssql(server)
    cur = conn.cursor()
    cur.execute("SELECT sys.fn_cdc_get_max_lsn()")
    before = cur.fetchone()[0] or bytes(10)
    for row in ROWS:
        cur.execute("INSERT INTO dbo.items VALUES (%s, %s, %s, %s, %s, %s)", row)
    conn.commit()
    cur.execute("SELECT count(*) FROM cdc.dbo_items_CT")
    while True:  # the capture job runs asynchronously, as SQL Server Agent's does
        cur.execute("SELECT sys.fn_cdc_get_max_lsn(), (SELECT count(*) FROM cdc.dbo_items_CT)")
        upper, captured = cur.fetchone()
        if captured >= len(ROWS):
            break
        threading.Event().wait(0.1)
    conn.close()
    return before, upper


def test_pymssql_raises_sql_server_errors_as_its_usual_exceptions(server: ServerProcess) -> None:
    with pytest.raises(pymssql.OperationalError) as bad_login:
        _pymssql(server, password="wrong")
    assert bad_login.value.args[0][0] == 18456
    # The text pymssql attaches comes from FreeTDS's per-process message buffer: after other
    # connections of the same process it can hold only DB-Library's own line; the number is the
    # server's in any case.
    message = bad_login.value.args[0][1]
    assert b"Login failed for user 'sa'." in message or b"DB-Lib error message 20018" in message

    conn = _pymssql(server)
    cur = conn.cursor()
    with pytest.raises(pymssql.ProgrammingError) as unknown:
        cur.execute("SELECT * FROM dbo.no_such_table")
    # pymssql raises query errors with args (number, message); login errors with args[0] == (number, message)
    assert unknown.value.args[0] == 208
    assert b"Invalid object name 'dbo.no_such_table'." in unknown.value.args[1]

    with pytest.raises(pymssql.ProgrammingError) as syntax:
        cur.execute("SELECT FROM WHERE")
    assert syntax.value.args[0] == 102

    # below the capture instance's validity interval: Msg 313, as sys.fn_cdc_get_all_changes_ reports it
    with pytest.raises(pymssql.OperationalError) as below:
        cur.execute(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_items(%s, %s, N'all')",
            (b"\x00" * 10, b"\x00" * 9 + b"\x01"),
        )
    assert below.value.args[0] == 313

    cur.execute("INSERT INTO dbo.items (id) VALUES (900)")
    conn.commit()
    with pytest.raises(pymssql.IntegrityError) as duplicate:
        cur.execute("INSERT INTO dbo.items (id) VALUES (900)")
    assert duplicate.value.args[0] == 2627
    conn.rollback()
    cur.execute("DELETE FROM dbo.items WHERE id = 900")
    conn.commit()
    conn.close()


def test_wrong_database_is_refused_at_login(server: ServerProcess) -> None:
    with pytest.raises(pymssql.OperationalError) as caught:
        pymssql.connect(
            server=server.host,
            port=str(server.port),
            user=DEFAULT_LOGIN,
            password=DEFAULT_PASSWORD,
            database="elsewhere",
            login_timeout=10,
        )
    assert caught.value.args[0][0] in (4060, 18456)


def test_an_independent_client_reads_the_change_rows(server: ServerProcess) -> None:
    low, upper = _insert_rows(server)
    query = (
        "SELECT [__$operation], id, name, price, updated, payload, active FROM cdc.dbo_items_CT"
        " WHERE [__$start_lsn] > %s AND [__$start_lsn] <= %s AND id <= 3 ORDER BY [__$start_lsn], [__$seqval]"
    )
    with _pytds(server) as conn, conn.cursor() as cur:  # python-tds: sp_executesql with typed parameters
        cur.execute(query, (pytds.Binary(low), pytds.Binary(upper)))  # python-tds sends bare bytes as text
        by_python_tds = [tuple(r) for r in cur.fetchall()]
    assert by_python_tds == [(2, *row) for row in ROWS]

    conn = _pymssql(server)
    cur = conn.cursor()
    cur.execute(query, (low, upper))
    assert [tuple(r) for r in cur.fetchall()] == by_python_tds
    conn.close()

    # connectorx (tiberius): Arrow straight from TDS; the URL must not ask for encryption
    table = cx.read_sql(
        f"mssql://{DEFAULT_LOGIN}:{DEFAULT_PASSWORD}@{server.host}:{server.port}/{DB}",
        f"SELECT id, name, price, payload FROM cdc.dbo_items_CT WHERE [__$start_lsn] = 0x{upper.hex()} ORDER BY id",
        return_type="arrow",
    )
    assert table.column("id").to_pylist() == [r[0] for r in ROWS]
    assert table.column("name").to_pylist() == [r[1] for r in ROWS]
    # money arrives as MONEYN, which connectorx maps to float64 (as it does for SQL Server)
    assert table.column("price").to_pylist() == [None if r[2] is None else float(r[2]) for r in ROWS]
    assert table.column("payload").to_pylist() == [r[4] for r in ROWS]


def test_parameters_of_every_kind_arrive_as_values(server: ServerProcess) -> None:
    values = (
        "it's ✓",
        -(2**40),
        Decimal("-1234.5678"),
        2.5,
        True,
        datetime(2026, 5, 6, 7, 8, 9, 120000),
        date(2026, 5, 6),
        b"\x00\xfe",
        UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        None,
    )
    sql = "SELECT " + ", ".join(["%s"] * len(values))
    # python-tds sends typed RPC parameters (pymssql inlines literals, so its SELECT would return text)
    with _pytds(server) as conn, conn.cursor() as cur:
        cur.execute(sql, tuple(pytds.Binary(v) if isinstance(v, bytes) else v for v in values))
        assert tuple(cur.fetchone()) == values


def test_transactions_as_each_driver_issues_them(server: ServerProcess) -> None:
    # pymssql: BEGIN TRAN / COMMIT TRAN batches; python-tds: transaction-manager requests
    a, b = _pymssql(server), _pytds(server)
    ca, cb = a.cursor(), b.cursor()
    ca.execute("INSERT INTO dbo.items (id) VALUES (500)")
    cb.execute("INSERT INTO dbo.items (id) VALUES (501)")
    ca.execute("SELECT count(*) FROM dbo.items WHERE id IN (500, 501)")
    assert ca.fetchone()[0] == 1  # b's insert is not committed
    b.rollback()
    a.commit()
    cb.execute("SELECT id FROM dbo.items WHERE id IN (500, 501)")
    assert [tuple(r) for r in cb.fetchall()] == [(500,)]
    cb.execute("DELETE FROM dbo.items WHERE id = 500")
    b.commit()
    ca.execute("SELECT count(*) FROM dbo.items WHERE id = 500")
    assert ca.fetchone()[0] == 0
    a.close()
    b.close()


def test_cancel_and_many_connections_at_once(server: ServerProcess) -> None:
    conn = _pymssql(server, autocommit=True)
    conn.cursor().execute("CREATE TABLE dbo.big (id int NOT NULL PRIMARY KEY, v nvarchar(40) NULL)")
    conn.cursor().execute("INSERT INTO dbo.big SELECT i, N'row' FROM range(200000) AS r(i)")
    conn.close()
    # python-tds sends ATTENTION for a result it did not drain; the next query answers normally
    with _pytds(server) as c, c.cursor() as cur:
        cur.execute("SELECT id, v FROM dbo.big ORDER BY id")
        assert tuple(cur.fetchone()) == (0, "row")
        cur.cancel()
        cur.execute("SELECT count(*), max(id) FROM dbo.big")
        assert tuple(cur.fetchone()) == (200000, 199999)

    results: dict[int, int] = {}

    def read(i: int) -> None:
        c = _pymssql(server)
        cur = c.cursor()
        cur.execute("SELECT id FROM dbo.big WHERE id >= %s AND id < %s ORDER BY id", (i * 50000, (i + 1) * 50000))
        results[i] = sum(r[0] for r in cur.fetchall())
        c.close()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results == {i: sum(range(i * 50000, (i + 1) * 50000)) for i in range(4)}


def test_text_and_binary_edge_values_reach_both_drivers(server: ServerProcess) -> None:
    # column-wise encoding: empty vs NULL, non-ASCII, astral characters (two UTF-16 code units),
    # values longer than a packet, in batches with and without NULLs (ROW and NBCROW tokens)
    texts = ["", None, "plain", "ünïcode ✓", "clef 𝄞 astral", "y" * 20000, "'quoted'"]
    blobs = [b"", None, b"\x00", b"\xff" * 70000, b"ab", b"\x00\x00", b"'"]
    conn = _pymssql(server, autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE TABLE dbo.edge (id int NOT NULL PRIMARY KEY, t nvarchar(max) NULL, b varbinary(max) NULL)")
    for i, (t, b) in enumerate(zip(texts, blobs, strict=True)):
        cur.execute("INSERT INTO dbo.edge VALUES (%s, %s, %s)", (i, t, b))
    expected = [(i, t, b) for i, (t, b) in enumerate(zip(texts, blobs, strict=True))]
    cur.execute("SELECT id, t, b FROM dbo.edge ORDER BY id")
    assert cur.fetchall() == expected
    cur.execute("SELECT id, t, b FROM dbo.edge WHERE t IS NOT NULL AND id > 1 ORDER BY id")
    assert cur.fetchall() == [r for r in expected if r[0] > 1]
    conn.close()
    with _pytds(server) as c, c.cursor() as pcur:
        pcur.execute("SELECT id, t, b FROM dbo.edge ORDER BY id")
        assert [tuple(r) for r in pcur.fetchall()] == expected


def _raw_tds(server: ServerProcess) -> tuple[socket.socket, Any, Any]:
    """A bare TDS client (PRELOGIN without options, LOGIN7 with the SQL login): the socket, a
    ``send(packet type, payload)`` and a ``reply()`` returning one whole response undecoded."""
    sock = socket.create_connection((server.host, server.port), timeout=30)

    def send(kind: int, payload: bytes) -> None:
        sock.sendall(struct.pack(">BBHHBB", kind, 1, len(payload) + 8, 0, 1, 0) + payload)

    def reply() -> bytes:
        out = b""
        while True:
            head = sock.recv(8, socket.MSG_WAITALL)
            out += sock.recv(struct.unpack(">H", head[2:4])[0] - 8, socket.MSG_WAITALL)
            if head[1] & 0x01:
                return out

    send(0x12, b"\xff")
    reply()
    fields = ["raw", DEFAULT_LOGIN, DEFAULT_PASSWORD, "raw", "", "", "raw", "", DB]
    fixed, offsets, data = 94, b"", b""
    for i, value in enumerate(fields):
        raw = value.encode("utf-16-le")
        if i == 2:  # the password's nibbles swapped and XOR 0xA5 ([MS-TDS] 2.2.6.4)
            raw = bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in raw)
        offsets += struct.pack("<HH", fixed + len(data), len(value))
        data += raw
    end = fixed + len(data)
    offsets += b"\x00" * 6 + struct.pack("<HHHHHHI", end, 0, end, 0, end, 0, 0)
    head = struct.pack("<IIIIII", end, 0x74000004, 4096, 0, 0, 0) + bytes([0xE0, 3, 0, 0]) + b"\x00" * 8
    send(0x10, head + offsets + data)
    assert 0xAD in reply()  # LOGINACK
    return sock, send, reply


def test_a_procedure_ends_each_statement_with_doneinproc(server: ServerProcess) -> None:
    # [MS-TDS] 2.2.7.7 / 2.2.2.7: inside a procedure (here sp_executesql over RPC) every statement,
    # the last one too, ends with DONEINPROC; then RETURNSTATUS and DONEPROC close the call.
    # Microsoft's Rust driver (mssql-python, provider mssql-odbc) reads a result set up to its
    # DONEINPROC and fails with "Unexpected token ... ReturnStatus" when it is missing.
    sock, send, reply = _raw_tds(server)
    stmt = "SELECT 7 AS n UNION ALL SELECT 8".encode("utf-16-le")
    collation = b"\x09\x04\xd0\x00\x34"
    rpc = struct.pack("<IIHQI", 22, 18, 2, 0, 1) + struct.pack("<HHH", 0xFFFF, 10, 0)  # sp_executesql
    rpc += b"\x00\x00" + bytes([0xE7]) + struct.pack("<H", 8000) + collation + struct.pack("<H", len(stmt)) + stmt
    send(0x03, rpc)
    tokens = reply()
    sock.close()
    doneinproc, returnstatus, doneproc = tokens[-31:-18], tokens[-18:-13], tokens[-13:]
    assert doneinproc[0] == 0xFF, tokens[-31:].hex()
    status, _, rows = struct.unpack("<HHQ", doneinproc[1:])
    assert (status & 0x11, rows) == (0x11, 2)  # DONE_MORE | DONE_COUNT, two rows
    assert returnstatus == bytes([0x79]) + struct.pack("<i", 0)
    assert doneproc[0] == 0xFE and struct.unpack("<H", doneproc[1:3])[0] & 0x01 == 0  # final


def test_a_tls_first_client_is_closed_not_left_waiting(server: ServerProcess) -> None:
    # TDS 8.0 (mssql-python / ODBC Driver 18 with Encrypt=Strict) opens with a TLS ClientHello
    # (record type 0x16) instead of PRELOGIN; the emulator has no TLS, so it closes the connection
    # and the driver fails its handshake. (It used to wait for a frame of its own protocol.)
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]))
        assert sock.recv(1) == b""
