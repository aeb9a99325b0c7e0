"""Airflow plugin: the **CDC status** page (Airflow 3.1+ plugin interface).

- ``fastapi_apps``: the page and its JSON API, mounted by the API server under ``/cdc-status``
  (include/cdc_pipeline/status/app.py); every route needs a signed-in Airflow user.
- ``external_views``: an entry in the UI's navigation bar ("CDC status") that shows the page
  in the UI's frame, on the same origin, so Airflow's session cookie signs the page's requests.

Plugins are loaded by every Airflow component (the task runner loads them for macros), so this
file imports nothing but the standard library and Airflow's plugin base class: the web app is
built on the first request the API server routes to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/cdc-status"
ASSETS = Path(__file__).resolve().parent / "cdc_status"


class LazyStatusApp:
    """An ASGI app that builds the FastAPI app on its first request (keeps plugin loading cheap)."""

    def __init__(self) -> None:
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from include.cdc_pipeline.status.app import create_app

            self._app = create_app(ASSETS)
        return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return "include.cdc_pipeline.status.app:create_app"


class CdcStatusPlugin(AirflowPlugin):
    name = "cdc_status"
    fastapi_apps = [{"app": LazyStatusApp(), "url_prefix": URL_PREFIX, "name": "CDC status"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "CDC status",
            # Relative to the UI's base URL, so it follows [api] base_url.
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "cdc-status",
            "destination": "nav",
            "nav_top_level": True,  # its own button in the navigation bar, not under "Plugins"
            "icon": URL_PREFIX.lstrip("/") + "/static/icon.svg",
        }
    ]
