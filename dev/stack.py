"""The embedded local stack: SQL Server CDC emulator + local Snowflake + Airflow, no Docker.

    python -m dev.stack up | demo | airflow | preflight | drill | stop | status

`make demo`, `make airflow`, `make preflight`, `make drill` and `make stop` call this. Every service
runs in its own process group with its pid recorded under .local/run, and `stop` ends exactly those
groups.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dev import procs
from dev.localenv import ROOT, LocalStack

PY = sys.executable
SERVICES = ("workload", "airflow", "mssql", "smtp")  # stop order (local Snowflake is stopped last)


def airflow_healthy(url: str) -> bool:
    """Airflow's API server at ``url`` answers its health endpoint (a cheap HTTP probe)."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


class Stack:
    def __init__(self, stack: LocalStack | None = None) -> None:
        self.cfg = stack or LocalStack()
        self.env = {**os.environ, **self.cfg.environment()}
        # `airflow standalone` starts its components as `airflow …` subprocesses: the venv's bin first.
        self.env["PATH"] = os.pathsep.join([str(Path(PY).parent), self.env.get("PATH", "")])
        self.run_dir = self.cfg.state_dir / "run"
        self.log_dir = self.cfg.state_dir / "logs"

    def say(self, message: str) -> None:
        print(f"[stack] {message}", flush=True)

    # -- services -----------------------------------------------------------------------------
    def start_snowflake(self) -> None:
        from dev import snowflake_local

        pid = snowflake_local.start(self.cfg.snowflake_dir, port=self.cfg.snowflake_port)
        self.say(f"local Snowflake ready on 127.0.0.1:{self.cfg.snowflake_port} (pid {pid}, {self.cfg.snowflake_dir})")

    def start_mssql(self) -> None:
        self.cfg.mssql_db_path.parent.mkdir(parents=True, exist_ok=True)
        pid = procs.start(
            self.run_dir,
            "mssql",
            [
                PY,
                "-m",
                "dev.mssql_emulator",
                "serve",
                "--db",
                str(self.cfg.mssql_db_path),
                "--port",
                str(self.cfg.mssql_port),
                "--capture-interval",
                "1.0",
            ],
            self.env,
            self.log_dir / "mssql.log",
            cwd=ROOT,
        )
        _wait_port(self.cfg.mssql_port, "SQL Server CDC emulator", self.log_dir / "mssql.log", pid)
        where = f"127.0.0.1:{self.cfg.mssql_port} (pid {pid}, {self.cfg.mssql_db_path})"
        self.say(f"SQL Server CDC emulator ready on {where}")

    def start_smtp(self) -> None:
        """The local SMTP sink: alert e-mails land in .local/mail (`make mail` prints them)."""
        pid = procs.start(
            self.run_dir,
            "smtp",
            [PY, "-m", "dev.smtp_sink", "serve", "--port", str(self.cfg.smtp_port), "--dir", str(self.cfg.mail_dir)],
            self.env,
            self.log_dir / "smtp.log",
            cwd=ROOT,
        )
        _wait_port(self.cfg.smtp_port, "SMTP sink", self.log_dir / "smtp.log", pid)
        self.say(f"SMTP sink on 127.0.0.1:{self.cfg.smtp_port} (pid {pid}): alert mails go to {self.cfg.mail_dir}")

    def workload_command(self, seed: int, *mode: str) -> list[str]:
        """``python -m dev.workload`` against the emulator server (options, then the mode)."""
        return [
            PY,
            "-m",
            "dev.workload",
            "--server",
            "127.0.0.1",
            "--port",
            str(self.cfg.mssql_port),
            "--database",
            self.cfg.source_database,
            "--seed",
            str(seed),
            *mode,
        ]

    def airflow_bootstrap(self) -> None:
        """Metadata DB and pools (idempotent)."""
        self.cfg.airflow_home.mkdir(parents=True, exist_ok=True)
        self.run([PY, "-m", "airflow", "db", "migrate"], capture=True)
        pools = (("cdc_sqlserver", 4, "SQL Server sessions"), ("cdc_snowflake", 8, "Snowflake sessions"))
        for pool, slots, what in pools:
            self.run([PY, "-m", "airflow", "pools", "set", pool, str(slots), f"Concurrent CDC {what}"], capture=True)

    def up(self) -> None:
        self.start_snowflake()
        self.start_mssql()
        self.start_smtp()
        marker = self.cfg.state_dir / "mssql" / "initialized"
        if not marker.exists():
            self.say("creating the demo billing database and enabling CDC (workload generator, seed 42)")
            print(self.run(self.workload_command(42, "init"), capture=True), end="")
            marker.write_text("ok\n")
        self.ensure_reader_login()
        self.airflow_bootstrap()

    def ensure_reader_login(self) -> None:
        """The pipeline reads as a least-privileged login, as it should in production (idempotent):
        not sysadmin; SELECT on the cdc schema and, for snapshots, on the source tables."""
        from dev.mssql_emulator import connect
        from dev.workload.tsql import grant_reader

        conn = connect(server="127.0.0.1", port=self.cfg.mssql_port, database=self.cfg.source_database, user="sa")
        try:
            grant_reader(conn, *self.cfg.reader_login)
        finally:
            conn.close()

    def check_dags(self) -> None:
        """Parse dags/ as the DAG processor would; stop on any import error."""
        probe = (
            "import json; from airflow.dag_processing.dagbag import DagBag; b = DagBag();"
            "print(json.dumps({'dags': sorted(b.dags), 'errors': b.import_errors}))"
        )
        found = json.loads(self.run([PY, "-c", probe], capture=True).strip().splitlines()[-1])
        if found["errors"]:
            raise SystemExit(f"DAG import errors: {json.dumps(found['errors'], indent=2)}")
        self.say(f"DAGs parse with no import errors: {', '.join(found['dags'])}")

    def is_up(self) -> bool:
        """Local Snowflake, the emulator and the SMTP sink run, and the demo database exists."""
        from dev import snowflake_local

        ready, _ = snowflake_local.status(self.cfg.snowflake_dir, self.cfg.snowflake_port)
        services = all(procs.running(self.run_dir, name) for name in ("mssql", "smtp"))
        return ready and services and (self.cfg.state_dir / "mssql" / "initialized").exists()

    def stop(self) -> None:
        from dev import snowflake_local

        for name in SERVICES:
            if procs.stop(self.run_dir, name):
                self.say(f"stopped {name}")
        if snowflake_local.stop(self.cfg.snowflake_dir):
            self.say("stopped local Snowflake")
        self.say("nothing of ours is running")

    def status(self) -> int:
        from dev import snowflake_local

        ready, info = snowflake_local.status(self.cfg.snowflake_dir, self.cfg.snowflake_port)
        print(f"snowflake  {'ready' if ready else 'down'}  {info.pid if info else '-'}")
        for name in reversed(SERVICES):
            pid = procs.running(self.run_dir, name)
            print(f"{name:<10} {'up' if pid else 'down'}  {pid or '-'}")
        return 0

    # -- helpers ------------------------------------------------------------------------------
    def run(self, command: Sequence[str], capture: bool = False) -> str:
        result = subprocess.run(list(command), env=self.env, cwd=ROOT, capture_output=capture, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stdout or "")[-4000:] + (result.stderr or "")[-4000:] if capture else ""
            raise SystemExit(f"command failed ({result.returncode}): {' '.join(command)}\n{detail}")
        return result.stdout if capture else ""

    def dag_test(
        self, dag_id: str, conf: dict[str, Any] | None = None, expect_failure: bool = False, **env_extra: str
    ) -> float:
        """``airflow dags test``; a failed run stops the caller unless ``expect_failure``."""
        started = time.monotonic()
        # With the DAG's Deadline Alerts, as the scheduler parses it (one DAG version: dev/dag_test.py).
        env = {**self.env, **env_extra}
        command = [PY, "-m", "dev.dag_test", dag_id]
        if conf:
            command += ["--conf", json.dumps(conf)]
        log_file = self.log_dir / f"dag-{dag_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as log:
            result = subprocess.run(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
        if (result.returncode != 0) != expect_failure:
            raise SystemExit(f"DAG {dag_id} {'succeeded' if expect_failure else 'failed'}; see {log_file}")
        return time.monotonic() - started

    # -- the demo -----------------------------------------------------------------------------
    def demo(self, traffic_seconds: int = 40, rate: int = 20) -> None:
        """Snapshot, then stream while live traffic flows, then catch up; reconcile every table;
        build the marts with the dbt DAG and check their totals against the source."""
        t0 = time.monotonic()
        self.up()
        from dev import demo_report

        def run(title: str) -> None:
            started = demo_report.snowflake_now(self.env)
            self.say(f"{title}: airflow dags test billing_cdc")
            seconds = self.dag_test("billing_cdc")
            demo_report.print_batches(self.env, started, f"{title} ({seconds:.1f}s)")

        self.check_dags()
        run("run 1 (tables without a watermark are snapshotted)")
        self.say(f"live OLTP traffic: ~{rate} transactions/s for {traffic_seconds}s (workload generator)")
        live = self.workload_command(int(time.time()), "live", "--rate", str(rate), "--duration", str(traffic_seconds))
        procs.start(self.run_dir, "workload", live, self.env, self.log_dir / "workload.log", cwd=ROOT)
        time.sleep(5)
        run("run 2 (while traffic flows)")
        while procs.running(self.run_dir, "workload"):
            time.sleep(0.5)
        time.sleep(2.5)  # the emulator's capture job scans every second
        run("run 3 (after the traffic: catch up)")
        ok = demo_report.compare_source_and_raw(self.env)
        self.say("marts: airflow dags test billing_dbt (Cosmos: source freshness, dbt build, every test)")
        seconds = self.dag_test("billing_dbt")
        self.say(f"billing_dbt succeeded in {seconds:.1f}s")
        marts_ok = demo_report.print_marts(self.env)
        self.say(f"demo finished in {time.monotonic() - t0:.0f}s; services keep running (`make stop` ends them)")
        if not ok:
            raise SystemExit("raw tables differ from the source: see above")
        if not marts_ok:
            raise SystemExit("marts differ from the source: see above")

    def drill(self, outage_runs: int = 3) -> None:
        """The outage drill (README "Alerts and on-call"): the source goes down for ``outage_runs``
        runs of billing_cdc and comes back; a cdc_health round follows. ``make mail`` then shows one
        incident mail and one resolved mail. Mails from before the drill move to ``mail/before-drill-*``."""
        self.up()
        self.check_dags()
        old = sorted(self.cfg.mail_dir.glob("*.eml"))
        if old:
            keep = self.cfg.mail_dir / f"before-drill-{time.strftime('%Y%m%dT%H%M%S')}"
            keep.mkdir(parents=True)
            for mail in old:
                mail.rename(keep / mail.name)
            self.say(f"{len(old)} earlier mail(s) moved to {keep}")
        # Retries as in production (3, exponential backoff) but each wait capped to 2 s by Airflow's
        # own [core] max_task_retry_delay: the drill takes minutes, not ~10.
        short = {"AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "2"}
        self.say("drill 1/4: a run with the source up (loads what is new)")
        self.dag_test("billing_cdc", **short)
        self.say("drill 2/4: the SQL Server emulator stops (source down)")
        procs.stop(self.run_dir, "mssql")
        for attempt in range(1, outage_runs + 1):
            self.say(f"drill 3/4: run {attempt} of {outage_runs} with the source down (plan fails after its retries)")
            seconds = self.dag_test("billing_cdc", expect_failure=True, **short)
            mails = len(list(self.cfg.mail_dir.glob("*.eml")))
            self.say(f"  failed as expected in {seconds:.0f}s; mails so far: {mails}")
        self.say("drill 4/4: the emulator starts again; a run, then a cdc_health round")
        self.start_mssql()
        self.dag_test("billing_cdc", **short)
        self.dag_test("cdc_health", **short)
        mails = len(list(self.cfg.mail_dir.glob("*.eml")))
        self.say(f"drill done: {mails} mail(s) — `make mail` prints them (one incident, one resolved)")

    def preflight(self) -> int:
        """The preflight checks (include/cdc_pipeline/preflight.py) with the local stack's
        connections, Variables and pools; the report on stdout, exit status 1 on any failure.

        Starts the stack only when it is not running: on a running stack it changes nothing, so a
        removed pool or a table without CDC is reported, not quietly repaired by the start-up."""
        if not self.is_up():
            self.up()
        self.say("preflight: python -m include.cdc_pipeline.orchestration.preflight_dag")
        result = subprocess.run(
            [PY, "-m", "include.cdc_pipeline.orchestration.preflight_dag"], env=self.env, cwd=ROOT, check=False
        )
        return result.returncode

    def airflow(self) -> None:
        self.up()
        self.check_dags()  # an import error (say, no dbt manifest) stops here, not as a DAG missing in the UI
        pid = procs.start(
            self.run_dir,
            "airflow",
            [PY, "-m", "airflow", "standalone"],
            self.env,
            self.log_dir / "airflow.log",
            cwd=ROOT,
        )
        url = f"http://localhost:{self.cfg.airflow_port}"
        deadline = time.monotonic() + 600  # ~20 s on a quiet machine; minutes on a loaded one
        while time.monotonic() < deadline:
            if airflow_healthy(url):
                break
            time.sleep(2)
        else:
            raise SystemExit(f"Airflow did not answer at {url}; see {self.log_dir / 'airflow.log'}")
        password_file = self.cfg.airflow_home / "simple_auth_manager_passwords.json.generated"
        login = password_file.read_text().strip() if password_file.exists() else "(see the log)"
        self.say(f"Airflow UI: {url}  (pid {pid}; users/passwords: {login}); `make stop` ends it")


def _wait_port(port: int, what: str, log_file: Path, pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not procs.alive(pid):
            break
        time.sleep(0.3)
    tail = log_file.read_text()[-3000:] if log_file.exists() else ""
    raise SystemExit(f"{what} did not start on port {port}:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "demo", "airflow", "preflight", "drill", "stop", "status"])
    args = parser.parse_args(argv)
    stack = Stack()
    if args.command == "status":
        return stack.status()
    if args.command == "preflight":
        return stack.preflight()
    getattr(stack, args.command)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
