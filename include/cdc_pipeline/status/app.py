"""The CDC status page's web app (FastAPI), mounted into Airflow's API server by plugins/cdc_status.py.

Routes (under the plugin's prefix, ``/cdc-status``):

- ``/`` the page (``plugins/cdc_status/index.html``; its script and style under ``/static``);
- ``/api/status?range=day|week`` the page's data as JSON;
- ``/runbook`` docs/runbook.md as HTML (the page links to its sections).

Every route but the static assets needs a signed-in Airflow user: the user is resolved with the
API server's own ``get_user`` (JWT in the ``Authorization`` header or Airflow's ``_token`` session
cookie) and must be allowed to read DAGs (``requires_access_dag``); sources whose DAG the user
may not read are left out. Airflow does not protect plugin endpoints by itself.

The data comes from Airflow's metadata database only (include/cdc_pipeline/status/figures.py says which
records); serving a page opens no Snowflake or SQL Server connection.
"""

from __future__ import annotations

import itertools
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from include.cdc_pipeline.config import SourceConfig, config_dir, load_source_config, source_files
from include.cdc_pipeline.errors import ConfigError
from include.cdc_pipeline.status import figures as model

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[3]
RUNBOOK_PATH = ROOT / "docs" / "runbook.md"
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


async def current_user(request: Request, bearer: BearerDep) -> Any:
    """The signed-in user, exactly as Airflow's own API routes resolve it (401/403 otherwise)."""
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    user = await get_user(request, None, bearer)
    requires_access_dag("GET")(request, user)  # may read DAGs at all (the page is about DAGs)
    return user


UserDep = Annotated[Any, Depends(current_user)]


