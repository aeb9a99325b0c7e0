"""The Astro CLI's DAG integrity test (run by `astro dev parse` and `astro dev pytest`).

Astro's generated template targets Airflow 2 (`DagBag(include_examples=False)` no longer exists
in Airflow 3.3); this version re-uses the project's own checks so both entry points agree.
It runs inside the Astro image (Airflow, the project's requirements and pytest; no dev packages),
with the checkout's tests/ bind-mounted: tests/astro/test_runtime_build.py runs it that way.
"""

from tests.dags.test_dag_integrity import (  # noqa: F401 - collected by pytest
    dagbag,
    test_every_source_config_has_a_dag,
    test_house_rules,
    test_no_import_errors,
)
