"""Benchmark of the dbt layer: DAG parse time, and a Cosmos run against a plain `dbt build`.

    python benchmarks/bench_dbt.py [--repeat 3] [--modes watcher,watcher-build,local] [--parse-repeat 5]

Starts its own local Snowflake (temporary directory, free port; stopped by pid at the end), seeds
the generated billing dataset (dev/workload/timeline.py, seeded by dev/dbt_local.py), then prints:

* parse: `DagBag(dags/billing_dbt.py)` in a fresh interpreter with Airflow already imported (the
  DAG processor's situation) - median of --parse-repeat runs;
* plain: `dbt build --target local` as a CLI subprocess (what a person would run), and
  `dbt source freshness` + `dbt build` (the same work as the DAG) - median of --repeat;
* cosmos: `dag.test()` of `billing_dbt` in each execution mode (fresh process each time, one
  Airflow SQLite metadata DB prepared once, one untimed warm-up run like plain's; each process
  times a cold and a warm run, see bench_cosmos) - medians of --repeat; the ratio to the same work
  by hand: the DAG as deployed (`watcher`: freshness step + build) against `dbt source freshness`
  + `dbt build`, the DAG without its freshness step (`watcher-build`) against `dbt build`; the
  longest task spans of each run.

Figures go to stdout and to benchmarks/results/bench_dbt.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dev import dbt_local, snowflake_local  # noqa: E402
from dev.localenv import LOCAL_SALT  # noqa: E402
from dev.workload import timeline  # noqa: E402

PARSE_SNIPPET = """
import time, logging, warnings
warnings.filterwarnings("ignore")
from airflow.dag_processing.dagbag import DagBag
import airflow.sdk
t = time.perf_counter()
bag = DagBag(dag_folder=%r)
elapsed = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print("PARSE", elapsed, len(bag.dags["billing_dbt"].tasks))
"""

DAG_TEST_SNIPPET = """
import time, warnings
warnings.filterwarnings("ignore")
from include.cdc_pipeline.orchestration.dbt_dag import build_dbt_dag
dag = build_dbt_dag("billing", source_freshness=%r)
for attempt in ("cold", "warm"):
    t = time.perf_counter()
    run = dag.test()
    elapsed = time.perf_counter() - t
    states, spans = {}, []
    for ti in run.get_task_instances():
        states[str(ti.state)] = states.get(str(ti.state), 0) + 1
        if ti.start_date and ti.end_date:
            spans.append(((ti.end_date - ti.start_date).total_seconds(), ti.task_id))
    spans.sort(reverse=True)
    rest = f"rest_sum={sum(d for d, _ in spans[3:]):.2f} n={len(spans) - 3}"
    print("SPANS", attempt, " ".join(f"{t}={d:.2f}" for d, t in spans[:3]), rest)
    print("DAGTEST", attempt, elapsed, run.state, len(dag.tasks), states)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _airflow_env(home: Path, port: int, mode: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "DO_NOT_TRACK": "1",
            "CDC_DBT_TARGET": "local",
            "CDC_DEADLINES": "off",  # dag.test() cannot finish a run with a deadline in 3.3 (alerts/callbacks.py)
            "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps(snowflake_local.airflow_connection(port)),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": 1}),
        }
    )
    if mode:
        env["CDC_DBT_EXECUTION_MODE"] = mode
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 900) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=ROOT, text=True, capture_output=True, timeout=timeout)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return wall, result.stdout


def bench_parse(home: Path, port: int, repeat: int) -> dict[str, Any]:
    env = _airflow_env(home, port)
    times = []
    tasks = 0
    for _ in range(repeat):
        _, out = _run([sys.executable, "-c", PARSE_SNIPPET % str(ROOT / "dags" / "billing_dbt.py")], env)
        line = next(line for line in out.splitlines() if line.startswith("PARSE"))
        times.append(float(line.split()[1]))
        tasks = int(line.split()[2])
    return {"median_s": _median(times), "runs_s": times, "tasks": tasks}


def bench_plain(port: int, repeat: int, scratch: Path) -> dict[str, Any]:
    # artifacts go to a scratch target path: runs must not share the project's own target/
    paths = {"target_path": scratch / "target", "log_path": scratch / "logs", "capture": True}
    build, fresh_build = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        dbt_local.run_dbt(["build", "--quiet"], port, **paths)
        build.append(time.perf_counter() - start)
        start = time.perf_counter()
        dbt_local.run_dbt(["source", "freshness", "--quiet"], port, **paths)
        dbt_local.run_dbt(["build", "--quiet"], port, **paths)
        fresh_build.append(time.perf_counter() - start)
    return {
        "build_median_s": _median(build), "build_runs_s": build,
        "freshness_and_build_median_s": _median(fresh_build), "freshness_and_build_runs_s": fresh_build,
    }  # fmt: skip


