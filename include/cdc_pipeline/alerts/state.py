"""Incident state in Airflow's metadata DB (JSON Variables, as the project's other state), and the
per-source lease that makes one pass at a time decide what to send.

Keys (``<source>``: the source's name; ``<table>``: a table's name, or a part such as ``-health``):

- ``cdc_incidents__<source>``: the **ledger** — open incidents and the last resolved ones (what was
  mailed, when, which tables). Written only by a pass holding the lease. The status page reads it.
- ``cdc_failure__<source>__<table>``: the **report** of the table's latest final failure (the
  failure callback writes it, one key per table, so simultaneous failures of several tables never
  write the same key). It stands until the table completed a run after it: its run record
  (``cdc_runs__<source>__<table>``, written by ``apply``) or the source's latest plan
  (``cdc_status__<source>``, written by ``plan``, which names the tables it found idle).
- ``cdc_deadline__<source>__<dag_id>``: the latest missed deadline of a DAG (its run id).
- ``cdc_health__<source>``: the latest cdc_health round (written by the health DAG) — read as is.
- ``cdc_incident_lease__<source>``: who holds the source's lease, until when.

**Concurrency.** Several mapped tasks of one run can fail at the same moment and each runs a pass;
so can the end-of-run callback, a cdc_health round and a Deadline Alert. Variables have no
compare-and-set, so two passes that read the ledger at once would both see "no incident" and both
mail. Reports are one key per writer (no lost update); the ledger has one writer at a time, by
:class:`Lease` — **Fischer's timed mutual exclusion** (M. Fischer, as given in L. Lamport, "A Fast
Mutual Exclusion Algorithm", ACM TOCS 5(1), 1987): read the lease; when free or expired, write your
own id, wait ``settle`` seconds, read it back; only the one whose id is still there goes on. It is
correct when every writer's write lands within ``settle`` of its read of "free" (a Variable write is
one API call: milliseconds; ``settle`` is 1 s), so two simultaneous first failures of one incident
send exactly one mail. Should a write ever take longer (an API server stalled past ``settle``), the
cost is a duplicate mail, never a lost one. A holder that dies leaves a lease that expires after
``ttl``; a pass that cannot get the lease within ``wait`` gives up and logs it — its report is
stored, and the next pass (the end of the run, the next cdc_health round) acts on it.

**Where this code runs**: through the Task SDK (``airflow.sdk.Variable``) in a task, a DAG
processor callback or the triggerer; straight from the metadata DB where no supervisor is
(``dag.test()``'s DAG callbacks, the command line, tests).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

LEDGER_PREFIX, FAILURE_PREFIX, DEADLINE_PREFIX = "cdc_incidents__", "cdc_failure__", "cdc_deadline__"
LEASE_PREFIX = "cdc_incident_lease__"
ALL_SOURCES = "all_sources"  # the desk of the DAGs serving every source (cdc_health, cdc_preflight)
RUNS_PREFIX, HEALTH_PREFIX, STATUS_PREFIX = "cdc_runs__", "cdc_health__", "cdc_status__"  # as status.figures names them


def ledger_key(source: str) -> str:
    return f"{LEDGER_PREFIX}{source}"


def failure_key(source: str, table: str) -> str:
    return f"{FAILURE_PREFIX}{source}__{table}"


def deadline_key(source: str, dag_id: str) -> str:
    return f"{DEADLINE_PREFIX}{source}__{dag_id}"


def runs_key(source: str, table: str) -> str:
    return f"{RUNS_PREFIX}{source}__{table}"


def health_key(source: str) -> str:
    return f"{HEALTH_PREFIX}{source}"


def source_plan_key(source: str) -> str:
    """The source's latest plan (written by the CDC DAG's ``plan``): the tables it found idle
    completed that run, at its ``checked_at``."""
    return f"{STATUS_PREFIX}{source}"


def _in_task_sdk() -> bool:
    """Whether a Task SDK supervisor serves this process (a task, a DAG processor callback, the triggerer)."""
    from airflow.sdk.execution_time import task_runner

    return hasattr(task_runner, "SUPERVISOR_COMMS")


class Variables:
    """JSON Airflow Variables, from wherever this code runs (module docstring)."""

    def get(self, key: str) -> Any:
        if _in_task_sdk():
            from airflow.sdk import Variable

            return Variable.get(key, default=None, deserialize_json=True)
        from airflow.models.variable import Variable as Stored

        return Stored.get(key, default_var=None, deserialize_json=True)

    def set(self, key: str, value: Any, description: str) -> None:
        if _in_task_sdk():
            from airflow.sdk import Variable

            Variable.set(key, value, description=description, serialize_json=True)
            return
        from airflow.models.variable import Variable as Stored

        Stored.set(key, value, description=description, serialize_json=True)

    def keys(self, prefix: str) -> list[str]:
        if _in_task_sdk():
            from airflow.sdk import Variable

            return list(Variable.keys(prefix=prefix))
        from airflow.models.variable import Variable as Stored
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return list(session.scalars(select(Stored.key).where(Stored.key.startswith(prefix, autoescape=True))))

    def delete(self, key: str) -> None:
        if _in_task_sdk():
            from airflow.sdk import Variable

            Variable.delete(key)
            return
        from airflow.models.variable import Variable as Stored

        Stored.delete(key)


class MemoryVariables(Variables):
    """The same store in a dict (the decision's unit tests; a dry run)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> Any:
        return json.loads(self.values[key]) if key in self.values else None

    def set(self, key: str, value: Any, description: str) -> None:
        self.values[key] = json.dumps(value)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.values if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class Lease:
    """Fischer's timed mutual exclusion over one Variable (module docstring)."""

    def __init__(
        self,
        store: Variables,
        source: str,
        *,
        settle: float = 1.0,
        ttl: float = 300.0,
        wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.key = store, f"{LEASE_PREFIX}{source}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.settle, self.ttl, self.wait, self.sleep, self.clock = settle, ttl, wait, sleep, clock

    def _free(self) -> bool:
        current = self.store.get(self.key) or {}
        return not current.get("holder") or float(current.get("until") or 0) < self.clock()

    def acquire(self) -> bool:
        """Hold the lease (True), or give up after ``wait`` seconds (False)."""
        give_up = time.monotonic() + self.wait
        while True:
            if self._free():
                self.store.set(self.key, {"holder": self.holder, "until": self.clock() + self.ttl}, "incident lease")
                self.sleep(self.settle)  # every writer that saw it free has written by now
                if (self.store.get(self.key) or {}).get("holder") == self.holder:
                    return True
            if time.monotonic() > give_up:
                log.warning("incident lease %s still held after %.0f s: this pass is skipped", self.key, self.wait)
                return False
            self.sleep(0.5 + random.random() / 2)  # noqa: S311  (jitter, not a secret)

    def release(self) -> None:
        if (self.store.get(self.key) or {}).get("holder") == self.holder:
            self.store.set(self.key, {"holder": None, "until": 0}, "incident lease")
