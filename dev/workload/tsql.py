"""Sink 1: the billing workload as T-SQL through a DB-API connection, and its command line.

Speaks only T-SQL, so the same code seeds the emulator (in-process or server) and a real SQL
Server through pymssql: :class:`Workload` creates the tables (:data:`~dev.workload.schema.DDL`),
enables CDC, and runs the transactions :class:`~dev.workload.oltp.OltpMix` draws, one by one or
(against the emulator) through the bulk fast path (:mod:`.bulk`). :func:`grant_reader` creates the
pipeline's least-privileged login. What the traffic does is decided in :mod:`.oltp`, not here.

Modes: ``init`` (tables, initial population, CDC enabled), ``live`` (~N transactions/s until a
duration or SIGTERM), ``bulk`` (N captured changes; against the emulator a fast path writes them
in one go, indistinguishable from running the transactions one by one), ``run`` (N transactions,
SQL path), ``reader-login``. Each prints a :class:`~dev.workload.model.WorkloadResult` as JSON.

    python -m dev.workload --db /tmp/billing.duckdb init
    python -m dev.workload --server 127.0.0.1 --port 11433 --database billing live --rate 25 --duration 60
    python -m dev.workload --db /tmp/billing.duckdb bulk --changes 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pymssql

from dev import mssql_emulator

from .bulk import BulkBuilder, bulk_target
from .model import MONEY, SourceState, Tx, WorkloadResult, money
from .oltp import OltpMix
from .schema import COLUMNS, DDL, KEYS, SCHEMA, TABLES, Row


def _normalise(table: str, row: Row) -> Row:
    """Values as the traffic itself produces them (so before-images compare equal)."""
    value = row.get("external_ref")
    if value is not None and not isinstance(value, uuid.UUID):
        row["external_ref"] = uuid.UUID(str(value))
    if table == "accounts" and row.get("credit_limit") is not None:
        row["credit_limit"] = money(row["credit_limit"], MONEY)
    return row


def load_state(conn: Any) -> SourceState:
    """The source tables behind ``conn``, read into a :class:`SourceState`."""
    state = SourceState()
    cur = conn.cursor()
    try:
        for table in TABLES:
            cols = COLUMNS[table]
            cur.execute(f"SELECT {', '.join(cols)} FROM {SCHEMA}.{table} ORDER BY {', '.join(KEYS[table])}")
            for values in cur.fetchall():
                state.put(table, _normalise(table, dict(zip(cols, values, strict=True))))
    finally:
        cur.close()
    return state


class Workload:
    """Creates the billing database's tables and runs its OLTP traffic through a DB-API connection."""

    def __init__(
        self,
        conn: Any,
        *,
        seed: int = 42,
        rollback_fraction: float = 0.02,
        start_time: datetime | None = None,
        model: SourceState | None = None,
    ) -> None:
        self.conn = conn
        self.mix = OltpMix(
            seed=seed,
            rollback_fraction=rollback_fraction,
            start_time=start_time,
            state=model,
            load_state=lambda: load_state(conn),
        )
        self.stop_event = threading.Event()

    @property
    def model(self) -> SourceState:
        """The traffic's copy of the source tables (read from the database on first use)."""
        return self.mix.state

    # -- setup -----------------------------------------------------------------------------
    def _scalar(self, sql: str, params: Any = None) -> Any:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            row = cur.fetchone()
            return row[0] if row else None
        finally:
            cur.close()

    def _exec(self, sql: str, params: Any = None) -> None:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
        finally:
            cur.close()

    def init(
        self, *, accounts: int = 200, products: int = 40, invoices: int = 400, populate_after_cdc: bool = False
    ) -> WorkloadResult:
        """Create the tables (if missing), populate them (if empty) and enable CDC on them."""
        result = WorkloadResult()
        started = time.monotonic()
        for table in TABLES:
            if self._scalar("SELECT OBJECT_ID(%s)", (f"{SCHEMA}.{table}",)) is None:
                self._exec(DDL[table])
        self.conn.commit()
        empty = self._scalar(f"SELECT COUNT(*) FROM {SCHEMA}.accounts") == 0
        if empty and not populate_after_cdc:
            self._populate(accounts, products, invoices, result)
        self.enable_cdc()
        if empty and populate_after_cdc:
            self._populate(accounts, products, invoices, result)
        result.seconds = time.monotonic() - started
        return result

    def enable_cdc(self) -> None:
        if not self._scalar("SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()"):
            self._exec("EXEC sys.sp_cdc_enable_db")
            self.conn.commit()
        for table in TABLES:
            tracked = self._scalar(
                "SELECT is_tracked_by_cdc FROM sys.tables WHERE object_id = OBJECT_ID(%s)", (f"{SCHEMA}.{table}",)
            )
            if not tracked:
                self._exec(
                    f"EXEC sys.sp_cdc_enable_table @source_schema = N'{SCHEMA}', @source_name = %s, "
                    "@role_name = NULL, @supports_net_changes = 1",
                    (table,),
                )
                self.conn.commit()

    def _populate(self, accounts: int, products: int, invoices: int, result: WorkloadResult) -> None:
        for tx in self.mix.populate(accounts, products, invoices):
            self.apply(tx, result)

    # -- applying ----------------------------------------------------------------------------
    def next_tx(self) -> Tx:
        return self.mix.next_tx()

    def apply(self, tx: Tx, result: WorkloadResult | None = None) -> None:
        """Run one transaction through SQL (commit, or rollback when ``tx.rollback``)."""
        cur = self.conn.cursor()
        try:
            # Explicit BEGIN/COMMIT so the transaction holds whether the connection autocommits or not
            # (with pymssql's default implicit transactions the final conn.commit() ends it).
            cur.execute("BEGIN TRANSACTION")
            for st in tx.stmts:
                cur.execute(st.sql, st.params)
                if st.kind != "insert" and cur.rowcount not in (-1, len(st.rows)):
                    raise RuntimeError(
                        f"model drift: {st.sql} {st.params} changed {cur.rowcount} rows, expected {len(st.rows)}"
                    )
            if tx.rollback:
                cur.execute("ROLLBACK TRANSACTION")
                self.conn.rollback()
            else:
                cur.execute("COMMIT TRANSACTION")
                self.conn.commit()
                self.model.apply(tx)
        except Exception:
            self.conn.rollback()
            raise
        finally:
            cur.close()
        if result is not None:
            result.add(tx)

    def run(self, *, transactions: int | None = None, changes: int | None = None) -> WorkloadResult:
        """Run transactions one by one through SQL until a transaction or change count is reached."""
        result = WorkloadResult()
        started = time.monotonic()
        while not self.stop_event.is_set():
            if transactions is not None and result.transactions >= transactions:
                break
            if changes is not None and result.captured_changes >= changes:
                break
            self.apply(self.next_tx(), result)
        result.seconds = time.monotonic() - started
        return result

    def live(
        self,
        *,
        rate: float = 10.0,
        duration: float | None = None,
        progress: Callable[[WorkloadResult], None] | None = None,
    ) -> WorkloadResult:
        """About ``rate`` transactions per second until ``duration`` seconds or :attr:`stop_event`."""
        result = WorkloadResult()
        started = time.monotonic()
        next_at = started
        last_report = started
        while not self.stop_event.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if now < next_at:
                self.stop_event.wait(next_at - now)
                continue
            self.apply(self.next_tx(), result)
            next_at += 1.0 / rate
            if progress is not None and now - last_report >= 5:
                last_report = now
                result.seconds = now - started
                progress(result)
        result.seconds = time.monotonic() - started
        return result

    def bulk(self, changes: int, *, fast: bool | None = None, chunk_changes: int = 200_000) -> WorkloadResult:
        """Generate ``changes`` captured row changes. Against the emulator the fast path applies them
        in chunks (see :mod:`dev.workload.bulk`); elsewhere (or ``fast=False``) through SQL."""
        target = bulk_target(self.conn) if fast is not False else None
        if target is None:
            if fast:
                raise ValueError("the bulk fast path needs an emulator connection")
            return self.run(changes=changes)
        result = WorkloadResult()
        started = time.monotonic()
        self.conn.commit()
        while result.captured_changes < changes and not self.stop_event.is_set():
            builder = BulkBuilder()
            chunk = WorkloadResult()
            goal = min(chunk_changes, changes - result.captured_changes)
            while chunk.captured_changes < goal:
                tx = self.next_tx()
                builder.add(tx)
                chunk.add(tx)
                if not tx.rollback:
                    self.model.apply(tx)
            target(**builder.build())
            result.merge(chunk)
        result.seconds = time.monotonic() - started
        return result


