"""Background processes of the local stack: start in their own process group, stop by pid.

Each service records its pid in ``<state>/run/<name>.pid``; stopping ends exactly the session that
pid leads (never anything found by name), which also ends every process it forked (airflow
standalone's scheduler, API server, LocalExecutor workers and their tasks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def alive(pid: int) -> bool:
    """Alive and not a zombie; reaps the process when it is our own exited child."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
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
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() ends it and all its children
        )
    _pid_file(run_dir, name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, grace: float = 15.0) -> None:
    """End every process of the session led by ``pid``: SIGTERM, then SIGKILL after ``grace``.

    ``start`` gives each service its own session (``start_new_session``), so the session id names
    exactly what it started, however deep. The session, not the process group, is the unit:
    Airflow's task supervisor moves each task into a process group of its own (``setpgid``), and
    ``airflow standalone`` exits on SIGTERM while its scheduler, which ignores SIGTERM, stays. A
    process only leaves the session by ``setsid``, which none of the services here call.
    """
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
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not alive(pid) and not session_members(pid):
                return
            time.sleep(0.2)


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
