"""The status page's web app inside Airflow's API server (plugins/cdc_status.py): who may see it,
and what its data API answers from the metadata DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.cdc_pipeline import health
from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.orchestration import run_record
from include.cdc_pipeline.planner import Window
from include.cdc_pipeline.status import figures as status
from tests.status.conftest import VariableRecord, page_config, set_variable

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "pagetest"
ROUTES = ("/cdc-status/", "/cdc-status/api/status", "/cdc-status/api/status?range=week", "/cdc-status/runbook")


def register_dag(dag_id: str, paused: bool) -> None:
    """The DAG's row in the metadata DB, as the DAG processor leaves it (paused or not)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.get(DagBundleModel, "status-tests") is None:
            session.add(DagBundleModel(name="status-tests"))
            session.flush()
        dag = session.get(DagModel, dag_id) or DagModel(dag_id=dag_id, bundle_name="status-tests", fileloc="x.py")
        dag.is_paused = paused
        session.merge(dag)


def seed_records(now: datetime) -> None:
    """What the CDC tasks and cdc_health write: payments loaded 300 changes, invoices fails."""
    window = Window("stream", "dbo_payments", lower="0000002A000001F40003", upper="0000002A000001F90001")
    batch = Batch(window, "dbo_payments:a-b", "p", 300, [], "2026-12-01T07:59:30", {"total_s": 1.5})
    status.record_apply(VariableRecord(status.status_key(SOURCE, "dbo_payments")), batch, {"apply_s": 0.5}, "r1", now)
    run_record.record_success(VariableRecord(f"cdc_runs__{SOURCE}__dbo_payments"), "r1", now)
    failing = VariableRecord(f"cdc_runs__{SOURCE}__dbo_invoices")
    for run_id in ("r1", "r2"):
        run_record.record_failure(failing, run_id, RuntimeError("Login failed for user 'LOADER'"), now)
    checks = [health.Check(SOURCE, "dbo_payments", "retention_headroom", "ok", 4000.0, 864.0, "minutes", "…")]
    set_variable(status.health_key(SOURCE), status.health_summary(SOURCE, checks, now))


@pytest.fixture
def page_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_CONFIG_DIR", str(page_config(tmp_path / "configs", SOURCE)))
    register_dag(f"{SOURCE}_cdc", paused=False)
    seed_records(datetime.now(UTC) - timedelta(minutes=2))


def test_anonymous_and_forged_requests_are_refused(api_server) -> None:
    client, token = api_server()
    for route in ROUTES:
        # Given no credential at all, every route of the page answers 401,
        assert client.get(route).status_code == 401, route
        # a token Airflow did not sign answers 403 (Airflow's own rule for invalid JWTs),
        assert client.get(route, headers={"Authorization": "Bearer not.a.jwt"}).status_code == 403, route
        assert client.get(route, cookies={"_token": "forged"}).status_code == 403, route
        # and a signed-in user (session cookie, as in the browser, or a bearer token) gets the page.
        assert client.get(route, cookies={"_token": token("viewer")}).status_code == 200, route
    # The static script and style hold no data.
    assert client.get("/cdc-status/static/app.js").status_code == 200


def test_status_api_returns_the_recorded_figures(api_server, page_source) -> None:
    client, token = api_server()
    response = client.get("/cdc-status/api/status", headers={"Authorization": f"Bearer {token('viewer')}"})
    assert response.status_code == 200
    data = response.json()
    [source] = [s for s in data["sources"] if s["name"] == SOURCE]
    rows = {r["name"]: r for r in source["tables"]}
    # Then one row per configured table,
    assert list(rows) == ["dbo_accounts", "dbo_products", "dbo_invoices", "dbo_invoice_lines", "dbo_payments"]
    # payments flowing with the batch it applied,
    payments = rows["dbo_payments"]
    assert payments["state"] == "flowing"
    assert (payments["last_batch"]["rows"], payments["last_batch"]["duration_s"]) == (300, 2.0)
    assert payments["last_batch"]["rows_per_s"] == 150.0
    assert (payments["lag_s"], payments["applied_through"]) == (0.0, "2026-12-01T07:59:30")
    assert payments["capture_instance"] == "dbo_payments"
    assert payments["retention"]["headroom_min"] == 4000.0
    # invoices failing with its streak and error,
    invoices = rows["dbo_invoices"]
    assert invoices["state"] == "failing"
    assert invoices["failures"]["streak"] == 2
    assert invoices["failures"]["last_error"] == "Login failed for user 'LOADER' (RuntimeError)"
    # the tables that never ran are shown as such, and the summary counts them.
    assert rows["dbo_accounts"]["state"] == "no runs yet" and rows["dbo_accounts"]["last_batch"] is None
    assert source["summary"]["states"] == {
        "flowing": 1, "snapshotting": 0, "idle": 0, "failing": 1, "stopped": 0, "no runs yet": 3,
    }  # fmt: skip
    assert source["paused"] is False


