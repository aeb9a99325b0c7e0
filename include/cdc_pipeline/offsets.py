"""Where the pipeline is: the watermark, the hint that caches it, and the batch log.

One vocabulary (the same words in logs, XCom, the status page and the docs):

* **watermark** — the persisted position of a table: the last applied LSN on its capture instance,
  one row of ``<db>.<control>.CDC_WATERMARKS`` in Snowflake, written as the last step of a batch
  after its data is durable. The only durable truth.
* **hint** — a cheap cache of the watermark outside Snowflake (an Airflow Variable in the DAG), so
  that an idle poll never wakes a Snowflake warehouse. Bound to the target it describes; never
  trusted where it matters (``planner`` confirms it against the watermark before loading).
* **batch log** — ``CDC_BATCHES``: one row per applied batch (audit, monitoring, the demo summary).

What a run should read next (the window) is ``planner``'s concern; the SQL of raw/history tables
is ``snowflake_sql``'s. Serialised positions stay 20-character upper-case hex text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.snowflake_sql import UTC_NOW, create_table
from include.cdc_pipeline.sql import sf_table
from include.cdc_pipeline.warehouse import Warehouse


class HintStore(Protocol):
    """Cheap per-table state outside Snowflake (Airflow Variables in the DAG)."""

    def get(self) -> dict[str, Any] | None: ...

    def set(self, value: dict[str, Any]) -> None: ...


def hint_target(cfg: SourceConfig) -> str:
    """The connections and control schema a hint describes (``mssql -> snowflake:DB.CONTROL``)."""
    t = cfg.target
    return f"{cfg.mssql_conn_id} -> {cfg.snowflake_conn_id}:{t.database}.{t.control_schema}"


class TargetHints:
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


# -- the watermark (control table) -------------------------------------------------------------
WATERMARK_COLUMNS = [
    ("SOURCE_NAME", "VARCHAR"),
    ("TABLE_NAME", "VARCHAR"),  # <schema>_<table> as in config (lower case)
    ("CAPTURE_INSTANCE", "VARCHAR"),  # the instance the watermark refers to
    ("WATERMARK_LSN", "VARCHAR(20)"),  # everything up to and including this LSN is applied
    ("WATERMARK_COMMITTED_AT", "TIMESTAMP_NTZ(3)"),  # source commit time of that LSN (freshness)
    ("SNAPSHOT_LSN", "VARCHAR(20)"),  # LSN of the last (re-)snapshot
    ("LAST_BATCH_ID", "VARCHAR(80)"),
    ("LAST_BATCH_ROWS", "NUMBER(19,0)"),
    ("UPDATED_AT", "TIMESTAMP_NTZ(6)"),  # UTC
]


@dataclass(frozen=True)
class Watermark:
    """A table's persisted position: everything up to and including ``lsn`` is applied. ``lsn`` is
    the stored hex text (the control table's column); ``position`` the same as an ``Lsn``."""

    capture_instance: str
    lsn: str
    committed_at: Any = None
    snapshot_lsn: str | None = None

    @property
    def position(self) -> Lsn:
        return Lsn.from_hex(self.lsn)


def _control_table(database: str, schema: str) -> str:
    return sf_table(database, schema, "CDC_WATERMARKS")


def ensure_control_table(wh: Warehouse, database: str, schema: str) -> None:
    wh.execute(create_table(_control_table(database, schema), WATERMARK_COLUMNS))


def read_watermark(wh: Warehouse, database: str, schema: str, source: str, table: str) -> Watermark | None:
    rows = wh.execute(
        f"SELECT CAPTURE_INSTANCE, WATERMARK_LSN, WATERMARK_COMMITTED_AT, SNAPSHOT_LSN"
        f" FROM {_control_table(database, schema)} WHERE SOURCE_NAME = %(source)s AND TABLE_NAME = %(table)s",
        {"source": source, "table": table},
    )
    if not rows:
        return None
    if len(rows) > 1:
        raise RuntimeError(f"control table holds {len(rows)} watermarks for {source}.{table}; expected one")
    ci, lsn_hex, committed, snap = rows[0]
    return Watermark(ci, lsn_hex, committed, snap)


def read_watermarks(wh: Warehouse, database: str, schema: str, source: str) -> dict[str, Watermark]:
    """Every watermark of a source by table name, in one query (planning many tables)."""
    rows = wh.execute(
        f"SELECT TABLE_NAME, CAPTURE_INSTANCE, WATERMARK_LSN, WATERMARK_COMMITTED_AT, SNAPSHOT_LSN"
        f" FROM {_control_table(database, schema)} WHERE SOURCE_NAME = %(source)s",
        {"source": source},
    )
    found: dict[str, Watermark] = {}
    for table, ci, lsn_hex, committed, snap in rows:
        if table in found:
            raise RuntimeError(f"control table holds several watermarks for {source}.{table}; expected one")
        found[table] = Watermark(ci, lsn_hex, committed, snap)
    return found


def write_watermark(
    wh: Warehouse,
    database: str,
    schema: str,
    source: str,
    table: str,
    mark: Watermark,
    batch_id: str | None,
    batch_rows: int,
) -> None:
    """Upsert the table's watermark: the last statement of a batch, after its data is durable."""
    params = {
        "source": source,
        "table": table,
        "ci": mark.capture_instance,
        "lsn": mark.lsn,
        "committed": mark.committed_at,
        "snap": mark.snapshot_lsn,
        "batch": batch_id,
        "rows": batch_rows,
    }
    wh.execute(
        f"MERGE INTO {_control_table(database, schema)} AS t USING (SELECT %(source)s AS SOURCE_NAME,"
        " %(table)s AS TABLE_NAME) AS s ON t.SOURCE_NAME = s.SOURCE_NAME AND t.TABLE_NAME = s.TABLE_NAME"
        " WHEN MATCHED THEN UPDATE SET CAPTURE_INSTANCE = %(ci)s, WATERMARK_LSN = %(lsn)s,"
        " WATERMARK_COMMITTED_AT = %(committed)s, SNAPSHOT_LSN = COALESCE(%(snap)s, t.SNAPSHOT_LSN),"
        " LAST_BATCH_ID = %(batch)s, LAST_BATCH_ROWS = %(rows)s,"
        f" UPDATED_AT = {UTC_NOW}"
        " WHEN NOT MATCHED THEN INSERT (SOURCE_NAME, TABLE_NAME, CAPTURE_INSTANCE, WATERMARK_LSN,"
        " WATERMARK_COMMITTED_AT, SNAPSHOT_LSN, LAST_BATCH_ID, LAST_BATCH_ROWS, UPDATED_AT) VALUES"
        " (%(source)s, %(table)s, %(ci)s, %(lsn)s, %(committed)s, %(snap)s, %(batch)s, %(rows)s,"
        f" {UTC_NOW})",
        params,
    )


def advance_idle_watermark(
    wh: Warehouse, database: str, schema: str, source: str, table: str, expected: Watermark, position: Watermark
) -> bool:
    """Move an idle table's watermark to ``position`` only if Snowflake still holds ``expected``.

    An idle poll knows its position from the hint, not from Snowflake: if the control row was
    deleted, moved on, or the connection now reaches another target, an unconditional upsert
    would mark a table loaded that is not. One conditional UPDATE; False when no row matched.
    """
    rows = wh.execute(
        f"UPDATE {_control_table(database, schema)} SET CAPTURE_INSTANCE = %(ci)s, WATERMARK_LSN = %(lsn)s,"
        f" WATERMARK_COMMITTED_AT = NULL, LAST_BATCH_ID = NULL, LAST_BATCH_ROWS = 0, UPDATED_AT = {UTC_NOW}"
        " WHERE SOURCE_NAME = %(source)s AND TABLE_NAME = %(table)s AND CAPTURE_INSTANCE = %(old_ci)s"
        " AND WATERMARK_LSN = %(old_lsn)s",
        {
            "ci": position.capture_instance,
            "lsn": position.lsn,
            "source": source,
            "table": table,
            "old_ci": expected.capture_instance,
            "old_lsn": expected.lsn,
        },
    )
    # Snowflake answers (rows updated, multi-joined rows updated); the first count is the one.
    return bool(rows) and int(rows[0][0]) == 1


class TableWatermark:
    """The watermark of one table, on a lazily opened warehouse: the control table is created (and
    its schema) before it is read or advanced, so a first run needs no set-up."""

    def __init__(self, warehouse: Callable[[], Warehouse], database: str, schema: str, source: str, table: str) -> None:
        self._warehouse = warehouse
        self.database, self.schema, self.source, self.table = database, schema, source, table

    def _ready(self) -> Warehouse:
        wh = self._warehouse()
        wh.ensure_schemas(self.database, [self.schema])
        ensure_control_table(wh, self.database, self.schema)
        return wh

    def read(self) -> Watermark | None:
        return read_watermark(self._ready(), self.database, self.schema, self.source, self.table)

    def advance_idle(self, expected: Watermark, position: Watermark) -> bool:
        """See ``advance_idle_watermark``."""
        wh = self._ready()
        return advance_idle_watermark(wh, self.database, self.schema, self.source, self.table, expected, position)

    def set_snapshot_lsn(self, lsn: str) -> None:
        """Record that a snapshot positioned at ``lsn`` is complete (its last step); the stream's
        position in the same row moves on independently."""
        wh = self._warehouse()
        ensure_control_table(wh, self.database, self.schema)
        wh.execute(
            f"UPDATE {_control_table(self.database, self.schema)} SET SNAPSHOT_LSN = %(snap)s, UPDATED_AT = {UTC_NOW}"
            " WHERE SOURCE_NAME = %(source)s AND TABLE_NAME = %(table)s",
            {"snap": lsn, "source": self.source, "table": self.table},
        )

    def write(self, mark: Watermark, batch_id: str | None, batch_rows: int) -> None:
        """See ``write_watermark`` (the schemas exist: the batch was extracted into them)."""
        wh = self._warehouse()
        ensure_control_table(wh, self.database, self.schema)
        write_watermark(wh, self.database, self.schema, self.source, self.table, mark, batch_id, batch_rows)


# -- the batch log ------------------------------------------------------------------------------
BATCH_LOG_COLUMNS = [
    ("BATCH_ID", "VARCHAR(80)"),
    ("SOURCE_NAME", "VARCHAR"),
    ("TABLE_NAME", "VARCHAR"),
    ("MODE", "VARCHAR(10)"),  # stream | snapshot
    ("CAPTURE_INSTANCE", "VARCHAR"),
    ("LOWER_LSN", "VARCHAR(20)"),  # exclusive
    ("UPPER_LSN", "VARCHAR(20)"),  # inclusive
    ("ROWS_STAGED", "NUMBER(19,0)"),
    ("ROWS_MERGED", "NUMBER(19,0)"),
    ("HISTORY_APPENDED", "NUMBER(19,0)"),
    ("EXTRACT_SECONDS", "FLOAT"),
    ("APPLY_SECONDS", "FLOAT"),
    ("UPPER_COMMITTED_AT", "TIMESTAMP_NTZ(3)"),
    ("APPLIED_AT", "TIMESTAMP_NTZ(6)"),
    # Snowflake credits of the batch's queries, approximated from the query history; NULL when the
    # role may not read it (include/cdc_pipeline/governance/credits.py). Added to older tables.
    ("CREDITS_USED", "FLOAT"),
]


def log_batch(wh: Warehouse, database: str, schema: str, row: dict[str, Any], *, keep_existing: bool = False) -> None:
    """Record an applied batch in CONTROL.CDC_BATCHES (audit, monitoring, the demo summary).

    Written after the watermark; a retry updates the same BATCH_ID row instead of adding one, or,
    with ``keep_existing`` (a retry that found the batch already applied), leaves it as it is.
    """
    table = sf_table(database, schema, "CDC_BATCHES")
    wh.execute(create_table(table, BATCH_LOG_COLUMNS))
    if (added := f"{table}.CREDITS_USED") not in wh._present:  # a log created before the column existed
        wh.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS CREDITS_USED FLOAT")
        wh._present.add(added)
    names = [name for name, _ in BATCH_LOG_COLUMNS if name != "APPLIED_AT"]
    values = ", ".join(f"%({n.lower()})s AS {n}" for n in names)
    update = (
        ""
        if keep_existing
        else f" WHEN MATCHED THEN UPDATE SET {', '.join(f'{n} = s.{n}' for n in names[1:])}, APPLIED_AT = {UTC_NOW}"
    )
    wh.execute(
        f"MERGE INTO {table} AS t USING (SELECT {values}) AS s ON t.BATCH_ID = s.BATCH_ID{update}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(names)}, APPLIED_AT)"
        f" VALUES ({', '.join(f's.{n}' for n in names)}, {UTC_NOW})",
        {n.lower(): row.get(n.lower()) for n in names},
    )
