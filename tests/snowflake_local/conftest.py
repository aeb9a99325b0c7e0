"""Make the local-Snowflake fixtures available here even before tests/conftest.py registers them.

``pytest_plugins`` is only honoured in the root conftest, so register the plugin module at
configure time unless it is already registered (then the session shares one server).
"""

from __future__ import annotations

import pytest

PLUGIN = "tests.fixtures_snowflake"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
