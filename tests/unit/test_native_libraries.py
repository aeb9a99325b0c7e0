"""Every native extension the code imports can load its shared libraries on this machine.

A wheel carries most of what its extensions need; what it does not must come from the OS, and the
one list of those is ``packages.txt`` (the Astro image installs it; ``make setup`` installs it
locally). mssql-python's bundled ODBC driver, for one, needs ``libltdl.so.7`` (Debian ``libltdl7``):
without it every change-table read failed on a fresh machine. Here the system's ``ldd`` resolves
every shared object of the installed distributions the code runs on — those of requirements.txt
(the image's) and those whose modules the project's own code imports (the local stack's DuckDB,
fakesnow's compiled sqlglot), with their dependencies, found from the installed wheels' file lists
rather than named by hand — and a library it cannot find fails the test naming the module (or the
distribution's file) that needs it and the Debian package that provides it, taken from the
comment after the package in packages.txt, or how to find the package when none is listed.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from include.cdc_pipeline import native
from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.errors import DriverLoadError
from tests.unloadable_driver import MISSING, driver_file, unloadable_driver

ROOT = Path(__file__).resolve().parents[2]
# The project's own code: the modules it imports run in the image or in the local stack.
CODE = ("include", "dags", "plugins", "dev")
SHARED_OBJECT = re.compile(r"\.so(\.[\w]+)*$")
# An extension module's file: the module's path, the interpreter tag, .so
# (pyarrow/lib.cpython-312-x86_64-linux-gnu.so, _duckdb.abi3.so, mssql_python/ddbc_bindings.cp312-x86_64.so).
EXTENSION = re.compile(r"^(?P<module>[\w/]+)\.(?P<tag>cpython-\d+[\w-]*|cp\d+[\w-]*|abi3)\.so$")
THIS_PYTHON = re.compile(rf"^(cpython-|cp){sys.version_info.major}{sys.version_info.minor}\b|^abi3$")
# Modules that must be among the files checked on any machine (a guard against a discovery that
# silently finds nothing): the drivers, the Arrow and DuckDB libraries, the connector, pydantic's
# core, cryptography; and sqlglotc's compiled sqlglot when the venv has it (fakesnow's, dev only).
EXPECTED = (
    "mssql-python (module mssql_python.ddbc_bindings)",
    "mssql-python (its ODBC driver libmsodbcsql",
    "mssql-python-rs (module mssql_py_core.mssql_py_core)",
    "pymssql (module pymssql._pymssql)",
    "duckdb (module _duckdb)",
    "pyarrow (module pyarrow.lib)",
    "snowflake-connector-python (module snowflake.connector.nanoarrow_arrow_iterator)",
    "pydantic-core (module pydantic_core._pydantic_core)",
    "cryptography (module cryptography.hazmat.bindings._rust)",
)
OPTIONAL = {"sqlglotc": "sqlglotc (module sqlglot."}  # distribution -> what must be checked when installed


def _installed(optional: dict[str, str]) -> list[str]:
    found = []
    for dist, who in optional.items():
        try:
            md.distribution(dist)
        except md.PackageNotFoundError:
            continue
        found.append(who)
    return found


def packages_txt() -> set[str]:
    """The Debian packages packages.txt lists, read as the Runtime's ONBUILD step reads it."""
    text = re.sub(r"#.*", "", (ROOT / "packages.txt").read_text())
    return set(text.split())


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def imported_modules() -> set[str]:
    """Top-level modules the project's own code imports (include/, dags/, plugins/, dev/), read
    line by line rather than parsed (10x faster; a docstring line that reads like an import only
    adds a name no distribution provides)."""
    statement = re.compile(r"^\s*(?:from\s+(\w+)\S*\s+import\b|import\s+([\w., ]+))", re.MULTILINE)
    names: set[str] = set()
    for folder in CODE:
        for file in sorted((ROOT / folder).rglob("*.py")):
            for origin, imported in statement.findall(file.read_text()):
                names |= (
                    {origin}
                    if origin
                    else {name.split()[0].split(".")[0] for name in imported.split(",") if name.strip()}
                )
    return names


def _record(dist: md.Distribution) -> list[str]:
    """The files a distribution installed (its RECORD, without hashes and sizes)."""
    return [line.rsplit(",", 2)[0] for line in (dist.read_text("RECORD") or "").splitlines() if line]


def _top_level(dist: md.Distribution) -> set[str]:
    """The top-level modules a distribution installs (from its RECORD)."""
    names = set()
    for file in _record(dist):
        first = file.split("/", 1)[0]
        if not first.endswith((".dist-info", ".data")) and first not in ("..", "__pycache__"):
            names.add(first.split(".", 1)[0])
    return names


def runtime_distributions() -> dict[str, md.Distribution]:
    """The installed distributions the code runs on, by canonical name, sorted: requirements.txt's
    and those of requirements-dev.txt that provide a module the project's code imports (the local
    stack's: DuckDB, fakesnow, sqlglotc's compiled sqlglot), with every dependency they require
    (extras and markers evaluated)."""
    imported = imported_modules()
    todo = [(r.name, set(r.extras)) for r in _requirements(ROOT / "requirements.txt")]
    for requirement in _requirements(ROOT / "requirements-dev.txt"):
        try:
            if _top_level(md.distribution(requirement.name)) & imported:
                todo.append((requirement.name, set(requirement.extras)))
        except md.PackageNotFoundError:
            continue
    found: dict[str, tuple[md.Distribution, list[Requirement]]] = {}
    extras: dict[str, set[str]] = {}
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in extras and wanted <= extras[key]:
            continue
        if key not in found:
            try:
                dist = md.distribution(key)
            except md.PackageNotFoundError:
                continue
            found[key] = (dist, [Requirement(text) for text in dist.metadata.get_all("Requires-Dist") or []])
        extras[key] = extras.get(key, set()) | wanted
        for requirement in found[key][1]:
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras[key] | {""}):
                todo.append((requirement.name, set(requirement.extras)))
    return {key: found[key][0] for key in sorted(found)}


