"""The Cosmos DAG `billing_dbt`: parses from the manifest (fast, offline), has the expected shape,
maps the Airflow connection to a dbt profile, and runs end to end on the local Snowflake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dev import dbt_local
from tests.dbt.conftest import DATABASE, DbtRun

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "billing_dbt.py"
MODELS = {
    "stg_accounts", "stg_products", "stg_invoices", "stg_invoice_lines", "stg_payments",
    "stg_accounts_history", "stg_products_history", "stg_invoices_history", "stg_invoice_lines_history",
    "stg_payments_history", "int_invoice_versions", "int_payment_versions", "dim_accounts", "dim_products",
    "fct_invoices", "fct_payments", "fct_revenue_daily", "fct_receivables_ageing", "fct_account_features_daily",
}  # fmt: skip


@pytest.fixture(scope="module")
def dag(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    for key in [k for k in os.environ if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
        monkeypatch_module.delenv(key)  # nothing reachable at parse time
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["billing_dbt"]


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _model_of(task_id: str, kind: str) -> str | None:
    """`dbt.<model>.run` (model with tests: a task group) or `dbt.<model>_run` -> <model>."""
    name = task_id.removeprefix("dbt.")
    for suffix in (f".{kind}", f"_{kind}"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return None


SOURCES = {f"{source}_{table}" for source in ("billing", "billing_history")
           for table in ("accounts", "products", "invoices", "invoice_lines", "payments")}  # fmt: skip


def test_one_task_per_model_its_tests_right_after_and_freshness_first(dag: Any) -> None:
    ids = {t.task_id for t in dag.tasks}
    runs = {m for m in (_model_of(i, "run") for i in ids) if m}
    tests = {m for m in (_model_of(i, "test") for i in ids) if m}
    assert runs == MODELS
    assert tests == MODELS, "every model has tests, run right after it"
    for model in MODELS:
        test_task = next(t for t in dag.tasks if _model_of(t.task_id, "test") == model)
        assert any(_model_of(u, "run") == model for u in test_task.upstream_task_ids)
    # one freshness task per raw table, upstream of the staging model that reads it
    assert {i.removeprefix("dbt.").removesuffix("_source") for i in ids if i.endswith("_source")} == SOURCES
    assert "dbt.billing_invoices_source" in dag.get_task("dbt.stg_invoices.run").upstream_task_ids
    assert "dbt.billing_history_invoices_source" in dag.get_task("dbt.stg_invoices_history.run").upstream_task_ids
    # the marts wait for the tests of what they read
    revenue = next(t for t in dag.tasks if _model_of(t.task_id, "run") == "fct_revenue_daily")
    assert {_model_of(u, "test") for u in revenue.upstream_task_ids} >= {"fct_invoices", "fct_payments"}


def test_watcher_mode_one_dbt_build_then_the_node_tasks(dag: Any) -> None:
    from cosmos.operators._watcher.base import BaseConsumerSensor

    producer = dag.get_task("dbt.dbt_producer_watcher")
    assert {t.task_id for t in dag.tasks if not t.upstream_task_ids} == {producer.task_id}
    sensors = [t for t in dag.tasks if isinstance(t, BaseConsumerSensor)]
    assert len(sensors) == len(MODELS) * 2 + len(SOURCES)
    for sensor in sensors:
        assert producer.task_id in sensor.upstream_task_ids
        assert sensor.trigger_rule == "none_failed"
    assert producer._check_source_freshness
    assert producer._freshness_callback.__name__ == "skip_dependents_of_stale_sources"


def test_without_the_freshness_step_the_producer_only_builds() -> None:
    # the variant benchmarks/bench_dbt.py compares with a plain `dbt build`
    from cosmos.operators._watcher.base import BaseConsumerSensor

    from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag

    dag = build_dbt_dag("billing", source_freshness=False)
    producer = dag.get_task("dbt.dbt_producer_watcher")
    assert not producer._check_source_freshness
    assert not [t for t in dag.tasks if t.task_id.endswith("_source")]
    assert len([t for t in dag.tasks if isinstance(t, BaseConsumerSensor)]) == len(MODELS) * 2
    assert "No source-freshness step" in dag.doc_md


def test_freshness_error_keeps_every_model_built_from_the_source_out() -> None:
    from types import SimpleNamespace

    from cosmos.constants import DbtResourceType

    from include.cdc_pipeline.orchestration.dbt_dag import skip_dependents_of_stale_sources

    def node(kind: DbtResourceType, *parents: str) -> SimpleNamespace:
        return SimpleNamespace(resource_type=kind, depends_on=list(parents))

    model, test, source = DbtResourceType.MODEL, DbtResourceType.TEST, DbtResourceType.SOURCE
    nodes = {
        "source.b.billing.invoices": node(source),
        "source.b.billing.accounts": node(source),
        "model.b.stg_invoices": node(model, "source.b.billing.invoices"),
        "model.b.stg_accounts": node(model, "source.b.billing.accounts"),
        "model.b.dim_accounts": node(model, "model.b.stg_accounts"),
        "model.b.fct_invoices": node(model, "model.b.stg_invoices", "model.b.dim_accounts"),
        "model.b.fct_revenue": node(model, "model.b.fct_invoices"),
        "test.b.unique_fct_invoices": node(test, "model.b.fct_invoices"),
    }
    freshness = {"results": [{"unique_id": "source.b.billing.invoices", "status": "error"},
                             {"unique_id": "source.b.billing.accounts", "status": "warn"}]}  # fmt: skip
    skipped = skip_dependents_of_stale_sources({}, None, None, nodes, freshness)
    # a mart with one stale input is not built (Cosmos' default would build it); warn blocks nothing
    assert skipped == [("model.b.fct_invoices", "skipped"), ("model.b.fct_revenue", "skipped"),
                       ("model.b.stg_invoices", "skipped")]  # fmt: skip
    assert skip_dependents_of_stale_sources({}, None, None, nodes, {"results": freshness["results"][1:]}) == []


def test_scheduled_on_the_billing_cdc_runs_published_asset(dag: Any) -> None:
    # one event per CDC run with changes, after every table reached the run's LSN cut
    from include.cdc_pipeline.config import load_source_config
    from include.cdc_pipeline.orchestration.cdc_dag import published_asset

    source = load_source_config(ROOT / "include/config/sources/billing.yaml")
    assert dag.timetable.asset_condition == published_asset(source)
    assert dag.timetable.asset_condition.name == "analytics.raw.billing"


def test_house_rules(dag: Any) -> None:
    assert dag.max_active_runs == 1
    assert dag.doc_md and "billing" in dag.doc_md
    assert {"dbt", "cosmos", "source:billing"} <= set(dag.tags)
    for task in dag.tasks:
        assert task.owner == "data-platform", task.task_id
        assert task.retries >= 1, task.task_id
        assert task.on_failure_callback, task.task_id


def test_dag_parses_from_the_manifest_without_dbt() -> None:
    """The DAG file parses with no dbt executable reachable: Cosmos reads the pre-built manifest and
    never runs `dbt ls` (what makes parsing fast; the time itself is a figure of
    benchmarks/bench_dag_parse.py, not an assertion)."""
    snippet = textwrap.dedent(f"""
        import warnings
        warnings.filterwarnings("ignore")
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAG_FILE)!r})
        print("ERRORS", len(bag.import_errors), list(bag.import_errors.values())[:1])
        print("TASKS", sum(len(d.tasks) for d in bag.dags.values()))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = "/usr/bin:/bin"  # no dbt executable: a `dbt ls` would be an import error
    out = subprocess.run([sys.executable, "-c", snippet], env=env, cwd=ROOT, text=True, capture_output=True,
                         timeout=300, check=True).stdout  # fmt: skip
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("ERRORS", "TASKS")))
    assert lines["ERRORS"].startswith("0 "), lines["ERRORS"]
    assert int(lines["TASKS"]) > 5  # one task per dbt model and source, from the manifest


