"""Where Parquet chunks go before COPY INTO: a Snowflake internal stage, or an external Azure stage.

* ``InternalStage`` (default): the worker writes each chunk to a temporary file and ``PUT``s it
  to a named internal stage; the file is deleted at once.
* ``AzureStage``: for deployments whose workers must not hold files locally. Each chunk is
  written to memory and uploaded to Azure Blob Storage / ADLS Gen2 through the microsoft-azure
  provider's ``WasbHook``; COPY reads it through an external stage that an administrator created
  over the same container and prefix (``CREATE STAGE … URL='azure://<account>.blob.core.windows.net/
  <container>/<prefix>/' STORAGE_INTEGRATION = …``).

Both are cleared of a table's leftovers before a batch (a crashed attempt's files are never
loaded) and COPY's ``PURGE`` removes loaded files.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from include.cdc_pipeline.warehouse import Warehouse


class Stage(Protocol):
    """A place COPY INTO can read Parquet from, addressed as ``@<name>/<path>``."""

    name: str  # fully qualified stage name, for COPY INTO … FROM @name/path

    def clear(self, prefix: str) -> None: ...

    def write(self, table: pa.Table, path: str, file_name: str) -> int:
        """Store one chunk as Parquet at ``path/file_name``; return its size in bytes."""
        ...


class InternalStage:
    def __init__(self, warehouse: Warehouse, name: str, workdir: Path | None = None) -> None:
        self.warehouse = warehouse
        self.name = name
        self.workdir = workdir

    def clear(self, prefix: str) -> None:
        self.warehouse.stage_remove(self.name, prefix)

    def write(self, table: pa.Table, path: str, file_name: str) -> int:
        with tempfile.TemporaryDirectory(prefix="cdc-", dir=self.workdir) as tmp:
            local = Path(tmp) / file_name
            pq.write_table(table, local, compression="zstd")
            size = local.stat().st_size
            self.warehouse.stage_put(str(local), self.name, path)
        return size


class AzureStage:
    """Chunks go from memory to a blob container; nothing touches the worker's disk."""

    def __init__(self, hook: Any, container: str, prefix: str, name: str) -> None:
        self.hook = hook  # airflow.providers.microsoft.azure.hooks.wasb.WasbHook
        self.container = container
        self.prefix = prefix.strip("/")
        self.name = name

    def _blob(self, path: str) -> str:
        return f"{self.prefix}/{path}".lstrip("/") if self.prefix else path

    def clear(self, prefix: str) -> None:
        self.hook.delete_file(self.container, self._blob(prefix), is_prefix=True, ignore_if_missing=True)

    def write(self, table: pa.Table, path: str, file_name: str) -> int:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
        self.hook.upload(self.container, self._blob(f"{path.rstrip('/')}/{file_name}"), data, overwrite=True)
        return len(data)
