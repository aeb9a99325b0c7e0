"""Apply: a staged batch into the raw and history tables, then the watermark, then clean-up.

``BatchApplier.apply`` runs the steps in the order that makes a crash anywhere converge on retry
(README "Delivery guarantee"): schema evolution of raw/history, the history append (each change
once), the MERGE into raw (latest change per key, only when newer), then the watermark, the
staging clean-up, the batch log and the hint. Stream windows only: a snapshot loads in chunks
(``snapshot``). A retry whose staging table is gone is recognised as already applied, or refused
when the watermark does not cover it. The SQL is ``snowflake_sql``'s; the watermark, hint and
batch log ``offsets``'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.cdc_pipeline import snowflake_sql as q
from include.cdc_pipeline.config import SourceConfig, TableConfig
from include.cdc_pipeline.errors import CdcError
from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.failpoints import failpoint
from include.cdc_pipeline.governance.credits import batch_credits
from include.cdc_pipeline.offsets import TableWatermark, TargetHints, Watermark, log_batch
from include.cdc_pipeline.snowflake_sql import TableLayout
from include.cdc_pipeline.stages import Stage
from include.cdc_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass
class BatchApplier:
    """Applies the batches of one table. The warehouse and the stage are opened on first use."""

    cfg: SourceConfig
    table: TableConfig
    label: str
    warehouse: Callable[[], Warehouse]
    stage: Callable[[], Stage]
    watermark: TableWatermark
    hints: TargetHints

    def apply(self, batch: Batch, layout: TableLayout) -> dict[str, Any]:
        """MERGE into raw, append history, then (last) advance the watermark and clean up."""
        started = time.monotonic()
        wh = self.warehouse()
        first_query = len(wh.query_ids)
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
        if window.mode != "stream":
            raise CdcError(f"{self.label}: only stream windows are applied as one batch; snapshots load in chunks")
        if not wh.existing_columns(layout.database, layout.staging_schema, layout.staging_table):
            return self._applied_before(batch, layout, added)
        # History before raw: a snapshot chunk MERGEd at the same time checks history for a newer
        # delete of its key (hard delete mode), which must be there before raw loses the row.
        history = {"batch": batch.batch_id, "lower": window.lower or "", "upper": window.upper or ""}
        appended = wh.affected(q.append_history(layout), history) if batch.rows else 0
        merged = wh.affected(q.merge_raw(layout)) if batch.rows else 0
        failpoint("after_merge", self.label)
        deleted = 0
        failpoint("before_watermark", self.label)
        committed = datetime.fromisoformat(batch.upper_committed_at) if batch.upper_committed_at else None
        mark = Watermark(window.capture_instance, window.upper or "", committed)
        self.watermark.write(mark, batch.batch_id, batch.rows)
        # Clean-up after the watermark: leftovers are harmless (next batch replaces them).
        wh.execute(q.drop_staging(layout))
        self.stage().clear(batch.stage_path + "/")
        apply_s = round(time.monotonic() - started, 3)
        credits = batch_credits(wh, [*batch.query_ids, *wh.query_ids[first_query:]])
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
                "credits_used": credits,
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
        return self._applied(batch, added, merged, appended, deleted, apply_s) | {"credits_used": credits}

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
        mark = self.watermark.read()
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
            self.warehouse(),
            t.database,
            t.control_schema,
            {"batch_id": batch.batch_id, "source_name": self.cfg.name, "table_name": self.table.name,
             "mode": window.mode, "capture_instance": window.capture_instance, "lower_lsn": window.lower,
             "upper_lsn": window.upper, "rows_staged": batch.rows, "upper_committed_at": committed},
            keep_existing=True,
        )  # fmt: skip
        return self._applied(batch, added, 0, 0, 0, 0.0, again=True)