def test_profile_mapping_forwards_protocol_host_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from cosmos.profiles.snowflake.user_pass import SnowflakeUserPasswordProfileMapping

    from include.cdc_pipeline.config import config_dir, load_source_config
    from include.cdc_pipeline.orchestration.dbt_dag import profile_config

    conn = {"conn_type": "snowflake", "login": "local", "password": "local", "schema": "RAW",
            "extra": {"account": "fakesnow", "database": "ANALYTICS", "warehouse": "LOCAL_WH", "role": "SYSADMIN",
                      "host": "127.0.0.1", "port": 8765, "protocol": "http"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("CDC_DBT_TARGET", "local")
    source = load_source_config(config_dir() / "billing.yaml")
    config = profile_config(source, "billing")
    assert config.target_name == "local"
    profile = config.profile_mapping.profile
    assert profile["protocol"] == "http" and profile["host"] == "127.0.0.1" and int(profile["port"]) == 8765
    assert profile["schema"] == "MARTS" and profile["database"] == "ANALYTICS" and profile["account"] == "fakesnow"
    assert "local" not in json.dumps(profile.get("password", "")), "the password goes through an env var"
    # the stock mapping would not reach the emulator: it drops the protocol
    stock = SnowflakeUserPasswordProfileMapping(conn_id="snowflake_default").profile
    assert "protocol" not in stock


def test_missing_manifest_is_one_clear_import_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from include.cdc_pipeline.orchestration import dbt_dag

    monkeypatch.setattr(dbt_dag, "manifest_path", lambda project: tmp_path / "nope" / "manifest.json")
    with pytest.raises(FileNotFoundError, match=r"make manifest"):
        dbt_dag.build_dbt_dag("billing")


def test_manifest_is_up_to_date() -> None:
    assert not dbt_local.manifest_is_stale(), "run `make manifest`"


DAG_TEST = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["billing_dbt"]
run = dag.test()
states = sorted({(ti.task_id, str(ti.state)) for ti in run.get_task_instances()})
print("RESULT", json.dumps({"state": str(run.state), "tasks": states}))
"""


@pytest.mark.integration
@pytest.mark.slow  # `make test` runs the same DAG end to end in tests/e2e/test_source_to_marts.py
def test_dag_runs_end_to_end_on_the_local_snowflake(built: DbtRun, tmp_path: Path) -> None:
    """dag.test() in the default (watcher) mode: freshness, every model and its tests, through the
    Airflow connection mapping."""
    home = tmp_path / "airflow"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update({
        "PYTHONPATH": str(ROOT), "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}", "CDC_DBT_TARGET": "local",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps(built.snowflake.airflow_conn(database=DATABASE)),
        "CDC_DEADLINES": "off",  # dag.test() cannot finish runs of DAGs with deadlines (Airflow 3.3)
    })  # fmt: skip
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, "-c", DAG_TEST, str(DAG_FILE)], env=env, cwd=ROOT, text=True,
                            capture_output=True, timeout=600)  # fmt: skip
    line = next((line for line in result.stdout.splitlines() if line.startswith("RESULT")), None)
    assert line, result.stdout[-3000:] + result.stderr[-3000:]
    outcome = json.loads(line.removeprefix("RESULT "))
    failed = [t for t in outcome["tasks"] if t[1] not in ("success", "TaskInstanceState.SUCCESS")]
    assert outcome["state"].endswith("success"), failed
    assert not failed
    assert built.query("select count(*) as n from MARTS.FCT_REVENUE_DAILY")[0]["n"] > 0
