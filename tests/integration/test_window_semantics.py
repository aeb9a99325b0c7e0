"""Issue 12, window cases: what SQL Server does to a window between plan and apply.

Each test states the SQL Server behaviour it relies on (the emulator models it, see
docs/emulator.md) and asserts data: nothing lost, nothing duplicated, or a named error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from include.cdc_pipeline.errors import RetentionGapError, SnapshotStarted
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.reconcile import reconcile
from include.cdc_pipeline.snapshot import SnapshotWork, run_workers
from include.cdc_pipeline.source import CdcSource
from tests.integration.conftest import SALT, Harness
from tests.integration.test_pipeline import assert_converged, orders_harness, run_until_idle
from tests.integration.workload import ENABLE_ORDERS, ORDERS_DDL, ORDERS_TABLE, OrdersWorkload

pytestmark = pytest.mark.integration


class CleanupWhileReading(CdcSource):
    """The real reader; the CDC cleanup job runs on the server after the first chunk was fetched
    (what a long read of a large window meets in production)."""

    def __init__(self, connection: Any, cleanup: Any) -> None:
        super().__init__(connection)
        self.cleanup = cleanup

    def iter_changes(self, *args: Any, **kwargs: Any) -> Iterator[list[tuple[Any, ...]]]:
        for index, chunk in enumerate(super().iter_changes(*args, **kwargs)):
            yield chunk
            if index == 0:
                self.cleanup()


def _cleanup_to_max_lsn(h: Harness) -> None:
    """sp_cdc_cleanup_change_table raises the instance's start_lsn, then deletes older rows."""
    max_lsn = h.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0]
    h.sql(
        "EXEC sys.sp_cdc_cleanup_change_table @capture_instance=N'dbo_orders', @low_water_mark=%s, @threshold=5000",
        params=(max_lsn,),
    )


def _pipeline_reading_with_cleanup(h: Harness, config: Any) -> TablePipeline:
    pipeline = h.pipeline(config)
    pipeline._source_factory = lambda: CleanupWhileReading(h.engine.connect(), lambda: _cleanup_to_max_lsn(h))
    return pipeline


@pytest.mark.parametrize("when", [pytest.param("between_plan_and_read", marks=pytest.mark.slow), "during_read"])
def test_cleanup_after_plan_never_loads_a_partial_window(harness: Harness, when: str) -> None:
    # Case 3. Given a planned stream window of many change rows (chunk_rows 7),
    h = harness
    config, workload = orders_harness(h, seed=31)
    h.pipeline(config).run_once()
    workload.run(h.engine.connect(), 30, rollback_fraction=0)
    h.capture()
    window = h.pipeline(config).plan()
    assert window.mode == "stream"
    before = h.snowflake_rows(f"SELECT WATERMARK_LSN FROM {h.database}.CONTROL.CDC_WATERMARKS")
    # when the cleanup job purges the start of the window before or while it is read,
    if when == "between_plan_and_read":
        _cleanup_to_max_lsn(h)
        reader = h.pipeline(config)
    else:
        reader = _pipeline_reading_with_cleanup(h, config)
    # then the read fails naming the retention gap (the default policy) and nothing advances;
    with pytest.raises(RetentionGapError, match="retention gap"):
        reader.apply(reader.extract_load(window))
    assert h.snowflake_rows(f"SELECT WATERMARK_LSN FROM {h.database}.CONTROL.CDC_WATERMARKS") == before


@pytest.mark.slow  # `make test`: the same policy on a retention gap (test_retention_gap_resnapshots_by_policy)
def test_cleanup_during_read_resnapshots_by_policy(harness: Harness) -> None:
    # Case 3, policy resnapshot: the same window becomes a snapshot, and raw equals the source.
    h = harness
    h.sql(ORDERS_DDL, ENABLE_ORDERS)
    config = h.source_config([{**ORDERS_TABLE, "retention_gap_policy": "resnapshot"}])
    workload = OrdersWorkload(33)
    workload.run(h.engine.connect(), 10, rollback_fraction=0)
    h.capture()
    h.pipeline(config).run_once()
    workload.run(h.engine.connect(), 30, rollback_fraction=0)
    h.capture()
    window = h.pipeline(config).plan()
    reader = _pipeline_reading_with_cleanup(h, config)
    # The window's rows are never loaded: a snapshot starts instead (its chunks load after).
    with pytest.raises(SnapshotStarted):
        reader.extract_load(window)
    store = reader.snapshot_store()
    result = run_workers({reader.table.name: SnapshotWork(reader, store)}, store, "test")
    assert [done["table"] for done in result["finished"]] == [reader.table.name]
    assert reconcile(h.pipeline(config), salt=SALT).ok


def test_changes_without_a_time_mapping_row_are_not_dropped(harness: Harness) -> None:
    # Case 14: a change row whose transaction has no cdc.lsn_time_mapping row (removed here by an
    # administrator's DELETE; the table is an ordinary table in the cdc schema) must still load.
    h = harness
    config, workload = orders_harness(h, seed=35)
    h.pipeline(config).run_once()
    workload.run(h.engine.connect(), 12, rollback_fraction=0)
    h.capture()
    lsns = [row[0] for row in h.query("SELECT DISTINCT [__$start_lsn] FROM cdc.dbo_orders_CT ORDER BY 1")]
    h.sql("DELETE FROM cdc.lsn_time_mapping WHERE start_lsn = %s", params=(lsns[-2],))
    run_until_idle(h, config)
    assert_converged(h, config)
    loaded = h.snowflake_rows(
        f"SELECT _CDC_COMMITTED_AT FROM {h.database}.RAW.ORDERS_HISTORY WHERE _CDC_LSN = '{to_hex(bytes(lsns[-2]))}'"
    )
    # Loaded, with the time sys.fn_cdc_map_lsn_to_time gives for the LSN.
    expected = h.query("SELECT sys.fn_cdc_map_lsn_to_time(%s)", (lsns[-2],))[0][0]
    assert expected is not None and loaded and {row[0] for row in loaded} == {expected}


