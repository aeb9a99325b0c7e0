"""Progress of long extracts in the task log: rows, MB, rate and ETA (content, never timing).

The ETA's basis is the catalog's row estimate (``sys.partitions``): the source table's for a
snapshot, the change table's for a stream window. ``progress_every = 0`` logs after every chunk,
so a multi-chunk load (chunk_rows 7) yields one line per chunk whatever the machine's speed.
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration
LINE = re.compile(
    r"^src\.dbo\.items (?P<mode>snapshot|stream): (?P<rows>\d+) rows of ~(?P<estimate>\d+) \((?P<pct>\d+)%\), "
    r"[\d.]+ MB, [\d,]+ rows/s, [\d.]+ MB/s, ETA \d+(?:s|m\d\ds|h\d\dm) \(from the (?P<basis>[^)]+)\)$"
)


def _progress_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    lines = [r.getMessage() for r in caplog.records if r.name == "include.cdc_pipeline.progress"]
    matched = [LINE.match(line) for line in lines if "done" not in line]
    assert all(matched), lines
    return [m for m in matched if m]


def test_snapshot_and_stream_log_rows_mb_rate_and_eta(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h = harness
    h.sql(
        "CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, name nvarchar(50) NOT NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'items', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.items VALUES " + ", ".join(f"({i}, N'item {i}')" for i in range(1, 31)))
    h.capture()
    config = h.source_config([{"schema": "dbo", "table": "items", "primary_key": ["id"]}])  # chunk_rows 7
    pipeline = h.pipeline(config)
    pipeline.progress_every = 0
    caplog.set_level(logging.INFO, logger="include.cdc_pipeline.progress")
    # Given a 30-row table, when it is snapshotted in chunks of 7,
    assert pipeline.run_once()["rows"] == 30
    # then each chunk logged rows of the table's estimate, the share done, MB, rate and an ETA;
    lines = _progress_lines(caplog)
    assert [(m["mode"], int(m["rows"]), int(m["estimate"]), int(m["pct"])) for m in lines] == [
        ("snapshot", 7, 30, 23),
        ("snapshot", 14, 30, 47),
        ("snapshot", 21, 30, 70),
        ("snapshot", 28, 30, 93),
        ("snapshot", 30, 30, 100),
    ]
    assert {m["basis"] for m in lines} == {"table's row-count estimate"}
    assert any(r.getMessage().startswith("src.dbo.items snapshot: done, 30 rows") for r in caplog.records)
    # and a stream window measures itself against the change table's size (an upper bound).
    caplog.clear()
    h.sql("UPDATE dbo.items SET name = N'renamed' WHERE id <= 10")
    h.capture()
    pipeline = h.pipeline(config)
    pipeline.progress_every = 0
    assert pipeline.run_once()["rows"] == 10
    lines = _progress_lines(caplog)
    # change table: 30 inserts + 10 × (before, after) images = 50 rows. The window reads 20 of them
    # (before images too, to spot key moves) in chunks of 7 and loads the 10 after-images: one
    # line per chunk, counting loaded rows, up to 10.
    assert {(m["mode"], int(m["estimate"])) for m in lines} == {("stream", 50)}
    counts = [int(m["rows"]) for m in lines]
    assert len(counts) == 3 and counts == sorted(counts) and counts[-1] == 10, counts
    assert {m["basis"] for m in lines} == {"change-table size, an upper bound"}
