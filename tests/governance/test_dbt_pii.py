"""dbt as TRANSFORMER on a database governed by the access spec: marts keep PII, tagged, masked for READER.

A small billing timeline is seeded into GOV_DBT (RAW and history tables, as the pipeline writes them),
the spec is applied, and `dbt run --select +dim_accounts` runs as TRANSFORMER (it inherits
PII_READER, so it copies names in clear); the marts post-hook (macros/pii_tags.sql) tags the columns
declared `meta: {pii: …}`, so READER sees them masked and PII_READER in clear.
"""

from __future__ import annotations

from pathlib import Path

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


def test_marts_keep_the_pii_tag_and_readers_see_it_masked(local_snowflake: LocalSnowflake, tmp_path: Path) -> None:
    data = timeline.generate(days=20, history_days=10, salt=LOCAL_SALT)
    dbt_local.seed(data, local_snowflake.port, database=DB)
    billing = next(load_source_config(p) for p in source_files() if p.stem == "billing")
    source = billing.model_copy(update={"target": billing.target.model_copy(update={"database": DB})})
    wanted = desired_state(load_access_spec(), [source])
    with local_snowflake.connect(role="ACCOUNTADMIN") as admin:
        apply(admin, make_plan(wanted, read_state(admin, wanted)).statements)
        assert make_plan(wanted, read_state(admin, wanted)).empty
    dbt_local.run_dbt(
        ["run", "--select", "+dim_accounts"], local_snowflake.port, database=DB,
        target_path=tmp_path / "target", log_path=tmp_path / "logs", extra_env={"CDC_DBT_ROLE": "TRANSFORMER"},
        capture=True, timeout=600,
    )  # fmt: skip
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
