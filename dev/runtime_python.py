"""Print the interpreter the local ``.venv`` is built with (``make setup``).

The Astro Runtime image runs one Python minor version (the ``# python: X.Y`` header of
``tests/astro/astro-runtime-<tag>.txt``, the Dockerfile's ``FROM`` tag): the tests run on that
version when this machine has it, so a difference between 3.11 and 3.12 shows up here and not in
the image. Looked for in order: ``$CDC_RUNTIME_PYTHON``, ``pythonX.Y`` on the PATH, pyenv's
versions, ``uv``'s managed interpreters. Without one, the interpreter running this script is
printed and a warning goes to stderr.

Standard library only: it runs on the machine's ``python3`` before any virtualenv exists.
``tests/astro/runtime_build.py`` uses the same search for the image's own virtualenv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runtime_version(project: Path = ROOT) -> str:
    """The Runtime's Python minor version, from the pins of the Dockerfile's Runtime tag."""
    match = re.search(r"runtime:(\S+)", (project / "Dockerfile").read_text())
    if not match:
        raise SystemExit("Dockerfile: no FROM …/runtime:<tag> line")
    pins = project / "tests" / "astro" / f"astro-runtime-{match.group(1)}.txt"
    header = re.search(r"^#\s*python:\s*(\d+\.\d+)\s*$", pins.read_text(), flags=re.MULTILINE)
    if not header:
        raise SystemExit(f"{pins}: no '# python: X.Y' header line")
    return header.group(1)


def version_of(interpreter: str) -> str | None:
    """``X.Y`` of an interpreter that runs, else None (a pyenv shim of a version not selected fails)."""
    try:
        probe = subprocess.run(
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except OSError:
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None


def candidates(version: str) -> list[str]:
    found = [os.environ.get("CDC_RUNTIME_PYTHON"), shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted((str(p) for p in pyenv_root.glob(f"versions/{version}.*/bin/python{version}")), reverse=True)
    found += sorted(
        (str(p) for p in (Path.home() / ".local/share/uv/python").glob(f"cpython-{version}.*/bin/python{version}")),
        reverse=True,
    )
    return [c for c in found if c]


def find(version: str) -> str | None:
    """An interpreter of ``version`` on this machine, or None."""
    return next((c for c in candidates(version) if version_of(c) == version), None)


def main() -> None:
    version = runtime_version()
    interpreter = find(version)
    if interpreter is None:
        print(
            f"runtime_python: no Python {version} (the Astro Runtime's) on this machine; building .venv with "
            f"{sys.executable} ({sys.version_info[0]}.{sys.version_info[1]}). Install {version} (pyenv or "
            f"`uv python install {version}`) to test on the interpreter production runs.",
            file=sys.stderr,
        )
        interpreter = sys.executable
    print(interpreter)


if __name__ == "__main__":
    main()
