"""Planning: which window of changes one run reads for one table, or why it reads none.

Holds ``Window`` (what a run does, as it travels between tasks) and ``Planner``: the choice between
snapshot, stream and idle; capture-instance roll-over (read the old instance up to the new one's
start_lsn, then switch); the retention gap (changes purged before they were loaded) under the
table's policy; a source rewound below the loaded watermark; the transaction cap of a window; the
record an idle poll leaves; warnings for source DDL. It reads the source through ``ChangeReader``
(the few ``source.CdcSource`` methods it needs) and the position through ``offsets``
(the hint first, the watermark in Snowflake where it matters), so it runs against fakes in unit
tests. Reading the window's rows is ``extract``'s concern; applying them ``apply``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from include.cdc_pipeline.config import RetentionGapPolicy, SourceConfig, TableConfig
from include.cdc_pipeline.errors import RetentionGapError, SourceRewoundError, TableNotCapturedError
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.offsets import HintStore, Watermark
from include.cdc_pipeline.source import CaptureInstance, enable_table_call
from include.cdc_pipeline.sql import tsql_string

log = logging.getLogger(__name__)

# How long an idle table may go without its checked position being written to the control table.
# Idle polls otherwise touch only Airflow's metadata DB (the hint), never Snowflake.
IDLE_PERSIST_EVERY = timedelta(hours=1)


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


class ChangeReader(Protocol):
    """What planning reads from the source (``source.CdcSource`` provides it)."""

    def capture_instances(self, schema: str, table: str) -> list[CaptureInstance]: ...

    def max_lsn(self) -> Lsn | None: ...

    def bounded_upper(self, after: Lsn, max_transactions: int) -> Lsn | None: ...

    def first_change_after(self, capture_instance: str, after: Lsn) -> Lsn | None: ...

    def ddl_after(self, capture_instance: str, after: Lsn) -> list[tuple[str, Lsn, datetime]]: ...


class WatermarkStore(Protocol):
    """The table's watermark in Snowflake (``offsets.TableWatermark`` provides it)."""

    def read(self) -> Watermark | None: ...

    def advance_idle(self, expected: Watermark, position: Watermark) -> bool: ...


def _latest(position: Lsn, stored: str | None) -> Lsn:
    """The later of a position and a stored (hex) one, if any."""
    return max(position, Lsn.from_hex(stored)) if stored else position


def _hex(value: Lsn | None) -> str | None:
    return value.hex if value is not None else None


def _below_start(instances: Sequence[CaptureInstance], name: str, position: Lsn) -> bool:
    """The position lies below the start of its capture instance: nothing of it is readable yet."""
    found = next((ci for ci in instances if ci.name.lower() == name.lower()), None)
    return found is not None and position < found.start_lsn


