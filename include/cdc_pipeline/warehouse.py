"""The Snowflake side: stage, COPY, MERGE into raw, history append, watermark.

Every statement here is idempotent on its own, and none relies on a multi-statement transaction
(Snowflake runs each statement atomically; the local emulator cannot MERGE inside BEGIN…COMMIT).
Exactly-once in effect comes from the order of steps and from the data itself:

* MERGE applies a key's change only when its ``(lsn, command_id, seqval, operation)`` is newer than
  the row's;
* the history insert skips changes already present (anti-join on LSN, seqval, operation, key);
* the watermark moves only after both, so a crash re-reads the same window and converges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from include.cdc_pipeline.config import DeleteMode
from include.cdc_pipeline.errors import SchemaDriftError
from include.cdc_pipeline.sql import sf_ident, sf_params, sf_table
from include.cdc_pipeline.types import ColumnMapping

log = logging.getLogger(__name__)

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


def _column_defs(columns: Iterable[tuple[str, str]]) -> str:
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


class Warehouse:
    """Runs the pipeline's statements on one Snowflake DB-API connection and counts them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.queries = 0
        self._present: set[str] = set()  # objects found or created on this connection

    # -- plumbing -----------------------------------------------------------------------------
    def execute(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.queries += 1
        if params is not None:
            sql = sf_params(sql)  # a % in a quoted name ("QTY%") is not a placeholder
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    # -- objects ------------------------------------------------------------------------------
    # Existing objects are found before anything is created: Snowflake checks the privilege to
    # create even for CREATE … IF NOT EXISTS on an existing object, and a loader role granted
    # rights on the target database has no account-level CREATE DATABASE
    # (docs.snowflake.com/en/sql-reference/sql/create-database, access control requirements).
    def database_exists(self, database: str) -> bool:
        name = database.upper()
        # SHOW … LIKE takes a pattern (``_`` matches any character): compare the names exactly.
        return any(row[1] == name for row in self.execute(f"SHOW DATABASES LIKE '{_like(name)}'"))

    def schema_exists(self, database: str, schema: str) -> bool:
        return bool(
            self.execute(
                f"SELECT 1 FROM {sf_ident(database)}.INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = %(schema)s",
                {"schema": schema.upper()},
            )
        )

    def stage_exists(self, database: str, schema: str, stage: str) -> bool:
        name = stage.upper()
        rows = self.execute(f"SHOW STAGES LIKE '{_like(name)}' IN SCHEMA {sf_table(database, schema)}")
        return any(row[1] == name for row in rows)

    def ensure_database(self, database: str) -> None:
        if database.upper() not in self._present and not self.database_exists(database):
            self.execute(f"CREATE DATABASE IF NOT EXISTS {sf_ident(database)}")
        self._present.add(database.upper())

    def use_schema(self, database: str, schema: str) -> None:
        """Create the target database and schema if missing and make them current.

        Statements are fully qualified; a current database and schema are still needed by the
        local emulator (COPY's load history, MERGE), and are harmless on Snowflake.
        """
        self.ensure_database(database)
        self.ensure_schemas(database, [schema])
        self.execute(f"USE SCHEMA {sf_table(database, schema)}")

    def ensure_schemas(self, database: str, schemas: Iterable[str]) -> None:
        for schema in schemas:
            key = f"{database}.{schema}".upper()
            if key not in self._present and not self.schema_exists(database, schema):
                self.execute(f"CREATE SCHEMA IF NOT EXISTS {sf_table(database, schema)}")
            self._present.add(key)

    def ensure_stage(self, database: str, schema: str, stage: str) -> None:
        key = f"{database}.{schema}.@{stage}".upper()
        if key not in self._present and not self.stage_exists(database, schema, stage):
            self.execute(f"CREATE STAGE IF NOT EXISTS {sf_table(database, schema, stage)}")
        self._present.add(key)

    def existing_columns(self, database: str, schema: str, table: str) -> dict[str, str]:
        rows = self.execute(
            f"SELECT column_name, data_type FROM {sf_ident(database)}.information_schema.columns"
            " WHERE table_schema = %(schema)s AND table_name = %(table)s",
            {"schema": schema.upper(), "table": table.upper()},
        )
        return {name.upper(): data_type for name, data_type in rows}

    def declared_types(self, database: str, schema: str, table: str) -> dict[str, str]:
        """Exact declared column types (``NUMBER(10,2)``, ``VARCHAR(36)``, ``TIMESTAMP_NTZ(3)``)."""
        rows = self.execute(f"DESCRIBE TABLE {sf_table(database, schema, table)}")
        return {str(row[0]).upper(): str(row[1]) for row in rows}

    def ensure_target_tables(self, layout: TableLayout) -> list[str]:
        """Create raw/history tables if missing; add columns the capture instance gained; widen
        columns whose source type grew (ALTER COLUMN on SQL Server changes the change table's type
        in place).

        Returns the names of added columns. A type Snowflake cannot change in place without
        rounding, truncating or converting old values is a SchemaDriftError naming the column.
        """
        source = [(c.target_name, c.snowflake_type) for c in layout.columns]
        added: list[str] = []
        for table, meta in ((layout.table, RAW_META), (f"{layout.table}_HISTORY", HISTORY_META)):
            target = sf_table(layout.database, layout.raw_schema, table)
            existing = self.existing_columns(layout.database, layout.raw_schema, table)
            if not existing:
                self.execute(f"CREATE TABLE IF NOT EXISTS {target} ({_column_defs([*source, *meta])})")
                continue
            declared = self.declared_types(layout.database, layout.raw_schema, table)
            for name, type_ in [*source, *meta]:
                if name not in existing:
                    # Metadata columns a newer pipeline version introduced are added the same way.
                    self.execute(f"ALTER TABLE {target} ADD COLUMN {sf_ident(name)} {type_}")
                    if (name, type_) in source:
                        added.append(f"{table}.{name}")
                    continue
                have = declared.get(name, existing[name])
                change = type_change(have, type_)
                if change.startswith("widen "):
                    wider = change.removeprefix("widen ")
                    log.warning("%s.%s: source type grew; widening %s to %s", target, name, have, wider)
                    self.execute(f"ALTER TABLE {target} ALTER COLUMN {sf_ident(name)} SET DATA TYPE {wider}")
                elif change != "fits":
                    raise SchemaDriftError(
                        f"{target}.{name} is {have} in Snowflake but the source column now maps to {type_} "
                        f"({change}): Snowflake cannot change it in place without changing stored values. "
                        "Add a new column (or re-create the table) and re-snapshot, by hand"
                    )
        return added

    # -- load ---------------------------------------------------------------------------------
    def stage_remove(self, stage: str, path: str) -> None:
        self.execute(f"REMOVE @{stage}/{path}")

    def stage_put(self, local_file: str, stage: str, path: str) -> None:
        self.execute(f"PUT 'file://{local_file}' @{stage}/{path} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")

    def create_staging(self, layout: TableLayout) -> None:
        columns = [(c.target_name, c.snowflake_type) for c in layout.columns] + STAGE_META
        self.execute(f"CREATE OR REPLACE TRANSIENT TABLE {layout.staging} ({_column_defs(columns)})")

    def copy_into_staging(self, layout: TableLayout, stage: str, path: str) -> int:
        self.execute(
            # FORCE: the staging table is new each batch, a retried batch must load its files again.
            # PURGE: loaded files leave the stage at once (the staging table now holds the data).
            # BINARY_AS_TEXT = FALSE: Parquet binary columns (varbinary, image, rowversion) are bytes;
            # Snowflake's default TRUE would read them as UTF-8 text and then hex-decode them
            # (docs.snowflake.com/en/sql-reference/sql/create-file-format, TYPE = PARQUET).
            f"COPY INTO {layout.staging} FROM @{stage}/{path} FILE_FORMAT = (TYPE = PARQUET BINARY_AS_TEXT = FALSE)"
            " MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE FORCE = TRUE PURGE = TRUE"
        )
        return int(self.execute(f"SELECT COUNT(*) FROM {layout.staging}")[0][0])

    def set_commit_time(self, layout: TableLayout, lsn: str, committed: Any) -> None:
        """Give the staged changes of one transaction the commit time they were read without."""
        self.execute(
            f"UPDATE {layout.staging} SET {sf_ident('_CDC_COMMITTED_AT')} = %(committed)s"
            f" WHERE {sf_ident('_CDC_LSN')} = %(lsn)s AND {sf_ident('_CDC_COMMITTED_AT')} IS NULL",
            {"committed": committed, "lsn": lsn},
        )

    # -- apply --------------------------------------------------------------------------------
    def merge_raw(self, layout: TableLayout) -> int:
        """Apply the latest change per key, only where it is newer than the stored row."""
        key = [sf_ident(k) for k in layout.key]
        cols = [sf_ident(n) for n in layout.names]
        lsn, seq, op, committed = (
            sf_ident(c) for c in ("_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION", "_CDC_COMMITTED_AT")
        )
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
        sql = (
            f"MERGE INTO {layout.raw} AS t USING ({latest}) AS s ON {on} {on_delete}"
            # A snapshot row is the source's state when it was read, whatever LSN the raw row
            # holds: after a restore, raw rows of the lost timeline carry higher LSNs.
            f" WHEN MATCHED AND s.{op} <> {OP_DELETE} AND ({newer} OR s.{op} = {OP_SNAPSHOT}) THEN {upsert},"
            f" {deleted} = FALSE, {deleted_at} = NULL"
            f" WHEN NOT MATCHED AND s.{op} <> {OP_DELETE} THEN INSERT ({insert_cols}) VALUES ({values(False)})"
            f"{insert_deleted}"
        )
        rows = self.execute(sql)
        return _affected(rows)

    def append_history(self, layout: TableLayout, batch_id: str, lower: str, upper: str) -> int:
        """Append every staged change once: changes already in history (a replay) are skipped."""
        key = [sf_ident(k) for k in layout.key]
        cols = [sf_ident(n) for n in layout.names]
        meta = [sf_ident(c) for c, _ in STAGE_META]
        lsn, seq, op = meta[0], meta[1], meta[2]
        match = " AND ".join(
            [f"h.{c} = s.{c}" for c in (lsn, seq, op)]
            + [f"h.{k} = s.{k}" for k in key]
            + [f"NOT COALESCE(h.{sf_ident('_CDC_LOST_TIMELINE')}, FALSE)"]
        )
        sql = (
            f"INSERT INTO {layout.history} ({', '.join([*cols, *meta])}, {sf_ident('_CDC_LOADED_AT')},"
            f" {sf_ident('_CDC_BATCH_ID')}) SELECT {', '.join(f's.{c}' for c in [*cols, *meta])},"
            f" {UTC_NOW}, %(batch)s FROM {layout.staging} AS s WHERE NOT EXISTS"
            f" (SELECT 1 FROM {layout.history} AS h WHERE h.{lsn} >= %(lower)s AND h.{lsn} <= %(upper)s AND {match})"
        )
        return _affected(self.execute(sql, {"batch": batch_id, "lower": lower, "upper": upper}))

    def mark_lost_timeline(self, layout: TableLayout, snapshot_lsn: str) -> int:
        """Before a (re-)snapshot is applied: history rows above its LSN belong to a timeline the
        source no longer has (it was restored to an earlier point, and may reuse those LSNs).
        They stay for audit, flagged, and no longer count as "already loaded" for new changes.
        On a source that was not rewound there are none (the watermark is at most the snapshot LSN)."""
        lost = sf_ident("_CDC_LOST_TIMELINE")
        return _affected(
            self.execute(
                f"UPDATE {layout.history} SET {lost} = TRUE"
                f" WHERE {sf_ident('_CDC_LSN')} > %(snap)s AND NOT COALESCE({lost}, FALSE)",
                {"snap": snapshot_lsn},
            )
        )

    def delete_missing_after_snapshot(self, layout: TableLayout, snapshot_lsn: str, batch_id: str) -> int:
        """After a (re-)snapshot: live rows the snapshot did not contain were deleted while changes were
        lost (retention gap), or belong to a timeline the source lost (restore): mark them deleted.

        "Not contained" is judged against the staging table (the snapshot itself), not by LSN: after a
        restore, such rows can carry LSNs above the snapshot's. History first (idempotent by its
        anti-join), then the raw rows, so a crash between the two converges on retry.
        """
        lsn, seq, op = (sf_ident(c) for c in ("_CDC_LSN", "_CDC_SEQVAL", "_CDC_OPERATION"))
        committed, deleted = sf_ident("_CDC_COMMITTED_AT"), sf_ident("_CDC_DELETED")
        cols = [sf_ident(n) for n in layout.names]
        key = [sf_ident(k) for k in layout.key]

        def stale(alias: str) -> str:
            in_snapshot = " AND ".join(f"s.{k} = {alias}.{k}" for k in key)
            return (
                f"NOT COALESCE({alias}.{deleted}, FALSE)"
                f" AND NOT EXISTS (SELECT 1 FROM {layout.staging} AS s WHERE {in_snapshot})"
            )

        match = " AND ".join(
            [f"h.{lsn} = %(snap)s", f"h.{seq} = %(zero)s", f"h.{op} = {OP_DELETE}"] + [f"h.{k} = r.{k}" for k in key]
        )
        params = {"snap": snapshot_lsn, "zero": ZERO_SEQVAL, "batch": batch_id}
        self.execute(
            f"INSERT INTO {layout.history} ({', '.join(cols)}, {lsn}, {seq}, {op}, {committed},"
            f" {sf_ident('_CDC_LOADED_AT')}, {sf_ident('_CDC_BATCH_ID')})"
            f" SELECT {', '.join(f'r.{c}' for c in cols)}, %(snap)s, %(zero)s, {OP_DELETE}, NULL,"
            f" {UTC_NOW}, %(batch)s FROM {layout.raw} AS r WHERE {stale('r')}"
            f" AND NOT EXISTS (SELECT 1 FROM {layout.history} AS h WHERE {match})",
            params,
        )
        if layout.delete_mode is DeleteMode.HARD:
            return _affected(self.execute(f"DELETE FROM {layout.raw} r WHERE {stale('r')}", params))
        return _affected(
            self.execute(
                f"UPDATE {layout.raw} AS r SET {deleted} = TRUE, {sf_ident('_CDC_DELETED_AT')} = NULL,"
                f" {op} = {OP_DELETE}, {lsn} = %(snap)s, {seq} = %(zero)s, {sf_ident('_CDC_COMMAND_ID')} = 0,"
                f" {sf_ident('_CDC_LOADED_AT')} = {UTC_NOW} WHERE {stale('r')}",
                params,
            )
        )

    def drop_staging(self, layout: TableLayout) -> None:
        self.execute(f"DROP TABLE IF EXISTS {layout.staging}")


def _like(name: str) -> str:
    """A validated identifier as a SHOW … LIKE string literal (config restricts names to [A-Za-z0-9_$])."""
    if not all(c.isalnum() or c in "_$" for c in name):
        raise ValueError(f"unexpected character in Snowflake object name {name!r}")
    return name


def _affected(rows: list[tuple[Any, ...]]) -> int:
    """Rows changed by a DML statement (Snowflake returns counts as the single result row)."""
    return int(sum(v for v in rows[0] if isinstance(v, int))) if rows else 0


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


# -- control table ----------------------------------------------------------------------------
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
    capture_instance: str
    lsn: str
    committed_at: Any = None
    snapshot_lsn: str | None = None


def _control_table(database: str, schema: str) -> str:
    return sf_table(database, schema, "CDC_WATERMARKS")


def ensure_control_table(wh: Warehouse, database: str, schema: str) -> None:
    wh.execute(f"CREATE TABLE IF NOT EXISTS {_control_table(database, schema)} ({_column_defs(WATERMARK_COLUMNS)})")


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
]


def log_batch(wh: Warehouse, database: str, schema: str, row: dict[str, Any], *, keep_existing: bool = False) -> None:
    """Record an applied batch in CONTROL.CDC_BATCHES (audit, monitoring, the demo summary).

    Written after the watermark; a retry updates the same BATCH_ID row instead of adding one, or,
    with ``keep_existing`` (a retry that found the batch already applied), leaves it as it is.
    """
    table = sf_table(database, schema, "CDC_BATCHES")
    wh.execute(f"CREATE TABLE IF NOT EXISTS {table} ({_column_defs(BATCH_LOG_COLUMNS)})")
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
