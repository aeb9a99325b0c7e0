"""The desired Snowflake state: ``include/config/access.yaml`` (validated) plus the source YAMLs.

The access file says what the sources cannot: role names, warehouses with their size, auto-suspend
and monthly credit quota, the service users, dbt's schemas and where the PII tag lives. Everything
else is derived from each source's ``target`` (database, STAGING/RAW/CONTROL, stage) and its
tables' ``pii_columns``, so a new source or a new PII column is one YAML edit. :func:`desired_state`
turns both into plain facts (:class:`State`) that :mod:`.plan` compares with an account's
(:mod:`.live`); nothing here opens a connection.

Role model (why each grant exists is said where it is made, in :func:`desired_state`):

* ``loader`` — the CDC pipeline: USAGE + CREATE TABLE in STAGING, RAW and CONTROL, READ/WRITE on the
  stage, APPLY on the PII tag (it creates raw tables with their tags); nothing in the dbt schemas.
* ``transformer`` — dbt: reads RAW (current and future tables), owns STAGING_DBT and MARTS; it
  inherits ``pii_reader`` so the marts it builds carry PII in clear (and tagged, so masked again
  for readers).
* ``reader`` — MARTS only (current and future tables and views); PII masked.
* ``pii_reader`` — ``reader`` plus PII in clear (the masking policy's exception for people; the
  other is a session whose primary role is ``loader``, which copies raw rows into history:
  :func:`policy_body`).

``SYSADMIN`` inherits ``loader`` and ``reader`` (Snowflake's advice: custom roles roll up to
SYSADMIN) but not ``transformer`` or ``pii_reader``: administrators see PII masked unless they are
granted ``pii_reader`` by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from include.cdc_pipeline.config import PiiCategory, SourceConfig
from include.cdc_pipeline.errors import ConfigError

_SF_IDENT = r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$"
Name = Annotated[str, Field(pattern=_SF_IDENT)]
# Snowflake's system roles the statements run as (docs.snowflake.com/en/user-guide/security-access-control-overview).
SYSADMIN, SECURITYADMIN, ACCOUNTADMIN = "SYSADMIN", "SECURITYADMIN", "ACCOUNTADMIN"
PII_TAG = "PII"
# Types a tag-based masking policy covers: Snowflake applies a tag's policy to a column only when the
# policy's signature type matches the column's (one policy per type and tag). Text shows the masked
# value, every other type NULL.
MASKED_TYPES = ("STRING", "NUMBER", "FLOAT", "DATE", "TIMESTAMP_NTZ", "TIMESTAMP_TZ", "BINARY", "BOOLEAN")


class RoleKey(StrEnum):
    LOADER = "loader"
    TRANSFORMER = "transformer"
    READER = "reader"
    PII_READER = "pii_reader"


class WarehouseSize(StrEnum):
    XSMALL = "XSMALL"
    SMALL = "SMALL"
    MEDIUM = "MEDIUM"
    LARGE = "LARGE"
    XLARGE = "XLARGE"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Roles(_Strict):
    loader: Name = "LOADER"
    transformer: Name = "TRANSFORMER"
    reader: Name = "READER"
    pii_reader: Name = "PII_READER"

    def name(self, key: RoleKey) -> str:
        return str(getattr(self, key.value)).upper()


class WarehouseSpec(_Strict):
    name: Name
    size: WarehouseSize = WarehouseSize.XSMALL
    auto_suspend_seconds: int = Field(default=60, ge=60, description="Snowflake bills at least 60 s per resume.")
    monthly_credit_quota: int = Field(gt=0)
    used_by: list[RoleKey] = Field(min_length=1)

    @property
    def monitor(self) -> str:
        return f"{self.name.upper()}_MONITOR"


class Triggers(_Strict):
    notify: int = Field(default=75, gt=0, le=1000)
    suspend: int = Field(default=90, gt=0, le=1000)
    suspend_immediate: int = Field(default=100, gt=0, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Triggers:
        if not self.notify < self.suspend <= self.suspend_immediate:
            raise ValueError("monitor_triggers must satisfy notify < suspend <= suspend_immediate")
        return self


class UserSpec(_Strict):
    name: Name
    role: RoleKey
    default_warehouse: Name


class AccessSpec(_Strict):
    """``include/config/access.yaml``."""

    dbt_schemas: list[Name] = Field(default_factory=lambda: ["STAGING_DBT", "MARTS"], min_length=1)
    marts_schema: Name = "MARTS"
    governance_schema: Name = "GOVERNANCE"
    masked_value: str = Field(default="***MASKED***", pattern=r"^[^'\\]*$")
    roles: Roles = Roles()
    warehouses: list[WarehouseSpec] = Field(min_length=1)
    monitor_triggers: Triggers = Triggers()
    users: list[UserSpec] = Field(default_factory=list)
    check_conn_id: str | None = Field(
        default=None,
        description="Airflow connection the preflight reads the account's grants with (SHOW GRANTS / USERS / "
        "RESOURCE MONITORS need a role such as SECURITYADMIN that LOADER is not). Unset: the source's own "
        "Snowflake connection (the local stack's SYSADMIN).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AccessSpec:
        if self.marts_schema.upper() not in {s.upper() for s in self.dbt_schemas}:
            raise ValueError(f"marts_schema {self.marts_schema} must be one of dbt_schemas")
        names = [self.roles.name(k) for k in RoleKey]
        if len(set(names)) != len(names):
            raise ValueError(f"roles must be four different names, got {names}")
        warehouses = {w.name.upper() for w in self.warehouses}
        for user in self.users:
            if user.default_warehouse.upper() not in warehouses:
                raise ValueError(f"user {user.name}: default_warehouse {user.default_warehouse} is not in warehouses")
        for key in (RoleKey.LOADER, RoleKey.TRANSFORMER, RoleKey.READER):
            if not any(key in w.used_by for w in self.warehouses):
                raise ValueError(f"no warehouse is used_by {key.value}: that role could run no query")
        return self


def access_file() -> Path:
    """``include/config/access.yaml``; ``CDC_ACCESS_FILE`` overrides it (tests, other deployments)."""
    override = os.environ.get("CDC_ACCESS_FILE")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "config" / "access.yaml"


def load_access_spec(path: Path | None = None) -> AccessSpec:
    """Read and validate the access file; ConfigError names the file and field."""
    path = path or access_file()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return AccessSpec.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        lines = [f"{path}: invalid access spec ({exc.error_count()} error(s))"]
        lines += [f"  - {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


# -- the facts of a state -------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Grant:
    """``privilege`` on one object (``on``: DATABASE, SCHEMA, WAREHOUSE, STAGE, TAG, TABLE, VIEW) to a role.
    ``name`` is fully qualified and upper-case (``ANALYTICS.RAW``)."""

    privilege: str
    on: str
    name: str
    role: str


@dataclass(frozen=True, order=True)
class FutureGrant:
    """``privilege`` on the ``object_type`` objects (TABLE, VIEW) of ``schema`` (``DB.SCHEMA``): the future
    ones (``GRANT … ON FUTURE …``) and those already there (``GRANT … ON ALL …``)."""

    privilege: str
    object_type: str
    schema: str
    role: str


@dataclass(frozen=True, order=True)
class RoleGrant:
    """Role ``role`` granted to a role or a user (``grantee_type`` ROLE | USER)."""

    role: str
    grantee_type: str
    grantee: str


@dataclass(frozen=True)
class Warehouse:
    name: str
    size: str
    auto_suspend: int
    monitor: str | None


@dataclass(frozen=True)
class Monitor:
    name: str
    credit_quota: int
    notify: int
    suspend: int
    suspend_immediate: int


@dataclass(frozen=True)
class User:
    name: str
    default_role: str
    default_warehouse: str


@dataclass(frozen=True)
class MaskingPolicy:
    name: str  # DB.SCHEMA.NAME
    data_type: str
    body: str


@dataclass(frozen=True, order=True)
class ColumnTag:
    """A PII tag value on one column of a raw or history table (names as Snowflake stores them)."""

    database: str
    schema: str
    table: str
    column: str
    value: str


@dataclass
class State:
    """Everything :mod:`.plan` compares; :func:`desired_state` builds the wanted one, :mod:`.live`
    reads an account's. Sets of frozen facts compare by value."""

    roles: set[str] = field(default_factory=set)
    databases: set[str] = field(default_factory=set)
    schemas: set[str] = field(default_factory=set)  # DB.SCHEMA
    stages: set[str] = field(default_factory=set)  # DB.SCHEMA.STAGE (internal stages the spec creates)
    warehouses: dict[str, Warehouse] = field(default_factory=dict)
    monitors: dict[str, Monitor] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    schema_owners: dict[str, str] = field(default_factory=dict)  # DB.SCHEMA -> role
    grants: set[Grant] = field(default_factory=set)
    future_grants: set[FutureGrant] = field(default_factory=set)
    role_grants: set[RoleGrant] = field(default_factory=set)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # DB.SCHEMA.TAG -> allowed values
    policies: dict[str, MaskingPolicy] = field(default_factory=dict)
    tag_policies: set[tuple[str, str]] = field(default_factory=set)  # (tag, policy)
    column_tags: set[ColumnTag] = field(default_factory=set)
    # Not compared as facts: what the state was derived from, and (live) the tables found.
    managed_roles: tuple[str, ...] = ()
    tables: set[tuple[str, str, str, str]] = field(default_factory=set)  # (db, schema, name, TABLE | VIEW)
    pii_tables: dict[tuple[str, str, str], dict[str, str]] = field(
        default_factory=dict
    )  # (db, schema, table) -> column -> value


