"""dev.procs ends everything a service started, as `airflow standalone` needs.

The shape of the leak seen in `make test`: standalone exits on SIGTERM, its scheduler ignores
SIGTERM, and each task runs in a process group of its own (Airflow's supervisor calls setpgid).
Signalling the leader's process group left those running for good.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

from dev import procs

# A leader that exits on SIGTERM, with two children: one in the leader's group that ignores
# SIGTERM (the scheduler), one that moves to its own group and ignores SIGTERM (a task).
SERVICE = textwrap.dedent(
    """
    import os, signal, sys, time

    def child(own_group):
        if os.fork() == 0:
            if own_group:
                os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                time.sleep(1)

    child(False)
    child(True)
    open(sys.argv[1], "w").write("ready")
    while True:
        time.sleep(1)
    """
)


def test_stop_pid_ends_the_whole_session(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    pid = procs.start(tmp_path / "run", "svc", [sys.executable, "-c", SERVICE, str(ready)], {}, tmp_path / "svc.log")
    while not ready.exists():
        time.sleep(0.05)
    time.sleep(0.2)  # the children have installed their SIGTERM handlers
    members = procs.session_members(pid)
    assert len(members) == 3, members  # leader + two children, one of them in another group

    procs.stop_pid(pid, grace=2)

    assert procs.session_members(pid) == set()
    assert not procs.alive(pid)


def test_a_server_stopped_by_pid_keeps_its_exit_status(tmp_path: Path) -> None:
    # stop_pid must not reap our own child: its Popen reports how the server ended.
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"], log_file=tmp_path / "log")
    procs.stop_pid(proc.pid, grace=5)
    assert proc.wait(timeout=5) == -15  # SIGTERM, as the server received it
    assert not procs.alive(proc.pid)


def test_stop_pid_refuses_the_callers_own_session() -> None:
    import os

    import pytest

    with pytest.raises(procs.StopError, match="caller's own"):
        procs.stop_pid(os.getsid(0))
