"""One table's replication cycle: plan a window, extract + load it, apply it.

``TablePipeline`` is a thin facade over the stages of the flow: it opens the SQL Server and
Snowflake connections lazily (an idle plan never opens Snowflake), resolves the table's column
mappings (config against the capture instance), its Snowflake layout and its stage, and composes
``planner`` (which window), ``extract`` (rows into the staging table) and ``apply`` (staging into
raw/history, then the watermark). It holds no SQL and no planning or loading logic of its own.

Free of Airflow on purpose (the Airflow task callables wire it in), so the same code is driven by
the DAG, by tests that crash it between steps, and by benchmarks. Every step can be repeated: a
retry of any step, or of the whole cycle, converges to the same Snowflake state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.cdc_pipeline.apply import BatchApplier
from include.cdc_pipeline.config import SourceConfig, TableConfig
from include.cdc_pipeline.errors import CdcError, SnapshotStarted, TableConfigError
from include.cdc_pipeline.extract import (
    Batch,
    ExtractContext,
    check_key_not_nullable,
    extract_stream,
    snapshot_columns,
)
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import HintStore, TableWatermark, TargetHints, hint_target
from include.cdc_pipeline.planner import Planner, Window
from include.cdc_pipeline.progress import PROGRESS_EVERY
from include.cdc_pipeline.snapshot import Snapshot, SnapshotStore, SnapshotWork, run_workers
from include.cdc_pipeline.snowflake_sql import HISTORY_META, RAW_META, TableLayout
from include.cdc_pipeline.source import CaptureInstance, CdcSource
from include.cdc_pipeline.sql import PYMSSQL_NAMED_START, PYMSSQL_POSITIONAL
from include.cdc_pipeline.stages import AzureStage, InternalStage, Stage
from include.cdc_pipeline.types import ColumnMapping, SourceColumn, map_column
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


def pii_tag_name(database: str) -> str | None:
    """The PII tag of ``database`` as the access spec places it (``include/config/access.yaml``);
    None when the spec cannot be read (the columns then load untagged, said in the log)."""
    try:
        from include.cdc_pipeline.governance.spec import load_access_spec, pii_tag

        return pii_tag(database, load_access_spec())
    except Exception:
        log.warning("the access spec could not be read: PII columns are not tagged", exc_info=True)
        return None


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
        self.hints = TargetHints(hints, hint_target(source_config))
        t = source_config.target
        self.watermark = TableWatermark(
            lambda: self.warehouse, t.database, t.control_schema, source_config.name, table.name
        )
        self.planner = Planner(source_config, table, lambda: self.source, self.watermark, self.hints, self.label)
        self.applier = BatchApplier(
            source_config, table, self.label, lambda: self.warehouse, self.stage, self.watermark, self.hints
        )
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

    # -- plan (planner.Planner) -----------------------------------------------------------------
    def instances(self) -> list[CaptureInstance]:
        """The table's capture instances, oldest first (only the pinned one if config pins one)."""
        return self.planner.instances()

    def plan(self, resnapshot: bool = False, cut: str | None = None) -> Window:
        """Decide the window (see ``Planner.plan``)."""
        return self.planner.plan(resnapshot=resnapshot, cut=cut)

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
            pii=tuple(
                (m.target_name, str(self.table.pii_columns[name]))
                for m in mappings
                for name in self.table.pii_columns
                if name.lower() == m.source.name.lower()
            ),
            pii_tag=pii_tag_name(t.database) if self.table.pii_columns else None,
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

    def snapshot_reader(self, names: Sequence[str]) -> tuple[list[str], Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
        """The columns a snapshot can select, and how to widen its rows to ``names`` (see
        ``extract.snapshot_columns``)."""
        return snapshot_columns(self.source, self.table, self.label, names)

    def extract_context(self, mappings: list[ColumnMapping], layout: TableLayout) -> ExtractContext:
        """What an extract of this table needs (after the checks every extract runs first)."""
        salt = self._salt() if any(m.hashed for m in mappings) and self._salt else None
        if any(m.hashed for m in mappings) and not salt:
            raise TableConfigError(
                f"{self.label}: hash_columns are configured but no salt is set: set the Airflow Variable "
                "cdc_hash_salt_secret (or its secrets-backend entry)"
            )
        check_key_not_nullable(self.source, self.table, self.label)
        return ExtractContext(
            self.cfg,
            self.table,
            self.label,
            self.source,
            lambda: self.warehouse,
            self.stage,
            mappings,
            layout,
            salt,
            self.progress_every,
        )

    def extract_load(self, window: Window) -> Batch:
        """Window rows → Parquet chunks (bounded memory) → PUT → COPY INTO the staging table."""
        if window.mode == "snapshot":
            raise CdcError(f"{self.label}: a snapshot loads in chunks (TablePipeline.snapshot), not as one window")
        mappings = self.mappings(window.capture_instance)
        ctx = self.extract_context(mappings, self.layout(mappings))
        return extract_stream(ctx, window, self.planner, self._resnapshot_instead)

    def _resnapshot_instead(self, window: Window) -> Batch:
        """The window was purged while it was read and the policy is to re-snapshot: start one (its
        chunks load from the next step on), and stage nothing for this window."""
        self.start_snapshot(window)
        raise SnapshotStarted(f"{self.label}: {window.reason}: re-snapshot started instead of the window")

    # -- snapshots (snapshot.py) -------------------------------------------------------------------
    def snapshot_store(self) -> SnapshotStore:
        t = self.cfg.target
        return SnapshotStore(lambda: self.warehouse, t.database, t.control_schema, self.cfg.name)

    def start_snapshot(self, window: Window, snapshot_lsn: Lsn | None = None) -> Snapshot:
        """Start a chunked snapshot at ``snapshot_lsn`` (the run's cut; the source's max LSN now when
        not given): the watermark moves there, the stream goes on, the chunks load after."""
        kind = "initial" if self.watermark.read() is None else "resnapshot"
        lsn = snapshot_lsn or self.source.max_lsn() or Lsn.ZERO
        started = SnapshotWork(self, self.snapshot_store()).start(window, lsn, kind)
        now = datetime.now(UTC).isoformat()
        self.hints.set(
            {
                "capture_instance": started.capture_instance,
                "watermark": started.snapshot_lsn,
                "checked_upper": started.snapshot_lsn,
                "checked_at": now,
                "persisted_at": now,
                "snapshot": started.snapshot_id,
            }
        )
        return started

    def snapshot(self, window: Window, owner: str = "local") -> dict[str, Any]:
        """A whole snapshot in this process: start, split, every chunk, finalize (tests, benchmarks,
        ``run_once``); the DAG runs the same steps as mapped tasks over several workers."""
        started = self.start_snapshot(window)
        store = self.snapshot_store()
        done = run_workers({self.table.name: SnapshotWork(self, store)}, store, owner)
        finished = next((f for f in done["finished"] if f["snapshot_id"] == started.snapshot_id), None)
        if finished is None:
            raise CdcError(f"{self.label}: snapshot {started.snapshot_id} did not complete: {done}")
        return {**finished, "mode": "snapshot", "window": [None, started.snapshot_lsn]}

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
        mappings = [
            self._mapping(SourceColumn(**{k: v for k, v in c.items() if k != "hashed"}), c["hashed"])
            for c in batch.columns
        ]
        return self.applier.apply(batch, self.layout(mappings))

    def run_once(self, resnapshot: bool = False) -> dict[str, Any]:
        """plan → extract_load → apply in one call (tests, benchmarks, the demo summary)."""
        window = self.plan(resnapshot=resnapshot)
        if window.mode == "snapshot":
            return self.snapshot(window)
        if window.mode == "idle":
            return {
                "table": self.table.name,
                "mode": "idle",
                "window": [window.lower, window.upper],
                "rows": 0,
            }
        try:
            batch = self.extract_load(window)
        except SnapshotStarted:  # the window's start was purged while it was read: re-snapshotted
            store = self.snapshot_store()
            done = run_workers({self.table.name: SnapshotWork(self, store)}, store, "local")
            return {**done["finished"][0], "mode": "snapshot", "window": [None, None]}
        result = self.apply(batch)
        result["timings"] = batch.timings
        return result
