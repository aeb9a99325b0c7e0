"""Property (issue 12): replaying the change table over the snapshot reproduces the source even when
captured columns change type mid-stream (ALTER COLUMN changes the change table's type in place, so
values only the wider type holds are captured exactly)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dev.mssql_emulator import Engine
from tests.emulator.conftest import T0, Sql
from tests.emulator.test_property_replay import _changes_after, _table_state, replay

COLUMNS = ["k", "v", "d", "s"]
WIDENINGS = [
    "ALTER TABLE dbo.a ALTER COLUMN v bigint NULL",
    "ALTER TABLE dbo.a ALTER COLUMN d decimal(20,2) NULL",
    "ALTER TABLE dbo.a ALTER COLUMN s varchar(40) NULL",
]
statement = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("update"), st.integers(0, 15), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("delete"), st.integers(0, 15), st.integers(0, 15)),
)


def _values(widened: set[str], seed: int) -> tuple[int, str, str]:
    """Values for v, d, s: for a widened column, one only its new type can hold."""
    return (
        5_000_000_000 + seed if "v" in widened else seed,
        f"{123456789012345 + seed}.25" if "d" in widened else f"{seed}.50",
        f"a-long-value-{seed:05d}-{'x' * 10}" if "s" in widened else f"s{seed % 10}",
    )


@pytest.mark.slow  # `make test` keeps ALTER COLUMN through the pipeline (tests/integration/test_schema_semantics.py)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(statement, min_size=1, max_size=12),
    after=st.lists(statement, min_size=1, max_size=12),
    alters=st.lists(st.sampled_from(WIDENINGS), min_size=1, max_size=3, unique=True),
    capture_between=st.booleans(),
)
def test_replay_with_alter_column_mid_stream_reproduces_the_source(
    before: list[Any], after: list[Any], alters: list[str], capture_between: bool
) -> None:
    engine = Engine(":memory:")
    engine.clock.set(T0)
    try:
        sql = Sql(engine.connect(autocommit=True))
        sql("CREATE TABLE dbo.a (k int NOT NULL PRIMARY KEY, v int NULL, d decimal(8,2) NULL, s varchar(5) NULL)")
        sql("INSERT INTO dbo.a VALUES (1, 1, 1.00, 'a'), (2, 2, 2.00, 'b')")
        sql("EXEC sys.sp_cdc_enable_db")
        sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'a', @role_name = NULL")
        snapshot = _table_state(sql, "a", COLUMNS, ["k"])
        for phase, stmts in enumerate((before, after)):
            widened = {alter.split()[5] for alter in alters} if phase == 1 else set()
            for n, stmt in enumerate(stmts):
                v, d, s = _values(widened, n)
                if stmt[0] == "insert":
                    sql(
                        "INSERT INTO dbo.a (k, v, d, s) SELECT %s, %s, %s, %s WHERE NOT EXISTS "
                        "(SELECT 1 FROM dbo.a WHERE k = %s)",
                        (stmt[1], v, d, s if stmt[2] else None, stmt[1]),
                    )
                elif stmt[0] == "update":
                    sql(
                        "UPDATE dbo.a SET v = %s, d = %s, s = %s WHERE k BETWEEN %s AND %s",
                        (v, d, s if stmt[3] else None, min(stmt[1:3]), max(stmt[1:3])),
                    )
                else:
                    sql("DELETE FROM dbo.a WHERE k BETWEEN %s AND %s", (min(stmt[1:3]), max(stmt[1:3])))
            if phase == 0:
                if capture_between:
                    engine.capture_all()
                for alter in alters:
                    sql(alter)
        engine.capture_all()
        replayed = replay(snapshot, _changes_after(sql, "a", COLUMNS, None), [0])
        assert replayed == _table_state(sql, "a", COLUMNS, ["k"])
    finally:
        engine.close()
