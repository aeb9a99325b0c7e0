"""The Airflow UI of `make airflow`, checked in a real browser (tests/ui/browser_check.py).

Starts the local stack exactly as `make airflow` does (dev/stack.py), in a temporary state
directory on free ports, and stops every process it started by pid. Slow (Airflow standalone,
a CDC run with snapshots, then the dbt DAG under the scheduler): `make test-all` only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.localenv import LocalStack
from dev.stack import Stack
from tests.fixtures_snowflake import free_port
from tests.ui.browser_check import CHROMIUM, TABLE_GROUPS, check_ui, stack_callbacks

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(3000)]


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test-all` installs Debian's chromium (apt-get install -y chromium)")
    cfg = LocalStack(
        state_dir=tmp_path_factory.mktemp("ui_stack"),
        mssql_port=free_port(),
        snowflake_port=free_port(),
        smtp_port=free_port(),
        airflow_port=free_port(),
    )
    stack = Stack(cfg)
    stack.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)  # the tests' setting, not the stack's
    try:
        stack.airflow()
        yield stack
    finally:
        stack.stop()


def test_ui_shows_the_dags_the_table_groups_and_an_asset_triggered_dbt_run(
    airflow_stack: Stack, tmp_path: Path
) -> None:
    cfg = airflow_stack.cfg
    users = json.loads((cfg.airflow_home / "simple_auth_manager_passwords.json.generated").read_text())
    user, password = next(iter(users.items()))
    start, dbt_run = stack_callbacks(airflow_stack.env)
    url = f"http://localhost:{cfg.airflow_port}"
    seen = check_ui(url, user, password, start, dbt_run, screenshot=tmp_path / "billing_dbt_runs.png")
    assert seen["dags"] == ["billing_cdc", "billing_dbt", "cdc_health", "cdc_preflight"]
    assert seen["task_groups"] == TABLE_GROUPS
    assert "asset_triggered" in seen["dbt_runs_page"]
