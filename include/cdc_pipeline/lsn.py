"""Log sequence numbers (LSN): SQL Server's binary(10) change positions.

``Lsn`` is the value type the reader and the planner work with: frozen, ordered like SQL Server
orders LSNs (unsigned big-endian bytes), built from the driver's bytes or from hex text, with
``next`` / ``prev`` (``sys.fn_cdc_increment_lsn`` / ``fn_cdc_decrement_lsn``) and ``ZERO``.
Where a position is stored or travels (the control table, XCom, the hint) it is fixed-width
upper-case hex text (20 characters, ``Lsn.hex``), whose string order equals the byte order —
portable, readable in queries, and comparable without BINARY support in the local emulator.
The functions below convert the plain forms (bytes, hex) for code at those boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, overload

LSN_BYTES = 10
ZERO_LSN = bytes(LSN_BYTES)


@dataclass(frozen=True, order=True)
class Lsn:
    """One LSN. Compares and sorts as SQL Server does; ``bytes(lsn)`` is the driver parameter."""

    raw: bytes
    ZERO: ClassVar[Lsn]

    def __post_init__(self) -> None:
        if len(self.raw) != LSN_BYTES:
            raise ValueError(f"an LSN is {LSN_BYTES} bytes, got {len(self.raw)}: {self.raw!r}")

    @classmethod
    def from_bytes(cls, value: bytes | bytearray | memoryview) -> Lsn:
        return cls(bytes(value))

    @classmethod
    def from_hex(cls, text: str) -> Lsn:
        """``'0000002A000001F40003'`` or ``'0x…'`` → an Lsn."""
        return cls(bytes.fromhex(text.removeprefix("0x").removeprefix("0X")))

    @classmethod
    def from_int(cls, number: int) -> Lsn:
        return cls(number.to_bytes(LSN_BYTES, "big"))

    @property
    def hex(self) -> str:
        """The stored form: 20 upper-case hex characters."""
        return self.raw.hex().upper()

    def __int__(self) -> int:
        return int.from_bytes(self.raw, "big")

    def __bytes__(self) -> bytes:
        return self.raw

    def next(self) -> Lsn:
        """The next LSN, as sys.fn_cdc_increment_lsn computes it (no LSN exists in between)."""
        return Lsn.from_int(int(self) + 1)

    def prev(self) -> Lsn:
        """The previous LSN, as sys.fn_cdc_decrement_lsn computes it."""
        if not int(self):
            raise ValueError("the zero LSN has no predecessor")
        return Lsn.from_int(int(self) - 1)

    def __str__(self) -> str:
        """SQL Server's usual text form, ``0x0000002A000001F40003``, for logs and alerts."""
        return "0x" + self.hex


Lsn.ZERO = Lsn(ZERO_LSN)


# The overloads tell the type checker that an LSN in gives an LSN out (None only for None).
@overload
def to_hex(value: bytes | Lsn) -> str: ...
@overload
def to_hex(value: None) -> None: ...
@overload
def to_hex(value: bytes | Lsn | None) -> str | None: ...
def to_hex(value: bytes | Lsn | None) -> str | None:
    """``b'\\x00…\\x2a'`` → ``'0000…002A'`` (20 chars); None stays None."""
    if value is None:
        return None
    if isinstance(value, Lsn):
        return value.hex
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
    """The next LSN of plain bytes (``Lsn.next``)."""
    return bytes(Lsn(value).next())


def decrement(value: bytes) -> bytes:
    """The previous LSN of plain bytes (``Lsn.prev``)."""
    return bytes(Lsn(value).prev())


def display(value: bytes | Lsn | None) -> str:
    """SQL Server's usual text form, ``0x0000002A000001F40003``, for logs and alerts."""
    return "NULL" if value is None else "0x" + bytes(value).hex().upper()
