"""Log sequence numbers (LSN) as SQL Server CDC exposes them: ``binary(10)``, compared bytewise.

SQL Server's LSN is ``VLF sequence (4 bytes) : log block (4 bytes) : slot (2 bytes)``. The emulator
uses one 80-bit counter instead, so that ``fn_cdc_increment_lsn``/``fn_cdc_decrement_lsn`` are +/-1
(the semantics document says this is a fine emulation) and every value still sorts correctly as
unsigned big-endian bytes, which is exactly how DuckDB compares BLOBs.
"""

from __future__ import annotations

LSN_BYTES = 10
ZERO_LSN = bytes(LSN_BYTES)
MAX_LSN_INT = (1 << (8 * LSN_BYTES)) - 1
# First LSN handed out by a fresh database. Looks like a realistic SQL Server LSN
# (0x0000002A:000001F4:0001) and leaves room below it for "older" test values.
INITIAL_LSN_INT = int.from_bytes(bytes.fromhex("0000002A000001F40001"), "big")


def lsn_to_int(value: bytes | bytearray | memoryview) -> int:
    """Interpret an LSN (any length up to 10 bytes) as an unsigned big-endian integer."""
    return int.from_bytes(bytes(value), "big")


def int_to_lsn(value: int) -> bytes:
    """Encode an integer as a 10-byte LSN; raises ``OverflowError`` outside the 80-bit range."""
    if value < 0 or value > MAX_LSN_INT:
        raise OverflowError(f"LSN out of range: {value}")
    return value.to_bytes(LSN_BYTES, "big")


def format_lsn(value: bytes | None) -> str:
    """``0x0000002A000001F40003``: the form SQL Server prints in messages (and SSMS shows)."""
    if value is None:
        return "NULL"
    return "0x" + bytes(value).hex().upper()


def increment_lsn(value: bytes) -> bytes:
    """The next LSN after ``value`` (no LSN exists between them)."""
    return int_to_lsn(lsn_to_int(value) + 1)


def decrement_lsn(value: bytes) -> bytes:
    """The LSN before ``value``."""
    return int_to_lsn(max(lsn_to_int(value) - 1, 0))
