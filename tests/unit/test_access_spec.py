"""The access spec (include/cdc_pipeline/governance): validation, what is derived from the sources, the plan."""

from __future__ import annotations

import pytest

from include.cdc_pipeline.config import SourceConfig, load_source_config, source_files
from include.cdc_pipeline.errors import ConfigError
from include.cdc_pipeline.governance.plan import make_plan, render
from include.cdc_pipeline.governance.spec import (
    ColumnTag,
    FutureGrant,
    Grant,
    RoleGrant,
    State,
    desired_state,
    load_access_spec,
)


def billing() -> SourceConfig:
    return next(load_source_config(p) for p in source_files() if p.stem == "billing")


def test_pii_columns_are_declared_once_in_the_source_yaml() -> None:
    accounts = next(t for t in billing().tables if t.table == "accounts")
    assert {c: v.value for c, v in accounts.pii_columns.items()} == {"account_name": "name", "email": "email"}
    wanted = desired_state(load_access_spec(), [billing()])
    assert wanted.pii_tables == {
        ("ANALYTICS", "RAW", "ACCOUNTS"): {"ACCOUNT_NAME": "name", "EMAIL": "email"},
        ("ANALYTICS", "RAW", "ACCOUNTS_HISTORY"): {"ACCOUNT_NAME": "name", "EMAIL": "email"},
    }


def test_pii_on_a_key_column_is_refused() -> None:
    data = billing().model_dump(by_alias=True, mode="json")
    data["tables"][0]["pii_columns"] = {"account_id": "other"}
    with pytest.raises(ValueError, match=r"pii_columns must not contain primary key column\(s\) \['account_id'\]"):
        SourceConfig.model_validate(data)


def test_roles_get_only_what_the_issue_allows() -> None:
    s = desired_state(load_access_spec(), [billing()])
    by_role: dict[str, set[tuple[str, str, str]]] = {}
    for g in s.grants:
        by_role.setdefault(g.role, set()).add((g.privilege, g.on, g.name))
    schemas = lambda role: {name for _, on, name in by_role[role] if on == "SCHEMA"}  # noqa: E731
    assert schemas("LOADER") == {"ANALYTICS.STAGING", "ANALYTICS.RAW", "ANALYTICS.CONTROL", "ANALYTICS.GOVERNANCE"}
    assert schemas("TRANSFORMER") == {"ANALYTICS.RAW", "ANALYTICS.GOVERNANCE"}  # + owns STAGING_DBT, MARTS
    assert s.schema_owners == {"ANALYTICS.STAGING_DBT": "TRANSFORMER", "ANALYTICS.MARTS": "TRANSFORMER"}
    assert schemas("READER") == {"ANALYTICS.MARTS"}
    assert "PII_READER" not in by_role  # only through READER, plus the masking policy's exception
    assert FutureGrant("SELECT", "TABLE", "ANALYTICS.RAW", "TRANSFORMER") in s.future_grants
    assert RoleGrant("PII_READER", "ROLE", "SYSADMIN") not in s.role_grants
    assert {r for r in s.role_grants if r.grantee_type == "USER"} == {
        RoleGrant("LOADER", "USER", "CDC_LOADER"),
        RoleGrant("TRANSFORMER", "USER", "DBT_TRANSFORMER"),
    }
    assert {(m.credit_quota, m.notify, m.suspend, m.suspend_immediate) for m in s.monitors.values()} == {
        (30, 75, 90, 100),
        (40, 75, 90, 100),
        (20, 75, 90, 100),
    }


def test_a_live_state_equal_to_the_spec_plans_nothing_and_extras_are_revoked() -> None:
    wanted = desired_state(load_access_spec(), [billing()])
    live = State(**{k: v for k, v in vars(wanted).items()})
    live.tables = {("ANALYTICS", "RAW", "ACCOUNTS", "TABLE"), ("ANALYTICS", "RAW", "ACCOUNTS_HISTORY", "TABLE")}
    live.grants = wanted.grants | {
        Grant("SELECT", "TABLE", "ANALYTICS.RAW.ACCOUNTS", "TRANSFORMER"),
        Grant("SELECT", "TABLE", "ANALYTICS.RAW.ACCOUNTS_HISTORY", "TRANSFORMER"),
    }
    live.column_tags = {
        ColumnTag("ANALYTICS", "RAW", t, c, v)
        for t in ("ACCOUNTS", "ACCOUNTS_HISTORY")
        for c, v in (("ACCOUNT_NAME", "name"), ("EMAIL", "email"))
    }
    assert make_plan(wanted, live).statements == []
    live.grants = live.grants | {Grant("SELECT", "TABLE", "ANALYTICS.MARTS.FCT_INVOICES", "LOADER")}
    live.role_grants = live.role_grants | {RoleGrant("SYSADMIN", "USER", "CDC_LOADER")}
    assert render(make_plan(wanted, live)).splitlines() == [
        "USE ROLE SECURITYADMIN;",
        "REVOKE SELECT ON TABLE ANALYTICS.MARTS.FCT_INVOICES FROM ROLE LOADER;",
        "REVOKE ROLE SYSADMIN FROM USER CDC_LOADER;",
    ]


def test_a_broken_access_file_names_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "access.yaml"
    path.write_text("warehouses:\n  - {name: W, monthly_credit_quota: 0, used_by: [loader]}\n")
    with pytest.raises(ConfigError, match=r"warehouses\.0\.monthly_credit_quota"):
        load_access_spec(path)
