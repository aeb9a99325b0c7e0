"""What an alert says: the incident mails (opened, update, reminder, resolved), the plain-text
form of an alert for a chat webhook, and the failure details read from an Airflow callback context
(DAG, task, LSN window from the mapped table task's input, try, error, log URL).

Texts only: sending lives in ``alerts.channels``, the decisions in ``alerts.incidents``, the
Airflow side in ``alerts.desk`` and ``alerts.callbacks``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)


def _row(name: str, value: Any, pre: bool = False) -> str:
    # quote=False: an apostrophe in a server message stays an apostrophe in the mail's source
    text = html.escape("" if value is None else str(value), quote=False)
    return f"<tr><td><b>{name}</b></td><td>{f'<pre>{text}</pre>' if pre else text}</td></tr>"


def _link_row(name: str, url: str | None) -> str:
    if not url:
        return _row(name, "n/a")
    safe = html.escape(url, quote=True)
    return f'<tr><td><b>{name}</b></td><td><a href="{safe}">{safe}</a></td></tr>'


def _window_of(context: dict[str, Any]) -> dict[str, Any] | None:
    """The table's planned window (mode, capture instance, lower/upper LSN): the table task puts
    it in its context (``cdc_window``) as soon as it knows it."""
    window = context.get("cdc_window")
    return dict(window) if isinstance(window, dict) else None


def failure_details(context: dict[str, Any]) -> dict[str, Any]:
    """What the on-call needs to know about a failed task, from the callback context."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    task_id = getattr(ti, "task_id", None) or "?"
    window = _window_of(context)
    lsn_window = None
    if window:
        lsn_window = f"({window.get('lower') or 'start'}, {window.get('upper') or '?'}] {window.get('mode', '')}"
        if window.get("capture_instance"):
            lsn_window += f" on {window['capture_instance']}"
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # needs the API base URL; never let it stop the mail
        log_url = None
    return {
        "dag_id": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?"),
        "task_id": task_id,
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "lsn_window": lsn_window,
        "try_number": getattr(ti, "try_number", None),
        "max_tries": getattr(ti, "max_tries", None),
        "error": context.get("exception"),
        "log_url": log_url,
    }


# -- chat -----------------------------------------------------------------------------------------
def webhook_text(subject: str, html_content: str) -> str:
    """The alert as plain text for a chat message: subject, then one line per table row / paragraph."""
    body = re.sub(r"</(tr|p|h3|li)>|<br\s*/?>", "\n", html_content)
    body = re.sub(r"</td>\s*<td>", ": ", body)
    body = html.unescape(re.sub(r"<[^>]+>", "", body))
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return "\n".join([f"*{subject}*", *lines])


# -- incidents (alerts.incidents decides, alerts.desk sends) ----------------------------------------
RUNBOOK_FILE = "docs/runbook.md"


def runbook_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading (the runbook is read on GitHub and on the status page)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _when(iso: str | None) -> str:
    return (iso or "?").replace("T", " ").split(".")[0].replace("+00:00", "") + (" UTC" if iso else "")


