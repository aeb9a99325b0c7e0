"""The production tree (include/, dags/) never reaches into dev/: the local stack is chosen by
connection settings, not by code paths. The same check as `grep -rn "dev\\." include/ dags/`
(issue 13's acceptance), over every file git tracks there, comments included."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_include_and_dags_name_nothing_of_dev() -> None:
    files = subprocess.run(
        ["git", "ls-files", "include", "dags"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(files) > 20  # the tree is there (a fresh clone tracks it)
    found = [
        f"{name}:{number}: {line.strip()}"
        for name in files
        if (ROOT / name).suffix not in {".png", ".parquet"}
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if re.search(r"dev\.", line)
    ]
    assert not found, "\n".join(found)
