"""Logins, users, roles and permissions as SQL Server reports them (dev/mssql_emulator/security.py).

IS_SRVROLEMEMBER: https://learn.microsoft.com/sql/t-sql/functions/is-srvrolemember-transact-sql
HAS_PERMS_BY_NAME: https://learn.microsoft.com/sql/t-sql/functions/has-perms-by-name-transact-sql
Fixed database roles: https://learn.microsoft.com/sql/relational-databases/security/authentication-access/database-level-roles
"""

from __future__ import annotations

from collections.abc import Iterator

import pymssql.exceptions as pe
import pytest

from dev.mssql_emulator import Engine


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(":memory:")
    sa = eng.connect()
    cur = sa.cursor()
    for sql in (
        "CREATE TABLE dbo.accounts (account_id int NOT NULL PRIMARY KEY, email nvarchar(100) NULL)",
        "CREATE TABLE dbo.secrets (id int NOT NULL PRIMARY KEY)",
        "EXEC sys.sp_cdc_enable_db",
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'accounts', @role_name = NULL",
    ):
        cur.execute(sql)
        sa.commit()
    yield eng
    eng.close()


def _scalar(conn, sql: str):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchone()[0]


def _run(conn, *statements: str) -> None:
    cur = conn.cursor()
    for sql in statements:
        cur.execute(sql)
    conn.commit()


def test_sa_is_sysadmin_and_holds_every_permission(engine: Engine) -> None:
    sa = engine.connect()
    assert _scalar(sa, "SELECT SUSER_SNAME()") == "sa"
    assert _scalar(sa, "SELECT IS_SRVROLEMEMBER('sysadmin')") == 1
    assert _scalar(sa, "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')") == 1
    assert _scalar(sa, "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE')") == 1


def test_invalid_role_class_permission_or_object_is_null(engine: Engine) -> None:
    sa = engine.connect()
    assert _scalar(sa, "SELECT IS_SRVROLEMEMBER('no_such_role')") is None
    assert _scalar(sa, "SELECT IS_SRVROLEMEMBER('sysadmin', 'nobody')") is None
    assert _scalar(sa, "SELECT HAS_PERMS_BY_NAME('cdc', 'NOT_A_CLASS', 'SELECT')") is None
    assert _scalar(sa, "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'FLY')") is None
    assert _scalar(sa, "SELECT HAS_PERMS_BY_NAME('dbo.nope', 'OBJECT', 'SELECT')") is None


def test_a_reader_login_sees_exactly_what_was_granted(engine: Engine) -> None:
    # Given a login with a database user and SELECT granted on the cdc schema only,
    _run(
        engine.connect(),
        "CREATE LOGIN cdc_reader WITH PASSWORD = N'x'",
        "CREATE USER cdc_reader FOR LOGIN cdc_reader",
        "GRANT SELECT ON SCHEMA::cdc TO cdc_reader",
    )
    reader = engine.connect(login="cdc_reader")
    # then it is not sysadmin, can read the cdc schema and its change tables, not dbo's tables.
    assert _scalar(reader, "SELECT SUSER_SNAME()") == "cdc_reader"
    assert _scalar(reader, "SELECT IS_SRVROLEMEMBER('sysadmin')") == 0
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')") == 1
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('cdc.dbo_accounts_CT', 'OBJECT', 'SELECT')") == 1
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('dbo.accounts', 'OBJECT', 'SELECT')") == 0
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE')") == 0
    # db_datareader adds SELECT everywhere; a DENY on one object wins over it.
    _run(engine.connect(), "ALTER ROLE db_datareader ADD MEMBER cdc_reader", "DENY SELECT ON dbo.secrets TO cdc_reader")
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('dbo.accounts', 'OBJECT', 'SELECT')") == 1
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('[dbo].[secrets]', 'OBJECT', 'SELECT')") == 0
    assert _scalar(reader, "SELECT IS_MEMBER('db_datareader')") == 1
    # REVOKE removes the schema grant (db_datareader still covers SELECT).
    _run(
        engine.connect(),
        "REVOKE SELECT ON SCHEMA::cdc FROM cdc_reader",
        "ALTER ROLE db_datareader DROP MEMBER cdc_reader",
    )
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')") == 0


def test_a_login_without_a_database_user_has_no_permission(engine: Engine) -> None:
    _run(engine.connect(), "CREATE LOGIN lonely WITH PASSWORD = N'x'")
    lonely = engine.connect(login="lonely")
    assert _scalar(lonely, "SELECT IS_SRVROLEMEMBER('sysadmin')") == 0
    assert _scalar(lonely, "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')") == 0


def test_sysadmin_membership_and_principal_errors(engine: Engine) -> None:
    sa = engine.connect()
    _run(sa, "CREATE LOGIN ops WITH PASSWORD = N'x'", "ALTER SERVER ROLE sysadmin ADD MEMBER ops")
    assert _scalar(engine.connect(login="ops"), "SELECT IS_SRVROLEMEMBER('sysadmin')") == 1
    with pytest.raises(pe.DatabaseError, match="15025"):
        _run(sa, "CREATE LOGIN ops WITH PASSWORD = N'x'")
    # Only sysadmin (or db_owner, for database-level principals) may change security.
    _run(sa, "CREATE LOGIN weak WITH PASSWORD = N'x'", "CREATE USER weak FOR LOGIN weak")
    with pytest.raises(pe.DatabaseError, match="15247"):
        _run(engine.connect(login="weak"), "GRANT SELECT ON SCHEMA::cdc TO weak")


def test_the_stack_reader_login_is_idempotent_and_least_privileged(engine: Engine) -> None:
    # The grant `make demo` and the compose seed service run (dev/workload/tsql.py),
    # twice: the second run meets 15025/15023 (login/user exists) and changes nothing.
    from dev.workload.tsql import grant_reader

    for _ in range(2):
        grant_reader(engine.connect(), "cdc_reader", "Reader-Passw0rd!")
    reader = engine.connect(login="cdc_reader")
    assert _scalar(reader, "SELECT IS_SRVROLEMEMBER('sysadmin')") == 0
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')") == 1
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('dbo.accounts', 'OBJECT', 'SELECT')") == 1
    assert _scalar(reader, "SELECT HAS_PERMS_BY_NAME('dbo.accounts', 'OBJECT', 'INSERT')") == 0
