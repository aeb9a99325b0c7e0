"""SQL Server CDC → Snowflake for the `billing` source.

One thin file per source config (`include/config/sources/billing.yaml`): a broken YAML then
shows as an import error of this file only, naming the file and the field, while the other
sources' DAGs keep loading. Tables are added in the YAML, never here. The DAG `billing_cdc` is
built by `include/cdc_pipeline/orchestration/cdc_dag.py`; on success with changes it emits the
published Asset `billing_dbt` runs on.
(Airflow only parses files that mention both "airflow" and "dag": this docstring does.)
"""

from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

dag = build_cdc_dag("billing")
