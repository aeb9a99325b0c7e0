"""Raw-table Assets and Cosmos' mart Assets share one URI scheme, so lineage links up.

Cosmos 1.15 (``cosmos.dataset``) names a dbt node ``snowflake://<account>/<DATABASE>/<SCHEMA>/<alias>``,
the account taken from the dbt profile (our Snowflake connection) and normalised by OpenLineage's
``fix_account_name``. A raw table must get the URI Cosmos would give the same table.
"""

from __future__ import annotations

import json

import pytest
from cosmos.dataset import compute_model_outlet_uris, construct_dataset_uri, get_dataset_namespace

from dev import snowflake_local
from include.cdc_pipeline.config import SourceConfig, config_dir, load_source_config
from include.cdc_pipeline.orchestration.cdc_dag import raw_asset
from include.cdc_pipeline.orchestration.dbt_dag import manifest_path, profile_config


def _cosmos_uri(source: SourceConfig, name: str) -> str:
    namespace = get_dataset_namespace(profile_config(source, "billing"))
    assert namespace is not None
    return construct_dataset_uri(namespace, name, warn_uri_migration=False)


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ("fakesnow", "snowflake://fakesnow.us-west-1.aws/ANALYTICS/RAW/ACCOUNTS"),  # the local stack
        ("xy12345.west-europe.azure", "snowflake://xy12345.west-europe.azure/ANALYTICS/RAW/ACCOUNTS"),
        ("myorg-myaccount", "snowflake://myorg-myaccount/ANALYTICS/RAW/ACCOUNTS"),
    ],
)
def test_raw_asset_uri_is_the_one_cosmos_gives_the_table(
    account: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the connection's account and target.account set to it,
    conn = snowflake_local.airflow_connection(8765)
    conn["extra"]["account"] = account
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(conn))
    data = load_source_config(config_dir() / "billing.yaml").model_dump(by_alias=True)
    source = SourceConfig.model_validate(data | {"target": data["target"] | {"account": account}})
    accounts = next(t for t in source.tables if t.table == "accounts")
    # then the raw table's Asset URI equals Cosmos' URI for ANALYTICS.RAW.ACCOUNTS.
    assert raw_asset(source, accounts).uri == expected == _cosmos_uri(source, "ANALYTICS.RAW.ACCOUNTS")


def test_shipped_config_and_local_connection_share_the_marts_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps(snowflake_local.airflow_connection(8765)))
    source = load_source_config(config_dir() / "billing.yaml")
    namespace = get_dataset_namespace(profile_config(source, "billing"))
    marts = compute_model_outlet_uris(manifest_path("billing"), namespace)
    assert marts["model.billing.fct_invoices"] == ["snowflake://fakesnow.us-west-1.aws/ANALYTICS/MARTS/fct_invoices"]
    for table in source.tables:
        assert raw_asset(source, table).uri.startswith(f"{namespace}/ANALYTICS/RAW/")
