"""Astro Runtime's image build and DAG parse, reproduced without Docker.

What the Astro CLI does with this project (`astro dev start`, `astro dev parse`, `astro deploy`),
step by step, with a virtualenv in place of the image:

1. **Requirements rule.** The Runtime's ONBUILD step refuses any line of requirements.txt matching
   ``apache-airflow\\s*[=~>]{1,2}.*`` (the whole line, ``grep -Eqx``) and exits 1 with Astronomer's
   message: Airflow's version is the base image's, never the project's.
2. **Image environment.** A clean virtualenv on the Runtime's Python with exactly what the image
   ships (``tests/astro/astro-runtime-<tag>.txt``), then requirements.txt installed with those
   versions as constraints: the resolver may not move Airflow, nor a Runtime provider that
   requirements.txt does not name (one it names may be upgraded, never downgraded). Nothing else:
   no dev or test packages.
3. **Build context and Dockerfile.** The git-tracked files minus .dockerignore are copied to
   ``/usr/local/airflow`` (here: a temporary directory), then the Dockerfile's own ``ENV`` and
   ``RUN`` lines run there, in that environment.
4. **Bind mounts.** The CLI mounts the checkout's ``dags/``, ``include/``, ``plugins/`` and ``tests/``
   over the image's: whatever the build wrote into them is hidden, and what is there is the
   git-tracked source (the deploy-time parse runs on a fresh checkout: no git-ignored artefacts).
5. **Parse.** ``pytest .astro/test_dag_integrity_default.py`` in that layout and environment: what
   ``astro dev parse`` and the pre-deploy check run.

The virtualenv is cached under ``.cache/astro-runtime/`` (git-ignored), keyed on the Runtime pins,
requirements.txt and the Python version, so only a dependency change pays for a new one (uv,
about a minute with a warm uv cache). CLI: ``python -m tests.astro.runtime_build``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from dev import runtime_python

ROOT = Path(__file__).resolve().parents[2]
PINS_DIR = Path(__file__).resolve().parent
CACHE_DIR = ROOT / ".cache" / "astro-runtime"
IMAGE_HOME = "/usr/local/airflow"  # the image's AIRFLOW_HOME and working directory
MOUNTED = ("dags", "include", "plugins", "tests")  # bind-mounted by the Astro CLI
INTEGRITY_TEST = ".astro/test_dag_integrity_default.py"
# The Runtime's ONBUILD check, as Astronomer ships it (a whole-line extended regex).
AIRFLOW_PIN_RULE = re.compile(r"apache-airflow\s*[=~>]{1,2}.*")
AIRFLOW_PIN_MESSAGE = (
    "Do not upgrade by specifying 'apache-airflow' in your requirements.txt, change the base image instead!"
)
VENV_LAYOUT_VERSION = "2"  # bump when the way the venv is built changes


class RuntimeBuildError(Exception):
    """A step the Astro image build or its DAG parse would fail at (the message says which)."""


@dataclass(frozen=True)
class RuntimePins:
    """What the Runtime image ships: its tag, Python version and package pins."""

    path: Path
    runtime: str
    python: str
    lines: tuple[str, ...]  # requirement lines, as installed into the base environment

    @property
    def pinned(self) -> dict[str, Version]:
        """Exactly pinned packages (``name==version``), by canonical name."""
        pins = {}
        for line in self.lines:
            req = Requirement(line)
            spec = list(req.specifier)
            if len(spec) == 1 and spec[0].operator == "==":
                pins[canonicalize_name(req.name)] = Version(spec[0].version)
        return pins


def dockerfile_runtime_tag(project: Path) -> str:
    """The Runtime tag of the Dockerfile's ``FROM …/runtime:<tag>`` line."""
    for instruction, argument in dockerfile_instructions(project / "Dockerfile"):
        if instruction == "FROM":
            match = re.search(r"/runtime:([\w.-]+)", argument)
            if not match:
                raise RuntimeBuildError(f"Dockerfile: FROM {argument} is not an Astro Runtime image")
            return match.group(1)
    raise RuntimeBuildError("Dockerfile has no FROM line")


def load_pins(project: Path) -> RuntimePins:
    """The pins file of the Dockerfile's Runtime tag (tests/astro/astro-runtime-<tag>.txt)."""
    tag = dockerfile_runtime_tag(project)
    path = PINS_DIR / f"astro-runtime-{tag}.txt"
    if not path.is_file():
        raise RuntimeBuildError(
            f"the Dockerfile uses Astro Runtime {tag} but {path.relative_to(ROOT)} does not exist: write down "
            "what that image ships (Astronomer's Runtime provider reference, or `docker run --rm <image> pip freeze`)"
        )
    header = dict(re.findall(r"^#\s*(runtime|python):\s*(\S+)\s*$", path.read_text(), flags=re.MULTILINE))
    if header.get("runtime") != tag or "python" not in header:
        raise RuntimeBuildError(f"{path.name}: needs '# runtime: {tag}' and '# python: X.Y' header lines")
    lines = tuple(line for line in _requirement_lines(path.read_text().splitlines()))
    return RuntimePins(path=path, runtime=tag, python=header["python"], lines=lines)


