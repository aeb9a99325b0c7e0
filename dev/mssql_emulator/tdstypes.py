"""TDS data types: result columns encoded column-wise from Arrow, RPC parameter values decoded.

A result column is described once (its COLMETADATA entry) and its values are encoded a whole
Arrow batch at a time with numpy: each encoder returns the column's bytes for every row
(``data``) and each row's byte count (``lens``); :func:`encode_rows` interleaves the columns into
ROW or NBCROW tokens. Wire formats follow MS-TDS 2.2.5 (data types) and 2.2.7 (tokens).
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .sqltypes import SqlType, is_datetimeoffset

# TYPE_INFO type bytes (MS-TDS 2.2.5.4)
INTN, BITN, FLTN, MONEYN, DATETIMN = 0x26, 0x68, 0x6D, 0x6E, 0x6F
DECIMALN, NUMERICN, GUIDTYPE = 0x6A, 0x6C, 0x24
DATEN, TIMEN, DATETIME2N, DATETIMEOFFSETN = 0x28, 0x29, 0x2A, 0x2B
BIGVARBINARY, BIGVARCHAR, BIGBINARY, BIGCHAR, NVARCHAR, NCHAR = 0xA5, 0xA7, 0xAD, 0xAF, 0xE7, 0xEF
TEXT, NTEXT, IMAGE, XML = 0x23, 0x63, 0x22, 0xF1
# fixed-length types a client may use for parameters
INT1, BIT, INT2, INT4, INT8, FLT4, FLT8, MONEY4, MONEY, DATETIM4, DATETIME = (
    0x30,
    0x32,
    0x34,
    0x38,
    0x7F,
    0x3B,
    0x3E,
    0x7A,
    0x3C,
    0x3A,
    0x3D,
)
_FIXED_LEN = {
    INT1: 1,
    BIT: 1,
    INT2: 2,
    INT4: 4,
    INT8: 8,
    FLT4: 4,
    FLT8: 8,
    MONEY4: 4,
    MONEY: 8,
    DATETIM4: 4,
    DATETIME: 8,
}

# SQL_Latin1_General_CP1_CI_AS (LCID 0x0409, ignore case/kana/width, sort id 52): the common default.
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])
CODEPAGE = "cp1252"
USERTYPE_TIMESTAMP = 80  # rowversion columns carry user type 80 (MS-TDS 2.2.7.4)
PLP_NULL = b"\xff" * 8
_DAYS_0001_TO_1970 = 719162
_DAYS_1900_TO_1970 = 25567
_US_PER_DAY = 86_400_000_000

Encoded = tuple[np.ndarray, np.ndarray]  # (data uint8, per-row byte counts int64)


@dataclass
class WireColumn:
    """One result column: its COLMETADATA entry and its column-wise value encoder."""

    name: str
    type_info: bytes
    encode: Callable[[pa.Array, bool], Encoded]
    usertype: int = 0
    table_name: bytes = b""  # text/ntext/image carry a table name in COLMETADATA

    def metadata(self) -> bytes:
        name = self.name.encode("utf-16-le")
        flags = 0x0001 | 0x0008  # nullable, updateable unknown
        return (
            struct.pack("<IH", self.usertype, flags) + self.type_info + self.table_name + bytes([len(self.name)]) + name
        )


# -- helpers building the (data, lens) pair ------------------------------------------------------------
def _nulls(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_null(), dtype=bool)


def _fixed(values: np.ndarray, width: int, prefix: bytes, nulls: np.ndarray | None, null_marker: bytes) -> Encoded:
    """Rows of ``prefix + values`` (``values`` an (n, width) uint8 matrix); null rows get ``null_marker``."""
    n = len(values)
    w = len(prefix) + width
    mat = np.empty((n, w), dtype=np.uint8)
    if prefix:
        mat[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    mat[:, len(prefix) :] = values
    if nulls is None:
        return mat.reshape(-1), np.full(n, w, dtype=np.int64)
    lens = np.where(nulls, len(null_marker), w).astype(np.int64)
    if null_marker:
        mat[nulls, : len(null_marker)] = np.frombuffer(null_marker, dtype=np.uint8)
    keep = np.arange(w)[None, :] < lens[:, None]
    return mat[keep], lens


def _as_bytes_matrix(values: np.ndarray, dtype: str) -> np.ndarray:
    v = np.ascontiguousarray(values.astype(dtype, copy=False))
    return v.view(np.uint8).reshape(len(v), -1)


def _numeric_values(arr: pa.Array, dtype: str) -> np.ndarray:
    if arr.null_count:
        arr = arr.fill_null(0)
    return np.asarray(arr).astype(dtype, copy=False)


# -- encoders ------------------------------------------------------------------------------------------
def _int_encoder(width: int) -> Callable[[pa.Array, bool], Encoded]:
    dtype = {1: "<u1", 2: "<i2", 4: "<i4", 8: "<i8"}[width]

    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        vals = _numeric_values(arr, "int64" if width > 1 else "uint8")
        return _fixed(_as_bytes_matrix(vals, dtype), width, bytes([width]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


def _bit(arr: pa.Array, nbc: bool) -> Encoded:
    vals = _numeric_values(arr.cast(pa.uint8()), "uint8")
    return _fixed(vals.reshape(-1, 1), 1, b"\x01", _nulls(arr), b"" if nbc else b"\x00")


def _float_encoder(width: int) -> Callable[[pa.Array, bool], Encoded]:
    dtype = "<f4" if width == 4 else "<f8"

    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        vals = _numeric_values(arr, "float64")
        return _fixed(_as_bytes_matrix(vals, dtype), width, bytes([width]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


def _decimal_words(arr: pa.Array, scale: int) -> np.ndarray:
    """The unscaled 128-bit integers of a decimal array as an (n, 2) int64 matrix (low, high)."""
    t = arr.type
    if not pa.types.is_decimal128(t) or t.scale != scale:
        arr = arr.cast(pa.decimal128(38, scale))
    if arr.null_count:
        arr = arr.fill_null(Decimal(0))
    words = np.frombuffer(arr.buffers()[1], dtype="<i8").reshape(-1, 2)
    return words[arr.offset : arr.offset + len(arr)]


def _decimal_encoder(precision: int, scale: int) -> Callable[[pa.Array, bool], Encoded]:
    size = 4 if precision <= 9 else 8 if precision <= 19 else 12 if precision <= 28 else 16

    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        words = _decimal_words(arr, scale)
        lo = words[:, 0].view(np.uint64).copy()
        hi = words[:, 1].view(np.uint64).copy()
        neg = words[:, 1] < 0
        # two's complement negation of the negative values (128-bit: invert, add one, carry)
        lo_n = ~lo[neg] + np.uint64(1)
        hi_n = ~hi[neg] + (lo_n == 0).astype(np.uint64)
        lo[neg], hi[neg] = lo_n, hi_n
        mag = np.stack([lo, hi], axis=1).view(np.uint8).reshape(len(lo), 16)[:, :size]
        sign = (~neg).astype(np.uint8).reshape(-1, 1)
        values = np.concatenate([sign, mag], axis=1)
        return _fixed(values, size + 1, bytes([size + 1]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


def _money_encoder(width: int) -> Callable[[pa.Array, bool], Encoded]:
    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        units = _decimal_words(arr, 4)[:, 0]  # money fits in 64 bits: the low word is the value
        if width == 4:
            values = _as_bytes_matrix(units, "<i4")
        else:
            halves = np.stack([(units >> 32).astype("<i4"), (units & 0xFFFFFFFF).astype("<u4").view("<i4")], axis=1)
            values = np.ascontiguousarray(halves).view(np.uint8).reshape(len(units), 8)
        return _fixed(values, width, bytes([width]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


def _micros(arr: pa.Array) -> np.ndarray:
    """Microseconds since 1970-01-01 (UTC instants for tz-aware timestamps)."""
    unit = arr.type.unit
    ints = arr.cast(pa.int64())
    if ints.null_count:
        ints = ints.fill_null(0)
    v = np.asarray(ints).astype(np.int64)
    if unit == "s":
        return v * 1_000_000
    if unit == "ms":
        return v * 1000
    if unit == "ns":
        return v // 1000
    return v


def _time_bytes(ticks: np.ndarray, scale: int) -> np.ndarray:
    size = 3 if scale <= 2 else 4 if scale <= 4 else 5
    return _as_bytes_matrix(ticks, "<i8")[:, :size]


def _scaled(us_of_day: np.ndarray, scale: int) -> np.ndarray:
    """Microseconds of the day in units of 10^-scale seconds."""
    if scale >= 6:
        return us_of_day * 10 ** (scale - 6)
    return us_of_day // 10 ** (6 - scale)


def _date_encoder(arr: pa.Array, nbc: bool) -> Encoded:
    days = _numeric_values(arr.cast(pa.int32()), "int64") + _DAYS_0001_TO_1970
    return _fixed(_as_bytes_matrix(days, "<i8")[:, :3], 3, b"\x03", _nulls(arr), b"" if nbc else b"\x00")


def _time_encoder(scale: int) -> Callable[[pa.Array, bool], Encoded]:
    size = 3 if scale <= 2 else 4 if scale <= 4 else 5

    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        ints = arr.cast(pa.int64())
        v = _numeric_values(ints, "int64")
        unit = arr.type.unit
        us = v * 1_000_000 if unit == "s" else v * 1000 if unit == "ms" else v // 1000 if unit == "ns" else v
        return _fixed(_time_bytes(_scaled(us, scale), scale), size, bytes([size]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


def _datetime2_encoder(scale: int, offset: bool) -> Callable[[pa.Array, bool], Encoded]:
    tsize = 3 if scale <= 2 else 4 if scale <= 4 else 5
    size = tsize + 3 + (2 if offset else 0)

    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        minutes = None
        if pa.types.is_struct(arr.type):  # the emulator's datetimeoffset: UTC instant + offset. MS-TDS
            # (learn.microsoft.com/openspecs/windows_protocols/ms-tds/786f5b8a-f87d-4980-9070-b9b7274c681d):
            # datetime2(n) - the UTC instant, as drivers decode it - then the offset in minutes (int16)
            minutes = _as_bytes_matrix(_numeric_values(arr.field("dto_offset"), "int64"), "<i2")
            nulls = _nulls(arr)
            arr = arr.field("dto_utc")
            if nulls is not None:
                arr = pc.if_else(pa.array(nulls), pa.scalar(None, arr.type), arr)
        us = _micros(arr)
        days, us_of_day = np.divmod(us, _US_PER_DAY)
        parts = [
            _time_bytes(_scaled(us_of_day, scale), scale),
            _as_bytes_matrix(days + _DAYS_0001_TO_1970, "<i8")[:, :3],
        ]
        if offset:
            parts.append(minutes if minutes is not None else np.zeros((len(us), 2), dtype=np.uint8))
        values = np.concatenate(parts, axis=1)
        return _fixed(values, size, bytes([size]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


def _datetime_encoder(small: bool) -> Callable[[pa.Array, bool], Encoded]:
    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        us = _micros(arr)
        days, us_of_day = np.divmod(us, _US_PER_DAY)
        days = days + _DAYS_1900_TO_1970
        if small:
            values = np.concatenate(
                [_as_bytes_matrix(days, "<u2"), _as_bytes_matrix(us_of_day // 60_000_000, "<u2")], axis=1
            )
            width = 4
        else:
            ticks = (us_of_day * 3 + 5000) // 10000  # 1/300 s, rounded (stored values are ticks already)
            carry = ticks >= 25_920_000  # 23:59:59.999 of a file written before values were rounded
            days, ticks = days + carry, np.where(carry, 0, ticks)
            values = np.concatenate([_as_bytes_matrix(days, "<i4"), _as_bytes_matrix(ticks, "<u4")], axis=1)
            width = 8
        return _fixed(values, width, bytes([width]), _nulls(arr), b"" if nbc else b"\x00")

    return enc


_HEX = np.full(256, 0, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_GUID_LE = [3, 2, 1, 0, 5, 4, 7, 6, *range(8, 16)]  # uniqueidentifier's mixed-endian byte order


def _guid(arr: pa.Array, nbc: bool) -> Encoded:
    nulls = _nulls(arr)
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type) or isinstance(arr.type, pa.ExtensionType):
        storage = arr.storage if isinstance(arr.type, pa.ExtensionType) else arr
        raw = np.frombuffer(storage.buffers()[1], dtype=np.uint8)[storage.offset * 16 : (storage.offset + n) * 16]
        big = raw.reshape(n, 16)
    else:  # canonical text 8-4-4-4-12
        text = pc.replace_substring(arr.cast(pa.string()).fill_null("0" * 32), "-", "")
        data, offsets = _binary_parts(text)
        hexdigits = _HEX[data[offsets[0] : offsets[-1]]].reshape(n, 32)
        big = (hexdigits[:, 0::2] << 4) | hexdigits[:, 1::2]
    return _fixed(big[:, _GUID_LE], 16, b"\x10", nulls, b"" if nbc else b"\x00")


def _binary_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The value bytes and the n+1 offsets of a string/binary Arrow array."""
    n = len(arr)
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if large else np.int32)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    return data, offsets.astype(np.int64)


