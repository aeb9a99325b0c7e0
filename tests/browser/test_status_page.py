"""The CDC status page in a real browser: Debian's Chromium (Playwright) against `make airflow`
after the demo's CDC runs, on a private copy of the local stack (tests/browser/stack.py).

Slow (a stack, three DAG runs, airflow standalone): runs in `make test-all` only. Set
``CDC_STATUS_SCREENSHOT=/tmp/cdc-status.png`` to keep a screenshot of the page.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.browser.stack import Airflow, StatusStack, chromium, status_stack, wait_for

# A stack, three DAG runs and airflow standalone: far beyond the default per-test timeout.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(3600)]
TABLES = {"dbo_accounts", "dbo_products", "dbo_invoices", "dbo_invoice_lines", "dbo_payments"}
FAILING = "payments"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StatusStack, Airflow]]:
    with status_stack(tmp_path_factory.mktemp("status-browser")) as stack:
        stack.demo_runs()
        yield stack, stack.airflow()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def _signed_in_page(browser: Any, airflow: Airflow) -> Any:
    """A browser tab with Airflow's session cookie, as after signing in on the login page."""
    context = browser.new_context(viewport={"width": 1600, "height": 1300})
    context.add_cookies([{"name": "_token", "value": airflow.token(), "url": airflow.url}])
    return context.new_page()


def _status_frame(page: Any, airflow: Airflow) -> Any:
    """Open the UI, follow the navigation entry to the page; the page's frame once its rows are shown."""
    page.goto(f"{airflow.url}/")
    entry = page.locator("a[href$='plugin/cdc-status']").first
    entry.wait_for(timeout=60_000)
    entry.click()
    page.wait_for_url("**/plugin/cdc-status**")
    frame = page.frame_locator("iframe[title='CDC status']")
    frame.locator("tr[data-table]").first.wait_for(timeout=60_000)
    return frame


def test_page_shows_every_table_with_figures_matching_cdc_batches(running, browser) -> None:
    stack, airflow = running
    logged = stack.batches()
    [api] = [s for s in airflow.status()["sources"] if s["name"] == "billing"]
    readers = {t["name"]: (t["last_batch"] or {}).get("reader") for t in api["tables"]}
    page = _signed_in_page(browser, airflow)
    frame = _status_frame(page, airflow)
    # The page is the navigation entry's iframe, one row per configured billing table,
    rows = frame.locator("section[data-source='billing'] tr[data-table]")
    assert {rows.nth(i).get_attribute("data-table") for i in range(rows.count())} == TABLES
    for table in TABLES:
        row = frame.locator(f"tr[data-table='{table}']")
        # with a lag figure (captured vs applied) and the source commit time it applied through,
        lag = row.locator("[data-field='lag']")
        assert lag.get_attribute("data-lag-s") not in (None, ""), table
        assert lag.inner_text().strip().split("\n")[0] not in ("", "—"), table
        applied = row.locator("[data-field='applied-through']").get_attribute("data-value")
        assert datetime.fromisoformat(applied) == logged[table]["committed"], table
        # and the last batch CONTROL.CDC_BATCHES logged: its rows and extract + apply seconds.
        batch = row.locator("[data-field='last-batch']")
        assert batch.get_attribute("data-batch-id") == logged[table]["batch_id"], table
        assert int(batch.get_attribute("data-rows")) == logged[table]["rows"], table
        assert float(batch.get_attribute("data-duration-s")) == pytest.approx(logged[table]["seconds"], abs=0.002)
        assert batch.locator("[data-field='rows']").inner_text() == f"{logged[table]['rows']:,}"
        # and the driver that read it, as recorded (this machine loads mssql-python's driver: no
        # fallback, so no warning; tests/status/test_status_page_reader.py renders the fallback).
        reader = batch.locator("[data-field='reader']")
        assert readers[table] in ("mssql-python", "pymssql"), (table, readers[table])
        assert reader.get_attribute("data-value") == readers[table], table
        assert reader.inner_text() == f"read with {readers[table]}", table
        assert "warn" not in (reader.get_attribute("class") or "").split(), table
        assert row.locator("[data-field='capture-instance']").inner_text() == table
    # The charts are drawn: lag lines, stacked bars of changes per run, run durations.
    source = frame.locator("section[data-source='billing']")
    assert source.locator("figure[data-chart='lag'] svg path").count() >= 1
    assert source.locator("figure[data-chart='rows'] svg rect").count() >= 3
    assert source.locator("figure[data-chart='duration'] svg rect").count() >= 3
    assert source.locator("[data-summary='billing']").inner_text().startswith("Tables")
    if os.environ.get("CDC_STATUS_SCREENSHOT"):
        page.screenshot(path=os.environ["CDC_STATUS_SCREENSHOT"].replace(".png", "-after-demo.png"), full_page=True)
    # A table's task link opens the DAG's mapped table tasks in the UI (out of the page's frame).
    frame.locator("tr[data-table='dbo_invoices'] a[data-link='task-group']").click()
    page.wait_for_url("**/dags/billing_cdc/tasks/group/tables**")
    page.context.close()


