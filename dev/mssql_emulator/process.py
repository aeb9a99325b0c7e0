"""Start and stop an emulator server subprocess (test fixtures, local stack).

The server runs in a session of its own (dev/procs.py) so that stopping it never touches anything
else; it is stopped by that session's id, never by process name.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dev import procs

from .client import server_status


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
    """Launch ``python -m dev.mssql_emulator serve`` in a session of its own and wait until it answers."""
    port = port or procs.free_port(host)
    args = ["serve", "--db", str(db_path), "--port", str(port), "--host", host]
    args += ["--capture-interval", str(capture_interval), *(extra_args or [])]
    popen = procs.spawn(
        procs.python_module("dev.mssql_emulator", *args),
        procs.project_env(),
        Path(log_path) if log_path else None,
    )
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
    """End the server's session (SIGTERM: it checkpoints and exits; SIGKILL after ``timeout``);
    the exit status when ``proc`` is our child."""
    procs.stop_pid(proc if isinstance(proc, int) else proc.pid, grace=timeout)
    return None if isinstance(proc, int) else proc.wait(timeout=5)