def _encoded_text(arr: pa.Array, codec: str) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets) of a string array in ``codec`` (UTF-16LE, or the collation's code page with
    '?' for characters it lacks, as SQL Server converts them), converting the whole buffer at once."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    data, offsets = _binary_parts(arr)
    utf8 = data[offsets[0] : offsets[-1]]
    points = np.asarray(pc.utf8_length(arr).fill_null(0), dtype=np.int64)
    if arr.null_count:
        points[np.asarray(arr.is_null(), dtype=bool)] = 0
    ascii_only = not np.any(utf8 >= 0x80)
    width = 2 if codec == "utf-16-le" else 1
    if ascii_only and arr.null_count == 0:
        if width == 1:
            out = utf8
        else:
            out = np.zeros(len(utf8) * 2, dtype=np.uint8)
            out[0::2] = utf8
        return out, np.concatenate([[0], np.cumsum(points * width)])
    texts = arr.fill_null("").to_pylist() if arr.null_count else arr.to_pylist()
    encoded = "".join(texts).encode(codec, errors="replace")
    if len(encoded) == int(points.sum()) * width:  # no character needed two code units
        return np.frombuffer(encoded, dtype=np.uint8), np.concatenate([[0], np.cumsum(points * width)])
    pieces = [t.encode(codec, errors="replace") for t in texts]
    sizes = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    return np.frombuffer(b"".join(pieces), dtype=np.uint8), np.concatenate([[0], np.cumsum(sizes)])


