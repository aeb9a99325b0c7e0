"""``python -m include.cdc_pipeline.governance plan|apply``: the access spec against an account.

``plan`` prints the statements that bring the account to ``include/config/access.yaml`` plus the
source YAMLs (nothing when it matches; ``--offline`` plans against an empty account without
connecting); ``apply`` runs them and plans again, and fails if anything is left. The connection is
an Airflow connection (``--conn-id``, default ``snowflake_admin``) of a user who may use SYSADMIN,
SECURITYADMIN and ACCOUNTADMIN (README "Snowflake access, PII and cost guards").
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from include.cdc_pipeline.config import load_source_config, source_files
from include.cdc_pipeline.governance.live import read_state
from include.cdc_pipeline.governance.plan import Plan, apply, make_plan, render
from include.cdc_pipeline.governance.spec import State, desired_state, load_access_spec

DEFAULT_CONN_ID = "snowflake_admin"


def wanted_state() -> State:
    return desired_state(load_access_spec(), [load_source_config(p) for p in source_files()])


def plan_for(connection: Any | None, wanted: State) -> Plan:
    """The plan against the account behind ``connection`` (None: against an empty account)."""
    live = State() if connection is None else read_state(connection, wanted)
    return make_plan(wanted, live)


def connect(conn_id: str) -> Any:
    from include.cdc_pipeline.snowflake import CdcSnowflakeHook

    return CdcSnowflakeHook(snowflake_conn_id=conn_id).get_conn()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.cdc_pipeline.governance", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["plan", "apply"])
    parser.add_argument("--conn-id", default=DEFAULT_CONN_ID, help=f"Airflow connection (default {DEFAULT_CONN_ID})")
    parser.add_argument("--offline", action="store_true", help="plan: against an empty account, no connection")
    args = parser.parse_args(argv)
    wanted = wanted_state()
    if args.offline:
        if args.command != "plan":
            parser.error("--offline only plans")
        print(render(plan_for(None, wanted)))
        return 0
    connection = connect(args.conn_id)
    try:
        plan = plan_for(connection, wanted)
        print(render(plan))
        if args.command == "plan":
            return 0
        ran = apply(connection, plan.statements)
        again = plan_for(connection, wanted)
        print(f"-- applied {ran} statement(s); plan now: {len(again.statements)} statement(s)")
        if not again.empty:
            print(render(again), file=sys.stderr)
            return 1
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
