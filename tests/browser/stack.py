"""Browser-test helpers for the CDC status page: a private `make airflow` stack after the demo's CDC
runs, Airflow's REST API as a signed-in user, and Debian's Chromium driven by Playwright.

Everything runs in a temporary state directory on free ports (other stacks on the machine keep
theirs) and is stopped by the pids this module started. The browser is the system's Chromium
(`apt-get install chromium`, see `make browser`): Playwright never downloads one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev.stack import airflow_healthy
from tests.ui.browser_check import CHROMIUM as DEBIAN_CHROMIUM
from tests.ui.browser_check import CHROMIUM_ARGS  # one set of flags for every browser test

PY = sys.executable
CHROMIUM = os.environ.get("CDC_CHROMIUM", DEBIAN_CHROMIUM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], Any],
    what: str,
    timeout: float = 900,
    every: float = 3,
    explain: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy (scheduler work is asynchronous; a
    loaded machine starts each task process slowly). ``explain`` describes the state on giving up."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f": {explain()}" if explain else ""
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s{detail}")
        time.sleep(every)


@dataclass
class Airflow:
    """A running `airflow standalone` of the stack, spoken to as its admin user."""

    url: str
    username: str
    password: str

    def token(self) -> str:
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(f"{self.url}/auth/token", data=body, headers=headers, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (local URL)
            return json.loads(response.read())["access_token"]

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """(status, JSON body) of a request; ``token=""`` sends none (anonymous)."""
        headers = {"Content-Type": "application/json"}
        token = self.token() if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (local URL)
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def task_states(self, dag_id: str) -> list[tuple[str, str, str]]:
        """(run, task, state) of the DAG's latest runs' task instances (for failure messages)."""
        _, runs = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=2")
        found = []
        for run in (runs or {}).get("dag_runs", []) if isinstance(runs, dict) else []:
            _, tis = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances")
            for ti in (tis or {}).get("task_instances", []) if isinstance(tis, dict) else []:
                found.append((run["dag_run_id"], ti["task_id"], ti["state"]))
        return found

    def status(self) -> dict[str, Any]:
        code, data = self.call("GET", "/cdc-status/api/status")
        assert code == 200, (code, data)
        return data


class StatusStack:
    """The local stack of `make demo` / `make airflow` in a directory of its own."""

    def __init__(self, state_dir: Path) -> None:
        from dev.localenv import LocalStack
        from dev.stack import Stack

        config = LocalStack(
            state_dir=state_dir,
            mssql_port=free_port(),
            snowflake_port=free_port(),
            smtp_port=free_port(),
            airflow_port=free_port(),
        )
        self.stack = Stack(config)
        # The test session's own Airflow settings must not leak into the stack's processes.
        for key in [k for k in self.stack.env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
            if key not in config.environment():
                self.stack.env.pop(key)
        self.stack.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.stack.env.pop("CDC_CONFIG_DIR", None)
        # Log servers of the worker and triggerer on free ports too (8793/8794 may be taken).
        self.stack.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        self.stack.env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        self.config = config

    def demo_runs(self) -> None:
        """The demo's CDC runs (snapshot, stream after traffic, catch-up) and one health round."""
        stack = self.stack
        stack.up()
        stack.check_dags()
        stack.dag_test("billing_cdc")
        stack.run(stack.workload_command(7, "run", "--transactions", "150"), capture=True)
        time.sleep(2.5)  # the emulator's capture job scans every second
        stack.dag_test("billing_cdc")
        stack.run(stack.workload_command(8, "run", "--transactions", "60"), capture=True)
        time.sleep(2.5)
        stack.dag_test("billing_cdc")
        stack.dag_test("cdc_health")

    def airflow(self) -> Airflow:
        """`make airflow`'s `airflow standalone` on the stack (LocalExecutor, the project's plugins),
        waited for longer than `make airflow` does: a loaded test machine starts it slowly."""
        from dev import procs

        stack, url = self.stack, f"http://localhost:{self.config.airflow_port}"
        procs.start(
            stack.run_dir, "airflow", [PY, "-m", "airflow", "standalone"], stack.env, stack.log_dir / "airflow.log"
        )

        wait_for(lambda: airflow_healthy(url), f"airflow standalone at {url} (log: {stack.log_dir / 'airflow.log'})")
        passwords = self.config.airflow_home / "simple_auth_manager_passwords.json.generated"
        users = json.loads(passwords.read_text())
        return Airflow(url, "admin", users["admin"])

    def batches(self) -> dict[str, dict[str, Any]]:
        """The latest CONTROL.CDC_BATCHES row of every table (what the page must show)."""
        from dev.localpipeline import open_warehouse

        wh = open_warehouse(self.config.snowflake_port)
        rows = wh.execute(
            "SELECT TABLE_NAME, BATCH_ID, ROWS_STAGED, EXTRACT_SECONDS, APPLY_SECONDS, UPPER_COMMITTED_AT"
            " FROM ANALYTICS.CONTROL.CDC_BATCHES QUALIFY ROW_NUMBER() OVER (PARTITION BY TABLE_NAME"
            " ORDER BY APPLIED_AT DESC) = 1"
        )
        return {
            table: {"batch_id": batch, "rows": rows_, "seconds": extract + apply, "committed": committed}
            for table, batch, rows_, extract, apply, committed in rows
        }

    def disable_capture(self, table: str) -> None:
        """Make a table fail: CDC disabled on the source (plan raises TableNotCapturedError)."""
        from dev.mssql_emulator import connect

        conn = connect(server="127.0.0.1", port=self.config.mssql_port, database=self.config.source_database)
        try:
            conn.cursor().execute(
                f"EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'{table}',"
                f" @capture_instance = N'dbo_{table}'"
            )
            conn.commit()
        finally:
            conn.close()

    def stop(self) -> None:
        self.stack.stop()


@contextmanager
def status_stack(base: Path) -> Iterator[StatusStack]:
    stack = StatusStack(base / "local")
    try:
        yield stack
    finally:
        stack.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, headless, no network beyond the page's own server."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