def _framed_parts(data: np.ndarray, offsets: np.ndarray, nulls: np.ndarray | None, nbc: bool, kind: str) -> Encoded:
    """Rows of ``head + value (+ tail)`` for variable-length values: ``kind`` 'short' (2-byte length),
    'plp' (8-byte total, one chunk, terminator) or 'lob' (text pointer, 4-byte length)."""
    lens = np.diff(offsets)
    n = len(lens)
    if nulls is not None:
        lens = np.where(nulls, 0, lens)
    if kind == "short":
        head = np.empty((n, 2), dtype=np.uint8)
        head[:, :] = _as_bytes_matrix(lens, "<u2")
        head_lens = np.full(n, 2, dtype=np.int64)
        null_head = b"\xff\xff"
    elif kind == "plp":
        head = np.concatenate([_as_bytes_matrix(lens, "<u8"), _as_bytes_matrix(lens, "<u4")], axis=1)
        head_lens = np.where(lens > 0, 12, 8).astype(np.int64)
        null_head = PLP_NULL
    else:
        head = np.concatenate(
            [np.tile(np.frombuffer(_TEXTPTR, dtype=np.uint8), (n, 1)), _as_bytes_matrix(lens, "<i4")], axis=1
        )
        head_lens = np.full(n, len(_TEXTPTR) + 4, dtype=np.int64)
        null_head = b"\x00"
    tail_lens = np.full(n, 4 if kind == "plp" else 0, dtype=np.int64)
    if nulls is not None:
        marker = b"" if nbc else null_head
        head[nulls, : len(marker)] = np.frombuffer(marker, dtype=np.uint8)
        head_lens = np.where(nulls, len(marker), head_lens)
        tail_lens = np.where(nulls, 0, tail_lens)
    keep = np.arange(head.shape[1])[None, :] < head_lens[:, None]
    starts = offsets[:-1]
    total = int(lens.sum())
    if nulls is None and total == offsets[-1] - offsets[0]:
        payload = data[offsets[0] : offsets[-1]]
    else:
        payload = data[np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)]
    cells = [(head[keep], head_lens), (payload, lens)]
    if kind == "plp":
        cells.append((np.zeros(int(tail_lens.sum()), dtype=np.uint8), tail_lens))
    return _interleave(cells, n), head_lens + lens + tail_lens


