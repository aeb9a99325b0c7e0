"""The emulator compatibility macros change nothing outside the local target.

The project overrides three dbt-snowflake building blocks (macros/emulator/). This test renders
the SQL those building blocks produce - the incremental tmp view, a temporary table (unit tests),
the MERGE of the incremental models - in two copies of the project compiled offline (`dbt compile`
opens no connection here): the real one and a vanilla one without macros/emulator/. With the
`prod` target the SQL is byte-identical; with the `local` target it differs exactly where the
emulator needs it to.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from dev import dbt_local

PROBE = """\
{%- set tmp = api.Relation.create(database='ANALYTICS', schema='MARTS', identifier='fct_x__dbt_tmp', type='view') -%}
{%- set target_rel = api.Relation.create(database='ANALYTICS', schema='MARTS', identifier='fct_x', type='table') -%}
{%- set cols = [api.Column.create('ACCOUNT_ID', 'NUMBER'), api.Column.create('AS_OF_DATE', 'DATE'),
                api.Column.create('AMOUNT', 'NUMBER')] -%}
-- @@ tmp_view
{{ snowflake__create_view_as_with_temp_flag(tmp, 'select 1 as account_id', True) }}
-- @@ view
{{ snowflake__create_view_as_with_temp_flag(target_rel, 'select 1 as account_id', False) }}
-- @@ temp_table
{{ create_table_as(True, tmp, 'select 1 as account_id') }}
-- @@ table
{{ create_table_as(False, target_rel, 'select 1 as account_id') }}
-- @@ merge_composite_key
{{ get_merge_sql(target_rel, tmp, ['account_id', 'as_of_date'], cols, none) }}
-- @@ merge_single_key
{{ get_merge_sql(target_rel, tmp, 'account_id', cols, none) }}
-- @@ merge_no_key
{{ get_merge_sql(target_rel, tmp, none, cols, none) }}
-- @@ end
"""

PROD_ENV = {
    "SNOWFLAKE_ACCOUNT": "xy12345.eu-west-1",
    "SNOWFLAKE_USER": "DBT_BILLING",
    "DBT_ENV_SECRET_SNOWFLAKE_PASSWORD": "not-used-offline",
}


def _copy_project(dest: Path, with_overrides: bool) -> Path:
    shutil.copytree(dbt_local.PROJECT_DIR, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    if not with_overrides:
        shutil.rmtree(dest / "macros" / "emulator")
    (dest / "analyses" / "render_probe.sql").write_text(PROBE)
    return dest


_RUNNER = """
import json, sys
from dbt.cli.main import dbtRunner
runner = dbtRunner()
failed = [args for args in json.loads(sys.argv[1]) if not runner.invoke(args).success]
sys.exit(1 if failed else 0)
"""


def _compile_all(jobs: list[tuple[Path, str]]) -> None:
    """`dbt compile` of the probe in each (project, target), in ONE process (dbt imports once)."""
    import json
    import subprocess
    import sys

    invocations = [
        ["compile", "--select", "render_probe", "--target", target, "--no-populate-cache", "--project-dir",
         str(project), "--profiles-dir", str(project), "--target-path", str(project / f"target_{target}"),
         "--log-path", str(project / "logs"), "--quiet"]
        for project, target in jobs
    ]  # fmt: skip
    env = {**dbt_local.dbt_env(port=1), **PROD_ENV}
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(invocations)], env=env, text=True, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _rendered(project: Path, target: str) -> dict[str, str]:
    sql = (project / f"target_{target}" / "compiled" / "billing" / "analyses" / "render_probe.sql").read_text()
    parts = re.split(r"^-- @@ (\w+)$", sql, flags=re.M)
    return {name: re.sub(r"\s+", " ", body).strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, str]]:
    base = tmp_path_factory.mktemp("rendering")
    ours = _copy_project(base / "ours", with_overrides=True)
    vanilla = _copy_project(base / "vanilla", with_overrides=False)
    jobs = [(ours, "prod"), (vanilla, "prod"), (ours, "local")]
    _compile_all(jobs)
    return {(project.name, target): _rendered(project, target) for project, target in jobs}


def test_prod_rendering_is_exactly_dbt_snowflakes(rendered: dict[tuple[str, str], dict[str, str]]) -> None:
    ours, vanilla = rendered[("ours", "prod")], rendered[("vanilla", "prod")]
    assert set(ours) == {"tmp_view", "view", "temp_table", "table", "merge_composite_key", "merge_single_key",
                         "merge_no_key", "end"}  # fmt: skip
    for name in ours:
        assert ours[name] == vanilla[name], f"{name} differs on the prod target"
    # and production keeps what the emulator cannot run
    assert "temporary view ANALYTICS.MARTS.fct_x__dbt_tmp" in ours["tmp_view"]
    assert "temporary table ANALYTICS.MARTS.fct_x__dbt_tmp" in ours["temp_table"]
    assert "begin; merge into" in ours["merge_composite_key"] and ours["merge_composite_key"].endswith("commit;")


def test_local_rendering_is_what_the_emulator_runs(rendered: dict[tuple[str, str], dict[str, str]]) -> None:
    local, prod = rendered[("ours", "local")], rendered[("ours", "prod")]
    assert "temporary" not in local["tmp_view"] and "view ANALYTICS.MARTS.fct_x__dbt_tmp" in local["tmp_view"]
    assert (
        "temporary" not in local["temp_table"]
        and "transient table ANALYTICS.MARTS.fct_x__dbt_tmp" in local["temp_table"]
    )
    for name in ("merge_composite_key", "merge_single_key"):
        assert "begin;" not in local[name] and "commit;" not in local[name]
        assert (
            'values (DBT_INTERNAL_SOURCE."ACCOUNT_ID", DBT_INTERNAL_SOURCE."AS_OF_DATE", DBT_INTERNAL_SOURCE."AMOUNT")'
            in local[name]
        )
    # what needs no change on the emulator is not changed
    for name in ("view", "table"):
        assert local[name] == prod[name]
