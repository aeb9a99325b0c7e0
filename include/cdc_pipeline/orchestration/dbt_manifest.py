"""The dbt manifest Cosmos renders the dbt DAGs from: the one place that says where it lives and
how it is built.

Where: ``build/dbt/<project>/manifest.json`` at the project root (``$CDC_DBT_MANIFEST_DIR``
overrides ``build/dbt``). Not ``include/dbt/<project>/target/``: the Astro CLI bind-mounts the
checkout's ``include/`` over the image's for ``astro dev start``, ``dev parse`` and ``dev pytest``,
which hides a manifest the image build wrote there, and ``target/`` is git-ignored, so the
deploy-time parse on a fresh checkout has none either. ``build/`` sits beside ``dags/``, where no
mount reaches.

Who builds it, with the same command (``dbt parse``: no database connection, a few seconds):

* the image build (Dockerfile ``RUN python -m include.cdc_pipeline.orchestration.dbt_manifest``);
* ``make manifest`` locally (``--if-stale``: only when missing or older than the dbt project),
  which ``make test`` / ``demo`` / ``airflow`` run first.

Standard library only: the Dockerfile runs this before anything else is set up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DBT_ROOT = ROOT / "include" / "dbt"
MANIFEST_DIR_ENV = "CDC_DBT_MANIFEST_DIR"
MANIFEST_TARGET = "local"  # dbt target of `dbt parse` (profiles.yml; no connection is opened)
_NOT_SOURCES = {"target", "logs", "dbt_packages"}


def manifest_dir() -> Path:
    return Path(os.environ.get(MANIFEST_DIR_ENV) or ROOT / "build" / "dbt")


def manifest_path(project: str) -> Path:
    """Where the DAG reads, and the builders write, the manifest of ``include/dbt/<project>``."""
    return manifest_dir() / project / "manifest.json"


def project_dir(project: str) -> Path:
    return DBT_ROOT / project


def projects() -> list[str]:
    """Every dbt project of the repository (a folder of include/dbt with a dbt_project.yml)."""
    return sorted(p.parent.name for p in DBT_ROOT.glob("*/dbt_project.yml"))


def dbt_executable() -> str:
    """The dbt CLI next to this interpreter (a virtualenv's bin is often not on PATH), else `dbt`."""
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else "dbt"


def build(project: str) -> Path:
    """``dbt parse`` the project and move its manifest into place atomically.

    dbt writes target/ in place; a DAG parse racing that write could read half a file, so dbt
    parses into a scratch target path and the manifest is renamed into place.
    """
    directory = project_dir(project)
    destination = manifest_path(project)
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
    with tempfile.TemporaryDirectory(prefix="dbt-manifest-") as scratch:
        # fmt: off
        cmd = [dbt_executable(), "parse", "--quiet", "--project-dir", str(directory),
               "--profiles-dir", str(directory), "--target", MANIFEST_TARGET,
               "--target-path", str(Path(scratch) / "target"), "--log-path", str(Path(scratch) / "logs")]
        # fmt: on
        result = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"dbt parse of {directory} failed:\n{(result.stdout + result.stderr).strip()}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        staged = destination.with_suffix(".json.tmp")
        shutil.copyfile(Path(scratch) / "target" / "manifest.json", staged)
        staged.replace(destination)
    return destination


def _project_files(project: str) -> Iterator[Path]:
    directory = project_dir(project)
    for pattern in ("*.yml", "*.sql", "*.yaml"):
        for path in directory.rglob(pattern):
            if not _NOT_SOURCES & set(path.relative_to(directory).parts):
                yield path


def is_stale(project: str) -> bool:
    """True when the manifest is missing or older than any file of the dbt project."""
    manifest = manifest_path(project)
    if not manifest.is_file():
        return True
    built = manifest.stat().st_mtime
    return any(path.stat().st_mtime > built for path in _project_files(project))


def ensure(project: str) -> Path:
    """Build the manifest only when it is missing or stale (``make manifest``)."""
    return build(project) if is_stale(project) else manifest_path(project)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.cdc_pipeline.orchestration.dbt_manifest",
        description="dbt parse -> the manifest Cosmos reads",
    )
    parser.add_argument("projects", nargs="*", help="dbt projects under include/dbt (default: all)")
    parser.add_argument("--if-stale", action="store_true", help="only when missing or older than the dbt project")
    args = parser.parse_args(argv)
    for project in args.projects or projects():
        print(ensure(project) if args.if_stale else build(project))
    return 0


if __name__ == "__main__":
    sys.exit(main())