def test_equal_start_lsn_after_cleanup_still_rolls_over(harness: Harness) -> None:
    # Case 14: cleanup raises every instance's start_lsn to the same low water mark; the newer
    # capture instance (by create_date) is still the one to switch to.
    h = harness
    h.sql(
        "CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, name nvarchar(50) NOT NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'items', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.items VALUES (1, N'a'), (2, N'b')")
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "items", "primary_key": ["id"]}])
    h.pipeline(config).run_once()
    h.sql("ALTER TABLE dbo.items ADD price decimal(10,2) NULL")
    h.sql(
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'items', @role_name=NULL, "
        "@capture_instance=N'dbo_items_v2'"
    )
    h.sql("UPDATE dbo.items SET price = 1.25 WHERE id = 1")
    h.capture()
    # The old instance is read up to the new one's start (the position sits just below it) ...
    h.pipeline(config).run_once()
    v2_start = h.query("SELECT start_lsn FROM cdc.change_tables WHERE capture_instance = N'dbo_items_v2'")[0][0]
    # ... then cleanup raises the old instance's start_lsn to the same LSN as the new one's.
    h.sql(
        "EXEC sys.sp_cdc_cleanup_change_table @capture_instance=N'dbo_items', @low_water_mark=%s, @threshold=5000",
        params=(v2_start,),
    )
    starts = {row[0] for row in h.query("SELECT start_lsn FROM cdc.change_tables")}
    assert len(starts) == 1
    h.sql("UPDATE dbo.items SET price = 2.50 WHERE id = 2")
    h.capture()
    results = run_until_idle(h, config)
    assert {r.get("capture_instance") for r in results if r["mode"] != "idle"} == {"dbo_items_v2"}
    assert reconcile(h.pipeline(config), salt=SALT).ok


def test_snapshot_positioned_below_a_new_instance_is_not_a_rewound_source(harness: Harness) -> None:
    # Case 14: an instance enabled after the last captured transaction starts above max_lsn, so its
    # snapshot is positioned at start_lsn - 1, above fn_cdc_get_max_lsn(): that is not a restore.
    h = harness
    h.sql(
        "CREATE TABLE dbo.other (id int NOT NULL PRIMARY KEY)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'other', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.other VALUES (1)")
    h.capture()
    h.sql("CREATE TABLE dbo.quiet (id int NOT NULL PRIMARY KEY, v int NULL)")
    h.sql("INSERT INTO dbo.quiet VALUES (1, 10), (2, 20)")
    h.sql("EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'quiet', @role_name=NULL")
    config = h.source_config([{"schema": "dbo", "table": "quiet", "primary_key": ["id"]}])
    snapshot = h.pipeline(config).run_once()
    max_lsn = h.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0]
    assert snapshot["mode"] == "snapshot" and snapshot["window"][1] > to_hex(bytes(max_lsn))
    # Nothing was captured since: the next polls are idle, not SourceRewoundError.
    assert h.pipeline(config).run_once()["mode"] == "idle"
    h.sql("UPDATE dbo.quiet SET v = 21 WHERE id = 2")
    h.capture()
    assert run_until_idle(h, config)[0]["mode"] == "stream"
    assert reconcile(h.pipeline(config), salt=SALT).ok


def _one_dag_run(pipeline_for: Any, cut: str) -> dict[str, Any]:
    """What one DAG run does for a table: plan (up to the run's cut) -> extract_load -> apply."""
    window = pipeline_for().plan(cut=cut)
    assert window.mode == "stream"
    return pipeline_for().apply(pipeline_for().extract_load(window))


DEFAULT_BUDGET = 600  # catch_up_seconds' default


@pytest.mark.parametrize("budget", [DEFAULT_BUDGET, pytest.param(0, marks=pytest.mark.slow)])
def test_capped_windows_catch_up_within_one_run(harness: Harness, budget: int) -> None:
    # Case 14: max_transactions_per_batch bounds each batch, not the run: a busy source producing
    # more transactions per interval than the cap must not fall further behind every run.
    h = harness
    h.sql(ORDERS_DDL, ENABLE_ORDERS)
    budget_setting = {} if budget == DEFAULT_BUDGET else {"catch_up_seconds": budget}
    config = h.source_config([{**ORDERS_TABLE, "max_transactions_per_batch": 3, **budget_setting}])
    h.pipeline(config).run_once()
    OrdersWorkload(37).run(h.engine.connect(), 12, rollback_fraction=0)
    h.capture()
    cut = to_hex(bytes(h.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0]))
    assert cut is not None
    result = _one_dag_run(lambda: h.pipeline(config), cut)
    mark = h.snowflake_rows(f"SELECT WATERMARK_LSN FROM {h.database}.CONTROL.CDC_WATERMARKS")[0][0]
    if budget:
        # Several capped batches in one run, each bounded by the cap: the table reached the cut.
        assert mark == cut
        assert h.pipeline(config).plan(cut=cut).mode == "idle"
        assert result["batches"] >= 3
    else:
        # No time left: one capped batch, the rest in the next runs.
        assert result["batches"] == 1 and mark < cut
        run_until_idle(h, config)
    assert_converged(h, config)
