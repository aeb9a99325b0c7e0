"""mssql-python with a native driver that cannot load, for one process or one folder.

A copy of mssql-python's driver package (``mssql_python_odbc``) whose ODBC driver manager
(``libodbcinst.so.2``, loaded by the driver from its own folder) needs ``MISSING``, a library no
machine has, instead of ``libltdl.so.7``: the failure of a machine without the Debian package
libltdl7, made without removing an OS package from the machine running the tests. Put the folder
``unloadable_driver`` returns first on a subprocess's ``PYTHONPATH`` (mssql-python finds its driver
through that package), or load the copied driver file with ctypes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MISSING = "libgone.so.7"  # as long as "libltdl.so.7": the ELF string table keeps its layout


def unloadable_driver(directory: Path) -> Path:
    """A folder for ``PYTHONPATH`` holding a copy of mssql-python's driver package whose ODBC
    driver manager (libodbcinst.so.2, loaded by the driver from its own folder) needs
    ``MISSING`` instead of ``libltdl.so.7``: the same length, so the ELF file stays valid."""
    import mssql_python_odbc

    shadow = directory / "mssql_python_odbc"
    if shadow.exists():
        return directory
    shutil.copytree(Path(mssql_python_odbc.__file__).parent, shadow, ignore=shutil.ignore_patterns("__pycache__"))
    patched = 0
    for manager in shadow.rglob("libodbcinst.so.2"):
        data = manager.read_bytes()
        assert b"libltdl.so.7\0" in data, f"{manager}: no longer needs libltdl.so.7; revisit this test"
        manager.write_bytes(data.replace(b"libltdl.so.7\0", MISSING.encode() + b"\0"))
        patched += 1
    assert patched
    return directory


def driver_file(directory: Path) -> Path:
    """The copied ODBC driver for this machine (in the folder ``unloadable_driver`` made)."""
    return next(p for p in (directory / "mssql_python_odbc").rglob("debian_ubuntu/*/lib/libmsodbcsql-*.so*"))
