"""dbt on the local stack: build the manifest, seed demo raw data, run dbt against local Snowflake.

CLI (run from the repository root, ``PYTHONPATH=.``)::

    python -m dev.dbt_local manifest                 # dbt parse -> the manifest (orchestration/dbt_manifest.py)
    python -m dev.dbt_local seed [--port P]          # demo RAW + RAW *_HISTORY tables (the CDC contract)
    python -m dev.dbt_local build [--port P] [-- dbt args]   # dbt build --target local
    python -m dev.dbt_local dbt [--port P] -- <any dbt command>

The seeded dataset is the billing workload's calendar of business events (``dev.workload.timeline``,
deterministic by ``--seed``) logged by its in-memory CDC sink (``dev.workload.cdclog``): every
business operation is one source transaction with its own LSN, and both raw tables are derived from
that one change list exactly as the ingestion pipeline writes them
(``include/cdc_pipeline/snowflake_sql.py``):

* ``RAW.<T>_HISTORY``: every change once (snapshot rows op 0, inserts 2, updates 4 with the after
  image, deletes 1 with the row's last values), with LSN / seqval / commit time / batch;
* ``RAW.<T>``: the latest change per key; deletes are soft (``_CDC_DELETED``).

The tables themselves are created with the pipeline's own DDL (``Warehouse.ensure_target_tables``
with the pipeline's type mapping of the workload's source columns, ``dev.workload.schema``), so the
dbt project reads exactly the layout production has. Tests rebuild the expected marts from the
:class:`~dev.workload.cdclog.Dataset` in Python, independently of the SQL. This module generates
nothing itself: it loads and runs dbt.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dev.localenv import LOCAL_SALT
from dev.workload import schema, timeline
from dev.workload.cdclog import Dataset
from include.cdc_pipeline.orchestration import dbt_manifest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "billing"
PROJECT_DIR = dbt_manifest.project_dir(PROJECT)
MANIFEST = dbt_manifest.manifest_path(PROJECT)
DBT = Path(sys.executable).parent / "dbt"
DATABASE = "ANALYTICS"
RAW_SCHEMA = "RAW"

# --------------------------------------------------------------------------------------------
# Loading into the local Snowflake
# --------------------------------------------------------------------------------------------


def _layout(table: str, database: str = DATABASE) -> Any:
    from include.cdc_pipeline.config import DeleteMode
    from include.cdc_pipeline.snowflake_sql import TableLayout
    from include.cdc_pipeline.types import SourceColumn, map_column

    columns = tuple(
        map_column(SourceColumn(c.name, c.type_name, precision=c.precision_scale[0], scale=c.precision_scale[1]),
                   hashed=c.name in schema.HASHED.get(table, ()))
        for c in schema.TABLE_COLUMNS[table]
    )  # fmt: skip
    return TableLayout(
        database=database, raw_schema=RAW_SCHEMA, staging_schema="STAGING", table=table.upper(),
        staging_table=f"{table.upper()}_DBT_SEED", columns=columns, key=tuple(k.upper() for k in schema.KEYS[table]),
        delete_mode=DeleteMode.SOFT,
    )  # fmt: skip


def connect(port: int | None = None, database: str | None = None) -> Any:
    """A connector connection to the local Snowflake (no database selected unless given)."""
    import snowflake.connector

    from dev.snowflake_local import DEFAULT_PORT, connection_params

    return snowflake.connector.connect(**connection_params(port or DEFAULT_PORT, database=database))


def _insert(cursor: Any, target: str, rows: Sequence[dict[str, Any]], chunk: int = 500) -> None:
    if not rows:
        return
    names = list(rows[0])
    placeholders = ", ".join(f"%({n})s" for n in names)
    columns = ", ".join(f'"{n}"' for n in names)
    sql = f"INSERT INTO {target} ({columns}) VALUES ({placeholders})"
    for i in range(0, len(rows), chunk):
        cursor.executemany(sql, list(rows[i : i + chunk]))  # one multi-row INSERT per chunk


def seed(data: Dataset, port: int | None = None, conn: Any = None, database: str = DATABASE) -> dict[str, int]:
    """(Re)create <database>.RAW.<T> and <T>_HISTORY with the pipeline's DDL and load ``data``."""
    from include.cdc_pipeline.warehouse import Warehouse

    own = conn is None
    conn = conn or connect(port)
    try:
        wh = Warehouse(conn)
        wh.ensure_database(database)
        wh.ensure_schemas(database, [RAW_SCHEMA])
        counts = {}
        for table in schema.TABLES:
            layout = _layout(table, database)
            for name in (layout.raw, layout.history):
                wh.execute(f"DROP TABLE IF EXISTS {name}")
            wh.ensure_target_tables(layout)
            cursor = conn.cursor()
            try:
                _insert(cursor, layout.raw, data.raw_rows(table))
                _insert(cursor, layout.history, data.history_rows(table))
            finally:
                cursor.close()
            counts[table] = len(data.changes[table])
        return counts
    finally:
        if own:
            conn.close()


