"""Fixtures of the local stack for every test under tests/ (not for the Astro image's parse).

Registered here rather than in the root conftest.py: they import the emulators (duckdb, fakesnow),
which the Astro image does not have. pytest loads this file before collection whenever tests/ or a
file below it is on the command line (`make test`, `pytest tests/...`).
"""

pytest_plugins = ["tests.fixtures_snowflake", "tests.fixtures_mssql", "tests.fixtures_azure", "tests.fixtures_smtp"]
