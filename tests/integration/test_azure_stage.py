"""External Azure stage, as far as the local stack allows: chunks go from memory to Azure Blob
Storage (Azurite) through the microsoft-azure provider's WasbHook, named as COPY will read them.

The local Snowflake cannot read an azure:// external stage, so COPY itself is not exercised here;
the pipeline is stopped right after the upload (failpoint after_put) and the blobs are checked.
"""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from include.cdc_pipeline.errors import InjectedFailure
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.snapshot import SnapshotWork
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def wasb_hook(azurite, monkeypatch):
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    monkeypatch.setenv("AIRFLOW_CONN_AZURE_CDC", json.dumps(azurite.airflow_conn()))
    hook = WasbHook(wasb_conn_id="azure_cdc")
    hook.create_container("cdc-landing")
    return hook


def test_chunks_land_in_blob_storage_without_local_files(harness: Harness, wasb_hook, tmp_path, monkeypatch) -> None:
    h = harness
    h.sql(
        "CREATE TABLE dbo.notes (id int NOT NULL PRIMARY KEY, body nvarchar(100) NULL)",
        "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'notes', @role_name=NULL",
    )
    h.sql("INSERT INTO dbo.notes VALUES " + ", ".join(f"({i}, N'note {i}')" for i in range(20)))
    h.capture()
    config = h.source_config(
        [{"schema": "dbo", "table": "notes", "primary_key": ["id"]}],
        target={
            "database": h.database,
            "stage": "CDC_AZURE",
            "azure_stage": {"wasb_conn_id": "azure_cdc", "container": "cdc-landing", "prefix": "replication"},
        },
    )
    pipeline = h.pipeline(config)
    pipeline.workdir = tmp_path / "must-stay-empty"
    pipeline.workdir.mkdir()
    # The table's first (and only) snapshot chunk: 20 rows.
    store = pipeline.snapshot_store()
    started = pipeline.start_snapshot(pipeline.plan())
    work = SnapshotWork(pipeline, store)
    assert work.split(started, "test")
    snapshot = store.get(started.snapshot_id)
    chunk = store.claim([started.snapshot_id], "test")
    assert snapshot and chunk
    path = f"replication/src/dbo_notes/snapshot/{started.snapshot_id}/c000000/"
    # Leftovers of a crashed attempt at the same chunk must be cleared before the chunk uploads.
    wasb_hook.upload("cdc-landing", f"{path}part-999999.parquet", b"stale", overwrite=True)
    monkeypatch.setenv("CDC_FAILPOINTS", "after_put")
    monkeypatch.setenv("CDC_FAILPOINT_DIR", str(tmp_path))
    with pytest.raises(InjectedFailure):
        work.run_chunk(snapshot, chunk, "test")
    blobs = wasb_hook.get_blobs_list_recursive("cdc-landing", prefix="replication/")
    assert blobs and all(b.startswith(path) for b in blobs), blobs
    assert len(blobs) == 3  # 20 rows in chunks of 7
    rows = []
    for blob in blobs:
        data = wasb_hook.download("cdc-landing", blob).readall()
        rows += pq.read_table(io.BytesIO(data)).to_pylist()
    assert sorted((r["ID"], r["BODY"]) for r in rows) == [(i, f"note {i}") for i in range(20)]
    max_lsn = h.query("SELECT sys.fn_cdc_get_max_lsn()")[0][0]
    assert {r["_CDC_LSN"] for r in rows} == {to_hex(max_lsn)} and {r["_CDC_OPERATION"] for r in rows} == {0}
    assert list(pipeline.workdir.iterdir()) == []
