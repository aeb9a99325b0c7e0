"""The SQL Server side: connection hook and the CDC reader.

The reader speaks T-SQL through a DB-API connection. In production that is pymssql from the
mssql provider; locally the SQL Server CDC emulator (dev/mssql_emulator) answers the same text
with the same result shapes and errors, so this module has one code path for both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

from include.cdc_pipeline import lsn as lsnlib
from include.cdc_pipeline.sql import template, tsql_ident
from include.cdc_pipeline.types import SourceColumn

log = logging.getLogger(__name__)

# Columns of a change table that are CDC bookkeeping rather than captured source columns.
CDC_META_COLUMNS = {
    "__$start_lsn",
    "__$end_lsn",
    "__$seqval",
    "__$operation",
    "__$update_mask",
    "__$command_id",
}


class CdcSourceHook(MsSqlHook):
    """MsSqlHook that can also reach the local SQL Server CDC emulator.

    A connection whose extra holds ``{"emulator": true}`` is served by the emulator's DB-API
    ``connect`` (same T-SQL, same result types, same pymssql exception classes); every other
    connection is the provider's own pymssql path, unchanged.
    """

    def get_conn(self) -> Any:
        conn = self.get_connection(self.get_conn_id())
        if conn.extra_dejson.get("emulator"):
            from dev.mssql_emulator import connect  # local stack only

            return connect(
                server=conn.host or "127.0.0.1",
                port=int(conn.port or 11433),
                user=conn.login,
                password=conn.password,
                database=self.schema or conn.schema,
            )
        return super().get_conn()


@dataclass(frozen=True)
class CaptureInstance:
    name: str
    start_lsn: bytes
    source_schema: str
    source_table: str


class CdcSource:
    """Reads CDC metadata and change rows over one DB-API connection (pymssql-compatible)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def _one(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, tuple(params) if params else None)
            return cursor.fetchone()
        finally:
            cursor.close()

    def _all(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, tuple(params) if params else None)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return all rows (small results only)."""
        return self._all(sql, params)

    def max_lsn(self) -> bytes | None:
        row = self._one(template("tsql/max_lsn.sql"))
        return bytes(row[0]) if row and row[0] is not None else None

    def capture_instances(self, schema: str, table: str) -> list[CaptureInstance]:
        """The table's capture instances (at most two), oldest validity start first."""
        found = [
            CaptureInstance(name, bytes(start), src_schema, src_table)
            for name, start, src_schema, src_table in self._all(template("tsql/capture_instances.sql"))
            if (src_schema or "").lower() == schema.lower() and (src_table or "").lower() == table.lower()
        ]
        return sorted(found, key=lambda ci: ci.start_lsn)

    def change_table_columns(self, capture_instance: str) -> list[SourceColumn]:
        """Captured columns of an instance with their exact SQL Server types (CDC columns removed)."""
        rows = self._all(template("tsql/change_table_columns.sql"), (f"cdc.{capture_instance}_CT",))
        return [
            SourceColumn(name, type_name, max_length or 0, precision or 0, scale or 0, bool(nullable))
            for name, type_name, max_length, precision, scale, nullable in rows
            if name.lower() not in CDC_META_COLUMNS
        ]

    def first_change_after(self, capture_instance: str, after: bytes) -> bytes | None:
        """The first LSN in the change table after ``after``: the cheap 'is there work?' probe."""
        sql = (
            f"SELECT TOP (1) ct.[__$start_lsn] FROM cdc.{tsql_ident(capture_instance + '_CT')} AS ct "
            "WHERE ct.[__$start_lsn] > %s ORDER BY ct.[__$start_lsn]"
        )
        row = self._one(sql, (after,))
        return bytes(row[0]) if row else None

    def ddl_after(self, capture_instance: str, after: bytes) -> list[tuple[str, bytes, datetime]]:
        """DDL recorded in cdc.ddl_history for the instance's table after ``after``."""
        return [
            (command, bytes(ddl_lsn), ddl_time)
            for command, ddl_lsn, ddl_time in self._all(template("tsql/ddl_history.sql"), (capture_instance, after))
        ]

    def bounded_upper(self, after: bytes, max_transactions: int) -> bytes | None:
        row = self._one(template("tsql/bounded_upper_lsn.sql"), (max_transactions, after))
        return bytes(row[0]) if row and row[0] is not None else None

    def row_estimate(self, qualified_name: str) -> int | None:
        """The catalog's approximate row count of a table (``sys.partitions``); None when unknown."""
        row = self._one(template("tsql/row_estimate.sql"), (qualified_name,))
        return int(row[0]) if row and row[0] is not None else None

    def lsn_to_time(self, value: bytes) -> datetime | None:
        row = self._one(template("tsql/lsn_to_time.sql"), (value,))
        return row[0] if row else None

    def iter_changes(
        self,
        capture_instance: str,
        columns: Sequence[str],
        after: bytes,
        upper: bytes,
        chunk_rows: int,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Change rows with ``after < __$start_lsn <= upper``, in apply order, ``chunk_rows`` at a time.

        Direct mode (the change table joined to lsn_time_mapping for the commit time), like
        Debezium's default: one ordered scan of the change table's clustered index. Operation 3
        (update before-image) is not needed to apply changes and is skipped.
        Row shape: (start_lsn, seqval, operation, commit_time, *columns).
        """
        select = ", ".join(f"ct.{tsql_ident(c)}" for c in columns)
        sql = (
            "SELECT ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation], m.tran_end_time"
            + (f", {select}" if select else "")
            + f" FROM cdc.{tsql_ident(capture_instance + '_CT')} AS ct"
            " INNER JOIN cdc.lsn_time_mapping AS m ON m.start_lsn = ct.[__$start_lsn]"
            " WHERE ct.[__$start_lsn] > %s AND ct.[__$start_lsn] <= %s AND ct.[__$operation] <> 3"
            " ORDER BY ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation]"
        )
        yield from self._stream(sql, (after, upper), chunk_rows)

    def iter_snapshot(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        chunk_rows: int,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in key order, by keyset pages of ``chunk_rows``: no page needs a large
        sort or an open cursor for the whole table, and memory holds one page."""
        key_pos = [list(columns).index(k) for k in key]
        select = ", ".join(tsql_ident(c) for c in columns)
        order = ", ".join(tsql_ident(k) for k in key)
        source = f"{tsql_ident(schema)}.{tsql_ident(table)}"
        last: tuple[Any, ...] | None = None
        while True:
            if last is None:
                where, params = "", [chunk_rows]
            else:
                where, key_params = _keyset_predicate(key, last)
                where, params = f" WHERE {where}", [chunk_rows, *key_params]
            sql = f"SELECT TOP (%s) {select} FROM {source}{where} ORDER BY {order}"
            rows = self._all(sql, params)
            if not rows:
                return
            yield rows
            if len(rows) < chunk_rows:
                return
            last = tuple(rows[-1][p] for p in key_pos)

    def _stream(self, sql: str, params: Sequence[Any], chunk_rows: int) -> Iterator[list[tuple[Any, ...]]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, tuple(params))
            while True:
                rows = cursor.fetchmany(chunk_rows)
                if not rows:
                    return
                yield list(rows)
        finally:
            cursor.close()


def _keyset_predicate(key: Sequence[str], last: Sequence[Any]) -> tuple[str, list[Any]]:
    """``(k1 > a) OR (k1 = a AND k2 > b) …`` — row-value comparison spelled out, which SQL Server lacks."""
    ors, params = [], []
    for i in range(len(key)):
        terms = [f"{tsql_ident(key[j])} = %s" for j in range(i)] + [f"{tsql_ident(key[i])} > %s"]
        ors.append("(" + " AND ".join(terms) + ")")
        params.extend(list(last[: i + 1]))
    return " OR ".join(ors), params


def describe_lsn(value: bytes | None) -> str:
    return lsnlib.display(value)
