"""The Astro image builds and its DAGs parse, as Astro Runtime and the Astro CLI do it (no Docker).

The steps, and why each can fail on a real deployment: tests/astro/runtime_build.py. The first
run builds the image's virtualenv (about a minute with uv's cache); later runs reuse it from
.cache/astro-runtime/ until requirements.txt or the Runtime pins change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.astro import runtime_build as rb


def _copy_project(tmp_path: Path) -> Path:
    """A fresh checkout of the project: its tracked files only."""
    project = tmp_path / "project"
    for name in rb.tracked_files(rb.ROOT):
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rb.ROOT / name, target)
    return project


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        ("apache-airflow==3.3.2", True),
        ("apache-airflow ~= 3.3", True),
        ("apache-airflow>=3", True),
        ("apache-airflow-providers-snowflake==6.19.0", False),  # providers may be pinned
        ("# apache-airflow==3.3.2", False),
        ("apache-airflow", False),  # unversioned: the Runtime's rule lets it through
    ],
)
def test_the_runtime_requirements_rule(line: str, refused: bool) -> None:
    if refused:
        with pytest.raises(rb.RuntimeBuildError, match="change the base image instead"):
            rb.check_requirements_rule(f"pandas>=2\n{line}\n")
    else:
        rb.check_requirements_rule(f"pandas>=2\n{line}\n")


def test_dockerfile_runtime_has_its_pins_written_down() -> None:
    pins = rb.load_pins(rb.ROOT)
    assert pins.runtime == rb.dockerfile_runtime_tag(rb.ROOT)
    assert canonicalize_name("apache-airflow") in pins.pinned
    # Airflow comes from the image, never from requirements.txt.
    assert "apache-airflow" not in rb.requirement_names((rb.ROOT / "requirements.txt").read_text())


def test_the_image_context_leaves_out_settings_tests_and_tooling() -> None:
    sent = rb.build_context(rb.ROOT)
    assert "dags/billing_dbt.py" in sent and "requirements.txt" in sent and "conftest.py" in sent
    for left_out in ("airflow_settings.yaml", "tests/", "benchmarks/", "dev/", ".env_example", "build/"):
        assert not [name for name in sent if name == left_out or name.startswith(left_out)], left_out


def test_the_image_builds_and_its_dags_parse() -> None:
    # Given the project as it is, when the image is built and `astro dev parse` runs in it,
    output = rb.check(rb.ROOT)
    # then every integrity check passed,
    assert " passed" in output and "failed" not in output
    # in an environment where Airflow and the Runtime's providers are the Runtime's versions.
    pins = rb.load_pins(rb.ROOT)
    requirements = (rb.ROOT / "requirements.txt").read_text()
    installed = rb.installed_versions(rb.image_environment(pins, requirements))
    named = rb.requirement_names(requirements)
    for name, version in pins.pinned.items():
        assert installed[name] == version or (name in named and installed[name] > version), name
    assert installed[canonicalize_name("apache-airflow")] == pins.pinned[canonicalize_name("apache-airflow")]
    # and without the dev packages.
    for dev_only in ("pytest-timeout", "duckdb", "fakesnow", "hypothesis"):
        assert canonicalize_name(dev_only) not in installed, dev_only


def test_the_build_fails_when_apache_airflow_is_pinned_again(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    requirements = project / "requirements.txt"
    requirements.write_text(requirements.read_text() + "apache-airflow==3.3.2\n")
    with pytest.raises(rb.RuntimeBuildError, match=r"apache-airflow==3\.3\.2.*change the base image instead"):
        rb.check(project)


@pytest.mark.slow  # a second parse in the Runtime venv (~20 s); `make test` keeps the positive one
def test_the_parse_fails_when_the_manifest_is_only_under_include_target(tmp_path: Path) -> None:
    # Given an image build that writes the dbt manifest where dbt puts it by default,
    # include/dbt/billing/target/ (what this project's Dockerfile used to do),
    project = _copy_project(tmp_path)
    dockerfile = project / "Dockerfile"
    lines = [line for line in dockerfile.read_text().splitlines() if not line.startswith("RUN ")]
    lines.append("RUN cd include/dbt/billing && dbt parse --quiet --profiles-dir . --target local")
    dockerfile.write_text("\n".join(lines) + "\n")
    # when the CLI mounts the checkout's include/ over the image's and parses the DAGs,
    with pytest.raises(rb.RuntimeBuildError) as failure:
        rb.check(project)
    # then billing_dbt is an import error naming the missing manifest.
    assert "billing_dbt.py" in str(failure.value)
    assert "manifest.json is missing" in str(failure.value)


def test_a_named_provider_may_be_upgraded_but_an_unnamed_one_may_not_move() -> None:
    pins = rb.load_pins(rb.ROOT)
    requirements = (rb.ROOT / "requirements.txt").read_text()
    venv = rb.image_environment(pins, requirements)
    named = rb.requirement_names(requirements)
    smtp = canonicalize_name("apache-airflow-providers-smtp")
    assert smtp in named and rb.installed_versions(venv)[smtp] > pins.pinned[smtp]  # an explicit upgrade
    rb.check_pins_held(venv, pins, named)  # holds as built
    with pytest.raises(rb.RuntimeBuildError, match="moves what the Runtime pins: apache-airflow-providers-smtp"):
        rb.check_pins_held(venv, pins, named - {smtp})  # the same version, not asked for, is a move


def test_the_local_venv_runs_the_images_airflow_and_providers() -> None:
    # `make test` and `make demo` must run what the image runs: every package of the Runtime that
    # requirements.txt does not name and the local venv has is at the Runtime's version (a drift here
    # once left the tests on Airflow 3.3.2 and common-sql 2.4.0, the image on 3.3.0 and 2.0.1).
    from importlib.metadata import PackageNotFoundError, version

    pins = rb.load_pins(rb.ROOT)
    named = rb.requirement_names((rb.ROOT / "requirements.txt").read_text())
    local = {}
    for name in pins.pinned.keys() - named:
        try:
            local[name] = Version(version(name))
        except PackageNotFoundError:
            continue  # in the image only (e.g. the Celery provider); nothing of ours imports it
    assert "apache-airflow" in local
    assert local == {name: pins.pinned[name] for name in local}
