"""A chunked snapshot survives its worker being killed (SIGKILL, not an exception) and resumes.

The real CDC DAG (``dag.test()`` in a process of its own: killing it kills the worker) snapshots a
table of 150 rows in seven chunks of 25; a failpoint SIGKILLs the process at the fourth chunk, after
its MERGE and before it is recorded done. Between the runs the source keeps changing. The next run
frees what the dead worker held, reads the unfinished chunks (never a finished one again), and
finalizes: raw equals the source value for value and history holds every key's snapshot row and
every change once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.localpipeline import pipelines
from dev.mssql_emulator import connect, start_server
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.reconcile import reconcile
from tests.fixtures_mssql import mssql_airflow_conn

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "SNAPKILL"
ROWS, CHUNK = 150, 25
CONFIG = f"""
name: billing
mssql_conn_id: mssql_billing
snowflake_conn_id: snowflake_default
schedule: null
alert_emails: [oncall@example.com]
snapshot_workers: 1
target: {{database: {DATABASE}}}
table_defaults: {{snapshot_chunk_rows: {CHUNK}}}
tables:
  - {{schema: dbo, table: big, primary_key: [id]}}
"""


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory, local_snowflake: Any, airflow_db: None
) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("snapkill")
    server = start_server(directory / "billing.duckdb", capture_interval=0.5, log_path=directory / "server.log")
    conn = connect(server=server.host, port=server.port, database="billing")
    cur = conn.cursor()
    cur.execute("EXEC sys.sp_cdc_enable_db")
    cur.execute("CREATE TABLE dbo.big (id int NOT NULL PRIMARY KEY, v nvarchar(40) NULL)")
    for start in range(0, ROWS, 100):
        values = ", ".join(f"({i}, N'v{i}')" for i in range(start, min(start + 100, ROWS)))
        cur.execute(f"INSERT INTO dbo.big VALUES {values}")
    cur.execute("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'big', @role_name = NULL")
    conn.commit()
    conn.close()
    config_dir = directory / "config"
    config_dir.mkdir()
    (config_dir / "billing.yaml").write_text(CONFIG)
    from airflow.configuration import conf

    env = {
        **os.environ,
        "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key"),
        "CDC_CONFIG_DIR": str(config_dir),
        "CDC_DEADLINES": "off",
        "CDC_FAILPOINT_DIR": str(directory),
        "AIRFLOW_CONN_MSSQL_BILLING": json.dumps(mssql_airflow_conn(server)),
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps(local_snowflake.airflow_conn(database=DATABASE)),
    }
    yield {"server": server, "env": env, "config_dir": config_dir, "snowflake": local_snowflake}
    server.stop()


def _run(source: dict[str, Any], **env: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.dag_run", str(source["config_dir"]), "billing"],
        env={**source["env"], **env}, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _chunks(source: dict[str, Any]) -> dict[int, tuple[Any, ...]]:
    conn = source["snowflake"].connect(database=DATABASE)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT CHUNK_NO, STATE, OWNER, FINISHED_AT, LOW_LSN FROM CONTROL.CDC_SNAPSHOT_CHUNKS ORDER BY CHUNK_NO"
        )
        return {int(row[0]): tuple(row[1:]) for row in cur.fetchall()}
    finally:
        conn.close()


def test_a_killed_snapshot_resumes_at_the_first_unfinished_chunk(source: dict[str, Any]) -> None:
    # Given the first run's worker killed (SIGKILL) in the middle of the fourth of seven chunks,
    code, output = _run(source, CDC_FAILPOINTS="kill:after_chunk_merge@-3")
    assert code == -signal.SIGKILL, output[-3000:]
    before = _chunks(source)
    assert len(before) == ROWS // CHUNK + 1  # six full chunks and the open-ended last one
    finished = {no: row for no, row in before.items() if row[0] == "done"}
    assert sorted(finished) == list(range(3)) and before[3][0] == "running"
    # and the source changing meanwhile, in finished and unfinished ranges alike,
    conn = connect(server=source["server"].host, port=source["server"].port, database="billing")
    cur = conn.cursor()
    cur.execute("UPDATE dbo.big SET v = N'changed' WHERE id IN (5, 60, 110, 140)")
    cur.execute("DELETE FROM dbo.big WHERE id IN (10, 120)")
    cur.execute("INSERT INTO dbo.big VALUES (1000, N'new')")
    conn.commit()
    cur.execute("EXEC sys.sp_cdc_scan")
    conn.commit()
    conn.close()
    # when the next run runs,
    code, output = _run(source)
    run = json.loads([line for line in output.splitlines() if line.startswith("DAGRUN ")][-1].removeprefix("DAGRUN "))
    assert run["state"] == "success", output[-4000:]
    # then every chunk is done, and no finished chunk was read again (same owner, same finish time),
    after = _chunks(source)
    assert {row[0] for row in after.values()} == {"done"}
    assert {no: after[no] for no in finished} == finished
    assert after[3][3] == before[3][3]  # the killed chunk kept its LSN: re-read under the same tag
    # raw equals the source value for value (the changes streamed beside the snapshot),
    config = SourceConfig.model_validate(yaml.safe_load((source["config_dir"] / "billing.yaml").read_text()))
    (pipeline,) = pipelines(config, source["server"].port, source["snowflake"].port)
    result = reconcile(pipeline)
    assert result.ok and result.source_rows == ROWS - 2 + 1, result
    # and history holds one snapshot row per key read and every streamed change once.
    history = pipeline.warehouse.execute(
        f"SELECT _CDC_OPERATION, ID, _CDC_LSN, _CDC_SEQVAL FROM {DATABASE}.RAW.BIG_HISTORY"
    )
    counted = Counter(tuple(row) for row in history)
    assert max(counted.values()) == 1
    snapshot_keys = Counter(row[1] for row in history if row[0] == 0)
    assert max(snapshot_keys.values()) == 1 and len(snapshot_keys) >= ROWS - 2
    assert {row[1] for row in history if row[0] != 0} >= {5, 60, 110, 140, 10, 120, 1000}
