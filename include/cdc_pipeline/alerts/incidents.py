"""Incidents: one page when something breaks, one when it is fixed (runbook: docs/runbook.md,
"Incidents"). The decision only — plain data in, plain data out, no Airflow, no I/O; the reports it
reads, the ledger it keeps and the mails it sends are ``alerts.desk``'s.

**Findings** (:class:`Finding`) say what is wrong now, one per table (or per *part*: a pseudo-table
whose name starts with ``-``: ``-<dag_id>`` for a DAG that is no table's — the dbt DAG, the
cdc_health check, a run past its deadline — and ``-capture`` for the capture job). Each carries
the **fingerprint** of its cause (``alerts.classify.fingerprint``: source, error class, normalised
message — never the table), so the same cause on five tables, in ``plan`` or ``extract_load``, in
this run or the next, is one group.

**Incidents** group findings by fingerprint, across tasks and runs. :func:`decide` compares the
findings with the open incidents of the ledger and returns the new ledger and the notices to send:

- ``opened``: a fingerprint no open incident has → a new incident, one mail naming every table it
  affects so far, the error, the first log link and the runbook section.
- nothing while an open incident repeats (the next run fails the same way);
- ``grown``: tables joined since the last mail — at most one update per pass, so the tables that
  fail for the same cause in the opening run after the first page (its siblings failing seconds
  later) are named together in one update when the run ends: the person paged learns the whole
  set the same night, not from the resolved mail;
- ``cause``: every table still failing now fails for one other cause no open incident has (the
  source came back with the login rejected) → the incident carries on under the new cause;
- ``reminder``: still open ``realert_after`` (source YAML, default 4 h) after the last mail;
- ``resolved``: no table of the incident fails for its cause any more — each completed a run again
  (a successful apply or an idle poll, from its run record) or fails for another cause, which is
  then its own incident — one mail with the duration and what was affected.

Two kinds of pass: a **first** pass (a task failed for good; it opens incidents only, so a page goes
out at once) and a **round** pass (the end of a DAG run, a cdc_health round, a Deadline Alert),
which does everything. A new fingerprint on tables that already fail in an open incident waits for
the round pass at the end of the run: whether it is the same incident with a new cause or a second
one is decided when the run's picture is complete.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

OPEN, RESOLVED = "open", "resolved"
FAILING, RECOVERED, MOVED = "failing", "recovered", "moved"
KEEP_RESOLVED = 20  # resolved incidents kept in the ledger (the status page's recent history)
PARTS = {"-capture": "the capture job"}  # pseudo-tables; any other "-<dag_id>" is that DAG


def is_part(name: str) -> bool:
    """A pseudo-table (a part of the pipeline that is no table)."""
    return name.startswith("-")


def label(name: str) -> str:
    """How a table or part is named in a mail or on the status page."""
    return PARTS.get(name, f"DAG {name[1:]}" if is_part(name) else name)


@dataclass(frozen=True)
class Finding:
    """One thing wrong now: a table (or part) failing for a cause."""

    table: str
    fingerprint: str
    origin: str  # task | health | deadline | run
    title: str  # one line: the error as a person reads it, or the check that alerts
    error: str  # the full readable error text (lines, then the exception class)
    kind: str  # alerts.classify kind, or health:<check>, deadline
    runbook: str  # the docs/runbook.md section heading
    at: str  # ISO time of the report
    log_url: str | None = None
    where: str | None = None  # "<dag>.<task> try n of m, run <run_id>"
    run: str | None = None  # "<dag_id>/<run_id>" of a task failure
    retryable: bool = True
    detail: str | None = None  # what is specific to this table (a health check's figures)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Notice:
    """A mail to send: what happened to which incident."""

    kind: str  # opened | grown | cause | reminder | resolved
    incident: dict[str, Any]
    new_tables: list[str] = field(default_factory=list)
    previous: str | None = None  # the cause before a cause change


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _age(since: str, now: datetime) -> timedelta:
    return now - datetime.fromisoformat(since)


def _groups(findings: Iterable[Finding]) -> dict[str, dict[str, Finding]]:
    """Findings by fingerprint, then by table (the earliest report of a table wins), earliest first."""
    groups: dict[str, dict[str, Finding]] = {}
    for finding in sorted(findings, key=lambda f: f.at):
        groups.setdefault(finding.fingerprint, {}).setdefault(finding.table, finding)
    return groups


def _first(group: Mapping[str, Finding]) -> Finding:
    return min(group.values(), key=lambda f: f.at)


def _cause(finding: Finding) -> dict[str, Any]:
    """The fields of an incident that describe its cause."""
    return {
        "fingerprint": finding.fingerprint,
        "origin": finding.origin,
        "title": finding.title,
        "error": finding.error,
        "kind": finding.kind,
        "runbook": finding.runbook,
        "retryable": finding.retryable,
    }


def new_ledger(name: str) -> dict[str, Any]:
    return {"source": name, "next": 1, "incidents": []}


def decide(
    ledger: Mapping[str, Any] | None,
    findings: Sequence[Finding],
    now: datetime,
    *,
    name: str,
    round_pass: bool,
    realert_after: timedelta,
) -> tuple[dict[str, Any], list[Notice]]:
    """The ledger after this pass and the notices to send (module docstring)."""
    book = copy.deepcopy(dict(ledger)) if ledger else new_ledger(name)
    incidents: list[dict[str, Any]] = book["incidents"]
    open_ = [i for i in incidents if i["status"] == OPEN]
    groups = _groups(findings)
    held: dict[str, set[str]] = {}
    for fp, group in groups.items():
        for table in group:
            held.setdefault(table, set()).add(fp)
    failing_before = {t for i in open_ for t, s in i["tables"].items() if s["state"] == FAILING}
    notices: list[Notice] = []
    if round_pass:
        notices += _cause_changes(open_, groups, held, now)
        for incident in open_:
            _follow(incident, groups.get(incident["fingerprint"], {}), held, now)
        notices += _resolve_grow_remind(open_, groups, now, realert_after)
    by_fp = {i["fingerprint"]: i for i in incidents if i["status"] == OPEN}
    for fp, group in groups.items():
        if fp in by_fp:
            continue
        if not round_pass and all(t in failing_before for t in group):
            continue  # these tables already page in an open incident: the run's end decides
        incident = _open(book, group, now)
        by_fp[fp] = incident
        notices.append(Notice("opened", incident))
    for incident in incidents:  # a table that moved names the incident it moved to
        for state in incident["tables"].values():
            target = by_fp.get(state.get("moved_to") or "")
            if state["state"] == MOVED and target is not None:
                state["moved_to"], state["moved_to_id"] = None, target["id"]
    resolved = [i for i in incidents if i["status"] == RESOLVED]
    book["incidents"] = [i for i in incidents if i["status"] == OPEN] + resolved[-KEEP_RESOLVED:]
    for notice in notices:
        notice.incident = copy.deepcopy(notice.incident)
    return book, notices


def _open(book: dict[str, Any], group: Mapping[str, Finding], now: datetime) -> dict[str, Any]:
    first = _first(group)
    incident = {
        "id": f"{book['source']}-{book['next']}",
        "status": OPEN,
        **_cause(first),
        "opened_at": _iso(now),
        "resolved_at": None,
        "notified_at": _iso(now),
        "first_at": first.at,
        "log_url": first.log_url,
        "where": first.where,
        "opened_run": first.run,
        "tables": {
            table: {"state": FAILING, "since": f.at, "until": None, "detail": f.detail}
            for table, f in sorted(group.items())
        },
        "announced": sorted(group),
        "history": [],
    }
    book["next"] += 1
    book["incidents"].append(incident)
    return incident


def _cause_changes(
    open_: list[dict[str, Any]], groups: dict[str, dict[str, Finding]], held: dict[str, set[str]], now: datetime
) -> list[Notice]:
    """Incidents whose every failing table now fails for one other cause no open incident has."""
    notices = []
    open_fps = {i["fingerprint"] for i in open_}
    for incident in open_:
        if incident["fingerprint"] in groups:
            continue
        failing = [t for t, s in incident["tables"].items() if s["state"] == FAILING]
        if not failing:
            continue
        common = set.intersection(*(held.get(t, set()) for t in failing)) - open_fps
        if len(common) != 1:
            continue
        fp = common.pop()
        previous = incident["title"]
        incident["history"].append({k: incident[k] for k in ("fingerprint", "title", "kind")} | {"until": _iso(now)})
        incident.update(_cause(_first(groups[fp])), notified_at=_iso(now), cause_changed=True)
        open_fps.add(fp)
        notices.append(Notice("cause", incident, previous=previous))
    return notices


def _follow(incident: dict[str, Any], group: Mapping[str, Finding], held: dict[str, set[str]], now: datetime) -> None:
    """Bring an open incident's tables up to date: joined, failing again, recovered, or moved."""
    tables = incident["tables"]
    for table, finding in group.items():
        state = tables.get(table)
        if state is None:
            tables[table] = {"state": FAILING, "since": finding.at, "until": None, "detail": finding.detail}
        else:
            state.update(state=FAILING, until=None, moved_to=None, moved_to_id=None, detail=finding.detail)
    for table, state in tables.items():
        if state["state"] == FAILING and table not in group:
            others = sorted(held.get(table, set()) - {incident["fingerprint"]})
            if others:
                state.update(state=MOVED, until=_iso(now), moved_to=others[0])
            else:
                state.update(state=RECOVERED, until=_iso(now))


