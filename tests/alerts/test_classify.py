"""Errors as the drivers raise them: which a retry can fix, how a person reads them, one fingerprint
per cause. pymssql errors are built exactly as pymssql builds them (dev/mssql_emulator/errors.py,
and a real refused connection); Snowflake's with the connector's own classes."""

from __future__ import annotations

import pymssql
import pytest
import snowflake.connector.errors as sf

from dev.mssql_emulator.errors import to_pymssql
from include.cdc_pipeline.alerts import classify
from include.cdc_pipeline.errors import DriverLoadError, SchemaDriftError, TableNotCapturedError

# What pymssql 2.4 raises for a refused TCP connection (two attempts, one repeated message).
REFUSED = pymssql.exceptions.OperationalError(
    (
        20009,
        b"DB-Lib error message 20009, severity 9:\nUnable to connect: Adaptive Server is unavailable or does not "
        b"exist (127.0.0.1)\nNet-Lib error during Connection refused (111)\nDB-Lib error message 20009, severity 9:"
        b"\nUnable to connect: Adaptive Server is unavailable or does not exist (127.0.0.1)\nNet-Lib error during "
        b"Connection refused (111)\n",
    )
)
LOGIN = pymssql.exceptions.OperationalError(
    (
        18456,
        b"Login failed for user 'cdc_reader'.DB-Lib error message 20018, severity 14:\nGeneral SQL Server error: "
        b"Check messages from the SQL Server\nDB-Lib error message 20002, severity 9:\nAdaptive Server connection "
        b"failed (127.0.0.1)\n",
    )
)


def test_a_refused_connection_reads_as_one_line_per_message_number_first() -> None:
    info = classify.error_info(REFUSED)
    assert info.lines == (
        "DB-Lib 20009: Unable to connect: Adaptive Server is unavailable or does not exist (127.0.0.1); "
        "Net-Lib error during Connection refused (111)",
    )
    assert info.text.splitlines()[-1] == "pymssql.exceptions.OperationalError"
    for unreadable in ("b'", "\\n", "&#x27;", "20018"):
        assert unreadable not in info.text


def test_a_refused_connection_after_a_failed_login_is_still_a_refused_connection() -> None:
    # pymssql keeps the number of the process's last server message: measured, a refused connection
    # after a failed login comes as (18456, <DB-Lib 20009 text>). No server text: the number is stale.
    stale = pymssql.exceptions.OperationalError((18456, REFUSED.args[0][1]))
    assert classify.classify(stale).kind == "network" and classify.classify(stale).retryable
    assert classify.error_info(stale).lines == classify.error_info(REFUSED).lines
    assert classify.fingerprint("billing", stale) == classify.fingerprint("billing", REFUSED)


def test_a_real_refused_connection_is_transient() -> None:
    with pytest.raises(pymssql.OperationalError) as caught:
        pymssql.connect(server="127.0.0.1", port="1", user="sa", password="x", login_timeout=5)
    verdict = classify.classify(caught.value)
    assert verdict.kind == "network" and verdict.retryable
    assert classify.error_info(caught.value).lines[0].startswith("DB-Lib 20009: Unable to connect")


@pytest.mark.parametrize(
    ("error", "kind", "first_line"),
    [
        (LOGIN, "login", "SQL Server 18456: Login failed for user 'cdc_reader'."),
        (
            to_pymssql(229, "The SELECT permission was denied on the object 'accounts_CT', database 'billing'."),
            "permission",
            "SQL Server 229: The SELECT permission was denied on the object 'accounts_CT', database 'billing'.",
        ),
        (
            to_pymssql(4060, 'Cannot open database "billing" requested by the login. The login failed.'),
            "database",
            'SQL Server 4060: Cannot open database "billing" requested by the login. The login failed.',
        ),
        (
            to_pymssql(208, "Invalid object name 'cdc.dbo_accounts_CT'."),
            "object",
            "SQL Server 208: Invalid object name 'cdc.dbo_accounts_CT'.",
        ),
        (
            sf.ProgrammingError(
                msg="SQL compilation error:\nObject 'ANALYTICS.RAW.ACCOUNTS' does not exist or not authorized.",
                errno=2003,
                sqlstate="42S02",
            ),
            "object",
            "Snowflake 002003 (42S02): SQL compilation error: Object 'ANALYTICS.RAW.ACCOUNTS' does not exist or "
            "not authorized.",
        ),
        (
            sf.DatabaseError(msg="Incorrect username or password was specified.", errno=390100, sqlstate="08004"),
            "login",
            "Snowflake 390100 (08004): Incorrect username or password was specified.",
        ),
        (DriverLoadError("mssql-python cannot load libltdl.so.7"), "driver", "mssql-python cannot load libltdl.so.7"),
    ],
)
def test_errors_no_retry_can_fix(error: Exception, kind: str, first_line: str) -> None:
    verdict = classify.classify(error)
    assert (verdict.kind, verdict.retryable) == (kind, False)
    assert classify.error_info(error).lines[0] == first_line
    assert classify.not_retryable(error) == verdict


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (REFUSED, "network"),
        (to_pymssql(1205, "Transaction (Process ID 51) was deadlocked on lock resources.", 13), "lock"),
        (to_pymssql(1222, "Lock request time out period exceeded."), "lock"),
        (sf.ProgrammingError(msg="Session no longer exists.", errno=390111, sqlstate="08001"), "session"),
        (sf.DatabaseError(msg="Authentication token has expired.", errno=390114, sqlstate="08001"), "session"),
        (sf.OperationalError(msg="Could not connect to Snowflake backend", errno=250001, sqlstate="08001"), "network"),
        (sf.ServiceUnavailableError(msg="HTTP 503: Service Unavailable"), "service"),
        (TimeoutError("read timed out"), "timeout"),
        (RuntimeError("read 10 change rows but COPY loaded 9"), "other"),
    ],
)
def test_transient_errors_keep_their_retries(error: Exception, kind: str) -> None:
    verdict = classify.classify(error)
    assert (verdict.kind, verdict.retryable) == (kind, True)
    assert classify.not_retryable(error) is None