def human_span(seconds: float) -> str:
    """A duration as on-call reads it: ``45m``, ``4h``, ``1h 5m``, ``2d 3h``, ``5s``."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)}s"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(p for p in parts if p) or "0m"


def _tables_text(incident: dict[str, Any], states: Sequence[str] | None = None) -> str:
    from include.cdc_pipeline.alerts.incidents import label

    shown = [
        label(name)
        + (f" (now: incident {s['moved_to_id']})" if s.get("moved_to_id") else "")
        + (f" — {s['detail']}" if s.get("detail") else "")
        for name, s in sorted(incident["tables"].items())
        if states is None or s["state"] in states
    ]
    return "; ".join(shown) or "none"


def _count(incident: dict[str, Any]) -> str:
    """``5 tables``; for an incident of no table, what it affects (``DAG cdc_preflight``)."""
    from include.cdc_pipeline.alerts.incidents import is_part, label

    tables = [t for t in incident["tables"] if not is_part(t)]
    if tables:
        return f"{len(tables)} table{'s' if len(tables) != 1 else ''}"
    return ", ".join(label(t) for t in sorted(incident["tables"])) or "no table"


def _short(title: str, limit: int = 150) -> str:
    """A subject stays readable on a phone: a long server message is cut (the body has all of it),
    the exception class at its end is kept."""
    if len(title) <= limit:
        return title
    message, cls = re.match(r"(.*?)((?: \([\w.]+\))?)$", title).groups()  # type: ignore[union-attr]
    return message[: limit - len(cls) - 1].rstrip() + "…" + cls


def _meaning(kind: str) -> str:
    from include.cdc_pipeline.alerts.classify import KINDS

    if kind in KINDS:
        return KINDS[kind][0]
    if kind.startswith("health:"):
        return f"cdc_health check {kind.removeprefix('health:')}"
    return {"deadline": "a run still going past its deadline"}.get(kind, kind)


def incident_mail(notice: Any, source: str, realert_after: timedelta) -> tuple[str, str]:
    """Subject and HTML body of an incident notice (``alerts.incidents.Notice``): opened, grown,
    cause changed, reminder, resolved. The error is the server's text as a person reads it."""
    from include.cdc_pipeline.alerts.incidents import FAILING, RECOVERED, duration

    inc, kind = notice.incident, notice.kind
    ident, title = inc["id"], _short(inc["title"])
    now_failing = _tables_text(inc, [FAILING])
    if kind == "opened":
        subject = f"[CDC INCIDENT {ident}] {source}: {title} — {_count(inc)}"
        headline = "New incident: one mail for this cause; repeats send nothing until it is resolved"
    elif kind == "grown":
        subject = f"[CDC INCIDENT {ident} UPDATE] {source}: {len(notice.new_tables)} more failing — {title}"
        headline = "Incident update: more tables fail for the same cause"
    elif kind == "cause":
        subject = f"[CDC INCIDENT {ident} UPDATE] {source}: the cause changed — {title}"
        headline = "Incident update: the same tables now fail for another cause"
    elif kind == "reminder":
        age = (datetime.now(UTC) - datetime.fromisoformat(inc["opened_at"])).total_seconds()
        subject = f"[CDC INCIDENT {ident} STILL OPEN {human_span(age)}] {source}: {title}"
        headline = f"Reminder: still open (reminders every {human_span(realert_after.total_seconds())})"
    else:
        took = duration(inc)
        span = human_span(took.total_seconds()) if took else "?"
        subject = f"[CDC RESOLVED {ident}] {source}: {title} — resolved after {span} ({_count(inc)})"
        headline = f"Resolved after {span}: every affected table completed a run again or fails for another cause"
    section = inc.get("runbook") or "On-call runbook: CDC → Snowflake alerts"
    rows = [_row("Incident", f"{ident} ({inc['status']}), source {source}"), _row("Cause", inc["title"])]
    if kind == "cause" and notice.previous:
        rows.append(_row("Before", notice.previous))
    if kind == "grown":
        rows.append(_row("Newly failing", ", ".join(notice.new_tables)))
    if kind == "resolved":
        rows.append(_row("Open", f"{_when(inc['opened_at'])} → {_when(inc['resolved_at'])}"))
        for name, states in (("Recovered", [RECOVERED]), ("Fails for another cause", ["moved"])):
            if any(s["state"] in states for s in inc["tables"].values()):
                rows.append(_row(name, _tables_text(inc, states)))
    else:
        rows += [_row("Failing now", f"{_count(inc)}: {now_failing}"), _row("Open since", _when(inc["opened_at"]))]
    retry_note = (
        "failed at once: a retry cannot fix this"
        if not inc.get("retryable", True)
        else "failed after its retries"
        if inc.get("origin") == "task"
        else inc.get("origin", "")
    )
    rows += [
        _row("What it is", f"{_meaning(inc.get('kind', ''))} ({retry_note})"),
        _row("First failure", f"{inc.get('where') or 'n/a'} at {_when(inc.get('first_at'))}"),
        _row("Error", inc.get("error"), pre=True),
        _link_row("First log", inc.get("log_url")),
        _row("Runbook", f"{RUNBOOK_FILE}#{runbook_anchor(section)} (section “{section}”)"),
    ]
    if kind != "resolved":
        rows.append(
            _row(
                "Next",
                f"one mail when it is resolved; a reminder every {human_span(realert_after.total_seconds())} while it "
                "stays open; an update when more tables fail or the cause changes",
            )
        )
    return subject, f"<h3>{html.escape(headline)}</h3><table>{''.join(rows)}</table>"
