"""Planning every table of a source in one step: which tables have work in this run.

A run costs what changed, not how many tables there are (README "Many tables"). One planning step
per source run reads, for all tables at once:

* the capture instances of the whole database (one query);
* the tables' positions from one hint record per source (``SourceHints``: an Airflow Variable in
  the DAG), never from Snowflake unless a table has work to confirm or no hint;
* whether anything was captured after each position: ``CdcSource.first_changes_after``, a handful of
  statements of index seeks for hundreds of change tables;
* the watermarks in Snowflake in one query, only when some table needs them (``SourceWatermarks``).

The deciding itself stays ``planner.Planner``'s, table by table, unchanged: idle, stream window,
snapshot, capture-instance roll-over, retention gap, rewound source, transaction cap. Planning runs
in two passes over the tables: the first lets each planner go as far as its "anything new?" probe
(``BatchedReader`` records the probe instead of sending it), then every probe goes to SQL Server
together, then the second pass decides with the answers (a probe the first pass could not foresee,
after a stale hint, is sent on its own). A table whose planning fails is reported with its error,
never dropped: the run gives it a task of its own that plans it again (retries) or fails naming
the cause; the other tables go on.

Free of Airflow, like the other flow modules: ``orchestration.tasks`` wires it to the DAG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from include.cdc_pipeline.config import SourceConfig, TableConfig
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import (
    HintStore,
    TargetHints,
    Watermark,
    advance_idle_watermark,
    ensure_control_table,
    hint_target,
    read_watermarks,
)
from include.cdc_pipeline.planner import Planner, WatermarkStore, Window
from include.cdc_pipeline.source import CaptureInstance, CdcSource
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

# Idle tables whose position is due for the control table (planner.IDLE_PERSIST_EVERY) write it at
# most this many per run: 300 idle tables then spread their Snowflake writes over a dozen runs
# instead of waking the warehouse with 300 statements in one.
IDLE_PERSISTS_PER_RUN = 25


class _Probe(Exception):  # control flow of the first pass, never raised to a caller
    """The first pass stops a table's planner at its probe: (capture instance, position)."""

    def __init__(self, key: tuple[str, Lsn]) -> None:
        super().__init__(key)
        self.key = key


class BatchedReader:
    """``planner.ChangeReader`` over one source connection for every table of the source: capture
    instances from one query, probes answered from ``probe``'s batch (first pass: recorded)."""

    def __init__(self, source: CdcSource) -> None:
        self.source = source
        self.collecting = True
        self._instances: dict[tuple[str, str], list[CaptureInstance]] | None = None
        self._first: dict[tuple[str, Lsn], Lsn | None] = {}
        self._bounded: dict[tuple[Lsn, int], Lsn | None] = {}
        self.statements = 0  # statements sent to SQL Server (the run's figure)

    def capture_instances(self, schema: str, table: str) -> list[CaptureInstance]:
        if self._instances is None:
            self._instances = self.source.all_capture_instances()
            self.statements += 1
        return list(self._instances.get((schema.lower(), table.lower()), []))

    def max_lsn(self) -> Lsn | None:  # the DAG passes the run's cut instead: asked once at most
        if not hasattr(self, "_max"):
            self.statements += 1
            self._max = self.source.max_lsn()
        return self._max

    def first_change_after(self, capture_instance: str, after: Lsn) -> Lsn | None:
        key = (capture_instance, after)
        if key in self._first:
            return self._first[key]
        if self.collecting:
            raise _Probe(key)
        self.statements += 1
        self._first[key] = self.source.first_change_after(capture_instance, after)
        return self._first[key]

    def probe(self, keys: Iterable[tuple[str, Lsn]]) -> None:
        """Answer many probes together (``CdcSource.first_changes_after``)."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._first]
        if wanted:
            self._first.update(self.source.first_changes_after(wanted))
            self.statements += -(-len(wanted) // 100)

    def bounded_upper(self, after: Lsn, max_transactions: int) -> Lsn | None:
        key = (after, max_transactions)
        if key not in self._bounded:
            self.statements += 1
            self._bounded[key] = self.source.bounded_upper(after, max_transactions)
        return self._bounded[key]

    def ddl_after(self, capture_instance: str, after: Lsn) -> list[tuple[str, Lsn, datetime]]:
        self.statements += 1
        return self.source.ddl_after(capture_instance, after)


class SourceWatermarks:
    """The source's watermarks in Snowflake, read in one query on first need and kept for the run;
    ``table(name)`` is one table's ``planner.WatermarkStore`` over them."""

    def __init__(self, warehouse: Callable[[], Warehouse], database: str, schema: str, source: str) -> None:
        self._warehouse = warehouse
        self.database, self.schema, self.source = database, schema, source
        self._marks: dict[str, Watermark] | None = None

    def _ready(self) -> Warehouse:
        wh = self._warehouse()
        if self._marks is None:
            wh.ensure_database(self.database)
            wh.ensure_schemas(self.database, [self.schema])
            ensure_control_table(wh, self.database, self.schema)
        return wh

    def read(self, table: str) -> Watermark | None:
        if self._marks is None:
            wh = self._ready()
            self._marks = read_watermarks(wh, self.database, self.schema, self.source)
        return self._marks.get(table)

    def advance_idle(self, table: str, expected: Watermark, position: Watermark) -> bool:
        wh = self._ready()
        moved = advance_idle_watermark(wh, self.database, self.schema, self.source, table, expected, position)
        if moved and self._marks is not None:
            self._marks[table] = position
        return moved

    def table(self, name: str) -> _TableWatermarks:
        return _TableWatermarks(self, name)


