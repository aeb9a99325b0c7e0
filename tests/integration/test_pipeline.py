"""The table pipeline on the local stack: SQL Server CDC emulator → local Snowflake.

Every test asserts data: raw equals the source value for value (reconcile), and history holds
every captured change exactly once (compared with the change table itself).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import Any

import pytest

from dev.mssql_emulator import Engine
from include.cdc_pipeline.errors import InjectedFailure, RetentionGapError, SourceRewoundError, TableNotCapturedError
from include.cdc_pipeline.failpoints import WINDOW_POINTS
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.reconcile import reconcile
from tests.integration.conftest import SALT, Harness
from tests.integration.workload import ENABLE_ORDERS, ORDERS_DDL, ORDERS_TABLE, OrdersWorkload

pytestmark = pytest.mark.integration


def run_until_idle(h: Harness, config: Any, table: int = 0, limit: int = 20) -> list[dict[str, Any]]:
    results = []
    for _ in range(limit):
        result = h.pipeline(config, table).run_once()
        results.append(result)
        if result["mode"] == "idle":
            return results
    raise AssertionError(f"not idle after {limit} runs: {results}")


def run_source_until_idle(h: Harness, config: Any, limit: int = 20) -> list[dict[str, str]]:
    """Runs as the DAG plans them (every table in one planning step) until every table is idle."""
    runs = []
    for _ in range(limit):
        runs.append(h.run_source_once(config))
        if set(runs[-1].values()) == {"idle"}:
            return runs
    raise AssertionError(f"not idle after {limit} runs: {runs}")


def assert_converged(h: Harness, config: Any, table: int = 0, instance_filter: str | None = None) -> None:
    """Raw equals source; history equals the captured changes after the snapshot, each once."""
    pipeline = h.pipeline(config, table)
    result = reconcile(pipeline, salt=SALT)
    assert result.ok, result
    spec = config.tables[table]
    raw = f"{h.database}.RAW.{spec.snowflake_table}"
    history = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, {', '.join(k.upper() for k in spec.primary_key)}"
        f" FROM {raw}_HISTORY WHERE _CDC_OPERATION <> 0"
    )
    snapshots = h.snowflake_rows(f"SELECT MIN(_CDC_LSN) FROM {raw}_HISTORY WHERE _CDC_OPERATION = 0")
    first_snapshot = snapshots[0][0]
    captured = []
    keys = ", ".join(f"[{k}]" for k in spec.primary_key)
    for instance in pipeline.instances():
        if instance_filter and instance.name != instance_filter:
            continue
        captured += [
            (to_hex(lsn), to_hex(seq), op, *key)
            for lsn, seq, op, *key in h.query(
                f"SELECT [__$start_lsn], [__$seqval], [__$operation], {keys} FROM cdc.[{instance.name}_CT]"
                " WHERE [__$operation] <> 3"
            )
            if first_snapshot is None or to_hex(lsn) > first_snapshot
        ]
    counted = Counter(tuple(row) for row in history)
    assert max(counted.values(), default=1) == 1, "a change is in history twice"
    # Roll-over: both instances capture the same change until the switch; history takes each once.
    assert set(counted) == set(captured)


def orders_harness(h: Harness, seed: int, transactions: int = 30) -> tuple[Any, OrdersWorkload]:
    h.sql(ORDERS_DDL, ENABLE_ORDERS)
    workload = OrdersWorkload(seed)
    workload.run(h.connect(), transactions)
    h.capture()
    return h.source_config([ORDERS_TABLE]), workload


def _in_make_test(values: tuple[str, ...] | list[int], fast: set) -> list[object]:
    """Every value runs in `make test-all`; ``fast`` ones also in `make test` (kept under 10 minutes)."""
    return [pytest.param(v, marks=() if v in fast else pytest.mark.slow) for v in values]


# `make test-all` only: in `make test` the end-to-end run replicates a random workload of five tables
# through the DAG (raw = source, history each change once) and test_property_keys random key changes.
@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_workload_snapshot_then_stream_converges(harness: Harness, seed: int) -> None:
    # Given a table with history before CDC is read, then several rounds of random traffic,
    config, workload = orders_harness(harness, seed)
    first = harness.pipeline(config).run_once()
    assert first["mode"] == "snapshot" and first["rows"] > 0
    for _ in range(3):
        workload.run(harness.connect(), 25)
        harness.capture()
        # when each round is replicated,
        assert harness.pipeline(config).run_once()["mode"] == "stream"
    # then raw equals the source and history holds each captured change once.
    assert_converged(harness, config)


# A crash after the MERGE, before the watermark moves, is the boundary that duplicates if anything does.
# The next run plans the table as the DAG's plan task does, every table of the source in one step
# (source_plan), or on its own (TablePipeline.run_once, the demo's and the benchmarks' path): in
# make test the DAG's way at that boundary, every pair in test-all.
@pytest.mark.parametrize(
    ("point", "planning"),
    [
        pytest.param(point, planning, marks=() if (point, planning) == ("after_merge", "source") else pytest.mark.slow)
        for point in WINDOW_POINTS
        for planning in ("source", "table")
    ],
)
def test_failure_at_every_step_boundary_then_retry_converges(
    harness: Harness, point: str, planning: str, tmp_path, monkeypatch
) -> None:
    config, workload = orders_harness(harness, seed=7)
    harness.pipeline(config).run_once()
    workload.run(harness.connect(), 25)
    harness.capture()
    monkeypatch.setenv("CDC_FAILPOINTS", point)
    monkeypatch.setenv("CDC_FAILPOINT_DIR", str(tmp_path))
    # Given a batch that crashes at one step boundary,
    with pytest.raises(InjectedFailure):
        harness.pipeline(config).run_once()
    # and traffic that goes on before the retry,
    workload.run(harness.connect(), 10)
    harness.capture()
    # when the table is retried (a new run, as after the task's retries ran out),
    if planning == "table":
        run_until_idle(harness, config)
    else:
        assert run_source_until_idle(harness, config)[0] == {"dbo_orders": "stream"}
    # then nothing is lost or duplicated.
    assert_converged(harness, config)


# A retried extract_load after its COPY: the same window's files must not load twice.
@pytest.mark.parametrize("point", _in_make_test(WINDOW_POINTS, {"after_copy"}))
def test_task_retry_with_the_same_window_converges(harness: Harness, point: str, tmp_path, monkeypatch) -> None:
    # Airflow retries one task with the same XCom input: extract_load(window) or apply(batch).
    config, workload = orders_harness(harness, seed=11)
    harness.pipeline(config).run_once()
    workload.run(harness.connect(), 25)
    harness.capture()
    monkeypatch.setenv("CDC_FAILPOINTS", point)
    monkeypatch.setenv("CDC_FAILPOINT_DIR", str(tmp_path))
    window = harness.pipeline(config).plan()
    try:
        batch = harness.pipeline(config).extract_load(window)
    except InjectedFailure:
        batch = harness.pipeline(config).extract_load(window)
    try:
        harness.pipeline(config).apply(batch)
    except InjectedFailure:
        harness.pipeline(config).apply(batch)
    assert (tmp_path / f"cdc-failpoint-src.dbo.orders-{point}").exists(), "the failpoint did not fire"
    assert harness.pipeline(config).run_once()["mode"] == "idle"
    assert_converged(harness, config)


def test_replaying_an_applied_batch_changes_nothing(harness: Harness) -> None:
    config, workload = orders_harness(harness, seed=5)
    harness.pipeline(config).run_once()
    workload.run(harness.connect(), 20)
    harness.capture()
    window = harness.pipeline(config).plan()
    batch = harness.pipeline(config).extract_load(window)
    harness.pipeline(config).apply(batch)
    raw_before = harness.snowflake_rows(f"SELECT * EXCLUDE (_CDC_LOADED_AT) FROM {harness.database}.RAW.ORDERS")
    # Replay the same window from scratch (as after a crash just before the watermark).
    again = harness.pipeline(config).extract_load(window)
    harness.pipeline(config).apply(again)
    raw_after = harness.snowflake_rows(f"SELECT * EXCLUDE (_CDC_LOADED_AT) FROM {harness.database}.RAW.ORDERS")
    assert sorted(raw_before, key=repr) == sorted(raw_after, key=repr)
    assert_converged(harness, config)


def test_idle_run_issues_no_snowflake_query(harness: Harness) -> None:
    config, _ = orders_harness(harness, seed=3)
    harness.pipeline(config).run_once()
    opened: list[Any] = []
    # Given nothing new in the change table, when the table is polled again,
    result = harness.pipeline(config, counter=opened).run_once()
    # then it is idle and no Snowflake connection was even opened;
    assert result["mode"] == "idle"
    assert opened == []
    # and the check is recorded (freshness and retention monitoring stay true).
    hint = harness.hints["dbo_orders"].get()
    assert hint and hint["checked_at"] and hint["checked_upper"] >= hint["watermark"]
    # Changes in *other* tables move max_lsn but are still no work for this one.
    harness.sql(
        "CREATE TABLE dbo.other (id int NOT NULL PRIMARY KEY)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'other', @role_name=NULL",
    )
    harness.sql("INSERT INTO dbo.other VALUES (1)")
    harness.capture()
    assert harness.pipeline(config, counter=opened).run_once()["mode"] == "idle"
    assert opened == []


def test_retention_gap_fails_loudly_by_default(harness: Harness) -> None:
    config, workload = orders_harness(harness, seed=9)
    harness.pipeline(config).run_once()
    workload.run(harness.connect(), 10)
    harness.capture()
    # The cleanup job purges changes that were never loaded.
    max_lsn = harness.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0]
    harness.sql(
        "EXEC sys.sp_cdc_cleanup_change_table @capture_instance=N'dbo_orders', @low_water_mark=%s, @threshold=5000",
        params=(max_lsn,),
    )
    with pytest.raises(RetentionGapError) as caught:
        harness.pipeline(config).run_once()
    message = str(caught.value)
    assert "retention gap" in message and "dbo_orders" in message and "resnapshot" in message


def test_source_behind_the_loaded_position_is_never_idle(harness: Harness) -> None:
    # Given a table loaded well past its snapshot,
    config, workload = orders_harness(harness, seed=5)
    harness.pipeline(config).run_once()
    workload.run(harness.connect(), 40)
    harness.capture()
    assert harness.pipeline(config).run_once()["mode"] == "stream"
    # when the source database is re-created (or restored from an old backup): its log is behind,
    harness.replace_engine(Engine(":memory:"))
    harness.sql("EXEC sys.sp_cdc_enable_db")
    orders_harness(harness, seed=6, transactions=5)
    # then the run fails naming the cause instead of idling on the cached hint;
    with pytest.raises(SourceRewoundError) as caught:
        harness.pipeline(config).plan()
    assert "restored or re-created" in str(caught.value) and "resnapshot" in str(caught.value)
    # and with Snowflake reset as well (no watermark), the table is snapshotted again.
    harness.snowflake_rows(f"DELETE FROM {harness.database}.CONTROL.CDC_WATERMARKS")
    assert harness.pipeline(config).plan().mode == "snapshot"


def test_hint_written_for_another_target_is_ignored(harness: Harness) -> None:
    # Given a table loaded (and its hint cached) for one Snowflake database,
    config, _ = orders_harness(harness, seed=8)
    harness.pipeline(config).run_once()
    assert harness.pipeline(config).plan().mode == "idle"
    # when the config is pointed at another database while the source stands still,
    moved = config.model_copy(update={"target": config.target.model_copy(update={"database": "ELSEWHERE"})})
    # then the cached hint does not make the new target look loaded: it is snapshotted.
    assert harness.pipeline(moved).plan().mode == "snapshot"


def test_retention_gap_resnapshots_by_policy(harness: Harness) -> None:
    h = harness
    h.sql(ORDERS_DDL, ENABLE_ORDERS)
    config = h.source_config([{**ORDERS_TABLE, "retention_gap_policy": "resnapshot"}])
    workload = OrdersWorkload(13)
    workload.run(h.connect(), 20, rollback_fraction=0)
    h.capture()
    h.pipeline(config).run_once()
    # A row is deleted and the change is purged before it was loaded.
    region, order_id = h.query("SELECT TOP (1) region, order_id FROM dbo.orders ORDER BY order_id")[0]
    h.sql("DELETE FROM dbo.orders WHERE region = %s AND order_id = %s", params=(region, order_id))
    workload.run(h.connect(), 10)
    h.capture()
    max_lsn = h.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0]
    h.sql(
        "EXEC sys.sp_cdc_cleanup_change_table @capture_instance=N'dbo_orders', @low_water_mark=%s, @threshold=5000",
        params=(max_lsn,),
    )
    result = h.pipeline(config).run_once()
    assert result["mode"] == "snapshot" and result["deleted_by_snapshot"] >= 1
    assert reconcile(h.pipeline(config), salt=SALT).ok
    deleted = h.snowflake_rows(
        f"SELECT _CDC_DELETED FROM {h.database}.RAW.ORDERS WHERE REGION = '{region}' AND ORDER_ID = {order_id}"
    )
    assert deleted == [(True,)]
    workload.run(h.connect(), 10)
    h.capture()
    run_until_idle(h, config)
    assert reconcile(h.pipeline(config), salt=SALT).ok


def test_capture_instance_roll_over_has_no_gap_and_no_duplicate(harness: Harness) -> None:
    h = harness
    h.sql(
        "CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, name nvarchar(50) NOT NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'items', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.items VALUES (1, N'a'), (2, N'b'), (3, N'c')")
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "items", "primary_key": ["id"]}])
    h.pipeline(config).run_once()
    # The source gains a column; the first capture instance does not capture it.
    h.sql("ALTER TABLE dbo.items ADD price decimal(10,2) NULL")
    h.sql("UPDATE dbo.items SET name = N'a1', price = 1.50 WHERE id = 1")
    h.capture()
    window = h.pipeline(config).plan()
    assert window.mode == "stream" and any("ALTER TABLE" in w.upper() or "price" in w for w in window.warnings)
    h.sql(
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'items', @role_name=NULL, "
        "@capture_instance=N'dbo_items_v2'"
    )
    h.sql("UPDATE dbo.items SET price = 2.50 WHERE id = 2")
    h.sql("INSERT INTO dbo.items VALUES (4, N'd', 4.00)")
    h.sql("DELETE FROM dbo.items WHERE id = 3")
    h.capture()
    results = run_until_idle(h, config)
    assert {r.get("capture_instance") for r in results if r["mode"] != "idle"} >= {"dbo_items_v2"}
    rows = h.snowflake_rows(f"SELECT ID, NAME, PRICE, _CDC_DELETED FROM {h.database}.RAW.ITEMS ORDER BY ID")
    assert [(r[0], r[1], None if r[2] is None else float(r[2]), r[3]) for r in rows] == [
        (1, "a1", None, False),  # changed before the new instance: price was not captured then
        (2, "b", 2.5, False),
        (3, "c", None, True),
        (4, "d", 4.0, False),
    ]
    history = h.snowflake_rows(
        f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, ID, COUNT(*) FROM {h.database}.RAW.ITEMS_HISTORY"
        " GROUP BY ALL HAVING COUNT(*) > 1"
    )
    assert history == []
    assert len(h.snowflake_rows(f"SELECT 1 FROM {h.database}.RAW.ITEMS_HISTORY WHERE _CDC_OPERATION <> 0")) == 4
    # CDC never captured price=1.50 of row 1 (set before the new instance existed): a re-snapshot
    # backfills it, and then raw equals the source.
    pipeline = h.pipeline(config)
    pipeline.snapshot(pipeline.plan(resnapshot=True))
    assert reconcile(h.pipeline(config), salt=SALT).ok


def test_primary_key_update_and_hard_delete(harness: Harness) -> None:
    h = harness
    h.sql(
        "CREATE TABLE dbo.lines (invoice_id bigint NOT NULL, line_no int NOT NULL, qty int NOT NULL,"
        " PRIMARY KEY (invoice_id, line_no))",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'lines', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.lines VALUES (10, 1, 5), (10, 2, 6), (11, 1, 7)")
    h.capture()
    config = h.source_config(
        [{"schema": "dbo", "table": "lines", "primary_key": ["invoice_id", "line_no"], "delete_mode": "hard"}]
    )
    h.pipeline(config).run_once()
    h.sql("UPDATE dbo.lines SET line_no = 3 WHERE invoice_id = 10 AND line_no = 2")
    h.sql("DELETE FROM dbo.lines WHERE invoice_id = 11")
    h.capture()
    h.pipeline(config).run_once()
    rows = h.snowflake_rows(f"SELECT INVOICE_ID, LINE_NO, QTY FROM {h.database}.RAW.LINES ORDER BY 1, 2")
    assert rows == [(10, 1, 5), (10, 3, 6)]
    ops = h.snowflake_rows(
        f"SELECT _CDC_OPERATION, INVOICE_ID, LINE_NO FROM {h.database}.RAW.LINES_HISTORY WHERE _CDC_OPERATION <> 0"
        " ORDER BY _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION"
    )
    assert ops == [(1, 10, 2), (2, 10, 3), (1, 11, 1)]
    assert_converged(h, config)


def test_unknown_table_is_a_clear_error(harness: Harness) -> None:
    config = harness.source_config([{"schema": "dbo", "table": "nope", "primary_key": ["id"]}])
    with pytest.raises(TableNotCapturedError, match=r"dbo\.nope has no CDC capture instance.*sp_cdc_enable_table"):
        harness.pipeline(config).run_once()


def test_window_capped_by_transactions(harness: Harness) -> None:
    h = harness
    h.sql(ORDERS_DDL, ENABLE_ORDERS)
    config = h.source_config([{**ORDERS_TABLE, "max_transactions_per_batch": 3, "catch_up_seconds": 0}])
    h.pipeline(config).run_once()  # snapshot of the empty table
    workload = OrdersWorkload(21)
    workload.run(h.connect(), 10, rollback_fraction=0)
    h.capture()
    results = run_until_idle(h, config)
    assert len([r for r in results if r["mode"] == "stream"]) >= 3
    assert_converged(h, config)


def test_hashed_column_never_lands_in_clear(harness: Harness) -> None:
    h = harness
    h.sql(
        "CREATE TABLE dbo.people (id int NOT NULL PRIMARY KEY, email nvarchar(320) NULL, secret varchar(10) NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'people', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.people VALUES (1, N'ann@example.com', 'x'), (2, NULL, 'y')")
    h.capture()
    config = h.source_config(
        [
            {
                "schema": "dbo",
                "table": "people",
                "primary_key": ["id"],
                "hash_columns": ["email"],
                "exclude_columns": ["secret"],
            }
        ]
    )
    h.pipeline(config).run_once()
    h.sql("UPDATE dbo.people SET email = N'bob@example.com' WHERE id = 2")
    h.capture()
    h.pipeline(config).run_once()
    expected = hashlib.sha256((SALT + "bob@example.com").encode()).hexdigest()
    rows = h.snowflake_rows(f"SELECT ID, EMAIL FROM {h.database}.RAW.PEOPLE ORDER BY ID")
    assert rows[1] == (2, expected)
    everything = repr(h.snowflake_rows(f"SELECT * FROM {h.database}.RAW.PEOPLE_HISTORY"))
    assert "@example.com" not in everything and "SECRET" not in repr(
        h.snowflake_rows(f"SELECT column_name FROM {h.database}.information_schema.columns WHERE table_name = 'PEOPLE'")
    )
    assert_converged(h, config)


def test_explicit_resnapshot_request(harness: Harness) -> None:
    config, workload = orders_harness(harness, seed=17)
    harness.pipeline(config).run_once()
    workload.run(harness.connect(), 10)
    harness.capture()
    window = harness.pipeline(config).plan(resnapshot=True)
    assert window.mode == "snapshot"
    pipeline: TablePipeline = harness.pipeline(config)
    assert pipeline.snapshot(window)["chunks"] >= 1
    run_until_idle(harness, config)
    assert reconcile(harness.pipeline(config), salt=SALT).ok


def test_failpoints_are_off_without_the_variable() -> None:
    assert "CDC_FAILPOINTS" not in os.environ