def _str_encoder(unicode: bool, plp: bool) -> Callable[[pa.Array, bool], Encoded]:
    codec = "utf-16-le" if unicode else CODEPAGE

    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        data, offsets = _encoded_text(arr, codec)
        return _framed_parts(data, offsets, _nulls(arr), nbc, "plp" if plp else "short")

    return enc


def _bin_encoder(plp: bool) -> Callable[[pa.Array, bool], Encoded]:
    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
            arr = arr.cast(pa.binary())
        data, offsets = _binary_parts(arr)
        return _framed_parts(data, offsets, _nulls(arr), nbc, "plp" if plp else "short")

    return enc


_TEXTPTR = b"\x10" + b"\x00" * 16 + b"\x00" * 8  # textptr length 16, pointer, timestamp


def _lob_encoder(kind: str) -> Callable[[pa.Array, bool], Encoded]:
    def enc(arr: pa.Array, nbc: bool) -> Encoded:
        if kind == "image":
            if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
                arr = arr.cast(pa.binary())
            data, offsets = _binary_parts(arr)
        else:
            data, offsets = _encoded_text(arr, "utf-16-le" if kind == "ntext" else CODEPAGE)
        return _framed_parts(data, offsets, _nulls(arr), nbc, "lob")

    return enc


def _interleave(cells: list[Encoded], n: int) -> np.ndarray:
    """Concatenate per-row cells row by row: row i = cells[0][i] + cells[1][i] + …

    Adjacent cells of one width for every row are first joined into one block (a column stack),
    and blocks are placed by broadcasting; only variable-width cells need a per-byte index."""
    merged: list[tuple[np.ndarray, np.ndarray, int]] = []  # (data, lens, width or -1)
    for data, lens in cells:
        width = int(lens[0]) if n and lens.min() == lens.max() else -1
        if width >= 0 and merged and merged[-1][2] >= 0:
            prev, _, pw = merged[-1]
            block = np.concatenate([prev.reshape(n, pw), data.reshape(n, width)], axis=1).reshape(-1)
            merged[-1] = (block, np.full(n, pw + width, dtype=np.int64), pw + width)
        else:
            merged.append((data, lens, width))
    if len(merged) == 1:
        return merged[0][0]
    lens = np.stack([m[1] for m in merged], axis=1)
    flat = lens.reshape(-1)
    ends = np.cumsum(flat)
    starts = (ends - flat).reshape(n, -1)
    total_out = int(ends[-1]) if len(ends) else 0
    index = np.int32 if total_out < 2**31 else np.int64
    out = np.empty(total_out, dtype=np.uint8)
    for j, (data, col_lens, width) in enumerate(merged):
        if len(data) == 0:
            continue
        if width >= 0:
            dest = starts[:, j].astype(index)[:, None] + np.arange(width, dtype=index)[None, :]
            out[dest.reshape(-1)] = data
        else:
            src_starts = (np.cumsum(col_lens) - col_lens).astype(index)
            shift = starts[:, j].astype(index) - src_starts
            out[np.repeat(shift, col_lens) + np.arange(len(data), dtype=index)] = data
    return out


