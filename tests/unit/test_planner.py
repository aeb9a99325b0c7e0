"""Window planning (include/cdc_pipeline/planner.py) against a fake source and watermark, in Python.

The fake reader answers the few questions the planner asks SQL Server (capture instances, max LSN,
first change after a position, the N-th transaction after a position) from a list of commit LSNs,
the way the real functions do (shared/docs/sqlserver-cdc-semantics.md); the fake watermark store
is the Snowflake control row of one table. No emulator, no Snowflake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.errors import RetentionGapError, SourceRewoundError, TableNotCapturedError
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import Watermark
from include.cdc_pipeline.planner import Planner, Window
from include.cdc_pipeline.source import CaptureInstance
from include.cdc_pipeline.source_plan import BatchedReader, SourcePlanner


def at(n: int) -> Lsn:
    return Lsn.from_int(n)


def hx(n: int) -> str:
    return at(n).hex


@dataclass
class FakeReader:
    """One source table's capture instances and the commit LSNs of its changes, per instance."""

    instances: list[CaptureInstance] = field(default_factory=list)
    changes: dict[str, list[int]] = field(default_factory=dict)
    max: int | None = None  # sys.fn_cdc_get_max_lsn(); by default the last commit
    questions: list[str] = field(default_factory=list)

    def add_instance(self, name: str, start: int, created: int) -> None:
        self.instances.append(CaptureInstance(name, at(start), "dbo", "orders", datetime(2026, 1, created), created))
        self.changes.setdefault(name, [])

    def capture_instances(self, schema: str, table: str) -> list[CaptureInstance]:
        self.questions.append("capture_instances")
        return [ci for ci in self.instances if (ci.source_schema, ci.source_table) == (schema, table)]

    def commits(self) -> list[int]:
        return sorted({n for lsns in self.changes.values() for n in lsns})

    def max_lsn(self) -> Lsn | None:
        self.questions.append("max_lsn")
        top = self.max if self.max is not None else max(self.commits(), default=None)
        return at(top) if top is not None else None

    def bounded_upper(self, after: Lsn, max_transactions: int) -> Lsn | None:
        self.questions.append("bounded_upper")
        later = [n for n in self.commits() if n > int(after)][:max_transactions]
        return at(later[-1]) if later else None

    def first_change_after(self, capture_instance: str, after: Lsn) -> Lsn | None:
        self.questions.append("first_change_after")
        later = [n for n in self.changes[capture_instance] if n > int(after)]
        return at(min(later)) if later else None

    def ddl_after(self, capture_instance: str, after: Lsn) -> list[tuple[str, Lsn, datetime]]:
        return []


@dataclass
class FakeWatermarks:
    """The table's row in the control table."""

    mark: Watermark | None = None
    reads: int = 0

    def read(self) -> Watermark | None:
        self.reads += 1
        return self.mark

    def advance_idle(self, expected: Watermark, position: Watermark) -> bool:
        if self.mark is None or (self.mark.capture_instance, self.mark.lsn) != (
            expected.capture_instance,
            expected.lsn,
        ):
            return False
        self.mark = Watermark(position.capture_instance, position.lsn)
        return True


@dataclass
class DictHints:
    value: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        return dict(self.value) if self.value else None

    def set(self, value: dict[str, Any]) -> None:
        self.value = dict(value)


class FakeSource:
    """What ``source_plan.BatchedReader`` asks of a ``CdcSource``, answered by the fake reader:
    the batched forms (every capture instance, many probes at once) over the same data."""

    def __init__(self, reader: FakeReader) -> None:
        self.reader = reader

    def all_capture_instances(self) -> dict[tuple[str, str], list[CaptureInstance]]:
        self.reader.questions.append("capture_instances")
        found: dict[tuple[str, str], list[CaptureInstance]] = {}
        for ci in self.reader.instances:
            found.setdefault((ci.source_schema.lower(), ci.source_table.lower()), []).append(ci)
        return found

    def first_changes_after(self, probes: list[tuple[str, Lsn]]) -> dict[tuple[str, Lsn], Lsn | None]:
        return {(ci, after): self.reader.first_change_after(ci, after) for ci, after in probes}

    def __getattr__(self, name: str) -> Any:  # max_lsn, first_change_after, bounded_upper, ddl_after
        return getattr(self.reader, name)