def driver_objects(driver_dir: Path) -> dict[str, list[Path]]:
    """The files of mssql-python's ODBC driver in ``driver_dir``, by who needs them."""
    return {
        f"mssql-python (its ODBC driver {path.name}, loaded by module mssql_python.ddbc_bindings)": [path]
        for path in sorted(driver_dir.iterdir())
        if SHARED_OBJECT.search(path.name)
    }


def shared_objects(distributions: dict[str, md.Distribution]) -> dict[str, list[Path]]:
    """Who needs them (``"pyarrow (module pyarrow.lib)"``, or the distribution and the file) -> the
    shared objects in the distributions' file lists (RECORD), their bundled libraries included.
    Left out: extension modules built for another Python (mssql-python ships cp310 to cp313), and
    of mssql-python's ODBC driver every build but the one this machine loads (the wheel carries
    RHEL and SUSE builds too, which never load here)."""
    driver_dir = native.mssql_python_driver_files()[0].parent.resolve()
    files: dict[str, list[Path]] = driver_objects(driver_dir)
    for name, dist in distributions.items():
        if name == "mssql-python-odbc":
            continue
        root = Path(str(dist.locate_file(""))).resolve()
        for record in _record(dist):
            relative = PurePosixPath(record)
            if not SHARED_OBJECT.search(relative.name) or ".." in relative.parts:
                continue
            extension = EXTENSION.match(str(relative))
            if extension and not THIS_PYTHON.match(extension.group("tag")):
                continue
            path = root / relative
            if path.is_file():
                module = extension.group("module").replace("/", ".") if extension else None
                files.setdefault(f"{name} (module {module})" if module else f"{name} ({relative})", []).append(path)
    return files


def test_every_native_library_the_code_loads_finds_its_dependencies() -> None:
    assert shutil.which("ldd"), "ldd (Debian libc-bin) is needed to check the native libraries"
    # Given every shared object of the distributions the code runs on (found, not listed by hand),
    files = shared_objects(runtime_distributions())
    found = "\n".join(files)
    missing = [who for who in (*EXPECTED, *_installed(OPTIONAL)) if who not in found]
    assert not missing, f"not among the {len(files)} checked: {missing}"
    # when the system's ldd resolves them all,
    problems = native.unresolved_report(files)
    # then none needs a library this machine lacks; a missing one is named with who needs it and
    # its Debian package (from packages.txt's comments) or how to find it.
    assert not problems, "native libraries that cannot load (run `make setup`):\n" + "\n".join(problems)


def test_the_check_names_the_library_the_module_and_the_package_of_an_unloadable_driver(tmp_path: Path) -> None:
    # Given the suite's copy of mssql-python's driver whose ODBC driver manager needs libgone.so.7
    # (a library no machine has; as a machine without libltdl7 lacks libltdl.so.7),
    files = driver_objects(driver_file(unloadable_driver(tmp_path)).parent)
    # when the check runs over it,
    problems = native.unresolved_report(files)
    # then it fails naming the library and the module that needs it, and — no package of
    # packages.txt providing libgone.so.7 — how to find the package and where to list it,
    manager = "mssql-python (its ODBC driver libodbcinst.so.2, loaded by module mssql_python.ddbc_bindings)"
    assert f"{manager} needs {MISSING}: install an OS package that packages.txt does not name yet" in "\n".join(
        problems
    ), problems
    assert all(MISSING in p and f"apt-file search {MISSING}" in p and "packages.txt" in p for p in problems)
    # while a library packages.txt's comments name is given with its package (a copy of the list
    # that names libgone.so.7 after a package).
    listed = tmp_path / "packages.txt"
    listed.write_text((ROOT / "packages.txt").read_text() + f"libgone7  # {MISSING}, libother.so.1: a test\n")
    assert native.package_of(MISSING, listed) == "Debian package libgone7"
    assert native.debian_packages(listed) == {
        **native.debian_packages(),
        MISSING: "libgone7",
        "libother.so.1": "libgone7",
    }


def test_packages_txt_names_the_libraries_of_each_package_it_lists() -> None:
    # Every package the image and `make setup` install (the ONBUILD step's reading) is one of
    # native's reading, alone on its line, with the libraries it provides in its comment,
    listed = native.packages_txt()
    assert set(listed) == packages_txt()
    lines = [line.split("#", 1)[0].split() for line in (ROOT / "packages.txt").read_text().splitlines()]
    assert all(len(names) <= 1 for names in lines), "one package a line: its comment names what it provides"
    assert all(listed.values()), f"a package without `# <library>: <who loads it>` after it: {listed}"
    # and the library mssql-python's ODBC driver is known to need comes with its package.
    assert native.debian_packages()["libltdl.so.7"] == "libltdl7"


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
