"""Wire format between emulator clients and the server.

A frame is ``!IQ`` (header length, payload length), a JSON header, then an optional payload of
Arrow IPC stream bytes (row batches). JSON rather than pickle so that a socket reachable by other
local users cannot be used to run code in the server. Parameters are bound on the client (as
pymssql does), so requests carry plain T-SQL text.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, BinaryIO

import pyarrow as pa

_PREFIX = struct.Struct("!IQ")
PROTOCOL_VERSION = 1


class ConnectionClosed(Exception):
    """The peer closed the socket."""


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) < n:
        raise ConnectionClosed()
    return data


def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    sock.sendall(_PREFIX.pack(len(raw), len(payload)) + raw)
    if payload:
        sock.sendall(payload)


def recv_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    head_len, payload_len = _PREFIX.unpack(_read_exact(stream, _PREFIX.size))
    header = json.loads(_read_exact(stream, head_len)) if head_len else {}
    payload = _read_exact(stream, payload_len) if payload_len else b""
    return header, payload


def batches_to_ipc(schema: pa.Schema, batches: list[pa.RecordBatch]) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def ipc_to_batches(payload: bytes) -> list[pa.RecordBatch]:
    if not payload:
        return []
    reader = pa.ipc.open_stream(pa.py_buffer(payload))
    return list(reader)