# -- column descriptions ---------------------------------------------------------------------------------
def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + text.encode("utf-16-le")


_DUCK_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)", re.IGNORECASE)


def wire_column(name: str, duck_type: str, sql_type: SqlType | None = None) -> WireColumn:
    """The TDS description of a result column: the declared SQL Server type when it matches the
    data, else one derived from the DuckDB type (decimal precision/scale always from DuckDB's)."""
    t = sql_type if sql_type is not None and compatible(sql_type, duck_type) else _from_duck(duck_type)
    n = t.name
    if n in ("decimal", "numeric"):
        match = _DUCK_DECIMAL.match(duck_type)
        p, s = (int(match.group(1)), int(match.group(2))) if match else (t.precision or 38, t.scale or 0)
        tb = NUMERICN if n == "numeric" else DECIMALN
        size = 5 if p <= 9 else 9 if p <= 19 else 13 if p <= 28 else 17
        return WireColumn(name, bytes([tb, size, p, s]), _decimal_encoder(p, s))
    simple = {
        "tinyint": (bytes([INTN, 1]), _int_encoder(1)),
        "smallint": (bytes([INTN, 2]), _int_encoder(2)),
        "int": (bytes([INTN, 4]), _int_encoder(4)),
        "bigint": (bytes([INTN, 8]), _int_encoder(8)),
        "bit": (bytes([BITN, 1]), _bit),
        "real": (bytes([FLTN, 4]), _float_encoder(4)),
        "float": (bytes([FLTN, 8]), _float_encoder(8)),
        "money": (bytes([MONEYN, 8]), _money_encoder(8)),
        "smallmoney": (bytes([MONEYN, 4]), _money_encoder(4)),
        "uniqueidentifier": (bytes([GUIDTYPE, 16]), _guid),
        "date": (bytes([DATEN]), _date_encoder),
        "datetime": (bytes([DATETIMN, 8]), _datetime_encoder(False)),
        "smalldatetime": (bytes([DATETIMN, 4]), _datetime_encoder(True)),
    }
    if n in simple:
        info, enc = simple[n]
        return WireColumn(name, info, enc)
    scale = 7 if t.scale is None else t.scale
    if n == "time":
        return WireColumn(name, bytes([TIMEN, scale]), _time_encoder(scale))
    if n == "datetime2":
        return WireColumn(name, bytes([DATETIME2N, scale]), _datetime2_encoder(scale, False))
    if n == "datetimeoffset":
        return WireColumn(name, bytes([DATETIMEOFFSETN, scale]), _datetime2_encoder(scale, True))
    if n in ("char", "varchar", "nchar", "nvarchar", "sysname", "sql_variant"):
        unicode = n in ("nchar", "nvarchar", "sysname", "sql_variant")
        if n == "sysname":
            length = 128
        elif n == "sql_variant":
            length = -1
        else:
            length = t.length if t.length is not None else 1
        tb = {"char": BIGCHAR, "varchar": BIGVARCHAR, "nchar": NCHAR}.get(n, NVARCHAR)
        if length == -1:
            return WireColumn(name, bytes([tb]) + b"\xff\xff" + COLLATION, _str_encoder(unicode, True))
        max_bytes = length * 2 if unicode else length
        return WireColumn(name, bytes([tb]) + struct.pack("<H", max_bytes) + COLLATION, _str_encoder(unicode, False))
    if n in ("binary", "varbinary", "timestamp"):
        tb = BIGVARBINARY if n == "varbinary" else BIGBINARY
        length = 8 if n == "timestamp" else t.length if t.length is not None else 1
        usertype = USERTYPE_TIMESTAMP if n == "timestamp" else 0
        if length == -1:
            return WireColumn(name, bytes([tb]) + b"\xff\xff", _bin_encoder(True), usertype)
        return WireColumn(name, bytes([tb]) + struct.pack("<H", length), _bin_encoder(False), usertype)
    if n == "xml":
        return WireColumn(name, bytes([XML, 0]), _str_encoder(True, True))
    if n in ("text", "ntext", "image"):
        tb = {"text": TEXT, "ntext": NTEXT, "image": IMAGE}[n]
        info = bytes([tb]) + struct.pack("<i", 0x7FFFFFFF if n != "ntext" else 0x7FFFFFFE)
        if n != "image":
            info += COLLATION
        table = b"\x01" + _us_varchar("t")  # one-part table name
        return WireColumn(name, info, _lob_encoder(n), table_name=table)
    raise ValueError(f"no TDS mapping for {n}")


