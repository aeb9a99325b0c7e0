"""The SQL Server side: the one home of the T-SQL the package sends.

``CdcSource`` holds every statement sent to SQL Server, each behind a named method: CDC metadata
(capture instances, captured columns, max LSN, DDL history, LSN/time mapping), the window's change
rows and the snapshot's keyset pages, and the lookups of the health checks and the preflight.
Static statements live as templates in ``include/sql/tsql``; the ones whose names vary are built
here with ``sql.tsql_ident``. Also ``enable_table_call``, the T-SQL a person runs to enable CDC on
a table (named in errors). Deciding what to read is ``planner``'s concern, converting rows
``extract``'s.

The reader speaks T-SQL through the mssql provider's ``MsSqlHook`` connection (pymssql over TDS),
in production and locally alike: the local SQL Server CDC emulator speaks TDS, so the same driver,
parameter formatting, type conversions and exceptions are exercised everywhere. The change rows of
a stream window may instead come as Arrow batches through Microsoft's mssql-python driver
(``iter_change_batches``, connected by ``change_reader_connect`` from the same Airflow connection):
the same statement, several times faster (README "Over TDS").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

import pyarrow as pa

from include.cdc_pipeline import native
from include.cdc_pipeline.config import TableConfig
from include.cdc_pipeline.lsn import Lsn
from include.cdc_pipeline.sql import template, tsql_ident, tsql_name, tsql_params, tsql_string
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


@dataclass(frozen=True)
class CaptureInstance:
    name: str
    start_lsn: Lsn
    source_schema: str
    source_table: str
    created: datetime | None = None  # cdc.change_tables.create_date
    object_id: int = 0  # the change table's object id (tie-break of equal create dates)


# Probes of ``first_changes_after`` per statement: a statement of 100 scalar subqueries compiles in
# milliseconds; thousands in one would make SQL Server's optimiser the slow part.
PROBES_PER_STATEMENT = 100


class CdcSource:
    """Reads CDC metadata and change rows over one DB-API connection (pymssql-compatible), and the
    change rows as Arrow over a second one when ``arrow_connect`` opens one (mssql-python)."""

    def __init__(self, connection: Any, arrow_connect: Callable[[], Any] | None = None) -> None:
        self.connection = connection
        self.arrow_connect = arrow_connect

    @property
    def reads_arrow(self) -> bool:
        return self.arrow_connect is not None

    def open_change_reader(self) -> Any:
        """The mssql-python connection of ``iter_change_batches`` (``DriverLoadError`` when its
        native driver cannot load: see ``mssql_python_connect``)."""
        if self.arrow_connect is None:
            raise RuntimeError("this CdcSource has no mssql-python connection (arrow_connect)")
        return self.arrow_connect()

    def _one(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        cursor = self.connection.cursor()
        try:
            cursor.execute(*_bound(sql, params))
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row
        finally:
            cursor.close()

    def _all(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(*_bound(sql, params))
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one ad-hoc read-only statement and return all rows (small results only): for tools,
        tests and benchmarks. The pipeline itself calls the named methods of this class."""
        return self._all(sql, params)

    def rollback(self) -> None:
        """End a transaction a failed optional lookup left open (pymssql keeps one), so the next
        statement on this connection runs; a connection with nothing to roll back is fine."""
        rollback = getattr(self.connection, "rollback", None)
        if rollback is None:
            return
        try:
            rollback()
        except Exception:  # nothing to roll back
            log.debug("rollback after a failed lookup failed", exc_info=True)

    def max_lsn(self) -> Lsn | None:
        """``sys.fn_cdc_get_max_lsn()``; None when nothing was ever captured."""
        row = self._one(template("tsql/max_lsn.sql"))
        return Lsn.from_bytes(row[0]) if row and row[0] is not None else None

    def capture_instances(self, schema: str, table: str) -> list[CaptureInstance]:
        """The table's capture instances (at most two), oldest first.

        Ordered by creation, not by start_lsn: the cleanup job raises every instance's start_lsn to
        the same low water mark, after which start_lsn no longer tells the newer instance."""
        return self.all_capture_instances().get((schema.lower(), table.lower()), [])

    def all_capture_instances(self) -> dict[tuple[str, str], list[CaptureInstance]]:
        """Every capture instance of the database in one query, by source (schema, table) in lower
        case, each table's oldest first (see ``capture_instances``)."""
        found: dict[tuple[str, str], list[CaptureInstance]] = {}
        for name, start, created, object_id, src_schema, src_table in self._all(template("tsql/capture_instances.sql")):
            instance = CaptureInstance(name, Lsn.from_bytes(start), src_schema, src_table, created, object_id or 0)
            found.setdefault(((src_schema or "").lower(), (src_table or "").lower()), []).append(instance)
        for instances in found.values():
            instances.sort(key=lambda ci: (ci.created or datetime.min, ci.start_lsn, ci.object_id))
        return found

    def change_table_columns(self, capture_instance: str) -> list[SourceColumn]:
        """Captured columns of an instance with their exact SQL Server types (CDC columns removed)."""
        rows = self._all(template("tsql/change_table_columns.sql"), (tsql_name("cdc", f"{capture_instance}_CT"),))
        return [
            SourceColumn(name, type_name, max_length or 0, precision or 0, scale or 0, bool(nullable), bool(computed))
            for name, type_name, max_length, precision, scale, nullable, computed in rows
            if name.lower() not in CDC_META_COLUMNS
        ]

    def nullable_columns(self, schema: str, table: str) -> set[str]:
        """Names (lower case) of the source table's nullable columns."""
        rows = self._all(template("tsql/nullable_columns.sql"), (tsql_name(schema, table),))
        return {name.lower() for (name,) in rows}

    def table_columns(self, schema: str, table: str) -> list[str]:
        """The source table's current column names (a captured column may have been dropped since)."""
        return [row[0] for row in self._all(template("tsql/table_columns.sql"), (tsql_name(schema, table),))]

    def first_change_after(self, capture_instance: str, after: Lsn) -> Lsn | None:
        """The first LSN in the change table after ``after``: the cheap 'is there work?' probe."""
        sql = (
            f"SELECT TOP (1) ct.[__$start_lsn] FROM cdc.{tsql_ident(capture_instance + '_CT')} AS ct "
            "WHERE ct.[__$start_lsn] > %s ORDER BY ct.[__$start_lsn]"
        )
        row = self._one(sql, (bytes(after),))
        return Lsn.from_bytes(row[0]) if row else None

    def first_changes_after(
        self, probes: Sequence[tuple[str, Lsn]], per_statement: int = PROBES_PER_STATEMENT
    ) -> dict[tuple[str, Lsn], Lsn | None]:
        """``first_change_after`` for many (capture instance, position) pairs in a few round trips.

        One statement per ``per_statement`` probes, a ``UNION ALL`` of one scalar subquery each:
        ``MIN(__$start_lsn)`` above the position. A change table's clustered index leads with
        ``__$start_lsn`` (README "Many tables"), so each probe is one index seek whatever the table's
        size, and a database with 1,000 capture instances costs ten statements, not 1,000 round
        trips. A group whose names pymssql cannot carry in one statement (``sql.tsql_params``) is
        probed one by one."""
        found: dict[tuple[str, Lsn], Lsn | None] = {}
        unique = list(dict.fromkeys((ci, after) for ci, after in probes))
        for start in range(0, len(unique), per_statement):
            group = unique[start : start + per_statement]
            branches = [
                "SELECT %s AS probe, (SELECT MIN(ct.[__$start_lsn]) FROM cdc."
                f"{tsql_ident(ci + '_CT')} AS ct WHERE ct.[__$start_lsn] > %s) AS first_lsn"
                for ci, _ in group
            ]
            params: list[Any] = [value for i, (_, after) in enumerate(group) for value in (i, bytes(after))]
            try:
                rows = self._all(" UNION ALL ".join(branches), params)
            except ValueError:  # quoted names holding both '%s' and '%(' (pymssql): one by one
                rows = [(i, self._first_lsn_bytes(ci, after)) for i, (ci, after) in enumerate(group)]
            for i, first in rows:
                found[group[int(i)]] = Lsn.from_bytes(first) if first is not None else None
        return found

    def _first_lsn_bytes(self, capture_instance: str, after: Lsn) -> bytes | None:
        first = self.first_change_after(capture_instance, after)
        return bytes(first) if first is not None else None

    def ddl_after(self, capture_instance: str, after: Lsn) -> list[tuple[str, Lsn, datetime]]:
        """DDL recorded in cdc.ddl_history for the instance's table after ``after``."""
        rows = self._all(template("tsql/ddl_history.sql"), (capture_instance, bytes(after)))
        return [(command, Lsn.from_bytes(ddl_lsn), ddl_time) for command, ddl_lsn, ddl_time in rows]

    def bounded_upper(self, after: Lsn, max_transactions: int) -> Lsn | None:
        """The LSN of the ``max_transactions``-th transaction after ``after`` (or the last one)."""
        row = self._one(template("tsql/bounded_upper_lsn.sql"), (max_transactions, bytes(after)))
        return Lsn.from_bytes(row[0]) if row and row[0] is not None else None

    def key_boundaries(self, schema: str, table: str, key: Sequence[SourceColumn], every: int) -> list[tuple[Any, ...]]:
        """Every ``every``-th key of the table in key order (the upper bounds of a snapshot's
        chunks), in one statement: one ordered pass over the primary key's index on SQL Server,
        the chunks' rows are not read. Ordered, like the chunks' range predicates, by SQL Server
        under the key's own collation."""
        keys = ", ".join(tsql_ident(k.name) for k in key)
        every = int(every)
        sql = (
            f"SELECT {keys} FROM (SELECT {keys}, ROW_NUMBER() OVER (ORDER BY {keys}) AS [__cdc_chunk_rn]"
            f" FROM {tsql_name(schema, table)}) AS k WHERE k.[__cdc_chunk_rn] % {every} = 0"
            " ORDER BY k.[__cdc_chunk_rn]"
        )
        return [tuple(row) for row in self._all(sql)]

    def row_estimate(self, qualified_name: str) -> int | None:
        """The catalog's approximate row count of a table (``sys.partitions``); None when unknown."""
        row = self._one(template("tsql/row_estimate.sql"), (qualified_name,))
        return int(row[0]) if row and row[0] is not None else None

    def lsn_to_time(self, value: Lsn) -> datetime | None:
        """``sys.fn_cdc_map_lsn_to_time``: the commit time (server clock) of an LSN."""
        row = self._one(template("tsql/lsn_to_time.sql"), (bytes(value),))
        return row[0] if row else None

    def table_rows(self, schema: str, table: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row of a source table, unordered (reconciliation of small tables; a snapshot reads
        by keyset pages instead: ``iter_snapshot``)."""
        select = ", ".join(tsql_ident(name) for name in columns)
        return self._all(f"SELECT {select} FROM {tsql_ident(schema)}.{tsql_ident(table)}")

    # -- health (health.py) -------------------------------------------------------------------
    def capture_health(self) -> tuple[Lsn | None, datetime | None, datetime]:
        """The capture job's position: max LSN, its commit time, and the server's clock."""
        row = self._all(template("tsql/capture_health.sql"))[0]
        return (Lsn.from_bytes(row[0]) if row[0] is not None else None), row[1], row[2]

    def last_write(self) -> datetime | None:
        """The last write to any user table (``sys.dm_db_index_usage_stats``; needs VIEW SERVER
        STATE, so this may raise: the caller decides what unknown means)."""
        found = self._all(template("tsql/source_activity.sql"))
        return found[0][0] if found else None

    def cleanup_retention_minutes(self) -> int | None:
        """The CDC cleanup job's retention (``msdb.dbo.cdc_jobs``); None when the database has no
        cleanup job. Raises when msdb is not readable."""
        rows = self._all(template("tsql/cdc_cleanup_retention.sql"))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def change_table_rows(self, capture_instance: str) -> int:
        """Rows in the instance's change table."""
        return int(self._all(f"SELECT COUNT(*) FROM {tsql_name('cdc', capture_instance + '_CT')}")[0][0])

    # -- preflight (preflight.py) -------------------------------------------------------------
    def server_identity(self) -> tuple[str, str, str]:
        """``(@@VERSION, database, login)`` of this connection."""
        version, database, login = self._all("SELECT @@VERSION, DB_NAME(), SUSER_SNAME()")[0]
        return str(version), database, login

    def database_cdc_enabled(self) -> bool:
        (enabled,) = self._all("SELECT is_cdc_enabled FROM sys.databases WHERE name = DB_NAME()")[0]
        return bool(enabled)

    def login_rights(self) -> tuple[int, int]:
        """``(IS_SRVROLEMEMBER('sysadmin'), HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT'))``."""
        sysadmin, cdc_schema = self._all(
            "SELECT IS_SRVROLEMEMBER('sysadmin'), HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')"
        )[0]
        return sysadmin, cdc_schema

    def object_id(self, quoted_name: str) -> int | None:
        """``OBJECT_ID`` of a quoted multi-part name (``tsql_name``); None when it does not exist."""
        (found,) = self._all("SELECT OBJECT_ID(%s)", (quoted_name,))[0]
        return None if found is None else int(found)

    def can_select(self, *quoted_names: str) -> list[bool]:
        """Whether this login may SELECT each object (``HAS_PERMS_BY_NAME``; quoted names as GRANT takes them)."""
        checks = ", ".join("HAS_PERMS_BY_NAME(%s, 'OBJECT', 'SELECT')" for _ in quoted_names)
        return [ok == 1 for ok in self._all(f"SELECT {checks}", quoted_names)[0]]

    # -- change rows --------------------------------------------------------------------------
    def iter_changes(
        self,
        capture_instance: str,
        columns: Sequence[str],
        after: Lsn,
        upper: Lsn,
        chunk_rows: int,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Change rows with ``after < __$start_lsn <= upper``, in apply order, ``chunk_rows`` at a time.

        Direct mode (the change table joined to lsn_time_mapping for the commit time), like
        Debezium's default: one ordered scan of the change table's clustered index.
        Apply order is ``(__$start_lsn, __$command_id, __$seqval, __$operation)``: Microsoft's
        documentation of the change table says not to order by ``__$seqval`` but by
        ``__$command_id`` (KB 3030352: an insert can precede the delete of the same row in seqval
        order), and Debezium orders the same way. Operation 3 (update before-image) is read too:
        its key tells whether an update pair moved the row to another key. The join is an outer
        one: a change whose transaction has no lsn_time_mapping row still loads, with a NULL
        commit time (the pipeline fills it in afterwards), instead of vanishing.
        Row shape: (start_lsn, seqval, operation, commit_time, command_id, *columns).
        """
        sql = _changes_sql(capture_instance, columns, "%s", "%s")
        yield from self._stream(sql, (bytes(after), bytes(upper)), chunk_rows)

    def iter_change_batches(
        self,
        capture_instance: str,
        columns: Sequence[str],
        after: Lsn,
        upper: Lsn,
        chunk_rows: int,
        connection: Any = None,
    ) -> Iterator[pa.RecordBatch]:
        """The rows of ``iter_changes`` (same statement, same order) as Arrow record batches of up
        to ``chunk_rows``, over a connection of their own (mssql-python): ``connection`` when the
        caller opened it already (``open_change_reader``), closed at the end. The two LSNs are
        written into the statement as binary literals, as pymssql sends them: no parameter marker,
        so a ``?`` in a quoted column name stays a character."""
        sql = _changes_sql(capture_instance, columns, f"0x{bytes(after).hex()}", f"0x{bytes(upper).hex()}")
        connection = connection or self.open_change_reader()
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            while True:
                batch: pa.RecordBatch = cursor.arrow_batch(chunk_rows)
                if not batch.num_rows:
                    return
                yield batch
        finally:
            connection.close()

    def iter_snapshot(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        key: Sequence[SourceColumn],
        chunk_rows: int,
        after: Sequence[Any] | None = None,
        through: Sequence[Any] | None = None,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in key order, by keyset pages of ``chunk_rows``: no page needs a large
        sort or an open cursor for the whole table, and memory holds one page. ``after`` and
        ``through`` bound the key range (exclusive / inclusive; a snapshot chunk's range).

        Each page starts after the previous page's last key, compared in the key's own type:
        pymssql inlines a ``str`` as ``N'…'`` and a ``datetime`` with milliseconds, so without the
        CAST a ``varchar`` key would be compared with Unicode rules while ``ORDER BY`` uses the
        collation's code-page order (rows skipped), and a ``datetime2`` key would be cut to
        milliseconds (rows read twice)."""
        names = [c.lower() for c in columns]
        key_pos = [names.index(k.name.lower()) for k in key]
        select = ", ".join(tsql_ident(c) for c in columns)
        order = ", ".join(tsql_ident(k.name) for k in key)
        source = tsql_name(schema, table)
        last: tuple[Any, ...] | None = tuple(after) if after is not None else None
        upto, upto_params = _keyset_upto(key, through) if through is not None else ("", [])
        while True:
            terms, params = [], [chunk_rows]
            if last is not None:
                where, key_params = _keyset_predicate(key, last)
                terms.append(f"({where})")
                params += key_params
            if upto:
                terms.append(f"({upto})")
                params += upto_params
            where = f" WHERE {' AND '.join(terms)}" if terms else ""
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
            cursor.execute(*_bound(sql, params))
            while True:
                rows = cursor.fetchmany(chunk_rows)
                if not rows:
                    return
                yield list(rows)
        finally:
            cursor.close()


def _changes_sql(capture_instance: str, columns: Sequence[str], after: str, upper: str) -> str:
    """The window's change rows in apply order (see ``CdcSource.iter_changes``); ``after`` and
    ``upper`` are the placeholders or literals of the two LSNs."""
    select = ", ".join(f"ct.{tsql_ident(c)}" for c in columns)
    return (
        "SELECT ct.[__$start_lsn], ct.[__$seqval], ct.[__$operation], m.tran_end_time, ct.[__$command_id]"
        + (f", {select}" if select else "")
        + f" FROM cdc.{tsql_ident(capture_instance + '_CT')} AS ct"
        " LEFT JOIN cdc.lsn_time_mapping AS m ON m.start_lsn = ct.[__$start_lsn]"
        f" WHERE ct.[__$start_lsn] > {after} AND ct.[__$start_lsn] <= {upper}"
        " ORDER BY ct.[__$start_lsn], ct.[__$command_id], ct.[__$seqval], ct.[__$operation]"
    )


# pymssql's ``encryption`` (FreeTDS: off / request, its default / require) as ODBC Driver 18
# keywords with the same effect: FreeTDS never validates the server's certificate unless told to,
# so neither does this (a deployment that wants validation sets TrustServerCertificate: 'no' in
# the source's change_reader_options).
_ENCRYPTION = {
    "off": {"Encrypt": "no"},
    "request": {"Encrypt": "no", "TrustServerCertificate": "yes"},
    "require": {"Encrypt": "yes", "TrustServerCertificate": "yes"},
}


def odbc_connection_string(
    host: str,
    port: int | None,
    database: str,
    login: str,
    password: str,
    encryption: str | None = None,
    options: Mapping[str, str] | None = None,
) -> str:
    """The ODBC connection string of an mssql connection's fields (mssql-python takes ODBC's)."""
    if (encryption or "request") not in _ENCRYPTION:
        raise ValueError(f"mssql connection extra encryption={encryption!r}: expected one of {sorted(_ENCRYPTION)}")
    keywords = {
        "Server": f"tcp:{host},{port or 1433}",
        "Database": database,
        "UID": login,
        "PWD": password,
        **_ENCRYPTION[encryption or "request"],
        **(options or {}),
    }
    return ";".join(f"{name}={_odbc_value(str(value))}" for name, value in keywords.items() if value)


def _odbc_value(value: str) -> str:
    """An ODBC attribute value: braced (with ``}`` doubled) when it holds ``;``, braces, ``=`` or
    blanks at either end, as the ODBC connection-string grammar requires."""
    if any(c in value for c in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


def mssql_python_connect(connection_string: str) -> Any:
    """An mssql-python connection (imported here: the driver loads its native library on import).

    Without the driver's connection pool: each window reads over one connection of its own, and a
    pooled connection outlives ``close()`` until the interpreter exits, where the pool's clean-up
    aborts the process (exit status 134) when the server already closed the socket.

    A driver that cannot load raises ``DriverLoadError`` naming the missing OS library (``native``):
    no retry fixes that, and ``change_reader: auto`` reads with pymssql instead."""
    try:
        import mssql_python

        mssql_python.pooling(enabled=False)
        return mssql_python.connect(connection_string)
    except Exception as exc:
        if native.is_driver_load_failure(exc):
            raise native.driver_load_error(exc) from exc
        raise


def change_reader_connect(hook: Any, options: Mapping[str, str] | None = None) -> Any:
    """The mssql-python connection of the change-table read, from an ``MsSqlHook``'s own
    connection (host, port, database, login, password, extra ``encryption``) and ``options``."""
    conn = hook.connection
    text = odbc_connection_string(
        conn.host or "",
        conn.port,
        hook.schema or conn.schema or "",
        conn.login or "",
        conn.password or "",
        conn.extra_dejson.get("encryption"),
        options,
    )
    return mssql_python_connect(text)


def _bound(sql: str, params: Sequence[Any] | None) -> tuple[Any, ...]:
    """Arguments of ``cursor.execute`` (see ``sql.tsql_params``). Without parameters the statement
    goes alone: pymssql substitutes even an explicit ``None`` (``[x%sy]`` would become ``xNULLy``)."""
    return tsql_params(sql, params) if params else (sql,)


def _keyset_predicate(key: Sequence[SourceColumn], last: Sequence[Any]) -> tuple[str, list[Any]]:
    """``(k1 > a) OR (k1 = a AND k2 > b) …`` — row-value comparison spelled out, which SQL Server
    lacks; every value is cast to its column's exact type (see ``iter_snapshot``)."""
    ors, params = [], []
    values = [_key_param(k, v) for k, v in zip(key, last, strict=True)]
    for i in range(len(key)):
        terms = [f"{tsql_ident(key[j].name)} = {_typed(key[j])}" for j in range(i)]
        terms.append(f"{tsql_ident(key[i].name)} > {_typed(key[i])}")
        ors.append("(" + " AND ".join(terms) + ")")
        params.extend(values[: i + 1])
    return " OR ".join(ors), params


def _keyset_upto(key: Sequence[SourceColumn], bound: Sequence[Any]) -> tuple[str, list[Any]]:
    """``key <= bound`` spelled out like ``_keyset_predicate``: ``(k1 < a) OR (k1 = a AND k2 < b)
    … OR (k1 = a AND … AND kn = z)``, every value cast to its column's type."""
    ors, params = [], []
    values = [_key_param(k, v) for k, v in zip(key, bound, strict=True)]
    for i in range(len(key) + 1):
        terms = [f"{tsql_ident(key[j].name)} = {_typed(key[j])}" for j in range(min(i, len(key)))]
        if i < len(key):
            terms.append(f"{tsql_ident(key[i].name)} < {_typed(key[i])}")
        ors.append("(" + " AND ".join(terms) + ")")
        params.extend(values[: i + 1] if i < len(key) else values)
    return " OR ".join(ors), params


_SIZED = {"char", "varchar", "binary", "varbinary"}
_NSIZED = {"nchar", "nvarchar"}
_SCALED = {"datetime2", "time", "datetimeoffset"}


def tsql_type(column: SourceColumn) -> str:
    """The column's exact T-SQL type from sys.columns (max_length in bytes, -1 for max)."""
    kind = column.type_name.lower()
    if kind in _SIZED or kind in _NSIZED:
        if column.max_length in (-1, 0):
            return f"{kind}(max)"
        return f"{kind}({column.max_length // 2 if kind in _NSIZED else column.max_length})"
    if kind in ("decimal", "numeric"):
        return f"{kind}({column.precision},{column.scale})"
    if kind in _SCALED:
        return f"{kind}({column.scale})"
    return kind


def _typed(column: SourceColumn) -> str:
    return f"CAST(%s AS {tsql_type(column)})"


def _key_param(column: SourceColumn, value: Any) -> Any:
    """A key value as a parameter that keeps its full precision once pymssql has inlined it."""
    if isinstance(value, datetime):
        # pymssql would send milliseconds only; ISO 8601 text converts exactly to every date type.
        digits = "milliseconds" if column.type_name.lower() in ("datetime", "smalldatetime") else "microseconds"
        return value.isoformat(sep="T", timespec=digits)
    if isinstance(value, time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def enable_table_call(table: TableConfig) -> str:
    """The exact T-SQL that enables CDC on a configured table (named in errors and by the preflight)."""
    call = (
        f"EXEC sys.sp_cdc_enable_table @source_schema = {tsql_string(table.source_schema)}, "
        f"@source_name = {tsql_string(table.table)}, @role_name = NULL, @supports_net_changes = 0"
    )
    return call + (f", @capture_instance = {tsql_string(table.capture_instance)}" if table.capture_instance else "")