def test_a_failing_table_shows_as_failing_with_its_streak(running, browser) -> None:
    stack, airflow = running
    # Given payments loses its capture instance on the source,
    stack.disable_capture(FAILING)
    # when the scheduler runs the (unpaused) DAG, the table's task fails (its first try already counts),
    code, _ = airflow.call("PATCH", "/api/v2/dags/billing_cdc", {"is_paused": False})
    assert code == 200
    code, body = airflow.call("POST", "/api/v2/dags/billing_cdc/dagRuns", {"logical_date": None})
    assert code == 200, body

    def failing() -> dict[str, Any] | None:
        rows = {r["name"]: r for r in airflow.status()["sources"][0]["tables"]}
        return rows[f"dbo_{FAILING}"] if rows[f"dbo_{FAILING}"]["state"] == "failing" else None

    row = wait_for(failing, "payments to show as failing", explain=lambda: airflow.task_states("billing_cdc"))
    assert row["failures"]["streak"] >= 1 and "TableNotCapturedError" in row["failures"]["last_error"]
    # then the page shows it failing, with its streak, the error and a link to its last log.
    page = _signed_in_page(browser, airflow)
    frame = _status_frame(page, airflow)
    shown = frame.locator(f"tr[data-table='dbo_{FAILING}']")
    assert shown.get_attribute("data-state") == "failing"
    assert shown.locator("[data-field='state']").inner_text().startswith("failing")
    streak = shown.locator("[data-field='streak']")
    assert int(streak.get_attribute("data-streak")) == row["failures"]["streak"] >= 1
    assert "TableNotCapturedError" in streak.get_attribute("title")
    assert f"tables.extract_load[dbo_{FAILING}]" in shown.locator("a[data-link='log']").get_attribute("title")
    # On top, the open incident: its cause, its age and the table it affects.
    [incident] = wait_for(lambda: airflow.status()["incidents"] or None, "the incident to open")
    assert incident["failing"] == [f"dbo_{FAILING}"] and "TableNotCapturedError" in incident["title"]
    page.reload()
    frame = _status_frame(page, airflow)
    card = frame.locator(f"section[data-incidents] [data-incident='{incident['id']}']")
    assert card.locator("[data-field='age']").inner_text().startswith("open")
    assert f"dbo_{FAILING}" in card.locator("[data-field='tables']").inner_text()
    assert "TableNotCapturedError" in card.locator("[data-field='cause']").inner_text()
    # The state filter narrows the rows to the failing table.
    frame.locator("#filter-state").select_option("failing")
    assert frame.locator("tr[data-table]").count() == 1
    if os.environ.get("CDC_STATUS_SCREENSHOT"):
        frame.locator("#filter-state").select_option("")
        page.screenshot(path=os.environ["CDC_STATUS_SCREENSHOT"], full_page=True)
    page.context.close()


def test_anonymous_requests_are_refused(running, browser) -> None:
    _, airflow = running
    # Without Airflow's session cookie or a token, the plugin's API, page and runbook refuse to answer,
    for path in ("/cdc-status/api/status", "/cdc-status/", "/cdc-status/runbook"):
        code, _ = airflow.call("GET", path, token="")
        assert code == 401, path
    # also for a browser that never signed in.
    context = browser.new_context()
    response = context.request.get(f"{airflow.url}/cdc-status/api/status")
    assert response.status == 401
    context.close()