@dataclass
class _TableWatermarks:
    marks: SourceWatermarks
    name: str

    def read(self) -> Watermark | None:
        return self.marks.read(self.name)

    def advance_idle(self, expected: Watermark, position: Watermark) -> bool:
        return self.marks.advance_idle(self.name, expected, position)


def _position(hint: dict[str, Any] | None) -> Lsn | None:
    """How far a hint says its table is known (watermark, or the newer idle check)."""
    if not hint or not hint.get("watermark"):
        return None
    marks = [hint["watermark"], hint.get("checked_upper") or hint["watermark"]]
    return max(Lsn.from_hex(m) for m in marks)


def newer_hint(own: dict[str, Any] | None, shared: dict[str, Any] | None) -> dict[str, Any] | None:
    """Of a table's own hint and its entry in the source's hints, the one that knows the table
    further (a tie goes to its own, written by the apply that moved the watermark)."""
    mine, theirs = _position(own), _position(shared)
    if own and (theirs is None or (mine is not None and mine >= theirs)):
        return own
    return shared or own


class SourceHints:
    """The hints of every table of a source: one record for the source, written once per run by
    the planning step, plus the per-table hints the tables' apply tasks write after a batch
    (read only for the tables that had work in the previous run, where they can be newer).
    Concurrent apply tasks never write the source's record, so nothing is lost between them."""

    def __init__(self, source_store: HintStore, table_store: Callable[[str], HintStore], tables: Iterable[str]) -> None:
        self.source_store = source_store
        saved = source_store.get() or {}
        self.hints: dict[str, dict[str, Any]] = dict(saved.get("tables") or {})
        # Without a source record (first run, or the Variable was deleted) every table's own hint is
        # read once; afterwards only those of tables that had work in the previous run.
        recent = saved.get("work") if "tables" in saved else list(tables)
        self.read_per_table = 0
        for name in recent or []:
            self.read_per_table += 1
            newest = newer_hint(table_store(name).get(), self.hints.get(name))
            if newest is not None:
                self.hints[name] = newest

    def view(self, table: str) -> HintStore:
        return _HintView(self, table)

    def save(self, work: Iterable[str], run_id: str | None = None) -> None:
        self.source_store.set(
            {
                "tables": self.hints,
                "work": sorted(work),
                "run_id": run_id,
                "saved_at": datetime.now(UTC).isoformat(),
            }
        )


