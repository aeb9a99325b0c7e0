# Astro Runtime 3.3 = Apache Airflow 3.3 (Astronomer's distribution).
FROM astrocrpublic.azurecr.io/runtime:3.3-2

# Cosmos reads the dbt manifest built at image build time, so parsing the dbt DAG never runs
# `dbt ls` in the scheduler. dbt runs from the same Python environment as Airflow (dbt-core<1.12
# is pinned in requirements.txt).
ENV DBT_PROJECT_DIR=/usr/local/airflow/include/dbt/billing \
    DO_NOT_TRACK=1 \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
