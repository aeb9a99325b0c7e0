"""Config validation: the shipped files are valid, each broken fixture fails naming file and field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from include.cdc_pipeline.config import (
    ConfigError,
    DeleteMode,
    RetentionGapPolicy,
    load_source_config,
    source_files,
)

BAD = Path(__file__).parent / "fixtures" / "bad"

# fixture file -> (field path that the message must name, words the message must contain)
EXPECTED = {
    "unknown_field.yaml": ("tables.0.primary_keys", "Extra inputs are not permitted"),
    "missing_key.yaml": ("tables.0.primary_key", "Field required"),
    "bad_identifier.yaml": ("tables.0.table", "control character"),
    "hashed_key.yaml": ("tables.0", "hash_columns must not contain primary key"),
    "bad_policy.yaml": ("tables.0.retention_gap_policy", "'fail' or 'resnapshot'"),
    "not_yaml.yaml": ("not_yaml.yaml", "not valid YAML"),
    "duplicate_table.yaml": ("<root>", "two tables share source dbo.accounts"),
    "bad_timezone.yaml": ("source_timezone", "is not an IANA time zone name"),
}


def test_shipped_configs_are_valid() -> None:
    files = source_files()
    assert files, "no source config shipped in include/config/sources"
    for path in files:
        source = load_source_config(path)
        assert source.tables


def test_billing_config_values() -> None:
    # Given the shipped billing config, when loaded, then defaults and overrides resolve per table.
    source = load_source_config(next(p for p in source_files() if p.stem == "billing"))
    assert source.dag_id == "billing_cdc"
    tables = {t.name: t for t in source.tables}
    assert tables["dbo_invoice_lines"].primary_key == ["invoice_id", "line_no"]
    assert source.setting(tables["dbo_accounts"], "delete_mode") is DeleteMode.SOFT
    assert source.setting(tables["dbo_payments"], "retention_gap_policy") is RetentionGapPolicy.RESNAPSHOT
    assert source.setting(tables["dbo_accounts"], "retention_gap_policy") is RetentionGapPolicy.FAIL
    assert source.setting(tables["dbo_accounts"], "freshness_sla") == timedelta(minutes=30)
    assert tables["dbo_accounts"].default_capture_instance == "dbo_accounts"
    assert tables["dbo_accounts"].hash_columns == ["email"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_config_names_file_and_field(name: str) -> None:
    field, words = EXPECTED[name]
    with pytest.raises(ConfigError) as caught:
        load_source_config(BAD / name)
    message = str(caught.value)
    assert str(BAD / name) in message
    assert field in message
    assert words in message


def test_every_bad_fixture_has_an_expectation() -> None:
    assert {p.name for p in BAD.glob("*.yaml")} == set(EXPECTED)