def _from_duck(duck_type: str) -> SqlType:
    if is_datetimeoffset(duck_type):
        return SqlType("datetimeoffset", scale=7)
    t = duck_type.upper()
    if t.startswith("DECIMAL"):
        return SqlType("decimal")
    mapping = {
        "BOOLEAN": SqlType("bit"),
        "TINYINT": SqlType("smallint"),
        "UTINYINT": SqlType("tinyint"),
        "SMALLINT": SqlType("smallint"),
        "USMALLINT": SqlType("int"),
        "INTEGER": SqlType("int"),
        "UINTEGER": SqlType("bigint"),
        "BIGINT": SqlType("bigint"),
        "UBIGINT": SqlType("decimal", precision=20, scale=0),
        "HUGEINT": SqlType("decimal", precision=38, scale=0),
        "UHUGEINT": SqlType("decimal", precision=38, scale=0),
        "FLOAT": SqlType("real"),
        "DOUBLE": SqlType("float"),
        "DATE": SqlType("date"),
        "TIME": SqlType("time", scale=7),
        "TIMESTAMP": SqlType("datetime2", scale=7),
        "TIMESTAMP_NS": SqlType("datetime2", scale=7),
        "TIMESTAMP_MS": SqlType("datetime2", scale=3),
        "TIMESTAMP_S": SqlType("datetime2", scale=0),
        "TIMESTAMP WITH TIME ZONE": SqlType("datetimeoffset", scale=7),
        "TIMESTAMPTZ": SqlType("datetimeoffset", scale=7),
        "UUID": SqlType("uniqueidentifier"),
        "BLOB": SqlType("varbinary", length=-1),
    }
    return mapping.get(t, SqlType("nvarchar", length=-1))