def pii_tag(database: str, spec: AccessSpec) -> str:
    return f"{database.upper()}.{spec.governance_schema.upper()}.{PII_TAG}"


def policy_body(spec: AccessSpec, data_type: str) -> str:
    """The masking policy's body: the value in clear in a session where the PII reader role is active
    (directly or inherited, ``IS_ROLE_IN_SESSION``) or whose primary role is the loader
    (``CURRENT_ROLE``), else the masked value (text) or NULL.

    The loader must read raw PII in clear because it copies raw rows into history (a re-snapshot's
    deletes): masked there, the values would be lost for good. That shows it nothing new — it reads
    every PII value from SQL Server and writes it through its stage and STAGING. ``CURRENT_ROLE``,
    not ``IS_ROLE_IN_SESSION``, because SYSADMIN inherits the loader and must still see PII masked."""
    masked = f"'{spec.masked_value}'" if data_type == "STRING" else "NULL"
    r = spec.roles
    return (
        f"CASE WHEN IS_ROLE_IN_SESSION('{r.pii_reader.upper()}') OR CURRENT_ROLE() = '{r.loader.upper()}'"
        f" THEN val ELSE {masked} END"
    )


def pii_columns(source: SourceConfig) -> dict[str, dict[str, str]]:
    """Raw table name -> Snowflake column -> PII category, for the source's tables with PII."""
    return {
        t.snowflake_table: {t.snowflake_column(c): category.value for c, category in t.pii_columns.items()}
        for t in source.tables
        if t.pii_columns
    }