def may_read_dag(request: Request, user: Any, dag_id: str) -> bool:
    """Airflow's own per-DAG read check (also answers for a DAG not parsed yet)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    try:
        requires_access_dag("GET", param_dag_id=dag_id)(request, user)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_403_FORBIDDEN:
            return False
        raise
    return True


def load_sources(directory: Path | None = None) -> tuple[list[SourceConfig], list[str]]:
    """Every source config; a broken one is reported (its DAG file shows the import error too)."""
    sources, errors = [], []
    for path in source_files(directory or config_dir()):
        try:
            sources.append(load_source_config(path))
        except ConfigError as exc:
            errors.append(str(exc).splitlines()[0])
    return sources, errors


# -- reads from the metadata database ---------------------------------------------------------------
def read_records(session: Any) -> dict[str, Any]:
    """The status, run-record, health and incident Variables by key (JSON values)."""
    from airflow.models.variable import Variable
    from sqlalchemy import or_, select

    prefixes = (model.STATUS_PREFIX, model.RUNS_PREFIX, model.HEALTH_PREFIX, model.INCIDENTS_PREFIX)
    query = select(Variable).where(or_(*(Variable.key.startswith(p, autoescape=True) for p in prefixes)))
    records = {}
    for variable in session.scalars(query):
        try:
            value = json.loads(variable.val)
        except (TypeError, ValueError):
            log.warning("Variable %s is not JSON; the status page ignores it", variable.key)
            continue
        if isinstance(value, dict):
            records[variable.key] = value
    return records


def read_dags(session: Any, dag_ids: list[str]) -> dict[str, dict[str, Any]]:
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    rows = session.execute(select(DagModel.dag_id, DagModel.is_paused).where(DagModel.dag_id.in_(dag_ids)))
    return {dag_id: {"is_paused": paused} for dag_id, paused in rows}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


# The CDC DAG's tasks that run for one table: mapped, named by table (rendered_map_index).
TABLE_TASKS = ("tables.extract_load", "tables.apply")
RECENT_TASK_INSTANCES = 20_000


# task instance states of a plan that has not decided yet, and of a table task that failed
UNFINISHED = frozenset({"scheduled", "queued", "running", "up_for_retry", "up_for_reschedule", "restarting"})
FAILED = frozenset({"failed", "up_for_retry"})


def read_last_task_instances(session: Any, source: SourceConfig) -> dict[str, dict[str, Any]]:
    """The latest task instance of each table that ran (the page's "last log" link): one query for
    the source, newest first, over the mapped table tasks (named by table) and ``plan`` (a table
    that had no task of its own yet points at the plan).

    Only tries that ran have a log: a task the scheduler marked ``upstream_failed`` or ``skipped``
    without running it keeps try number 0 but gets a start date, later than the failure it follows."""
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import select

    rows = session.execute(
        # the stored column (the model's rendered_map_index property falls back to the index)
        select(TI.run_id, TI.task_id, TI.map_index, TI._rendered_map_index, TI.try_number, TI.state, TI.start_date)
        .where(TI.dag_id == source.dag_id, TI.task_id.in_([*TABLE_TASKS, "plan"]))
        .where(TI.start_date.is_not(None), TI.try_number > 0)
        .order_by(TI.start_date.desc())
        .limit(RECENT_TASK_INSTANCES)
    ).all()
    names = {t.name for t in source.tables}
    found: dict[str, dict[str, Any]] = {}
    plan: dict[str, Any] | None = None
    for run_id, task_id, map_index, rendered, try_number, state, started in rows:
        ti = {
            "run_id": run_id,
            "task_id": task_id,
            "map_index": map_index,
            "try_number": try_number,
            "state": str(state) if state else None,
            "start": _iso(started),
        }
        if task_id == "plan":
            plan = plan or ti
        elif rendered in names and rendered not in found:
            found[rendered] = ti
    if plan is None:
        return found
    # A table with no task of its own in the latest run (idle, or not yet planned) points at that
    # run's plan, which decided it; its own task started after the plan when it had work. A table
    # whose own task failed keeps pointing at that failure while a newer plan has not finished
    # deciding it (the on-call person opens the failure's log, not a plan still running).
    deciding = plan.get("state") in UNFINISHED
    return {
        name: ti
        if ti is not None
        and ((ti.get("start") or "") >= (plan.get("start") or "") or (deciding and ti.get("state") in FAILED))
        else plan
        for name in names
        for ti in [found.get(name)]
    }


def read_dag_runs(session: Any, dag_id: str, since: datetime) -> list[dict[str, Any]]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    rows = session.execute(
        select(DagRun.run_id, DagRun.start_date, DagRun.end_date, DagRun.state)
        .where(DagRun.dag_id == dag_id, DagRun.start_date >= since)
        .order_by(DagRun.start_date)
    )
    return [
        {
            "run_id": run_id,
            "start": _iso(start),
            "end": _iso(end),
            "duration_s": round((end - start).total_seconds(), 1) if start and end else None,
            "state": str(state) if state else None,
        }
        for run_id, start, end, state in rows
    ]


def status_data(request: Request, user: Any, range_name: str, now: datetime | None = None) -> dict[str, Any]:
    """The page's data for ``user``: only sources whose DAG the user may read."""
    from airflow.utils.session import create_session

    now = now or datetime.now(UTC)
    sources, errors = load_sources()
    sources = [s for s in sources if may_read_dag(request, user, s.dag_id)]
    since = now - model.RANGES[range_name]
    with create_session() as session:
        records = read_records(session)
        dags = read_dags(session, [s.dag_id for s in sources])
        last_tis = {s.dag_id: read_last_task_instances(session, s) for s in sources}
        runs = {s.dag_id: read_dag_runs(session, s.dag_id, since) for s in sources}
    return model.page(sources, records, dags, last_tis, runs, range_name, now, errors)


# -- the runbook ----------------------------------------------------------------------------------
def render_runbook(text: str) -> str:
    """docs/runbook.md as an HTML page whose headings carry GitHub's anchors."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for opening, inline in itertools.pairwise(tokens):
        if opening.type == "heading_open":
            opening.attrSet("id", model.runbook_anchor(inline.content))
    body = md.renderer.render(tokens, md.options, {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>CDC runbook</title>"
        "<link rel='stylesheet' href='static/style.css'></head><body class='runbook'>"
        f"<p><a href='./'>← CDC status</a></p>{body}</body></html>"
    )


# -- the app --------------------------------------------------------------------------------------
def create_app(assets: Path) -> FastAPI:
    """The app the plugin mounts; ``assets`` holds index.html, app.js and style.css."""
    app = FastAPI(title="CDC status", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=assets), name="static")

    @app.get("/", include_in_schema=False)
    def index(user: UserDep) -> FileResponse:
        # The page shell holds no data; it is still only served to signed-in users.
        return FileResponse(assets / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/status")
    def api_status(
        request: Request,
        user: UserDep,
        range_name: Annotated[str, Query(alias="range", pattern="^(day|week)$")] = "day",
    ) -> dict[str, Any]:
        return status_data(request, user, range_name)

    @app.get("/runbook", include_in_schema=False)
    def runbook(user: UserDep) -> HTMLResponse:
        if not RUNBOOK_PATH.exists():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{RUNBOOK_PATH.name} is not deployed with the project")
        return HTMLResponse(render_runbook(RUNBOOK_PATH.read_text(encoding="utf-8")))

    return app
