"""The CDC status page (Airflow plugin ``plugins/cdc_status.py``), in two modules:

* ``figures``: what the page shows and where it comes from: the records the CDC tasks and the
  ``cdc_health`` DAG keep as Airflow Variables (recording) and the page model built from them and
  Airflow's DAG, run and task-instance rows. Free of Airflow and of the web framework.
* ``app``: the FastAPI app the plugin mounts (routes, sign-in and DAG access, reading the metadata
  DB, the runbook as HTML).

Neither opens a Snowflake or SQL Server connection: a page view costs no warehouse query.
"""
