"""Source → raw → marts, the whole product through Airflow: SQL Server CDC emulator → billing_cdc
DAG → local Snowflake raw/history → billing_dbt DAG (astronomer-cosmos, dbt build) → marts.

The CDC DAG runs with dag.test() (the same connections and hooks as production, selected by
connection settings): an initial snapshot, a stream run after each of two rounds of live traffic,
and an idle run. Every raw table equals its source table, history holds each captured change once,
the idle run issues no Snowflake query in plan, and the run records and the status page's figures
(metadata DB) agree with CONTROL.CDC_BATCHES.

The marts are checked against an independent computation on the emulator's own source tables:
every invoice's status, amount and payments; invoiced and paid per day and currency; each
account's position today; and open receivables at a past instant, rebuilt by dbt from the CDC
history, equal to the source state recorded at that instant.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dev import dbt_local
from dev.localpipeline import pipelines
from dev.mssql_emulator import start_server
from dev.workload.tsql import Workload
from include.cdc_pipeline.lsn import to_hex
from include.cdc_pipeline.reconcile import reconcile
from tests.e2e.conftest import SALT, billing_config, connect_airflow, run_cdc_dag, wait_for_capture
from tests.fixtures_mssql import pymssql_connect

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
DATABASE = "E2E_MARTS"
SOURCE_DB = "billing_marts"
BILLED = ("issued", "paid", "refunded")
ZERO = Decimal("0.00")
TABLES = ("dbo_accounts", "dbo_products", "dbo_invoices", "dbo_invoice_lines", "dbo_payments")


def _rows(conn: Any, sql: str) -> list[dict[str, Any]]:
    cursor = conn.cursor()
    cursor.execute(sql)
    names = [d[0].lower() for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


class SourceBooks:
    """What the marts must say, computed in Python from the source tables (T-SQL on the emulator)."""

    def __init__(self, conn: Any) -> None:
        self.invoices = {r["invoice_id"]: r for r in _rows(conn, "SELECT * FROM dbo.invoices")}
        self.payments = _rows(conn, "SELECT * FROM dbo.payments")
        self.settled: dict[int, Decimal] = defaultdict(lambda: ZERO)
        for pay in self.payments:
            if pay["status"] == "settled":
                self.settled[pay["invoice_id"]] += _money(pay["amount"])

    def invoice_facts(self) -> dict[int, tuple[Any, ...]]:
        return {
            i: (r["status"], r["account_id"], _money(r["total_amount"]), self.settled[i])
            for i, r in self.invoices.items()
        }

    def revenue_daily(self) -> dict[tuple[date, str], tuple[Decimal, int, Decimal, int]]:
        days: dict[tuple[date, str], list[Any]] = defaultdict(lambda: [ZERO, 0, ZERO, 0])
        for inv in self.invoices.values():
            if inv["status"] in BILLED:
                row = days[(_day(inv["issued_at"]), inv["currency"])]
                row[0] += _money(inv["total_amount"])
                row[1] += 1
        for pay in self.payments:
            if pay["status"] == "settled":
                row = days[(_day(pay["paid_at"]), self.invoices[pay["invoice_id"]]["currency"])]
                row[2] += _money(pay["amount"])
                row[3] += 1
        return {k: tuple(v) for k, v in days.items()}

    def open_receivables(self) -> dict[int, Decimal]:
        """Issued invoices with money outstanding (fct_receivables_ageing's rows)."""
        return {
            i: _money(r["total_amount"]) - self.settled[i]
            for i, r in self.invoices.items()
            if r["status"] == "issued" and _money(r["total_amount"]) > self.settled[i]
        }

    def account_positions(self) -> dict[tuple[int, str], tuple[Decimal, Decimal, Decimal, int]]:
        """Per account and currency: invoiced, paid (settled on billed invoices), outstanding, open count."""
        out: dict[tuple[int, str], list[Any]] = defaultdict(lambda: [ZERO, ZERO, ZERO, 0])
        for i, inv in self.invoices.items():
            if inv["status"] not in BILLED:
                continue
            row = out[(inv["account_id"], inv["currency"])]
            row[0] += _money(inv["total_amount"])
            row[1] += self.settled[i]
            if i in self.open_receivables():
                row[2] += _money(inv["total_amount"]) - self.settled[i]
                row[3] += 1
        return {k: tuple(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def marts(local_snowflake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Snapshot, two rounds of live traffic, a CDC run after each, then the dbt DAG; the source's
    books are recorded between the rounds (with the instant) and at the end. The source database
    has a server of its own (the emulator serves one database per server)."""
    directory = tmp_path_factory.mktemp("marts_source")
    db, log = directory / f"{SOURCE_DB}.duckdb", directory / "server.log"
    with start_server(db, capture_interval=0.5, log_path=log) as srv:
        yield _build_marts(srv, local_snowflake, tmp_path_factory) | {"server": srv}


def _build_marts(mssql_server: Any, local_snowflake: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from airflow.models.variable import Variable  # the metadata-DB model: delete by key prefix
    from airflow.utils.session import create_session

    # The status figures and run records of source `billing` are per source and table, not per
    # target: start from none, whatever other tests of this session ran the billing DAG before.
    with create_session() as session:
        for prefix in ("cdc_status__billing__", "cdc_runs__billing__"):
            session.query(Variable).filter(Variable.key.startswith(prefix)).delete(synchronize_session=False)
    monkeypatch = pytest.MonkeyPatch()
    configs = billing_config(tmp_path_factory.mktemp("marts_configs"), DATABASE)
    connect_airflow(monkeypatch, configs, mssql_server, local_snowflake, DATABASE, SOURCE_DB)
    monkeypatch.setenv("CDC_DBT_TARGET", "local")
    conn = pymssql_connect(mssql_server, SOURCE_DB)
    try:
        Workload(conn, seed=2026).init(accounts=40, products=10, invoices=90)
        conn.commit()
        runs = [run_cdc_dag(configs)]  # initial snapshot of every table
        Workload(conn, seed=5).run(transactions=250)
        wait_for_capture(conn)
        runs.append(run_cdc_dag(configs))
        # The past cut-off: every change so far is committed before it, none of round two.
        (last_commit,) = _rows(conn, "SELECT sys.fn_cdc_map_lsn_to_time(sys.fn_cdc_get_max_lsn()) AS t")[0].values()
        cutoff = last_commit + timedelta(milliseconds=5)
        books_at_cutoff = SourceBooks(conn)
        time.sleep(0.05)  # the next commit is stamped after the cut-off
        Workload(conn, seed=6).run(transactions=250)
        wait_for_capture(conn)
        runs.append(run_cdc_dag(configs))
        books = SourceBooks(conn)
        idle_run = run_cdc_dag(configs)  # nothing new since the last run
        from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag

        dbt_run = build_dbt_dag("billing", directory=configs).test()
    finally:
        conn.close()
        monkeypatch.undo()
    return {
        "cdc_runs": runs, "idle_run": idle_run, "dbt_run": dbt_run, "books": books, "cutoff": cutoff,
        "books_at_cutoff": books_at_cutoff, "snowflake": local_snowflake, "configs": configs,
    }  # fmt: skip


def _marts(marts: dict[str, Any], sql: str) -> list[dict[str, Any]]:
    conn = marts["snowflake"].connect(database=DATABASE)
    try:
        return _rows(conn, sql)
    finally:
        conn.close()


def test_every_run_succeeds_and_each_cdc_run_is_published(marts: dict[str, Any]) -> None:
    for run in marts["cdc_runs"]:
        assert run.state == "success"
        assert run.get_task_instance("publish").state == "success"  # every run had changes: Asset event
    run = marts["dbt_run"]
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", {t: s for t, s in states.items() if s != "success"}
    # every model and its tests ran (Cosmos renders one task per node)
    assert {"dbt.fct_invoices.run", "dbt.fct_receivables_ageing.run"} <= set(states)


def _pipelines(marts: dict[str, Any]) -> list[Any]:
    port = marts["server"].port
    return pipelines(marts["configs"] / "billing.yaml", port, marts["snowflake"].port, salt=SALT, database=SOURCE_DB)


def test_raw_equals_the_source_and_history_holds_each_captured_change_once(marts: dict[str, Any]) -> None:
    for pipeline in _pipelines(marts):
        result = reconcile(pipeline, salt=SALT)
        assert result.ok and result.source_rows, result
        table = pipeline.table
        layout = pipeline.layout(pipeline.mappings(pipeline.instances()[-1].name))
        key = ", ".join(k for k in layout.key)
        history = pipeline.warehouse.execute(
            f"SELECT _CDC_LSN, _CDC_SEQVAL, _CDC_OPERATION, {key} FROM {layout.history} WHERE _CDC_OPERATION <> 0"
        )
        snapshot = pipeline.warehouse.execute(
            f"SELECT SNAPSHOT_LSN FROM {DATABASE}.CONTROL.CDC_WATERMARKS WHERE TABLE_NAME = %s", (table.name,)
        )
        keys = ", ".join(f"[{k}]" for k in table.primary_key)
        captured = {
            (to_hex(lsn), to_hex(seq), op, *rest)
            for lsn, seq, op, *rest in pipeline.source.query(
                f"SELECT [__$start_lsn], [__$seqval], [__$operation], {keys} FROM cdc.[{table.name}_CT]"
                " WHERE [__$operation] <> 3"
            )
            if to_hex(lsn) > snapshot[0][0]
        }
        counted = Counter(tuple(r) for r in history)
        assert max(counted.values(), default=1) == 1, f"{table.name}: duplicated history"
        assert set(counted) == captured, f"{table.name}: history differs from the change table"


def test_an_idle_run_is_one_plan_task_and_records_every_table(marts: dict[str, Any]) -> None:
    from airflow.models import Variable  # the metadata DB itself: this test runs outside any task

    from include.cdc_pipeline.status.figures import with_source_plan

    run = marts["idle_run"]
    assert run.state == "success"
    # Nothing new for any table: the plan task ran, and no table got a task instance of its own
    # (the mapped group expanded to nothing), nothing was published.
    tis = run.get_task_instances()
    assert [ti.task_id for ti in tis if ti.state == "success"] == ["plan"]
    assert not [ti for ti in tis if ti.map_index >= 0], [(ti.task_id, ti.map_index) for ti in tis]
    assert {ti.task_id: ti.state for ti in tis if ti.task_id != "plan"} == {
        "tables.extract_load": "skipped", "tables.apply": "skipped", "publish": "skipped",
    }  # fmt: skip
    # The plan of the source names every table idle in this run (one Variable for the source)...
    plan = Variable.get("cdc_status__billing", deserialize_json=True)  # noqa: AIR311
    assert plan["run_id"] == run.run_id and sorted(plan["idle"]) == sorted(TABLES) and not plan["work"]
    # ...so each table's run record (as cdc_health and the status page read it) names this
    # completed run, with no failure streak.
    for table in TABLES:
        own = Variable.get(f"cdc_runs__billing__{table}", deserialize_json=True)  # noqa: AIR311
        record = with_source_plan(table, None, own, plan)[1]
        assert record and record["succeeded_run"] == run.run_id and record["failed_runs"] == 0, record


def test_the_status_page_figures_match_the_batch_log(marts: dict[str, Any]) -> None:
    from airflow.utils.session import create_session

    from include.cdc_pipeline.config import load_source_config
    from include.cdc_pipeline.status import figures as status
    from include.cdc_pipeline.status.app import read_dags, read_last_task_instances, read_records

    idle_run = marts["idle_run"]
    source = load_source_config(marts["configs"] / "billing.yaml")
    with create_session() as session:
        records = read_records(session)
        dags = read_dags(session, [source.dag_id])
        last_tis = read_last_task_instances(session, source)
    view = status.page([source], records, dags, {source.dag_id: last_tis}, {})["sources"][0]
    warehouse = _pipelines(marts)[0].warehouse
    logged = {
        table: (rows, extract_s + apply_s, committed)
        for table, rows, extract_s, apply_s, committed in warehouse.execute(
            f"SELECT TABLE_NAME, ROWS_STAGED, EXTRACT_SECONDS, APPLY_SECONDS, UPPER_COMMITTED_AT"
            f" FROM {DATABASE}.CONTROL.CDC_BATCHES QUALIFY ROW_NUMBER() OVER (PARTITION BY TABLE_NAME"
            " ORDER BY APPLIED_AT DESC) = 1"
        )
    }
    assert {row["name"] for row in view["tables"]} == set(logged)
    for row in view["tables"]:
        rows, seconds, committed = logged[row["name"]]
        batch = row["last_batch"]
        assert batch["rows"] == rows and abs(batch["duration_s"] - seconds) < 0.002, (row["name"], batch, rows)
        assert datetime.fromisoformat(row["applied_through"]) == committed
        # the last run was idle for every table: lag 0, and the row's log link is that run's plan
        assert row["lag_s"] == 0.0 and row["last_run"] == idle_run.run_id
        assert row["links"]["last_task"]["run_id"] == idle_run.run_id
        assert row["links"]["last_task"]["task_id"] == "plan"
        assert row["state"] in ("flowing", "idle") and row["failures"]["streak"] == 0
        # one point per run with work (an idle run writes nothing per table)
        assert [p["mode"] for p in row["points"]] == ["snapshot", "stream", "stream"]


def test_invoices_equal_the_source(marts: dict[str, Any]) -> None:
    rows = _marts(marts, "SELECT * FROM MARTS.FCT_INVOICES")
    got = {
        r["invoice_id"]: (r["status"], r["account_id"], _money(r["total_amount"]), _money(r["paid_amount"]))
        for r in rows
    }
    assert got == marts["books"].invoice_facts()
    # the account version in force when each invoice was recorded exists for every invoice
    assert all(r["account_version_key"] for r in rows)


def test_revenue_per_day_equals_the_source(marts: dict[str, Any]) -> None:
    rows = _marts(marts, "SELECT * FROM MARTS.FCT_REVENUE_DAILY")
    got = {
        (_day(r["revenue_date"]), r["currency"]): (
            _money(r["invoiced_amount"]), r["invoice_count"], _money(r["paid_amount"]), r["payment_count"],
        )
        for r in rows
    }  # fmt: skip
    expected = marts["books"].revenue_daily()
    assert sum(v[1] for v in expected.values()) > 100  # (the generator's business clock spans hours)
    assert got == expected


def test_account_positions_today_equal_the_source(marts: dict[str, Any]) -> None:
    rows = _marts(
        marts,
        "SELECT * FROM MARTS.FCT_ACCOUNT_FEATURES_DAILY"
        " WHERE as_of_date = (SELECT MAX(as_of_date) FROM MARTS.FCT_ACCOUNT_FEATURES_DAILY)",
    )
    got = {
        (r["account_id"], r["currency"]): (
            _money(r["invoiced_amount_to_date"]), _money(r["paid_amount_to_date"]),
            _money(r["outstanding_amount"]), r["open_invoice_count"],
        )
        for r in rows
    }  # fmt: skip
    assert got == marts["books"].account_positions()


# `make test-all` only: its own dbt invocation (~25 s); `make test` rebuilds receivables at a past cut-off
# from history in tests/dbt/test_marts_data.py.
@pytest.mark.slow
def test_receivables_at_a_past_instant_equal_the_source_then(marts: dict[str, Any], tmp_path: Any) -> None:
    # Rebuild fct_receivables_ageing as of the instant between the traffic rounds (from history).
    cutoff = marts["cutoff"].strftime("%Y-%m-%d %H:%M:%S.%f")
    dbt_local.run_dbt(
        ["run", "--select", "fct_receivables_ageing", "--vars", f"{{as_of_timestamp: '{cutoff}'}}"],
        marts["snowflake"].port, database=DATABASE, target_path=tmp_path / "target", log_path=tmp_path / "logs",
        capture=True,
    )  # fmt: skip
    rows = _marts(marts, "SELECT invoice_id, outstanding_amount FROM MARTS.FCT_RECEIVABLES_AGEING")
    then = marts["books_at_cutoff"].open_receivables()
    assert then != marts["books"].open_receivables()  # round two changed the books
    assert {r["invoice_id"]: _money(r["outstanding_amount"]) for r in rows} == then
