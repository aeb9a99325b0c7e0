"""Property, through the real pipeline (issue 24): whatever random mix of INSERT, UPDATE (value
changes, key changes to other keys, and case-only, trailing-blank and width-only key changes, which
the collation calls equal), DELETE and MERGE upserts runs over TDS on a ``varchar`` and an
``nvarchar`` primary key under SQL_Latin1_General_CP1_CI_AS — statements that break SQL Server's
rules (Msg 2627, 8672) rolling their transaction back — raw equals the source read over TDS value for
value (the key's exact spelling and the ``datetime`` ticks included), and history equals the change
table read over TDS, row for row, with each row's commit time from ``cdc.lsn_time_mapping``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pymssql
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.reconcile import reconcile
from tests.integration.conftest import SALT, Harness

pytestmark = pytest.mark.integration

TABLES = {"kv": "varchar(12)", "kn": "nvarchar(12)"}
# Spellings SQL Server holds to be one key come in groups: case, trailing blanks, full-width forms
# (the last for nvarchar only: code page 1252 has none).
KEYS = ["ab", "AB", "ab ", "Ab  ", "a-b", "A-B ", "o'k", "O'K", "q1", "Q1 ", "zz"]
WIDE = ["ａｂ", "ＺＺ"]
T0 = datetime(2026, 1, 1, 12, 0, 0, 964000)

key = st.sampled_from(KEYS + WIDE)
stamp = st.integers(0, 999).map(lambda ms: f"2026-01-01 12:00:00.{ms:03d}")  # rounded to 1/300 s on write
statement = st.tuples(
    st.sampled_from(sorted(TABLES)),
    st.one_of(
        st.tuples(st.just("insert"), key, st.integers(0, 99), stamp),
        st.tuples(st.just("insert_absent"), key, st.integers(0, 99), stamp),
        st.tuples(st.just("set"), key, st.integers(0, 99), stamp),
        st.tuples(st.just("rekey"), key, key),
        st.tuples(st.just("respell"), key, st.sampled_from(["UPPER(k)", "LOWER(k)", "RTRIM(k) + ' '", "RTRIM(k)"])),
        st.tuples(st.just("delete"), key),
        st.tuples(st.just("merge"), st.lists(st.tuples(key, st.integers(-1, 99), stamp), min_size=1, max_size=3)),
    ),
)
transaction = st.tuples(st.lists(statement, min_size=1, max_size=3), st.booleans(), st.integers(1, 900))


def _sql(table: str, stmt: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    kind, *args = stmt
    t = f"dbo.{table}"
    if kind == "insert":
        return f"INSERT INTO {t} (k, v, stamped) VALUES (%s, %s, %s)", tuple(args)
    if kind == "insert_absent":
        k, v, stamped = args
        return f"IF NOT EXISTS (SELECT 1 FROM {t} WHERE k = %s) INSERT INTO {t} (k, v, stamped) VALUES (%s, %s, %s)", (
            k,
            k,
            v,
            stamped,
        )
    if kind == "set":
        k, v, stamped = args
        return f"UPDATE {t} SET v = %s, stamped = %s WHERE k = %s", (v, stamped, k)
    if kind == "rekey":
        return f"UPDATE {t} SET k = %s WHERE k = %s", (args[1], args[0])
    if kind == "respell":
        return f"UPDATE {t} SET k = {args[1]} WHERE k = %s", (args[0],)
    if kind == "delete":
        return f"DELETE FROM {t} WHERE k = %s", (args[0],)
    rows = args[0]
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    return (
        f"MERGE {t} AS t USING (VALUES {values}) AS s (k, v, stamped) ON t.k = s.k"
        " WHEN MATCHED AND s.v < 0 THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v, stamped = s.stamped"
        " WHEN NOT MATCHED AND s.v >= 0 THEN INSERT (k, v, stamped) VALUES (s.k, s.v, s.stamped);",
        tuple(x for row in rows for x in row),
    )


def run_transaction(conn: Any, stmts: list[tuple[str, tuple[Any, ...]]], commit: bool) -> None:
    """One transaction over TDS. A statement that breaks SQL Server's rules (a duplicate key 2627,
    a MERGE matching a row twice 8672) ends alone and the transaction goes on to its COMMIT or
    ROLLBACK, as SQL Server runs it with XACT_ABORT OFF: the change tables then hold transactions
    with a failed statement in the middle."""
    cursor = conn.cursor()
    for table, stmt in stmts:
        try:
            cursor.execute(*_sql(table, stmt))
        except (pymssql.IntegrityError, pymssql.OperationalError) as exc:
            assert exc.args[0] in (2627, 8672), exc
    conn.commit() if commit else conn.rollback()


def source_rows(h: Harness, table: str) -> set[tuple[Any, ...]]:
    return set(h.query(f"SELECT k, v, stamped FROM dbo.{table}"))


def change_history(h: Harness, table: str, since: str) -> Counter[tuple[Any, ...]]:
    """History as the pipeline must write it, from the change table read over TDS: every change once;
    an update pair whose before image has another key spelling also deletes that spelling."""
    committed = dict(h.query("SELECT start_lsn, tran_end_time FROM cdc.lsn_time_mapping"))
    rows = h.query(
        f"SELECT [__$start_lsn], [__$seqval], [__$operation], k, v, stamped FROM cdc.dbo_{table}_CT"
        " WHERE [__$start_lsn] > %s ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]",
        (bytes.fromhex(since),),
    )
    out: Counter[tuple[Any, ...]] = Counter()
    before: tuple[Any, ...] | None = None
    for lsn, seq, op, *values in rows:
        position = (to_hex(lsn), to_hex(seq))
        if op == 3:
            before = tuple(values)
            continue
        if op == 4 and before is not None and before[0] != values[0]:
            out[(*position, 1, *before, committed[lsn])] += 1
        before = None
        out[(*position, op, *values, committed[lsn])] += 1
    return out


def assert_converged(h: Harness, table: str, config: Any) -> None:
    assert reconcile(h.pipeline(config), salt=SALT).ok
    raw = h.snowflake_rows(f"SELECT K, V, STAMPED FROM {h.database}.RAW.{table.upper()} WHERE NOT _CDC_DELETED")
    assert set(raw) == source_rows(h, table)
    (since,) = h.snowflake_rows(
        f"SELECT SNAPSHOT_LSN FROM {h.database}.CONTROL.CDC_WATERMARKS WHERE CAPTURE_INSTANCE = 'dbo_{table}'"
    )[0]
    history = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, K, V, STAMPED, _CDC_COMMITTED_AT"
        f" FROM {h.database}.RAW.{table.upper()}_HISTORY WHERE _CDC_LSN > '{since}'"
    )
    assert Counter(history) == change_history(h, table, since)


def run_property(make_harness: Any, txs: list[Any], chunk_rows: int) -> None:
    h: Harness = make_harness()
    h.engine.clock.set(T0)
    for table, type_ in TABLES.items():
        h.sql(
            f"CREATE TABLE dbo.{table} (k {type_} NOT NULL PRIMARY KEY, v int NULL, stamped datetime NULL)",
            f"INSERT INTO dbo.{table} (k, v, stamped) VALUES ('ab', 1, '2026-01-01 00:00:00.199'), ('o''k', 2, NULL)",
            f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{table}', @role_name = NULL",
        )
    h.capture()
    configs = {
        t: h.source_config([{"schema": "dbo", "table": t, "primary_key": ["k"]}], chunk_rows=chunk_rows) for t in TABLES
    }
    for config in configs.values():
        assert h.pipeline(config).run_once()["mode"] == "snapshot"
    conn = h.connect()
    for index, (stmts, commit, ms) in enumerate(txs):
        h.engine.clock.advance(ms / 1000)  # commit times with every millisecond: datetime ticks
        run_transaction(conn, stmts, commit)
        if index % 3 == 2:
            h.capture()
            for config in configs.values():
                h.pipeline(config).run_once()
    h.capture()
    for table, config in configs.items():
        for _ in range(3):
            if h.pipeline(config).run_once()["mode"] == "idle":
                break
        assert_converged(h, table, config)


# The reproduction, always run: MERGE matches 'ab' with 'AB' and updates it; the key is
# respelled ('AB', "o'k "); a width-only rekey onto an existing key (Msg 2627) rolls its transaction back.
REPRODUCTION = [
    ([("kv", ("merge", [("AB", 5, "2026-01-01 12:00:00.774")]))], True, 1),
    ([("kv", ("respell", "ab", "UPPER(k)")), ("kn", ("respell", "o'k", "RTRIM(k) + ' '"))], True, 7),
    ([("kn", ("rekey", "O'K", "ａｂ")), ("kv", ("insert", "ab ", 1, "2026-01-01 12:00:00.999"))], True, 2),
]


@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(txs=st.lists(transaction, min_size=2, max_size=8), chunk_rows=st.integers(1, 3))
@example(txs=REPRODUCTION, chunk_rows=1)
def test_collation_keys_replicate_value_for_value_over_tds(make_harness: Any, txs: list[Any], chunk_rows: int) -> None:
    run_property(make_harness, txs, chunk_rows)


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(txs=st.lists(transaction, min_size=5, max_size=25), chunk_rows=st.integers(1, 4))
def test_collation_keys_replicate_value_for_value_over_tds_at_scale(
    make_harness: Any, txs: list[Any], chunk_rows: int
) -> None:
    run_property(make_harness, txs, chunk_rows)
