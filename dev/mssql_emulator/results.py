"""Result sets: Arrow batches in, pymssql-typed Python rows out.

Both the in-process cursor and the network client receive Arrow record batches and convert
them here, so the two paths return identical values: ``bytes`` for binary, ``Decimal`` with the
column's scale, naive ``datetime`` for datetime2, tz-aware (with its offset) for datetimeoffset, ``uuid.UUID`` for
uniqueidentifier, ``bool`` for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, SafeUUID

import numpy as np
import pyarrow as pa

from .sqltypes import api_type_code, is_datetimeoffset
from .translate import NONAME_PREFIX

Converter = Callable[[pa.Array], list[Any]]


def _plain(arr: pa.Array) -> list[Any]:
    """Arrow → Python, taking numpy shortcuts where ``to_pylist`` is slow (timestamps and dates:
    ~20x; decimals via their text form: ~2x; null-free integers)."""
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date32(t):
        # integers -> numpy datetime64 -> datetime objects (no pandas import, unlike to_numpy on timestamps)
        unit = "D" if pa.types.is_date32(t) else t.unit
        ints = arr.cast(pa.int64()) if unit != "D" else arr.cast(pa.int32()).cast(pa.int64())
        values = _int64_view(ints).view(f"datetime64[{unit}]")  # null slots are replaced below
        if unit == "ns":
            values = values.astype("datetime64[us]")
        out = values.astype(object).tolist()
        if arr.null_count:
            nulls = arr.is_null().to_pylist()
            out = [None if n else v for v, n in zip(out, nulls, strict=True)]
        if unit != "D" and t.tz:
            out = [None if v is None else v.replace(tzinfo=UTC) for v in out]
        return out
    if pa.types.is_time(t):
        return arr.to_pylist()
    if pa.types.is_decimal(t):
        return [None if v is None else Decimal(v) for v in arr.cast(pa.string()).to_pylist()]
    return arr.to_pylist()


def _int64_view(arr: pa.Array) -> np.ndarray:
    """A numpy view of an int64 Arrow array's data buffer (``Array.to_numpy`` and ``pc.fill_null``
    import pandas, which costs a client process a second and a half)."""
    return np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]


def _uuid(arr: pa.Array) -> list[Any]:
    """UUID objects as pymssql returns them, built from the 128-bit integer: ``UUID(str)`` parses
    and validates text and costs ~5 µs a value, which dominated reads of tables with a GUID column."""
    new, setattr_, safe = object.__new__, object.__setattr__, SafeUUID.unknown
    out: list[Any] = []
    for v in arr.to_pylist():
        if v is None or isinstance(v, UUID):
            out.append(v)
            continue
        u = new(UUID)
        setattr_(u, "int", int(str(v).replace("-", ""), 16))
        setattr_(u, "is_safe", safe)
        out.append(u)
    return out


def _bigint(arr: pa.Array) -> list[Any]:
    if pa.types.is_decimal(arr.type):
        return [None if v is None else int(v) for v in arr.cast(pa.string()).to_pylist()]
    return [None if v is None else int(v) for v in arr.to_pylist()]


def _datetimeoffset(arr: pa.Array) -> list[Any]:
    """datetimeoffset storage (UTC instant, offset in minutes) → tz-aware datetimes in their offset,
    as pymssql returns them."""
    instants = _plain(arr.field("dto_utc"))
    offsets = arr.field("dto_offset").to_pylist()
    nulls = arr.is_null().to_pylist()
    return [
        None if null or utc is None else utc.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=off)))
        for utc, off, null in zip(instants, offsets, nulls, strict=True)
    ]


def converter_for(duck_type: str) -> Converter:
    if is_datetimeoffset(duck_type):
        return _datetimeoffset
    t = duck_type.upper()
    if t == "UUID":
        return _uuid
    if t in ("HUGEINT", "UHUGEINT"):
        return _bigint
    return _plain


@dataclass
class Column:
    """A result column: its name as pymssql reports it ('' when unnamed) and its DuckDB type."""

    name: str
    duck_type: str
    sql_type: Any = None  # the declared SqlType when known (dev.mssql_emulator.coltypes), for TDS

    @property
    def type_code(self) -> int:
        return api_type_code(self.duck_type)

    def description(self) -> tuple[Any, ...]:
        return (self.name, self.type_code, None, None, None, None, None)


def column_name(raw: str) -> str:
    return "" if raw.startswith(NONAME_PREFIX) else raw


def batch_to_rows(batch: pa.RecordBatch, converters: list[Converter]) -> list[tuple[Any, ...]]:
    if batch.num_rows == 0:
        return []
    if not converters:
        return [()] * batch.num_rows
    columns = [conv(batch.column(i)) for i, conv in enumerate(converters)]
    return list(zip(*columns, strict=True))


@dataclass
class Result:
    """One statement's outcome. ``batches`` streams (it may hold an open DuckDB result)."""

    columns: list[Column] | None
    rowcount: int = -1
    batches: Iterator[pa.RecordBatch] | None = None
    close: Callable[[], None] | None = field(default=None, repr=False)
    disposed: bool = False

    @property
    def has_rows(self) -> bool:
        return self.columns is not None

    def dispose(self) -> None:
        """Release the result (a later statement of the session discards it, as pymssql does)."""
        self.disposed = True
        if self.close is not None:
            try:
                self.close()
            finally:
                self.close = None

    def stream(self) -> Iterator[pa.RecordBatch]:
        """The batches, ending quietly once the result has been disposed."""
        if self.batches is None:
            return
        while not self.disposed:
            try:
                batch = next(self.batches)
            except StopIteration:
                return
            if self.disposed:
                return
            yield batch


class RowBuffer:
    """Turns a stream of Arrow batches into rows on demand (bounded memory: one batch at a time)."""

    def __init__(self, columns: list[Column], batches: Iterator[pa.RecordBatch] | None):
        self.converters = [converter_for(c.duck_type) for c in columns]
        self._batches = batches
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0
        self.fetched = 0

    def _fill(self) -> bool:
        while self._pos >= len(self._rows):
            if self._batches is None:
                return False
            try:
                batch = next(self._batches)
            except StopIteration:
                self._batches = None
                return False
            self._rows = batch_to_rows(batch, self.converters)
            self._pos = 0
        return True

    def fetchone(self) -> tuple[Any, ...] | None:
        if not self._fill():
            return None
        row = self._rows[self._pos]
        self._pos += 1
        self.fetched += 1
        return row

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while len(out) < size and self._fill():
            take = min(size - len(out), len(self._rows) - self._pos)
            if take == len(self._rows) and self._pos == 0 and not out:
                out = self._rows
            else:
                out.extend(self._rows[self._pos : self._pos + take])
            self._pos += take
        self.fetched += len(out)
        return out

    def fetchall(self) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while self._fill():
            out.extend(self._rows[self._pos :])
            self._pos = len(self._rows)
        self.fetched += len(out)
        return out
