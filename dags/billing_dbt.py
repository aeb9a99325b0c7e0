"""dbt marts of the `billing` source, run by astronomer-cosmos: the Airflow DAG `billing_dbt`.

Scheduled on the source's *published* Asset, not on the raw tables' Assets: `billing_cdc` emits it
once every table of a run was applied up to one LSN cut and something changed, so the marts are
built from raw tables that hold the same source transactions. `dbt source freshness` first, then
each model of `include/dbt/billing` followed by its tests. The dbt graph comes from a pre-built
manifest (`make manifest`, or the image build; where:
`include/cdc_pipeline/orchestration/dbt_manifest.py`): parsing stays well under a second and needs
no connection. The DAG is built by `include/cdc_pipeline/orchestration/dbt_dag.py`; models, tests,
targets and the execution-mode choice: `docs/dbt.md`.
"""

from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag

dag = build_dbt_dag("billing", doc_md=__doc__)
