"""Pure builders of the pipeline's Snowflake statements: each function returns SQL text.

Holds the metadata columns of raw, history and staging tables, ``TableLayout`` (the objects of one
replicated table), the apply order of changes, DDL (create, add column, widen), ``COPY INTO`` the
staging table, the MERGE into raw, the history append, the lost-timeline flag, the delete of rows a
snapshot no longer holds, and ``type_change`` (whether a column can hold a new source type).
It opens no connection and runs nothing: ``warehouse.Warehouse`` executes what is built here, and
values travel as ``%(name)s`` parameters that the executor binds (never formatted into the text).
The control table and the batch log are ``offsets``' concern.

Every statement is idempotent on its own, and none relies on a multi-statement transaction
(Snowflake runs each statement atomically; the local emulator cannot MERGE inside BEGIN…COMMIT).
Exactly-once in effect comes from the order of steps and from the data itself:

* MERGE applies a key's change only when its ``(lsn, command_id, seqval, operation)`` is newer than
  the row's;
* the history insert skips changes already present (anti-join on LSN, seqval, operation, key);
* the watermark moves only after both, so a crash re-reads the same window and converges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from include.cdc_pipeline.config import DeleteMode
from include.cdc_pipeline.sql import sf_ident, sf_table
from include.cdc_pipeline.types import ColumnMapping

# Metadata columns (README "Raw tables"). LSNs are 20-char upper-case hex: string order = LSN order.
STAGE_META = [
    ("_CDC_LSN", "VARCHAR(20)"),  # commit LSN of the change (snapshot: the snapshot's LSN)
    ("_CDC_SEQVAL", "VARCHAR(20)"),  # order of the change inside its transaction
    ("_CDC_OPERATION", "NUMBER(1,0)"),  # 0 snapshot, 1 delete, 2 insert, 4 update (after image)
    ("_CDC_COMMITTED_AT", "TIMESTAMP_NTZ(3)"),  # source commit time (cdc.lsn_time_mapping, server time)
    # order of the operation inside its transaction (__$command_id; 0 for a snapshot row). Changes
    # are ordered by (LSN, command id, seqval, operation): seqval alone can put an insert before the
    # delete of the same row (KB 3030352). NULL in rows loaded before the column existed.
    ("_CDC_COMMAND_ID", "NUMBER(10,0)"),
]
RAW_META = [
    *STAGE_META,
    ("_CDC_LOADED_AT", "TIMESTAMP_NTZ(6)"),  # when this row was last written in Snowflake (UTC)
    ("_CDC_DELETED", "BOOLEAN"),  # the source row is deleted (soft delete mode)
    ("_CDC_DELETED_AT", "TIMESTAMP_NTZ(3)"),  # commit time of the delete
]
HISTORY_META = [
    *STAGE_META,
    ("_CDC_LOADED_AT", "TIMESTAMP_NTZ(6)"),
    ("_CDC_BATCH_ID", "VARCHAR(80)"),  # the batch that appended the row (audit, replay checks)
    # TRUE: the change belongs to a timeline the source lost (database restored to an earlier
    # point); the re-snapshot that repaired the table superseded it. Its LSN may be reused.
    ("_CDC_LOST_TIMELINE", "BOOLEAN"),
]
ZERO_SEQVAL = "0" * 20
# Load times are UTC. CURRENT_TIMESTAMP() is in the session's TIMEZONE (Snowflake's default is
# America/Los_Angeles) and ::TIMESTAMP_NTZ keeps that wall clock; SYSDATE() is UTC whatever the
# session says (docs.snowflake.com/en/sql-reference/functions/sysdate).
UTC_NOW = "SYSDATE()"
# What a VARCHAR / BINARY declared without a length holds (docs.snowflake.com/en/sql-reference/
# data-types-text): 16,777,216 characters (and, before the 2025 increase to 128 MB, bytes) and
# 8,388,608 bytes. The pipeline declares both without a length and stops on a larger value.
MAX_VARCHAR_BYTES = 16_777_216
MAX_BINARY_BYTES = 8_388_608
OP_SNAPSHOT, OP_DELETE, OP_INSERT, OP_UPDATE = 0, 1, 2, 4


@dataclass(frozen=True)
class TableLayout:
    """The Snowflake objects of one replicated table and the columns that flow into them."""

    database: str
    raw_schema: str
    staging_schema: str
    table: str  # RAW table name (upper case)
    staging_table: str
    columns: tuple[ColumnMapping, ...]
    key: tuple[str, ...]  # target column names of the primary key
    delete_mode: DeleteMode
    # PII columns (target name, category) and the tag they carry in raw and history (governance)
    pii: tuple[tuple[str, str], ...] = ()
    pii_tag: str | None = None

    @property
    def raw(self) -> str:
        return sf_table(self.database, self.raw_schema, self.table)

    @property
    def history(self) -> str:
        return sf_table(self.database, self.raw_schema, f"{self.table}_HISTORY")

    @property
    def staging(self) -> str:
        return sf_table(self.database, self.staging_schema, self.staging_table)

    @property
    def names(self) -> list[str]:
        return [c.target_name for c in self.columns]

    @property
    def source_columns(self) -> list[tuple[str, str]]:
        """``(target name, Snowflake type)`` of the replicated source columns."""
        return [(c.target_name, c.snowflake_type) for c in self.columns]

    def target_tables(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Raw and history: ``(table name, metadata columns)`` of each."""
        return [(self.table, RAW_META), (f"{self.table}_HISTORY", HISTORY_META)]


