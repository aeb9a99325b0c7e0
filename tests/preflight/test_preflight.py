"""The preflight (include/cdc_pipeline/preflight.py) on the local stack: an emulator server of its
own, the local Snowflake, the SMTP sink and Airflow's metadata DB (pools, Variables by env).

It passes when everything is in place; with a pool removed, CDC disabled on one table and the salt
unset it fails, naming each with its fix; all checks run and are reported together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.mssql_emulator import connect
from dev.mssql_emulator.process import start_server
from dev.workload.tsql import Workload
from tests.e2e.conftest import billing_config
from tests.fixtures_mssql import mssql_airflow_conn
from tests.unloadable_driver import MISSING, unloadable_driver

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
DATABASE = "PREFLIGHT"
POOLS = {"cdc_sqlserver": 4, "cdc_snowflake": 8}
# Every check of a complete set-up but the change reader's, by name.
OTHER_CHECKS = (
    "billing: SQL Server reachable",
    "billing: SQL Server CDC on database billing",
    "billing: SQL Server login cdc_reader is not sysadmin",
    "billing: SQL Server login cdc_reader can read the cdc schema",
    "billing: SQL Server table dbo.payments",
    "billing: Snowflake reachable",
    "billing: Snowflake warehouse in use",
    f"billing: Snowflake create + insert in {DATABASE}.RAW",
    "SMTP `smtp_default` answers",
    "Variable `cdc_hash_salt_secret` set",
    "pool `cdc_sqlserver` exists with slots",
    "pool `cdc_snowflake` exists with slots",
)


@pytest.fixture(scope="module", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="module")
def source_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A seeded billing database with a least-privileged reader login, as a DBA would set it up."""
    directory = tmp_path_factory.mktemp("preflight_mssql")
    server = start_server(directory / "billing.duckdb", capture_interval=0.5, log_path=directory / "server.log")
    conn = connect(server=server.host, port=server.port, database="billing", user="sa")
    Workload(conn, seed=5).init(accounts=10, products=5, invoices=10)
    cursor = conn.cursor()
    for sql in (
        "CREATE LOGIN cdc_reader WITH PASSWORD = N'reader-Passw0rd'",
        "CREATE USER cdc_reader FOR LOGIN cdc_reader",
        "GRANT SELECT ON SCHEMA::cdc TO cdc_reader",
        "ALTER ROLE db_datareader ADD MEMBER cdc_reader",
    ):
        cursor.execute(sql)
    conn.commit()
    conn.close()
    yield server
    server.stop()


def _pools(pools: dict[str, int]) -> None:
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Pool).filter(Pool.pool.in_(list(POOLS))).delete(synchronize_session=False)
    for name, slots in pools.items():
        Pool.create_or_update_pool(name, slots, f"CDC {name}", include_deferred=False)


