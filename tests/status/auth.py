"""An auth manager for the permission tests: Airflow's SimpleAuthManager with DAG read rules.

``outsider`` may read every DAG but ``pagetest_cdc``; ``nobody`` may read no DAG at all. (The
SimpleAuthManager's roles all read every DAG, so they cannot express this.)
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

DENIED = {"outsider": {"pagetest_cdc"}}


class DagRulesAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if user.get_name() == "nobody":
            return False
        if details is not None and details.id in DENIED.get(user.get_name(), set()):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