def grant_reader(conn: Any, login: str, password: str) -> None:
    """Create the least-privileged login the pipeline reads with, idempotently, on SQL Server or the
    emulator (``conn``: a sysadmin's autocommit connection to the source database): not sysadmin;
    SELECT on the ``cdc`` schema and, for snapshots, on the source tables (``db_datareader``).
    Re-running skips what exists: SQL Server's errors 15025 (login exists) and 15023 (user exists)."""
    for sql, exists in (
        (f"CREATE LOGIN [{login}] WITH PASSWORD = N'{password}'", 15025),
        (f"CREATE USER [{login}] FOR LOGIN [{login}]", 15023),
        (f"GRANT SELECT ON SCHEMA::cdc TO [{login}]", None),
        (f"ALTER ROLE db_datareader ADD MEMBER [{login}]", None),
    ):
        try:
            conn.cursor().execute(sql)
            conn.commit()
        except Exception as exc:  # already there from an earlier start
            conn.rollback()
            if exists is None or str(exists) not in str(exc):
                raise


# -- command line --------------------------------------------------------------------------------
def _connect(args: argparse.Namespace, autocommit: bool = False) -> Any:
    if args.db:
        return mssql_emulator.connect(database=args.db)
    if args.driver == "pymssql":
        return pymssql.connect(
            server=args.server,
            port=str(args.port),
            user=args.user,
            password=args.password,
            database=args.database,
            autocommit=autocommit,
        )
    return mssql_emulator.connect(
        server=args.server, port=args.port, user=args.user, password=args.password, database=args.database
    )


