"""dbt marts of the `billing` source, run by astronomer-cosmos (an Airflow DAG).

Scheduled on the raw-table Assets of `include/config/sources/billing.yaml` (any of them changed);
`dbt source freshness` first, then each model of `include/dbt/billing` followed by its tests.
The dbt graph comes from `include/dbt/billing/target/manifest.json`, built by
`make manifest` (dev/dbt_local.py): parsing stays well under a second and needs
no connection. Models, tests, targets and the execution-mode choice: `docs/dbt.md`.
"""

from include.cdc_pipeline.dbt_dag import build_dbt_dag

dag = build_dbt_dag("billing", doc_md=__doc__)
