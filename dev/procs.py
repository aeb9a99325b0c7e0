"""Processes of the local stack and the test fixtures: the one place that starts and stops them.

Every server (emulator, local Snowflake, SMTP sink, Airflow) is started by :func:`spawn` in a
session of its own and ended by :func:`stop_pid`, which ends exactly that session (never anything
found by name), including every process it forked (airflow standalone's scheduler, API server,
LocalExecutor workers and their tasks). Services of the local stack also record their pid in
``<state>/run/<name>.pid`` (:func:`start`, :func:`stop`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class StopError(RuntimeError):
    """A process group we started outlived SIGKILL."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it), for servers started by tests."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def project_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) with the project root first on PYTHONPATH, for ``python -m dev…``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def python_module(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def spawn(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    cwd: Path | None = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session (its own process group), output appended to ``log_file``
    (discarded without one). :func:`stop_pid` with its pid ends it and everything it forks."""
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") if log_file is not None else open(os.devnull, "wb") as log:
        return subprocess.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def alive(pid: int) -> bool:
    """Alive and not a zombie. An exited child of ours is not reaped (WNOWAIT): its ``Popen`` keeps
    the exit status."""
    with contextlib.suppress(ChildProcessError):
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running(run_dir: Path, name: str) -> int | None:
    """The pid of a running service started by us, else None (a stale pid file is removed)."""
    path = _pid_file(run_dir, name)
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    if pid and alive(pid):
        return pid
    path.unlink(missing_ok=True)
    return None


def start(
    run_dir: Path,
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    log_file: Path,
    cwd: Path | None = None,
) -> int:
    """Start ``command`` detached in a new session unless it already runs; return its pid."""
    pid = running(run_dir, name)
    if pid:
        return pid
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn(command, env, log_file, cwd)
    _pid_file(run_dir, name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, grace: float = 15.0) -> None:
    """End every process of the session led by ``pid``: SIGTERM, then SIGKILL after ``grace``.

    ``start`` gives each service its own session (``start_new_session``), so the session id names
    exactly what it started, however deep. The session, not the process group, is the unit:
    Airflow's task supervisor moves each task into a process group of its own (``setpgid``), and
    ``airflow standalone`` exits on SIGTERM while its scheduler, which ignores SIGTERM, stays. A
    process only leaves the session by ``setsid``, which none of the services here call. Raises
    :class:`StopError` naming what is left when anything survives SIGKILL.
    """
    if os.getsid(0) == pid:
        raise StopError(f"refusing to stop session {pid}: it is the caller's own")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = session_members(pid) | ({pid} if alive(pid) else set())
        if not members:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        for member in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not alive(pid) and not session_members(pid):
                return
            time.sleep(0.1)
    left = session_members(pid) | ({pid} if alive(pid) else set())
    if left:
        raise StopError(f"processes of session {pid} survived SIGKILL: {sorted(left)}")


def session_members(sid: int) -> set[int]:
    """Live (non-zombie) processes whose session id is ``sid``, read from /proc."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        # fields after the command: state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.add(int(entry.name))
    return members


def stop(run_dir: Path, name: str, grace: float = 15.0) -> bool:
    """Stop a service we started; True when one was running."""
    pid = running(run_dir, name)
    path = _pid_file(run_dir, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    stop_pid(pid, grace)
    path.unlink(missing_ok=True)
    return True
