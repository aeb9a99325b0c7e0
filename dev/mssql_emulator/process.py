"""Start and stop an emulator server subprocess (test fixtures, local stack).

The server runs in its own process group so that stopping it never touches anything else; it is
stopped by that group id, never by process name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .client import server_status

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    popen: subprocess.Popen[bytes]
    host: str
    port: int
    db_path: str
    log_path: str | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15.0) -> int | None:
        return stop_server(self.popen, timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    db_path: str | os.PathLike[str],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    capture_interval: float = 1.0,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    extra_args: list[str] | None = None,
) -> ServerProcess:
    """Launch ``python -m dev.mssql_emulator serve`` in a new process group and wait until it answers."""
    port = port or free_port(host)
    cmd = [
        sys.executable,
        "-m",
        "dev.mssql_emulator",
        "serve",
        "--db",
        str(db_path),
        "--port",
        str(port),
        "--host",
        host,
        "--capture-interval",
        str(capture_interval),
        *(extra_args or []),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        popen = subprocess.Popen(
            cmd, cwd=str(PROJECT_ROOT), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"emulator server exited with {popen.returncode} (see {log_path or 'no log'})")
        try:
            server_status(host, port, timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                stop_server(popen)
                raise TimeoutError(f"emulator server did not answer on {host}:{port} within {timeout}s") from None
            time.sleep(0.1)
    return ServerProcess(popen, host, port, str(db_path), str(log_path) if log_path else None)


def stop_server(proc: subprocess.Popen[bytes] | int, timeout: float = 15.0) -> int | None:
    """SIGTERM the server's process group (it checkpoints and exits), SIGKILL after ``timeout``."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return proc.poll() if not isinstance(proc, int) else None
    if pgid != pid:
        raise RuntimeError(f"process {pid} does not lead its own process group; refusing to signal group {pgid}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if isinstance(proc, int):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        return None
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        return proc.wait(timeout=5)