def bench_cosmos(home: Path, port: int, mode: str, repeat: int, freshness: bool = True) -> dict[str, Any]:
    """Each fresh process runs dag.test() twice: "cold" pays dag.test()'s one-off start of its
    in-process execution API (~3.5 s at the first task, absent on a deployment's workers, which talk
    to a running API server); "warm" is the steady state."""
    env = _airflow_env(home, port, mode)
    runs: dict[str, list[float]] = {"cold": [], "warm": []}
    detail = ""
    snippet = [sys.executable, "-c", DAG_TEST_SNIPPET % freshness]
    # warm-up, as for plain dbt: Cosmos' partial-parse cache (/tmp/cosmos) follows the profile's
    # values (here the emulator's port), so the first run after a change re-parses the project.
    _run(snippet, env)
    for _ in range(repeat):
        _, out = _run(snippet, env)
        for line in out.splitlines():
            if line.startswith("SPANS"):
                print("        ", line, flush=True)
            if line.startswith("DAGTEST"):
                _, attempt, elapsed, state, rest = line.split(maxsplit=4)
                if "success" not in state:
                    raise RuntimeError(f"dag.test() in {mode} mode ended {state}: {line}")
                runs[attempt].append(float(elapsed))
                detail = f"{state} {rest}"
    return {"warm_median_s": _median(runs["warm"]), "cold_median_s": _median(runs["cold"]), "runs_s": runs,
            "last": detail}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parse-repeat", type=int, default=5)
    parser.add_argument(
        "--modes",
        default="watcher,watcher-build,local",
        help="Cosmos variants to time: <mode> (as deployed, with the freshness step) or <mode>-build (without)",
    )
    parser.add_argument("--local-repeat", type=int, default=1, help="repeats of the (slow) local mode")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-dbt-"))
    port = _free_port()
    pid = snowflake_local.start(work / "snowflake", port)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        data = timeline.generate(salt=LOCAL_SALT)
        counts = dbt_local.seed(data, port)
        results["dataset"] = {"changes": counts}
        print(f"dataset: {sum(counts.values())} CDC changes ({counts}); local Snowflake pid {pid} port {port}")
        dbt_local.ensure_manifest()

        home = work / "airflow"
        home.mkdir()
        _run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], _airflow_env(home, port))

        results["parse"] = bench_parse(home, port, args.parse_repeat)
        print(f"parse   dags/billing_dbt.py: median {results['parse']['median_s']:.3f} s over {args.parse_repeat}"
              f" runs ({results['parse']['tasks']} tasks)")  # fmt: skip

        scratch = work / "dbt"
        # warm-up: tables exist, partial parse file written
        dbt_local.run_dbt(["build", "--quiet"], port, target_path=scratch / "target", log_path=scratch / "logs",
                          capture=True)  # fmt: skip
        results["plain"] = bench_plain(port, args.repeat, scratch)
        plain = results["plain"]["build_median_s"]
        print(f"plain   dbt build: median {plain:.1f} s; dbt source freshness + dbt build:"
              f" {results['plain']['freshness_and_build_median_s']:.1f} s (n={args.repeat})")  # fmt: skip

        for variant in [m.strip() for m in args.modes.split(",") if m.strip()]:
            # "<mode>" = the DAG as deployed (freshness step + build): compare with freshness + build;
            # "<mode>-build" = the same DAG without the freshness step: compare with `dbt build`.
            mode, _, build_only = variant.partition("-")
            res = bench_cosmos(home, port, mode, args.local_repeat if mode == "local" else args.repeat,
                               freshness=not build_only)  # fmt: skip
            same_work = "build_median_s" if build_only else "freshness_and_build_median_s"
            by_hand = results["plain"][same_work]
            res["like_for_like_plain_s"] = by_hand
            res["ratio_warm"] = res["warm_median_s"] / by_hand
            res["ratio_cold"] = res["cold_median_s"] / by_hand
            results[f"cosmos_{variant}"] = res
            print(f"cosmos  {variant:13s} dag.test(): warm {res['warm_median_s']:.1f} s = {res['ratio_warm']:.2f}x,"
                  f" cold {res['cold_median_s']:.1f} s = {res['ratio_cold']:.2f}x the same work by hand"
                  f" ({'build' if build_only else 'freshness + build'}: {by_hand:.1f} s)  [{res['last']}]")  # fmt: skip
    finally:
        snowflake_local.stop(work / "snowflake")
        out = ROOT / "benchmarks" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_dbt.json").write_text(json.dumps(results, indent=2, default=str))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