def _requirement_lines(lines: Iterable[str]) -> Iterator[str]:
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line:
            yield line


def check_requirements_rule(requirements: str) -> None:
    """Step 1: the Runtime's ONBUILD refusal of an ``apache-airflow`` pin (exit 1, same message)."""
    for number, line in enumerate(requirements.splitlines(), start=1):
        if AIRFLOW_PIN_RULE.fullmatch(line):
            raise RuntimeBuildError(f"requirements.txt line {number} ({line!r}): {AIRFLOW_PIN_MESSAGE} (exit 1)")


def requirement_names(requirements: str) -> set[str]:
    """Canonical names of the packages requirements.txt asks for (options and includes ignored)."""
    names = set()
    for line in _requirement_lines(requirements.splitlines()):
        if line.startswith("-"):
            raise RuntimeBuildError(f"requirements.txt: {line!r} - the image installs this file alone, no options")
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement as exc:
            raise RuntimeBuildError(f"requirements.txt: {line!r} is not a requirement: {exc}") from exc
    return names


# -- step 2: the image's Python environment ------------------------------------------------------


def find_python(version: str) -> str:
    """An interpreter of the Runtime's Python version (``$CDC_RUNTIME_PYTHON`` overrides): the same
    search ``make setup`` runs for the local .venv (``dev/runtime_python.py``)."""
    found = runtime_python.find(version)
    if found is None:
        raise RuntimeBuildError(
            f"no Python {version} (the Runtime's) found: install one (`uv python install {version}`) "
            "or point CDC_RUNTIME_PYTHON at it"
        )
    return found


def uv() -> str:
    local = Path(sys.executable).with_name("uv")
    return str(local) if local.exists() else "uv"


