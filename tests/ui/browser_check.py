"""The Airflow UI in a real browser: Playwright driving Debian's Chromium (never a downloaded one).

``check_ui`` logs in to a running Airflow (``make airflow``), sees the DAGs with no import errors,
the plan task, the mapped ``tables`` group and publish in ``billing_cdc``, and — after a CDC run that changed data —
an asset-triggered ``billing_dbt`` run. Used by tests/ui/test_browser.py (a fresh stack) and by hand:

    python -m tests.ui.browser_check http://localhost:8080 admin <password>
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAGS = ["billing_cdc", "billing_dbt", "cdc_health", "cdc_preflight"]
# billing_cdc's graph: one plan task, the mapped table group (an instance per table with work), publish
TABLE_GROUPS = ["plan", "tables", "publish"]


def airflow_cli(env: Mapping[str, str], *args: str) -> str:
    """Run ``airflow <args>`` against the stack's metadata DB (its environment)."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=dict(env), capture_output=True, text=True, check=True
    )
    return done.stdout


def check_ui(
    base_url: str,
    user: str,
    password: str,
    start_cdc_run: Callable[[], None],
    dbt_run_exists: Callable[[], bool],
    timeout: float = 1500,
    screenshot: Path | None = None,
) -> dict[str, Any]:
    """Drive the UI; returns what it saw (raises on anything missing); ``screenshot``: where to save
    the billing_dbt runs page."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            # Log in with the simple auth manager's form.
            page.goto(f"{base_url}/")
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            # The DAG list: every DAG, and no import-error banner.
            page.goto(f"{base_url}/dags")
            for dag_id in DAGS:
                page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
            text = page.inner_text("body")
            assert "Import Error" not in text, text
            seen["dags"] = [d for d in DAGS if d in text]
            # billing_cdc: one plan, the mapped tables group, publish (the shape does not grow with tables).
            page.goto(f"{base_url}/dags/billing_cdc")
            for group in TABLE_GROUPS:  # Airflow 3.3 labels a mapped task group "tables [ ]"
                page.get_by_text(re.compile(rf"^{re.escape(group)}( \[ *\])?$")).first.wait_for()
            seen["task_groups"] = [g for g in TABLE_GROUPS if g in page.inner_text("body")]
            # A CDC run that loads data emits the source's Asset: billing_dbt runs on it.
            start_cdc_run()
            deadline = time.monotonic() + timeout
            while not dbt_run_exists():
                if time.monotonic() > deadline:
                    raise AssertionError("no asset-triggered billing_dbt run appeared")
                time.sleep(5)
            page.goto(f"{base_url}/dags/billing_dbt/runs")
            page.get_by_text("asset_triggered", exact=False).first.wait_for()
            seen["dbt_runs_page"] = page.inner_text("body")
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return seen


def stack_callbacks(env: Mapping[str, str]) -> tuple[Callable[[], None], Callable[[], bool]]:
    """Unpause both DAGs and trigger billing_cdc; look for an asset-triggered billing_dbt run."""
    import json

    def start() -> None:
        for dag_id in ("billing_dbt", "billing_cdc"):
            airflow_cli(env, "dags", "unpause", dag_id)
        airflow_cli(env, "dags", "trigger", "billing_cdc")

    def dbt_run() -> bool:
        out = airflow_cli(env, "dags", "list-runs", "billing_dbt", "-o", "json")
        # stdout may carry log lines before the JSON list
        found = [line for line in out.splitlines() if line.startswith("[{") or line.strip() == "[]"]
        runs = json.loads(found[-1]) if found else []
        return any(str(r.get("run_id", "")).startswith("asset_triggered") for r in runs)

    return start, dbt_run


def main(argv: list[str]) -> int:
    import os

    from dev.localenv import LocalStack

    base_url, user, password = argv
    env = {**os.environ, **LocalStack().environment()}
    seen = check_ui(base_url, user, password, *stack_callbacks(env))
    print({k: v for k, v in seen.items() if k != "dbt_runs_page"})
    print(seen["dbt_runs_page"][:1500])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