class Planner:
    """Plans the windows of one configured table.

    ``reader`` is called for each use (the pipeline opens its source connection lazily, and an idle
    plan never opens Snowflake: ``watermarks`` is read only when the hint cannot decide)."""

    def __init__(
        self,
        cfg: SourceConfig,
        table: TableConfig,
        reader: Callable[[], ChangeReader],
        watermarks: WatermarkStore,
        hints: HintStore,
        label: str,
        persist_idle: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg, self.table, self.reader = cfg, table, reader
        self.watermarks, self.hints, self.label = watermarks, hints, label
        # Whether an idle poll whose position is due for the control table may write it now
        # (source_plan spreads those writes of many idle tables over runs); default: always.
        self.persist_idle = persist_idle or (lambda: True)

    # -- plan ---------------------------------------------------------------------------------
    def instances(self) -> list[CaptureInstance]:
        found = self.reader().capture_instances(self.table.source_schema, self.table.table)
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
            found = self.watermarks.read()
            if found is None:
                return Window("snapshot", newest.name, reason="no watermark yet: initial snapshot")
            mark, checked, confirmed = found, None, True
        position = _latest(mark.position, checked)
        upper = Lsn.from_hex(cut) if cut else self.reader().max_lsn()
        if upper is not None and upper < position and not _below_start(instances, mark.capture_instance, position):
            # The log is behind what was loaded: a restored or re-created source database, or a
            # hint left from an environment that was reset. Snowflake decides; never go idle on it.
            # (Not so for a snapshot positioned at start_lsn - 1 of an instance enabled after the
            # last captured transaction: nothing of it can be read yet, the position is exact.)
            found = mark if confirmed else self.watermarks.read()
            if found is None:
                return Window("snapshot", newest.name, reason="hint without a watermark in Snowflake: snapshot")
            if found.position > upper:
                raise SourceRewoundError(
                    f"{self.label}: the source's max LSN {upper.hex} is below the loaded watermark {found.lsn} "
                    f"({found.capture_instance}): was the database restored or re-created? Changes since "
                    f'may be missing or repeated: re-snapshot the table ({{"resnapshot": ["{self.table.name}"]}}).'
                )
            mark, confirmed, position = found, True, found.position
        current, boundary, switched = self._choose_instance(instances, mark.capture_instance, position)
        gap = self.retention_gap(current, position)
        if gap:
            return self.on_retention_gap(gap, newest)
        run_cut, capped = upper, False
        if upper is not None and boundary is not None:
            upper = min(upper, boundary)
        cap = self.cfg.setting(self.table, "max_transactions_per_batch")
        if upper is not None and cap:
            bounded = self.reader().bounded_upper(position, cap)
            if bounded is not None and bounded < upper:
                upper, capped = bounded, True
        first = None
        if upper is not None and upper > position:
            first = self.reader().first_change_after(current.name, position)
        if first is None or upper is None or first > upper:
            if not self._record_idle(mark, current.name, upper or position, switched):
                # Snowflake did not confirm the hint's position: it is dropped, Snowflake decides.
                found = self.watermarks.read()
                if found is None:
                    return Window("snapshot", newest.name, reason="hint not confirmed by Snowflake (no watermark)")
                return self.plan_from_watermark(found, cut)
            return Window("idle", current.name, lower=position.hex, upper=_hex(upper), reason="no new changes")
        if not confirmed:
            # There is work: confirm the position against Snowflake, the only durable truth.
            found = self.watermarks.read()
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
            upper=upper.hex,
            reason="changes pending",
            switched_from=switched,
            warnings=self._ddl_warnings(current.name, mark.position),
            cut=_hex(run_cut) if capped else None,
            position=position.hex,
        )

    def on_retention_gap(self, gap: str, newest: CaptureInstance) -> Window:
        """Changes were purged before they were loaded: re-snapshot by policy, else fail loudly."""
        if self.cfg.setting(self.table, "retention_gap_policy") is RetentionGapPolicy.RESNAPSHOT:
            log.warning("%s; policy resnapshot: reloading the table", gap)
            return Window("snapshot", newest.name, reason=gap)
        raise RetentionGapError(
            f"{gap}. Changes were lost. Re-snapshot the table (trigger the DAG with "
            f'{{"resnapshot": ["{self.table.name}"]}}) or set retention_gap_policy: resnapshot; '
            "and consider a longer CDC retention (sys.sp_cdc_change_job @job_type='cleanup', @retention=…)."
        )

    def _ddl_warnings(self, instance: str, after: Lsn) -> list[str]:
        """Source DDL needs a person: the change table keeps the shape it had at enable time."""
        warnings = []
        for command, ddl_lsn, ddl_time in self.reader().ddl_after(instance, after):
            message = (
                f"{self.label}: DDL on the source table at {ddl_lsn} ({ddl_time}): {command!r}. "
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
        self, instances: list[CaptureInstance], name: str, position: Lsn
    ) -> tuple[CaptureInstance, Lsn | None, str | None]:
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
        boundary = nxt.start_lsn.prev()
        if position >= boundary:
            log.warning("%s: switching capture instance %s → %s at %s", self.label, current.name, nxt.name, boundary)
            return nxt, None, current.name
        return current, boundary, None

    def gap_after_read(self, window: Window) -> str | None:
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
        gap = self.retention_gap(instance, Lsn.from_hex(window.position or window.lower))
        return f"{gap}, while the window ({window.lower}, {window.upper}] was read" if gap else None

    def retention_gap(self, instance: CaptureInstance, position: Lsn) -> str | None:
        if int(position) + 1 < int(instance.start_lsn):
            return (
                f"{self.label}: retention gap — watermark {position} is older than capture instance "
                f"{instance.name} start_lsn {instance.start_lsn} (CDC cleanup purged changes "
                "that were never loaded)"
            )
        return None

    def _record_idle(self, mark: Watermark, instance: str, checked: Lsn, switched: str | None) -> bool:
        """An idle poll still records that the table was checked (freshness, retention headroom).

        False when the position was due to be persisted and Snowflake did not hold the hint's
        watermark: the hint is then dropped, never written as a watermark."""
        hint = dict(self.hints.get() or {})
        now = datetime.now(UTC)
        hint.update(
            capture_instance=mark.capture_instance if not switched else instance,
            watermark=mark.lsn,
            checked_upper=_latest(checked, hint.get("checked_upper")).hex,
            checked_at=now.isoformat(),
        )
        persisted = hint.get("persisted_at")
        due = persisted is None or now - datetime.fromisoformat(persisted) > IDLE_PERSIST_EVERY
        if switched or (due and self.persist_idle()):
            # Advance the durable position across the idle stretch now and then, so that a quiet
            # table never falls behind the retention window (Airbyte issue #37772) -- only from
            # the watermark Snowflake still holds (a conditional update, rows affected checked).
            position = hint["checked_upper"]
            confirmed = self.watermarks.advance_idle(
                Watermark(mark.capture_instance, mark.lsn), Watermark(hint["capture_instance"], position)
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
