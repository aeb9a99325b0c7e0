"""Many tables under the scheduler: what one CDC run costs as the table count grows.

Not ``dags test``: a real ``airflow standalone`` (LocalExecutor, parallelism 4, the pools of the
local stack) runs the CDC DAG of a generated source of N small tables on the emulator server and
the local Snowflake. The tables are loaded once by the pipeline itself (no Airflow), then one warm-up
run fills the hints; every measured run first changes a share of the tables (one row updated in
each, captured), then is triggered, and prints:

* wall time (the DAG run's start to end in Airflow's database),
* task instances (rows of the run) and how many of them ran a process,
* summed task seconds (their durations),
* CPU seconds of Airflow's processes over the run (scheduler, its LocalExecutor workers and the
  task processes they start, the API server, the DAG processor, the triggerer: the session that
  ``airflow standalone`` leads), with the task side alone where the process names tell it,
* statements the local Snowflake answered during the run.

Then the DAG's parse time (a fresh process timing ``DagBag`` on the DAG file) at larger table counts.

    python benchmarks/bench_many_tables.py                       # 5, 60, 300 tables; 0, 1, 10 % changed; 3 runs each
    python benchmarks/bench_many_tables.py --tables 60 --changed 0 --repeat 1
    python benchmarks/bench_many_tables.py --project /path/to/other/checkout   # the same, another version's DAG
    python benchmarks/bench_many_tables.py --parse-only --parse-tables 300,1000

``--project`` runs another checkout's ``dags``/``include`` (PYTHONPATH, DAGs folder) against the same
local stack, e.g. the commit before the one-plan-per-source change, for a before/after table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dev import procs, snowflake_local  # noqa: E402
from dev.mssql_emulator import connect, start_server  # noqa: E402

SOURCE = "bench"
DAG_ID = f"{SOURCE}_cdc"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def config_yaml(tables: int, database: str) -> str:
    rows = "\n".join(f"  - {{schema: dbo, table: t{i:04d}, primary_key: [id]}}" for i in range(tables))
    return (
        f"name: {SOURCE}\nmssql_conn_id: mssql_bench\nsnowflake_conn_id: snowflake_default\nschedule: null\n"
        f"alert_emails: [oncall@example.com]\nchange_reader: pymssql\ntarget: {{database: {database}}}\n"
        f"tables:\n{rows}\n"
    )


DAG_FILE = '''"""The benchmark's CDC DAG (an airflow dag file)."""
from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

