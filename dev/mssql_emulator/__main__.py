"""Command line: ``python -m dev.mssql_emulator serve|status``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from .client import server_status
from .engine import Engine
from .server import DEFAULT_LOGIN, DEFAULT_PASSWORD, serve


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("dev.mssql_emulator")
    engine = Engine(
        args.db,
        db_name=args.database_name,
        capture_interval=args.capture_interval,
        maxtrans=args.maxtrans,
        threads=args.threads,
    )
    server = serve(engine, args.host, args.port, login=args.login, password=args.password)
    stopping = threading.Event()

    def shutdown(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %s: shutting down", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log.info(
        "SQL Server CDC emulator (TDS and the emulator protocol): database %r (%s) on %s:%s, capture every %ss",
        engine.db_name(),
        args.db,
        args.host,
        args.port,
        args.capture_interval or "-",
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
        log.info("stopped")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip interpreter teardown: client threads may still hold DuckDB objects, and the file
        # is already checkpointed and closed.
        os._exit(0)
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        reply = server_status(args.host, args.port, timeout=args.timeout)
    except OSError as exc:
        print(f"not answering on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.mssql_emulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a DuckDB-backed emulated SQL Server database over TCP")
    s.add_argument("--db", required=True, help="DuckDB file (created if missing)")
    s.add_argument("--port", type=int, default=11433)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument(
        "--capture-interval",
        type=float,
        default=1.0,
        help="seconds between capture job scans (0 disables the background job)",
    )
    s.add_argument("--maxtrans", type=int, default=500, help="transactions per capture scan")
    s.add_argument("--database-name", default=None, help="DB_NAME() (default: the file's stem)")
    s.add_argument("--threads", type=int, default=None, help="DuckDB worker threads")
    s.add_argument("--login", default=DEFAULT_LOGIN, help="SQL login TDS clients must use (default: sa)")
    s.add_argument(
        "--password",
        default=os.environ.get("MSSQL_EMULATOR_PASSWORD", DEFAULT_PASSWORD),
        help="password of that login (default: $MSSQL_EMULATOR_PASSWORD, else 'local')",
    )
    s.set_defaults(func=_serve)
    st = sub.add_parser("status", help="exit 0 if a server answers")
    st.add_argument("--port", type=int, default=11433)
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--timeout", type=float, default=2.0)
    st.set_defaults(func=_status)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
