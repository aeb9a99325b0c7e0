"""Every native extension the code imports can load its shared libraries on this machine.

A wheel carries most of what its extensions need; what it does not must come from the OS, and the
one list of those is ``packages.txt`` (the Astro image installs it; ``make setup`` installs it
locally). mssql-python's bundled ODBC driver, for one, needs ``libltdl.so.7`` (Debian ``libltdl7``):
without it every change-table read failed on a fresh machine. Here the system's ``ldd`` resolves
every shared object of the drivers and libraries the pipeline loads, and a library it cannot find
fails the test naming the file that needs it and the package that provides it, so the next one is
caught by the suite and not by a user.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from include.cdc_pipeline import native
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.errors import DriverLoadError
from tests.unloadable_driver import MISSING, driver_file, unloadable_driver

ROOT = Path(__file__).resolve().parents[2]
# Modules with native code that the pipeline, its drivers and the local stack load (duckdb's
# extension is the top-level module _duckdb).
PACKAGES = ("mssql_python", "mssql_py_core", "pymssql", "_duckdb", "pyarrow")
SHARED_OBJECT = re.compile(r"\.so(\.[\w]+)*$")


def packages_txt() -> set[str]:
    """The Debian packages packages.txt lists, read as the Runtime's ONBUILD step reads it."""
    text = re.sub(r"#.*", "", (ROOT / "packages.txt").read_text())
    return set(text.split())


def shared_objects(package: str) -> list[Path]:
    """The shared objects of an installed package (or the extension module itself): its own and
    those of its auditwheel ``.libs`` folder."""
    path = Path(importlib.import_module(package).__file__ or "")
    if SHARED_OBJECT.search(path.name):
        return [path]
    directory = path.parent
    libs = directory.with_name(f"{directory.name}.libs")
    return [p for p in [*directory.rglob("*.so*"), *libs.glob("*.so*")] if p.is_file() and SHARED_OBJECT.search(p.name)]


def not_found(path: Path) -> list[str]:
    """The libraries ``ldd`` cannot resolve for ``path``."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False).stdout
    return re.findall(r"^\s*(\S+) => not found", out, flags=re.MULTILINE)


def test_every_native_library_the_code_loads_finds_its_dependencies() -> None:
    assert shutil.which("ldd"), "ldd (Debian libc-bin) is needed to check the native libraries"
    # mssql-python's ODBC driver: only the build for this machine's distribution and architecture
    # (the wheel ships RHEL and SUSE builds too, which never load here).
    driver_dir = native.mssql_python_driver_files()[0].parent
    files = {"mssql_python_odbc": [p for p in driver_dir.iterdir() if SHARED_OBJECT.search(p.name)]}
    files |= {package: shared_objects(package) for package in PACKAGES}
    assert all(files.values()), {package: len(found) for package, found in files.items()}
    listed = packages_txt()
    problems = [
        f"{path.relative_to(path.parents[2])} needs {library}: install {native.package_of(library)}"
        + ("" if native.DEBIAN_PACKAGES.get(library) in listed else " and add it to packages.txt")
        for found in files.values()
        for path in found
        for library in not_found(path)
    ]
    assert not problems, "native libraries that cannot load (run `make setup`):\n" + "\n".join(problems)


def test_packages_txt_lists_every_os_library_the_drivers_are_known_to_need() -> None:
    assert set(native.DEBIAN_PACKAGES.values()) <= packages_txt()


def test_the_loader_error_names_the_missing_library_and_its_package(tmp_path: Path) -> None:
    # The system loader's own message for a driver whose dependency is missing (a copy of
    # mssql-python's ODBC driver that needs a library no machine has), in a fresh process: one that
    # loaded the real driver before would reuse its already loaded libodbcinst.so.2,
    probe = (
        "import sys, pathlib; from include.cdc_pipeline.native import load_error; "
        "print(load_error(pathlib.Path(sys.argv[1])))"
    )
    problem = subprocess.run(
        [sys.executable, "-c", probe, str(driver_file(unloadable_driver(tmp_path)))],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()  # fmt: skip
    assert problem and MISSING in problem
    # names the library; a known one comes with its Debian package.
    assert native.missing_library(problem) == MISSING
    assert native.missing_library("libltdl.so.7: cannot open shared object file: No such file") == "libltdl.so.7"
    assert native.package_of("libltdl.so.7") == "Debian package libltdl7"
    assert native.missing_library("invalid ELF header") is None
    assert native.load_error(native.mssql_python_driver_files()[0]) is None  # the installed one loads here


@pytest.mark.parametrize(("reader", "ok"), [("auto", True), ("mssql-python", False)])
def test_preflight_warns_under_auto_and_fails_under_mssql_python_when_the_driver_cannot_load(
    reader: str, ok: bool
) -> None:
    from include.cdc_pipeline import preflight

    source = SourceConfig.model_validate(
        {
            "name": "s",
            "target": {"database": "D"},
            "change_reader": reader,
            "alert_emails": ["a@example.com"],
            "tables": [{"schema": "dbo", "table": "t", "primary_key": ["id"]}],
        }
    )
    problem = DriverLoadError(f"mssql-python cannot load its native driver: needs {MISSING}")

    def connect() -> None:
        raise problem

    finding = preflight._check_change_reader("s: SQL Server", source, connect)
    assert (finding.ok, finding.warning) == (ok, ok)
    assert MISSING in finding.detail and "packages.txt" in finding.fix
    assert ("pymssql instead" in finding.detail) is ok
    line = preflight.report([finding]).splitlines()[0]
    assert line.startswith("WARN" if ok else "FAIL")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Driver Error: Connection operation failed; DDBC Error: Failed to load the driver", True),
        ("Login failed for user 'sa'.", False),
    ],
)
def test_a_driver_load_failure_is_told_from_a_server_error(text: str, expected: bool) -> None:
    assert native.is_driver_load_failure(RuntimeError(text)) is expected