@pytest.fixture
def stack(
    source_server: Any, local_snowflake: Any, mailbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Connections, config, pools and salt of a healthy set-up (each test breaks what it needs)."""
    configs = billing_config(tmp_path / "configs", DATABASE)
    reader = mssql_airflow_conn(source_server) | {"login": "cdc_reader", "password": "reader-Passw0rd"}
    monkeypatch.setenv("CDC_CONFIG_DIR", str(configs))
    monkeypatch.setenv("CDC_DEADLINES", "off")
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(reader))
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(local_snowflake.airflow_conn(database=DATABASE)))
    monkeypatch.setenv("AIRFLOW_VAR_CDC_HASH_SALT_SECRET", "preflight-salt")
    _pools(POOLS)
    return {"configs": configs, "server": source_server}


def _by_check(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in findings}


def _source_sql(server: Any, *statements: str) -> None:
    conn = connect(server=server.host, port=server.port, database="billing", user="sa")
    for sql in statements:
        conn.cursor().execute(sql)
        conn.commit()
    conn.close()


def test_preflight_dag_passes_on_a_complete_setup(stack: dict[str, Any]) -> None:
    from include.cdc_pipeline.orchestration.preflight_dag import build_preflight_dag

    # Given connections, pools, salt and a reader login in place, when the DAG runs,
    run = build_preflight_dag().test()
    # then it succeeds and its findings cover every check, each ok.
    assert run.state == "success"
    findings = run.get_task_instance("preflight").xcom_pull(task_ids="preflight")
    checks = _by_check(findings)
    assert all(f["ok"] for f in findings), [f for f in findings if not f["ok"]]
    for name in ("billing: SQL Server change reader (mssql-python) connects", *OTHER_CHECKS):
        assert name in checks, (name, sorted(checks))
    assert "8 slots; used by billing_cdc.tables.apply" in checks["pool `cdc_snowflake` exists with slots"]["detail"]


def test_preflight_names_every_failure_with_its_fix(
    stack: dict[str, Any], mailbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.cdc_pipeline.orchestration.preflight_dag import build_preflight_dag

    # Given a pool removed, CDC disabled on one table and the salt unset, all at once,
    _pools({"cdc_sqlserver": 4})
    _source_sql(
        stack["server"],
        "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'payments', @capture_instance = N'all'",
    )
    monkeypatch.delenv("AIRFLOW_VAR_CDC_HASH_SALT_SECRET")
    try:
        # when the DAG runs,
        run = build_preflight_dag().test()
        # then it fails in one try, and its log and error name each failure with its fix, while
        # every other check still ran and passed.
        assert run.state == "failed"
        ti = run.get_task_instance("preflight")
        assert ti.try_number == 1
        mails = mailbox.mails(expect=1)
        [subject] = [m["Subject"] for m in mails]
        assert subject.startswith("[CDC INCIDENT all_sources-1] all_sources: preflight: "), subject
        assert "checks passed; FAILED: billing: SQL Server table dbo.payments" in subject
        assert subject.endswith("(AirflowFailException) — DAG cdc_preflight"), subject
        from include.cdc_pipeline import preflight
        from include.cdc_pipeline.orchestration.preflight_dag import run_preflight

        findings = _by_check(preflight.as_dicts(run_preflight()))
    finally:
        _source_sql(
            stack["server"],
            "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'payments', @role_name = NULL",
        )
    failed = {name for name, f in findings.items() if not f["ok"]}
    assert failed == {
        "pool `cdc_snowflake` exists with slots",
        "billing: SQL Server table dbo.payments",
        "Variable `cdc_hash_salt_secret` set",
    }
    assert findings["pool `cdc_snowflake` exists with slots"]["detail"].startswith("missing; used by billing_cdc.")
    assert "airflow pools set cdc_snowflake" in findings["pool `cdc_snowflake` exists with slots"]["fix"]
    assert findings["billing: SQL Server table dbo.payments"]["fix"] == (
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'payments', @role_name = NULL, "
        "@supports_net_changes = 0"
    )
    salt = findings["Variable `cdc_hash_salt_secret` set"]
    assert "billing.dbo_accounts" in salt["detail"] and "AIRFLOW_VAR_CDC_HASH_SALT_SECRET" in salt["fix"]
    assert len(findings) > 10


def test_preflight_refuses_a_sysadmin_login_and_reports_an_unreachable_source(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.cdc_pipeline import preflight
    from include.cdc_pipeline.orchestration.preflight_dag import run_preflight

    # Given the source read as sa (sysadmin),
    sa = mssql_airflow_conn(stack["server"])
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(sa))
    findings = _by_check(preflight.as_dicts(run_preflight()))
    sysadmin = findings["billing: SQL Server login sa is not sysadmin"]
    assert not sysadmin["ok"] and "CREATE LOGIN cdc_reader" in sysadmin["fix"]
    assert "GRANT SELECT ON SCHEMA::cdc TO cdc_reader" in sysadmin["fix"]
    # and, given a source nobody listens for, that one check fails and the others still run.
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(sa | {"port": 1}))
    findings = _by_check(preflight.as_dicts(run_preflight()))
    assert not findings["billing: SQL Server reachable"]["ok"]
    assert "mssql_billing" in findings["billing: SQL Server reachable"]["fix"]
    assert findings["billing: Snowflake reachable"]["ok"] and findings["SMTP `smtp_default` answers"]["ok"]


def test_preflight_names_a_change_reader_that_cannot_connect(stack: dict[str, Any]) -> None:
    from include.cdc_pipeline import preflight
    from include.cdc_pipeline.orchestration.preflight_dag import run_preflight

    # Given the change reader told to open with TLS first (TDS 8.0), which the source does not speak,
    config = stack["configs"] / "billing.yaml"
    config.write_text(config.read_text() + "\nchange_reader_options: {Encrypt: strict}\n")
    findings = _by_check(preflight.as_dicts(run_preflight()))
    # then that check fails naming what to look at, while pymssql's checks of the source still pass.
    reader = findings["billing: SQL Server change reader (mssql-python) connects"]
    assert not reader["ok"], reader
    assert "change_reader_options" in reader["fix"] and "change_reader: pymssql" in reader["fix"]
    assert findings["billing: SQL Server reachable"]["ok"] and findings["billing: SQL Server table dbo.payments"]["ok"]


def test_preflight_warns_of_a_change_reader_driver_that_cannot_load_and_runs_every_other_check(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    # Given mssql-python's native driver made unloadable for one process (the suite's copy of its
    # driver package first on PYTHONPATH, whose ODBC driver manager needs libgone.so.7: a machine
    # without libltdl7) and the source's change_reader auto (billing.yaml's),
    assert "change_reader" not in (stack["configs"] / "billing.yaml").read_text()  # auto, the default
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(unloadable_driver(tmp_path / "shadow")), str(ROOT)])}
    # when the preflight runs as `make preflight` runs it (the module the cdc_preflight DAG's task calls),
    done = subprocess.run(
        [sys.executable, "-m", "include.cdc_pipeline.orchestration.preflight_dag"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = done.stdout.splitlines()
    # then it passes with one warning: the change reader's check, naming the missing library and
    # saying that pymssql reads instead, with the fix under it,
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    check = "billing: SQL Server change reader (mssql-python) connects"
    [warning] = [line for line in report if line.startswith("WARN")]
    assert warning.startswith(f"WARN  {check}: change_reader auto reads with pymssql instead (slower): "), warning
    assert f"needs {MISSING}" in warning, warning
    fix = report[report.index(warning) + 1]
    assert fix.strip().startswith("fix: install the OS packages of packages.txt") and "change_reader: pymssql" in fix
    assert report[-1].endswith(f"checks passed (1 with a warning: {check})"), report[-1]
    # and every other check still ran and passed: the source through pymssql, Snowflake, SMTP, salt, pools.
    passed = [line for line in report if line.startswith("ok  ")]
    for name in OTHER_CHECKS:
        assert [line for line in passed if line.startswith(f"ok    {name}: ")], (name, passed)
    assert not [line for line in report if line.startswith("FAIL")], report


def test_the_access_check_reads_grants_through_the_spec_s_check_connection(
    stack: dict[str, Any], local_snowflake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.cdc_pipeline import preflight
    from include.cdc_pipeline.governance.spec import access_file
    from include.cdc_pipeline.orchestration.preflight_dag import run_preflight

    # On an account the pipeline reads as LOADER, which may not read SHOW GRANTS / USERS, the access
    # check must use another connection: access.yaml's check_conn_id. Given one that answers nothing,
    spec = tmp_path / "access.yaml"
    spec.write_text(access_file().read_text() + "\ncheck_conn_id: snowflake_audit\n")
    monkeypatch.setenv("CDC_ACCESS_FILE", str(spec))
    conn = local_snowflake.airflow_conn(database=DATABASE)
    nobody = conn | {"extra": conn["extra"] | {"port": 1, "login_timeout": 5, "network_timeout": 5}}
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_AUDIT", json.dumps(nobody))
    findings = preflight.as_dicts(run_preflight())
    [access] = [f for f in findings if f["check"].startswith("Snowflake access matches")]
    # then the access check fails on that connection alone (the pipeline's own still passes),
    assert not access["ok"] and "check_conn_id" in access["fix"], access
    assert _by_check(findings)["billing: Snowflake reachable"]["ok"]
    # and with check_conn_id reaching the account it reads the grants there.
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_AUDIT", json.dumps(local_snowflake.airflow_conn(database=DATABASE)))
    [access] = [f for f in preflight.as_dicts(run_preflight()) if f["check"].startswith("Snowflake access matches")]
    assert access["ok"], access
