"""``datetimeoffset`` keeps its offset end to end: storage, the change tables, results in-process and
over TDS, and parameters from each driver (issue 24).

Source: "datetimeoffset (Transact-SQL)", learn.microsoft.com/sql/t-sql/data-types/datetimeoffset-
transact-sql: "The data is stored in the database and processed, compared, sorted, and indexed in
the server as in UTC. The time zone offset is preserved in the database for retrieval."; a string
with date and time but no offset gets "+00:00"; converting to date, time, datetime or datetime2
copies the local date and time and truncates the time zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from tests.emulator.conftest import Sql, track

IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))


def exact(value: Any) -> Any:
    """An aware datetime as (local wall time, offset): ``==`` on aware datetimes ignores the offset."""
    return (value.replace(tzinfo=None), value.utcoffset()) if isinstance(value, datetime) else value


@pytest.fixture
def events(sql: Sql) -> Sql:
    sql("CREATE TABLE dbo.ev (id int NOT NULL PRIMARY KEY, at datetimeoffset(7) NULL, note varchar(10) NULL)")
    track(sql, "ev")
    return sql


EXPECTED = [
    (1, (datetime(2026, 6, 1, 12, 0, 0, 500000), timedelta(hours=5, minutes=30))),
    (2, (datetime(2026, 1, 1, 10, 0), timedelta(hours=-8))),
    (3, (datetime(2026, 1, 1, 12, 0, 0, 199000), timedelta(hours=5, minutes=30))),
    (4, (datetime(2026, 1, 1, 10, 0), timedelta(0))),
    (5, None),
]


def _insert(client: Sql) -> None:
    client("INSERT INTO dbo.ev (id, at) VALUES (1, '2026-06-01T12:00:00.5+05:30'), (2, '2026-01-01 10:00 -08:00')")
    client("INSERT INTO dbo.ev (id, at) VALUES (%s, %s)", (3, datetime(2026, 1, 1, 12, 0, 0, 199000, tzinfo=IST)))
    client("INSERT INTO dbo.ev (id, at) VALUES (4, '2026-01-01 10:00:00'), (5, NULL)")  # no offset: +00:00


def test_the_offset_is_stored_and_read_back_in_process_and_over_tds(events: Sql, client: Sql, tds: Sql) -> None:
    _insert(client)
    for reader in (events, tds):
        assert [(i, exact(v)) for i, v in reader("SELECT id, at FROM dbo.ev ORDER BY id")] == EXPECTED


def test_the_change_table_keeps_the_offset_through_update_and_merge(events: Sql, client: Sql) -> None:
    _insert(client)
    client("UPDATE dbo.ev SET at = '2026-02-02 08:15:00 +01:00' WHERE id = 2")
    client(
        "MERGE dbo.ev AS t USING (VALUES (4, '2026-03-03 03:03:03 -03:30')) AS s (id, at) ON t.id = s.id"
        " WHEN MATCHED THEN UPDATE SET at = s.at;"
    )
    client("EXEC emu.capture")
    rows = client(
        "SELECT [__$operation], id, at FROM cdc.dbo_ev_CT WHERE id IN (2, 4)"
        " ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]"
    )
    assert [(op, i, exact(v)) for op, i, v in rows] == [
        (2, 2, (datetime(2026, 1, 1, 10, 0), timedelta(hours=-8))),
        (2, 4, (datetime(2026, 1, 1, 10, 0), timedelta(0))),
        (3, 2, (datetime(2026, 1, 1, 10, 0), timedelta(hours=-8))),
        (4, 2, (datetime(2026, 2, 2, 8, 15), timedelta(hours=1))),
        (1, 4, (datetime(2026, 1, 1, 10, 0), timedelta(0))),  # MERGE on a keyed table: delete + insert
        (2, 4, (datetime(2026, 3, 3, 3, 3, 3), timedelta(hours=-3, minutes=-30))),
    ]
    assert [(i, exact(v)) for i, v in client("SELECT id, at FROM dbo.ev WHERE id IN (2, 4) ORDER BY id")] == [
        (2, (datetime(2026, 2, 2, 8, 15), timedelta(hours=1))),
        (4, (datetime(2026, 3, 3, 3, 3, 3), timedelta(hours=-3, minutes=-30))),
    ]


def test_comparison_and_order_are_by_the_utc_instant(events: Sql, client: Sql) -> None:
    client(
        "INSERT INTO dbo.ev (id, at) VALUES (1, '2026-01-01 12:00 +05:30'), (2, '2026-01-01 06:30 +00:00'),"
        " (3, '2026-01-01 00:00 -08:00')"
    )
    assert client("SELECT id FROM dbo.ev WHERE at = '2026-01-01T06:30:00Z' ORDER BY id") == [(1,), (2,)]
    assert client("SELECT id FROM dbo.ev WHERE at > %s", (datetime(2026, 1, 1, 7, 0, tzinfo=UTC),)) == [(3,)]
    assert [r[0] for r in client("SELECT id FROM dbo.ev ORDER BY at DESC, id")] == [3, 1, 2]


def test_conversion_to_other_date_and_time_types_keeps_the_local_time(events: Sql, client: Sql) -> None:
    client("INSERT INTO dbo.ev (id, at) VALUES (1, '2025-12-10 23:32:10.1237 -01:00')")
    row = client("SELECT CAST(at AS datetime2(7)), CAST(at AS date), CONVERT(varchar(40), at) FROM dbo.ev")[0]
    assert row[:2] == (datetime(2025, 12, 10, 23, 32, 10, 123700), date(2025, 12, 10))
    assert row[2].startswith("2025-12-10 23:32:10.1237") and row[2].endswith(" -01:00")
    assert [exact(v) for (v,) in client("SELECT CAST('2026-01-01 10:00 +02:00' AS datetimeoffset)")] == [
        (datetime(2026, 1, 1, 10, 0), timedelta(hours=2))
    ]


# -- mssql-python (the change reader's Arrow path) in both directions ---------------------------------
@pytest.fixture
def mssql_python(engine: Any, events: Sql) -> Iterator[Any]:
    """An mssql-python connection to ``engine`` over TDS; skipped where the driver cannot load (it needs
    the system library libltdl7: README "Connect a SQL Server client")."""
    from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD, serve_in_thread
    from include.cdc_pipeline.source import mssql_python_connect, odbc_connection_string

    server, port = serve_in_thread(engine)
    try:
        try:
            conn = mssql_python_connect(odbc_connection_string("127.0.0.1", port, "", DEFAULT_LOGIN, DEFAULT_PASSWORD))
        except Exception as exc:  # the driver's own error types live in the module that failed to load
            pytest.skip(f"mssql-python cannot connect here: {exc}")
        yield conn
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


def test_mssql_python_rows_keep_the_offset_but_its_arrow_batches_carry_only_the_instant(
    events: Sql, mssql_python: Any
) -> None:
    # Measured (mssql-python 1.x): fetchall() returns the offset the server sends; cursor.arrow() types
    # the column timestamp[us, tz=+00:00], the UTC instant. So the Arrow change read cannot carry a
    # datetimeoffset exactly, and include/cdc_pipeline/arrow_changes.py keeps such tables on pymssql.
    _insert(events)
    cursor = mssql_python.cursor()
    cursor.execute("SELECT id, at FROM dbo.ev ORDER BY id")
    assert [(i, exact(v)) for i, v in cursor.fetchall()] == EXPECTED
    cursor.execute("SELECT id, at FROM dbo.ev ORDER BY id")
    table = cursor.arrow()
    assert pa.types.is_timestamp(table.schema.field("at").type)
    values = table.column("at").to_pylist()
    instants = [None if e is None else e[0] - e[1] for _, e in EXPECTED]
    assert [None if v is None else v.replace(tzinfo=None) - v.utcoffset() for v in values] == instants
    assert {v.utcoffset() for v in values if v is not None} == {timedelta(0)}  # every offset lost


def test_a_datetimeoffset_parameter_from_mssql_python_keeps_its_offset(events: Sql, mssql_python: Any) -> None:
    cursor = mssql_python.cursor()
    cursor.execute("INSERT INTO dbo.ev (id, at) VALUES (?, ?)", (1, datetime(2026, 1, 1, 12, 0, 0, 199000, tzinfo=IST)))
    cursor.execute("INSERT INTO dbo.ev (id, at) VALUES (?, ?)", (2, datetime(2026, 1, 1, 10, 0, tzinfo=PST)))
    mssql_python.commit()
    assert [(i, exact(v)) for i, v in events("SELECT id, at FROM dbo.ev ORDER BY id")] == [
        (1, (datetime(2026, 1, 1, 12, 0, 0, 199000), timedelta(hours=5, minutes=30))),
        (2, (datetime(2026, 1, 1, 10, 0), timedelta(hours=-8))),
    ]


def test_a_file_from_an_emulator_that_stored_utc_is_upgraded_on_open(tmp_path: Any) -> None:
    from dev.mssql_emulator import Engine

    path = str(tmp_path / "old.duckdb")
    engine = Engine(path)
    Sql(engine.connect(autocommit=True))("CREATE TABLE dbo.o (id int NOT NULL PRIMARY KEY, at datetimeoffset NULL)")
    cur = engine.cursor()  # as an older emulator stored it: TIMESTAMPTZ, the UTC instant
    cur.execute('ALTER TABLE dbo.o ALTER COLUMN "at" TYPE TIMESTAMPTZ USING NULL')
    cur.execute("INSERT INTO dbo.o VALUES (1, TIMESTAMPTZ '2026-01-01 06:30:00+00'), (2, NULL)")
    cur.close()
    engine.close()
    engine = Engine(path)
    try:
        sql = Sql(engine.connect(autocommit=True))
        assert [(i, exact(v)) for i, v in sql("SELECT id, at FROM dbo.o ORDER BY id")] == [
            (1, (datetime(2026, 1, 1, 6, 30), timedelta(0))),
            (2, None),
        ]
        sql("INSERT INTO dbo.o VALUES (3, '2026-01-01 12:00 +05:30')")
        assert exact(sql.one("SELECT at FROM dbo.o WHERE id = 3")) == (
            datetime(2026, 1, 1, 12, 0),
            timedelta(hours=5, minutes=30),
        )
    finally:
        engine.close()
