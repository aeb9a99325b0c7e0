"""A change reader whose native driver cannot load is not a transient error.

On a fresh machine without the OS package libltdl7, mssql-python's bundled ODBC driver failed to
load and every stream window of every table retried four times before paging, once per table.
Here the real ``billing_cdc`` DAG runs (``dag.test()``, in a process of its own) against an
emulator server, the local Snowflake and the SMTP sink, with mssql-python's driver made
unloadable for that process only: a copy of its driver package on ``PYTHONPATH`` whose ODBC
driver manager needs ``libgone.so.7``, a library no machine has (the same failure as a missing
``libltdl.so.7``, without removing an OS package from the machine running the tests).

- ``change_reader: auto``: every change still lands (read with pymssql), the task log says why,
  and the status page's record of the batch names the fallback.
- ``change_reader: mssql-python``: the tasks fail in their first try, with one e-mail (one
  incident for the run) naming the missing library and the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.localpipeline import pipelines
from dev.mssql_emulator import connect
from dev.workload.tsql import Workload
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.reconcile import reconcile
from tests.alerts.billing_source import billing_yaml, seeded_server
from tests.fixtures_mssql import mssql_airflow_conn
from tests.unloadable_driver import MISSING, unloadable_driver

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Source:
    server: Any
    config_dir: Path
    env: dict[str, str]
    snowflake_port: int

    def run_dag(self, reader: str) -> tuple[dict[str, Any], str]:
        """One ``billing_cdc`` run with ``change_reader: reader``; (its task instances, its output)."""
        (self.config_dir / "billing.yaml").write_text(billing_yaml("DRIVERLOAD", change_reader=reader))
        done = subprocess.run(
            [sys.executable, "-m", "tests.dag_run", str(self.config_dir), "billing"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        output = done.stdout + done.stderr
        last = [line for line in done.stdout.splitlines() if line.startswith("DAGRUN ")]
        assert last, output[-4000:]
        return json.loads(last[-1].removeprefix("DAGRUN ")), output

    def change(self, seed: int) -> None:
        """Committed source changes, captured before the next run reads them."""
        conn = connect(server=self.server.host, port=self.server.port, database="billing")
        Workload(conn, seed=seed).run(transactions=30)
        conn.commit()
        conn.cursor().execute("EXEC sys.sp_cdc_scan")  # capture now instead of waiting for the job
        conn.commit()
        conn.close()

    def reconcile(self) -> dict[str, bool]:
        """Per table: does the raw table hold exactly the source table's rows?"""
        config = SourceConfig.model_validate(yaml.safe_load((self.config_dir / "billing.yaml").read_text()))
        return {p.table.name: reconcile(p).ok for p in pipelines(config, self.server.port, self.snowflake_port)}


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory, local_snowflake: Any, smtp_sink: Any, airflow_db: None
) -> Iterator[Source]:
    """An emulator server seeded with the billing tables, loaded once (snapshots)."""
    directory = tmp_path_factory.mktemp("driverload")
    server = seeded_server(directory / "billing.duckdb", seed=5)
    config_dir = directory / "config"
    config_dir.mkdir()
    from airflow.configuration import conf

    env = {
        **os.environ,
        # the same key as this process, which reads the Variables the run writes
        "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key"),
        "PYTHONPATH": os.pathsep.join([str(unloadable_driver(directory / "shadow")), str(ROOT)]),
        "CDC_CONFIG_DIR": str(config_dir),
        "CDC_DEADLINES": "off",
        "AIRFLOW_CONN_MSSQL_BILLING": json.dumps(mssql_airflow_conn(server)),
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps(local_snowflake.airflow_conn(database="DRIVERLOAD")),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp_sink.airflow_conn()),
    }
    src = Source(server, config_dir, env, local_snowflake.port)
    # The first load by the pipeline itself, in this process (snapshots never use mssql-python):
    # the DAG's runs below plan from the watermarks it leaves.
    (config_dir / "billing.yaml").write_text(billing_yaml("DRIVERLOAD", change_reader="auto"))
    config = SourceConfig.model_validate(yaml.safe_load((config_dir / "billing.yaml").read_text()))
    for pipeline in pipelines(config, server.port, local_snowflake.port):
        assert pipeline.run_once()["mode"] == "snapshot"
    yield src
    server.stop()


def test_auto_reads_every_change_with_pymssql_when_the_driver_cannot_load(source: Source) -> None:
    # Given changes on both tables after their snapshot, and an mssql-python that cannot load,
    source.change(seed=11)
    # when a run reads them with change_reader: auto,
    run, output = source.run_dag("auto")
    # then it succeeds without a retry, every change landed (raw = source, value for value),
    assert run["state"] == "success", output[-4000:]
    assert all(ti["try_number"] <= 1 for ti in run["tis"]), run["tis"]
    assert source.reconcile() == {"dbo_products": True, "dbo_payments": True}
    # the task log says why pymssql read the rows, naming the library (once: dag.test() runs every
    # task in one process; under a scheduler each task is a process and says it once),
    fallback = [line for line in output.splitlines() if "read with pymssql instead of mssql-python" in line]
    assert len(fallback) == 1 and MISSING in fallback[0], fallback
    # and the status page's figures name the reader of the last batch.
    from airflow.models.variable import Variable  # the metadata DB itself: this test runs outside any task

    records = {
        table: Variable.get(f"cdc_status__billing__{table}", deserialize_json=True)["last_batch"]
        for table in ("dbo_products", "dbo_payments")
    }
    streamed = {table: batch["reader"] for table, batch in records.items() if batch["mode"] == "stream"}
    assert "dbo_payments" in streamed, records  # the workload pays invoices in every round
    assert all(reader.startswith("pymssql (fallback: mssql-python cannot load") for reader in streamed.values())


def test_mssql_python_fails_in_one_try_with_one_mail_naming_the_library(source: Source, mailbox: Any) -> None:
    # Given changes to read and change_reader: mssql-python (no fallback allowed),
    source.change(seed=12)
    # when the run reads them,
    run, output = source.run_dag("mssql-python")
    # then the run's plan failed in its first try (a retry cannot install a library), before any
    # table's task started (the driver is checked once per run, for every table),
    assert run["state"] == "failed", output[-4000:]
    failed = [ti for ti in run["tis"] if ti["state"] == "failed"]
    assert [ti["task_id"] for ti in failed] == ["plan"] and failed[0]["try_number"] == 1, run["tis"]
    # and one mail pages, naming every table, the library and the fix.
    subject, text = mailbox.one_mail()
    assert subject.startswith("[CDC INCIDENT billing-1] billing: ") and "(DriverLoadError)" in subject
    assert subject.endswith("— 2 tables") and "dbo_payments" in text and "dbo_products" in text
    assert "a driver cannot load its native library (failed at once: a retry cannot fix this)" in text
    assert MISSING in text and "packages.txt" in text and "change_reader: pymssql" in text
    assert ".plan (try 1 of " in text
