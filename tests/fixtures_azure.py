"""Pytest plugin: Azurite (Microsoft's Azure Storage emulator) for the external Azure stage tests.

Installed by `make setup` into .venv/azurite (npm). The fixture starts the blob service on a free
port in its own process group and stops it by the pid it started.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dev import procs

ROOT = Path(__file__).resolve().parents[1]
AZURITE = ROOT / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's fixed development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    port: int
    pid: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def airflow_conn(self) -> dict:
        return {"conn_type": "wasb", "extra": {"connection_string": self.connection_string}}


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed at {AZURITE}: run `make setup`")
    workdir = tmp_path_factory.mktemp("azurite")
    port = procs.free_port()
    args = ["--blobPort", str(port), "--location", str(workdir), "--silent", "--loose"]
    args += ["--skipApiVersionCheck"]  # Azurite 3.33 (Makefile) has no telemetry to switch off
    proc = procs.spawn([str(AZURITE), *args], log_file=workdir / "azurite.log", cwd=None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"Azurite exited: {(workdir / 'azurite.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield Azurite(port, proc.pid)
    procs.stop_pid(proc.pid)
    proc.wait(timeout=5)
