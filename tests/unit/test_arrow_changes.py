"""arrow_changes: the Arrow path resolves update pairs exactly as the row path does, at any chunking;
LSNs become the row path's hex text; the mssql-python connection string carries any password."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from include.cdc_pipeline.arrow_changes import arrow_key_moves_as_deletes, arrow_unfit, hex_upper
from include.cdc_pipeline.extract import _key_moves_as_deletes, parquet_schema, to_arrow
from include.cdc_pipeline.source import odbc_connection_string
from include.cdc_pipeline.types import SourceColumn, map_column

MAPPINGS = [map_column(SourceColumn("id", "int")), map_column(SourceColumn("v", "nvarchar"))]
SCHEMA = parquet_schema(MAPPINGS)
AT = datetime(2026, 1, 1, 12, 0, 0)

# One change: a plain operation (1 delete, 2 insert, 4 update) or an update pair (3 then 4) whose
# key stays or moves; keys are small so pairs often move a key onto another's old one.
change = st.one_of(
    st.tuples(st.sampled_from([1, 2, 4]), st.integers(0, 3), st.none()),
    st.tuples(st.just(3), st.integers(0, 3), st.integers(0, 3)),
)


def _rows(changes: list[tuple[int, int, int | None]]) -> list[tuple[Any, ...]]:
    rows = []
    for n, (op, key, moved_to) in enumerate(changes):
        lsn, seq = n.to_bytes(10, "big"), (1000 + n).to_bytes(10, "big")
        if op == 3:
            rows.append((lsn, seq, 3, AT, n, key, f"old {n}"))
            rows.append((lsn, seq, 4, AT, n, moved_to, f"new {n}"))
        else:
            rows.append((lsn, seq, op, AT, n, key, None if op == 1 else f"v {n}"))
    return rows


def _chunks(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = sorted({c % (len(items) + 1) for c in cuts} | {0, len(items)})
    return [items[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=200, deadline=None)
@given(st.lists(change, min_size=1, max_size=30), st.lists(st.integers(0, 100), max_size=6))
def test_update_pairs_resolve_alike_on_rows_and_on_arrow_at_any_chunking(changes: list[Any], cuts: list[int]) -> None:
    rows = _rows(changes)
    chunks = _chunks(rows, cuts)
    by_rows = [to_arrow(c, MAPPINGS, SCHEMA, None) for c in _key_moves_as_deletes(iter(chunks), [5])]
    tables = (to_arrow(c, MAPPINGS, SCHEMA, None) for c in chunks)
    by_arrow = list(arrow_key_moves_as_deletes(tables, ["ID"]))
    expected = pa.concat_tables(by_rows) if by_rows else SCHEMA.empty_table()
    got = pa.concat_tables(by_arrow) if by_arrow else SCHEMA.empty_table()
    assert got.to_pylist() == expected.to_pylist()


def test_a_before_image_without_its_after_image_is_an_error() -> None:
    rows = [*_rows([(2, 1, None)]), (b"\x09" * 10, b"\x01" * 10, 3, AT, 9, 1, "old")]
    with pytest.raises(RuntimeError, match="without its after-image"):
        list(arrow_key_moves_as_deletes(iter([to_arrow(rows, MAPPINGS, SCHEMA, None)]), ["ID"]))


def test_lsns_become_the_row_paths_upper_case_hex() -> None:
    values = [bytes(range(i, i + 10)) for i in (0, 7, 246)]
    chunked = pa.chunked_array([pa.array(values[:1], pa.large_binary()), pa.array(values[1:], pa.large_binary())])
    assert hex_upper(chunked, 10).to_pylist() == [v.hex().upper() for v in values]
    assert hex_upper(pa.array(values, pa.binary()).slice(1), 10).to_pylist() == [v.hex().upper() for v in values[1:]]


def test_datetimeoffset_hashed_dates_and_large_values_stay_on_the_row_path() -> None:
    offset = map_column(SourceColumn("at", "datetimeoffset"))
    hashed_date = map_column(SourceColumn("born", "date"), hashed=True)
    hashed_text = map_column(SourceColumn("email", "nvarchar"), hashed=True)
    assert arrow_unfit([*MAPPINGS, hashed_text]) == []
    notes = map_column(SourceColumn("notes", "nvarchar", max_length=-1))
    assert arrow_unfit([offset, hashed_date, notes]) == [
        "column at (datetimeoffset)",
        "hashed column born (date)",
        "large-value column notes (nvarchar(max))",
    ]


def test_connection_string_quotes_what_odbc_would_split_and_maps_encryption() -> None:
    text = odbc_connection_string("db.example.com", 1433, "billing", "reader", "p;w{d}=x ", "require")
    assert text == (
        "Server=tcp:db.example.com,1433;Database=billing;UID=reader;PWD={p;w{d}}=x };"
        "Encrypt=yes;TrustServerCertificate=yes"
    )
    assert "Encrypt=no;TrustServerCertificate=yes" in odbc_connection_string("h", None, "d", "u", "p")
    options = {"TrustServerCertificate": "no"}
    assert odbc_connection_string("h", 1, "d", "u", "p", "off", options).endswith(
        "Encrypt=no;TrustServerCertificate=no"
    )
    with pytest.raises(ValueError, match="encryption='strict'"):
        odbc_connection_string("h", 1, "d", "u", "p", "strict")
