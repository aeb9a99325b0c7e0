"""Errors no retry can fix fail at once and page once; transient errors keep their retries.

The real ``billing_cdc`` DAG (dag.test()) against an emulator server of its own, the local
Snowflake and the SMTP sink: CDC disabled on one table is a ``TableNotCapturedError`` — the task
must fail in its first try and send exactly one e-mail naming the remedy, not wait ~3.5 minutes
of retries with backoff first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.mssql_emulator import connect
from tests.alerts.billing_source import billing_yaml, seeded_server
from tests.fixtures_mssql import mssql_airflow_conn

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CONFIG = billing_yaml("FAILFAST")


@pytest.fixture(scope="module")
def source_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An emulator server of this module's own (one database per server), seeded with the billing tables."""
    server = seeded_server(tmp_path_factory.mktemp("failfast_mssql") / "billing.duckdb", seed=3)
    yield server
    server.stop()


# In `make test-all` (31 s): `make test` has the same one-try path for a driver that cannot load
# (test_driver_load.py) and the named error of a table not captured (test_source_plan.py).
@pytest.mark.slow
def test_table_not_captured_fails_in_one_try_with_one_mail(
    source_server: Any, local_snowflake: Any, mailbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given CDC disabled on dbo.payments (a person must enable it: no retry can fix that),
    conn = connect(server=source_server.host, port=source_server.port, database="billing")
    conn.cursor().execute(
        "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'payments', @capture_instance = N'all'"
    )
    conn.commit()
    (tmp_path / "billing.yaml").write_text(CONFIG)
    monkeypatch.setenv("CDC_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("CDC_DEADLINES", "off")
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(mssql_airflow_conn(source_server)))
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(local_snowflake.airflow_conn(database="FAILFAST")))
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

    dag = build_cdc_dag("billing", directory=tmp_path)
    assert dag.default_args["retries"] == 3  # transient errors keep their retries
    # when the DAG runs,
    run = dag.test()
    # then payments' task failed in its first try (planned again there, the error no retry fixes),
    # while the captured table loaded normally,
    assert run.state == "failed"
    tis = {(ti.task_id, ti.rendered_map_index): ti for ti in run.get_task_instances()}
    failed = tis[("tables.extract_load", "dbo_payments")]
    assert failed.state == "failed" and failed.try_number == 1
    assert tis[("plan", None)].state == "success"  # one table's error never stops the others' planning
    # (products' first load: its snapshot started in plan and loaded by the snapshot workers)
    workers = [ti for (task, name), ti in tis.items() if task == "tables.apply" and name.startswith("snapshot worker")]
    assert workers and all(ti.state == "success" for ti in workers)
    # and exactly one mail names the table, the cause and the exact call that fixes it.
    subject, text = mailbox.one_mail()
    assert subject.startswith("[CDC INCIDENT billing-1] billing: ") and "(TableNotCapturedError) — 1 table" in subject
    assert "Failing now: 1 table: dbo_payments" in text
    assert "billing_cdc.tables.extract_load (try 1 of 4" in text and "a retry cannot fix this" in text
    assert "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'payments'" in text


def test_a_failed_login_fails_in_one_try_with_one_mail(
    source_server: Any, local_snowflake: Any, mailbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the source's connection with a wrong password (no retry can fix a login),
    (tmp_path / "billing.yaml").write_text(CONFIG)
    monkeypatch.setenv("CDC_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("CDC_DEADLINES", "off")
    wrong = mssql_airflow_conn(source_server) | {"password": "not-the-password"}
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_BILLING", json.dumps(wrong))
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(local_snowflake.airflow_conn(database="FAILFAST")))
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

    # when the DAG runs,
    run = build_cdc_dag("billing", directory=tmp_path).test()
    # then `plan` failed in its first try (no table ran),
    assert run.state == "failed"
    plan = run.get_task_instance("plan")
    assert plan.state == "failed" and plan.try_number == 1
    # and one mail pages, the server's error number and message first.
    subject, text = mailbox.one_mail()
    assert subject.startswith("[CDC INCIDENT billing-1] billing: SQL Server 18456: Login failed for user"), subject
    assert "— 2 tables" in subject
    assert "login failed (failed at once: a retry cannot fix this)" in text
    assert "billing_cdc.plan (try 1 of 4" in text and "pymssql.exceptions.OperationalError" in text


@pytest.mark.parametrize(
    "error",
    [
        "RetentionGapError",
        "SourceRewoundError",
        "SchemaDriftError",
        "UnsupportedTypeError",
        "TableNotCapturedError",
        "TableConfigError",
        "ConfigError",
        "DriverLoadError",
    ],
)
def test_errors_no_retry_can_fix_fail_the_task_at_once(error: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from include.cdc_pipeline.orchestration import tasks

    cls = next(c for c in tasks.NOT_RETRYABLE if c.__name__ == error)
    with (
        pytest.raises(AirflowFailException, match=rf"^{error} \(not retryable.*\): what to do") as caught,
        tasks.fail_fast(),
    ):
        raise cls("what to do")
    assert isinstance(caught.value.__cause__, cls)


@pytest.mark.parametrize("error", [ConnectionError("server restarting"), TimeoutError("lock timeout")])
def test_transient_errors_keep_their_retries(error: Exception) -> None:
    from include.cdc_pipeline.errors import CdcError
    from include.cdc_pipeline.orchestration import tasks

    for transient in (error, CdcError("read 10 change rows but COPY loaded 9")):
        with pytest.raises(type(transient)) as caught, tasks.fail_fast():
            raise transient
        assert caught.value is transient


@pytest.mark.parametrize(
    ("number", "message", "kind"),
    [
        (18456, "Login failed for user 'cdc_reader'.", "login failed"),
        (229, "The SELECT permission was denied on the object 'dbo_accounts_CT'.", "permission denied"),
        (4060, 'Cannot open database "billing" requested by the login. The login failed.', "database not accessible"),
        (208, "Invalid object name 'cdc.dbo_accounts_CT'.", "object not found"),
    ],
)
def test_server_errors_no_retry_can_fix_fail_at_once(number: int, message: str, kind: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from dev.mssql_emulator.errors import to_pymssql
    from include.cdc_pipeline.orchestration import tasks

    error = to_pymssql(number, message)
    with pytest.raises(AirflowFailException) as caught, tasks.fail_fast():
        raise error
    assert str(caught.value).startswith(f"{type(error).__name__} (not retryable: a retry cannot fix this: {kind})")
    assert f"SQL Server {number}: {message}" in str(caught.value)
    assert caught.value.__cause__ is error


def test_a_deadlock_keeps_its_retries() -> None:
    from dev.mssql_emulator.errors import deadlock_victim, to_pymssql
    from include.cdc_pipeline.orchestration import tasks

    victim = deadlock_victim(51)
    error = to_pymssql(victim.number, victim.message, victim.severity)
    with pytest.raises(type(error)) as caught, tasks.fail_fast():
        raise error
    assert caught.value is error
