"""``make access-plan`` / ``make access-apply``: the access spec against the local Snowflake, or a real one.

With ``--conn-id`` (``make access-plan ACCESS_CONN=snowflake_admin``) this is exactly
``python -m include.cdc_pipeline.governance``: the connection comes from Airflow (e.g. the
environment variable ``AIRFLOW_CONN_SNOWFLAKE_ADMIN``). Without it, the local Snowflake of the
stack (``dev/localenv.py``) is started if it is not running and used as ACCOUNTADMIN.
"""

from __future__ import annotations

import json
import os
import sys

from dev import snowflake_local
from dev.localenv import LocalStack
from include.cdc_pipeline.governance.__main__ import main as governance_main

LOCAL_CONN_ID = "snowflake_local_admin"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--conn-id" in args:
        return governance_main(args)
    stack = LocalStack()
    snowflake_local.start(stack.snowflake_dir, port=stack.snowflake_port)
    conn = snowflake_local.airflow_connection(stack.snowflake_port, role="ACCOUNTADMIN")
    os.environ[f"AIRFLOW_CONN_{LOCAL_CONN_ID.upper()}"] = json.dumps(conn)
    return governance_main([*args, "--conn-id", LOCAL_CONN_ID])


if __name__ == "__main__":
    sys.exit(main())
