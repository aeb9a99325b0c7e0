"""Native libraries the drivers load, and a readable cause when one cannot load.

mssql-python (the change reader) loads Microsoft's ODBC Driver 18 from the ``mssql_python_odbc``
package at its first connect; that driver needs OS libraries the wheel does not carry
(``libltdl.so.7``, Debian package ``libltdl7``, listed in ``packages.txt``). Without one, the driver
only says "Failed to load the driver": ``driver_load_error`` loads the same file with the system's
dynamic loader to name the missing library and its package, so the page and the log say what to
install instead of pointing at a documentation page.

Installing is not done here: the Astro image installs ``packages.txt``, ``make setup`` does it
locally (``dev/os_packages.sh``), and ``tests/unit/test_native_libraries.py`` checks every native
extension the code imports against it.
"""

from __future__ import annotations

import ctypes
import platform
import re
from pathlib import Path

from include.cdc_pipeline.errors import DriverLoadError

# Shared libraries the drivers' wheels need from the OS, by the Debian package that provides them.
# (`dpkg -S <library>` on a machine that has it; packages.txt installs them.)
DEBIAN_PACKAGES = {"libltdl.so.7": "libltdl7"}

# The dynamic loader's message for a dependency it cannot find (glibc's dlerror text).
_NOT_FOUND = re.compile(r"(?P<library>[\w.+-]+\.so[\w.]*): cannot open shared object file")
# mssql-python's texts when its native driver does not load (ddbc_bindings, version 1.16).
DRIVER_LOAD_TEXTS = ("Failed to load the driver", "Failed to load ODBC driver", "Failed to load required function")
_DISTRO_DIRS = ("debian_ubuntu", "rhel", "suse", "alpine")


def missing_library(message: str) -> str | None:
    """The library a loader error names as not found (``libltdl.so.7``), if any."""
    found = _NOT_FOUND.search(message)
    return found.group("library") if found else None


def package_of(library: str) -> str:
    """How to get ``library``: its Debian package when known."""
    package = DEBIAN_PACKAGES.get(library)
    return f"Debian package {package}" if package else "the OS package that provides it (`apt-file search` names it)"


def mssql_python_driver_files() -> list[Path]:
    """The ODBC driver files mssql-python may load on this machine, the likeliest first (Debian's)."""
    try:
        import mssql_python_odbc
    except ImportError:
        return []
    machine = {"amd64": "x86_64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    base = Path(mssql_python_odbc.get_libs_dir()) / "linux"
    found: list[Path] = []
    for distro in _DISTRO_DIRS:
        found += sorted((base / distro).glob("*/lib/libmsodbcsql-*.so*"))
    return [p for p in found if machine in p.parts] or found


def load_error(path: Path) -> str | None:
    """The system loader's error for ``path`` (None when it loads)."""
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc)
    return None


def driver_load_error(cause: BaseException) -> DriverLoadError:
    """A ``DriverLoadError`` for mssql-python's failure ``cause``: the missing library and its
    package when the loader names one, and the two ways out."""
    detail = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    for path in mssql_python_driver_files()[:1]:
        problem = load_error(path)
        if problem:
            library = missing_library(problem)
            detail = (
                f"its ODBC driver {path.name} needs {library}, which is not installed ({package_of(library)})"
                if library
                else f"its ODBC driver {path.name} does not load: {problem}"
            )
    return DriverLoadError(
        f"mssql-python cannot load its native driver: {detail}. Fix: install the OS packages of packages.txt "
        "(the Astro image installs them at build time; locally `make setup`), or set change_reader: pymssql "
        "in the source config (slower, no native driver)"
    )


def is_driver_load_failure(exc: BaseException) -> bool:
    """Whether mssql-python failed because its native driver cannot load (not a server or login error)."""
    return isinstance(exc, ImportError) or any(text in str(exc) for text in DRIVER_LOAD_TEXTS)
