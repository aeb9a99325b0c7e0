"""One table's replication cycle: plan a window, extract + load it, apply it.

Free of Airflow on purpose (the runner module wires it in), so the same code is driven by the
DAG, by tests that crash it between steps, and by benchmarks. Every step can be repeated: a
retry of any step, or of the whole cycle, converges to the same Snowflake state.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from include.cdc_pipeline import lsn as lsnlib
from include.cdc_pipeline.config import RetentionGapPolicy, SourceConfig, TableConfig
from include.cdc_pipeline.errors import (
    CdcError,
    RetentionGapError,
    SourceRewoundError,
    TableConfigError,
    TableNotCapturedError,
    ValueTooLargeError,
)
from include.cdc_pipeline.failpoints import failpoint
from include.cdc_pipeline.progress import PROGRESS_EVERY, Progress
from include.cdc_pipeline.source import CaptureInstance, CdcSource
from include.cdc_pipeline.sql import PYMSSQL_NAMED_START, PYMSSQL_POSITIONAL, tsql_name, tsql_string
from include.cdc_pipeline.stages import AzureStage, InternalStage, Stage
from include.cdc_pipeline.types import ColumnMapping, SourceColumn, arrow_column, map_column
from include.cdc_pipeline.warehouse import (
    HISTORY_META,
    MAX_BINARY_BYTES,
    MAX_VARCHAR_BYTES,
    OP_SNAPSHOT,
    RAW_META,
    ZERO_SEQVAL,
    TableLayout,
    Warehouse,
    Watermark,
    advance_idle_watermark,
    ensure_control_table,
    log_batch,
    read_watermark,
    write_watermark,
)

log = logging.getLogger(__name__)

# How long an idle table may go without its checked position being written to the control table.
# Idle polls otherwise touch only Airflow's metadata DB (the hint), never Snowflake.
IDLE_PERSIST_EVERY = timedelta(hours=1)


def enable_table_call(table: TableConfig) -> str:
    """The exact T-SQL that enables CDC on a configured table (named in errors and by the preflight)."""
    call = (
        f"EXEC sys.sp_cdc_enable_table @source_schema = {tsql_string(table.source_schema)}, "
        f"@source_name = {tsql_string(table.table)}, @role_name = NULL, @supports_net_changes = 0"
    )
    return call + (f", @capture_instance = {tsql_string(table.capture_instance)}" if table.capture_instance else "")


def _hint_target(cfg: SourceConfig) -> str:
    t = cfg.target
    return f"{cfg.mssql_conn_id} -> {cfg.snowflake_conn_id}:{t.database}.{t.control_schema}"


class _TargetHints:
    """The hint store, bound to the connections and control table it describes: a hint written for
    another target (config repointed, environment reset, a test on the same metadata DB) is ignored,
    so it can never make a table look loaded where it is not."""

    def __init__(self, store: HintStore, target: str) -> None:
        self.store, self.target = store, target

    def get(self) -> dict[str, Any] | None:
        hint = self.store.get()
        return hint if hint and hint.get("target") == self.target else None

    def set(self, value: dict[str, Any]) -> None:
        self.store.set({**value, "target": self.target})


class HintStore(Protocol):
    """Cheap per-table state outside Snowflake (Airflow Variables in the DAG)."""

    def get(self) -> dict[str, Any] | None: ...

    def set(self, value: dict[str, Any]) -> None: ...


@dataclass
class Window:
    """What one run does for one table; serialisable (it travels between tasks as XCom)."""

    mode: str  # idle | stream | snapshot
    capture_instance: str
    lower: str | None = None  # exclusive, hex LSN (stream)
    upper: str | None = None  # inclusive, hex LSN (stream; snapshot: set by extract)
    reason: str = ""
    switched_from: str | None = None
    warnings: list[str] = field(default_factory=list)
    # The LSN this run reads up to when max_transactions_per_batch capped the window below it:
    # apply then catches up with further capped windows (catch_up_seconds).
    cut: str | None = None
    # The table's position when plan checked the retention gap (>= lower after an idle stretch or a
    # roll-over); extract checks the capture instance's start_lsn against it again after reading.
    position: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Batch:
    """A window that is loaded into the staging table, ready to apply."""

    window: Window
    batch_id: str
    stage_path: str
    rows: int
    columns: list[dict[str, Any]]
    upper_committed_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = self.window.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Batch:
        data = dict(data)
        data["window"] = Window(**data["window"])
        return cls(**data)


def _max_hex(*values: str | None) -> str | None:
    present = [v for v in values if v]
    return max(present) if present else None


def _below_start(instances: Sequence[CaptureInstance], name: str, position: str) -> bool:
    """The position lies below the start of its capture instance: nothing of it is readable yet."""
    found = next((ci for ci in instances if ci.name.lower() == name.lower()), None)
    return found is not None and int(position, 16) < int.from_bytes(found.start_lsn, "big")


def _check_target_names(label: str, mappings: Sequence[ColumnMapping]) -> None:
    """Two source columns must not land in one Snowflake column, nor in a metadata column. SQL
    Server's default collation keeps ``a b`` and ``A B`` apart only in a case-sensitive database,
    but a ``column_names`` entry can collide with any other column."""
    taken = {name: "the pipeline's metadata column" for name, _ in [*RAW_META, *HISTORY_META]}
    for m in mappings:
        if m.target_name in taken:
            raise TableConfigError(
                f"{label}: source column {m.source.name!r} and {taken[m.target_name]} both map to Snowflake column "
                f"{m.target_name!r}; rename one in column_names (or exclude it)"
            )
        taken[m.target_name] = f"source column {m.source.name!r}"


class TablePipeline:
    """The replication cycle of one configured table."""

    def __init__(
        self,
        source_config: SourceConfig,
        table: TableConfig,
        source: Callable[[], CdcSource],
        warehouse: Callable[[], Warehouse],
        hints: HintStore,
        salt: Callable[[], str | None] | None = None,
        workdir: Path | None = None,
        azure_hook: Any = None,
    ) -> None:
        self.cfg = source_config
        self.table = table
        self._source_factory = source
        self._warehouse_factory = warehouse
        self._source: CdcSource | None = None
        self._warehouse: Warehouse | None = None
        self.hints = _TargetHints(hints, _hint_target(source_config))
        self._salt = salt
        self.workdir = workdir
        self._azure_hook = azure_hook
        self.progress_every = PROGRESS_EVERY  # seconds between progress lines of an extract

    # -- lazily opened connections (an idle plan never opens Snowflake) -----------------------
    @property
    def source(self) -> CdcSource:
        if self._source is None:
            self._source = self._source_factory()
        return self._source

    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = self._warehouse_factory()
            self._warehouse.use_schema(self.cfg.target.database, self.cfg.target.raw_schema)
        return self._warehouse

    @property
    def snowflake_queries(self) -> int:
        return self._warehouse.queries if self._warehouse is not None else 0

    @property
    def label(self) -> str:
        return f"{self.cfg.name}.{self.table.source_schema}.{self.table.table}"

    # -- control state ------------------------------------------------------------------------
    def _read_watermark(self) -> Watermark | None:
        t = self.cfg.target
        self.warehouse.ensure_schemas(t.database, [t.control_schema])
        ensure_control_table(self.warehouse, t.database, t.control_schema)
        return read_watermark(self.warehouse, t.database, t.control_schema, self.cfg.name, self.table.name)

    # -- plan ---------------------------------------------------------------------------------
    def instances(self) -> list[CaptureInstance]:
        found = self.source.capture_instances(self.table.source_schema, self.table.table)
        where = f"{self.table.source_schema}.{self.table.table}"
        if not found:
            raise TableNotCapturedError(
                f"{self.label}: source table {where} has no CDC capture instance (unknown table, or CDC not "
                f"enabled). Enable it: {enable_table_call(self.table)}"
            )
        if self.table.capture_instance:
            pinned = [ci for ci in found if ci.name.lower() == self.table.capture_instance.lower()]
            if not pinned:
                raise TableNotCapturedError(
                    f"{self.label}: capture instance {self.table.capture_instance!r} (pinned in config) does not "
                    f"exist for {where}; existing: {[ci.name for ci in found]}"
                )
            return pinned
        return found

    def plan(self, resnapshot: bool = False, cut: str | None = None) -> Window:
        """Decide the window. Idle when the change table holds nothing after the position.

        ``cut`` (hex LSN) is the run's upper bound shared by every table of the source (read once
        at the start of the run), so that after a run the raw tables hold the same transactions.
        Without it the source's current max LSN is read."""
        instances = self.instances()
        newest = instances[-1]
        if resnapshot:
            return Window("snapshot", newest.name, reason="re-snapshot requested")
        hint = self.hints.get()
        if hint and hint.get("capture_instance") and hint.get("watermark"):
            mark = Watermark(hint["capture_instance"], hint["watermark"])
            checked = hint.get("checked_upper")
            confirmed = False
        else:
            found = self._read_watermark()
            if found is None:
                return Window("snapshot", newest.name, reason="no watermark yet: initial snapshot")
            mark, checked, confirmed = found, None, True
        position = _max_hex(mark.lsn, checked)
        assert position is not None
        max_lsn = lsnlib.from_hex(cut) if cut else self.source.max_lsn()
        upper = lsnlib.to_hex(max_lsn) if max_lsn else None
        if upper is not None and upper < position and not _below_start(instances, mark.capture_instance, position):
            # The log is behind what was loaded: a restored or re-created source database, or a
            # hint left from an environment that was reset. Snowflake decides; never go idle on it.
            # (Not so for a snapshot positioned at start_lsn - 1 of an instance enabled after the
            # last captured transaction: nothing of it can be read yet, the position is exact.)
            found = mark if confirmed else self._read_watermark()
            if found is None:
                return Window("snapshot", newest.name, reason="hint without a watermark in Snowflake: snapshot")
            if found.lsn > upper:
                raise SourceRewoundError(
                    f"{self.label}: the source's max LSN {upper} is below the loaded watermark {found.lsn} "
                    f"({found.capture_instance}): was the database restored or re-created? Changes since "
                    f'may be missing or repeated: re-snapshot the table ({{"resnapshot": ["{self.table.name}"]}}).'
                )
            mark, confirmed, position = found, True, found.lsn
        current, boundary, switched = self._choose_instance(instances, mark.capture_instance, position)
        gap = self._retention_gap(current, position)
        if gap:
            return self._on_retention_gap(gap, newest)
        run_cut, capped = upper, False
        if upper is not None and boundary is not None:
            upper = min(upper, boundary)
        cap = self.cfg.setting(self.table, "max_transactions_per_batch")
        if upper is not None and cap:
            bounded = lsnlib.to_hex(self.source.bounded_upper(lsnlib.from_hex(position), cap))
            if bounded is not None and bounded < upper:
                upper, capped = bounded, True
        first = None
        if upper is not None and upper > position:
            first_lsn = self.source.first_change_after(current.name, lsnlib.from_hex(position))
            first = lsnlib.to_hex(first_lsn) if first_lsn else None
        if first is None or upper is None or first > upper:
            if not self._record_idle(mark, current.name, upper or position, switched):
                # Snowflake did not confirm the hint's position: it is dropped, Snowflake decides.
                found = self._read_watermark()
                if found is None:
                    return Window("snapshot", newest.name, reason="hint not confirmed by Snowflake (no watermark)")
                return self.plan_from_watermark(found, cut)
            return Window("idle", current.name, lower=position, upper=upper, reason="no new changes")
        if not confirmed:
            # There is work: confirm the position against Snowflake, the only durable truth.
            found = self._read_watermark()
            if found is None:
                return Window("snapshot", newest.name, reason="hint without a watermark in Snowflake: snapshot")
            if found.lsn != mark.lsn or found.capture_instance != mark.capture_instance:
                log.warning(
                    "%s: hint %s differs from Snowflake watermark %s; using Snowflake",
                    self.label,
                    mark,
                    found,
                )
                return self.plan_from_watermark(found, cut)
        return Window(
            "stream",
            current.name,
            lower=mark.lsn,
            upper=upper,
            reason="changes pending",
            switched_from=switched,
            warnings=self._ddl_warnings(current.name, mark.lsn),
            cut=run_cut if capped else None,
            position=position,
        )

    def _on_retention_gap(self, gap: str, newest: CaptureInstance) -> Window:
        """Changes were purged before they were loaded: re-snapshot by policy, else fail loudly."""
        if self.cfg.setting(self.table, "retention_gap_policy") is RetentionGapPolicy.RESNAPSHOT:
            log.warning("%s; policy resnapshot: reloading the table", gap)
            return Window("snapshot", newest.name, reason=gap)
        raise RetentionGapError(
            f"{gap}. Changes were lost. Re-snapshot the table (trigger the DAG with "
            f'{{"resnapshot": ["{self.table.name}"]}}) or set retention_gap_policy: resnapshot; '
            "and consider a longer CDC retention (sys.sp_cdc_change_job @job_type='cleanup', @retention=…)."
        )

    def _ddl_warnings(self, instance: str, after: str) -> list[str]:
        """Source DDL needs a person: the change table keeps the shape it had at enable time."""
        warnings = []
        for command, ddl_lsn, ddl_time in self.source.ddl_after(instance, lsnlib.from_hex(after)):
            message = (
                f"{self.label}: DDL on the source table at {lsnlib.display(ddl_lsn)} ({ddl_time}): {command!r}. "
                f"Capture instance {instance} keeps its original columns: to replicate an added column, create a "
                "new capture instance (EXEC sys.sp_cdc_enable_table … "
                f"@capture_instance={tsql_string(instance + '_v2')}); the pipeline switches to it without a gap, "
                "then disable the old one."
            )
            log.warning(message)
            warnings.append(message)
        return warnings

    def plan_from_watermark(self, mark: Watermark, cut: str | None = None) -> Window:
        """Re-plan from a confirmed Snowflake watermark (hint was stale), within the same cut."""
        now = datetime.now(UTC).isoformat()
        self.hints.set({"capture_instance": mark.capture_instance, "watermark": mark.lsn, "persisted_at": now})
        return self.plan(cut=cut)

    def _choose_instance(
        self, instances: list[CaptureInstance], name: str, position: str
    ) -> tuple[CaptureInstance, str | None, str | None]:
        """Follow capture-instance roll-over: read the old instance up to the new one's start_lsn,
        then switch. Returns (instance to read, upper bound for it or None, instance switched from)."""
        by_name = {ci.name.lower(): ci for ci in instances}
        current = by_name.get(name.lower())
        if current is None:
            # The instance we followed is gone (disabled); continue with the oldest remaining one:
            # the retention-gap check then decides whether anything was lost in between.
            log.warning(
                "%s: capture instance %s no longer exists; continuing with %s",
                self.label,
                name,
                instances[0].name,
            )
            return instances[0], None, name
        # Creation order (instances() sorts by create_date): after cleanup both instances can have
        # the same start_lsn, and the newer one is then valid from the same point.
        later = instances[instances.index(current) + 1 :]
        if not later:
            return current, None, None
        nxt = later[0]
        boundary = lsnlib.to_hex(lsnlib.decrement(nxt.start_lsn))
        assert boundary is not None
        if position >= boundary:
            log.warning("%s: switching capture instance %s → %s at %s", self.label, current.name, nxt.name, boundary)
            return nxt, None, current.name
        return current, boundary, None

    def _gap_after_read(self, window: Window) -> str | None:
        """Re-check the capture instance's low water mark once the window was read.

        Plan checked it, but the cleanup job may have run since, or during the read. Cleanup
        first raises the instance's start_lsn and only then deletes older rows
        (sys.sp_cdc_cleanup_change_table, Remarks), so a start_lsn still at or below the window's
        lower bound + 1 after the read proves that no row of the window was deleted before it was
        read; a higher one means the read may have missed rows.
        """
        assert window.lower is not None
        instance = next((ci for ci in self.instances() if ci.name == window.capture_instance), None)
        if instance is None:
            return f"{self.label}: capture instance {window.capture_instance} was dropped while its window was read"
        gap = self._retention_gap(instance, window.position or window.lower)
        return f"{gap}, while the window ({window.lower}, {window.upper}] was read" if gap else None

    def _retention_gap(self, instance: CaptureInstance, position: str) -> str | None:
        start = int.from_bytes(instance.start_lsn, "big")
        if int(position, 16) + 1 < start:
            return (
                f"{self.label}: retention gap — watermark 0x{position} is older than capture instance "
                f"{instance.name} start_lsn {lsnlib.display(instance.start_lsn)} (CDC cleanup purged changes "
                "that were never loaded)"
            )
        return None

    def _record_idle(self, mark: Watermark, instance: str, checked: str, switched: str | None) -> bool:
        """An idle poll still records that the table was checked (freshness, retention headroom).

        False when the position was due to be persisted and Snowflake did not hold the hint's
        watermark: the hint is then dropped, never written as a watermark."""
        hint = dict(self.hints.get() or {})
        now = datetime.now(UTC)
        hint.update(
            capture_instance=mark.capture_instance if not switched else instance,
            watermark=mark.lsn,
            checked_upper=_max_hex(checked, hint.get("checked_upper")),
            checked_at=now.isoformat(),
        )
        persisted = hint.get("persisted_at")
        if persisted is None or now - datetime.fromisoformat(persisted) > IDLE_PERSIST_EVERY or switched:
            # Advance the durable position across the idle stretch now and then, so that a quiet
            # table never falls behind the retention window (Airbyte issue #37772) -- only from
            # the watermark Snowflake still holds (a conditional update, rows affected checked).
            t = self.cfg.target
            position = hint["checked_upper"]
            self.warehouse.ensure_schemas(t.database, [t.control_schema])
            ensure_control_table(self.warehouse, t.database, t.control_schema)
            confirmed = advance_idle_watermark(
                self.warehouse,
                t.database,
                t.control_schema,
                self.cfg.name,
                self.table.name,
                Watermark(mark.capture_instance, mark.lsn),
                Watermark(hint["capture_instance"], position),
            )
            if not confirmed:
                log.warning(
                    "%s: Snowflake does not hold the cached position %s (%s): dropping the hint",
                    self.label,
                    mark.lsn,
                    mark.capture_instance,
                )
                self.hints.set({})
                return False
            hint.update(watermark=position, persisted_at=now.isoformat())
        self.hints.set(hint)
        return True

    # -- extract + load -----------------------------------------------------------------------
    def mappings(self, instance: str) -> list[ColumnMapping]:
        columns = self.source.change_table_columns(instance)
        by_lower = {c.name.lower(): c for c in columns}
        missing = [k for k in self.table.primary_key if k.lower() not in by_lower]
        if missing:
            raise TableConfigError(
                f"{self.label}: primary key column(s) {missing} are not captured by capture instance {instance} "
                f"(captured: {[c.name for c in columns]}); fix primary_key in the config or the capture instance"
            )
        for field_name in ("exclude_columns", "hash_columns", "column_names"):
            unknown = [c for c in getattr(self.table, field_name) if c.lower() not in by_lower]
            if unknown:
                raise TableConfigError(
                    f"{self.label}: {field_name} {unknown} are not columns of capture instance {instance}"
                )
        excluded = {c.lower() for c in self.table.exclude_columns}
        computed = [c.name for c in columns if c.computed and c.name.lower() not in excluded]
        if computed:
            # CDC never captures computed columns' values (always NULL in the change table, even when
            # persisted), while a snapshot would read them: snapshot and stream could only agree on
            # NULL. Leaving them out keeps raw true; recomputing would need the T-SQL expression
            # evaluated outside SQL Server (non-deterministic functions, UDFs). Derive them in dbt.
            keys = [c for c in computed if c.lower() in {k.lower() for k in self.table.primary_key}]
            if keys:
                raise CdcError(
                    f"{self.label}: primary key column(s) {keys} are computed columns, which CDC never captures "
                    "(always NULL in the change table); replicate the table by another key"
                )
            log.warning(
                "%s: computed column(s) %s are not replicated: CDC captures them as NULL (the snapshot would "
                "read values, the stream NULL). Compute them in dbt, or list them in exclude_columns.",
                self.label,
                computed,
            )
            excluded |= {c.lower() for c in computed}
        hashed = {c.lower() for c in self.table.hash_columns}
        kept = [c for c in columns if c.name.lower() not in excluded]
        self._check_placeholders([instance, *(c.name for c in kept)])
        mappings = [self._mapping(c, c.name.lower() in hashed) for c in kept]
        _check_target_names(self.label, mappings)
        return mappings

    def _mapping(self, column: SourceColumn, hashed: bool) -> ColumnMapping:
        """How a source column travels, under its Snowflake name (``column_names`` or upper case)."""
        return replace(map_column(column, hashed=hashed), target_name=self.table.snowflake_column(column.name))

    def _check_placeholders(self, names: Sequence[str]) -> None:
        """pymssql takes ``%s``/``%d`` and ``%(…)`` anywhere in a statement for parameter
        placeholders (sql.tsql_params): it carries names with either, not both in one statement."""
        names = [self.table.source_schema, self.table.table, *names]
        positional = [n for n in names if PYMSSQL_POSITIONAL.search(n)]
        named = [n for n in names if PYMSSQL_NAMED_START in n]
        if positional and named:
            raise CdcError(
                f"{self.label}: names {positional} contain '%s'/'%d' and {named} contain '%(': pymssql takes both "
                "for parameter placeholders and has no escape, so one statement cannot carry them; exclude or "
                "rename one of them"
            )

    def _check_key_not_nullable(self) -> None:
        """A key column that allows NULL is refused rather than handled: Snowflake's MERGE never
        matches NULL = NULL, so every change of such a row would add a row to raw and its delete
        would never find it. (SQL Server allows one NULL in a unique index, so a unique index on a
        nullable column is no primary key for replication.)"""
        nullable = self.source.nullable_columns(self.table.source_schema, self.table.table)
        for column in self.table.primary_key:
            if column.lower() in nullable:
                raise CdcError(
                    f"{self.label}: primary_key column {column!r} is nullable in the source table; a NULL key "
                    "cannot be merged. Make the column NOT NULL, or configure a key of NOT NULL columns."
                )

    def snapshot_reader(self, names: Sequence[str]) -> tuple[list[str], Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
        """The columns a snapshot can select from the source table, and how to widen its rows to
        ``names``: a captured column dropped from the source table stays in the change table (NULL
        from then on), so the snapshot reads NULL for it as well."""
        present = {c.lower() for c in self.source.table_columns(self.table.source_schema, self.table.table)}
        absent = [n for n in names if n.lower() not in present]
        if not absent:
            return list(names), lambda row: row
        log.warning(
            "%s: column(s) %s were dropped from the source table; the change table still has them (NULL)",
            self.label,
            absent,
        )
        selected = [n for n in names if n.lower() in present]
        slots = [selected.index(n) if n.lower() in present else None for n in names]
        return selected, lambda row: tuple(None if i is None else row[i] for i in slots)

    def layout(self, mappings: Sequence[ColumnMapping]) -> TableLayout:
        t = self.cfg.target
        key_lower = [k.lower() for k in self.table.primary_key]
        key = tuple(m.target_name for k in key_lower for m in mappings if m.source.name.lower() == k)
        return TableLayout(
            database=t.database,
            raw_schema=t.raw_schema,
            staging_schema=t.staging_schema,
            table=self.table.snowflake_table,
            staging_table=f"{self.cfg.name}__{self.table.snowflake_table}".upper(),
            columns=tuple(mappings),
            key=key,
            delete_mode=self.cfg.setting(self.table, "delete_mode"),
        )

    def stage(self) -> Stage:
        """The configured stage: internal (PUT) by default, or external on Azure Blob Storage."""
        t = self.cfg.target
        name = ".".join([t.database, t.staging_schema, t.stage])
        if t.azure_stage is None:
            self.warehouse.ensure_stage(t.database, t.staging_schema, t.stage)
            return InternalStage(self.warehouse, name, self.workdir)
        if self._azure_hook is None:
            from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

            self._azure_hook = WasbHook(wasb_conn_id=t.azure_stage.wasb_conn_id)
        return AzureStage(self._azure_hook, t.azure_stage.container, t.azure_stage.prefix, name)

    def _check_sizes(self, table: pa.Table, mappings: Sequence[ColumnMapping]) -> None:
        """Stop on a value Snowflake cannot hold, naming it, before anything is uploaded.

        A VARCHAR or BINARY declared without a length holds 16,777,216 characters / 8,388,608
        bytes (docs.snowflake.com/en/sql-reference/data-types-text); accounts before the 2025 size
        increase also cap a VARCHAR value at 16 MB, so that is the limit for strings in bytes."""
        for m in mappings:
            column = table.column(m.target_name)
            if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
                limit, kind = MAX_BINARY_BYTES, "BINARY"
            elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                limit, kind = MAX_VARCHAR_BYTES, "VARCHAR"
            else:
                continue
            sizes = pc.binary_length(column)
            largest = pc.max(sizes).as_py()
            if largest is None or largest <= limit:
                continue
            row = pc.index(sizes, largest).as_py()
            key = tuple(table.column(self._target(k, mappings))[row].as_py() for k in self.table.primary_key)
            raise ValueTooLargeError(
                f"{self.label}: column {m.source.name} of the row with key {key} holds {largest} bytes, more than a "
                f"Snowflake {kind} holds ({limit} bytes). Leave the column out (exclude_columns) or load its "
                "salted hash (hash_columns) for this table; nothing of this batch was loaded."
            )

    @staticmethod
    def _target(source_name: str, mappings: Sequence[ColumnMapping]) -> str:
        return next(m.target_name for m in mappings if m.source.name.lower() == source_name.lower())

    def extract_load(self, window: Window) -> Batch:
        """Window rows → Parquet chunks (bounded memory) → PUT → COPY INTO the staging table."""
        started = time.monotonic()
        mappings = self.mappings(window.capture_instance)
        layout = self.layout(mappings)
        salt = self._salt() if any(m.hashed for m in mappings) and self._salt else None
        if any(m.hashed for m in mappings) and not salt:
            raise TableConfigError(
                f"{self.label}: hash_columns are configured but no salt is set: set the Airflow Variable "
                "cdc_hash_salt_secret (or its secrets-backend entry)"
            )
        names = [m.source.name for m in mappings]
        self._check_key_not_nullable()
        if window.mode == "snapshot":
            window, chunks = self._snapshot_rows(window, mappings)
        else:
            assert window.lower and window.upper
            chunks = _key_moves_as_deletes(
                self.source.iter_changes(
                    window.capture_instance,
                    names,
                    lsnlib.from_hex(window.lower),
                    lsnlib.from_hex(window.upper),
                    self.cfg.chunk_rows,
                ),
                [META_WIDTH + names.index(m.source.name) for m in mappings if m.target_name in layout.key],
            )
        batch_id = f"{window.capture_instance}:{window.lower or 'snapshot'}-{window.upper}"
        stage_path = f"{self.cfg.name}/{self.table.name}/{window.lower or 'snapshot'}_{window.upper}"
        t = self.cfg.target
        wh = self.warehouse
        wh.ensure_schemas(t.database, [t.staging_schema, t.raw_schema, t.control_schema])
        stage = self.stage()
        # Files of an earlier, crashed attempt at this table must not be loaded twice.
        stage.clear(f"{self.cfg.name}/{self.table.name}/")
        schema = _parquet_schema(mappings)
        progress = self._progress(window)
        rows, parquet_bytes, arrow_bytes, read_s, put_s = 0, 0, 0, 0.0, 0.0
        untimed: set[bytes] = set()  # commit LSNs of changes without a cdc.lsn_time_mapping row
        tick = time.monotonic()
        # Three stages overlap: the source fetches chunk n+1 (reader thread) while this thread
        # converts chunk n and the uploader stores chunk n-1. At most one upload is in flight, so
        # memory holds a bounded number of chunks whatever the window's size.
        with _bulk_allocation(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-upload") as uploader:
            pending: Future[int] | None = None
            for index, chunk in enumerate(_prefetch(chunks)):
                if window.mode == "stream":
                    untimed.update(row[0] for row in chunk if row[3] is None)
                table = _to_arrow(chunk, mappings, schema, salt, self.cfg.source_timezone)
                del chunk
                self._check_sizes(table, mappings)
                rows += table.num_rows
                arrow_bytes += table.nbytes
                progress.add(table.num_rows, table.nbytes)
                read_s += time.monotonic() - tick
                failpoint("after_read", self.label)
                tick = time.monotonic()
                if pending is not None:
                    parquet_bytes += pending.result()
                pending = uploader.submit(stage.write, table, stage_path, f"part-{index:06d}.parquet")
                put_s += time.monotonic() - tick
                tick = time.monotonic()
            if pending is not None:
                parquet_bytes += pending.result()
                put_s += time.monotonic() - tick
        progress.finish()
        if window.mode == "stream":
            gap = self._gap_after_read(window)
            if gap:
                # The rows staged above are incomplete: never load them. By policy the table is
                # re-snapshotted right away (stage.clear drops this attempt's files first).
                return self.extract_load(self._on_retention_gap(gap, self.instances()[-1]))
        failpoint("after_put", self.label)
        tick = time.monotonic()
        wh.create_staging(layout)
        loaded = wh.copy_into_staging(layout, stage.name, stage_path) if rows else 0
        if loaded != rows:
            raise CdcError(f"{self.label}: read {rows} change rows but COPY loaded {loaded} into {layout.staging}")
        self._fill_commit_times(layout, untimed)
        failpoint("after_copy", self.label)
        committed = self.cfg.to_utc(self.source.lsn_to_time(lsnlib.from_hex(window.upper))) if window.upper else None
        return Batch(
            window=window,
            batch_id=batch_id,
            stage_path=stage_path,
            rows=rows,
            columns=[asdict(m.source) | {"hashed": m.hashed} for m in mappings],
            upper_committed_at=committed.isoformat() if isinstance(committed, datetime) else None,
            timings={
                "read_s": read_s,
                "put_s": put_s,
                "copy_s": time.monotonic() - tick,
                "parquet_bytes": parquet_bytes,
                "arrow_bytes": arrow_bytes,
                "total_s": time.monotonic() - started,
            },
        )

    def _fill_commit_times(self, layout: TableLayout, untimed: set[bytes]) -> None:
        """Changes whose transaction has no cdc.lsn_time_mapping row were read with a NULL commit
        time (never dropped): give them what sys.fn_cdc_map_lsn_to_time returns for their LSN.
        Rare, so one lookup and one staging UPDATE per such transaction, after the read."""
        if not untimed:
            return
        log.warning(
            "%s: %d transaction(s) in the window have no cdc.lsn_time_mapping row; their commit time comes "
            "from sys.fn_cdc_map_lsn_to_time",
            self.label,
            len(untimed),
        )
        for value in sorted(untimed):
            committed = self.cfg.to_utc(self.source.lsn_to_time(value))
            if committed is not None:
                self.warehouse.set_commit_time(layout, lsnlib.to_hex(value) or "", committed)

    def _progress(self, window: Window) -> Progress:
        """Progress of this extract, its ETA from the catalog's row estimate (sys.partitions) of the
        source table (snapshot) or of the change table (a window: an upper bound)."""
        if window.mode == "snapshot":
            name, basis = tsql_name(self.table.source_schema, self.table.table), "table's row-count estimate"
        else:
            name, basis = tsql_name("cdc", f"{window.capture_instance}_CT"), "change-table size, an upper bound"
        try:
            estimate = self.source.row_estimate(name)
        except Exception as exc:  # progress is a convenience: never fail the load for it
            log.info("%s: no row estimate for %s (%s)", self.label, name, str(exc).splitlines()[0])
            rollback = getattr(self.source.connection, "rollback", None)
            if rollback is not None:
                rollback()
            estimate = None
        return Progress(f"{self.label} {window.mode}", estimate, basis, self.progress_every)

    def _snapshot_rows(
        self, window: Window, mappings: Sequence[ColumnMapping]
    ) -> tuple[Window, Iterator[list[tuple[Any, ...]]]]:
        """Snapshot handoff: the max LSN is read *before* the table, so every change after it is
        streamed later, and replays of changes already in the snapshot are harmless (MERGE by LSN)."""
        instance = next(ci for ci in self.instances() if ci.name == window.capture_instance)
        max_lsn = self.source.max_lsn() or lsnlib.ZERO_LSN
        # An instance enabled after the last captured transaction starts above max_lsn; nothing
        # between them belongs to this table, so its predecessor is an exact snapshot position.
        floor = lsnlib.decrement(instance.start_lsn) if int.from_bytes(instance.start_lsn, "big") else lsnlib.ZERO_LSN
        snap = max(max_lsn, floor)
        snap_hex = lsnlib.to_hex(snap)
        committed = self.cfg.to_utc(self.source.lsn_to_time(snap))
        window = Window("snapshot", window.capture_instance, lower=None, upper=snap_hex, reason=window.reason)
        meta = (snap_hex, ZERO_SEQVAL, OP_SNAPSHOT, committed, 0)
        by_name = {m.source.name.lower(): m.source for m in mappings}
        key = [by_name[k.lower()] for k in self.table.primary_key]
        selected, widen = self.snapshot_reader([m.source.name for m in mappings])
        chunks = self.source.iter_snapshot(
            self.table.source_schema, self.table.table, selected, key, self.cfg.chunk_rows
        )
        return window, ([(*meta, *widen(row)) for row in chunk] for chunk in chunks)

    # -- apply --------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> dict[str, Any]:
        """Apply the batch; when max_transactions_per_batch capped its window below the run's cut,
        keep going with further capped windows (plan → extract → apply, each bounded by the cap)
        until the cut or until ``catch_up_seconds`` have passed, so that a source busier than the
        cap per schedule interval does not fall further behind on every run."""
        started = time.monotonic()
        result = self._apply_batch(batch)
        result["batches"] = 1
        budget = self.cfg.setting(self.table, "catch_up_seconds")
        window = batch.window
        while window.cut and time.monotonic() - started < budget:
            try:
                window = self.plan(cut=window.cut)
                if window.mode != "stream":
                    break
                more = self._apply_batch(self.extract_load(window))
            except Exception:
                # This task's own batch is durable; a retry of the task would re-apply it from a
                # dropped staging table. The next run plans from the watermark and meets (and
                # raises) the same problem in its first batch.
                log.warning("%s: catching up stopped; the next run continues", self.label, exc_info=True)
                break
            for key in ("rows", "merged", "history_appended"):
                result[key] += more[key]
            result["window"] = [result["window"][0], more["window"][1]]
            result["batches"] += 1
        if result["batches"] > 1:
            log.info("%s: caught up with %d capped batches in this run", self.label, result["batches"])
        return result

    def _apply_batch(self, batch: Batch) -> dict[str, Any]:
        """MERGE into raw, append history, then (last) advance the watermark and clean up."""
        started = time.monotonic()
        mappings = [
            self._mapping(SourceColumn(**{k: v for k, v in c.items() if k != "hashed"}), c["hashed"])
            for c in batch.columns
        ]
        layout = self.layout(mappings)
        wh = self.warehouse
        t = self.cfg.target
        added = wh.ensure_target_tables(layout)
        if added:
            log.warning(
                "%s: schema change: added column(s) %s to raw and history. Their values before capture instance "
                "%s started are unknown (CDC did not capture them): re-snapshot the table to backfill them.",
                self.label,
                added,
                batch.window.capture_instance,
            )
        window = batch.window
        if not wh.existing_columns(layout.database, layout.staging_schema, layout.staging_table):
            return self._applied_before(batch, layout, added)
        if window.mode == "snapshot":
            lost = wh.mark_lost_timeline(layout, window.upper or "")
            if lost:
                log.warning(
                    "%s: %d history row(s) above the snapshot LSN %s belong to a timeline the source lost "
                    "(restored database): flagged _CDC_LOST_TIMELINE",
                    self.label,
                    lost,
                    window.upper,
                )
        merged = wh.merge_raw(layout) if batch.rows else 0
        failpoint("after_merge", self.label)
        lower = window.lower or window.upper or ""
        appended = wh.append_history(layout, batch.batch_id, lower, window.upper or "") if batch.rows else 0
        deleted = 0
        if window.mode == "snapshot":
            deleted = wh.delete_missing_after_snapshot(layout, window.upper or "", batch.batch_id)
        failpoint("before_watermark", self.label)
        ensure_control_table(wh, t.database, t.control_schema)
        committed = datetime.fromisoformat(batch.upper_committed_at) if batch.upper_committed_at else None
        mark = Watermark(
            window.capture_instance,
            window.upper or "",
            committed,
            window.upper if window.mode == "snapshot" else None,
        )
        write_watermark(
            wh, t.database, t.control_schema, self.cfg.name, self.table.name, mark, batch.batch_id, batch.rows
        )
        # Clean-up after the watermark: leftovers are harmless (next batch replaces them).
        wh.drop_staging(layout)
        self.stage().clear(batch.stage_path + "/")
        apply_s = round(time.monotonic() - started, 3)
        log_batch(
            wh,
            t.database,
            t.control_schema,
            {
                "batch_id": batch.batch_id,
                "source_name": self.cfg.name,
                "table_name": self.table.name,
                "mode": window.mode,
                "capture_instance": window.capture_instance,
                "lower_lsn": window.lower,
                "upper_lsn": window.upper,
                "rows_staged": batch.rows,
                "rows_merged": merged,
                "history_appended": appended,
                "extract_seconds": batch.timings.get("total_s"),
                "apply_seconds": apply_s,
                "upper_committed_at": committed,
            },
        )
        now = datetime.now(UTC).isoformat()
        self.hints.set(
            {
                "capture_instance": window.capture_instance,
                "watermark": mark.lsn,
                "checked_upper": mark.lsn,
                "checked_at": now,
                "persisted_at": now,
            }
        )
        return self._applied(batch, added, merged, appended, deleted, apply_s)

    def _applied(
        self,
        batch: Batch,
        added: list[str],
        merged: int,
        appended: int,
        deleted: int,
        apply_s: float,
        *,
        again: bool = False,
    ) -> dict[str, Any]:
        """What apply reports (the task's XCom and the demo summary)."""
        window = batch.window
        return {
            "table": self.table.name,
            "mode": window.mode,
            "capture_instance": window.capture_instance,
            "window": [window.lower, window.upper],
            "rows": batch.rows,
            "merged": merged,
            "history_appended": appended,
            "deleted_by_snapshot": deleted,
            "columns_added": added,
            "apply_s": apply_s,
            "already_applied": again,
        }

    def _applied_before(self, batch: Batch, layout: TableLayout, added: list[str]) -> dict[str, Any]:
        """A retried apply whose staging table is gone: apply drops it only after the watermark, so
        a watermark at or past the batch's upper bound means the batch is durable (finish the
        clean-up); anything else means the staged rows were lost before they were applied."""
        t, window = self.cfg.target, batch.window
        mark = self._read_watermark()
        upper = window.upper or ""
        if mark is None or mark.capture_instance.lower() != window.capture_instance.lower() or mark.lsn < upper:
            held = f"{mark.lsn} on {mark.capture_instance}" if mark else "none"
            raise CdcError(
                f"{self.label}: staging table {layout.staging} of batch {batch.batch_id} is gone but the watermark "
                f"({held}) does not cover the batch (up to {upper} on {window.capture_instance}): the staged rows were "
                "lost before they were applied. Nothing was skipped; the next run reads the window again (or clear "
                "the extract_load task of this run)."
            )
        log.warning("%s: batch %s was already applied (watermark %s): finishing its clean-up", self.label,
                    batch.batch_id, mark.lsn)  # fmt: skip
        self.stage().clear(batch.stage_path + "/")
        committed = datetime.fromisoformat(batch.upper_committed_at) if batch.upper_committed_at else None
        log_batch(
            self.warehouse,
            t.database,
            t.control_schema,
            {"batch_id": batch.batch_id, "source_name": self.cfg.name, "table_name": self.table.name,
             "mode": window.mode, "capture_instance": window.capture_instance, "lower_lsn": window.lower,
             "upper_lsn": window.upper, "rows_staged": batch.rows, "upper_committed_at": committed},
            keep_existing=True,
        )  # fmt: skip
        return self._applied(batch, added, 0, 0, 0, 0.0, again=True)

    def run_once(self, resnapshot: bool = False) -> dict[str, Any]:
        """plan → extract_load → apply in one call (tests, benchmarks, the demo summary)."""
        window = self.plan(resnapshot=resnapshot)
        if window.mode == "idle":
            return {
                "table": self.table.name,
                "mode": "idle",
                "window": [window.lower, window.upper],
                "rows": 0,
            }
        batch = self.extract_load(window)
        result = self.apply(batch)
        result["timings"] = batch.timings
        return result


@contextlib.contextmanager
def _bulk_allocation() -> Iterator[None]:
    """Run the cyclic GC less often while chunks of 10^5 tuples are built and dropped.

    Change rows hold no reference cycles, yet every few hundred allocations the collector would
    scan all of them again; with the default thresholds that alone costs as much as the Arrow
    conversion. Restored afterwards (the task process is ours, the setting is not).
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 50_000), before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _prefetch(chunks: Iterator[list[tuple[Any, ...]]], depth: int = 1) -> Iterator[list[tuple[Any, ...]]]:
    """Fetch the next chunk from the source while this one is converted and uploaded.

    A bounded queue: at most ``depth`` + 2 chunks exist at once, so memory stays flat whatever
    the window's size. The source connection is used by the reader thread only meanwhile.
    """
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        slots.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            slots.put(exc)

    reader = threading.Thread(target=read, name="cdc-source-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=30)


# Change rows are (start_lsn, seqval, operation, commit_time, command_id, *columns).
META_WIDTH = 5
OP_DELETE, OP_UPDATE_BEFORE, OP_UPDATE_AFTER = 1, 3, 4


def _key_moves_as_deletes(
    chunks: Iterator[list[tuple[Any, ...]]], key_pos: list[int]
) -> Iterator[list[tuple[Any, ...]]]:
    """Turn update pairs (3/4) into what the target must do, across chunk boundaries.

    SQL Server logs some key updates as an update pair whose before image (3) holds the old key and
    whose after image (4) the new one: with trace flag 8207 (a one-row update of a unique key), and
    for a case-only or trailing-blank key change under a case-insensitive collation (the index key
    is "unchanged", the text is not). Snowflake compares keys exactly, so the old key must go: a
    before image whose key differs from its after image becomes a delete (1) of the old key; other
    before images are dropped (the after image carries the update)."""
    pending: tuple[Any, ...] | None = None
    for chunk in chunks:
        out: list[tuple[Any, ...]] = []
        for row in chunk:
            op = row[2]
            if pending is not None:
                before, pending = pending, None
                paired = op == OP_UPDATE_AFTER and row[0] == before[0] and row[1] == before[1]
                if not paired:
                    raise RuntimeError(f"update before-image at {before[0]!r}/{before[1]!r} without its after-image")
                if any(before[p] != row[p] for p in key_pos):
                    out.append((*before[:2], OP_DELETE, *before[3:]))
            if op == OP_UPDATE_BEFORE:
                pending = row
                continue
            out.append(row)
        if out:
            yield out
    if pending is not None:
        raise RuntimeError(f"update before-image at {pending[0]!r}/{pending[1]!r} without its after-image")


def _parquet_schema(mappings: Sequence[ColumnMapping]) -> pa.Schema:
    meta = [
        pa.field("_CDC_LSN", pa.string()),
        pa.field("_CDC_SEQVAL", pa.string()),
        pa.field("_CDC_OPERATION", pa.int8()),
        pa.field("_CDC_COMMITTED_AT", pa.timestamp("ms")),
        pa.field("_CDC_COMMAND_ID", pa.int32()),
    ]
    return pa.schema([*meta, *(pa.field(m.target_name, m.arrow_type) for m in mappings)])


def _to_arrow(
    rows: list[tuple[Any, ...]],
    mappings: Sequence[ColumnMapping],
    schema: pa.Schema,
    salt: str | None,
    source_timezone: str = "UTC",
) -> pa.Table:
    """Rows (start_lsn, seqval, op, commit_time, command_id, *columns) → an Arrow table, column by column.

    Commit times are the SQL Server's wall clock in ``source_timezone``; they leave as UTC."""
    # Column by column with itemgetter: ``zip(*rows)`` over 100k-row chunks is several times slower
    # once the cyclic GC starts scanning the freshly allocated tuples.
    width = META_WIDTH + len(mappings)
    columns = [list(map(itemgetter(i), rows)) for i in range(width)] if rows else [[] for _ in range(width)]
    lsns = [v.hex().upper() if isinstance(v, bytes | bytearray) else v for v in columns[0]]
    seqs = [v.hex().upper() if isinstance(v, bytes | bytearray) else v for v in columns[1]]
    arrays = [
        pa.array(lsns, pa.string()),
        pa.array(seqs, pa.string()),
        pa.array(columns[2], pa.int8()),
        _commit_times_utc(pa.array(columns[3], pa.timestamp("ms")), source_timezone),
        pa.array(columns[4], pa.int32()),
    ]
    arrays += [arrow_column(m, columns[META_WIDTH + i], salt) for i, m in enumerate(mappings)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _commit_times_utc(local: pa.Array, source_timezone: str) -> pa.Array:
    """Naive source wall-clock times → naive UTC (the earlier instant in a repeated DST hour)."""
    if source_timezone == "UTC":
        return local
    zoned = pc.assume_timezone(local, timezone=source_timezone, ambiguous="earliest", nonexistent="earliest")
    return zoned.cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms"))