def _resolve_grow_remind(
    open_: list[dict[str, Any]], groups: dict[str, dict[str, Finding]], now: datetime, realert_after: timedelta
) -> list[Notice]:
    notices = []
    for incident in open_:
        failing = [t for t, s in incident["tables"].items() if s["state"] == FAILING]
        if not failing:
            incident.update(status=RESOLVED, resolved_at=_iso(now))
            notices.append(Notice("resolved", incident))
            continue
        new = [t for t in failing if t not in incident["announced"] and not is_part(t)]
        incident["announced"] = sorted({*incident["announced"], *failing})
        if incident.pop("cause_changed", False):
            continue  # the cause-change mail of this pass names every table
        if new:
            incident["notified_at"] = _iso(now)
            notices.append(Notice("grown", incident, new_tables=sorted(new)))
        elif _age(incident["notified_at"], now) >= realert_after:
            incident["notified_at"] = _iso(now)
            notices.append(Notice("reminder", incident))
    return notices


def open_incidents(ledger: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ledger's open incidents (the status page, the fast path of a failure)."""
    return [i for i in (ledger or {}).get("incidents", []) if i["status"] == OPEN]


def duration(incident: Mapping[str, Any]) -> timedelta | None:
    end = incident.get("resolved_at")
    return datetime.fromisoformat(end) - datetime.fromisoformat(incident["opened_at"]) if end else None
