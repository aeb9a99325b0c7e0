"""CDC health monitoring: the Airflow DAG `cdc_health` (every 15 minutes, all source configs).

Checks the capture job, freshness per table, retention headroom and change-table growth, appends
the figures to `<db>.CONTROL.CDC_HEALTH` and e-mails the on-call list (docs/runbook.md).
Built by `include/cdc_pipeline/orchestration/health_dag.py`; the checks: `include/cdc_pipeline/health.py`.
"""

from include.cdc_pipeline.orchestration.health_dag import build_health_dag

dag = build_health_dag()
