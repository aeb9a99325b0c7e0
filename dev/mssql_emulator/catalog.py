"""The emulated system catalog: bootstrap DDL, ``sys``/``cdc`` objects and table metadata.

Layout inside the DuckDB file:

* ``emu``  - the emulator's own bookkeeping (SQL Server-typed column metadata, committed
  transactions waiting for the capture job, change rows written by DML but not yet captured).
* ``cdc``  - the real CDC objects readers query: ``change_tables``, ``captured_columns``,
  ``index_columns``, ``lsn_time_mapping``, ``ddl_history`` and one ``<ci>_CT`` table per
  capture instance.
* ``sys``  - views and macros named like SQL Server's (``sys.columns``, ``sys.fn_cdc_get_max_lsn()``…)
  so translated queries run unchanged.
* user schemas (``dbo`` …) - the source tables themselves.

Views and macros are (re)created on every open, so a newer emulator fixes an older file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .sqltypes import SYS_TYPES, SYSNAME_USER_TYPE_ID, SqlType, parse_type
from .storage import MACROS as STORAGE_MACROS

# Columns holding binary(10) LSNs; a shorter 0x… literal compared with them is zero-padded on the
# right, as SQL Server compares binary values (it ignores trailing 0x00 bytes).
LSN_COLUMNS = frozenset(
    {"__$start_lsn", "__$end_lsn", "__$seqval", "start_lsn", "end_lsn", "tran_id", "ddl_lsn", "tran_begin_lsn"}
)

OBJECT_ID_BASE = 245575913
OBJECT_ID_STEP = 16000057

BOOTSTRAP_TABLES = """
CREATE SCHEMA IF NOT EXISTS emu;
CREATE SCHEMA IF NOT EXISTS dbo;
CREATE SCHEMA IF NOT EXISTS sys;
CREATE SCHEMA IF NOT EXISTS cdc;
CREATE TABLE IF NOT EXISTS emu.state(key VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS emu.schemas(schema_id INTEGER, name VARCHAR);
CREATE TABLE IF NOT EXISTS emu.objects(
    object_id INTEGER, schema_name VARCHAR, name VARCHAR, type VARCHAR,
    create_date TIMESTAMP_MS, modify_date TIMESTAMP_MS, is_ms_shipped BOOLEAN, pk_name VARCHAR);
CREATE TABLE IF NOT EXISTS emu.columns(
    object_id INTEGER, column_id INTEGER, name VARCHAR, type_sql VARCHAR, type_name VARCHAR,
    system_type_id INTEGER, user_type_id INTEGER, max_length SMALLINT, precision UTINYINT,
    scale UTINYINT, is_nullable BOOLEAN, is_identity BOOLEAN);
CREATE TABLE IF NOT EXISTS emu.key_columns(object_id INTEGER, key_ordinal INTEGER, column_name VARCHAR);
CREATE TABLE IF NOT EXISTS emu.unique_keys(
    object_id INTEGER, name VARCHAR, is_constraint BOOLEAN, index_id INTEGER, key_ordinal INTEGER,
    column_name VARCHAR);
CREATE TABLE IF NOT EXISTS emu.computed_columns(
    object_id INTEGER, column_id INTEGER, definition VARCHAR, is_persisted BOOLEAN);
CREATE TABLE IF NOT EXISTS emu.commits(
    tran_id BIGINT, commit_lsn BLOB, begin_lsn BLOB, begin_time TIMESTAMP_MS, end_time TIMESTAMP_MS,
    has_changes BOOLEAN);
CREATE TABLE IF NOT EXISTS emu.pending_ddl(
    tran_id BIGINT, source_object_id INTEGER, object_id INTEGER, required_column_update BOOLEAN,
    ddl_command VARCHAR, ddl_lsn BLOB);
CREATE SEQUENCE IF NOT EXISTS emu.object_id_seq START 1;
CREATE TABLE IF NOT EXISTS cdc.change_tables(
    object_id INTEGER, version INTEGER, source_object_id INTEGER, capture_instance VARCHAR,
    start_lsn BLOB, end_lsn BLOB, supports_net_changes BOOLEAN, has_drop_pending BOOLEAN,
    role_name VARCHAR, index_name VARCHAR, filegroup_name VARCHAR, create_date TIMESTAMP_MS,
    partition_switch BOOLEAN);
CREATE TABLE IF NOT EXISTS cdc.captured_columns(
    object_id INTEGER, column_name VARCHAR, column_id INTEGER, column_type VARCHAR,
    column_ordinal INTEGER, is_computed BOOLEAN, masking_function VARCHAR);
CREATE TABLE IF NOT EXISTS cdc.index_columns(
    object_id INTEGER, column_name VARCHAR, index_ordinal UTINYINT, column_id INTEGER);
CREATE TABLE IF NOT EXISTS cdc.lsn_time_mapping(
    start_lsn BLOB, tran_begin_time TIMESTAMP_MS, tran_end_time TIMESTAMP_MS, tran_id BLOB,
    tran_begin_lsn BLOB);
CREATE TABLE IF NOT EXISTS cdc.ddl_history(
    source_object_id INTEGER, object_id INTEGER, required_column_update BOOLEAN,
    ddl_command VARCHAR, ddl_lsn BLOB, ddl_time TIMESTAMP_MS);
"""

_TYPES_ROWS = ", ".join(
    f"('{name}', {sid}, {SYSNAME_USER_TYPE_ID if name == 'sysname' else sid}, {ml}, {p}, {s}, "
    f"{'true' if name != 'sysname' else 'false'})"
    for name, (sid, ml, p, s) in SYS_TYPES.items()
)

BOOTSTRAP_VIEWS = f"""
CREATE OR REPLACE VIEW sys.types AS
SELECT name, system_type_id::TINYINT AS system_type_id, user_type_id, 4 AS schema_id, NULL::INTEGER AS principal_id,
       max_length::SMALLINT AS max_length, precision::UTINYINT AS precision, scale::UTINYINT AS scale,
       NULL::VARCHAR AS collation_name, is_nullable, false AS is_user_defined, false AS is_assembly_type,
       0 AS default_object_id, 0 AS rule_object_id, false AS is_table_type
FROM (VALUES {_TYPES_ROWS}) AS t(name, system_type_id, user_type_id, max_length, precision, scale, is_nullable);

CREATE OR REPLACE VIEW sys.schemas AS
SELECT name, schema_id, 1 AS principal_id FROM emu.schemas;

CREATE OR REPLACE VIEW sys.objects AS
SELECT o.name, o.object_id, NULL::INTEGER AS principal_id, s.schema_id, 0 AS parent_object_id,
       o.type, CASE o.type WHEN 'U' THEN 'USER_TABLE' ELSE o.type END AS type_desc,
       o.create_date, o.modify_date, o.is_ms_shipped, false AS is_published, false AS is_schema_published
FROM emu.objects o JOIN emu.schemas s ON lower(s.name) = lower(o.schema_name);

CREATE OR REPLACE VIEW sys.tables AS
SELECT o.*, 0 AS lob_data_space_id, false AS uses_ansi_nulls, false AS is_replicated,
       EXISTS (SELECT 1 FROM cdc.change_tables ct WHERE ct.source_object_id = o.object_id) AS is_tracked_by_cdc,
       0 AS temporal_type
FROM sys.objects o WHERE o.type = 'U';

CREATE OR REPLACE VIEW sys.columns AS
SELECT c.object_id, c.name, c.column_id, c.system_type_id::TINYINT AS system_type_id, c.user_type_id,
       c.max_length, c.precision, c.scale,
       CASE WHEN c.type_name IN ('char', 'varchar', 'nchar', 'nvarchar', 'text', 'ntext', 'sysname')
            THEN 'SQL_Latin1_General_CP1_CI_AS' END AS collation_name,
       c.is_nullable, false AS is_ansi_padded, false AS is_rowguidcol, c.is_identity,
       EXISTS (SELECT 1 FROM emu.computed_columns k WHERE k.object_id = c.object_id AND k.column_id = c.column_id)
           AS is_computed,
       false AS is_filestream, false AS is_replicated, false AS is_non_sql_subscribed,
       false AS is_merge_published, false AS is_dts_replicated, false AS is_xml_document,
       0 AS xml_collection_id, 0 AS default_object_id, 0 AS rule_object_id, false AS is_sparse,
       false AS is_column_set, 0 AS generated_always_type, false AS is_hidden, false AS is_masked
FROM emu.columns c;

CREATE OR REPLACE VIEW sys.databases AS
SELECT (SELECT value FROM emu.state WHERE key = 'db_name') AS name, 5 AS database_id,
       coalesce((SELECT value = '1' FROM emu.state WHERE key = 'cdc_enabled'), false) AS is_cdc_enabled,
       'SQL_Latin1_General_CP1_CI_AS' AS collation_name, 160 AS compatibility_level, 'ONLINE' AS state_desc,
       'FULL' AS recovery_model_desc;

-- sys.partitions: one partition per table; rows = DuckDB's estimate (SQL Server documents the column
-- as "the approximate number of rows in this partition"). index_id 1 for a clustered table (a primary
-- key, or a change table's clustered index), 0 for a heap.
-- https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-partitions-transact-sql
CREATE OR REPLACE VIEW sys.partitions AS
SELECT o.object_id::BIGINT * 65536 + 1 AS partition_id, o.object_id,
       CASE WHEN o.pk_name IS NOT NULL OR lower(o.schema_name) = 'cdc' THEN 1 ELSE 0 END AS index_id,
       1 AS partition_number, o.object_id::BIGINT * 65536 + 1 AS hobt_id, t.estimated_size::BIGINT AS rows,
       0 AS filestream_filegroup_id, 0::TINYINT AS data_compression, 'NONE' AS data_compression_desc
FROM emu.objects o
JOIN duckdb_tables() t ON t.database_name = current_database()
    AND lower(t.schema_name) = lower(o.schema_name) AND lower(t.table_name) = lower(o.name)
WHERE o.type = 'U';

CREATE OR REPLACE VIEW sys.indexes AS
SELECT o.object_id, o.pk_name AS name, 1 AS index_id, 1 AS type, 'CLUSTERED' AS type_desc,
       true AS is_unique, true AS is_primary_key, false AS is_unique_constraint
FROM emu.objects o WHERE o.pk_name IS NOT NULL
UNION ALL
SELECT DISTINCT u.object_id, u.name, u.index_id, 2 AS type, 'NONCLUSTERED' AS type_desc,
       true AS is_unique, false AS is_primary_key, u.is_constraint AS is_unique_constraint
FROM emu.unique_keys u;

CREATE OR REPLACE VIEW sys.index_columns AS
SELECT k.object_id, 1 AS index_id, k.key_ordinal AS index_column_id, c.column_id, k.key_ordinal,
       false AS is_descending_key, false AS is_included_column
FROM emu.key_columns k JOIN emu.columns c ON c.object_id = k.object_id AND lower(c.name) = lower(k.column_name)
UNION ALL
SELECT u.object_id, u.index_id, u.key_ordinal AS index_column_id, c.column_id, u.key_ordinal,
       false AS is_descending_key, false AS is_included_column
FROM emu.unique_keys u JOIN emu.columns c ON c.object_id = u.object_id AND lower(c.name) = lower(u.column_name);
"""

BOOTSTRAP_MACROS = (
    """
CREATE OR REPLACE MACRO sys.lsn_to_int(b) AS
    CASE WHEN b IS NULL THEN NULL WHEN octet_length(b) = 0 THEN 0::HUGEINT ELSE ('0x' || hex(b))::HUGEINT END;
CREATE OR REPLACE MACRO sys.int_to_lsn(n) AS unhex(lpad(hex(n::HUGEINT), 20, '0'));
CREATE OR REPLACE MACRO sys.fn_cdc_get_max_lsn() AS (SELECT max(start_lsn) FROM cdc.lsn_time_mapping);
CREATE OR REPLACE MACRO sys.fn_cdc_get_min_lsn(ci) AS coalesce(
    (SELECT start_lsn FROM cdc.change_tables WHERE capture_instance = ci), unhex('00000000000000000000'));
CREATE OR REPLACE MACRO sys.fn_cdc_increment_lsn(x) AS sys.int_to_lsn(sys.lsn_to_int(x) + 1);
CREATE OR REPLACE MACRO sys.fn_cdc_decrement_lsn(x) AS
    CASE WHEN sys.lsn_to_int(x) = 0 THEN x ELSE sys.int_to_lsn(sys.lsn_to_int(x) - 1) END;
CREATE OR REPLACE MACRO sys.fn_cdc_map_lsn_to_time(x) AS (
    SELECT tran_end_time FROM cdc.lsn_time_mapping WHERE start_lsn <= x ORDER BY start_lsn DESC LIMIT 1);
CREATE OR REPLACE MACRO sys.fn_cdc_map_time_to_lsn(op, t) AS CASE lower(trim(op))
    WHEN 'largest less than' THEN
        (SELECT max(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_end_time < t::TIMESTAMP)
    WHEN 'largest less than or equal' THEN
        (SELECT max(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_end_time <= t::TIMESTAMP)
    WHEN 'smallest greater than' THEN
        (SELECT min(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_end_time > t::TIMESTAMP)
    WHEN 'smallest greater than or equal' THEN
        (SELECT min(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_end_time >= t::TIMESTAMP)
    END;
CREATE OR REPLACE MACRO sys.fn_cdc_get_column_ordinal(ci, col) AS (
    SELECT cc.column_ordinal FROM cdc.captured_columns cc JOIN cdc.change_tables ct ON cc.object_id = ct.object_id
    WHERE ct.capture_instance = ci AND lower(cc.column_name) = lower(col));
CREATE OR REPLACE MACRO sys.fn_cdc_is_bit_set(pos, mask) AS
    ((sys.lsn_to_int(mask) >> ((pos - 1)::INTEGER)) & 1::HUGEINT) = 1::HUGEINT;
CREATE OR REPLACE MACRO sys.fn_cdc_has_column_changed(ci, col, mask) AS
    sys.fn_cdc_is_bit_set(sys.fn_cdc_get_column_ordinal(ci, col), mask);
CREATE OR REPLACE MACRO sys.object_name(id) AS (SELECT name FROM emu.objects WHERE object_id = id);
CREATE OR REPLACE MACRO sys.object_schema_name(id) AS (SELECT schema_name FROM emu.objects WHERE object_id = id);
CREATE OR REPLACE MACRO sys.schema_name(id) AS (SELECT name FROM emu.schemas WHERE schema_id = id);
CREATE OR REPLACE MACRO sys.schema_id(n) AS (SELECT schema_id FROM emu.schemas WHERE lower(name) = lower(n));
CREATE OR REPLACE MACRO sys.object_id(n) AS (
    SELECT o.object_id FROM emu.objects o,
        (SELECT string_split(replace(replace(n, '[', ''), ']', ''), '.') AS p) AS parts
    WHERE lower(o.name) = lower(parts.p[-1])
      AND lower(o.schema_name) = lower(CASE WHEN len(parts.p) >= 2 THEN parts.p[-2] ELSE 'dbo' END)
    LIMIT 1);
CREATE OR REPLACE MACRO sys.object_id_parts(s, n) AS (
    SELECT o.object_id FROM emu.objects o WHERE lower(o.name) = lower(n) AND lower(o.schema_name) = lower(s) LIMIT 1);
CREATE OR REPLACE MACRO sys.db_name() AS (SELECT value FROM emu.state WHERE key = 'db_name');
"""
    + STORAGE_MACROS
)

DEFAULT_SCHEMAS = [(1, "dbo"), (2, "guest"), (3, "INFORMATION_SCHEMA"), (4, "sys"), (5, "cdc")]


def dq(name: str) -> str:
    """A DuckDB identifier for a SQL Server name: double-quoted, ``"`` doubled (a bracketed SQL
    Server name may hold any character, ``"`` included)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class ColumnInfo:
    """A source column with its declared SQL Server type."""

    name: str
    column_id: int
    type: SqlType
    nullable: bool

    @property
    def duck_type(self) -> str:
        return self.type.duck_type()


@dataclass
class CapturedColumn:
    name: str
    ordinal: int  # column_ordinal in cdc.captured_columns: 1-based among captured columns
    column_id: int
    type: SqlType
    computed: bool = False  # cdc.captured_columns.is_computed: always NULL in the change table


@dataclass
class InstanceInfo:
    """One capture instance of a source table (at most two per table)."""

    name: str
    object_id: int  # the change table's object id
    start_lsn: bytes
    supports_net_changes: bool
    columns: list[CapturedColumn]
    index_columns: list[str]

    @property
    def ct_table(self) -> str:
        return f"cdc.{dq(self.name + '_CT')}"

    @property
    def pending_table(self) -> str:
        return f"emu.{dq('pending_' + self.name)}"


@dataclass
class UniqueKey:
    """A PRIMARY KEY, a UNIQUE constraint or a unique index: what a duplicate violates."""

    name: str
    columns: list[str]
    kind: str  # "PRIMARY KEY" or "UNIQUE KEY" (constraints, Msg 2627), "INDEX" (Msg 2601)


@dataclass
class TableInfo:
    """What DML on a source table needs to know: columns, keys and capture instances."""

    object_id: int
    schema: str
    name: str
    columns: list[ColumnInfo]
    pk: list[str]
    pk_name: str | None
    instances: list[InstanceInfo] = field(default_factory=list)
    uniques: list[UniqueKey] = field(default_factory=list)  # the primary key first

    @property
    def qualified(self) -> str:
        return f"{dq(self.schema)}.{dq(self.name)}"

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> ColumnInfo | None:
        low = name.lower()
        for col in self.columns:
            if col.name.lower() == low:
                return col
        return None


def load_table(cur, schema: str, name: str) -> TableInfo | None:
    """Read a user table's metadata through ``cur`` (so uncommitted DDL of that session is seen)."""
    row = cur.execute(
        "SELECT object_id, schema_name, name, pk_name FROM emu.objects "
        "WHERE type = 'U' AND lower(schema_name) = lower(?) AND lower(name) = lower(?)",
        [schema, name],
    ).fetchone()
    if row is None:
        return None
    object_id, schema_name, table_name, pk_name = row
    cols = [
        ColumnInfo(n, cid, parse_type(t), bool(nullable))
        for cid, n, t, nullable in cur.execute(
            "SELECT column_id, name, type_sql, is_nullable FROM emu.columns WHERE object_id = ? ORDER BY column_id",
            [object_id],
        ).fetchall()
    ]
    pk = [
        r[0]
        for r in cur.execute(
            "SELECT column_name FROM emu.key_columns WHERE object_id = ? ORDER BY key_ordinal", [object_id]
        ).fetchall()
    ]
    info = TableInfo(object_id, schema_name, table_name, cols, pk, pk_name)
    if pk:
        info.uniques.append(UniqueKey(pk_name or "PK", pk, "PRIMARY KEY"))
    keys: dict[str, UniqueKey] = {}
    for name, is_constraint, column in cur.execute(
        "SELECT name, is_constraint, column_name FROM emu.unique_keys WHERE object_id = ? "
        "ORDER BY index_id, key_ordinal",
        [object_id],
    ).fetchall():
        keys.setdefault(name, UniqueKey(name, [], "UNIQUE KEY" if is_constraint else "INDEX")).columns.append(column)
    info.uniques.extend(keys.values())
    for ct_id, ci, start_lsn, net in cur.execute(
        "SELECT object_id, capture_instance, start_lsn, supports_net_changes FROM cdc.change_tables "
        "WHERE source_object_id = ? ORDER BY create_date, object_id",
        [object_id],
    ).fetchall():
        captured = [
            CapturedColumn(n, ordinal, cid, parse_type(t), bool(computed))
            for n, ordinal, cid, t, computed in cur.execute(
                "SELECT cc.column_name, cc.column_ordinal, cc.column_id, c.type_sql, cc.is_computed "
                "FROM cdc.captured_columns cc "
                "JOIN emu.columns c ON c.object_id = cc.object_id AND lower(c.name) = lower(cc.column_name) "
                "WHERE cc.object_id = ? ORDER BY cc.column_ordinal",
                [ct_id],
            ).fetchall()
        ]
        keys = [
            r[0]
            for r in cur.execute(
                "SELECT column_name FROM cdc.index_columns WHERE object_id = ? ORDER BY index_ordinal", [ct_id]
            ).fetchall()
        ]
        info.instances.append(InstanceInfo(ci, ct_id, bytes(start_lsn), bool(net), captured, keys))
    return info


def pk_constraint_name(table: str, object_id: int, prefix: str = "PK", serial: int = 0) -> str:
    """SQL Server's generated name: ``PK__<first 8 chars of table>__<16 hex digits>`` (``UQ__…`` for
    an unnamed UNIQUE constraint)."""
    return f"{prefix}__{table[:8]}__{(object_id * 2654435761 + serial) & 0xFFFFFFFFFFFFFFFF:016X}"


def column_rows(object_id: int, columns: list[tuple[int, str, SqlType, bool, bool]]) -> list[list[Any]]:
    """emu.columns rows: (object_id, column_id, name, type_sql, type_name, ids, sizes, flags)."""
    rows = []
    for column_id, name, sql_type, nullable, identity in columns:
        rows.append(
            [
                object_id,
                column_id,
                name,
                sql_type.sql(),
                sql_type.name,
                sql_type.system_type_id,
                sql_type.user_type_id,
                sql_type.max_length(),
                sql_type.sys_precision(),
                sql_type.sys_scale(),
                nullable,
                identity,
            ]
        )
    return rows


def insert_columns(session_cur: Any, rows: list[list[Any]]) -> None:
    if rows:
        session_cur.executemany("INSERT INTO emu.columns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
