"""A CDC reader run as its own process by test_server.py: snapshot, then poll LSN windows.

Usage: python -m tests.emulator.cdc_reader_process PORT DONE_FILE OUT_FILE
Writes {table: sorted list of repr(row)} of its replayed state to OUT_FILE.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pymssql

from dev.mssql_emulator.client import server_status
from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD
from dev.workload.schema import COLUMNS, KEYS, TABLES


def main(port: int, done_file: str, out_file: str) -> int:
    conn = pymssql.connect(
        server="127.0.0.1", port=str(port), user=DEFAULT_LOGIN, password=DEFAULT_PASSWORD, database="billing"
    )
    cur = conn.cursor()  # implicit transaction, never committed: every SELECT must still see new data

    def one(sql: str, params: Any = None) -> Any:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None

    deadline = time.monotonic() + 120
    while one("SELECT sys.fn_cdc_get_max_lsn()") is None:
        if time.monotonic() > deadline:
            raise TimeoutError("capture job never ran")
        time.sleep(0.05)
    position = one("SELECT sys.fn_cdc_get_max_lsn()")  # read *before* the snapshot
    state: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for t in TABLES:
        cols = COLUMNS[t]
        cur.execute(f"SELECT {', '.join(cols)} FROM dbo.{t}")
        pos = [cols.index(k) for k in KEYS[t]]
        state[t] = {tuple(r[i] for i in pos): tuple(r) for r in cur.fetchall()}
    windows = 0
    quiet = 0
    while True:
        upper = one("SELECT sys.fn_cdc_get_max_lsn()")
        if upper > position:
            start = one("SELECT sys.fn_cdc_increment_lsn(%s)", (position,))
            for t in TABLES:
                cols = COLUMNS[t]
                pos = [cols.index(k) for k in KEYS[t]]
                cur.execute(
                    f"SELECT [__$operation], {', '.join(cols)} FROM cdc.fn_cdc_get_all_changes_dbo_{t}(%s, %s, N'all') "
                    "ORDER BY [__$start_lsn], [__$seqval], [__$operation]",
                    (start, upper),
                )
                while True:
                    batch = cur.fetchmany(500)
                    if not batch:
                        break
                    for op, *values in batch:
                        key = tuple(values[i] for i in pos)
                        if op == 1:
                            state[t].pop(key, None)
                        else:
                            state[t][key] = tuple(values)
            position = upper
            windows += 1
            quiet = 0
            continue
        if Path(done_file).exists() and server_status("127.0.0.1", port)["uncaptured_transactions"] == 0:
            quiet += 1
            if quiet >= 3:
                break
        time.sleep(0.1)
    Path(out_file).write_text(
        json.dumps(
            {
                "windows": windows,
                "tables": {t: sorted(repr(r) for r in rows.values()) for t, rows in state.items()},
            }
        )
    )
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
