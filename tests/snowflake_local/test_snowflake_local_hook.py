"""CdcSnowflakeHook: forwards protocol/timeouts from extras, and nothing changes without them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

from include.cdc_pipeline.snowflake import CdcSnowflakeHook

PROD_CONN: dict[str, Any] = {
    "conn_type": "snowflake",
    "login": "svc_cdc",
    "password": "secret",
    "schema": "RAW",
    "extra": {
        "account": "acme-xy12345",
        "database": "ANALYTICS",
        "warehouse": "LOAD_WH",
        "role": "LOADER",
        "region": "eu-west-1",
        "session_parameters": {"QUERY_TAG": "cdc"},
    },
}


def _params(hook_cls: type[SnowflakeHook], conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("AIRFLOW_CONN_SF_UNDER_TEST", json.dumps(conn))
    return hook_cls(snowflake_conn_id="sf_under_test")._get_conn_params()


def test_production_connection_params_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _params(CdcSnowflakeHook, PROD_CONN, monkeypatch)
    provider = _params(SnowflakeHook, PROD_CONN, monkeypatch)
    assert ours == provider
    assert not {"protocol", "network_timeout", "login_timeout", "socket_timeout"} & ours.keys()


def test_production_with_host_port_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = json.loads(json.dumps(PROD_CONN))
    conn["extra"].update(host="acme-xy12345.privatelink.snowflakecomputing.com", port=443)
    assert _params(CdcSnowflakeHook, conn, monkeypatch) == _params(SnowflakeHook, conn, monkeypatch)


def test_local_extras_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = json.loads(json.dumps(PROD_CONN))
    conn["extra"].update(
        host="127.0.0.1",
        port=8765,
        protocol="http",
        network_timeout="15",  # UI-entered extras arrive as strings
        login_timeout=10,
        socket_timeout=600,
    )
    ours = _params(CdcSnowflakeHook, conn, monkeypatch)
    provider = _params(SnowflakeHook, conn, monkeypatch)
    assert "protocol" not in provider  # the gap this subclass exists for
    assert ours["protocol"] == "http"
    assert (ours["network_timeout"], ours["login_timeout"], ours["socket_timeout"]) == (15, 10, 600)
    assert (ours["host"], ours["port"]) == ("127.0.0.1", 8765)
    extra_keys = {"protocol", "network_timeout", "login_timeout", "socket_timeout"}
    assert {k: v for k, v in ours.items() if k not in extra_keys} == provider


@pytest.mark.integration
def test_hook_smoke_on_local_snowflake(snowflake_default_env: Any) -> None:
    """Production code path: conn id snowflake_default from AIRFLOW_CONN_* JSON, over http."""
    hook = CdcSnowflakeHook(snowflake_conn_id="snowflake_default")
    hook.run("CREATE DATABASE IF NOT EXISTS HOOK_SMOKE")
    hook.run("CREATE SCHEMA IF NOT EXISTS HOOK_SMOKE.RAW")
    hook.run("CREATE OR REPLACE TABLE HOOK_SMOKE.RAW.CUSTOMERS (ID NUMBER(38,0), NAME VARCHAR(100))")
    hook.run(
        "INSERT INTO HOOK_SMOKE.RAW.CUSTOMERS (ID, NAME) VALUES (%(id)s, %(name)s)",
        parameters={"id": 1, "name": "Ada"},
    )
    hook.run("INSERT INTO HOOK_SMOKE.RAW.CUSTOMERS (ID, NAME) VALUES (2, 'Grace')")
    rows = hook.get_records("SELECT ID, NAME FROM HOOK_SMOKE.RAW.CUSTOMERS ORDER BY ID")
    assert [tuple(r) for r in rows] == [(1, "Ada"), (2, "Grace")]
    assert hook.get_first("SELECT COUNT(*) FROM HOOK_SMOKE.RAW.CUSTOMERS")[0] == 2
    # the connection's database/schema extras are the session defaults
    assert hook.get_first("SELECT CURRENT_DATABASE(), CURRENT_SCHEMA()") == ("ANALYTICS", "RAW")
