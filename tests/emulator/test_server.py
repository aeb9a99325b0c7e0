"""Server mode: a server process, a writer process and a reader process, background capture job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pymssql
import pytest

from dev.mssql_emulator import ServerProcess, connect, start_server
from dev.mssql_emulator.server import DEFAULT_LOGIN, DEFAULT_PASSWORD
from dev.workload.schema import COLUMNS, TABLES
from tests.fixtures_mssql import pymssql_connect

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("emulator-server")
    proc = start_server(tmp / "billing.duckdb", capture_interval=0.2, log_path=tmp / "server.log")
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, (tmp / "server.log").read_text()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_status_command(server: ServerProcess) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "dev.mssql_emulator", "status", "--port", str(server.port)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    closed = subprocess.run(
        [sys.executable, "-m", "dev.mssql_emulator", "status", "--port", "1"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert closed.returncode == 1


@pytest.mark.slow  # `make test`: the end-to-end run writes and reads a server with background capture
def test_writer_and_reader_processes_with_background_capture(server: ServerProcess, tmp_path: Path) -> None:
    target = ["--server", "127.0.0.1", "--port", str(server.port), "--database", "billing"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dev.workload",
            *target,
            "--seed",
            "8",
            "init",
            "--accounts",
            "15",
            "--products",
            "8",
            "--invoices",
            "15",
        ],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    done, out = tmp_path / "writer.done", tmp_path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator.cdc_reader_process", str(server.port), str(done), str(out)],
        cwd=ROOT,
        env=_env(),
    )
    try:
        writer = subprocess.run(
            [
                sys.executable,
                "-m",
                "dev.workload",
                *target,
                "--seed",
                "9",
                "--rollback-fraction",
                "0.1",
                "run",
                "--transactions",
                "120",
            ],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert writer.returncode == 0, writer.stderr
        done.write_text("done")
        assert reader.wait(timeout=120) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
    replayed = json.loads(out.read_text())
    assert replayed["windows"] >= 1
    with pymssql_connect(server) as conn:
        cur = conn.cursor()
        for t in TABLES:
            cur.execute(f"SELECT {', '.join(COLUMNS[t])} FROM dbo.{t}")
            assert replayed["tables"][t] == sorted(repr(r) for r in cur.fetchall()), t


def test_client_errors_streaming_and_transactions(server: ServerProcess) -> None:
    a = pymssql_connect(server)
    b = pymssql.connect(
        server=f"127.0.0.1:{server.port}", user=DEFAULT_LOGIN, password=DEFAULT_PASSWORD, database="billing"
    )
    try:
        ca, cb = a.cursor(), b.cursor()
        ca.execute("CREATE TABLE dbo.big (id int NOT NULL PRIMARY KEY, v nvarchar(20) NULL, lsn binary(10) NULL)")
        a.commit()
        ca.execute("INSERT INTO dbo.big SELECT i, N'row', 0x0102 FROM range(50000) AS r(i)")
        cb.execute("SELECT COUNT(*) FROM dbo.big")
        assert cb.fetchone() == (0,)  # a's transaction is its own
        a.commit()
        cb.execute("SELECT id, v, lsn FROM dbo.big ORDER BY id")
        total, first = 0, None
        while True:
            rows = cb.fetchmany(7000)
            if not rows:
                break
            first = first or rows[0]
            total += len(rows)
        assert total == 50000 and first == (0, "row", b"\x01\x02")
        with pytest.raises(pymssql.ProgrammingError) as exc:
            cb.execute("SELECT * FROM dbo.missing")
        assert exc.value.args[0] == 208
        cb.execute("SELECT %s AS blob, %s AS n", (b"\x00\x01", 5))
        assert cb.fetchall() == [(b"\x00\x01", 5)]
    finally:
        a.close()
        b.close()


def test_unreachable_server_raises_operational_error() -> None:
    # the emulator's own client (workload generator's bulk path) fails like pymssql does
    with pytest.raises(pymssql.OperationalError):
        connect(server="127.0.0.1", port=1, database="billing", login_timeout=2)
