"""Log sequence numbers (LSN): SQL Server's binary(10) change positions.

LSNs compare as unsigned big-endian bytes. In Snowflake they are stored as fixed-width
upper-case hex text (20 characters), whose string order equals the byte order — portable,
readable in queries, and comparable without BINARY support in the local emulator.
"""

from __future__ import annotations

from typing import overload

LSN_BYTES = 10
ZERO_LSN = bytes(LSN_BYTES)


# The overloads tell the type checker that an LSN in gives an LSN out (None only for None).
@overload
def to_hex(value: bytes) -> str: ...
@overload
def to_hex(value: None) -> None: ...
@overload
def to_hex(value: bytes | None) -> str | None: ...
def to_hex(value: bytes | None) -> str | None:
    """``b'\\x00…\\x2a'`` → ``'0000…002A'`` (20 chars); None stays None."""
    if value is None:
        return None
    if len(value) != LSN_BYTES:
        raise ValueError(f"an LSN is {LSN_BYTES} bytes, got {len(value)}: {value!r}")
    return value.hex().upper()


@overload
def from_hex(text: str) -> bytes: ...
@overload
def from_hex(text: None) -> None: ...
@overload
def from_hex(text: str | None) -> bytes | None: ...
def from_hex(text: str | None) -> bytes | None:
    if text is None:
        return None
    raw = bytes.fromhex(text.removeprefix("0x").removeprefix("0X"))
    if len(raw) != LSN_BYTES:
        raise ValueError(f"an LSN is {LSN_BYTES} bytes, got {text!r}")
    return raw


def increment(value: bytes) -> bytes:
    """The next LSN, as sys.fn_cdc_increment_lsn computes it (no LSN exists in between)."""
    return (int.from_bytes(value, "big") + 1).to_bytes(LSN_BYTES, "big")


def decrement(value: bytes) -> bytes:
    """The previous LSN, as sys.fn_cdc_decrement_lsn computes it."""
    number = int.from_bytes(value, "big")
    if number == 0:
        raise ValueError("the zero LSN has no predecessor")
    return (number - 1).to_bytes(LSN_BYTES, "big")


def display(value: bytes | None) -> str:
    """SQL Server's usual text form, ``0x0000002A000001F40003``, for logs and alerts."""
    return "NULL" if value is None else "0x" + value.hex().upper()
