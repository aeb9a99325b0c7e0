"""Every DAG imports with nothing reachable, and follows the house rules.

No connection, Variable or database is available here: a DAG that touches one at parse time
fails this test (that is the point).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.dag_cycle_tester import check_cycle

from include.cdc_pipeline.config import source_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    for key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_") or k.startswith("AIRFLOW_VAR_")]:
        os.environ.pop(key)
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag: DagBag) -> None:
    # file and the error's last line (the exception), not pytest's truncated dict diff
    errors = {f"{Path(path).name}: {error.strip().splitlines()[-1]}" for path, error in dagbag.import_errors.items()}
    assert not errors, "DAG import errors:\n" + "\n".join(sorted(errors))
    assert dagbag.dags, "no DAG was found"


def test_house_rules(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.max_active_runs == 1, f"{dag_id} may run concurrently with itself"
        check_cycle(dag)
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner and task.owner != "airflow", f"{where} has no owner"
            assert task.retries >= 1, f"{where} has no retries"
            assert task.on_failure_callback, f"{where} has no failure callback"


def test_every_source_config_has_a_dag(dagbag: DagBag) -> None:
    # A YAML without its DAG file would be silently ignored; that must not happen.
    from include.cdc_pipeline.config import load_source_config

    for path in source_files():
        assert load_source_config(path).dag_id in dagbag.dags, f"{path.name} has no DAG file in dags/"


def test_cdc_dag_shape(dagbag: DagBag) -> None:
    # One planning task for the whole source, then a mapped group over the tables with work (an
    # idle table gets no task instance), then publish. The shape does not grow with the tables.
    dag = dagbag.dags["billing_cdc"]
    assert {t.task_id for t in dag.tasks} == {"plan", "tables.extract_load", "tables.apply", "publish"}
    extract, apply = dag.get_task("tables.extract_load"), dag.get_task("tables.apply")
    assert extract.upstream_task_ids == {"plan"} and apply.upstream_task_ids == {"tables.extract_load"}
    # mapped, and named by table in the grid
    assert extract.map_index_template == apply.map_index_template == "{{ cdc_table }}"
    # a table's raw Asset goes out through the source's alias, only for the tables that changed
    assert [a.name for a in apply.outlets] == ["billing_raw_tables"]
    publish = dag.get_task("publish")
    assert publish.upstream_task_ids == {"tables.apply"}
    # skipped without a process when no table had work and no snapshot loaded
    assert publish.trigger_rule == "all_success"
    assert [a.name for a in publish.outlets] == ["analytics.raw.billing"]
    assert {t.pool for t in dag.tasks} == {"cdc_sqlserver", "cdc_snowflake", "default_pool"}


def test_broken_config_is_one_import_error_and_others_still_load(tmp_path: Path, monkeypatch) -> None:
    # Given two sources, one with a typo in its YAML,
    configs, dags = tmp_path / "configs", tmp_path / "dags"
    configs.mkdir()
    dags.mkdir()
    good = (ROOT / "include/config/sources/billing.yaml").read_text()
    (configs / "good.yaml").write_text(good.replace("name: billing", "name: good"))
    (configs / "bad.yaml").write_text(
        good.replace("name: billing", "name: bad").replace("primary_key:", "primary_kee:", 1)
    )
    for name in ("good", "bad"):
        (dags / f"cdc_{name}.py").write_text(
            textwrap.dedent(f"""
                # an airflow dag file
                from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag
                dag = build_cdc_dag("{name}")
            """)
        )
    monkeypatch.setenv("CDC_CONFIG_DIR", str(configs))
    # When Airflow parses the DAG folder,
    bag = DagBag(dag_folder=str(dags))
    # then the good DAG loads and the bad one is a single import error naming file and field.
    assert list(bag.dags) == ["good_cdc"]
    assert len(bag.import_errors) == 1
    message = next(iter(bag.import_errors.values()))
    assert "bad.yaml" in message
    assert "tables.0.primary_key" in message and "tables.0.primary_kee" in message
