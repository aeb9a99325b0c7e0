"""Run one CDC DAG once (``dag.test()``) in a process of its own; print its task instances as JSON.

``python -m tests.dag_run <config dir> <config name>``: for tests that need the DAG in a
fresh interpreter, e.g. with a native driver made unloadable for that process only (a driver
library loads once per process, so an in-process test could not undo it). The environment passes
connections, the Airflow home and ``PYTHONPATH``; the last stdout line is
``DAGRUN {"state": …, "tis": [{"task_id", "map_index", "state", "try_number"}, …]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    directory, name = Path(sys.argv[1]), sys.argv[2]
    from include.cdc_pipeline.orchestration.cdc_dag import build_cdc_dag

    run = build_cdc_dag(name, directory=directory).test()
    tis = [
        {"task_id": ti.task_id, "map_index": ti.map_index, "state": ti.state, "try_number": ti.try_number}
        for ti in run.get_task_instances()
    ]
    print("DAGRUN " + json.dumps({"state": run.state, "tis": tis}), flush=True)


if __name__ == "__main__":
    main()