def venv_key(pins: RuntimePins, requirements: str) -> str:
    digest = hashlib.sha256()
    for part in (VENV_LAYOUT_VERSION, pins.python, pins.path.read_text(), requirements):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def image_environment(pins: RuntimePins, requirements: str, cache_dir: Path = CACHE_DIR) -> Path:
    """Step 2: the cached virtualenv of the image (built once per pins/requirements/Python)."""
    venv = cache_dir / f"venv-{pins.runtime}-py{pins.python}-{venv_key(pins, requirements)}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Built in place (console scripts name their interpreter by absolute path), under a lock so
    # parallel test sessions wait for one build instead of racing.
    with (cache_dir / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            _build_environment(venv, pins, requirements)
            (venv / ".complete").write_text(pins.runtime)
            for stale in cache_dir.glob("venv-*"):  # older keys: requirements or pins changed since
                if stale.is_dir() and stale != venv:
                    shutil.rmtree(stale, ignore_errors=True)
                    stale.with_name(f"{stale.name}.lock").unlink(missing_ok=True)
    return venv


def _build_environment(venv: Path, pins: RuntimePins, requirements: str) -> None:
    named = requirement_names(requirements)
    python = find_python(pins.python)
    _uv(["venv", "--quiet", "--python", python, str(venv)], "creating the virtualenv")
    work = venv / "astro-build"
    work.mkdir()
    (work / "runtime.txt").write_text("\n".join(pins.lines) + "\n")
    (work / "requirements.txt").write_text(requirements)
    # What requirements.txt may not move: Airflow and every Runtime pin it does not name.
    held = [line for line in pins.lines if canonicalize_name(Requirement(line).name) not in named]
    (work / "constraints.txt").write_text("\n".join(line for line in held if "==" in line) + "\n")
    # Not byte-compiled at install (the image is): the parse compiles, once, only what it imports.
    target = ["--python", str(venv / "bin" / "python")]
    _uv(["pip", "install", "--quiet", *target, "-r", str(work / "runtime.txt")], f"installing {pins.path.name}")
    _uv(
        [
            "pip",
            "install",
            "--quiet",
            *target,
            "-r",
            str(work / "requirements.txt"),
            "-c",
            str(work / "constraints.txt"),
        ],
        "installing requirements.txt without moving Airflow or a Runtime package it does not name",
    )
    check_pins_held(venv, pins, named)


def _uv(args: list[str], what: str) -> None:
    result = subprocess.run([uv(), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeBuildError(f"{what} failed:\n{result.stderr.strip()}")


def installed_versions(venv: Path) -> dict[str, Version]:
    result = subprocess.run(
        [uv(), "pip", "freeze", "--python", str(venv / "bin" / "python")], capture_output=True, text=True, check=True
    )
    found = {}
    for line in result.stdout.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = Version(version)
    return found


def check_pins_held(venv: Path, pins: RuntimePins, named: set[str]) -> None:
    installed = installed_versions(venv)
    moved = []
    for name, version in pins.pinned.items():
        have = installed.get(name)
        if have is None or (have != version if name not in named else have < version):
            moved.append(f"{name} {version} -> {have}")
    if moved:
        raise RuntimeBuildError("requirements.txt moves what the Runtime pins: " + ", ".join(moved))


# -- steps 3-5: build context, Dockerfile, mounts, parse ------------------------------------------


def tracked_files(project: Path) -> list[str]:
    """The files a fresh checkout has: git-tracked (plus new, not ignored), never build artefacts."""
    if (project / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=project,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return sorted({p for p in listed.split("\0") if p and (project / p).is_file()})
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matcher: Go filepath.Match per path plus ``**``; a match on a directory covers it all."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3  # `**/x` matches `x` at any depth, the top included
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "(?:/.*)?")


def dockerignore_filter(project: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    path = project / ".dockerignore"
    for raw in path.read_text().splitlines() if path.is_file() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, _dockerignore_regex(pattern)))
    return rules


def build_context(project: Path) -> list[str]:
    """Step 3's input: the tracked files Docker sends (the last matching .dockerignore rule wins)."""
    rules = dockerignore_filter(project)
    sent = []
    for name in tracked_files(project):
        excluded = False
        for keep, regex in rules:
            if regex.fullmatch(name):
                excluded = not keep
        if not excluded:
            sent.append(name)
    return sent


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def _env_pairs(argument: str) -> dict[str, str]:
    import shlex

    pairs = {}
    for token in shlex.split(argument):
        key, sep, value = token.partition("=")
        if not sep:
            raise RuntimeBuildError(f"Dockerfile: ENV {argument!r}: use the KEY=value form")
        pairs[key] = value
    return pairs


def image_env(venv: Path, home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The process environment of the image: its venv first on PATH, AIRFLOW_HOME at the project."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home.parent),
        "LANG": "C.UTF-8",
        "AIRFLOW_HOME": str(home),
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),  # noqa: S108 - the image's temp dir
        "VIRTUAL_ENV": str(venv),
    }
    return {**env, **extra}


def build_image(project: Path, venv: Path, home: Path) -> dict[str, str]:
    """Step 3: copy the build context to ``home`` and run the Dockerfile's ENV/RUN lines there."""
    for name in build_context(project):
        target = home / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / name, target)
    env_vars: dict[str, str] = {}
    for instruction, argument in dockerfile_instructions(project / "Dockerfile"):
        if instruction in ("FROM", "LABEL", "USER"):
            continue
        if instruction == "ENV":
            env_vars.update(_env_pairs(argument))
        elif instruction == "RUN":
            result = subprocess.run(
                ["bash", "-c", argument.replace(IMAGE_HOME, str(home))],
                cwd=home,
                env=image_env(venv, home, env_vars),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeBuildError(
                    f"Dockerfile: RUN {argument} failed (exit {result.returncode}):\n"
                    f"{(result.stdout + result.stderr).strip()[-3000:]}"
                )
        else:
            raise RuntimeBuildError(f"Dockerfile: {instruction} is not reproduced by this check: extend it")
    return env_vars


def mount_checkout(project: Path, home: Path) -> None:
    """Step 4: the CLI's bind mounts hide the image's dags/include/plugins/tests behind the checkout's."""
    tracked = tracked_files(project)
    for folder in MOUNTED:
        shutil.rmtree(home / folder, ignore_errors=True)
        for name in tracked:
            if name.startswith(f"{folder}/"):
                target = home / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(project / name, target)


def parse_dags(venv: Path, home: Path, env_vars: dict[str, str]) -> str:
    """Step 5: the CLI's DAG integrity test, in the image environment. Returns pytest's output."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", INTEGRITY_TEST, "-p", "no:cacheprovider", "-q", "--tb=short"],
        cwd=home,
        env=image_env(venv, home, env_vars),
        capture_output=True,
        text=True,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise RuntimeBuildError(f"{INTEGRITY_TEST} failed (exit {result.returncode}):\n{output[-6000:]}")
    return output


def check(project: Path = ROOT, cache_dir: Path = CACHE_DIR) -> str:
    """All five steps on ``project``; raises RuntimeBuildError at the first that fails."""
    requirements = (project / "requirements.txt").read_text()
    check_requirements_rule(requirements)
    pins = load_pins(project)
    venv = image_environment(pins, requirements, cache_dir)
    with tempfile.TemporaryDirectory(prefix="astro-image-") as scratch:
        home = Path(scratch) / "usr-local-airflow"
        home.mkdir()
        env_vars = build_image(project, venv, home)
        mount_checkout(project, home)
        return parse_dags(venv, home, env_vars)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.astro.runtime_build", description=__doc__.split("\n")[0])
    parser.add_argument("project", nargs="?", type=Path, default=ROOT, help="Astro project (default: this one)")
    args = parser.parse_args(argv)
    try:
        print(check(args.project.resolve()))
    except RuntimeBuildError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("Astro Runtime build and DAG parse: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
