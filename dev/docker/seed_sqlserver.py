"""Create the demo database on a real SQL Server (Docker path) if it does not exist yet.

The workload generator then creates the tables and enables CDC with the same T-SQL it sends to
the local emulator. Idempotent: safe on every container restart.
"""

from __future__ import annotations

import argparse
import time

import pymssql


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="sqlserver")
    parser.add_argument("--port", type=int, default=1433)
    parser.add_argument("--user", default="sa")
    parser.add_argument("--password", required=True)
    parser.add_argument("--database", default="billing")
    args = parser.parse_args()
    for attempt in range(30):
        try:
            conn = pymssql.connect(server=args.server, port=args.port, user=args.user, password=args.password,
                                   autocommit=True)  # fmt: skip
            break
        except pymssql.OperationalError:
            time.sleep(2 + attempt)
    else:
        raise SystemExit(f"SQL Server at {args.server}:{args.port} did not answer")
    cursor = conn.cursor()
    cursor.execute("SELECT DB_ID(%s)", (args.database,))
    if cursor.fetchone()[0] is None:
        # Identifiers cannot be bound as parameters; the name is validated by the regex below.
        if not args.database.isidentifier():
            raise SystemExit(f"invalid database name {args.database!r}")
        cursor.execute(f"CREATE DATABASE [{args.database}]")
        print(f"created database {args.database}")
    conn.close()


if __name__ == "__main__":
    main()