def desired_state(spec: AccessSpec, sources: Sequence[SourceConfig]) -> State:
    """The state the account should have for ``spec`` and every source (one database per target)."""
    r = spec.roles
    loader, transformer, reader, pii_reader = (r.name(k) for k in RoleKey)
    s = State(roles={loader, transformer, reader, pii_reader}, managed_roles=(loader, transformer, reader, pii_reader))
    # Custom roles roll up to SYSADMIN, except those that see PII in clear (module docstring).
    s.role_grants |= {
        RoleGrant(loader, "ROLE", SYSADMIN),
        RoleGrant(reader, "ROLE", SYSADMIN),
        RoleGrant(reader, "ROLE", pii_reader),
        # dbt copies raw values into mart tables: it must read them in clear (and tags them again).
        RoleGrant(pii_reader, "ROLE", transformer),
    }
    for w in spec.warehouses:
        name = w.name.upper()
        s.warehouses[name] = Warehouse(name, w.size.value, w.auto_suspend_seconds, w.monitor)
        t = spec.monitor_triggers
        s.monitors[w.monitor] = Monitor(w.monitor, w.monthly_credit_quota, t.notify, t.suspend, t.suspend_immediate)
        for key in w.used_by:
            s.grants.add(Grant("USAGE", "WAREHOUSE", name, r.name(key)))
    for u in spec.users:
        name, role = u.name.upper(), r.name(u.role)
        s.users[name] = User(name, role, u.default_warehouse.upper())
        s.role_grants.add(RoleGrant(role, "USER", name))
    for database, targets in _by_database(sources).items():
        _database_facts(s, spec, database, targets)
    return s