def column_defs(columns: Iterable[tuple[str, str]]) -> str:
    """``"NAME" TYPE, …`` for a CREATE TABLE column list."""
    return ", ".join(f"{sf_ident(name)} {type_}" for name, type_ in columns)


def _newer(s: str, t: str) -> str:
    """``(s.lsn, s.cmd, s.seqval, s.op) > (t.lsn, t.cmd, t.seqval, t.op)`` spelled out (no row-value
    compare); a command id loaded before the column existed counts as 0."""
    lsn, seq, op = (sf_ident(c) for c in ("_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION"))
    cmd = sf_ident("_CDC_COMMAND_ID")
    sc, tc = f"COALESCE({s}.{cmd}, 0)", f"COALESCE({t}.{cmd}, 0)"
    return (
        f"({s}.{lsn} > {t}.{lsn} OR ({s}.{lsn} = {t}.{lsn} AND ({sc} > {tc} OR ({sc} = {tc}"
        f" AND ({s}.{seq} > {t}.{seq} OR ({s}.{seq} = {t}.{seq} AND {s}.{op} > {t}.{op}))))))"
    )


def change_order(alias: str = "", descending: bool = False) -> str:
    """ORDER BY list of the apply order (LSN, command id, seqval, operation)."""
    p = f"{alias}." if alias else ""
    d = " DESC" if descending else ""
    return ", ".join(f"{p}{sf_ident(c)}{d}" for c in ("_CDC_LSN", "_CDC_COMMAND_ID", "_CDC_SEQVAL", "_CDC_OPERATION"))


