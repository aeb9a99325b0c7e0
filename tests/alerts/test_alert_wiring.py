"""Wiring without services: the health DAG's shape, Deadline Alerts from config, the summary rule."""

from __future__ import annotations

from datetime import timedelta

from include.cdc_pipeline.alerts.callbacks import deadline_alert
from include.cdc_pipeline.config import load_source_config, source_files


def test_health_dag_has_one_check_per_source_and_a_deadline() -> None:
    from include.cdc_pipeline.orchestration.health_dag import build_health_dag

    dag = build_health_dag()
    names = {load_source_config(p).name for p in source_files()}
    assert {t.task_id for t in dag.tasks} == {f"check_{n}" for n in names}
    assert dag.max_active_runs == 1 and dag.tags and dag.doc_md
    assert dag.deadline is not None


def test_health_dags_deadline_and_run_ends_go_to_the_desk_of_all_sources() -> None:
    # (a missed deadline of cdc_health is resolved by the end of that run: a round pass of its desk)
    from include.cdc_pipeline.alerts.callbacks import RunEnd
    from include.cdc_pipeline.orchestration.health_dag import build_health_dag

    dag = build_health_dag()
    alert = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    data = alert.callback.serialize() if hasattr(alert.callback, "serialize") else vars(alert.callback)
    assert "'name': 'all_sources'" in str(data)
    assert isinstance(dag.on_success_callback, RunEnd) and dag.on_success_callback.success
    assert [d.name for d in dag.on_success_callback.desks] == ["all_sources"]
    assert isinstance(dag.on_failure_callback, RunEnd)
    assert "all_sources" in [d.name for d in dag.on_failure_callback.desks]


def test_cdc_dag_gets_the_deadline_of_its_yaml() -> None:
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

    dag = build_cdc_dag("billing")
    alert = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    assert alert.interval == timedelta(minutes=20)  # billing.yaml: deadline: 20m
    assert dag.on_failure_callback is not None


def test_dbt_dag_gets_its_own_deadline_naming_itself() -> None:
    from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag

    dag = build_dbt_dag("billing")
    alert = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    assert alert.interval == timedelta(minutes=45)  # billing.yaml: dbt_deadline: 45m
    data = alert.callback.serialize() if hasattr(alert.callback, "serialize") else vars(alert.callback)
    assert "billing_dbt" in str(data) and "billing_cdc" not in str(data)


def test_deadline_alert_reports_to_the_incident_desk() -> None:
    alert = deadline_alert(timedelta(minutes=45), ["a@example.com"], "smtp_x", "billing_dbt")
    data = alert.callback.serialize() if hasattr(alert.callback, "serialize") else vars(alert.callback)
    text = str(data)
    assert "include.cdc_pipeline.alerts.desk.deadline_missed" in text
    assert "smtp_x" in text and "billing_dbt" in text and "45m" in text and "a@example.com" in text


def test_every_dag_of_a_source_reports_to_its_desk() -> None:
    from include.cdc_pipeline.alerts.callbacks import IncidentNotifier, RunEnd
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag
    from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag

    cdc, dbt = build_cdc_dag("billing"), build_dbt_dag("billing")
    assert isinstance(cdc.default_args["on_failure_callback"], IncidentNotifier)
    assert isinstance(cdc.on_failure_callback, RunEnd)
    desk = cdc.default_args["on_failure_callback"].desk
    assert desk.name == "billing" and desk.dag_id == "billing_cdc" and "dbo_payments" in desk.tables
    assert isinstance(dbt.on_success_callback, RunEnd) and dbt.on_success_callback.success
