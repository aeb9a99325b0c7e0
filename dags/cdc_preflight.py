"""Preflight of the CDC DAGs: the Airflow DAG `cdc_preflight` (manual trigger only).

Checks, with the configured connections, that SQL Server is reachable with CDC enabled on the
database and every configured table, that the login is not sysadmin and can read the `cdc` schema,
that Snowflake accepts the role's work in the target schemas, that every pool a task uses exists
with slots, that the salt Variable is set and that SMTP answers; each failure names its fix.
Locally: `make preflight`. The checks: include/cdc_pipeline/preflight.py; the DAG and the same
checks from a shell: include/cdc_pipeline/orchestration/preflight_dag.py.
"""

from include.cdc_pipeline.orchestration.preflight_dag import build_preflight_dag

dag = build_preflight_dag(doc_md=__doc__)