@dataclass
class _HintView:
    hints: SourceHints
    table: str

    def get(self) -> dict[str, Any] | None:
        hint = self.hints.hints.get(self.table)
        return dict(hint) if hint else None

    def set(self, value: dict[str, Any]) -> None:
        self.hints.hints[self.table] = dict(value)


@dataclass
class TablePlan:
    """The outcome of planning one table: a window (idle, stream, snapshot) or the error that
    stopped its planning (the run plans that table again in a task of its own)."""

    table: str
    window: Window | None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return self.window.mode if self.window is not None else "error"


@dataclass
class SourcePlan:
    """Every table's plan for one run, and what planning cost."""

    cut: str | None
    tables: list[TablePlan]
    checked_at: str
    source_statements: int = 0
    modes: dict[str, int] = field(default_factory=dict)

    @property
    def work(self) -> list[TablePlan]:
        """The tables this run gives a task: every one not idle (errors included)."""
        return [p for p in self.tables if p.mode != "idle"]


class SourcePlanner:
    """Plans every configured table of a source for one run (see the module docstring).

    ``watermarks`` and ``hints`` give each table's store by table name (``source_planner`` wires
    the production ones: ``SourceWatermarks`` and ``SourceHints`` bound to the target)."""

    def __init__(
        self,
        cfg: SourceConfig,
        reader: BatchedReader,
        watermarks: Callable[[str], WatermarkStore],
        hints: Callable[[str], HintStore],
        idle_persists: int = IDLE_PERSISTS_PER_RUN,
    ) -> None:
        self.cfg, self.reader, self.watermarks, self.hints = cfg, reader, watermarks, hints
        self._idle_persists = idle_persists

    def _may_persist_idle(self) -> bool:
        if self._idle_persists <= 0:
            return False
        self._idle_persists -= 1
        return True

    def planner(self, table: TableConfig) -> Planner:
        label = f"{self.cfg.name}.{table.source_schema}.{table.table}"
        return Planner(
            self.cfg,
            table,
            lambda: self.reader,
            self.watermarks(table.name),
            self.hints(table.name),
            label,
            self._may_persist_idle,
        )

    def plan(self, cut: str | None, resnapshot: Callable[[TableConfig], bool]) -> SourcePlan:
        """Plan every table up to the run's ``cut`` (hex LSN; None: nothing captured yet)."""
        decided: dict[str, TablePlan] = {}
        for collecting in (True, False):
            self.reader.collecting = collecting
            probes: list[tuple[str, Lsn]] = []
            for table in self.cfg.tables:
                if table.name in decided:
                    continue
                try:
                    window = self.planner(table).plan(resnapshot=resnapshot(table), cut=cut)
                except _Probe as probe:
                    probes.append(probe.key)
                    continue
                except Exception as exc:
                    log.warning(
                        "%s.%s: planning failed (%s); its own task plans it again", self.cfg.name, table.name, exc
                    )
                    decided[table.name] = TablePlan(table.name, None, " ".join(str(exc).split()), exc)
                    continue
                decided[table.name] = TablePlan(table.name, window)
            if collecting:
                self.reader.probe(probes)
        plans = [decided[t.name] for t in self.cfg.tables]
        modes: dict[str, int] = {}
        for p in plans:
            modes[p.mode] = modes.get(p.mode, 0) + 1
        return SourcePlan(cut, plans, datetime.now(UTC).isoformat(), self.reader.statements, modes)


def source_planner(
    cfg: SourceConfig, source: CdcSource, warehouse: Callable[[], Warehouse], hints: SourceHints
) -> SourcePlanner:
    """The production wiring: one source connection, the source's watermarks in Snowflake (opened
    only when a table needs them), the hints bound to the target they describe."""
    t = cfg.target
    marks = SourceWatermarks(warehouse, t.database, t.control_schema, cfg.name)
    target = hint_target(cfg)
    return SourcePlanner(cfg, BatchedReader(source), marks.table, lambda name: TargetHints(hints.view(name), target))
