"""``airflow dags test`` on the DAGs exactly as the scheduler parses them, Deadline Alerts included.

``python -m dev.dag_test <dag_id> [airflow dags test options]`` is ``airflow dags test`` with one
Airflow 3.3 defect worked around: ``dag.test()`` runs its DAG from an in-memory serialization whose
``deadline`` holds each alert's *definition*, where the scheduler's (read from the metadata DB) holds
the alert's id; when such a run succeeds, ``DagRun.update_state`` looks each alert up by id and fails
(``AttributeError: 'dict' object has no attribute 'hex'``). Here the lookup also accepts the
definition (an unsaved ``DeadlineAlert`` row built from it: ``update_state`` only reads its
reference, to prune the run's deadlines).

Why not switch the alerts off for these runs (``CDC_DEADLINES=off``, as the in-process tests do):
the DAG ``dags test`` writes to the metadata DB must be the DAG the DAG processor writes, or the
next parse of ``make airflow`` adds a second version of it and ``airflow dags list`` (one row per
serialized version) shows the DAG twice.
"""

from __future__ import annotations

import sys
from typing import Any


def accept_alert_definitions() -> None:
    """Let ``DeadlineAlert.get_by_id`` take an alert's definition as ``dag.test()`` hands it."""
    from airflow.models.deadline_alert import DeadlineAlert

    by_id = DeadlineAlert.get_by_id

    def get_by_id(deadline_alert_id: Any, **kwargs: Any) -> DeadlineAlert:
        if isinstance(deadline_alert_id, dict):
            definition = deadline_alert_id.get("__var", deadline_alert_id)
            return DeadlineAlert(
                name=definition.get("name"),
                reference=definition["reference"],
                interval=definition["interval"],
                callback_def=definition["callback"],
            )
        return by_id(deadline_alert_id, **kwargs)

    DeadlineAlert.get_by_id = get_by_id  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    accept_alert_definitions()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dags", "test", *argv]
    airflow_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
