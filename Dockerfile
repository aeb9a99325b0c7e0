# Astro Runtime 3.3 = Apache Airflow 3.3 (Astronomer's distribution). Its ONBUILD steps install
# packages.txt and requirements.txt and copy the project to /usr/local/airflow before the lines below.
FROM astrocrpublic.azurecr.io/runtime:3.3-2

ENV DO_NOT_TRACK=1 \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False

# Cosmos parses the dbt project from a manifest built here, so the DAG processor never runs
# `dbt ls`. `dbt parse` needs no database connection.
RUN python -m dev.dbt_local manifest
