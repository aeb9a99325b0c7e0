"""How long a run's snapshot workers take chunks (orchestration.tasks._snapshot_seconds): never past
the source's next scheduled run, so a snapshot delays the stream by at most the chunk in flight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.orchestration.tasks import _snapshot_seconds

NOW = datetime(2026, 12, 6, 21, 0, 10, tzinfo=UTC)


def _source(**fields: Any) -> SourceConfig:
    table = {"schema": "dbo", "table": "t", "primary_key": ["id"]}
    return SourceConfig.model_validate(
        {"name": "billing", "mssql_conn_id": "m", "snowflake_conn_id": "s", "alert_emails": ["a@example.com"],
         "target": {"database": "D"}, "tables": [table], **fields}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        ({"schedule": None}, 240),  # manual runs: snapshot_run_seconds
        ({"schedule": "*/15 * * * *"}, 240),  # next run at 21:15: the setting is shorter
        ({"schedule": "*/2 * * * *"}, 88),  # next run at 21:02, 110 s away: 80 % of it
        ({"schedule": "@hourly"}, 240),
        ({"schedule": "* * * * *"}, 40),  # 50 s away
        ({"schedule": "*/15 * * * *", "snapshot_run_seconds": 3600}, 712),
        ({"schedule": None, "deadline": timedelta(minutes=5)}, 180),  # 60 % of the Deadline Alert
        ({"schedule": "@once"}, 240),  # no recurring tick
    ],
)
def test_snapshot_workers_stop_before_the_next_run_is_due(fields: dict[str, Any], seconds: int) -> None:
    assert _snapshot_seconds(_source(**fields), NOW) == seconds