class SourcePlanning:
    """The same table planned by ``source_plan.SourcePlanner`` (the DAG's one planning step for
    every table of a source): its two passes and batched probe must decide exactly as ``Planner``."""

    def __init__(self, config: SourceConfig, reader: FakeReader, watermarks: FakeWatermarks, hints: DictHints) -> None:
        self.planner = SourcePlanner(
            config,
            BatchedReader(FakeSource(reader)),
            lambda _: watermarks,
            lambda _: hints,  # type: ignore[arg-type]
        )

    def plan(self, resnapshot: bool = False, cut: str | None = None) -> Window:
        (result,) = self.planner.plan(cut, lambda _: resnapshot).tables
        if result.exception is not None:
            raise result.exception
        assert result.window is not None
        return result.window


@pytest.fixture(params=["table", "source"])
def planning(request: pytest.FixtureRequest) -> str:
    """Every test runs twice: the per-table ``Planner``, and the source-wide ``SourcePlanner``."""
    return str(request.param)


_PLANNING = ["table"]


@pytest.fixture(autouse=True)
def _planning_mode(planning: str) -> Any:
    _PLANNING[0] = planning
    yield
    _PLANNING[0] = "table"


def planner(
    reader: FakeReader, watermarks: FakeWatermarks, hints: DictHints | None = None, **table: Any
) -> Planner | SourcePlanning:
    config = SourceConfig.model_validate(
        {
            "name": "src",
            "target": {"database": "DB"},
            "alert_emails": ["oncall@example.com"],
            "tables": [{"schema": "dbo", "table": "orders", "primary_key": ["id"], **table}],
        }
    )
    if _PLANNING[0] == "source":
        return SourcePlanning(config, reader, watermarks, hints or DictHints())
    return Planner(config, config.tables[0], lambda: reader, watermarks, hints or DictHints(), "src.dbo.orders")


@pytest.fixture
def reader() -> FakeReader:
    source = FakeReader()
    source.add_instance("dbo_orders", start=1, created=1)
    return source


def test_first_run_snapshots_the_newest_instance(reader: FakeReader) -> None:
    # Given a table never loaded (no hint, no watermark) with a second capture instance
    reader.add_instance("dbo_orders_v2", start=5, created=2)
    reader.changes["dbo_orders"] = [2, 3]
    # When it is planned
    window = planner(reader, FakeWatermarks()).plan()
    # Then it is snapshotted from the newest instance; the snapshot LSN is extract's to pick
    assert (window.mode, window.capture_instance, window.lower, window.upper) == (
        "snapshot",
        "dbo_orders_v2",
        None,
        None,
    )
    assert "no watermark" in window.reason


def test_stream_window_starts_after_the_watermark(reader: FakeReader) -> None:
    reader.changes["dbo_orders"] = [3, 7, 9]
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3)))).plan()
    # (watermark, max LSN]: exclusive lower bound, inclusive upper, no cap
    assert (window.mode, window.lower, window.upper, window.cut) == ("stream", hx(3), hx(9), None)
    assert window.position == hx(3)


def test_run_cut_bounds_the_window(reader: FakeReader) -> None:
    reader.changes["dbo_orders"] = [3, 7, 9]
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3)))).plan(cut=hx(7))
    assert (window.mode, window.lower, window.upper) == ("stream", hx(3), hx(7))
    assert "max_lsn" not in reader.questions  # the run's cut replaces the source's max LSN


def test_idle_poll_records_the_check_and_advances_the_watermark(reader: FakeReader) -> None:
    # Given a loaded table whose source had commits on other tables since (max LSN 12)
    reader.changes["dbo_orders"] = [3]
    reader.max = 12
    watermarks, hints = FakeWatermarks(Watermark("dbo_orders", hx(3))), DictHints()
    # When it is planned and nothing of it changed
    window = planner(reader, watermarks, hints).plan()
    # Then it is idle over (3, 12], and the position moves to 12: a quiet table never falls behind
    # the retention window (Airbyte issue #37772)
    assert (window.mode, window.lower, window.upper) == ("idle", hx(3), hx(12))
    assert watermarks.mark == Watermark("dbo_orders", hx(12))
    assert hints.value is not None
    assert (hints.value["watermark"], hints.value["checked_upper"]) == (hx(12), hx(12))
    # And the next idle poll decides from the hint alone: the watermark is not read again
    reads = watermarks.reads
    assert planner(reader, watermarks, hints).plan().mode == "idle"
    assert watermarks.reads == reads


def test_hint_the_watermark_does_not_hold_is_dropped(reader: FakeReader) -> None:
    # Given a hint that says 8, while Snowflake holds 3 (another environment, a reset)
    reader.changes["dbo_orders"] = [3, 5]
    reader.max = 12
    hints = DictHints({"capture_instance": "dbo_orders", "watermark": hx(8)})
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3))), hints).plan()
    # Then Snowflake decides: the change at 5 is read, not skipped
    assert (window.mode, window.lower, window.upper) == ("stream", hx(3), hx(12))


