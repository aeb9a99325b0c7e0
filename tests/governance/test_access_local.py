"""The access spec against the local Snowflake: apply, idempotence, least privilege, masking, preflight.

One database (GOV_ACCESS) on the session's server gets the spec of ``include/config/access.yaml``
for a copy of the billing source; its raw tables are created and filled as the loader would, a
mart as dbt would. Each test then checks data or Snowflake's error as the role in question.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import snowflake.connector.errors

from include.cdc_pipeline.config import SourceConfig, load_source_config, source_files
from include.cdc_pipeline.governance.check import check_access
from include.cdc_pipeline.governance.live import query, read_state
from include.cdc_pipeline.governance.plan import apply, make_plan
from include.cdc_pipeline.governance.spec import State, desired_state, load_access_spec
from tests.fixtures_snowflake import LocalSnowflake

pytestmark = pytest.mark.integration

DB = "GOV_ACCESS"


def _source() -> SourceConfig:
    billing = next(load_source_config(p) for p in source_files() if p.stem == "billing")
    return billing.model_copy(update={"target": billing.target.model_copy(update={"database": DB})})


@pytest.fixture(scope="module")
def governed(local_snowflake: LocalSnowflake) -> Iterator[dict[str, Any]]:
    """The spec applied, raw tables created and filled by LOADER, a mart built by TRANSFORMER."""
    sources = [_source()]
    wanted = desired_state(load_access_spec(), sources)
    admin = local_snowflake.connect(role="ACCOUNTADMIN")
    plans = [make_plan(wanted, read_state(admin, wanted))]
    apply(admin, plans[0].statements)
    plans.append(make_plan(wanted, read_state(admin, wanted)))
    loader = local_snowflake.connect(database=DB, schema="RAW", role="LOADER")
    columns = "ACCOUNT_ID NUMBER(10,0), ACCOUNT_NAME VARCHAR, EMAIL VARCHAR(64), COUNTRY VARCHAR(2)"
    for table in ("ACCOUNTS", "ACCOUNTS_HISTORY"):
        run(loader, f"CREATE TABLE RAW.{table} ({columns})")
    for table in ("ACCOUNTS", "ACCOUNTS_HISTORY"):
        run(
            loader,
            f"INSERT INTO RAW.{table} VALUES (1, 'Ada Lovelace', 'a1b2', 'GB'), (2, 'Alan Turing', 'c3d4', 'GB')",
        )
    # The raw tables exist now: the next plan tags their PII columns, the one after is empty.
    plans.append(make_plan(wanted, read_state(admin, wanted)))
    apply(admin, plans[-1].statements)
    plans.append(make_plan(wanted, read_state(admin, wanted)))
    transformer = local_snowflake.connect(database=DB, schema="MARTS", role="TRANSFORMER")
    run(transformer, "CREATE TABLE MARTS.DIM_ACCOUNTS AS SELECT ACCOUNT_ID, ACCOUNT_NAME, COUNTRY FROM RAW.ACCOUNTS")
    # what the dbt post-hook does for a column with meta pii (include/dbt/billing/macros/pii_tags.sql)
    run(transformer, f"ALTER TABLE MARTS.DIM_ACCOUNTS MODIFY COLUMN ACCOUNT_NAME SET TAG {DB}.GOVERNANCE.PII = 'name'")
    try:
        yield {"admin": admin, "wanted": wanted, "plans": plans, "sources": sources}
    finally:
        for conn in (admin, loader, transformer):
            conn.close()


def run(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def refused(conn: Any, sql: str) -> snowflake.connector.errors.ProgrammingError:
    with pytest.raises(snowflake.connector.errors.ProgrammingError) as info:
        run(conn, sql)
    return info.value


def test_applying_twice_changes_nothing(governed: dict[str, Any]) -> None:
    # Given the spec applied to an empty database, when it is planned again, nothing is left to do
    first, second, tags, last = governed["plans"]
    # (the account-wide part — roles, users, warehouses — may be in place from another test's database)
    assert len([s for s in first.statements if DB in s.sql]) > 30
    assert second.statements == []
    # the raw tables created since only need their PII tags (account_name: name, email: email)
    assert sorted(s.sql for s in tags.statements) == sorted(
        f'ALTER TABLE "{DB}"."RAW"."{t}" MODIFY COLUMN "{c}" SET TAG {DB}.GOVERNANCE.PII = \'{v}\''
        for t in ("ACCOUNTS", "ACCOUNTS_HISTORY")
        for c, v in (("ACCOUNT_NAME", "name"), ("EMAIL", "email"))
    )
    assert last.statements == []
    admin = governed["admin"]
    monitors = {r["name"]: r for r in query(admin, "SHOW RESOURCE MONITORS LIKE '%_MONITOR'")}
    assert {
        (m["credit_quota"], m["notify_at"], m["suspend_at"], m["suspend_immediately_at"]) for m in monitors.values()
    } >= {("30.00", "75%", "90%", "100%")}
    warehouses = {r["name"]: r for r in query(admin, "SHOW WAREHOUSES LIKE 'CDC_LOADING'")}
    assert (warehouses["CDC_LOADING"]["auto_suspend"], warehouses["CDC_LOADING"]["resource_monitor"]) == (
        "60",
        "CDC_LOADING_MONITOR",
    )
    users = {r["role"] for r in query(admin, "SHOW GRANTS TO USER CDC_LOADER")}
    assert users == {"LOADER"}


def test_loader_cannot_read_or_create_in_marts(local_snowflake: LocalSnowflake, governed: dict[str, Any]) -> None:
    loader = local_snowflake.connect(database=DB, schema="RAW", role="LOADER")
    try:
        error = refused(loader, f"SELECT * FROM {DB}.MARTS.DIM_ACCOUNTS")
        assert (error.errno, error.sqlstate) == (2003, "02000")
        assert f"Schema '{DB}.MARTS' does not exist or not authorized." in error.msg
        error = refused(loader, f"CREATE TABLE {DB}.MARTS.X (A INT)")
        assert f"Schema '{DB}.MARTS' does not exist or not authorized." in error.msg
        # ... while its own schemas work: it writes and reads RAW
        assert run(loader, "SELECT COUNT(*) FROM RAW.ACCOUNTS") == [(2,)]
    finally:
        loader.close()


def test_transformer_cannot_write_raw(local_snowflake: LocalSnowflake, governed: dict[str, Any]) -> None:
    transformer = local_snowflake.connect(database=DB, schema="RAW", role="TRANSFORMER")
    try:
        error = refused(transformer, "INSERT INTO RAW.ACCOUNTS VALUES (3, 'Grace Hopper', 'e5f6', 'US')")
        assert (error.errno, error.sqlstate) == (3001, "42501")
        assert f"Insufficient privileges to operate on table '{DB}.RAW.ACCOUNTS'" in error.msg
        error = refused(transformer, f"CREATE TABLE {DB}.RAW.X (A INT)")
        assert "Insufficient privileges to operate on schema 'RAW'" in error.msg
        # nor drop a raw table (only its owner, the loader, may), IF EXISTS or not
        for drop in ("DROP TABLE RAW.ACCOUNTS", "DROP TABLE IF EXISTS RAW.ACCOUNTS"):
            error = refused(transformer, drop)
            assert f"Insufficient privileges to operate on table '{DB}.RAW.ACCOUNTS'" in error.msg, error.msg
        # it reads RAW (the future grant reached the tables the loader created), PII in clear
        assert run(transformer, "SELECT ACCOUNT_NAME FROM RAW.ACCOUNTS ORDER BY ACCOUNT_ID") == [
            ("Ada Lovelace",),
            ("Alan Turing",),
        ]
    finally:
        transformer.close()


@pytest.mark.parametrize(
    ("role", "names"),
    [("READER", ["***MASKED***", "***MASKED***"]), ("PII_READER", ["Ada Lovelace", "Alan Turing"])],
)
def test_reader_sees_masked_pii_where_pii_reader_sees_values(
    local_snowflake: LocalSnowflake, governed: dict[str, Any], role: str, names: list[str]
) -> None:
    conn = local_snowflake.connect(database=DB, schema="MARTS", role=role)
    try:
        rows = run(conn, "SELECT d.ACCOUNT_ID, d.ACCOUNT_NAME, COUNTRY FROM MARTS.DIM_ACCOUNTS AS d ORDER BY 1")
        assert rows == [(1, names[0], "GB"), (2, names[1], "GB")]
        error = refused(conn, f"SELECT * FROM {DB}.RAW.ACCOUNTS")  # readers never see RAW
        assert f"Schema '{DB}.RAW' does not exist or not authorized." in error.msg
    finally:
        conn.close()


def test_administrators_see_raw_pii_masked(governed: dict[str, Any]) -> None:
    # SYSADMIN inherits LOADER and READER, not PII_READER: the raw and history columns are masked too
    admin = governed["admin"]
    run(admin, "USE ROLE SYSADMIN")
    for table in ("ACCOUNTS", "ACCOUNTS_HISTORY"):
        rows = run(admin, f"SELECT ACCOUNT_NAME, EMAIL, COUNTRY FROM {DB}.RAW.{table} ORDER BY ACCOUNT_ID")
        assert rows == [("***MASKED***", "***MASKED***", "GB")] * 2
    run(admin, "USE ROLE ACCOUNTADMIN")


def test_raw_tables_the_loader_creates_are_tagged_before_any_row_lands(
    local_snowflake: LocalSnowflake, governed: dict[str, Any]
) -> None:
    from include.cdc_pipeline.config import DeleteMode
    from include.cdc_pipeline.pipeline import pii_tag_name
    from include.cdc_pipeline.snowflake_sql import TableLayout
    from include.cdc_pipeline.types import SourceColumn, map_column
    from include.cdc_pipeline.warehouse import Warehouse

    # Given a table with a PII column the pipeline meets for the first time (no access apply since),
    columns = (
        map_column(SourceColumn("id", "int", 4, 10, 0, False)),
        map_column(SourceColumn("email", "nvarchar", 200, 0, 0, True)),
    )
    layout = TableLayout(DB, "RAW", "STAGING", "PEOPLE", "BILLING__PEOPLE", columns, ("ID",), DeleteMode.SOFT,
                         pii=(("EMAIL", "email"),), pii_tag=pii_tag_name(DB))  # fmt: skip
    loader = local_snowflake.connect(database=DB, schema="RAW", role="LOADER")
    try:
        # when the loader creates raw and history (as the first batch does) and a row lands,
        Warehouse(loader).ensure_target_tables(layout)
        for table in ("PEOPLE", "PEOPLE_HISTORY"):
            run(loader, f"INSERT INTO RAW.{table} (ID, EMAIL) VALUES (1, 'ada@example.com')")
    finally:
        loader.close()
    # then the column is masked from the first row on (SYSADMIN is no PII reader), with no apply between.
    admin = governed["admin"]
    run(admin, "USE ROLE SYSADMIN")
    try:
        for table in ("PEOPLE", "PEOPLE_HISTORY"):
            assert run(admin, f"SELECT ID, EMAIL FROM {DB}.RAW.{table}") == [(1, "***MASKED***")]
    finally:
        run(admin, "USE ROLE ACCOUNTADMIN")


def test_preflight_names_a_grant_missing_from_the_account(governed: dict[str, Any]) -> None:
    admin = governed["admin"]
    assert check_access(governed["sources"], lambda: admin).ok
    run(admin, f"REVOKE SELECT ON FUTURE TABLES IN SCHEMA {DB}.RAW FROM ROLE TRANSFORMER")
    run(admin, "GRANT ROLE PII_READER TO ROLE SYSADMIN")  # not in the spec: revoked by the plan
    try:
        finding = check_access(governed["sources"], lambda: admin)
        assert not finding.ok
        assert f"GRANT SELECT ON FUTURE TABLES IN SCHEMA {DB}.RAW TO ROLE TRANSFORMER" in finding.detail
        assert "REVOKE ROLE PII_READER FROM ROLE SYSADMIN" in finding.detail
        assert finding.detail.startswith("2 difference(s)")
    finally:
        wanted: State = governed["wanted"]
        apply(admin, make_plan(wanted, read_state(admin, wanted)).statements)
    assert check_access(governed["sources"], lambda: admin).ok