# -- DDL ----------------------------------------------------------------------------------------
def create_table(table: str, columns: Iterable[tuple[str, str]]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a (qualified, quoted) table with ``(name, type)`` columns."""
    return f"CREATE TABLE IF NOT EXISTS {table} ({column_defs(columns)})"


def set_column_tag(table: str, column: str, tag: str, value: str) -> str:
    """``ALTER TABLE … MODIFY COLUMN … SET TAG <db.schema.tag> = '<value>'`` (the PII tag)."""
    quoted_tag = ".".join(sf_ident(part) for part in tag.split("."))
    return f"ALTER TABLE {table} MODIFY COLUMN {sf_ident(column)} SET TAG {quoted_tag} = '{value.replace(chr(39), '')}'"


def add_column(table: str, name: str, type_: str) -> str:
    return f"ALTER TABLE {table} ADD COLUMN {sf_ident(name)} {type_}"


def widen_column(table: str, name: str, type_: str) -> str:
    """Make a column wider in place (only what ``type_change`` answers ``widen …`` for)."""
    return f"ALTER TABLE {table} ALTER COLUMN {sf_ident(name)} SET DATA TYPE {type_}"


def create_staging(layout: TableLayout) -> str:
    """The batch's staging table: new each batch (transient: no fail-safe storage for it)."""
    columns = [*layout.source_columns, *STAGE_META]
    return f"CREATE OR REPLACE TRANSIENT TABLE {layout.staging} ({column_defs(columns)})"


def drop_staging(layout: TableLayout) -> str:
    return f"DROP TABLE IF EXISTS {layout.staging}"


# -- load ---------------------------------------------------------------------------------------
def copy_into_staging(layout: TableLayout, stage: str, path: str) -> str:
    # FORCE: the staging table is new each batch, a retried batch must load its files again.
    # PURGE: loaded files leave the stage at once (the staging table now holds the data).
    # BINARY_AS_TEXT = FALSE: Parquet binary columns (varbinary, image, rowversion) are bytes;
    # Snowflake's default TRUE would read them as UTF-8 text and then hex-decode them
    # (docs.snowflake.com/en/sql-reference/sql/create-file-format, TYPE = PARQUET).
    return (
        f"COPY INTO {layout.staging} FROM @{stage}/{path} FILE_FORMAT = (TYPE = PARQUET BINARY_AS_TEXT = FALSE)"
        " MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE FORCE = TRUE PURGE = TRUE"
    )


def count_rows(table: str) -> str:
    return f"SELECT COUNT(*) FROM {table}"


def set_commit_time(layout: TableLayout) -> str:
    """Give the staged changes of one transaction (``%(lsn)s``) the commit time (``%(committed)s``)
    they were read without."""
    committed = sf_ident("_CDC_COMMITTED_AT")
    return (
        f"UPDATE {layout.staging} SET {committed} = %(committed)s"
        f" WHERE {sf_ident('_CDC_LSN')} = %(lsn)s AND {committed} IS NULL"
    )


# -- apply --------------------------------------------------------------------------------------
def merge_raw(layout: TableLayout) -> str:
    """Apply the latest change per key, only where it is newer than the stored row."""
    key = [sf_ident(k) for k in layout.key]
    cols = [sf_ident(n) for n in layout.names]
    lsn, seq, op, committed = (sf_ident(c) for c in ("_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION", "_CDC_COMMITTED_AT"))
    loaded, deleted, deleted_at = (sf_ident(c) for c in ("_CDC_LOADED_AT", "_CDC_DELETED", "_CDC_DELETED_AT"))
    latest = (
        f"SELECT * FROM {layout.staging} QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(key)}"
        f" ORDER BY {change_order(descending=True)}) = 1"
    )
    on = " AND ".join(f"t.{k} = s.{k}" for k in key)
    newer = _newer("s", "t")
    # Target columns in SET stay unqualified: Snowflake's MERGE grammar.
    cmd = sf_ident("_CDC_COMMAND_ID")
    set_meta = f"{lsn} = s.{lsn}, {seq} = s.{seq}, {op} = s.{op}, {committed} = s.{committed}, {cmd} = s.{cmd}"
    now = UTC_NOW
    set_values = ", ".join(f"{c} = s.{c}" for c in cols if c not in key)
    upsert = f"UPDATE SET {set_values + ', ' if set_values else ''}{set_meta}, {loaded} = {now}"
    insert_cols = ", ".join([*cols, lsn, seq, op, committed, cmd, loaded, deleted, deleted_at])

    def values(is_delete: bool) -> str:  # two spellings of one VALUES list
        return ", ".join(
            [
                *(f"s.{c}" for c in cols),
                f"s.{lsn}",
                f"s.{seq}",
                f"s.{op}",
                f"s.{committed}",
                f"s.{cmd}",
                now,
                "TRUE" if is_delete else "FALSE",
                f"s.{committed}" if is_delete else "NULL",
            ]
        )

    if layout.delete_mode is DeleteMode.HARD:
        on_delete = f"WHEN MATCHED AND s.{op} = {OP_DELETE} AND {newer} THEN DELETE"
        insert_deleted = ""
    else:
        on_delete = (
            f"WHEN MATCHED AND s.{op} = {OP_DELETE} AND {newer} THEN UPDATE SET {set_meta},"
            f" {loaded} = {now}, {deleted} = TRUE, {deleted_at} = s.{committed}"
        )
        # A key inserted and deleted inside one window still gets its (deleted) row, so raw
        # does not depend on where batch boundaries fell.
        insert_deleted = (
            f" WHEN NOT MATCHED AND s.{op} = {OP_DELETE} THEN INSERT ({insert_cols}) VALUES ({values(True)})"
        )
    return (
        f"MERGE INTO {layout.raw} AS t USING ({latest}) AS s ON {on} {on_delete}"
        # A snapshot row is the source's state when it was read, whatever LSN the raw row
        # holds: after a restore, raw rows of the lost timeline carry higher LSNs.
        f" WHEN MATCHED AND s.{op} <> {OP_DELETE} AND ({newer} OR s.{op} = {OP_SNAPSHOT}) THEN {upsert},"
        f" {deleted} = FALSE, {deleted_at} = NULL"
        f" WHEN NOT MATCHED AND s.{op} <> {OP_DELETE} THEN INSERT ({insert_cols}) VALUES ({values(False)})"
        f"{insert_deleted}"
    )


def append_history(layout: TableLayout) -> str:
    """Append every staged change once: changes already in history (a replay) are skipped.
    Parameters: ``batch`` (the batch id), ``lower`` / ``upper`` (the window's LSNs, hex)."""
    key = [sf_ident(k) for k in layout.key]
    cols = [sf_ident(n) for n in layout.names]
    meta = [sf_ident(c) for c, _ in STAGE_META]
    lsn, seq, op = meta[0], meta[1], meta[2]
    match = " AND ".join(
        [f"h.{c} = s.{c}" for c in (lsn, seq, op)]
        + [f"h.{k} = s.{k}" for k in key]
        + [f"NOT COALESCE(h.{sf_ident('_CDC_LOST_TIMELINE')}, FALSE)"]
    )
    return (
        f"INSERT INTO {layout.history} ({', '.join([*cols, *meta])}, {sf_ident('_CDC_LOADED_AT')},"
        f" {sf_ident('_CDC_BATCH_ID')}) SELECT {', '.join(f's.{c}' for c in [*cols, *meta])},"
        f" {UTC_NOW}, %(batch)s FROM {layout.staging} AS s WHERE NOT EXISTS"
        f" (SELECT 1 FROM {layout.history} AS h WHERE h.{lsn} >= %(lower)s AND h.{lsn} <= %(upper)s AND {match})"
    )


def mark_lost_timeline(layout: TableLayout) -> str:
    """Before a (re-)snapshot is applied: history rows above its LSN (``%(snap)s``) belong to a
    timeline the source no longer has (it was restored to an earlier point, and may reuse those
    LSNs). They stay for audit, flagged, and no longer count as "already loaded" for new changes.
    On a source that was not rewound there are none (the watermark is at most the snapshot LSN)."""
    lost = sf_ident("_CDC_LOST_TIMELINE")
    return (
        f"UPDATE {layout.history} SET {lost} = TRUE"
        f" WHERE {sf_ident('_CDC_LSN')} > %(snap)s AND NOT COALESCE({lost}, FALSE)"
    )


# -- chunked snapshots (include/cdc_pipeline/snapshot.py) -------------------------------------------
def merge_snapshot_chunk(layout: TableLayout) -> str:
    """A snapshot chunk into raw while the stream keeps applying changes to the same table.

    Every chunk row carries its chunk's low LSN (``_CDC_LSN``: the source's max LSN read before the
    chunk was read). It replaces the raw row only where that row is not newer — a change the
    stream applied after that LSN wins, whichever landed first; an equal LSN means the read saw
    that change, so the chunk row (the state when it was read) stands. A delete the stream applied
    after the chunk's LSN is respected too: in soft delete mode by the deleted raw row's LSN, in
    hard delete mode by the delete in history (the raw row is gone), so a deleted key is never
    brought back. Raw rows of an earlier timeline were lowered to the snapshot's LSN when it
    started (``lower_lost_rows``), so they are replaced like any older row."""
    key = [sf_ident(k) for k in layout.key]
    cols = [sf_ident(n) for n in layout.names]
    lsn, seq, op, committed = (sf_ident(c) for c in ("_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION", "_CDC_COMMITTED_AT"))
    loaded, deleted, deleted_at = (sf_ident(c) for c in ("_CDC_LOADED_AT", "_CDC_DELETED", "_CDC_DELETED_AT"))
    cmd = sf_ident("_CDC_COMMAND_ID")
    rows = f"SELECT * FROM {layout.staging}"
    if layout.delete_mode is DeleteMode.HARD:
        match = " AND ".join(f"h.{k} = c.{k}" for k in key)
        rows = (
            f"SELECT * FROM {layout.staging} AS c WHERE NOT EXISTS (SELECT 1 FROM {layout.history} AS h"
            f" WHERE {match} AND h.{lsn} > c.{lsn} AND h.{op} <> {OP_SNAPSHOT}"
            f" AND NOT COALESCE(h.{sf_ident('_CDC_LOST_TIMELINE')}, FALSE))"
        )
    on = " AND ".join(f"t.{k} = s.{k}" for k in key)
    set_values = ", ".join(f"{c} = s.{c}" for c in cols if c not in key)
    meta = f"{lsn} = s.{lsn}, {seq} = s.{seq}, {op} = s.{op}, {committed} = s.{committed}, {cmd} = s.{cmd}"
    insert_cols = ", ".join([*cols, lsn, seq, op, committed, cmd, loaded, deleted, deleted_at])
    values = ", ".join(
        [*(f"s.{c}" for c in cols), f"s.{lsn}", f"s.{seq}", f"s.{op}", f"s.{committed}", f"s.{cmd}", UTC_NOW,
         "FALSE", "NULL"]
    )  # fmt: skip
    return (
        f"MERGE INTO {layout.raw} AS t USING ({rows}) AS s ON {on}"
        f" WHEN MATCHED AND t.{lsn} <= s.{lsn} THEN UPDATE SET {set_values + ', ' if set_values else ''}{meta},"
        f" {loaded} = {UTC_NOW}, {deleted} = FALSE, {deleted_at} = NULL"
        f" WHEN NOT MATCHED THEN INSERT ({insert_cols}) VALUES ({values})"
    )


def lower_lost_rows(layout: TableLayout) -> str:
    """When a snapshot starts: raw rows above its LSN (``%(snap)s``) belong to a timeline the source
    lost (it was restored); lowering them to the snapshot's LSN lets the stream's newer changes and
    the snapshot's chunks replace them. On a source that was not rewound there are none."""
    lsn = sf_ident("_CDC_LSN")
    return f"UPDATE {layout.raw} SET {lsn} = %(snap)s WHERE {lsn} > %(snap)s"


def delete_unseen_after_snapshot(layout: TableLayout) -> tuple[str, str]:
    """When every chunk of a snapshot is in: live raw rows that neither a chunk nor the stream wrote
    since the snapshot started (``%(started)s``, Snowflake's clock) are keys the source no longer
    holds: record their delete in history (at the snapshot LSN ``%(snap)s``), then delete them from
    raw (or flag them in soft delete mode). Two statements, in this order, so a crash between them
    converges on retry (the history insert skips what it wrote). Parameters: ``snap``, ``zero``,
    ``batch``, ``started``."""
    lsn, seq, op = (sf_ident(c) for c in ("_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION"))
    committed, deleted, loaded = sf_ident("_CDC_COMMITTED_AT"), sf_ident("_CDC_DELETED"), sf_ident("_CDC_LOADED_AT")
    cols = [sf_ident(n) for n in layout.names]
    key = [sf_ident(k) for k in layout.key]

    def unseen(alias: str) -> str:
        return f"NOT COALESCE({alias}.{deleted}, FALSE) AND {alias}.{loaded} < %(started)s"

    match = " AND ".join(
        [f"h.{lsn} = %(snap)s", f"h.{seq} = %(zero)s", f"h.{op} = {OP_DELETE}"] + [f"h.{k} = r.{k}" for k in key]
    )
    history = (
        f"INSERT INTO {layout.history} ({', '.join(cols)}, {lsn}, {seq}, {op}, {committed},"
        f" {loaded}, {sf_ident('_CDC_BATCH_ID')})"
        f" SELECT {', '.join(f'r.{c}' for c in cols)}, %(snap)s, %(zero)s, {OP_DELETE}, NULL,"
        f" {UTC_NOW}, %(batch)s FROM {layout.raw} AS r WHERE {unseen('r')}"
        f" AND NOT EXISTS (SELECT 1 FROM {layout.history} AS h WHERE {match})"
    )
    if layout.delete_mode is DeleteMode.HARD:
        return history, f"DELETE FROM {layout.raw} r WHERE {unseen('r')}"
    return history, (
        f"UPDATE {layout.raw} AS r SET {deleted} = TRUE, {sf_ident('_CDC_DELETED_AT')} = NULL,"
        f" {op} = {OP_DELETE}, {lsn} = %(snap)s, {seq} = %(zero)s, {sf_ident('_CDC_COMMAND_ID')} = 0,"
        f" {loaded} = {UTC_NOW} WHERE {unseen('r')}"
    )


def raw_rows(layout: TableLayout) -> str:
    """Every raw row: the replicated columns, then whether the row is deleted (reconciliation)."""
    names = ", ".join(sf_ident(n) for n in layout.names)
    return f"SELECT {names}, COALESCE({sf_ident('_CDC_DELETED')}, FALSE) FROM {layout.raw}"


# -- type changes -------------------------------------------------------------------------------
_TYPE_FAMILY = {
    "NUMBER": "NUMBER",
    "DECIMAL": "NUMBER",
    "INTEGER": "NUMBER",
    "BIGINT": "NUMBER",
    "INT": "NUMBER",
    "SMALLINT": "NUMBER",
    "TINYINT": "NUMBER",
    "HUGEINT": "NUMBER",
    "FLOAT": "FLOAT",
    "DOUBLE": "FLOAT",
    "REAL": "FLOAT",
    "VARCHAR": "TEXT",
    "TEXT": "TEXT",
    "STRING": "TEXT",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME",
    "TIMESTAMP_NTZ": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMP",
    "TIMESTAMP_TZ": "TIMESTAMP_TZ",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP_TZ",
    "TIMESTAMP_LTZ": "TIMESTAMP_TZ",
    "BINARY": "BINARY",
    "BLOB": "BINARY",
    "VARBINARY": "BINARY",
}


# Snowflake's defaults when a type is declared without its size (VARCHAR = VARCHAR(16777216) …).
_DEFAULT_ARGS = {
    "TEXT": (16777216,),
    "BINARY": (8388608,),
    "NUMBER": (38, 0),
    "TIMESTAMP": (9,),
    "TIMESTAMP_TZ": (9,),
    "TIME": (9,),
}


def _parse_type(type_: str) -> tuple[str, tuple[int, ...]]:
    base, _, rest = type_.upper().partition("(")
    family = _TYPE_FAMILY.get(base.strip(), base.strip())
    args = tuple(int(a) for a in rest.rstrip(")").split(",") if a.strip()) if rest else ()
    return family, args or _DEFAULT_ARGS.get(family, ())


def type_change(existing: str, wanted: str) -> str:
    """How a Snowflake column of type ``existing`` can hold values of ``wanted``.

    ``fits`` (every value of ``wanted`` is stored exactly), ``widen <TYPE>`` (ALTER COLUMN … SET
    DATA TYPE can make it fit: a larger NUMBER precision at the same scale, a longer VARCHAR or
    BINARY), or the reason it cannot: Snowflake's ALTER COLUMN can neither change a NUMBER's
    scale nor a timestamp's precision nor the type family (docs.snowflake.com, ALTER TABLE …
    ALTER COLUMN, "SET DATA TYPE").
    """
    (have, old), (want, new) = _parse_type(existing), _parse_type(wanted)
    if have != want:
        return f"type {have} → {want}"
    if have == "NUMBER":
        (p_old, s_old), (p_new, s_new) = old, new
        if s_new <= s_old and p_new - s_new <= p_old - s_old:
            return "fits"
        if s_new == s_old:
            return f"widen NUMBER({p_new},{s_new})"
        return f"scale {s_old} → {s_new}"
    if have in ("TEXT", "BINARY"):
        return "fits" if new[0] <= old[0] else f"widen {'VARCHAR' if have == 'TEXT' else 'BINARY'}({new[0]})"
    if have in ("TIMESTAMP", "TIMESTAMP_TZ", "TIME"):
        return "fits" if new[0] <= old[0] else f"precision {old[0]} → {new[0]}"
    return "fits"