def test_transaction_cap_bounds_the_window_and_keeps_the_cut(reader: FakeReader) -> None:
    reader.changes["dbo_orders"] = [3, 6, 7, 8, 9]
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3))), max_transactions_per_batch=2).plan()
    # Two transactions after the watermark (6, 7); the run's cut (9) stays for catching up
    assert (window.mode, window.lower, window.upper, window.cut) == ("stream", hx(3), hx(7), hx(9))


def test_retention_gap_fails_loudly_by_default(reader: FakeReader) -> None:
    # Given cleanup raised the instance's start_lsn to 10, past the watermark 3 (+1)
    reader.instances[0] = CaptureInstance("dbo_orders", at(10), "dbo", "orders", datetime(2026, 1, 1), 1)
    reader.changes["dbo_orders"] = [10, 11]
    with pytest.raises(RetentionGapError, match=r"retention gap .* start_lsn 0x0000000000000000000A"):
        planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3)))).plan()


def test_retention_gap_resnapshots_by_policy(reader: FakeReader) -> None:
    reader.instances[0] = CaptureInstance("dbo_orders", at(10), "dbo", "orders", datetime(2026, 1, 1), 1)
    reader.changes["dbo_orders"] = [10, 11]
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3))), retention_gap_policy="resnapshot").plan()
    assert (window.mode, window.capture_instance) == ("snapshot", "dbo_orders")
    assert "retention gap" in window.reason


def test_no_gap_when_the_watermark_is_just_below_start(reader: FakeReader) -> None:
    # start_lsn = watermark + 1: nothing between them was ever purged
    reader.instances[0] = CaptureInstance("dbo_orders", at(4), "dbo", "orders", datetime(2026, 1, 1), 1)
    reader.changes["dbo_orders"] = [4, 6]
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3)))).plan()
    assert (window.mode, window.lower, window.upper) == ("stream", hx(3), hx(6))


def test_roll_over_reads_the_old_instance_up_to_the_new_one_then_switches(reader: FakeReader) -> None:
    # Given a second capture instance whose changes start at 8 (schema change at 8)
    reader.add_instance("dbo_orders_v2", start=8, created=2)
    reader.changes["dbo_orders"] = [3, 5, 6, 8, 9]  # the old instance keeps capturing until disabled
    reader.changes["dbo_orders_v2"] = [8, 9]
    watermarks = FakeWatermarks(Watermark("dbo_orders", hx(3)))
    # When planned: the old instance is read up to the LSN before the new one starts
    first = planner(reader, watermarks).plan()
    assert (first.mode, first.capture_instance, first.lower, first.upper) == ("stream", "dbo_orders", hx(3), hx(7))
    assert first.switched_from is None
    # And once that is loaded, the next window reads the new instance from there: no gap, no overlap
    watermarks.mark = Watermark("dbo_orders", hx(7))
    second = planner(reader, watermarks).plan()
    assert (second.mode, second.capture_instance, second.lower, second.upper) == (
        "stream",
        "dbo_orders_v2",
        hx(7),
        hx(9),
    )
    assert second.switched_from == "dbo_orders"


def test_pinned_instance_missing_is_a_clear_error(reader: FakeReader) -> None:
    with pytest.raises(TableNotCapturedError, match=r"'dbo_orders_v9' \(pinned in config\) does not exist"):
        planner(reader, FakeWatermarks(), capture_instance="dbo_orders_v9").plan()


def test_table_without_capture_instance_names_the_enable_call() -> None:
    with pytest.raises(TableNotCapturedError, match=r"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo'"):
        planner(FakeReader(), FakeWatermarks()).plan()


def test_source_rewound_below_the_watermark_is_refused(reader: FakeReader) -> None:
    # Given Snowflake holds 20 while the source's log ends at 10 (restored database)
    reader.changes["dbo_orders"] = [3, 10]
    with pytest.raises(SourceRewoundError, match=r"max LSN .*0A is below the loaded watermark .*14"):
        planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(20)))).plan()


def test_window_survives_its_xcom_round_trip(reader: FakeReader) -> None:
    reader.changes["dbo_orders"] = [3, 7]
    window = planner(reader, FakeWatermarks(Watermark("dbo_orders", hx(3)))).plan()
    assert Window(**window.as_dict()) == window
