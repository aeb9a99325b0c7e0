"""The session guard of the root conftest.py fails a run that leaves a process behind.

A child pytest runs a test that leaks two sleepers: one it started itself, and one orphaned by a
shell that exited (re-parented to pytest, the child subreaper, as a scheduler left behind by
`airflow standalone` would be). The run must fail naming both, and end them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from dev import procs

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = f"""
import importlib.util

_spec = importlib.util.spec_from_file_location("project_conftest", {str(ROOT / "conftest.py")!r})
_guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_guard)
pytest_configure = _guard.pytest_configure
pytest_sessionfinish = _guard.pytest_sessionfinish
"""

LEAKY_TEST = """
import subprocess

def test_leaks_two_sleepers():
    subprocess.Popen(["sleep", "600"])                      # started and forgotten
    subprocess.run(["sh", "-c", "sleep 601 & echo $! > orphan.pid"], check=True)  # orphaned
"""


def test_the_guard_fails_a_run_that_leaks_and_ends_the_leaks(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_leaky.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # the test itself passed: only the guard can fail the run
    assert "1 passed" in out, out
    assert "Processes left running by the tests" in out, out
    assert re.search(r"pid \d+: sleep 600\b", out) and re.search(r"pid \d+: sleep 601\b", out), out
    orphan = int((tmp_path / "orphan.pid").read_text())
    assert not procs.alive(orphan)  # ended by the guard, not left to init