def compatible(sql_type: SqlType, duck_type: str) -> bool:
    """Whether values of ``duck_type`` can be sent as the declared ``sql_type``."""
    if sql_type.name == "datetimeoffset" or is_datetimeoffset(duck_type):
        return sql_type.name == "datetimeoffset" and is_datetimeoffset(duck_type)
    want = sql_type.duck_type().upper()
    have = duck_type.upper()
    if want.startswith("DECIMAL") and have.startswith("DECIMAL"):
        return True
    return want == have or (want == "TIMESTAMPTZ" and have == "TIMESTAMP WITH TIME ZONE")


def prepare_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_uint64(arr.type):
        arr = arr.cast(pa.decimal128(20, 0))
    return arr


def encode_rows(batch: pa.RecordBatch, columns: list[WireColumn]) -> bytes:
    """ROW tokens for the batch (NBCROW when a column has NULLs: null values take no bytes)."""
    n = batch.num_rows
    if n == 0:
        return b""
    arrays = [prepare_array(batch.column(i)) for i in range(len(columns))]
    nbc = any(a.null_count for a in arrays)
    cells: list[Encoded] = []
    if nbc:
        nulls = np.stack([np.asarray(a.is_null(), dtype=bool) for a in arrays], axis=1)
        bitmap = np.packbits(nulls, axis=1, bitorder="little")
        head = np.concatenate([np.full((n, 1), 0xD2, dtype=np.uint8), bitmap], axis=1)
        cells.append((head.reshape(-1), np.full(n, head.shape[1], dtype=np.int64)))
    else:
        cells.append((np.full(n, 0xD1, dtype=np.uint8), np.ones(n, dtype=np.int64)))
    for col, arr in zip(columns, arrays, strict=True):
        cells.append(col.encode(arr, nbc))
    return _interleave(cells, n).tobytes()


# -- parameter values (RPC requests) ------------------------------------------------------------------------
@dataclass
class ParamType:
    code: int
    size: int = 0
    precision: int = 0
    scale: int = 0
    plp: bool = False


def read_type_info(buf: bytes, pos: int) -> tuple[ParamType, int]:
    code = buf[pos]
    pos += 1
    if code in _FIXED_LEN:
        return ParamType(code, _FIXED_LEN[code]), pos
    if code in (INTN, BITN, FLTN, MONEYN, DATETIMN, GUIDTYPE):
        return ParamType(code, buf[pos]), pos + 1
    if code in (DECIMALN, NUMERICN):
        return ParamType(code, buf[pos], buf[pos + 1], buf[pos + 2]), pos + 3
    if code == DATEN:
        return ParamType(code), pos
    if code in (TIMEN, DATETIME2N, DATETIMEOFFSETN):
        return ParamType(code, scale=buf[pos]), pos + 1
    if code in (BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR):
        size = struct.unpack_from("<H", buf, pos)[0]
        return ParamType(code, size, plp=size == 0xFFFF), pos + 2 + 5
    if code in (BIGVARBINARY, BIGBINARY):
        size = struct.unpack_from("<H", buf, pos)[0]
        return ParamType(code, size, plp=size == 0xFFFF), pos + 2
    if code in (TEXT, NTEXT, IMAGE):
        size = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        if code != IMAGE:
            pos += 5
        return ParamType(code, size), pos
    if code == XML:
        present = buf[pos]
        pos += 1
        if present:
            for _ in range(2):
                pos += 1 + buf[pos] * 2
            pos += 2 + struct.unpack_from("<H", buf, pos)[0] * 2
        return ParamType(code, plp=True), pos
    raise ValueError(f"unsupported parameter type 0x{code:02X}")


