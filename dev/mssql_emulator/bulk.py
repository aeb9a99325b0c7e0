"""Bulk fast path: apply many already-decided transactions in one DuckDB transaction.

Used by the workload generator's ``bulk`` mode (a million changes in seconds instead of an hour
of single statements; ``dev/workload/bulk.py`` lays the changes out). The caller supplies, per
table, the log records exactly as the SQL path would write them (operation, before/after image,
seqval offset, command id) and, per transaction, its begin/commit LSN offsets. Offsets follow the
same allocation sequence as the SQL path (begin LSN, then per statement one LSN per
inserted/deleted row and two per updated row, then the commit LSN), so with a frozen clock the
change tables, ``lsn_time_mapping`` and the source tables end up byte-for-byte what executing the
transactions one by one and then running the capture job produces (tests/emulator/test_workload.py checks this).

Source tables get the final image of every key the bulk touched; the change tables are written
as already captured. Other writers must be idle meanwhile (everything pending is captured first,
and the commit lock is held throughout).
"""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb
import pyarrow as pa

from . import errors
from .catalog import dq, load_table
from .dml import _blob_literal, all_bits_mask
from .storage import round_datetime, stored_sql


def _cast_sql(name: str, sql_type: Any) -> str:
    """The column as the SQL path stores it (char(n) padded, datetime ticks: :mod:`.storage`)."""
    return stored_sql(dq(name), sql_type)


def bulk_apply(
    engine: Any, *, total_lsns: int, total_trans: int, transactions: pa.Table, changes: dict[str, pa.Table]
) -> dict[str, Any]:
    """Apply a bulk. ``transactions`` columns: ``tx, tran_off, begin_off, commit_off``; each
    ``changes["schema.table"]`` has ``__tx, __seq, __op, __cmd`` plus the table's columns."""
    engine.capture_all(idle_rows=False)
    with engine.ddl_lock, engine.commit_lock:
        engine.capture_all(idle_rows=False)
        base = engine.alloc_lsns(total_lsns)
        tran_base = engine.alloc_tran_id(total_trans)
        now = engine.clock.now()
        cur = engine.cursor()
        rows_written = 0
        try:
            cur.execute("BEGIN TRANSACTION")
            cur.register("__bulk_tx_arrow", transactions)
            cur.execute("CREATE OR REPLACE TEMP TABLE __bulk_tx AS SELECT * FROM __bulk_tx_arrow")
            cur.unregister("__bulk_tx_arrow")
            for qualified, table in changes.items():
                schema, _, name = qualified.partition(".")
                info = load_table(cur, schema, name)
                if info is None:
                    raise errors.invalid_object(qualified)
                cur.register("__bulk_rows_arrow", table)
                casts = ", ".join(f"{_cast_sql(c.name, c.type)} AS {dq(c.name)}" for c in info.columns)
                cur.execute(
                    "CREATE OR REPLACE TEMP TABLE __bulk AS SELECT r.__tx, r.__seq, r.__op, r.__cmd, "
                    f"t.commit_off, {casts} FROM __bulk_rows_arrow r JOIN __bulk_tx t ON t.tx = r.__tx"
                )
                cur.unregister("__bulk_rows_arrow")
                for inst in info.instances:
                    present = {c.name.lower() for c in info.columns}
                    cols = [c for c in inst.columns if c.name.lower() in present]
                    changed = (
                        " + ".join(
                            f"(CASE WHEN r.{dq(c.name)} IS DISTINCT FROM p.{dq(c.name)} "
                            f"THEN {1 << (c.ordinal - 1)} ELSE 0 END)"
                            for c in cols
                        )
                        or "0"
                    )
                    nbytes = max((len(inst.columns) + 7) // 8, 1)
                    mask = (
                        f"CASE WHEN r.__op IN (1, 2) THEN {_blob_literal(all_bits_mask(len(inst.columns)))} "
                        f"ELSE unhex(lpad(hex(({changed})::HUGEINT), {nbytes * 2}, '0')) END"
                    )
                    values = ", ".join(
                        (f"r.{dq(c.name)}" if c.name.lower() in present else "NULL") for c in inst.columns
                    )
                    cur.execute(
                        f"INSERT INTO {inst.ct_table} SELECT sys.int_to_lsn({base}::HUGEINT + r.commit_off), NULL, "
                        f"sys.int_to_lsn({base}::HUGEINT + r.__seq), r.__op, {mask}"
                        f"{', ' + values if values else ''}, r.__cmd FROM __bulk r "
                        "LEFT JOIN __bulk p ON p.__tx = r.__tx AND p.__seq = r.__seq AND p.__op = 7 - r.__op "
                        "AND r.__op IN (3, 4) ORDER BY r.commit_off, r.__seq, r.__op"
                    )
                keys = info.pk
                if not keys:
                    raise errors.SqlServerError(50000, f"bulk apply needs a primary key on {qualified}")
                match = " AND ".join(f"b.{dq(k)} = {info.qualified}.{dq(k)}" for k in keys)
                cur.execute(f"DELETE FROM {info.qualified} WHERE EXISTS (SELECT 1 FROM __bulk b WHERE {match})")
                part = ", ".join(f"{dq(k)}" for k in keys)
                col_list = ", ".join(f"{dq(c.name)}" for c in info.columns)
                cur.execute(
                    f"INSERT INTO {info.qualified} ({col_list}) SELECT {col_list} FROM (SELECT *, row_number() OVER "
                    f"(PARTITION BY {part} ORDER BY commit_off DESC, __seq DESC, __op DESC) AS __rn FROM __bulk "
                    "WHERE __op <> 3) WHERE __rn = 1 AND __op IN (2, 4)"
                )
                rows_written += table.num_rows
                cur.execute("DROP TABLE __bulk")
            cur.execute(
                f"INSERT INTO cdc.lsn_time_mapping SELECT sys.int_to_lsn({base}::HUGEINT + commit_off), ?, ?, "
                f"sys.int_to_lsn({tran_base}::HUGEINT + tran_off), sys.int_to_lsn({base}::HUGEINT + begin_off) "
                "FROM __bulk_tx ORDER BY commit_off",
                [round_datetime(now), round_datetime(now)],
            )
            cur.execute("DROP TABLE __bulk_tx")
            cur.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise errors.from_duckdb(exc) from exc
        finally:
            cur.close()
    return {"transactions": transactions.num_rows, "rows": rows_written}
