"""Environment of the embedded local stack (no Docker): one place for ports, paths, connections.

`make demo`, `make airflow` and the end-to-end tests all build their environment here, so the
Airflow connections they define are identical to each other and mirror airflow_settings.yaml
(which serves the Docker path).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dev import snowflake_local

# The local value of the Airflow Variable cdc_hash_salt_secret (also in airflow_settings.yaml).
LOCAL_SALT = "local-dev-salt"

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LocalStack:
    """Where the local services listen and keep their state."""

    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("CDC_LOCAL_DIR", ROOT / ".local")))
    mssql_port: int = int(os.environ.get("CDC_LOCAL_MSSQL_PORT", "11433"))
    snowflake_port: int = int(os.environ.get("CDC_LOCAL_SNOWFLAKE_PORT", "8765"))
    smtp_port: int = int(os.environ.get("CDC_LOCAL_SMTP_PORT", "1025"))
    airflow_port: int = int(os.environ.get("CDC_LOCAL_AIRFLOW_PORT", "8080"))
    source_database: str = "billing"
    # The login the pipeline reads with (created by `python -m dev.stack up`): not sysadmin, as in
    # production; `sa` stays for set-up and the workload generator.
    reader_login: tuple[str, str] = ("cdc_reader", "local-reader")

    @property
    def mssql_db_path(self) -> Path:
        return self.state_dir / "mssql" / f"{self.source_database}.duckdb"

    @property
    def snowflake_dir(self) -> Path:
        return self.state_dir / "snowflake"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def mail_dir(self) -> Path:
        return self.state_dir / "mail"

    def connections(self) -> dict[str, dict]:
        """Airflow connections (as AIRFLOW_CONN_* JSON) that reach the local services."""
        return {
            "mssql_billing": {
                "conn_type": "mssql",
                "host": "127.0.0.1",
                "port": self.mssql_port,
                "schema": self.source_database,
                # The DuckDB-backed SQL Server CDC emulator speaks TDS: MsSqlHook/pymssql as in production,
                # as a least-privileged login (dev/stack.py creates it), as production should.
                "login": self.reader_login[0],
                "password": self.reader_login[1],
            },
            "snowflake_default": snowflake_local.airflow_connection(self.snowflake_port),
            "smtp_default": {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.smtp_port,
                "extra": {"from_email": "airflow-cdc@example.com", "disable_ssl": True, "disable_tls": True},
            },
        }

    def environment(self) -> dict[str, str]:
        """Variables to add to os.environ for Airflow, dbt and the pipeline to use the local stack."""
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            # Tasks reach the API server here; unset, it is http://localhost:8080 whatever the port above.
            "AIRFLOW__API__BASE_URL": f"http://localhost:{self.airflow_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{self.airflow_port}/execution/",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.airflow_home / "logs"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "DO_NOT_TRACK": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
            "AIRFLOW_VAR_CDC_HASH_SALT_SECRET": LOCAL_SALT,
            "CDC_LOCAL_DIR": str(self.state_dir),
            # dbt profile target for the local Snowflake (emulator overrides are active only there).
            "CDC_DBT_TARGET": "local",
            "CDC_LOCAL_SNOWFLAKE_PORT": str(self.snowflake_port),
        }
        for conn_id, conn in self.connections().items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        return env
