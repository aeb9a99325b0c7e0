"""dbt marts of the `billing` source, run by astronomer-cosmos (an Airflow DAG).

Scheduled on the source's published Asset (the CDC DAG `billing_cdc` applied every table up to
one LSN cut and something changed); `dbt source freshness` first, then each model of
`include/dbt/billing` followed by its tests. The dbt graph comes from a pre-built manifest
(`make manifest`, or the image build; where: `include/cdc_pipeline/orchestration/dbt_manifest.py`): parsing
stays well under a second and needs no connection. Models, tests, targets and the execution-mode choice: `docs/dbt.md`.
"""

from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag

dag = build_dbt_dag("billing", doc_md=__doc__)
