"""Credits per batch from the query history (include/cdc_pipeline/governance/credits.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from include.cdc_pipeline.governance import credits


class FakeWarehouse:
    def __init__(self, rows: list[tuple[Any, ...]] | Exception) -> None:
        self.rows, self.sql = rows, []

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.sql.append((sql, params))
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows


def test_credits_are_execution_time_at_the_warehouse_rate_plus_cloud_services() -> None:
    # 90 s on an X-Small (1 credit/h) + 18 s on a Medium (4 credits/h) + 0.0002 cloud services
    rows = [(90_000, "X-Small", 0.0001), (18_000, "Medium", 0.0001)]
    assert credits.credits_of(rows) == pytest.approx(0.025 + 0.02 + 0.0002)


def test_a_batch_reads_only_its_own_queries() -> None:
    wh = FakeWarehouse([(3_600_000, "Small", 0)])
    assert credits.batch_credits(wh, ["q2", "q1", "q1", ""]) == 2.0
    ((sql, params),) = wh.sql
    assert "INFORMATION_SCHEMA.QUERY_HISTORY(" in sql and "QUERY_ID IN (%(q0)s, %(q1)s)" in sql
    assert params == {"q0": "q1", "q1": "q2"}


def test_an_unreadable_history_records_none_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(credits, "_warned", False)
    wh = FakeWarehouse(RuntimeError("002003 (02000): SQL compilation error:\nInsufficient privileges"))
    with caplog.at_level(logging.WARNING, logger=credits.__name__):
        assert credits.batch_credits(wh, ["q1"]) is None
        assert credits.batch_credits(wh, ["q2"]) is None
    assert [r.getMessage().split(": cannot")[0] for r in caplog.records] == [
        "credits per batch not recorded (CDC_BATCHES.CREDITS_USED stays NULL)"
    ]
    assert credits.batch_credits(wh, []) is None and len(wh.sql) == 2  # nothing to read: no query
