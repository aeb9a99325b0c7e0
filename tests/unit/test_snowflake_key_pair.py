"""Snowflake key-pair authentication, for the loader's hook and for dbt (Cosmos' profile).

One connection serves both: the key in the extras (``private_key_content``: PEM or base64 of the
PEM; or ``private_key_file``: a path), the connection's password as the key's passphrase when the
key is encrypted. The local Snowflake ignores credentials, so these tests render what would be sent
to Snowflake: the connector's parameters and the dbt profile (with the environment Cosmos gives
dbt), and check the key in them is the key that was configured.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from include.cdc_pipeline.config import config_dir, load_source_config
from include.cdc_pipeline.orchestration.dbt_dag import SnowflakeConnectionProfileMapping, profile_config
from include.cdc_pipeline.snowflake import CdcSnowflakeHook

PASSPHRASE = "throw-away passphrase"
VARIANTS = [
    "pem content, passphrase",
    "base64 content, passphrase",
    "pem content, no passphrase",
    "key file, no passphrase",
]


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey, passphrase: str | None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def _public(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, password: str | None, **extra: Any) -> None:
    conn = {
        "conn_type": "snowflake",
        "login": "LOADER",
        "schema": "RAW",
        "extra": {"account": "xy12345", "database": "ANALYTICS", "warehouse": "LOADING", "role": "LOADER", **extra},
    }
    if password is not None:
        conn["password"] = password
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _key_variants(key: rsa.RSAPrivateKey, tmp_path: Path) -> dict[str, tuple[str | None, dict[str, str]]]:
    """name -> (connection password, key extras)."""
    encrypted = _pem(key, PASSPHRASE)
    plain_file = tmp_path / "rsa_key.p8"
    plain_file.write_text(_pem(key, None))
    return {
        "pem content, passphrase": (PASSPHRASE, {"private_key_content": encrypted}),
        "base64 content, passphrase": (
            PASSPHRASE,
            {"private_key_content": base64.b64encode(encrypted.encode()).decode()},
        ),
        "pem content, no passphrase": (None, {"private_key_content": _pem(key, None)}),
        "key file, no passphrase": (None, {"private_key_file": str(plain_file)}),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_loader_hook_authenticates_with_the_configured_key(
    variant: str, key: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    password, extras = _key_variants(key, tmp_path)[variant]
    _connection(monkeypatch, "sf_key", password, **extras)
    params = CdcSnowflakeHook(snowflake_conn_id="sf_key")._get_conn_params()
    # the connector gets the key (DER, unencrypted in memory) and no password
    sent = serialization.load_der_private_key(params["private_key"], password=None)
    assert _public(sent) == _public(key)
    assert "password" not in params
    assert params["user"] == "LOADER" and params["role"] == "LOADER"


def test_loader_hook_password_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, "sf_pw", "s3cret")
    params = CdcSnowflakeHook(snowflake_conn_id="sf_pw")._get_conn_params()
    assert params["password"] == "s3cret" and "private_key" not in params


def _render(mapping: SnowflakeConnectionProfileMapping) -> tuple[dict[str, Any], dict[str, str]]:
    """The profiles.yml Cosmos writes for dbt (parsed), and the environment it gives dbt."""
    text = mapping.get_profile_file_contents(profile_name="billing", target_name="prod")
    return yaml.safe_load(text)["billing"]["outputs"]["prod"], mapping.env_vars


def _env_value(template: str, env: dict[str, str]) -> str:
    name = template.split("'")[1]  # {{ env_var('NAME') }}
    return env[name]


@pytest.mark.parametrize("variant", VARIANTS)
def test_dbt_profile_authenticates_with_the_configured_key(
    variant: str, key: rsa.RSAPrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password, extras = _key_variants(key, tmp_path)[variant]
    _connection(monkeypatch, "snowflake_default", password, **extras)
    mapping = profile_config(load_source_config(config_dir() / "billing.yaml"), "billing").profile_mapping
    profile, env = _render(mapping)
    assert "password" not in profile
    if "private_key_file" in extras:
        # dbt reads the same file the hook does
        assert profile["private_key_path"] == extras["private_key_file"] and "private_key" not in profile
        pem = Path(profile["private_key_path"]).read_text()
    else:
        # the key reaches dbt as an environment variable, as PEM text, never in profiles.yml
        assert profile["private_key"].startswith("{{ env_var(") and "private_key_path" not in profile
        pem = _env_value(profile["private_key"], env)
        assert pem.startswith("-----BEGIN")
    passphrase = _env_value(profile["private_key_passphrase"], env) if "private_key_passphrase" in profile else None
    assert passphrase == password
    loaded = serialization.load_pem_private_key(pem.encode(), password=passphrase.encode() if passphrase else None)
    assert _public(loaded) == _public(key)
    assert (profile["user"], profile["role"], profile["schema"]) == ("LOADER", "LOADER", "MARTS")
    text = mapping.get_profile_file_contents(profile_name="billing", target_name="prod")
    assert "PRIVATE KEY" not in text and PASSPHRASE not in text


def test_dbt_profile_password_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, "snowflake_default", "s3cret")
    mapping = profile_config(load_source_config(config_dir() / "billing.yaml"), "billing").profile_mapping
    profile, env = _render(mapping)
    assert _env_value(profile["password"], env) == "s3cret"
    assert not {"private_key", "private_key_path", "private_key_passphrase"} & profile.keys()


def test_both_key_fields_is_a_clear_error(
    key: rsa.RSAPrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connection(monkeypatch, "snowflake_default", None, private_key_content="x", private_key_file=str(tmp_path / "k"))
    mapping = profile_config(load_source_config(config_dir() / "billing.yaml"), "billing").profile_mapping
    with pytest.raises(ValueError, match="mutually exclusive"):
        _ = mapping.profile


def test_dbt_may_use_its_own_connection_and_role(
    key: rsa.RSAPrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a source whose dbt DAG has a connection and a role of its own,
    text = (config_dir() / "billing.yaml").read_text()
    text = text.replace("snowflake_conn_id: snowflake_default", "snowflake_conn_id: snowflake_default\n"
                        "dbt_snowflake_conn_id: snowflake_dbt\ndbt_role: TRANSFORMER")  # fmt: skip
    (tmp_path / "billing.yaml").write_text(text)
    source = load_source_config(tmp_path / "billing.yaml")
    _connection(monkeypatch, "snowflake_dbt", None, private_key_content=_pem(key, None))
    # the profile reads that connection, with that role;
    profile, env = _render(profile_config(source, "billing").profile_mapping)
    assert profile["role"] == "TRANSFORMER"
    assert _public(serialization.load_pem_private_key(_env_value(profile["private_key"], env).encode(), None)) == (
        _public(key)
    )
    # by default dbt uses the loader's connection and role.
    default = load_source_config(config_dir() / "billing.yaml")
    assert default.dbt_snowflake_conn_id is None and default.dbt_role is None
    assert profile_config(default, "billing").profile_mapping.conn_id == default.snowflake_conn_id
