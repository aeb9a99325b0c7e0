# Astro Runtime 3.3-2 = Apache Airflow 3.3 (Astronomer's distribution; what it ships:
# tests/astro/astro-runtime-3.3-2.txt). Its ONBUILD steps install packages.txt, refuse an
# apache-airflow line in requirements.txt, install requirements.txt and copy the project (less
# .dockerignore) to /usr/local/airflow before the lines below.
FROM astrocrpublic.azurecr.io/runtime:3.3-2

ENV DO_NOT_TRACK=1 \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False

# Cosmos renders billing_dbt from a dbt manifest, so the DAG processor never runs `dbt ls`.
# `dbt parse` needs no database connection; it writes build/dbt/<project>/manifest.json, outside
# the folders the Astro CLI bind-mounts (dags, include, plugins, tests), so `astro dev start`,
# `astro dev parse` and the deploy-time parse all find it. Where and how: include/cdc_pipeline/orchestration/dbt_manifest.py.
RUN python -m include.cdc_pipeline.orchestration.dbt_manifest
