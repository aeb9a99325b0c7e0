"""The pipeline run as the access spec's LOADER role, with a PII column (include/config/access.yaml).

The loader moves every PII value in clear (from SQL Server, through its stage and STAGING), and it
also copies raw rows into history itself: when a re-snapshot finds keys the source no longer holds,
it records their delete from the raw row (``snowflake_sql.delete_unseen_after_snapshot``). Snowflake
applies a column's masking policy to every statement that reads it, INSERT … SELECT included
(user-guide/security-column-intro, "Masking policies are applied at query runtime ... wherever the
column appears"), so a loader that saw PII masked would write ``***MASKED***`` into history for good.
"""

from __future__ import annotations

import pytest

from include.cdc_pipeline.governance.live import read_state
from include.cdc_pipeline.governance.plan import apply, make_plan
from include.cdc_pipeline.governance.spec import desired_state, load_access_spec
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def test_a_resnapshot_run_as_the_loader_keeps_pii_values_in_history(harness: Harness) -> None:
    h = harness
    h.sql("CREATE TABLE dbo.people (id int NOT NULL PRIMARY KEY, email nvarchar(200) NULL, city nvarchar(20) NULL)")
    h.sql("INSERT INTO dbo.people VALUES (1, N'ada@example.com', N'London'), (2, N'alan@example.com', N'Wilmslow')")
    h.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'people', @role_name = NULL")
    h.capture()
    config = h.source_config(
        [{"schema": "dbo", "table": "people", "primary_key": ["id"], "pii_columns": {"email": "email"}}],
        table_defaults={"delete_mode": "hard"},
    )
    # Given the access spec applied to this source's database, and the pipeline running as LOADER,
    wanted = desired_state(load_access_spec(), [config])
    admin = h.snowflake.connect(role="ACCOUNTADMIN")
    try:
        apply(admin, make_plan(wanted, read_state(admin, wanted)).statements)
        assert h.pipeline(config, role="LOADER").run_once()["mode"] == "snapshot"
        # when a key leaves the source unseen by the stream (a restore, a lost window) and a
        # re-snapshot finds it gone,
        h.sql("DELETE FROM dbo.people WHERE id = 2")
        assert h.pipeline(config, role="LOADER").run_once(resnapshot=True)["mode"] == "snapshot"
    finally:
        admin.close()
    # then the delete it records in history carries the row's values, PII included, in clear for a
    # role that may read them (dbt's TRANSFORMER inherits the PII reader role),
    history = f"{h.database}.RAW.PEOPLE_HISTORY"
    dbt = h.snowflake.connect(role="TRANSFORMER")
    try:
        cur = dbt.cursor()
        cur.execute(f"SELECT EMAIL, CITY FROM {history} WHERE ID = 2 AND _CDC_OPERATION = 1")
        assert cur.fetchall() == [("alan@example.com", "Wilmslow")]
        cur.execute(f"SELECT ID, EMAIL FROM {h.database}.RAW.PEOPLE")
        assert cur.fetchall() == [(1, "ada@example.com")]
    finally:
        dbt.close()
    # and the policy still masks it for everybody else (administrators included).
    assert h.snowflake_rows(f"SELECT EMAIL FROM {history} WHERE ID = 2 AND _CDC_OPERATION = 1") == [("***MASKED***",)]
