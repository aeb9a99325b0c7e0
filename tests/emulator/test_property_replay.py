"""Property: replaying the change tables in (start_lsn, command_id, seqval, operation) order over the
snapshot taken at the starting LSN reproduces the source tables exactly, whatever the workload did
(MERGE, key updates that SQL Server logs as delete + insert or as an update pair, character keys
under the case-insensitive default collation)."""

from __future__ import annotations

from typing import Any

import pymssql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dev.mssql_emulator import Engine
from dev.workload.schema import COLUMNS, KEYS, TABLES
from dev.workload.tsql import Workload
from tests.emulator.conftest import T0, Sql


def replay(
    snapshot: dict[tuple[Any, ...], tuple[Any, ...]], changes: list[tuple[Any, ...]], key_positions: list[int]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Apply change rows ``(op, *columns)``; before-images (ops 1 and 3) must match the replayed state.
    An update pair whose after image has another key (a key change logged as 3/4) moves the row."""
    state = dict(snapshot)
    moved_from: tuple[Any, ...] | None = None
    for op, *values in changes:
        row = tuple(values)
        key = tuple(row[i] for i in key_positions)
        if op == 1:
            assert state.pop(key) == row, f"delete of {key}: before image differs"
        elif op == 2:
            assert key not in state, f"insert of existing key {key}"
            state[key] = row
        elif op == 3:
            assert state.get(key) == row, f"update of {key}: before image differs"
            moved_from = key
        else:
            if moved_from is not None and moved_from != key:
                state.pop(moved_from)
            moved_from = None
            state[key] = row
    return state


def _table_state(sql: Sql, table: str, cols: list[str], keys: list[str]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = sql(f"SELECT {', '.join(cols)} FROM dbo.{table}")
    pos = [cols.index(k) for k in keys]
    return {tuple(r[i] for i in pos): tuple(r) for r in rows}


def _changes_after(sql: Sql, table: str, cols: list[str], lsn: bytes | None) -> list[tuple[Any, ...]]:
    where = "WHERE [__$start_lsn] > %s" if lsn is not None else ""
    return sql(
        f"SELECT [__$operation], {', '.join(cols)} FROM cdc.dbo_{table}_CT {where} "
        "ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]",
        (lsn,) if lsn is not None else None,
    )


@pytest.mark.slow  # `make test` keeps the random-DML replay below and the workload's replay in the end-to-end run
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), transactions=st.integers(5, 60), rollback=st.sampled_from([0.0, 0.1, 0.3]))
def test_replay_of_workload_change_tables_reproduces_the_source(seed: int, transactions: int, rollback: float) -> None:
    engine = Engine(":memory:")
    engine.clock.set(T0)
    try:
        sql = Sql(engine.connect(autocommit=True))
        workload = Workload(engine.connect(), seed=seed, rollback_fraction=rollback)
        workload.init(accounts=10, products=5, invoices=10)
        engine.capture_all()
        start = sql.one("SELECT sys.fn_cdc_get_max_lsn()")
        snapshots = {t: _table_state(sql, t, COLUMNS[t], KEYS[t]) for t in TABLES}
        workload.run(transactions=transactions // 2)
        engine.capture(maxtrans=3, maxscans=1)  # capture runs whenever it likes
        workload.run(transactions=transactions - transactions // 2)
        engine.capture_all()
        for t in TABLES:
            cols = COLUMNS[t]
            replayed = replay(snapshots[t], _changes_after(sql, t, cols, start), [cols.index(k) for k in KEYS[t]])
            assert replayed == _table_state(sql, t, cols, KEYS[t]), t
    finally:
        engine.close()


statement = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 12), st.integers(0, 99)),
    st.tuples(st.just("set_v"), st.integers(0, 12), st.integers(0, 12), st.integers(0, 99)),
    st.tuples(st.just("shift_key"), st.integers(0, 12), st.integers(0, 12), st.integers(-3, 3)),
    st.tuples(st.just("delete"), st.integers(0, 12), st.integers(0, 12)),
)
transaction = st.tuples(st.lists(statement, min_size=1, max_size=4), st.booleans(), st.booleans())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txs=st.lists(transaction, min_size=1, max_size=12))
def test_replay_of_random_dml_including_multi_row_key_updates(txs: list[Any]) -> None:
    engine = Engine(":memory:")
    engine.clock.set(T0)
    try:
        sql = Sql(engine.connect(autocommit=True))
        tracked_table(
            sql,
            "CREATE TABLE dbo.r (k int NOT NULL PRIMARY KEY, v int NULL, s nvarchar(10) NULL)",
            "INSERT INTO dbo.r VALUES (1, 1, N'a'), (2, 2, N'b'), (5, 5, NULL)",
            "r",
        )
        snapshot = _table_state(sql, "r", ["k", "v", "s"], ["k"])
        for stmts, commit, capture_now in txs:
            sql("BEGIN TRAN")
            for stmt in stmts:
                try:
                    kind = stmt[0]
                    if kind == "insert":
                        sql(
                            "INSERT INTO dbo.r (k, v, s) SELECT %s, %s, N'ins' WHERE NOT EXISTS "
                            "(SELECT 1 FROM dbo.r WHERE k = %s)",
                            (stmt[1], stmt[2], stmt[1]),
                        )
                    elif kind == "set_v":
                        sql(
                            "UPDATE dbo.r SET v = %s, s = N'upd' WHERE k BETWEEN %s AND %s",
                            (stmt[3], min(stmt[1:3]), max(stmt[1:3])),
                        )
                    elif kind == "shift_key":
                        sql(
                            "UPDATE dbo.r SET k = k + %s WHERE k BETWEEN %s AND %s",
                            (stmt[3], min(stmt[1:3]), max(stmt[1:3])),
                        )
                    else:
                        sql("DELETE FROM dbo.r WHERE k BETWEEN %s AND %s", (min(stmt[1:3]), max(stmt[1:3])))
                except pymssql.IntegrityError:
                    # SQL Server (SET XACT_ABORT OFF) ends the statement only: nothing of it stays,
                    # the transaction goes on to its COMMIT or ROLLBACK
                    assert sql.one("SELECT @@TRANCOUNT") == 1
            sql("COMMIT" if commit else "ROLLBACK")
            if capture_now:
                sql("EXEC sys.sp_cdc_scan @maxtrans = 2")
        engine.capture_all()
        replayed = replay(snapshot, _changes_after(sql, "r", ["k", "v", "s"], None), [0])
        assert replayed == _table_state(sql, "r", ["k", "v", "s"], ["k"])
    finally:
        engine.close()


# Keys with hyphens, apostrophes, trailing blanks and case variants (equal under the collation).
CHAR_KEYS = ["ab", "a-b", "AB ", "a'b", "ab-", "b", "B", "b  ", "-", "o'k", "ok", "O-K"]
char_statement = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(CHAR_KEYS), st.integers(0, 99)),
    st.tuples(st.just("set_v"), st.sampled_from(CHAR_KEYS), st.integers(0, 99)),
    st.tuples(st.just("rekey"), st.sampled_from(CHAR_KEYS), st.sampled_from(CHAR_KEYS)),
    st.tuples(st.just("recase"), st.sampled_from(CHAR_KEYS), st.sampled_from(["upper", "lower", "pad"])),
    st.tuples(st.just("merge"), st.lists(st.tuples(st.sampled_from(CHAR_KEYS), st.integers(-1, 99)), max_size=3)),
    st.tuples(st.just("delete"), st.sampled_from(CHAR_KEYS)),
)


def run_char_statement(sql: Sql, stmt: tuple[Any, ...]) -> None:
    """One statement on dbo.c (k varchar(10) primary key, v int); errors of SQL Server's own rules
    (a key that exists under the collation, Msg 2627/8672) are the caller's to roll back."""
    kind = stmt[0]
    if kind == "insert":
        sql(
            "INSERT INTO dbo.c (k, v) SELECT %s, %s WHERE NOT EXISTS (SELECT 1 FROM dbo.c WHERE k = %s)",
            (stmt[1], stmt[2], stmt[1]),
        )
    elif kind == "set_v":
        sql("UPDATE dbo.c SET v = %s WHERE k = %s", (stmt[2], stmt[1]))
    elif kind == "rekey":
        sql(
            "UPDATE dbo.c SET k = %s WHERE k = %s AND NOT EXISTS (SELECT 1 FROM dbo.c WHERE k = %s)",
            (stmt[2], stmt[1], stmt[2]),
        )
    elif kind == "recase":
        new = {"upper": "UPPER(k)", "lower": "LOWER(k)", "pad": "CONCAT(RTRIM(k), ' ')"}[stmt[2]]
        sql(f"UPDATE dbo.c SET k = {new} WHERE k = %s", (stmt[1],))
    elif kind == "merge":
        rows = {k.rstrip(" ").upper(): (k, v) for k, v in stmt[1]}  # one source row per key
        if rows:
            values = ", ".join(["(%s, %s)"] * len(rows))
            sql(
                f"MERGE dbo.c AS t USING (VALUES {values}) AS s (k, v) ON t.k = s.k"
                " WHEN MATCHED AND s.v < 0 THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v"
                " WHEN NOT MATCHED AND s.v >= 0 THEN INSERT (k, v) VALUES (s.k, s.v);",
                tuple(x for pair in rows.values() for x in pair),
            )
    else:
        sql("DELETE FROM dbo.c WHERE k = %s", (stmt[1],))


def run_char_transaction(sql: Sql, stmts: list[Any], commit: bool) -> None:
    """One transaction of ``run_char_statement``s. A statement that breaks SQL Server's rules (a
    duplicate key, 2627/2601; a MERGE matching a row twice, 8672) ends alone, as SQL Server ends it
    with SET XACT_ABORT OFF: the transaction goes on to its COMMIT or ROLLBACK."""
    sql("BEGIN TRAN")
    for stmt in stmts:
        try:
            run_char_statement(sql, stmt)
        except (pymssql.IntegrityError, pymssql.OperationalError) as exc:
            assert exc.args[0] in (2601, 2627, 8672), exc
            assert sql.one("SELECT @@TRANCOUNT") == 1
    sql("COMMIT" if commit else "ROLLBACK")


def tracked_table(sql: Sql, ddl: str, rows: str, name: str) -> None:
    """Create ``dbo.<name>``, fill it, and enable CDC on the database and the table."""
    sql(ddl)
    sql(rows)
    sql("EXEC sys.sp_cdc_enable_db")
    sql(f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{name}', @role_name = NULL")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    txs=st.lists(st.tuples(st.lists(char_statement, min_size=1, max_size=4), st.booleans()), min_size=1, max_size=10),
    tf8207=st.booleans(),
)
def test_replay_of_merge_and_key_changes_on_character_keys(txs: list[Any], tf8207: bool) -> None:
    engine = Engine(":memory:")
    engine.clock.set(T0)
    try:
        sql = Sql(engine.connect(autocommit=True))
        tracked_table(
            sql,
            "CREATE TABLE dbo.c (k varchar(10) NOT NULL PRIMARY KEY, v int NULL)",
            "INSERT INTO dbo.c (k, v) VALUES ('ab', 1), ('o''k', 2), ('b  ', 3)",
            "c",
        )
        if tf8207:
            sql("DBCC TRACEON (8207, -1)")
        snapshot = _table_state(sql, "c", ["k", "v"], ["k"])
        for stmts, commit in txs:
            run_char_transaction(sql, stmts, commit)
        engine.capture_all()
        replayed = replay(snapshot, _changes_after(sql, "c", ["k", "v"], None), [0])
        assert replayed == _table_state(sql, "c", ["k", "v"], ["k"])
    finally:
        engine.close()


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1_000_000), transactions=st.integers(50, 300))
def test_replay_property_long_workloads(seed: int, transactions: int) -> None:
    test_replay_of_workload_change_tables_reproduces_the_source.hypothesis.inner_test(  # type: ignore[attr-defined]
        seed=seed, transactions=transactions, rollback=0.1
    )
