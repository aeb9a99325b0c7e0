"""Status page tests: Airflow's metadata DB (SQLite, per session) and the API server app with the
project's plugins folder, served in-process by FastAPI's TestClient."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


def page_config(directory: Path, name: str) -> Path:
    """A copy of include/config/sources/billing.yaml under another source name (its own Variables)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "include/config/sources/billing.yaml").read_text()
    (directory / f"{name}.yaml").write_text(text.replace("name: billing", f"name: {name}"))
    return directory


def set_variable(key: str, value: dict[str, Any]) -> None:
    from airflow.models.variable import Variable  # the metadata DB itself: tests run outside any task

    Variable.set(key, json.dumps(value))


class VariableRecord:
    """The HintStore the CDC tasks use, on the metadata DB directly (outside a task)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def get(self) -> dict[str, Any] | None:
        from airflow.models.variable import Variable

        value = Variable.get(self.key, default_var=None, deserialize_json=True)
        return value if isinstance(value, dict) else None

    def set(self, value: dict[str, Any]) -> None:
        set_variable(self.key, value)


@pytest.fixture
def api_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Airflow's API server app with plugins/ as plugins folder; ``make(auth_manager=…)`` builds it.

    Yields a function returning (TestClient, token_for(username, role))."""
    from airflow import plugins_manager, settings
    from airflow.api_fastapi import app as api_app

    monkeypatch.setattr(settings, "PLUGINS_FOLDER", str(ROOT / "plugins"))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,outsider:viewer")

    def clear() -> None:
        for cached in (
            plugins_manager._get_plugins,
            plugins_manager.get_fastapi_plugins,
            plugins_manager._get_ui_plugins,
        ):
            cached.cache_clear()
        api_app.purge_cached_app()

    def make(auth_manager: str | None = None) -> tuple[Any, Callable[[str, str], str]]:
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from fastapi.testclient import TestClient

        if auth_manager:
            monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", auth_manager)
        clear()
        client = TestClient(api_app.create_app())

        def token(username: str, role: str = "viewer") -> str:
            user = SimpleAuthManagerUser(username=username, role=role)
            return api_app.get_auth_manager().generate_jwt(user)

        return client, token

    yield make
    clear()
