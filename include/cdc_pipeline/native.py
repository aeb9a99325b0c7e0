"""Native libraries the drivers load, and a readable cause when one cannot load.

mssql-python (the change reader) loads Microsoft's ODBC Driver 18 from the ``mssql_python_odbc``
package at its first connect; that driver needs OS libraries the wheel does not carry
(``libltdl.so.7``, Debian package ``libltdl7``, listed in ``packages.txt``). Without one, the driver
only says "Failed to load the driver": ``driver_load_error`` loads the same file with the system's
dynamic loader to name the missing library and its package, so the page and the log say what to
install instead of pointing at a documentation page.

Installing is not done here: the Astro image installs ``packages.txt``, ``make setup`` does it
locally (``dev/os_packages.sh``), and ``tests/unit/test_native_libraries.py`` runs ``unresolved``
(the system's ``ldd``) over every native extension the code imports. Which package provides which
library is said in ``packages.txt`` itself, one package a line with the libraries it provides as
the line's comment (``libltdl7  # libltdl.so.7: …``): ``debian_packages`` reads it, so the one list
of OS packages and the names the messages give cannot drift apart.
"""

from __future__ import annotations

import ctypes
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from include.cdc_pipeline.errors import DriverLoadError

# The one list of OS packages (the Astro image and `make setup` install it), in the project's root.
PACKAGES_TXT = Path(__file__).resolve().parents[2] / "packages.txt"
# A shared library's name as the loader and ldd give it (libltdl.so.7, libstdc++.so.6).
_SONAME = re.compile(r"^lib[\w.+-]*\.so(\.\w+)*$")

# The dynamic loader's message for a dependency it cannot find (glibc's dlerror text).
_NOT_FOUND = re.compile(r"(?P<library>[\w.+-]+\.so[\w.]*): cannot open shared object file")
# mssql-python's texts when its native driver does not load (ddbc_bindings, version 1.16).
DRIVER_LOAD_TEXTS = ("Failed to load the driver", "Failed to load ODBC driver", "Failed to load required function")
_DISTRO_DIRS = ("debian_ubuntu", "rhel", "suse", "alpine")


def missing_library(message: str) -> str | None:
    """The library a loader error names as not found (``libltdl.so.7``), if any."""
    found = _NOT_FOUND.search(message)
    return found.group("library") if found else None


def packages_txt(path: Path = PACKAGES_TXT) -> dict[str, list[str]]:
    """Each package ``packages.txt`` lists, with the shared libraries its line's comment names.

    Read as the Astro Runtime's ONBUILD step reads the file (``sed -e 's/#.*//' | xargs apt-get
    install``: everything from ``#`` on is a comment), so the comment after a package is free to
    name what it provides: ``libltdl7  # libltdl.so.7: why`` (several: ``# libx.so.1, liby.so.2: why``).
    A missing file lists nothing."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    listed: dict[str, list[str]] = {}
    for line in lines:
        names, _, comment = line.partition("#")
        head = comment.split(":", 1)[0] if ":" in comment else ""
        libraries = [w for w in head.replace(",", " ").split() if _SONAME.match(w)]
        for package in names.split():
            listed[package] = libraries if len(names.split()) == 1 else []
    return listed


def debian_packages(path: Path = PACKAGES_TXT) -> dict[str, str]:
    """Shared library -> the Debian package of ``packages.txt`` that provides it."""
    return {library: package for package, libraries in packages_txt(path).items() for library in libraries}


def package_of(library: str, path: Path = PACKAGES_TXT) -> str:
    """How to get ``library``: its Debian package when ``packages.txt`` names it, else how to find one."""
    package = debian_packages(path).get(library)
    if package:
        return f"Debian package {package}"
    return (
        f"an OS package that packages.txt does not name yet: find it with `apt-file search {library}` "
        f"(apt-get install apt-file && apt-file update) or packages.debian.org's search of package "
        f"contents, then add it to packages.txt as `<package>  # {library}: <who loads it>`"
    )


def unresolved(files: Iterable[Path], jobs: int = 2) -> dict[Path, list[str]]:
    """The libraries the system's ``ldd`` cannot find for each of ``files`` (only files with some),
    in the order given. ``ldd`` resolves the whole dependency tree, the files a wheel bundles (its
    ``.libs`` folder, ``$ORIGIN`` run paths) as the loader will; files go to it in batches, ``jobs``
    at a time."""
    from concurrent.futures import ThreadPoolExecutor

    paths = list(dict.fromkeys(files))
    batches = [paths[i : i + 40] for i in range(0, len(paths), 40)]

    def run(batch: list[Path]) -> dict[Path, list[str]]:
        out = subprocess.run(["ldd", *map(str, batch)], capture_output=True, text=True, check=False).stdout
        found: dict[Path, list[str]] = {}
        current = batch[0]  # one file: ldd prints no "<file>:" header
        by_name = {str(p): p for p in batch}
        for line in out.splitlines():
            if not line[:1].isspace() and line.endswith(":") and line[:-1] in by_name:
                current = by_name[line[:-1]]
            elif line.rstrip().endswith("=> not found"):
                found.setdefault(current, []).append(line.split("=>")[0].strip())
        return found

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(run, batches))
    merged = {p: found for result in results for p, found in result.items()}
    return {p: sorted(set(merged[p])) for p in paths if p in merged}


def unresolved_report(files: Mapping[str, Iterable[Path]], jobs: int = 2) -> list[str]:
    """One line per library that cannot be found, for ``files`` by who needs them (``"pyarrow
    (module pyarrow.lib)"``: the module, or the distribution and file): who, the library, and its
    Debian package or how to find one."""
    owners = {path: who for who, paths in files.items() for path in paths}
    return [
        f"{owners[path]} needs {library}: install {package_of(library)}"
        for path, libraries in unresolved(owners, jobs).items()
        for library in libraries
    ]


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


def check_mssql_python_loads() -> None:
    """Raise ``DriverLoadError`` when mssql-python or its ODBC driver cannot load on this machine
    (``plan``, once per run under ``change_reader: mssql-python``: one failure for the whole source
    instead of one per table). A machine where any of the driver's builds loads passes: which one the
    driver picks is its own business, and a wrong pick still fails in ``extract_load``."""
    try:
        import mssql_python  # noqa: F401  (loads the driver's own extension)
    except ImportError as exc:
        raise driver_load_error(exc) from exc
    files = mssql_python_driver_files()
    problems = [problem for path in files if (problem := load_error(path))]
    if files and len(problems) == len(files):
        raise driver_load_error(OSError(problems[0]))


def is_driver_load_failure(exc: BaseException) -> bool:
    """Whether mssql-python failed because its native driver cannot load (not a server or login error)."""
    return isinstance(exc, ImportError) or any(text in str(exc) for text in DRIVER_LOAD_TEXTS)