def _ensure_database(args: argparse.Namespace) -> None:
    """Create the database from master when a login to it fails (it does not exist yet). The
    emulator serves exactly one database, which always exists."""
    try:
        pymssql.connect(
            server=args.server, port=str(args.port), user=args.user, password=args.password, database=args.database
        ).close()
        return
    except pymssql.OperationalError:
        pass
    conn = pymssql.connect(
        server=args.server,
        port=str(args.port),
        user=args.user,
        password=args.password,
        database="master",
        autocommit=True,
    )
    try:
        cur = conn.cursor()
        cur.execute(f"IF DB_ID(N'{args.database}') IS NULL CREATE DATABASE [{args.database}]")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.workload",
        description="OLTP workload generator for the demo billing database",
    )
    parser.add_argument("--db", help="emulator DuckDB file, opened in-process (no server)")
    parser.add_argument("--server", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11433)
    parser.add_argument("--database", default="billing")
    parser.add_argument("--user", default="sa")
    parser.add_argument("--password", default=os.environ.get("MSSQL_EMULATOR_PASSWORD", "local"))
    parser.add_argument(
        "--driver",
        choices=["auto", "emulator", "pymssql"],
        default="auto",
        help="auto: pymssql (TDS), except the emulator's own protocol for `bulk` (its fast path ships Arrow tables)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rollback-fraction", type=float, default=0.02)
    sub = parser.add_subparsers(dest="mode", required=True)
    p_init = sub.add_parser("init", help="create tables, populate, enable CDC")
    p_init.add_argument("--accounts", type=int, default=200)
    p_init.add_argument("--products", type=int, default=40)
    p_init.add_argument("--invoices", type=int, default=400)
    p_init.add_argument(
        "--populate-after-cdc",
        action="store_true",
        help="populate after enabling CDC (the initial rows then appear as inserts)",
    )
    p_live = sub.add_parser("live", help="continuous traffic")
    p_live.add_argument("--rate", type=float, default=10.0, help="transactions per second")
    p_live.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM)")
    p_bulk = sub.add_parser("bulk", help="generate N captured changes quickly")
    p_bulk.add_argument("--changes", type=int, default=1_000_000)
    p_bulk.add_argument("--slow", action="store_true", help="run every transaction through SQL")
    p_run = sub.add_parser("run", help="N transactions through SQL")
    p_run.add_argument("--transactions", type=int, default=100)
    p_reader = sub.add_parser("reader-login", help="create the pipeline's least-privileged login (idempotent)")
    p_reader.add_argument("--login", default="cdc_reader")
    p_reader.add_argument("--login-password", required=True)
    args = parser.parse_args(argv)
    if args.driver == "auto":
        args.driver = "emulator" if args.mode == "bulk" else "pymssql"

    if args.driver == "pymssql" and args.mode == "init" and not args.db:
        _ensure_database(args)
    if args.mode == "reader-login":
        # CREATE LOGIN is a server-level statement: run it outside a user transaction.
        conn = _connect(args, autocommit=True)
        try:
            grant_reader(conn, args.login, args.login_password)
        finally:
            conn.close()
        print(json.dumps({"mode": args.mode, "login": args.login}))
        return 0
    conn = _connect(args)
    workload = Workload(conn, seed=args.seed, rollback_fraction=args.rollback_fraction)

    def stop(signum: int, _frame: object) -> None:
        workload.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def progress(r: WorkloadResult) -> None:
        print(
            f"{r.committed} transactions committed, {r.captured_changes} changes, {r.rolled_back} rolled back",
            file=sys.stderr,
            flush=True,
        )

    try:
        if args.mode == "init":
            result = workload.init(
                accounts=args.accounts,
                products=args.products,
                invoices=args.invoices,
                populate_after_cdc=args.populate_after_cdc,
            )
        elif args.mode == "live":
            result = workload.live(rate=args.rate, duration=args.duration, progress=progress)
        elif args.mode == "bulk":
            result = workload.bulk(args.changes, fast=False if args.slow else None)
        else:
            result = workload.run(transactions=args.transactions)
    finally:
        conn.close()
    print(json.dumps({"mode": args.mode, "seed": args.seed, **result.as_dict()}, default=str))
    return 0