def test_sources_whose_dag_the_user_may_not_read_are_left_out(api_server, page_source) -> None:
    # Given an auth manager under which "outsider" may read every DAG but pagetest_cdc and "nobody" none,
    client, token = api_server(auth_manager="tests.status.auth.DagRulesAuthManager")
    headers = {"Authorization": f"Bearer {token('viewer')}"}
    assert SOURCE in {s["name"] for s in client.get("/cdc-status/api/status", headers=headers).json()["sources"]}
    # then outsider does not see the source at all,
    headers = {"Authorization": f"Bearer {token('outsider')}"}
    assert SOURCE not in {s["name"] for s in client.get("/cdc-status/api/status", headers=headers).json()["sources"]}
    # and a user who may read no DAG is refused the page.
    for route in ROUTES:
        assert client.get(route, headers={"Authorization": f"Bearer {token('nobody')}"}).status_code == 403, route


NO_WAREHOUSE_PROBE = """
import importlib.abc, json, sys
from datetime import UTC, datetime

class Refuse(importlib.abc.MetaPathFinder):
    seen = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("snowflake", "pymssql") or name.startswith(("include.cdc_pipeline.snowflake",
                "include.cdc_pipeline.warehouse", "include.cdc_pipeline.source", "airflow.providers.snowflake")):
            self.seen.append(name)
            raise ImportError(f"the status page must not import {name}")
        return None

from tests.status.conftest import page_config
from tests.status import test_status_api as t
from airflow.utils import db
db.initdb()
import os; from pathlib import Path
os.environ["CDC_CONFIG_DIR"] = str(page_config(Path(os.environ["AIRFLOW_HOME"]) / "configs", t.SOURCE))
t.register_dag("pagetest_cdc", paused=False)
t.seed_records(datetime.now(UTC))
from airflow import settings
settings.PLUGINS_FOLDER = str(t.ROOT / "plugins")
from airflow.api_fastapi import app as api_app
from fastapi.testclient import TestClient
client = TestClient(api_app.create_app())
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
token = api_app.get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
before = set(sys.modules)
sys.meta_path.insert(0, Refuse())
# Any Snowflake connection attempt fails loudly too (if the connector was imported before serving).
for name in [m for m in sys.modules if m == "snowflake.connector"]:
    sys.modules[name].connect = lambda *a, **k: (_ for _ in ()).throw(AssertionError("Snowflake connect"))
responses = [client.get(r, headers={"Authorization": f"Bearer {token}"}) for r in t.ROUTES]
print(json.dumps({
    "codes": [r.status_code for r in responses],
    "data": responses[1].json(),
    "refused_imports": Refuse.seen,
    "new_modules": sorted(m for m in set(sys.modules) - before if "snowflake" in m or "mssql" in m),
}))
"""


def test_serving_the_page_issues_no_warehouse_query(tmp_path: Path) -> None:
    # Given a fresh API server process (nothing imported by other tests) with recorded figures, where
    # importing the Snowflake connector, the SQL Server driver or the pipeline's warehouse/source code
    # fails, and a Snowflake connect would raise,
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env |= {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", NO_WAREHOUSE_PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # when the page, its data and the runbook are served, they all succeed without touching either,
    assert result["codes"] == [200, 200, 200, 200]
    assert result["refused_imports"] == [] and result["new_modules"] == []
    # and the data is the recorded figures (not an empty page).
    [source] = result["data"]["sources"]
    payments = {r["name"]: r for r in source["tables"]}["dbo_payments"]
    assert payments["last_batch"]["rows"] == 300 and payments["applied_through"] == "2026-12-01T07:59:30"


def test_plugin_loads_through_airflow_with_nothing_reachable(tmp_path: Path) -> None:
    # Given Airflow's plugins manager pointed at plugins/ in a process with no connection defined,
    probe = (
        "import json, sys, time; from airflow import settings, plugins_manager;"
        f"settings.PLUGINS_FOLDER = {str(ROOT / 'plugins')!r}; t = time.perf_counter();"
        "plugins, errors = plugins_manager._get_plugins(); took = time.perf_counter() - t;"
        "p = [p for p in plugins if p.name == 'cdc_status'];"
        "print(json.dumps({'errors': errors, 'found': len(p), 'apps': [a['url_prefix'] for a in p[0].fastapi_apps],"
        "'views': p[0].external_views, 'app_built': 'include.cdc_pipeline.status.app' in sys.modules,"
        "'seconds': took}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env |= {"AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # then it loads without error, registers the app and the navigation entry,
    assert result["errors"] == {} and result["found"] == 1
    assert result["apps"] == ["/cdc-status"]
    assert result["views"][0]["href"] == "cdc-status/" and result["views"][0]["url_route"] == "cdc-status"
    # and building the web app is left to the API server's first request (workers load plugins too).
    assert result["app_built"] is False, "the plugin built its web app at load time"
    print(f"all plugins loaded in {result['seconds']:.3f} s")
