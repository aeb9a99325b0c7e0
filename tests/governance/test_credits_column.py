"""CONTROL.CDC_BATCHES.CREDITS_USED on the local Snowflake: added to a log created before it, NULL
when the query history cannot be read (the local Snowflake meters nothing)."""

from __future__ import annotations

import pytest

from include.cdc_pipeline.governance import credits
from include.cdc_pipeline.offsets import BATCH_LOG_COLUMNS, log_batch
from include.cdc_pipeline.snowflake_sql import create_table
from include.cdc_pipeline.warehouse import Warehouse
from tests.fixtures_snowflake import LocalSnowflake

pytestmark = pytest.mark.integration


def test_an_older_batch_log_gains_the_credits_column(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credits, "_warned", False)
    conn = local_snowflake.connect()
    try:
        wh = Warehouse(conn)
        wh.execute("CREATE DATABASE IF NOT EXISTS GOV_CREDITS")
        wh.execute("CREATE SCHEMA IF NOT EXISTS GOV_CREDITS.CONTROL")
        # Given the batch log of an earlier version, without CREDITS_USED, holding one batch
        old = [c for c in BATCH_LOG_COLUMNS if c[0] != "CREDITS_USED"]
        wh.execute(create_table("GOV_CREDITS.CONTROL.CDC_BATCHES", old))
        wh.execute("INSERT INTO GOV_CREDITS.CONTROL.CDC_BATCHES (BATCH_ID, ROWS_STAGED) VALUES ('old', 1)")
        # when a batch is logged with the credits the history gave (none here: not readable locally)
        used = credits.batch_credits(wh, wh.query_ids)
        log_batch(wh, "GOV_CREDITS", "CONTROL", {"batch_id": "new", "rows_staged": 2, "credits_used": used})
        # then the column exists, the old row keeps NULL and so does the new one
        rows = wh.execute("SELECT BATCH_ID, ROWS_STAGED, CREDITS_USED FROM GOV_CREDITS.CONTROL.CDC_BATCHES ORDER BY 1")
        assert rows == [("new", 2, None), ("old", 1, None)]
        assert used is None and len(wh.query_ids) >= 5  # every statement's Snowflake id was kept
    finally:
        conn.close()