# --------------------------------------------------------------------------------------------
# dbt
# --------------------------------------------------------------------------------------------


def dbt_env(port: int | None = None, target: str = "local", database: str | None = None) -> dict[str, str]:
    """Environment for a dbt subprocess on the local stack (profiles.yml reads these)."""
    env = dict(os.environ)
    if port is not None:
        env["CDC_LOCAL_SNOWFLAKE_PORT"] = str(port)
    if database is not None:
        env["CDC_DBT_DATABASE"] = database
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env["CDC_DBT_TARGET"] = target
    return env


def run_dbt(
    args: Sequence[str],
    port: int | None = None,
    target: str = "local",
    *,
    database: str | None = None,
    target_path: Path | None = None,
    log_path: Path | None = None,
    extra_env: dict[str, str] | None = None,
    check: bool = True,
    capture: bool = False,
    timeout: float | None = 900,
) -> subprocess.CompletedProcess[str]:
    """``dbt <args> --project-dir … --profiles-dir … --target <target>`` in a subprocess.

    ``target_path`` / ``log_path`` keep a run's artifacts away from the project's own target/
    (runs in parallel, tests and benchmarks, must not share one).
    """
    cmd = [str(DBT), *args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)]
    if args and args[0] not in ("deps", "clean", "init"):
        cmd += ["--target", target]
    if target_path is not None:
        cmd += ["--target-path", str(target_path)]
    if log_path is not None:
        cmd += ["--log-path", str(log_path)]
    env = {**dbt_env(port, target, database), **(extra_env or {})}
    return subprocess.run(
        cmd, cwd=PROJECT_DIR, env=env, check=check, text=True, capture_output=capture, timeout=timeout
    )


def build_manifest() -> Path:
    """``dbt parse`` into the manifest the Cosmos DAG reads (include/cdc_pipeline/orchestration/dbt_manifest.py)."""
    return dbt_manifest.build(PROJECT)


def manifest_is_stale() -> bool:
    """True when the manifest is missing or older than any file of the dbt project."""
    return dbt_manifest.is_stale(PROJECT)


def ensure_manifest() -> Path:
    """Build the manifest only when it is missing or stale (``make manifest`` semantics)."""
    return dbt_manifest.ensure(PROJECT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.dbt_local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["manifest", "seed", "build", "dbt"])
    parser.add_argument(
        "--port", type=int, default=None, help="local Snowflake port (default $CDC_LOCAL_SNOWFLAKE_PORT)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed: dataset generator seed")
    parser.add_argument("--database", default=DATABASE, help=f"database to seed / build in (default {DATABASE})")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = parser.parse_args(argv)
    args.dbt_args = extra  # everything after `--` goes to dbt unchanged
    if args.command == "manifest":
        print(build_manifest())
        return 0
    if args.command == "seed":
        data = timeline.generate(seed=args.seed, salt=LOCAL_SALT)
        counts = seed(data, args.port, database=args.database)
        print(f"seeded {args.database}.{RAW_SCHEMA} (anchor {data.anchor:%Y-%m-%d %H:%M}): "
              + ", ".join(f"{t}={n} changes" for t, n in counts.items()))  # fmt: skip
        return 0
    if args.command == "build":
        return run_dbt(["build", *args.dbt_args], args.port, database=args.database, check=False).returncode
    return run_dbt(args.dbt_args, args.port, database=args.database, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
