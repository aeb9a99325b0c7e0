"""The Astro CLI's DAG integrity test (run by `astro dev parse` and `astro dev pytest`).

Astro's generated template targets Airflow 2 (`DagBag(include_examples=False)` no longer exists
in Airflow 3.3); this version re-uses the project's own checks so both entry points agree.
"""

from tests.dags.test_dag_integrity import (  # noqa: F401 - collected by pytest
    dagbag,
    test_every_source_config_has_a_dag,
    test_house_rules,
    test_no_import_errors,
)
