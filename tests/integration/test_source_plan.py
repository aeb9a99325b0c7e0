"""Planning every table of a source in one step (include/cdc_pipeline/source_plan.py), over TDS.

Many small tables on the emulator and the local Snowflake: the planning step decides each table as
its own planner would, costs a fixed handful of SQL Server statements whatever the table count
(capture instances in one, the "anything new?" probes a hundred to a statement), no Snowflake
query when every table is idle, and one table's error never stops the others.
"""

from __future__ import annotations

from typing import Any

import pytest

from dev.localpipeline import MemoryHints
from include.cdc_pipeline.reconcile import reconcile
from include.cdc_pipeline.source import CdcSource
from include.cdc_pipeline.source_plan import SourceHints, source_planner
from include.cdc_pipeline.warehouse import Warehouse
from tests.integration.conftest import SALT, Harness

pytestmark = pytest.mark.integration

TABLES = 7


def _tables(h: Harness, n: int) -> Any:
    for i in range(n):
        h.sql(
            f"CREATE TABLE dbo.t{i:02d} (id int NOT NULL PRIMARY KEY, v nvarchar(20) NULL)",
            f"INSERT INTO dbo.t{i:02d} VALUES (1, N'a'), (2, N'b')",
            f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't{i:02d}', @role_name = NULL",
        )
    h.capture()
    return h.source_config([{"schema": "dbo", "table": f"t{i:02d}", "primary_key": ["id"]} for i in range(n)])


class Planning:
    """The DAG's planning step against the harness: one source connection, the tables' hints
    (the per-table stores the pipelines write, one record for the source) and the watermarks."""

    def __init__(self, h: Harness, config: Any) -> None:
        self.h, self.config = h, config
        self.source_record = MemoryHints()
        self.warehouses: list[Warehouse] = []

    def plan(self, per_statement: int | None = None) -> tuple[Any, CdcSource, int]:
        source = CdcSource(self.h.connect())
        statements = []
        if per_statement is not None:  # count the probe statements by their size
            probe = source.first_changes_after
            source.first_changes_after = lambda probes: probe(probes, per_statement)  # type: ignore[method-assign]
        original = source._all

        def counting(sql: str, params: Any = None) -> Any:
            statements.append(sql)
            return original(sql, params)

        source._all = counting  # type: ignore[method-assign]

        def warehouse() -> Warehouse:
            self.warehouses.append(Warehouse(self.h.snowflake.connect()))
            return self.warehouses[-1]

        names = [t.name for t in self.config.tables]
        hints = SourceHints(self.source_record, lambda name: self.h.hints.setdefault(name, MemoryHints()), names)
        before = sum(wh.queries for wh in self.warehouses)
        cut = source.max_lsn()  # the run's cut, read once by the plan task
        plan = source_planner(self.config, source, warehouse, hints).plan(cut and cut.hex, lambda table: False)
        hints.save([p.table for p in plan.work])
        plan.statements = statements
        return plan, source, sum(wh.queries for wh in self.warehouses) - before


def test_one_planning_step_decides_every_table_for_a_handful_of_statements(harness: Harness) -> None:
    # Given a source of seven tables, each snapshotted once by its own pipeline,
    config = _tables(harness, TABLES)
    for i in range(TABLES):
        assert harness.pipeline(config, i).run_once()["mode"] == "snapshot"
    planning = Planning(harness, config)
    # when nothing was captured since, one planning step finds every table idle with a single
    # statement (the capture instances: no table's position is below the run's cut, nothing to
    # probe) and no Snowflake query at all,
    plan, _, snowflake = planning.plan()
    assert plan.modes == {"idle": TABLES} and not plan.work
    assert len(plan.statements) == 1 and snowflake == 0

    # When two of them change, every position is below the new cut: all seven tables are probed
    # in one statement (three to a statement: three), those two get a stream window, five stay idle,
    harness.sql("UPDATE dbo.t03 SET v = N'x' WHERE id = 1", "DELETE FROM dbo.t05 WHERE id = 2")
    harness.capture()
    probes = [s for s in planning.plan(per_statement=3)[0].statements if "MIN(ct.[__$start_lsn])" in s]
    assert [s.count("UNION ALL") + 1 for s in probes] == [3, 3, 1]
    plan, _, _ = planning.plan()
    assert sum("MIN(ct.[__$start_lsn])" in s for s in plan.statements) == 1
    assert plan.modes == {"idle": TABLES - 2, "stream": 2}
    assert {p.table: p.mode for p in plan.work} == {"dbo_t03": "stream", "dbo_t05": "stream"}
    # exactly the windows each table's own planner decides,
    for p in plan.work:
        index = [t.name for t in config.tables].index(p.table)
        own = harness.pipeline(config, index).plan()
        assert (own.mode, own.lower, own.upper, own.capture_instance) == (
            p.window.mode, p.window.lower, p.window.upper, p.window.capture_instance,
        )  # fmt: skip
        # and loading them brings raw to the source, value for value.
        pipeline = harness.pipeline(config, index)
        pipeline.apply(pipeline.extract_load(p.window))
        assert reconcile(harness.pipeline(config, index), salt=SALT).ok

    # Then the next step, with every table caught up, is idle again without asking Snowflake: the
    # applied tables' own hints (written by their apply) are read, the rest from the source record.
    plan, _, snowflake = planning.plan()
    assert plan.modes == {"idle": TABLES} and snowflake == 0


def test_a_table_whose_planning_fails_is_reported_and_the_others_are_planned(harness: Harness) -> None:
    # Given three configured tables, one of which has no capture instance (CDC was never enabled),
    config = _tables(harness, 2)
    harness.sql("CREATE TABLE dbo.plain (id int NOT NULL PRIMARY KEY)")
    config = harness.source_config(
        [*({"schema": "dbo", "table": f"t{i:02d}", "primary_key": ["id"]} for i in range(2)),
         {"schema": "dbo", "table": "plain", "primary_key": ["id"]}]
    )  # fmt: skip
    # when the source is planned,
    plan, _, _ = Planning(harness, config).plan()
    # the two captured tables are planned (first snapshot), the third carries its error for its own task.
    assert {p.table: p.mode for p in plan.tables} == {
        "dbo_t00": "snapshot",
        "dbo_t01": "snapshot",
        "dbo_plain": "error",
    }
    (failed,) = [p for p in plan.tables if p.mode == "error"]
    assert type(failed.exception).__name__ == "TableNotCapturedError"
    assert "sys.sp_cdc_enable_table" in (failed.error or "")
