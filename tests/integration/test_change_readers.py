"""The two drivers of the change-table read stage the same rows (README "Over TDS").

pymssql's rows (``CdcSource.iter_changes`` → ``extract.to_arrow``) and mssql-python's Arrow
batches (``CdcSource.iter_change_batches`` → ``arrow_changes.batch_to_table``) are read from the
same window of one emulator server over TDS, with tiny chunks so update pairs straddle chunk
boundaries, and compared as Arrow tables of the Parquet schema: every type the Arrow path takes,
NULLs, salted hashes, deletes and key moves. Then the choice itself: ``auto`` reads a table with a
``datetimeoffset`` column (mssql-python drops the offset) or a large-value column (fetched while
the driver holds the GIL) with pymssql, ``mssql-python`` refuses it naming the column, and a whole
pipeline run through the Arrow path converges.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pyarrow as pa
import pytest

from include.cdc_pipeline.arrow_changes import arrow_key_moves_as_deletes, batch_to_table
from include.cdc_pipeline.errors import TableConfigError
from include.cdc_pipeline.extract import META_WIDTH, _key_moves_as_deletes, parquet_schema, to_arrow
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.reconcile import reconcile
from tests.integration.conftest import SALT, Harness
from tests.integration.test_type_roundtrip import CASES

pytestmark = pytest.mark.integration

LARGE = ("nvarchar(max)", "varbinary(max)", "xml")
# Every type the Arrow path takes: all but datetimeoffset and the large-value types.
ARROW_CASES = [case for case in CASES if not case[1].startswith("datetimeoffset") and case[1] not in LARGE]
HASHED = ["email", "token"]


def _types_table(h: Harness) -> None:
    columns = ", ".join(f"{name} {type_} NULL" for name, type_, _, _ in ARROW_CASES)
    h.sql(
        f"CREATE TABLE dbo.wide (id int NOT NULL PRIMARY KEY, email nvarchar(80) NULL, token uniqueidentifier NULL,"
        f" {columns})",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'wide', @role_name=NULL",
    )
    names, literals = ", ".join(c for c, *_ in ARROW_CASES), ", ".join(v for _, _, v, _ in ARROW_CASES)
    for i in range(1, 6):
        h.sql(
            f"INSERT INTO dbo.wide (id, email, token, {names}) VALUES"
            f" ({i}, N'user{i}@example.com', '6F9619FF-8B86-D011-B42D-00C04FC964F{i}', {literals})"
        )
    h.sql("INSERT INTO dbo.wide (id) VALUES (6)")  # every other column NULL


def _traffic(h: Harness) -> None:
    h.sql("UPDATE dbo.wide SET c_int = c_int - 1, email = N'changed@example.com' WHERE id = 2")  # update pair, same key
    h.sql("UPDATE dbo.wide SET c_varchar = NULL, c_date = '2026-01-02' WHERE id = 6")
    h.sql("DBCC TRACEON (8207, -1)")
    h.sql("UPDATE dbo.wide SET id = 16 WHERE id = 1")  # a one-row key update under TF 8207: update pair 3/4
    h.sql("DBCC TRACEOFF (8207, -1)")
    h.sql("UPDATE dbo.wide SET id = id + 100 WHERE id IN (3, 4)")  # multi-row key update: delete + insert
    h.sql("DELETE FROM dbo.wide WHERE id = 5")


def _read_both(h: Harness, config: Any, chunk_rows: int) -> tuple[pa.Table, pa.Table]:
    pipeline = h.pipeline(config)
    instance = pipeline.instances()[-1].name
    mappings = pipeline.mappings(instance)
    schema = parquet_schema(mappings)
    names = [m.source.name for m in mappings]
    key = list(pipeline.layout(mappings).key)
    key_pos = [META_WIDTH + names.index(m.source.name) for m in mappings if m.target_name in key]
    source = pipeline.source
    window = (instance, names, Lsn.ZERO, source.max_lsn())
    rows = [
        to_arrow(chunk, mappings, schema, SALT)
        for chunk in _key_moves_as_deletes(source.iter_changes(*window, chunk_rows), key_pos)
    ]
    batches = (batch_to_table(b, mappings, schema, SALT) for b in source.iter_change_batches(*window, chunk_rows))
    arrows = list(arrow_key_moves_as_deletes(batches, key))
    return pa.concat_tables(rows), pa.concat_tables(arrows)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000])
def test_both_drivers_stage_the_same_rows(harness: Harness, chunk_rows: int) -> None:
    h = harness
    # Given a table of every type the Arrow path takes, two hashed columns, inserts, NULLs,
    # updates, key moves (as an update pair and as delete + insert) and a delete, captured;
    _types_table(h)
    _traffic(h)
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "wide", "primary_key": ["id"], "hash_columns": HASHED}])
    # when the window is read by both drivers in chunks of chunk_rows,
    rows, arrows = _read_both(h, config, chunk_rows)
    # then both stage the same rows, value for value, in the same order,
    assert arrows.schema.equals(rows.schema)
    assert arrows.num_rows == rows.num_rows == 6 + 1 + 1 + 2 + 4 + 1  # inserts, updates, moves, delete
    for name in rows.column_names:
        assert arrows[name].to_pylist() == rows[name].to_pylist(), name
    # and the key moved by the update pair left a delete of its old key.
    moves = [(op, key) for op, key in zip(rows["_CDC_OPERATION"].to_pylist(), rows["ID"].to_pylist(), strict=True)]
    assert (1, 1) in moves and (4, 16) in moves and (1, 5) in moves


@pytest.mark.parametrize(
    ("type_", "literal", "reason"),
    [
        ("datetimeoffset(7)", "'2026-06-01T12:00:00.5+05:30'", "column at (datetimeoffset)"),
        ("nvarchar(max)", "N'a long text'", "large-value column at (nvarchar(max))"),
    ],
)
def test_auto_reads_what_arrow_cannot_carry_with_pymssql_and_mssql_python_refuses_it(
    harness: Harness, caplog: pytest.LogCaptureFixture, type_: str, literal: str, reason: str
) -> None:
    h = harness
    h.sql(
        f"CREATE TABLE dbo.events (id int NOT NULL PRIMARY KEY, at {type_} NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'events', @role_name=NULL",
    )
    h.capture()
    tables = [{"schema": "dbo", "table": "events", "primary_key": ["id"]}]
    h.pipeline(h.source_config(tables)).run_once()
    h.sql(f"INSERT INTO dbo.events (id, at) VALUES (1, {literal})")
    h.capture()
    # With change_reader mssql-python the window is refused, naming the column;
    with pytest.raises(TableConfigError, match=re.escape(reason)):
        h.pipeline(h.source_config(tables, change_reader="mssql-python")).run_once()
    # with auto (the default) it is read with pymssql, which says so, and raw equals the source.
    with caplog.at_level(logging.INFO, logger="include.cdc_pipeline.extract"):
        assert h.pipeline(h.source_config(tables)).run_once()["mode"] == "stream"
    assert f"read with pymssql: {reason}" in caplog.text
    assert reconcile(h.pipeline(h.source_config(tables)), salt=SALT).ok


def test_a_stream_read_through_mssql_python_converges(harness: Harness) -> None:
    h = harness
    _types_table(h)
    h.capture()
    config = h.source_config(
        [{"schema": "dbo", "table": "wide", "primary_key": ["id"], "hash_columns": HASHED}],
        change_reader="mssql-python",
    )
    assert h.pipeline(config).run_once()["mode"] == "snapshot"
    _traffic(h)
    h.capture()
    result = h.pipeline(config).run_once()
    assert result["mode"] == "stream" and result["rows"] == 1 + 1 + 2 + 4 + 1, result
    assert reconcile(h.pipeline(config), salt=SALT).ok


def test_question_marks_in_names_are_never_parameter_markers(harness: Harness) -> None:
    # ODBC takes `?` for a parameter marker; the Arrow read's statement carries no parameters (the
    # LSNs are literals), so names holding `?` and quotes read as they are.
    h = harness
    h.sql(
        "CREATE TABLE dbo.[q?t] (id int NOT NULL PRIMARY KEY, [a?b] nvarchar(10) NULL, [c'?d] int NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'q?t', @role_name=NULL",
        "INSERT INTO dbo.[q?t] VALUES (1, N'x?', 5)",
    )
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "q?t", "primary_key": ["id"]}])
    rows, arrows = _read_both(h, config, 2)
    assert arrows.to_pylist() == rows.to_pylist() and rows.num_rows == 1
    assert (rows["A?B"][0].as_py(), rows["C'?D"][0].as_py()) == ("x?", 5)
