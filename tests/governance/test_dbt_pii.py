"""dbt as TRANSFORMER on a database governed by the access spec: marts keep PII, tagged, masked for READER.

A small billing timeline is seeded into GOV_DBT (RAW and history tables, as the pipeline writes them),
the spec is applied, and `dbt run --select +dim_accounts` runs as TRANSFORMER (it inherits
PII_READER, so it copies names in clear); the marts post-hook (macros/pii_tags.sql) tags the columns
declared `meta: {pii: …}`, so READER sees them masked and PII_READER in clear.
"""

from __future__ import annotations

from typing import Any

import pytest

from dev import dbt_local
from dev.localenv import LOCAL_SALT
from dev.workload import timeline
from include.cdc_pipeline.config import load_source_config, source_files
from include.cdc_pipeline.governance.live import query, read_state
from include.cdc_pipeline.governance.plan import apply, make_plan
from include.cdc_pipeline.governance.spec import desired_state, load_access_spec
from tests.fixtures_snowflake import LocalSnowflake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DB = "GOV_DBT"


@pytest.fixture(scope="module")
def governed_marts(local_snowflake: LocalSnowflake, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """GOV_DBT seeded, the spec applied, and every model of the dbt project built as TRANSFORMER."""
    tmp_path = tmp_path_factory.mktemp("dbt_pii")
    data = timeline.generate(days=20, history_days=10, salt=LOCAL_SALT)
    dbt_local.seed(data, local_snowflake.port, database=DB)
    billing = next(load_source_config(p) for p in source_files() if p.stem == "billing")
    source = billing.model_copy(update={"target": billing.target.model_copy(update={"database": DB})})
    wanted = desired_state(load_access_spec(), [source])
    with local_snowflake.connect(role="ACCOUNTADMIN") as admin:
        apply(admin, make_plan(wanted, read_state(admin, wanted)).statements)
        assert make_plan(wanted, read_state(admin, wanted)).empty
    dbt_local.run_dbt(
        ["run"], local_snowflake.port, database=DB,
        target_path=tmp_path / "target", log_path=tmp_path / "logs", extra_env={"CDC_DBT_ROLE": "TRANSFORMER"},
        capture=True, timeout=900,
    )  # fmt: skip
    return source


def test_marts_keep_the_pii_tag_and_readers_see_it_masked(local_snowflake: LocalSnowflake, governed_marts: Any) -> None:
    names = {}
    for role in ("READER", "PII_READER"):
        with local_snowflake.connect(database=DB, role=role) as conn:
            rows = query(conn, "SELECT ACCOUNT_ID, ACCOUNT_NAME, EMAIL_HASH FROM MARTS.DIM_ACCOUNTS")
            names[role] = {(r["account_id"], r["account_name"], r["email_hash"]) for r in rows}
    assert names["READER"] and {(n, e) for _, n, e in names["READER"]} == {("***MASKED***", "***MASKED***")}
    with local_snowflake.connect(database=DB, role="TRANSFORMER") as conn:
        raw = {r["account_name"] for r in query(conn, "SELECT DISTINCT ACCOUNT_NAME FROM RAW.ACCOUNTS_HISTORY")}
        tags = query(
            conn,
            f"SELECT COLUMN_NAME, TAG_VALUE FROM TABLE({DB}.INFORMATION_SCHEMA.TAG_REFERENCES_ALL_COLUMNS("
            f"'{DB}.MARTS.DIM_ACCOUNTS', 'table'))",
        )
    assert {n for _, n, _ in names["PII_READER"]} <= raw and "***MASKED***" not in raw
    assert {(t["column_name"], t["tag_value"]) for t in tags} == {("ACCOUNT_NAME", "name"), ("EMAIL_HASH", "email")}


def test_no_mart_shows_a_reader_any_pii_value_of_raw(local_snowflake: LocalSnowflake, governed_marts: Any) -> None:
    # PII is declared once, in the source YAML (pii_columns); a mart that selects such a column
    # must carry meta pii so the post-hook tags it. Whatever a model does, the property is: every
    # value of every PII column in raw (current and history), and no cell of any mart READER can
    # read equals one of them.
    pii: set[str] = set()
    with local_snowflake.connect(database=DB, role="TRANSFORMER") as conn:
        for table in governed_marts.tables:
            for column in (table.snowflake_column(c) for c in table.pii_columns):
                for name in (table.snowflake_table, f"{table.snowflake_table}_HISTORY"):
                    rows = query(
                        conn, f'SELECT DISTINCT "{column}" AS v FROM RAW."{name}" WHERE "{column}" IS NOT NULL'
                    )
                    pii |= {str(r["v"]) for r in rows}
    assert len(pii) > 10 and "***MASKED***" not in pii
    with local_snowflake.connect(database=DB, role="READER") as conn:
        marts = [r["table_name"] for r in query(conn, f"SELECT TABLE_NAME FROM {DB}.INFORMATION_SCHEMA.TABLES"
                                                      " WHERE TABLE_SCHEMA = 'MARTS'")]  # fmt: skip
        assert len(marts) >= 7, marts
        seen = 0
        for mart in marts:
            for row in query(conn, f'SELECT * FROM MARTS."{mart}"'):
                seen += 1
                leaked = {k: v for k, v in row.items() if v is not None and str(v) in pii}
                assert not leaked, (mart, leaked)
    assert seen > 100
