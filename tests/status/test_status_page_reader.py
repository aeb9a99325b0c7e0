"""What the status page shows of the driver that read each table's last batch, rendered by the
page's own script (plugins/cdc_status/app.js) from the status API's answer, without a browser.

The API is Airflow's API server app in-process (tests/status/conftest.py); the script runs in Node —
the one Playwright ships in the dev venv (requirements-dev.txt), so no system package is needed —
with stand-ins for the three things it touches outside itself (``document``'s elements, ``fetch``
answering with the API's JSON, the refresh timer), and the test reads the HTML it put into the
page. Under ``change_reader: auto`` a driver that cannot load (a missing OS library) reads with
pymssql: the page shows "read with pymssql (fallback)" as a warning, the full reason in its
tooltip. The browser suite (tests/browser/test_status_page.py, ``make test-all``) checks the same
line on the real page after the demo's runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from include.cdc_pipeline.extract import Batch
from include.cdc_pipeline.planner import Window
from include.cdc_pipeline.status import figures as status
from tests.status.conftest import VariableRecord, page_config
from tests.status.test_status_api import register_dag
from tests.unloadable_driver import MISSING

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "readertest"
# The reader a batch records when change_reader auto fell back (include/cdc_pipeline/extract.py).
FALLBACK = (
    "pymssql (fallback: mssql-python cannot load its native driver: its ODBC driver libmsodbcsql-18.6.so.2.1 "
    f"needs {MISSING}, which is not installed (an OS package that packages.txt does not name yet))"
)
READERS = {"dbo_payments": FALLBACK, "dbo_products": "mssql-python", "dbo_accounts": "pymssql", "dbo_invoices": ""}

# The page's script in Node: its DOM and network stood in for, the page's HTML printed once loaded.
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const [appJs, dataJson] = process.argv.slice(2);
const elements = {};
const element = () => ({ innerHTML: "", textContent: "", addEventListener() {}, classList: { toggle() {} } });
const document = {
  getElementById: (id) => (elements[id] ??= element()), addEventListener() {}, querySelectorAll: () => [],
};
const data = JSON.parse(fs.readFileSync(dataJson, "utf8"));
const fetch = async (url) => ({ ok: true, status: 200, json: async () => data, url });
const context = vm.createContext({ document, window: {}, fetch, setInterval: () => 0, console });
vm.runInContext(fs.readFileSync(appJs, "utf8"), context, { filename: appJs });
setTimeout(() => process.stdout.write(elements.content.innerHTML), 0);
"""


def node() -> str:
    """Playwright's Node (always in the dev venv), else one on the PATH."""
    try:
        from playwright._impl._driver import compute_driver_executable

        executable = str(compute_driver_executable()[0])
    except ImportError:
        executable = ""
    found = executable if Path(executable).is_file() else shutil.which("node")
    if not found:
        pytest.fail("no Node to run the page's script: `make setup` installs Playwright (requirements-dev.txt)")
    return found


class Readers(HTMLParser):
    """Per table row (``tr[data-table]``): its ``[data-field=reader]`` element's attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any] | None] = {}
        self.table: str | None = None
        self.inside = 0  # open elements of the reader line

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("data-table"):
            self.table = attributes["data-table"]
            self.rows[self.table] = None
        if self.inside:
            self.inside += 1
        elif attributes.get("data-field") == "reader" and self.table:
            self.rows[self.table] = {**attributes, "text": ""}
            self.inside = 1

    def handle_endtag(self, tag: str) -> None:
        if self.inside:
            self.inside -= 1

    def handle_data(self, data: str) -> None:
        row = self.rows.get(self.table or "")
        if self.inside and row is not None:
            row["text"] += data


def seed(now: datetime) -> None:
    """One stream batch per table of READERS, each recording the driver that read it."""
    for table, reader in READERS.items():
        window = Window("stream", table, lower="0000002A000001F40003", upper="0000002A000001F90001")
        batch = Batch(window, f"{table}:a-b", "p", 12, [], "2026-12-01T07:59:30", {"total_s": 1.0}, reader=reader)
        status.record_apply(VariableRecord(status.status_key(SOURCE, table)), batch, {"apply_s": 0.5}, "r1", now)


def test_the_page_shows_which_driver_read_each_last_batch_and_a_fallback_as_a_warning(
    api_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a source whose last batches were read by the fallback (auto, driver not loadable), by
    # mssql-python, by pymssql, and one recorded before batches named their reader,
    monkeypatch.setenv("CDC_CONFIG_DIR", str(page_config(tmp_path / "configs", SOURCE)))
    register_dag(f"{SOURCE}_cdc", paused=False)
    seed(datetime.now(UTC) - timedelta(minutes=2))
    client, token = api_server()
    response = client.get("/cdc-status/api/status", headers={"Authorization": f"Bearer {token('viewer')}"})
    assert response.status_code == 200
    data = response.json()
    [source] = [s for s in data["sources"] if s["name"] == SOURCE]
    assert {t["name"]: (t["last_batch"] or {}).get("reader") for t in source["tables"]} == {
        "dbo_payments": FALLBACK,
        "dbo_products": "mssql-python",
        "dbo_accounts": "pymssql",
        "dbo_invoices": None,
        "dbo_invoice_lines": None,  # no batch yet
    }
    # when the page's script renders the API's answer,
    (tmp_path / "status.json").write_text(json.dumps(data))
    (tmp_path / "harness.js").write_text(HARNESS)
    done = subprocess.run(
        [node(), str(tmp_path / "harness.js"), str(ROOT / "plugins/cdc_status/app.js"), str(tmp_path / "status.json")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout, done.stderr
    page = Readers()
    page.feed(done.stdout)
    shown = {table: page.rows[table] for table in READERS}
    # then the fallback shows as "read with pymssql (fallback)", marked as a warning, the whole
    # reason (the missing library) in its tooltip and data-value,
    payments = shown["dbo_payments"]
    assert payments is not None, done.stdout[:2000]
    assert payments["text"] == "read with pymssql (fallback)"
    assert payments["class"].split() == ["small", "warn"]
    assert payments["title"] == payments["data-value"] == FALLBACK and MISSING in payments["title"]
    # a batch read as configured shows its driver, not as a warning,
    for table, reader in (("dbo_products", "mssql-python"), ("dbo_accounts", "pymssql")):
        line = shown[table]
        assert line is not None and line["text"] == f"read with {reader}", (table, line)
        assert line["class"].split() == ["small"] and line["data-value"] == reader
    # and a batch that named no reader (or no batch at all) shows no line.
    assert shown["dbo_invoices"] is None and page.rows["dbo_invoice_lines"] is None
