"""Change rows that arrive as Arrow: the stream read through mssql-python (README "Over TDS").

pymssql hands over one Python tuple per row, and turning those into Arrow costs more than the
source takes to serve them; mssql-python returns the change rows as Arrow record batches. This
module decides which tables may take that path and brings each batch to the Parquet schema the
row path writes (``extract.to_arrow``), value for value:

* ``arrow_unfit``: the columns whose values mssql-python's Arrow does not carry exactly as the row
  path does (then the table is read with pymssql, or refused when the config insists);
* ``batch_to_table``: one record batch → the Parquet schema (LSNs as upper-case hex, commit times
  to UTC milliseconds, casts, salted hashes);
* ``arrow_key_moves_as_deletes``: update pairs resolved as ``extract._key_moves_as_deletes``
  resolves them on rows, across batch boundaries.

The T-SQL of the read is ``source``'s; the staging around it ``extract``'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.cdc_pipeline.snowflake_sql import OP_DELETE
from include.cdc_pipeline.types import ColumnMapping, arrow_column

OP_UPDATE_BEFORE, OP_UPDATE_AFTER = 3, 4
# Change rows are (start_lsn, seqval, operation, commit_time, command_id, *columns).
META_WIDTH = 5

# Types whose mssql-python Arrow values equal pymssql's once cast to the mapping's Arrow type
# (tests/integration/test_change_readers.py compares both readers on every one of them).
# Left out: datetimeoffset (mssql-python gives the UTC instant and drops the offset the row path
# keeps as text), and the large-value types below.
_EXACT = {
    "tinyint", "smallint", "int", "bigint", "bit", "decimal", "numeric", "money", "smallmoney",
    "float", "real", "char", "varchar", "nchar", "nvarchar", "sysname",
    "uniqueidentifier", "date", "time", "datetime2", "datetime", "smalldatetime",
    "binary", "varbinary", "timestamp", "rowversion",
}  # fmt: skip
# Large values ((max) types, text, ntext, image, xml) cannot be bound to a column buffer: ODBC
# fetches them with SQLGetData, and mssql-python 1.16 holds Python's GIL while that call waits on
# the network, so every other thread of the task (the Parquet writer, the upload) would stall.
_LARGE = {"text", "ntext", "image", "xml"}
_MAX_CAPABLE = {"varchar", "nvarchar", "varbinary"}
# Hashed columns hash the driver's value as text: these types print the same from both drivers
# (uniqueidentifier once lower-cased: pymssql returns a uuid.UUID, which prints lower-case).
_HASHABLE = {"tinyint", "smallint", "int", "bigint", "char", "varchar", "nchar", "nvarchar", "text", "ntext",
             "sysname", "uniqueidentifier"}  # fmt: skip
_HEX_PAIRS = np.array([f"{i:02X}".encode() for i in range(256)], dtype="S2")


def arrow_unfit(mappings: Sequence[ColumnMapping]) -> list[str]:
    """Why the Arrow read cannot carry these columns exactly (empty: it can), one reason each."""
    unfit = []
    for m in mappings:
        kind = m.source.type_name.lower()
        if kind in _LARGE or (kind in _MAX_CAPABLE and m.source.max_length == -1):
            unfit.append(f"large-value column {m.source.name} ({kind}{'(max)' if kind in _MAX_CAPABLE else ''})")
        elif kind not in _EXACT:
            unfit.append(f"column {m.source.name} ({kind})")
        elif m.hashed and kind not in _HASHABLE:
            unfit.append(f"hashed column {m.source.name} ({kind})")
    return unfit


def hex_upper(values: pa.Array | pa.ChunkedArray, width: int) -> pa.Array:
    """binary(width) values that are never NULL (LSNs, seqvals) → upper-case hex text, without a
    Python object per value: the bytes are looked up pairwise and the text shares one buffer."""
    fixed = pc.cast(values, pa.binary(width))
    if isinstance(fixed, pa.ChunkedArray):
        fixed = fixed.combine_chunks()
    if fixed.null_count:
        raise ValueError("an LSN or seqval is NULL")
    raw = np.frombuffer(fixed.buffers()[1], np.uint8)[fixed.offset * width : (fixed.offset + len(fixed)) * width]
    text = pa.py_buffer(_HEX_PAIRS[raw].tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * width), len(fixed), [None, text]).cast(pa.string())


def commit_times_utc(local: pa.Array, source_timezone: str) -> pa.Array:
    """Naive source wall-clock times → naive UTC (the earlier instant in a repeated DST hour)."""
    if source_timezone == "UTC":
        return local
    zoned = pc.assume_timezone(local, timezone=source_timezone, ambiguous="earliest", nonexistent="earliest")
    return zoned.cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms"))


def batch_to_table(
    batch: pa.RecordBatch,
    mappings: Sequence[ColumnMapping],
    schema: pa.Schema,
    salt: str | None,
    source_timezone: str = "UTC",
) -> pa.Table:
    """One record batch (start_lsn, seqval, operation, commit_time, command_id, *columns, as
    ``CdcSource.iter_change_batches`` selects them) → a table of the Parquet schema."""
    cols = batch.columns
    arrays = [
        hex_upper(cols[0], 10),
        hex_upper(cols[1], 10),
        pc.cast(cols[2], pa.int8()),
        # lsn_time_mapping's times are datetime (1/300 s): nothing is cut below the millisecond
        commit_times_utc(pc.cast(cols[3], pa.timestamp("ms"), safe=False), source_timezone),
        pc.cast(cols[4], pa.int32()),
    ]
    arrays += [_column(m, col, salt) for m, col in zip(mappings, cols[META_WIDTH:], strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _column(mapping: ColumnMapping, values: pa.Array, salt: str | None) -> pa.Array:
    kind = mapping.source.type_name.lower()
    if mapping.hashed:  # hashed from the values as pymssql returns them (a uuid prints lower-case)
        texts = values.to_pylist()
        if kind == "uniqueidentifier":
            texts = [None if v is None else v.lower() for v in texts]
        return arrow_column(mapping, texts, salt)
    if kind == "uniqueidentifier":
        return pc.utf8_upper(pc.cast(values, pa.string()))
    # time(7) arrives in nanoseconds, datetime2(7) in microseconds: cut to microseconds as the
    # row path's Python values are (safe=False truncates instead of refusing).
    return pc.cast(values, mapping.arrow_type, safe=False)


def arrow_key_moves_as_deletes(tables: Iterator[pa.Table], key: Sequence[str]) -> Iterator[pa.Table]:
    """Update pairs (3/4) resolved as the target needs them, across table boundaries: a before
    image whose key differs from its after image's becomes a delete (1) of the old key, the other
    before images are dropped (see ``extract._key_moves_as_deletes``, the same rule on rows)."""
    carry: pa.Table | None = None
    for table in tables:
        if carry is not None:
            table, carry = pa.concat_tables([carry, table]), None
        if table.num_rows and table["_CDC_OPERATION"][-1].as_py() == OP_UPDATE_BEFORE:
            carry, table = table.slice(table.num_rows - 1), table.slice(0, table.num_rows - 1)
        if table.num_rows:
            resolved = _resolve_pairs(table, key)
            if resolved.num_rows:
                yield resolved
    if carry is not None:
        raise RuntimeError(f"update before-image at {_position(carry, 0)} without its after-image")


def _resolve_pairs(table: pa.Table, key: Sequence[str]) -> pa.Table:
    ops = table["_CDC_OPERATION"].to_numpy()
    before = np.flatnonzero(ops == OP_UPDATE_BEFORE)
    if before.size == 0:
        return table
    after = before + 1  # the last row is never a before image (carried to the next table)
    b_idx, a_idx = pa.array(before), pa.array(after)

    def differ(name: str) -> np.ndarray:
        old, new = pc.take(table[name], b_idx), pc.take(table[name], a_idx)
        unequal = pc.fill_null(pc.not_equal(old, new), True)  # NULL vs value: differ
        both_null = pc.and_(pc.is_null(old), pc.is_null(new))
        return np.asarray(pc.and_(unequal, pc.invert(both_null)))

    paired = (ops[after] == OP_UPDATE_AFTER) & ~differ("_CDC_LSN") & ~differ("_CDC_SEQVAL")
    if not paired.all():
        raise RuntimeError(
            f"update before-image at {_position(table, int(before[~paired][0]))} without its after-image"
        )
    moved = np.zeros(before.size, dtype=bool)
    for name in key:
        moved |= differ(name)
    keep = ops != OP_UPDATE_BEFORE
    keep[before[moved]] = True
    ops = ops.astype(np.int8)
    ops[before[moved]] = OP_DELETE
    column = table.schema.get_field_index("_CDC_OPERATION")
    table = table.set_column(column, table.schema.field(column), pa.array(ops, pa.int8()))
    return table.filter(pa.array(keep))


def _position(table: pa.Table, row: int) -> str:
    return f"{table['_CDC_LSN'][row].as_py()}/{table['_CDC_SEQVAL'][row].as_py()}"
