"""README "Deploy to Astronomer" names exactly what the DAGs need on a Deployment.

A Deployment has none of airflow_settings.yaml (the CLI loads it locally only): every pool, every
connection and the salt Variable must be created by hand, and a task whose pool does not exist is
never scheduled, silently. These tests hold the README's instructions to the DAGs and configs, and
read the Azure Key Vault settings the way the provider's secrets backend does.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag

from include.cdc_pipeline.config import load_source_config, source_files
from include.cdc_pipeline.orchestration.tasks import SALT_VARIABLE
from tests.astro.runtime_build import ROOT

README = (ROOT / "README.md").read_text()
DEPLOY = README[README.index("### Deploy to Astronomer") :].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(ROOT / "dags"))


def _conn_ids() -> set[str]:
    ids = set()
    for path in source_files():
        source = load_source_config(path)
        ids |= {source.mssql_conn_id, source.snowflake_conn_id, source.smtp_conn_id}
        ids |= {i for i in (source.dbt_snowflake_conn_id, source.alert_webhook_conn_id) if i}
    return ids


def test_every_pool_a_task_uses_is_created_by_the_instructions(dagbag: DagBag) -> None:
    used = {t.pool for dag in dagbag.dags.values() for t in dag.tasks} - {"default_pool"}
    created = dict(re.findall(r"pool create .*?--name (\S+) --slots (\d+)", DEPLOY))
    assert used and set(created) == used
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    local = {pool["pool_name"]: pool["pool_slot"] for pool in settings["airflow"]["pools"]}
    assert {name: int(slots) for name, slots in created.items()} == local  # same slots as astro dev start


def test_every_connection_and_the_salt_are_named(dagbag: DagBag) -> None:
    for conn_id in _conn_ids():
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in DEPLOY, conn_id
    assert f"AIRFLOW_VAR_{SALT_VARIABLE.upper()}" in DEPLOY


def test_key_vault_secret_names_are_the_ones_the_backend_reads() -> None:
    from airflow.providers.microsoft.azure.secrets.key_vault import AzureKeyVaultBackend

    backend_path = re.search(r"AIRFLOW__SECRETS__BACKEND=(\S+)", DEPLOY).group(1)
    kwargs = json.loads(re.search(r"AIRFLOW__SECRETS__BACKEND_KWARGS=(\{.*\})", DEPLOY).group(1))
    assert backend_path == f"{AzureKeyVaultBackend.__module__}.{AzureKeyVaultBackend.__name__}"
    backend = AzureKeyVaultBackend(**kwargs)  # no network until a secret is read
    documented = set(re.findall(r"`(airflow-(?:connections|variables)-[a-z0-9-]+)`", DEPLOY))
    expected = {backend.build_path(backend.connections_prefix, conn_id, backend.sep) for conn_id in _conn_ids()}
    expected.add(backend.build_path(backend.variables_prefix, SALT_VARIABLE, backend.sep))
    assert documented == expected


def test_no_secret_reaches_the_image() -> None:
    from tests.astro.runtime_build import build_context

    sent = build_context(ROOT)
    assert "airflow_settings.yaml" not in sent and ".env" not in sent
    for name in sent:
        text = (ROOT / name).read_text(errors="ignore")
        assert "LocalDev-Passw0rd!" not in text, name  # the compose stack's sa password
        assert "LocalReader-Passw0rd!" not in text, name  # and its reader login's
        assert not re.search(r"BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY", text), name


def test_astro_dev_start_reads_as_the_login_the_seed_creates() -> None:
    # Preflight fails a sysadmin reader: the compose stack's connections use the login its seed
    # service creates (dev/workload/tsql.py reader-login), with the same password.
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    compose = (ROOT / "docker-compose.override.yml").read_text()
    mssql = [c for c in settings["airflow"]["connections"] if c["conn_type"] == "mssql"]
    assert mssql
    for conn in mssql:
        assert conn["conn_login"] != "sa"
        assert f"reader-login --login {conn['conn_login']} --login-password '{conn['conn_password']}'" in compose
