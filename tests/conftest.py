"""Fixtures of the local stack for every test under tests/ (not for the Astro image's parse).

Registered here rather than in the root conftest.py: they import the emulators (duckdb, fakesnow),
which the Astro image does not have. pytest loads this file before collection whenever tests/ or a
file below it is on the command line (`make test`, `pytest tests/...`).
"""

import pytest

pytest_plugins = ["tests.fixtures_snowflake", "tests.fixtures_mssql", "tests.fixtures_azure", "tests.fixtures_smtp"]


# -- the longest modules first ---------------------------------------------------------------------
# `make test` hands whole modules to its xdist workers (--dist loadscope) in collection order
# (--no-loadscope-reorder; xdist's own order is by test count). A long module started late leaves
# the other workers idle at the end: measured, one worker finished 80 s after the other two with the
# end-to-end module handed out fourth. These took 35 s or more of a `make test` run (longest first);
# the others keep their order after them.
LONGEST_FIRST = (
    "tests/e2e/test_source_to_marts.py",
    "tests/integration/test_pipeline.py",
    "tests/alerts/test_driver_load.py",
    "tests/integration/test_window_semantics.py",
    "tests/integration/test_snapshot_chunks.py",
    "tests/alerts/test_incident_lifecycle.py",
    "tests/integration/test_snowflake_semantics.py",
    "tests/integration/test_keys.py",
    "tests/status/test_status_api.py",
    "tests/e2e/test_snapshot_resume.py",
    "tests/dbt/test_marts_data.py",
    "tests/alerts/test_deadline_scheduler.py",
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if missing := [m for m in LONGEST_FIRST if not (config.rootpath / m).is_file()]:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names modules that do not exist: {missing}")
    rank = {module: n for n, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable
