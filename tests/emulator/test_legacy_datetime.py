"""Legacy ``datetime`` holds 1/300-second ticks and ``smalldatetime`` whole minutes, on every write
path, so an in-process read and a driver's read of a row agree (issue 24).

Sources:
* "datetime (Transact-SQL)", learn.microsoft.com/sql/t-sql/data-types/datetime-transact-sql:
  accuracy "Rounded to increments of .000, .003, or .007 seconds", with the table of examples
  (23:59:59.999 → next day 00:00:00.000; .995-.998 → .997; .992-.994 → .993; .990-.991 → .990);
  "Date and Time (Transact-SQL)" (SQL Server 2005 docs, ms187819): "the number of 1/300-second
  units after midnight".
* "smalldatetime (Transact-SQL)", learn.microsoft.com/sql/t-sql/data-types/smalldatetime-transact-sql:
  "Values that are 29.998 seconds or less are rounded down to the nearest minute. Values of 29.999
  seconds or more are rounded up to the nearest minute." (12:35:29 → 12:35, 12:35:30 → 12:36,
  12:59:59.998 → 13:00).
* ``cdc.lsn_time_mapping`` (learn.microsoft.com/sql/relational-databases/system-tables/cdc-lsn-time-
  mapping-transact-sql): ``tran_begin_time`` and ``tran_end_time`` are ``datetime``.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from dev.mssql_emulator import Engine
from tests.emulator.conftest import Sql, track

DAY = "2026-01-01 "
ROUNDING = [  # (written, stored) for datetime: the documentation's examples and the issue's
    ("12:00:00.199", datetime(2026, 1, 1, 12, 0, 0, 200000)),
    ("12:00:00.774", datetime(2026, 1, 1, 12, 0, 0, 773000)),
    ("23:59:59.999", datetime(2026, 1, 2, 0, 0, 0)),
    ("23:59:59.998", datetime(2026, 1, 1, 23, 59, 59, 997000)),
    ("23:59:59.995", datetime(2026, 1, 1, 23, 59, 59, 997000)),
    ("23:59:59.994", datetime(2026, 1, 1, 23, 59, 59, 993000)),
    ("23:59:59.992", datetime(2026, 1, 1, 23, 59, 59, 993000)),
    ("23:59:59.991", datetime(2026, 1, 1, 23, 59, 59, 990000)),
    ("12:00:00.001", datetime(2026, 1, 1, 12, 0, 0)),
    ("12:00:00.005", datetime(2026, 1, 1, 12, 0, 0, 7000)),
]
SMALL = [  # (written, stored) for smalldatetime
    ("12:35:29", datetime(2026, 1, 1, 12, 35)),
    ("12:35:29.998", datetime(2026, 1, 1, 12, 35)),
    ("12:35:29.999", datetime(2026, 1, 1, 12, 36)),
    ("12:35:30", datetime(2026, 1, 1, 12, 36)),
    ("12:59:59.998", datetime(2026, 1, 1, 13, 0)),
]


@pytest.fixture
def legacy(sql: Sql) -> Sql:
    sql("CREATE TABLE dbo.d (id int NOT NULL PRIMARY KEY, at datetime NULL, sat smalldatetime NULL, n int NULL)")
    track(sql, "d")
    return sql


def _rows(client: Sql) -> list[tuple[int, datetime | None, datetime | None]]:
    return [(r[0], r[1], r[2]) for r in client("SELECT id, at, sat FROM dbo.d ORDER BY id")]


def test_a_value_inserted_as_199_reads_back_200_in_process_and_through_pymssql(legacy: Sql, tds: Sql) -> None:
    legacy(f"INSERT INTO dbo.d (id, at) VALUES (1, '{DAY}12:00:00.199')")
    expected = [(1, datetime(2026, 1, 1, 12, 0, 0, 200000), None)]
    assert _rows(legacy) == expected
    assert _rows(tds) == expected


def test_datetime_and_smalldatetime_round_as_sql_server_documents(legacy: Sql, client: Sql) -> None:
    for i, (written, _) in enumerate(ROUNDING):
        small = SMALL[i][0] if i < len(SMALL) else "00:00"
        client(f"INSERT INTO dbo.d (id, at, sat) VALUES ({i}, '{DAY}{written}', '{DAY}{small}')")
    rows = _rows(client)
    assert [r[1] for r in rows] == [stored for _, stored in ROUNDING]
    assert [r[2] for r in rows[: len(SMALL)]] == [stored for _, stored in SMALL]


def test_every_write_path_rounds_and_the_change_table_holds_what_the_table_holds(legacy: Sql, client: Sql) -> None:
    at = datetime(2026, 1, 1, 12, 0, 0, 199000)  # pymssql sends '2026-01-01 12:00:00.199'
    client("INSERT INTO dbo.d (id, at, sat) VALUES (%s, %s, %s)", (1, at, datetime(2026, 1, 1, 12, 35, 30)))
    client("INSERT INTO dbo.d (id, at) SELECT 2, CAST('2026-01-01 12:00:00.774' AS datetime2(7))")
    client(f"UPDATE dbo.d SET at = '{DAY}23:59:59.998', sat = '{DAY}12:59:59.998' WHERE id = 1")
    client(
        "MERGE dbo.d AS t USING (VALUES (2, '2026-01-01 08:00:00.001'), (3, '2026-01-01 08:00:00.002')) AS s (id, at)"
        " ON t.id = s.id WHEN MATCHED THEN UPDATE SET at = s.at"
        " WHEN NOT MATCHED THEN INSERT (id, at, sat) VALUES (s.id, s.at, s.at);"
    )
    expected = [
        (1, datetime(2026, 1, 1, 23, 59, 59, 997000), datetime(2026, 1, 1, 13, 0)),
        (2, datetime(2026, 1, 1, 8, 0), None),
        (3, datetime(2026, 1, 1, 8, 0, 0, 3000), datetime(2026, 1, 1, 8, 0)),
    ]
    assert _rows(client) == expected
    client("EXEC emu.capture")
    latest: dict[int, tuple[int, datetime | None, datetime | None]] = {}
    for op, id_, at_, sat_ in client(
        "SELECT [__$operation], id, at, sat FROM cdc.dbo_d_CT"
        " ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]"
    ):
        if op == 1:
            latest.pop(id_)
        elif op in (2, 4):
            latest[id_] = (id_, at_, sat_)
    assert [latest[k] for k in sorted(latest)] == expected
    before = client("SELECT at FROM cdc.dbo_d_CT WHERE [__$operation] = 3 AND id = 1")
    assert before == [(datetime(2026, 1, 1, 12, 0, 0, 200000),)]


def test_predicates_convert_a_literal_to_datetime_before_comparing(legacy: Sql, client: Sql) -> None:
    legacy(f"INSERT INTO dbo.d (id, at, sat) VALUES (1, '{DAY}12:00:00.199', '{DAY}12:35:29.999')")
    # SQL Server converts the string to the column's type (rounding it), then compares
    assert client(f"SELECT id FROM dbo.d WHERE at = '{DAY}12:00:00.199'") == [(1,)]
    assert client("SELECT id FROM dbo.d WHERE at = %s", (datetime(2026, 1, 1, 12, 0, 0, 199000),)) == [(1,)]
    assert client(f"SELECT id FROM dbo.d WHERE sat = '{DAY}12:35:45'") == [(1,)]
    assert client(f"SELECT id FROM dbo.d WHERE at IN ('{DAY}12:00:00.200', '{DAY}13:00')") == [(1,)]
    assert client(f"SELECT CAST('{DAY}12:00:00.199' AS datetime)") == [(datetime(2026, 1, 1, 12, 0, 0, 200000),)]
    assert client(f"DECLARE @d datetime = '{DAY}00:00:00.999'; SELECT @d") == [(datetime(2026, 1, 1, 0, 0, 1),)]


def test_defaults_and_getdate_are_datetime(engine: Engine, legacy: Sql, client: Sql) -> None:
    engine.clock.set(datetime(2026, 1, 1, 9, 0, 18, 964000))
    client("CREATE TABLE dbo.e (id int NOT NULL PRIMARY KEY, at datetime NOT NULL DEFAULT ('2026-01-01 09:00:18.964'))")
    client("INSERT INTO dbo.e (id) VALUES (1)")
    ticks = datetime(2026, 1, 1, 9, 0, 18, 963000)
    assert client("SELECT at FROM dbo.e") == [(ticks,)]
    # GETDATE() returns datetime (ticks), SYSDATETIME() datetime2(7), both from the emulator clock
    assert client("SELECT GETDATE(), SYSDATETIME()") == [(ticks, datetime(2026, 1, 1, 9, 0, 18, 964000))]


def test_lsn_time_mapping_times_are_datetime_ticks_for_both_readers(engine: Engine, legacy: Sql, tds: Sql) -> None:
    engine.clock.set(datetime(2026, 1, 1, 9, 0, 18, 964000))
    legacy("INSERT INTO dbo.d (id, n) VALUES (1, 1)")
    legacy.scan()
    query = "SELECT tran_begin_time, tran_end_time FROM cdc.lsn_time_mapping WHERE tran_id <> 0x00"
    stored = datetime(2026, 1, 1, 9, 0, 18, 963000)
    assert legacy(query) == [(stored, stored)]
    assert tds(query) == [(stored, stored)]
    lsn = legacy.one("SELECT max(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_id <> 0x00")
    assert legacy.one("SELECT sys.fn_cdc_map_lsn_to_time(%s)", (lsn,)) == stored


def test_the_bulk_path_rounds_like_the_sql_path(engine: Engine, legacy: Sql, client: Sql) -> None:
    engine.bulk_apply(
        total_lsns=3,
        total_trans=1,
        transactions=pa.table(
            {k: pa.array([v], pa.int64()) for k, v in (("tx", 0), ("tran_off", 0), ("begin_off", 0), ("commit_off", 2))}
        ),
        changes={
            "dbo.d": pa.table(
                {
                    "__tx": pa.array([0], pa.int64()),
                    "__seq": pa.array([1], pa.int64()),
                    "__op": pa.array([2], pa.int64()),
                    "__cmd": pa.array([1], pa.int64()),
                    "id": [7],
                    "at": [datetime(2026, 1, 1, 12, 0, 0, 774000)],
                    "sat": [datetime(2026, 1, 1, 12, 35, 31)],
                    "n": [None],
                }
            )
        },
    )
    stored = (datetime(2026, 1, 1, 12, 0, 0, 773000), datetime(2026, 1, 1, 12, 36))
    assert client("SELECT at, sat FROM dbo.d WHERE id = 7") == [stored]
    assert client("SELECT at, sat FROM cdc.dbo_d_CT WHERE id = 7") == [stored]


def test_smalldatetime_rounds_up_through_merge_and_pymssql_parameters(legacy: Sql, client: Sql) -> None:
    """smalldatetime: "Values of 29.999 seconds or more are rounded up to the nearest minute" ("smalldatetime
    (Transact-SQL)", above): on INSERT with pymssql's datetime parameters (sent to the millisecond)
    and on both MERGE paths (``08:00:40`` → ``08:01``), in the table and in the change table."""
    client(
        "INSERT INTO dbo.d (id, sat) VALUES (%s, %s), (%s, %s)",
        (1, datetime(2026, 1, 1, 12, 35, 29, 999000), 2, datetime(2026, 1, 1, 12, 35, 29, 998000)),
    )
    assert [(r[0], r[2]) for r in _rows(client)] == [
        (1, datetime(2026, 1, 1, 12, 36)),
        (2, datetime(2026, 1, 1, 12, 35)),
    ]
    client(
        "MERGE dbo.d AS t USING (VALUES (2, '2026-01-01 08:00:40'), (3, '2026-01-01 08:00:40')) AS s (id, sat)"
        " ON t.id = s.id WHEN MATCHED THEN UPDATE SET sat = s.sat"
        " WHEN NOT MATCHED THEN INSERT (id, sat) VALUES (s.id, s.sat);"
    )
    expected = [(1, datetime(2026, 1, 1, 12, 36)), (2, datetime(2026, 1, 1, 8, 1)), (3, datetime(2026, 1, 1, 8, 1))]
    assert [(r[0], r[2]) for r in _rows(client)] == expected
    client("EXEC emu.capture")
    captured = client(
        "SELECT id, sat FROM cdc.dbo_d_CT WHERE [__$operation] IN (2, 4) AND id IN (2, 3) ORDER BY id, [__$start_lsn]"
    )
    assert captured[-2:] == expected[1:]
