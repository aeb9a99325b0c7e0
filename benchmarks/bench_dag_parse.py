"""DAG parse time: how long Airflow's DAG processor spends on each file in dags/.

Each measurement is a fresh process (as the DAG processor parses), timing `DagBag` on one file
after Airflow itself is imported; median of 5. No connection is reachable: parsing must not need one.

    python benchmarks/bench_dag_parse.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "dags": sorted(bag.dags), "errors": list(bag.import_errors)}))
"""


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    home = tempfile.mkdtemp(prefix="bench-parse-")
    env.update(
        AIRFLOW_HOME=home,
        PYTHONPATH=str(ROOT),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
        DO_NOT_TRACK="1",
    )
    print(f"{'file':<28}{'median s':>10}{'min s':>8}{'max s':>8}  dags")
    for path in sorted((ROOT / "dags").glob("*.py")):
        runs = []
        for _ in range(5):
            out = subprocess.run(
                [sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True, check=True
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        seconds = [r["seconds"] for r in runs]
        if runs[-1]["errors"]:
            raise SystemExit(f"{path.name}: import errors {runs[-1]['errors']}")
        print(
            f"{path.name:<28}{statistics.median(seconds):>10.3f}{min(seconds):>8.3f}{max(seconds):>8.3f}"
            f"  {', '.join(runs[-1]['dags'])}"
        )


if __name__ == "__main__":
    main()
