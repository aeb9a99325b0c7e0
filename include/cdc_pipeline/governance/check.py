"""The preflight's access check: does the account match the spec? Every difference is named.

Returns plain :class:`AccessFinding` values (the preflight turns them into its own findings): one
per compared database set, listing each statement the plan would run — a missing grant reads as
the GRANT that restores it. An account that has not adopted the spec for the sources' databases (no
PII tag there and no grant of the spec's roles on them) is reported as such, not as a failure
(``make access-apply`` adopts it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from include.cdc_pipeline.config import SourceConfig
from include.cdc_pipeline.governance.live import read_state
from include.cdc_pipeline.governance.plan import differences, make_plan
from include.cdc_pipeline.governance.spec import AccessSpec, access_file, desired_state, load_access_spec

APPLY_HINT = "make access-apply (python -m include.cdc_pipeline.governance apply --conn-id <admin connection>)"


@dataclass(frozen=True)
class AccessFinding:
    check: str
    ok: bool
    detail: str
    fix: str = ""


def check_access(
    sources: Sequence[SourceConfig], open_connection: Callable[[], Any], spec: AccessSpec | None = None
) -> AccessFinding:
    """Compare the live roles, grants, future grants, users, warehouses, monitors, tags and masking
    policies with ``spec`` (default: ``include/config/access.yaml``) plus the sources."""
    databases = ", ".join(sorted({s.target.database.upper() for s in sources}))
    check = f"Snowflake access matches {access_file().name} ({databases})"
    try:
        spec = spec or load_access_spec()
        wanted = desired_state(spec, sources)
        connection = open_connection()
        live = read_state(connection, wanted)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        return AccessFinding(
            check,
            False,
            f"{type(exc).__name__}: {first[0] if first else ''}",
            "the preflight reads SHOW GRANTS / SHOW USERS / SHOW RESOURCE MONITORS: set check_conn_id in "
            f"{access_file().name} to an Airflow connection whose role may (SECURITYADMIN, or the admin connection "
            "make access-apply uses), or fix the access file named",
        )
    if not live.tags and not any(g.name.split(".")[0] in wanted.databases for g in live.grants):
        return AccessFinding(
            check,
            True,
            f"not adopted: no PII tag and no grant of the spec's roles in {databases}; {APPLY_HINT} adopts it",
        )
    plan = make_plan(wanted, live)
    if plan.empty:
        return AccessFinding(
            check, True, "roles, grants, future grants, users, warehouses, monitors and PII tags match"
        )
    found = differences(plan)
    return AccessFinding(
        check,
        False,
        f"{len(found)} difference(s): " + "; ".join(found),
        f"{APPLY_HINT}, or run the statements above as SECURITYADMIN / SYSADMIN / ACCOUNTADMIN",
    )