def _read_plp(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    total = struct.unpack_from("<Q", buf, pos)[0]
    pos += 8
    if total == 0xFFFFFFFFFFFFFFFF:
        return None, pos
    chunks = []
    while True:
        size = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        if size == 0:
            return b"".join(chunks), pos
        chunks.append(buf[pos : pos + size])
        pos += size


def read_value(t: ParamType, buf: bytes, pos: int) -> tuple[Any, int]:
    code = t.code
    if t.plp:
        raw, pos = _read_plp(buf, pos)
        if raw is None or code in (BIGVARBINARY, BIGBINARY):
            return raw, pos
        return raw.decode("utf-16-le" if code in (NVARCHAR, NCHAR, XML) else CODEPAGE), pos
    if code in (BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR, BIGVARBINARY, BIGBINARY):
        size = struct.unpack_from("<H", buf, pos)[0]
        pos += 2
        if size == 0xFFFF:
            return None, pos
        raw = buf[pos : pos + size]
        pos += size
        if code in (BIGVARBINARY, BIGBINARY):
            return raw, pos
        return raw.decode("utf-16-le" if code in (NVARCHAR, NCHAR) else CODEPAGE), pos
    if code in (TEXT, NTEXT, IMAGE):
        size = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        if size == -1:
            return None, pos
        raw = buf[pos : pos + size]
        pos += size
        if code == IMAGE:
            return raw, pos
        return raw.decode("utf-16-le" if code == NTEXT else CODEPAGE), pos
    if code in _FIXED_LEN:
        size = _FIXED_LEN[code]
        raw = buf[pos : pos + size]
        pos += size
    else:
        size = buf[pos]
        pos += 1
        if size == 0:
            return None, pos
        raw = buf[pos : pos + size]
        pos += size
    return _decode_fixed(code, t, raw), pos


def _decode_fixed(code: int, t: ParamType, raw: bytes) -> Any:
    if code in (INTN, INT1, INT2, INT4, INT8):
        return int.from_bytes(raw, "little", signed=len(raw) > 1)
    if code in (BITN, BIT):
        return bool(raw[0])
    if code in (FLTN, FLT4, FLT8):
        return struct.unpack("<f" if len(raw) == 4 else "<d", raw)[0]
    if code in (MONEYN, MONEY, MONEY4):
        if len(raw) == 4:
            units = struct.unpack("<i", raw)[0]
        else:
            hi, lo = struct.unpack("<iI", raw)
            units = (hi << 32) | lo
        return Decimal(units).scaleb(-4)
    if code in (DECIMALN, NUMERICN):
        value = int.from_bytes(raw[1:], "little")
        return Decimal(value if raw[0] else -value).scaleb(-t.scale)
    if code == GUIDTYPE:
        return uuid.UUID(bytes_le=raw)
    if code in (DATETIMN, DATETIME, DATETIM4):
        if len(raw) == 4:
            days, minutes = struct.unpack("<HH", raw)
            return datetime(1900, 1, 1) + timedelta(days=days, minutes=minutes)
        days, ticks = struct.unpack("<iI", raw)
        return datetime(1900, 1, 1) + timedelta(days=days, milliseconds=round(ticks * 10 / 3))
    if code == DATEN:
        return date(1, 1, 1) + timedelta(days=int.from_bytes(raw, "little"))
    tsize = 3 if t.scale <= 2 else 4 if t.scale <= 4 else 5
    ticks = int.from_bytes(raw[:tsize], "little")
    micros = ticks * 10**6 // 10**t.scale
    if code == TIMEN:
        return (datetime(1, 1, 1) + timedelta(microseconds=micros)).time()
    days = int.from_bytes(raw[tsize : tsize + 3], "little")
    value = datetime(1, 1, 1) + timedelta(days=days, microseconds=micros)
    if code == DATETIMEOFFSETN:
        offset = struct.unpack("<h", raw[tsize + 3 : tsize + 5])[0]
        return value.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset)))
    return value


def int_param_bytes(value: int) -> bytes:
    """TYPE_INFO + value of an int OUTPUT parameter (sp_prepexec's handle)."""
    return bytes([INTN, 4, 4]) + struct.pack("<i", value)


__all__ = [
    "COLLATION",
    "ParamType",
    "WireColumn",
    "compatible",
    "encode_rows",
    "int_param_bytes",
    "read_type_info",
    "read_value",
    "wire_column",
]
