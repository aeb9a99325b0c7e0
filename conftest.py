"""Shared test set-up: an isolated Airflow home per test session, no real services assumed.

This file is loaded by every pytest run in the project, including `astro dev parse` inside the
Astro image (.astro/test_dag_integrity_default.py), which has Airflow and pytest but none of the
dev packages: it must import nothing beyond the standard library and pytest. Fixtures that start
local services (local Snowflake, the SQL Server CDC emulator, SMTP sink) are registered by
tests/conftest.py; each starts its process and stops it by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Must happen before Airflow is imported anywhere: a throw-away AIRFLOW_HOME with its own SQLite DB.
_HOME = Path(tempfile.mkdtemp(prefix="cdc-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")


# -- no process outlives the test session ----------------------------------------------------
# Every server a fixture or test starts must be gone when the session ends. Making pytest a
# "child subreaper" (Linux prctl) re-parents any orphaned descendant (say, a scheduler left
# behind after `airflow standalone` exited) to pytest instead of init, so the check below sees
# it: a leak fails the run and is ended by the pid we find, instead of running on for good.
_PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = " ".join(cmdline.split())
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down: fail the run if a process we started is still alive."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:  # reap orphans that exited under us
            pass
    # Python's multiprocessing resource tracker lives until its parent exits, by design.
    leaked: dict[int, str] = {}
    for _ in range(10):  # a killed leader's own children are re-parented to us in turn
        found = {pid: cmd for pid, cmd in _children(os.getpid()).items() if "resource_tracker" not in cmd}
        if not found:
            break
        leaked.update(found)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
    if leaked:
        listing = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in leaked.items())
        writer = session.config.get_terminal_writer()
        writer.line(f"\nProcesses left running by the tests (now killed):\n{listing}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