def _by_database(sources: Iterable[SourceConfig]) -> dict[str, list[SourceConfig]]:
    out: dict[str, list[SourceConfig]] = {}
    for source in sources:
        out.setdefault(source.target.database.upper(), []).append(source)
    return out


def _database_facts(s: State, spec: AccessSpec, db: str, sources: list[SourceConfig]) -> None:
    r = spec.roles
    loader, transformer, reader = (r.name(k) for k in (RoleKey.LOADER, RoleKey.TRANSFORMER, RoleKey.READER))
    governance = f"{db}.{spec.governance_schema.upper()}"
    marts = f"{db}.{spec.marts_schema.upper()}"
    s.databases.add(db)
    s.schemas.add(governance)
    for role in (loader, transformer, reader):
        s.grants.add(Grant("USAGE", "DATABASE", db, role))
    for source in sources:
        t = source.target
        staging, raw, control = (f"{db}.{x.upper()}" for x in (t.staging_schema, t.raw_schema, t.control_schema))
        for schema in (staging, raw, control):
            s.schemas.add(schema)
            # The pipeline creates (and so owns) its staging, raw and control tables.
            s.grants |= {Grant("USAGE", "SCHEMA", schema, loader), Grant("CREATE TABLE", "SCHEMA", schema, loader)}
        stage = f"{staging}.{t.stage.upper()}"
        if t.azure_stage is None:
            s.stages.add(stage)
            s.grants |= {Grant("READ", "STAGE", stage, loader), Grant("WRITE", "STAGE", stage, loader)}
        else:  # an external stage an administrator creates over the container (README)
            s.grants.add(Grant("USAGE", "STAGE", stage, loader))
        # dbt reads every raw and history table, present and future.
        s.grants.add(Grant("USAGE", "SCHEMA", raw, transformer))
        s.future_grants.add(FutureGrant("SELECT", "TABLE", raw, transformer))
        for table, columns in pii_columns(source).items():
            for name in (table, f"{table}_HISTORY"):
                s.pii_tables[(db, t.raw_schema.upper(), name)] = columns
    for schema in spec.dbt_schemas:
        s.schemas.add(f"{db}.{schema.upper()}")
        s.schema_owners[f"{db}.{schema.upper()}"] = transformer
    s.grants.add(Grant("USAGE", "SCHEMA", marts, reader))
    s.future_grants |= {FutureGrant("SELECT", kind, marts, reader) for kind in ("TABLE", "VIEW")}
    # The PII tag and its masking policies; the loader and dbt set the tag on the columns they create.
    tag = pii_tag(db, spec)
    s.tags[tag] = tuple(c.value for c in PiiCategory)
    for role in (loader, transformer):
        s.grants |= {Grant("USAGE", "SCHEMA", governance, role), Grant("APPLY", "TAG", tag, role)}
    for data_type in MASKED_TYPES:
        policy = f"{governance}.PII_MASK_{data_type}"
        s.policies[policy] = MaskingPolicy(policy, data_type, policy_body(spec, data_type))
        s.tag_policies.add((tag, policy))
