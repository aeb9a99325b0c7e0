"""Airflow wiring of the pipeline: the DAG builders and what their tasks call.

* ``cdc_dag``: one CDC DAG per source config (cut → per table plan / extract_load / apply →
  publish), its Assets and pools.
* ``tasks``: the task callables of the CDC DAG (connections from the config's connection ids, the
  hint and run record as Airflow Variables, ``fail_fast`` for errors no retry can fix).
* ``run_record``: the per-table run record (last success, failure streak) the tasks keep.
* ``dbt_dag`` / ``dbt_manifest``: the Cosmos dbt DAG of a source and the manifest it renders from
  (``dbt_manifest`` is standard library only: the image build runs it first).
* ``health_dag`` / ``preflight_dag``: the DAGs that run the checks of ``health`` and ``preflight``
  (and the preflight's command line).

The replication itself (plan, extract, apply) is Airflow-free and lives beside this package; the
alert texts, channels and callbacks in ``alerts``; the status page in ``status``. This
``__init__`` imports nothing, so ``python -m ...orchestration.dbt_manifest`` stays standard
library only.
"""