dag = build_cdc_dag("bench")
'''


@dataclass
class Stack:
    """The emulator server, the local Snowflake and ``airflow standalone`` of one benchmark case."""

    home: Path
    project: Path
    mssql: Any = None
    snowflake_pid: int = 0
    snowflake_port: int = 0
    airflow: Any = None
    airflow_port: int = 0

    @property
    def mssql_conn(self) -> dict[str, Any]:
        port = self.mssql.port
        return {
            "conn_type": "mssql",
            "host": "127.0.0.1",
            "port": port,
            "schema": "bench",
            "login": "sa",
            "password": "local",
        }

    @property
    def env(self) -> dict[str, str]:
        home = self.home / "airflow"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_VAR"))}
        env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.home / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="4",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
            AIRFLOW__API__PORT=str(self.airflow_port),
            AIRFLOW__API__BASE_URL=f"http://localhost:{self.airflow_port}",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://localhost:{self.airflow_port}/execution/",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
            AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
            DO_NOT_TRACK="1",
            PYTHONPATH=str(self.project),
            CDC_CONFIG_DIR=str(self.home / "config"),
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            AIRFLOW_CONN_MSSQL_BENCH=json.dumps(self.mssql_conn),
            AIRFLOW_CONN_SNOWFLAKE_DEFAULT=json.dumps(
                snowflake_local.airflow_connection(self.snowflake_port, database="BENCH_MANY")
            ),
        )
        return env

    def start(self, tables: int) -> None:
        (self.home / "dags").mkdir(parents=True)
        (self.home / "config").mkdir()
        (self.home / "dags" / "cdc_bench.py").write_text(DAG_FILE)
        (self.home / "config" / "bench.yaml").write_text(config_yaml(tables, "BENCH_MANY"))
        self.mssql = start_server(self.home / "bench.duckdb", capture_interval=0.5, log_path=self.home / "mssql.log")
        self.snowflake_port = procs.free_port()
        self.snowflake_pid = snowflake_local.start(self.home / "snowflake", port=self.snowflake_port)
        self.airflow_port = procs.free_port()

    def airflow_up(self) -> None:
        env = self.env
        for args in (
            ["db", "migrate"],
            ["pools", "set", "cdc_sqlserver", "4", "SQL Server sessions"],
            ["pools", "set", "cdc_snowflake", "8", "Snowflake sessions"],
        ):
            subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, check=True)
        log = (self.home / "airflow.log").open("w")
        self.airflow = subprocess.Popen(  # its own session: ended as one group (procs.stop_pid)
            [sys.executable, "-m", "airflow", "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.home,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not _healthy(self.airflow_port):
            if self.airflow.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"airflow standalone did not come up (see {self.home / 'airflow.log'})")
            time.sleep(2)
        while not self.dag_known():  # the DAG processor has parsed the file
            if time.monotonic() > deadline:
                raise RuntimeError("the DAG processor did not parse the benchmark DAG")
            time.sleep(2)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.home / 'airflow' / 'airflow.db'}?mode=ro", uri=True, timeout=30)

    def dag_known(self) -> bool:
        try:
            with self.db() as conn:
                return bool(conn.execute("SELECT 1 FROM dag WHERE dag_id = ?", (DAG_ID,)).fetchone())
        except sqlite3.Error:
            return False

    def trigger(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "trigger", DAG_ID, "-o", "json"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        line = next(line for line in reversed(out.splitlines()) if line.lstrip().startswith("[{"))
        return str(json.loads(line)[0]["dag_run_id"])

    def wait(self, run_id: str, timeout: float = 3600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db() as conn:
                row = conn.execute(
                    "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id)
                ).fetchone()
            if row and row[0] in ("success", "failed"):
                return str(row[0])
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {timeout}s")

    def figures(self, run_id: str) -> dict[str, Any]:
        with self.db() as conn:
            start, end = conn.execute(
                "SELECT start_date, end_date FROM dag_run WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id)
            ).fetchone()
            tis = conn.execute(
                "SELECT task_id, map_index, state, hostname, start_date, end_date FROM task_instance"
                " WHERE dag_id = ? AND run_id = ?",
                (DAG_ID, run_id),
            ).fetchall()
        wall = (_ts(end) - _ts(start)) if start and end else None
        ran = [t for t in tis if t[3]]  # a worker ran it (the scheduler skips a task without a host)
        seconds = [(_ts(t[5]) - _ts(t[4])) for t in ran if t[4] and t[5]]
        return {
            "wall_s": wall,
            "task_instances": len(tis),
            "processes": len(ran),
            "task_s": sum(seconds),
            "states": {s: sum(1 for t in tis if t[2] == s) for s in sorted({str(t[2]) for t in tis})},
        }

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the Airflow session (all), and of its task side (LocalExecutor
        workers and what they started, by process title)."""
        total = tasks = 0.0
        for pid in procs.session_members(self.airflow.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            seconds = sum(int(v) for v in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
            total += seconds
            if "worker" in title.lower() or "task" in title.lower() or "supervisor" in title.lower():
                tasks += seconds
        return total, tasks

    def stop(self) -> None:
        if self.airflow is not None:
            procs.stop_pid(self.airflow.pid)
        if self.snowflake_pid:
            snowflake_local.stop_pid(self.snowflake_pid)
        if self.mssql is not None:
            self.mssql.stop()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/api/v2/monitor/health", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def create_tables(stack: Stack, tables: int) -> None:
    conn = connect(server="127.0.0.1", port=stack.mssql.port, database="bench")
    cur = conn.cursor()
    cur.execute("EXEC sys.sp_cdc_enable_db")
    conn.commit()
    for i in range(tables):
        cur.execute(f"CREATE TABLE dbo.t{i:04d} (id int NOT NULL PRIMARY KEY, v nvarchar(40) NULL, n int NULL)")
        cur.execute(f"INSERT INTO dbo.t{i:04d} VALUES (1, N'a', 0), (2, N'b', 0), (3, N'c', 0)")
        cur.execute(
            f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't{i:04d}', @role_name = NULL"
        )
        conn.commit()
    cur.execute("EXEC sys.sp_cdc_scan")
    conn.commit()
    conn.close()


def load_once(stack: Stack) -> None:
    """The first load of every table by the pipeline itself (the tables' snapshots, no Airflow)."""
    from concurrent.futures import ThreadPoolExecutor

    from dev.localpipeline import pipelines
    from include.cdc_pipeline.config import load_source_config

    config = load_source_config(stack.home / "config" / "bench.yaml")
    tables = pipelines(config, stack.mssql.port, stack.snowflake_port, database="bench")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: p.run_once()["mode"], tables))
    assert all(mode == "snapshot" for mode in results), results


def change(stack: Stack, tables: int, percent: float, round_no: int) -> int:
    """Update one row in ``percent`` of the tables (at least one when percent > 0); captured."""
    count = 0 if percent == 0 else max(1, math.ceil(tables * percent / 100))
    if not count:
        return 0
    conn = connect(server="127.0.0.1", port=stack.mssql.port, database="bench")
    cur = conn.cursor()
    step = max(1, tables // count)
    for i in list(range(0, tables, step))[:count]:
        cur.execute(f"UPDATE dbo.t{i:04d} SET n = {round_no} WHERE id = 1")
    conn.commit()
    cur.execute("EXEC sys.sp_cdc_scan")
    conn.commit()
    conn.close()
    return count


def measure(stack: Stack, tables: int, percent: float, round_no: int) -> dict[str, Any]:
    changed = change(stack, tables, percent, round_no)
    queries, (cpu, task_cpu) = snowflake_local.query_count(stack.snowflake_port), stack.cpu()
    run_id = stack.trigger()
    state = stack.wait(run_id)
    time.sleep(2)  # the last task process is reaped and its CPU time lands in its parent
    cpu_after, task_cpu_after = stack.cpu()
    figures = stack.figures(run_id)
    figures.update(
        tables=tables, percent=percent, changed=changed, state=state,
        cpu_s=cpu_after - cpu, task_cpu_s=task_cpu_after - task_cpu,
        snowflake_queries=snowflake_local.query_count(stack.snowflake_port) - queries,
    )  # fmt: skip
    return figures


def run_case(tables: int, percents: list[float], repeat: int, project: Path) -> list[dict[str, Any]]:
    stack = Stack(Path(tempfile.mkdtemp(prefix=f"bench-many-{tables}-")), project)
    results = []
    try:
        stack.start(tables)
        started = time.monotonic()
        create_tables(stack, tables)
        load_once(stack)
        print(f"# {tables} tables created and loaded in {time.monotonic() - started:.0f} s", flush=True)
        stack.airflow_up()
        # Warm-up: the first run fills the hints from the watermarks; the next ones write each idle
        # table's position to the control table once (at most 25 a run), as a deployment does
        # after its first hour. Measured runs start from that steady state.
        for _ in range(2 + tables // 25):
            warm = measure(stack, tables, 0, 0)
            print(f"# warm-up run: {warm}", flush=True)
            if warm["snowflake_queries"] == 0:
                break
        round_no = 1
        for percent in percents:
            for _ in range(repeat):
                figures = measure(stack, tables, percent, round_no)
                round_no += 1
                print(json.dumps(figures), flush=True)
                results.append(figures)
    finally:
        stack.stop()
    return results


PARSE_PROBE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
tasks = sum(len(d.tasks) for d in bag.dags.values())
print(json.dumps({"seconds": time.perf_counter() - start, "errors": list(bag.import_errors), "tasks": tasks}))
"""


def parse_times(counts: list[int], project: Path, repeat: int = 3) -> None:
    print(f"\n{'tables':>7}{'parse median s':>16}{'min s':>8}{'max s':>8}{'tasks':>7}")
    for tables in counts:
        home = Path(tempfile.mkdtemp(prefix=f"bench-parse-{tables}-"))
        (home / "config").mkdir()
        (home / "config" / "bench.yaml").write_text(config_yaml(tables, "BENCH_MANY"))
        (home / "cdc_bench.py").write_text(DAG_FILE)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
        env.update(AIRFLOW_HOME=str(home / "airflow"), PYTHONPATH=str(project), CDC_CONFIG_DIR=str(home / "config"))
        env.update(AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__COSMOS__ENABLE_TELEMETRY="False", DO_NOT_TRACK="1")
        runs = []
        for _ in range(repeat):
            out = subprocess.run(
                [sys.executable, "-c", PARSE_PROBE, str(home / "cdc_bench.py")],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            runs.append(json.loads(out.strip().splitlines()[-1]))
        if runs[-1]["errors"]:
            raise SystemExit(f"{tables} tables: import errors {runs[-1]['errors']}")
        seconds = [r["seconds"] for r in runs]
        print(
            f"{tables:>7}{statistics.median(seconds):>16.3f}{min(seconds):>8.3f}{max(seconds):>8.3f}{runs[-1]['tasks']:>7}"
        )


def report(results: list[dict[str, Any]]) -> None:
    cases = {(r["tables"], r["percent"]) for r in results}
    print(f"\nmedians of {max(1, len(results) // max(1, len(cases)))} runs per row")
    head = ("tables", "changed", "wall s", "TIs", "processes", "task s", "Airflow CPU-s", "task CPU-s", "Snowflake q")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for key in sorted(cases):
        rows = [r for r in results if (r["tables"], r["percent"]) == key]
        keys = ("wall_s", "task_instances", "processes", "task_s", "cpu_s", "task_cpu_s", "snowflake_queries")
        med = {k: statistics.median(float(r[k]) for r in rows) for k in keys}
        print(
            f"| {key[0]} | {key[1]:g} % ({rows[0]['changed']}) | {med['wall_s']:.1f} | {med['task_instances']:.0f} "
            f"| {med['processes']:.0f} | {med['task_s']:.1f} | {med['cpu_s']:.1f} | {med['task_cpu_s']:.1f} "
            f"| {med['snowflake_queries']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="5,60,300")
    parser.add_argument("--changed", default="0,1,10", help="percent of tables changed before each run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--project", type=Path, default=ROOT, help="checkout whose dags/include run")
    parser.add_argument("--parse-tables", default="300,1000")
    parser.add_argument("--parse-only", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its servers
    project = args.project.resolve()
    print(f"# project {project}; load average {os.getloadavg()[0]:.2f}", flush=True)
    if not args.parse_only:
        results = []
        for tables in (int(t) for t in args.tables.split(",")):
            results += run_case(tables, [float(p) for p in args.changed.split(",")], args.repeat, project)
        report(results)
    parse_times([int(t) for t in args.parse_tables.split(",")], project)


if __name__ == "__main__":
    main()