def test_project_errors_count_when_the_task_wiring_names_them() -> None:
    drift = SchemaDriftError("dbo_products.UNIT_PRICE is NUMBER(18,4) in Snowflake but maps to NUMBER(18,6)")
    assert classify.classify(drift, (SchemaDriftError,)).kind == "config"
    assert classify.classify(drift).retryable  # unknown to classify on its own: tasks.NOT_RETRYABLE decides


def test_airflow_control_flow_is_never_reclassified() -> None:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    assert classify.not_retryable(AirflowSkipException("idle")) is None
    wrapped = AirflowFailException("TableNotCapturedError (not retryable)")
    wrapped.__cause__ = TableNotCapturedError("dbo.payments has no CDC capture instance")
    assert classify.root_error(wrapped) is wrapped.__cause__
    assert classify.classify(wrapped).kind == "config"  # fail_fast already decided


def test_one_cause_on_several_tables_is_one_fingerprint() -> None:
    names = ["dbo_payments", "dbo.payments", "payments", "PAYMENTS", "dbo_accounts", "dbo.accounts", "ACCOUNTS"]
    a = TableNotCapturedError(
        "dbo.payments has no CDC capture instance: EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', "
        "@source_name = N'payments', @role_name = NULL"
    )
    b = TableNotCapturedError(
        "dbo.accounts has no CDC capture instance: EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', "
        "@source_name = N'accounts', @role_name = NULL"
    )
    assert classify.fingerprint("billing", a, names) == classify.fingerprint("billing", b, names)
    assert classify.fingerprint("billing", a, names) != classify.fingerprint("crm", a, names)
    assert classify.fingerprint("billing", REFUSED) != classify.fingerprint("billing", LOGIN)
    lsn_a = SchemaDriftError("watermark 0x0000002A000001F00003 is older than start_lsn 0x0000002B000000100001")
    lsn_b = SchemaDriftError("watermark 0x00000031000000100002 is older than start_lsn 0x00000032000000200001")
    assert classify.fingerprint("billing", lsn_a) == classify.fingerprint("billing", lsn_b)


def test_a_bytes_repr_inside_a_message_is_decoded() -> None:
    error = RuntimeError("source failed: (20009, b'Unable to connect\\nNet-Lib error during Connection refused\\n')")
    text = classify.error_info(error).text
    assert "b'" not in text and "\\n" not in text and "Net-Lib error during Connection refused" in text


def test_mssql_python_errors_carry_their_sqlstate() -> None:
    exceptions = pytest.importorskip("mssql_python.exceptions")  # loads the driver's native library
    error = exceptions.sqlstate_to_exception(
        "42S02", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Invalid object name 'cdc.dbo_x_CT'."
    )
    info = classify.error_info(error)
    assert info.lines[0] == "SQL Server (SQLSTATE 42S02): Invalid object name 'cdc.dbo_x_CT'."
    assert classify.classify(error).kind == "object"
    login = exceptions.sqlstate_to_exception("28000", "[Microsoft][ODBC Driver 18 for SQL Server]Login failed")
    assert classify.classify(login).kind == "login"
    link = exceptions.sqlstate_to_exception("08S01", "[Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: reset")
    assert classify.classify(link).retryable


def test_every_runbook_section_a_mail_names_exists() -> None:
    from pathlib import Path

    from include.cdc_pipeline.alerts import desk

    headings = {
        line.removeprefix("## ").strip()
        for line in (Path(__file__).resolve().parents[2] / "docs" / "runbook.md").read_text().splitlines()
        if line.startswith("## ")
    }
    named = {section for _, section in classify.KINDS.values()} | {section for _, section in desk._HEALTH.values()}
    named |= {"Deadline missed", "Run failed without a failed task"}
    assert named <= headings, named - headings


def test_one_refused_server_is_one_fingerprint_whichever_driver_met_it() -> None:
    # The stream reads with mssql-python, the plan with pymssql: an outage that starts during one
    # run's read and goes on in the next run's plan must stay one incident, not open a second.
    from include.cdc_pipeline.source import odbc_connection_string

    mssql_python = pytest.importorskip("mssql_python")  # loads the driver's native library
    with pytest.raises(pymssql.OperationalError) as by_pymssql:
        pymssql.connect(server="127.0.0.1", port="1", user="sa", password="x", login_timeout=5)
    with pytest.raises(mssql_python.exceptions.Error) as by_mssql_python:  # login timeout (103) 2 s, not 15
        mssql_python.connect(odbc_connection_string("127.0.0.1", 1, "", "sa", "x"), attrs_before={103: 2})
    assert type(by_mssql_python.value).__module__.startswith("mssql_python")
    assert classify.classify(by_mssql_python.value).kind == classify.classify(by_pymssql.value).kind == "network"
    assert classify.fingerprint("billing", by_mssql_python.value) == classify.fingerprint("billing", by_pymssql.value)
    # still one per source and per cause: another source, or the login refused, is another incident
    assert classify.fingerprint("crm", by_pymssql.value) != classify.fingerprint("billing", by_pymssql.value)
    assert classify.fingerprint("billing", LOGIN) != classify.fingerprint("billing", by_pymssql.value)
