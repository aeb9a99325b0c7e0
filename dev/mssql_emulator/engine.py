"""The emulated database (:class:`Engine`) and its client sessions (:class:`Session`).

One Engine owns one DuckDB database. Each Session is one client connection with its own DuckDB
connection, hence its own transaction scope (DuckDB MVCC). How SQL Server's CDC is reproduced:

* DML on a table with capture instances writes, in the same DuckDB transaction, one row per
  change into ``emu."pending_<ci>"`` with a ``__$seqval`` drawn from the global LSN counter. A
  rollback discards them with the data: rolled-back work is never captured.
* COMMIT takes the engine's commit lock, draws the commit LSN and records the transaction in
  ``emu.commits`` before the DuckDB COMMIT, so commit-LSN order is commit order.
* The capture job (:meth:`Engine.capture`, ``EXEC sys.sp_cdc_scan``, or the server's background
  thread) moves committed pending rows into ``cdc.<ci>_CT`` with ``__$start_lsn`` = commit LSN
  and writes ``cdc.lsn_time_mapping``: changes become visible asynchronously, as in SQL Server.

Reads run outside any DuckDB transaction until the session first writes, so a pymssql client in
implicit-transaction mode still sees newly committed data on every SELECT (READ COMMITTED).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from . import bulk, catalog, cdc, ddl, dml, errors, merge, procs, security, storage
from .catalog import OBJECT_ID_BASE, OBJECT_ID_STEP, TableInfo
from .clock import Clock
from .coltypes import annotate as annotate_types
from .dbapi import Connection
from .duckdb_cursor import settle
from .lsn import INITIAL_LSN_INT, int_to_lsn, lsn_to_int
from .results import Column, Result, column_name
from .translate import (
    RawStatement,
    TranslateContext,
    bind_params,
    duck_datatype,
    mark_source_forms,
    parse_statement,
    split_batch,
    split_if,
    sqltype_from_datatype,
    to_duckdb,
    transform,
)

log = logging.getLogger(__name__)

STREAM_BATCH_ROWS = 16384
DEFAULT_RETENTION_MINUTES = 4320


class Engine:
    """One emulated SQL Server database stored in a DuckDB file (or in memory)."""

    def __init__(
        self,
        database: str = ":memory:",
        *,
        db_name: str | None = None,
        capture_interval: float = 0.0,
        maxtrans: int = 500,
        maxscans: int = 10,
        threads: int | None = None,
    ) -> None:
        self.path = database or ":memory:"
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        self.db = duckdb.connect(self.path, config=config)
        self.clock = Clock()
        self.commit_lock = threading.RLock()  # commit order == commit LSN order
        self.ddl_lock = threading.RLock()  # CDC procedures, capture and cleanup run one at a time
        self._lsn_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._table_cache: dict[tuple[str, str], tuple[int, TableInfo | None]] = {}
        self.catalog_version = 0
        self._cdc_flag: bool | None = None
        self._db_name: str | None = None
        self._spids = itertools.count(51)
        self.maxtrans = maxtrans
        self.maxscans = maxscans
        self.retention_minutes = DEFAULT_RETENTION_MINUTES
        self.sessions: set[Session] = set()
        self.trace_flags: set[int] = set()  # DBCC TRACEON (n, -1): global trace flags (8207 is modelled)
        self._closed = False
        self._bootstrap(db_name)
        self._capture_cur = self.cursor()
        self._capture_thread: threading.Thread | None = None
        self._capture_stop = threading.Event()
        self.capture_interval = 0.0
        self.capture_errors = 0
        if capture_interval > 0:
            self.start_capture_job(capture_interval)

    # -- setup ---------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection to this database (its own transaction scope)."""
        cur = self.db.cursor()
        cur.execute("SET search_path = 'dbo,main'")
        return cur

    def _bootstrap(self, db_name: str | None) -> None:
        cur = self.db.cursor()
        cur.execute(catalog.BOOTSTRAP_TABLES)
        cur.execute(catalog.BOOTSTRAP_VIEWS)
        cur.execute(catalog.BOOTSTRAP_MACROS)
        storage.upgrade_datetimeoffset(cur)
        security.bootstrap(cur)
        if cur.execute("SELECT count(*) FROM emu.schemas").fetchone()[0] == 0:
            cur.executemany("INSERT INTO emu.schemas VALUES (?, ?)", catalog.DEFAULT_SCHEMAS)
        state = dict(cur.execute("SELECT key, value FROM emu.state").fetchall())
        if "db_name" not in state:
            name = db_name or (
                "master" if self.path == ":memory:" else os.path.splitext(os.path.basename(self.path))[0]
            )
            cur.execute("INSERT INTO emu.state VALUES ('db_name', ?)", [name])
        elif db_name and state["db_name"] != db_name:
            cur.execute("UPDATE emu.state SET value = ? WHERE key = 'db_name'", [db_name])
        # Resume the LSN and transaction counters above anything stored (restart of a file DB).
        highest = INITIAL_LSN_INT
        for sql in (
            "SELECT max(commit_lsn) FROM emu.commits",
            "SELECT max(start_lsn) FROM cdc.lsn_time_mapping",
            "SELECT max(start_lsn) FROM cdc.change_tables",
            "SELECT max(ddl_lsn) FROM cdc.ddl_history",
            "SELECT max(ddl_lsn) FROM emu.pending_ddl",
            "SELECT max(value) FROM emu.state WHERE key = 'lsn_high_water'",
        ):
            value = cur.execute(sql).fetchone()[0]
            if value is not None:
                raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
                highest = max(highest, lsn_to_int(raw) + 1)
        self._next_lsn = highest
        tran = cur.execute("SELECT max(tran_id) FROM emu.commits").fetchone()[0] or 0
        mapped = cur.execute("SELECT max(sys.lsn_to_int(tran_id)) FROM cdc.lsn_time_mapping").fetchone()[0] or 0
        self._next_tran = max(int(tran), int(mapped)) + 1
        cur.close()

    # -- counters ------------------------------------------------------------------------
    def alloc_lsns(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive LSNs; returns the first as an integer."""
        with self._lsn_lock:
            first = self._next_lsn
            self._next_lsn += count
            return first

    def alloc_lsn(self) -> bytes:
        return int_to_lsn(self.alloc_lsns(1))

    def current_lsn_int(self) -> int:
        """The highest LSN handed out so far."""
        with self._lsn_lock:
            return self._next_lsn - 1

    def alloc_tran_id(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive transaction ids; returns the first."""
        with self._lsn_lock:
            value = self._next_tran
            self._next_tran += count
            return value

    def bulk_apply(self, **kwargs: Any) -> dict[str, Any]:
        """The workload generator's fast path (see :mod:`dev.mssql_emulator.bulk`)."""
        return bulk.bulk_apply(self, **kwargs)

    def next_spid(self) -> int:
        return next(self._spids)

    def new_object_id(self, cur: duckdb.DuckDBPyConnection) -> int:
        n = cur.execute("SELECT nextval('emu.object_id_seq')").fetchone()[0]
        return (OBJECT_ID_BASE + int(n) * OBJECT_ID_STEP) % 2147483647

    # -- catalog cache -------------------------------------------------------------------
    def catalog_changed(self) -> None:
        with self._cache_lock:
            self.catalog_version += 1
            self._table_cache.clear()
            self._cdc_flag = None

    def table_info(self, session: Session, schema: str, name: str) -> TableInfo | None:
        """Metadata of a user table as ``session`` sees it (cached for committed catalogs)."""
        if session.has_ddl or (session.in_duck_tx and session.tx_catalog_version != self.catalog_version):
            return catalog.load_table(session.cur, schema, name)
        key = (schema.lower(), name.lower())
        version = self.catalog_version
        hit = self._table_cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        info = catalog.load_table(session.cur, schema, name)
        with self._cache_lock:
            if self.catalog_version == version:
                self._table_cache[key] = (version, info)
        return info

    def db_name(self) -> str:
        if self._db_name is None:
            row = self.db.cursor().execute("SELECT value FROM emu.state WHERE key = 'db_name'").fetchone()
            self._db_name = row[0] if row else "master"
        return self._db_name

    def cdc_enabled(self, cur: duckdb.DuckDBPyConnection | None = None) -> bool:
        """Whether ``sp_cdc_enable_db`` ran (cached; CDC procedures reset the cache)."""
        flag = self._cdc_flag
        if flag is None:
            row = (cur or self.db.cursor()).execute("SELECT value FROM emu.state WHERE key = 'cdc_enabled'").fetchone()
            flag = bool(row and row[0] == "1")
            self._cdc_flag = flag
        return flag

    # -- sessions ------------------------------------------------------------------------
    def session(self, *, autocommit: bool = False, login: str | None = None) -> Session:
        s = Session(self, autocommit=autocommit, login=login)
        self.sessions.add(s)
        return s

    def connect(self, *, autocommit: bool = False, as_dict: bool = False, login: str | None = None) -> Any:
        """A DB-API connection (pymssql-like) to this engine, as ``login`` (default ``sa``)."""
        return Connection(self.session(autocommit=autocommit, login=login), as_dict=as_dict, autocommit=autocommit)

    # -- capture job ---------------------------------------------------------------------
    def capture(self, maxtrans: int | None = None, maxscans: int | None = None, *, idle_rows: bool = True) -> int:
        """Run the capture job once: up to ``maxscans`` scans of ``maxtrans`` transactions each
        (``maxscans=None``: until caught up). Returns the number of transactions captured."""
        maxtrans = maxtrans or self.maxtrans
        total = 0
        scans = 0
        with self.ddl_lock:
            while maxscans is None or scans < maxscans:
                done = cdc.scan_once(self, self._capture_cur, maxtrans, idle_rows=idle_rows)
                total += done
                scans += 1
                if done < maxtrans:
                    break
        return total

    def capture_all(self, *, idle_rows: bool = True) -> int:
        """Capture everything committed so far (tests and the bulk loader)."""
        return self.capture(maxtrans=100000, maxscans=None, idle_rows=idle_rows)

    def start_capture_job(self, interval: float) -> None:
        """Background capture every ``interval`` seconds, like SQL Server Agent's capture job."""
        self.stop_capture_job()
        self.capture_interval = interval
        self._capture_stop.clear()

        def loop() -> None:
            while not self._capture_stop.wait(self.capture_interval):
                try:
                    self.capture(self.maxtrans, self.maxscans)
                except Exception:
                    self.capture_errors += 1
                    log.exception("capture job scan failed")

        self._capture_thread = threading.Thread(target=loop, name="cdc-capture", daemon=True)
        self._capture_thread.start()

    def stop_capture_job(self) -> None:
        if self._capture_thread is not None:
            self._capture_stop.set()
            self._capture_thread.join(timeout=30)
            self._capture_thread = None
        self.capture_interval = 0.0

    def run_cleanup_job(self, retention_minutes: int | None = None) -> dict[str, Any]:
        with self.ddl_lock:
            return cdc.cleanup_job(self, retention_minutes or self.retention_minutes)

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_capture_job()
        for s in list(self.sessions):
            s.close()
        try:
            cur = self.db.cursor()
            cur.execute(
                "DELETE FROM emu.state WHERE key = 'lsn_high_water'; "
                "INSERT INTO emu.state VALUES ('lsn_high_water', ?)",
                [int_to_lsn(self.current_lsn_int()).hex()],
            )
            if self.path != ":memory:":
                cur.execute("CHECKPOINT")
        except duckdb.Error:
            log.exception("could not persist the LSN high-water mark")
        self.db.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- statements a session runs -------------------------------------------------------------------
_IMPLICIT_TRAN_STATEMENTS = (
    exp.Query,
    exp.Merge,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Create,
    exp.Alter,
    exp.Drop,
    exp.TruncateTable,
)
_IGNORED_SETTINGS = {
    "NOCOUNT",
    "ANSI_NULLS",
    "ANSI_PADDING",
    "ANSI_WARNINGS",
    "ARITHABORT",
    "QUOTED_IDENTIFIER",
    "CONCAT_NULL_YIELDS_NULL",
    "LOCK_TIMEOUT",
    "DEADLOCK_PRIORITY",
    "TEXTSIZE",
    "DATEFORMAT",
    "DATEFIRST",
    "LANGUAGE",
    "ROWCOUNT",
    "NUMERIC_ROUNDABORT",
    "ANSI_NULL_DFLT_ON",
    "CURSOR_CLOSE_ON_COMMIT",
    "STATISTICS",
    "NOEXEC",
    "FMTONLY",
}


class Session:
    """One client connection: transaction state (``@@TRANCOUNT``), variables, a DuckDB cursor."""

    def __init__(self, engine: Engine, *, autocommit: bool = False, login: str | None = None) -> None:
        self.engine = engine
        self.login = login or security.DEFAULT_LOGIN  # no login: the emulator's historical ``sa``
        self.cur = engine.cursor()
        self.spid = engine.next_spid()
        self.implicit_transactions = not autocommit
        self.xact_abort = False  # SET XACT_ABORT: see terminate_statement
        self.trancount = 0
        self.in_duck_tx = False
        self.tx_catalog_version = -1
        self.has_ddl = False
        self.tran_id: int | None = None
        self.tran_begin_time: datetime | None = None
        self.tran_begin_lsn: bytes | None = None
        self.has_changes = False
        self.has_cdc_ddl = False
        self.command_seq = 0
        self.variables: dict[str, Any] = {}
        self.rowcount = 0
        self._stream: Result | None = None
        self._lock = threading.RLock()
        self.closed = False

    # -- public API ----------------------------------------------------------------------
    def execute(self, sql: str, params: Any = None) -> list[Result]:
        """Run a batch; returns one Result per statement (the last may stream)."""
        with self._lock:
            self._check_open()
            self.close_stream()
            text = bind_params(sql, params)
            statements = split_batch(text)
            results: list[Result] = []
            try:
                for index, raw in enumerate(statements):
                    last = index == len(statements) - 1
                    for result in (
                        self._run_if(raw, stream=last) if raw.first_word == "IF" else [self._run(raw, stream=last)]
                    ):
                        if result is not None:
                            results.append(result)
                            if result.has_rows and last:
                                self._stream = result
            except errors.SqlServerError:
                # Outside a transaction the failed statement was its own: nothing of it stays, and
                # the session's next read must not run in its DuckDB snapshot.
                if self.trancount == 0:
                    self._rollback_duck()
                raise
            return results

    def commit(self) -> None:
        """DB-API commit (pymssql: ``IF @@TRANCOUNT > 0 COMMIT TRAN``)."""
        with self._lock:
            self._check_open()
            self.close_stream()
            if self.trancount > 0 or self.in_duck_tx:
                self.trancount = 0
                self._commit_duck()

    def rollback(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.close_stream()
            self.trancount = 0
            self._rollback_duck()

    def set_autocommit(self, status: bool) -> None:
        with self._lock:
            self.implicit_transactions = not status

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                self.rollback()
            finally:
                self.closed = True
                self.engine.sessions.discard(self)
                with contextlib.suppress(duckdb.Error):
                    self.cur.close()

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.dispose()
            self._stream = None

    def _check_open(self) -> None:
        if self.closed:
            raise errors.SqlServerError(0, "Connection is closed.")

    # -- transaction plumbing ------------------------------------------------------------
    def begin_write(self) -> None:
        """Open the DuckDB transaction lazily, at the first write."""
        if not self.in_duck_tx:
            self.cur.execute("BEGIN TRANSACTION")
            self.in_duck_tx = True
            self.tx_catalog_version = self.engine.catalog_version

    def ensure_tran_id(self) -> int:
        """The CDC transaction identity, allocated at the first change to a tracked table."""
        if self.tran_id is None:
            self.tran_id = self.engine.alloc_tran_id()
            self.tran_begin_time = self.engine.clock.now()
            self.tran_begin_lsn = self.engine.alloc_lsn()
        return self.tran_id

    def _reset_tx_state(self) -> None:
        had_ddl = self.has_ddl
        self.in_duck_tx = False
        self.has_ddl = False
        self.tran_id = None
        self.tran_begin_time = None
        self.tran_begin_lsn = None
        self.has_changes = False
        self.has_cdc_ddl = False
        self.command_seq = 0
        if had_ddl:
            self.engine.catalog_changed()

    def _commit_duck(self) -> None:
        if not self.in_duck_tx:
            return
        try:
            if self.tran_id is not None and (self.has_changes or self.has_cdc_ddl):
                with self.engine.commit_lock:
                    commit_lsn = self.engine.alloc_lsn()
                    self.cur.execute(
                        "INSERT INTO emu.commits VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            self.tran_id,
                            commit_lsn,
                            self.tran_begin_lsn,
                            self.tran_begin_time,
                            self.engine.clock.now(),
                            self.has_changes,
                        ],
                    )
                    self.cur.execute("COMMIT")
            else:
                self.engine.alloc_lsns(1)  # the commit record still advances the log
                self.cur.execute("COMMIT")
        except duckdb.Error as exc:
            self._rollback_duck()
            raise errors.from_duckdb(exc, spid=self.spid) from exc
        finally:
            if self.in_duck_tx:
                self._reset_tx_state()

    def _rollback_duck(self) -> None:
        if self.in_duck_tx:
            with contextlib.suppress(duckdb.Error):
                self.cur.execute("ROLLBACK")
            self._reset_tx_state()

    def _end_statement(self) -> None:
        if self.trancount == 0 and self.in_duck_tx:
            self._commit_duck()

    def _fail_statement(self) -> None:
        """A DuckDB error inside a write transaction aborts it (like SET XACT_ABORT ON)."""
        if self.in_duck_tx:
            self._rollback_duck()
            self.trancount = 0

    def terminate_statement(self) -> None:
        """A run-time error the emulator finds before its statement writes anything (a duplicate
        key): with SET XACT_ABORT OFF, the default, only the statement ends and the transaction goes
        on; with XACT_ABORT ON the whole transaction is rolled back ("SET XACT_ABORT
        (Transact-SQL)", learn.microsoft.com/sql/t-sql/statements/set-xact-abort-transact-sql).
        Outside a transaction :meth:`execute` rolls the statement's DuckDB transaction back."""
        if self.xact_abort:
            self._fail_statement()

    # -- translation helpers ---------------------------------------------------------------
    def context(self, *, dynamic_time: bool = False) -> TranslateContext:
        return TranslateContext(
            now=self.engine.clock.now,
            cdc_enabled=self._cdc_enabled(),
            db_name=self.engine.db_name(),
            variables=self.variables,
            session_values={
                "TRANCOUNT": self.trancount,
                "SPID": self.spid,
                "ROWCOUNT": self.rowcount,
                "VERSION": "Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) (emulated by dev.mssql_emulator)",
                "SERVERNAME": "mssql-emulator",
                "ERROR": 0,
            },
            expand_cdc_function=lambda low, name, args, alias: cdc.expand_function(self, low, name, args, alias),
            login=self.login,
            security_function=lambda name, args: security.call(self, name, args),
            dynamic_time=dynamic_time,
            column_types=self._column_types,
        )

    def _column_types(self, schema: str | None, name: str) -> dict[str, str] | None:
        """SQL Server type names of a user table's columns (for the collation model)."""
        info = self.engine.table_info(self, schema or "dbo", name)
        return None if info is None else {c.name.lower(): c.type.name for c in info.columns}

    def _cdc_enabled(self) -> bool:
        if self.has_ddl:  # this transaction may have run sp_cdc_enable_db: ask its own snapshot
            rows = self.cur.execute("SELECT value FROM emu.state WHERE key = 'cdc_enabled'").fetchall()
            return bool(rows and rows[0][0] == "1")
        return self.engine.cdc_enabled()

    def translate(self, node: exp.Expression, *, dynamic_time: bool = False) -> str:
        return to_duckdb(transform(node, self.context(dynamic_time=dynamic_time)))

    def eval_scalar(self, node: exp.Expression) -> Any:
        """Evaluate one expression (variables, EXEC arguments, TVF arguments) through DuckDB."""
        sql = "SELECT " + to_duckdb(transform(node, self.context(), top_level=False))
        try:
            row = self.cur.execute(sql).fetchone()
        except duckdb.Error as exc:
            self._fail_statement()
            raise errors.from_duckdb(exc, spid=self.spid) from exc
        return row[0] if row else None

    def run_duck(
        self,
        sql: str,
        params: list[Any] | None = None,
        *,
        table: TableInfo | None = None,
        names: dict[str, str] | None = None,
    ) -> duckdb.DuckDBPyConnection:
        try:
            return self.cur.execute(sql, params) if params is not None else self.cur.execute(sql)
        except duckdb.Error as exc:
            self._fail_statement()
            raise errors.from_duckdb(
                exc,
                table=table.display if table else None,
                pk_name=table.pk_name if table else None,
                names=names,
                spid=self.spid,
            ) from exc

    # -- dispatch ------------------------------------------------------------------------
    def _run(self, raw: RawStatement, *, stream: bool) -> Result | None:
        word = raw.first_word
        if word in ("EXEC", "EXECUTE"):
            result = procs.execute(self, raw)
            self._end_statement()
            return result
        if word == "SAVE":
            return None  # savepoints: accepted, not emulated (see docs/emulator.md)
        if word == "DBCC":
            return self._dbcc(raw)
        if security.handles([t.text for t in raw.tokens[:3]]):
            if self.implicit_transactions and self.trancount == 0:
                self.trancount = 1
            security.execute(self, raw.text)
            self._end_statement()
            return None
        if word == "CREATE" and len(raw.tokens) > 1 and raw.tokens[1].text.upper() == "TABLE":
            # parsed from tokens (keeps exact type names; sqlglot rejects some valid column options)
            if self.implicit_transactions and self.trancount == 0:
                self.trancount = 1
            result = ddl.create_table(self, raw)
            self._end_statement()
            return result
        node = parse_statement(raw)
        if self.implicit_transactions and self.trancount == 0 and isinstance(node, _IMPLICIT_TRAN_STATEMENTS):
            self.trancount = 1
        if isinstance(node, exp.Transaction):
            if self.implicit_transactions and self.trancount == 0:
                self.trancount = 1
            self.trancount += 1
            return None
        if isinstance(node, exp.Commit):
            if self.trancount == 0:
                raise errors.SqlServerError(
                    3902, "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION."
                )
            self.trancount -= 1
            if self.trancount == 0:
                self._commit_duck()
            return None
        if isinstance(node, exp.Rollback):
            if self.trancount == 0:
                raise errors.SqlServerError(
                    3903, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION."
                )
            self.trancount = 0
            self._rollback_duck()
            return None
        if isinstance(node, exp.Set):
            self._set(node)
            return None
        if isinstance(node, exp.Declare):
            self._declare(node)
            return None
        if isinstance(node, exp.Use):
            return None
        try:
            if isinstance(node, exp.Query):
                return self._select(node, stream=stream)
            if isinstance(node, (exp.Insert, exp.Update, exp.Delete)):
                result = dml.execute(self, node)
            elif isinstance(node, exp.Merge):
                result = merge.execute(self, node)
            elif isinstance(node, (exp.Create, exp.Alter, exp.Drop, exp.TruncateTable)):
                result = ddl.execute(self, node, raw)
            else:
                raise errors.SqlServerError(
                    102, f"Incorrect syntax near '{raw.first_word}'. (statement not supported by the emulator)", 15
                )
        except errors.SqlServerError:
            raise
        self.rowcount = result.rowcount if result is not None else 0
        self._end_statement()
        return result

    def _run_if(self, raw: RawStatement, *, stream: bool) -> list[Result | None]:
        """``IF <condition> <statement or BEGIN … END> [ELSE …]``: the condition is evaluated as a
        query (``EXISTS (…)``, comparisons, variables), then the chosen branch's statements run."""
        parts = split_if(raw)
        text = f"SELECT CASE WHEN {parts.condition} THEN 1 ELSE 0 END"
        try:
            condition = sqlglot.parse_one(text, read="tsql")
        except sqlglot.errors.ParseError as exc:
            raise errors.syntax_error("IF") from exc
        sql = self.translate(mark_source_forms(condition, text))
        settle(self.cur)
        holds = self.run_duck(sql).fetchone()[0] == 1
        branch = parts.then if holds else parts.otherwise
        statements = split_batch(branch) if branch else []
        results: list[Result | None] = []
        for index, inner in enumerate(statements):
            last = stream and index == len(statements) - 1
            if inner.first_word == "IF":
                results.extend(self._run_if(inner, stream=last))
            else:
                results.append(self._run(inner, stream=last))
        return results

    def _dbcc(self, raw: RawStatement) -> None:
        """``DBCC TRACEON (n[, …], -1)`` / ``DBCC TRACEOFF (…)``: global trace flags (others: no effect)."""
        words = [t.text.upper() for t in raw.tokens]
        command = words[1] if len(words) > 1 else ""
        if command not in ("TRACEON", "TRACEOFF"):
            raise errors.SqlServerError(
                2526,
                "Incorrect DBCC statement. Check the documentation for the correct "
                "DBCC syntax and options. (the emulator knows TRACEON/TRACEOFF only)",
                16,
            )
        flags = {int(w) for i, w in enumerate(words) if i > 1 and w.isdigit() and words[i - 1] != "-"}
        if command == "TRACEON":
            self.engine.trace_flags |= flags
        else:
            self.engine.trace_flags -= flags
        return None

    def _select(self, node: exp.Expression, *, stream: bool) -> Result:
        names = {
            t.name.lower(): ".".join(p for p in (t.args.get("db") and t.args["db"].name, t.name) if p)
            for t in node.find_all(exp.Table)
        }
        sql = self.translate(node)
        settle(self.cur)
        try:
            rel = self.cur.sql(sql)
            if rel is None:
                return Result(None, -1)
            columns = [Column(column_name(n), str(t)) for n, t in zip(rel.columns, rel.types, strict=True)]
            annotate_types(self, node, columns)
            if stream:
                reader = rel.to_arrow_reader(STREAM_BATCH_ROWS)
                batches = _guarded(iter(reader), self)
                return Result(columns, -1, batches, close=reader.close)
            table = rel.to_arrow_table()
        except duckdb.Error as exc:
            self._fail_statement()
            raise errors.from_duckdb(exc, names=names, spid=self.spid) from exc
        self.rowcount = table.num_rows
        return Result(columns, -1, iter(table.to_batches()))

    def _set(self, node: exp.Set) -> None:
        for item in node.expressions:
            target = item.this
            if isinstance(target, exp.EQ) and isinstance(target.this, exp.Parameter):
                name = target.this.name.lower()
                if name not in self.variables:
                    raise errors.SqlServerError(137, f'Must declare the scalar variable "@{target.this.name}".', 15)
                self.variables[name] = self.eval_scalar(target.expression)
                continue
            if isinstance(target, exp.EQ) and isinstance(target.this, exp.Column):
                setting = target.this.name.upper()
                value = target.expression.name.upper() if isinstance(target.expression, (exp.Var, exp.Column)) else ""
                if setting == "IMPLICIT_TRANSACTIONS":
                    self.implicit_transactions = value == "ON"
                    continue
                if setting == "XACT_ABORT":
                    self.xact_abort = value == "ON"
                    continue
                if setting in _IGNORED_SETTINGS or setting.startswith("ANSI"):
                    continue
            if item.args.get("kind") == "TRANSACTION":
                continue  # isolation level: DuckDB gives snapshot reads; see docs/emulator.md
            # Unknown SET options are accepted silently (client libraries send many).

    def _declare(self, node: exp.Declare) -> None:
        for item in node.expressions:
            names = item.this if isinstance(item.this, list) else [item.this]
            default = item.args.get("default")
            kind = item.args.get("kind")
            for name_node in names:
                name = name_node.name.lower()
                value = None
                if default:
                    expr = default
                    if isinstance(kind, exp.DataType) and kind.this in _ROUNDED_TYPES:
                        value = self.eval_scalar(exp.Cast(this=default, to=kind.copy()))  # ticks, minutes
                    elif isinstance(kind, exp.DataType):
                        expr = exp.Cast(this=default, to=duck_datatype(sqltype_from_datatype(kind)))
                        value = self._eval_duck_expr(expr, default)
                    else:
                        value = self.eval_scalar(expr)
                self.variables[name] = value

    def _eval_duck_expr(self, cast: exp.Cast, inner: exp.Expression) -> Any:
        inner_sql = to_duckdb(transform(inner, self.context(), top_level=False))
        try:
            return self.cur.execute(f"SELECT CAST({inner_sql} AS {cast.to.sql('duckdb')})").fetchone()[0]
        except duckdb.Error as exc:
            raise errors.from_duckdb(exc, spid=self.spid) from exc


_ROUNDED_TYPES = {exp.DType.DATETIME, exp.DType.SMALLDATETIME}  # see .storage


def _guarded(batches: Any, session: Session) -> Any:
    """Map DuckDB errors raised while streaming to SQL Server errors."""
    try:
        yield from batches
    except duckdb.Error as exc:
        raise errors.from_duckdb(exc, spid=session.spid) from exc


def arrow_register(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table, body: Callable[[], Any]) -> Any:
    """Expose an Arrow table to SQL as ``name`` for the duration of ``body``."""
    cur.register(name, table)
    try:
        return body()
    finally:
        cur.unregister(name)
