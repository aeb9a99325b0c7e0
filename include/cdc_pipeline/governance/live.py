"""An account's Snowflake state, read with ``SHOW``/``DESCRIBE`` and information-schema queries.

Reads only what :func:`.spec.desired_state` can want: the managed roles' privileges, future
grants, grantees and the spec's users, warehouses, resource monitors, databases, schemas and
stages of the source targets, the PII tag with its masking policies, and the PII tags on the
columns of the raw and history tables. Columns are read by the names Snowflake documents for each
``SHOW`` output (docs.snowflake.com/en/sql-reference/sql/show-grants, show-warehouses,
show-resource-monitors, show-users, show-tags, desc-masking-policy; the table functions
``TAG_REFERENCES_ALL_COLUMNS`` and ``POLICY_REFERENCES``). Run it as a role that may see all of
that (ACCOUNTADMIN, or SECURITYADMIN plus SYSADMIN's objects).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from include.cdc_pipeline.governance.spec import (
    ColumnTag,
    FutureGrant,
    Grant,
    MaskingPolicy,
    Monitor,
    RoleGrant,
    State,
    User,
    Warehouse,
)
from include.cdc_pipeline.sql import sf_ident, sf_table

# Object kinds of SHOW GRANTS whose grants the plan compares (others, e.g. ownership of a table a
# role created, are the role's own business).
COMPARED_ON = frozenset({"DATABASE", "SCHEMA", "WAREHOUSE", "STAGE", "TAG", "TABLE", "VIEW"})


def query(connection: Any, sql: str) -> list[dict[str, Any]]:
    """Rows of one statement as dicts keyed by lower-case column name."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        if not cursor.description:
            return []
        names = [str(d[0]).lower() for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def unquote_name(name: str) -> str:
    """``ANALYTICS."RAW"."A B"`` as SHOW GRANTS prints it -> ``ANALYTICS.RAW.A B`` (quotes dropped)."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^.]+)', name)
    return ".".join(q.replace('""', '"') if q else p for q, p in parts)


def _percent(value: Any) -> int | None:
    """``75%`` (SHOW RESOURCE MONITORS) -> 75; empty -> None."""
    text = str(value or "").strip().rstrip("%")
    return int(float(text)) if text else None


def _size(value: Any) -> str:
    """``X-Small`` (SHOW WAREHOUSES) -> ``XSMALL``, the CREATE WAREHOUSE spelling."""
    return str(value or "").upper().replace("-", "")


def read_state(connection: Any, wanted: State) -> State:
    """The account's state for everything ``wanted`` names (absent objects are simply missing)."""
    live = State(managed_roles=wanted.managed_roles, pii_tables=wanted.pii_tables)
    live.roles = {row["name"] for row in query(connection, "SHOW ROLES")} & wanted.roles
    for role in sorted(live.roles):
        _read_role(connection, live, role)
    for user in sorted(wanted.users):
        _read_user(connection, live, user)
    for name in sorted(wanted.warehouses):
        for row in query(connection, f"SHOW WAREHOUSES LIKE {_literal(name)}"):
            if row["name"] == name:
                monitor = row.get("resource_monitor")
                live.warehouses[name] = Warehouse(
                    name,
                    _size(row["size"]),
                    int(row["auto_suspend"] or 0),
                    None if monitor in (None, "", "null") else monitor,
                )
    for name in sorted(wanted.monitors):
        for row in query(connection, f"SHOW RESOURCE MONITORS LIKE {_literal(name)}"):
            if row["name"] == name:
                live.monitors[name] = Monitor(
                    name,
                    int(float(row["credit_quota"] or 0)),
                    _percent(row.get("notify_at")) or 0,
                    _percent(row.get("suspend_at")) or 0,
                    _percent(row.get("suspend_immediately_at")) or 0,
                )
    databases = {row["name"] for row in query(connection, "SHOW DATABASES")}
    live.databases = databases & wanted.databases
    for db in sorted(live.databases):
        _read_database(connection, live, wanted, db)
    return live


def _read_role(connection: Any, live: State, role: str) -> None:
    for row in query(connection, f"SHOW GRANTS TO ROLE {sf_ident(role)}"):
        on, privilege, name = str(row["granted_on"]).upper(), str(row["privilege"]).upper(), unquote_name(row["name"])
        if on == "ROLE" and privilege == "USAGE":
            continue  # inherited roles: read from the other side (SHOW GRANTS OF ROLE)
        if privilege == "OWNERSHIP":
            if on == "SCHEMA":
                live.schema_owners[name] = role
            continue
        if on in COMPARED_ON:
            live.grants.add(Grant(privilege, on, name, role))
    for row in query(connection, f"SHOW FUTURE GRANTS TO ROLE {sf_ident(role)}"):
        # name: DB.SCHEMA.<TABLE> for a schema-level future grant
        container = unquote_name(str(row["name"])).rsplit(".", 1)[0]
        live.future_grants.add(
            FutureGrant(str(row["privilege"]).upper(), str(row["grant_on"]).upper(), container, role)
        )
    for row in query(connection, f"SHOW GRANTS OF ROLE {sf_ident(role)}"):
        live.role_grants.add(RoleGrant(role, str(row["granted_to"]).upper(), str(row["grantee_name"])))


def _read_user(connection: Any, live: State, name: str) -> None:
    for row in query(connection, f"SHOW USERS LIKE {_literal(name)}"):
        if row["name"] == name:
            live.users[name] = User(name, str(row.get("default_role") or ""), str(row.get("default_warehouse") or ""))
            for grant in query(connection, f"SHOW GRANTS TO USER {sf_ident(name)}"):
                live.role_grants.add(RoleGrant(str(grant["role"]), "USER", name))


def _read_database(connection: Any, live: State, wanted: State, db: str) -> None:
    rows = query(connection, f"SELECT SCHEMA_NAME FROM {sf_ident(db)}.INFORMATION_SCHEMA.SCHEMATA")
    live.schemas |= {f"{db}.{row['schema_name']}" for row in rows} & wanted.schemas
    for stage in sorted(s for s in wanted.stages if s.startswith(f"{db}.")):
        _, schema, name = stage.split(".")
        if f"{db}.{schema}" in live.schemas:
            found = query(connection, f"SHOW STAGES LIKE {_literal(name)} IN SCHEMA {sf_table(db, schema)}")
            if any(row["name"] == name for row in found):
                live.stages.add(stage)
    governance = {t.rsplit(".", 1)[0] for t in wanted.tags if t.startswith(f"{db}.")}
    for schema in sorted(governance & live.schemas):
        _read_governance(connection, live, wanted, schema)
    # Existing tables (their grants come from SHOW GRANTS TO ROLE; PII tags are read per table).
    schemas = {f.schema for f in wanted.future_grants} | {f"{d}.{s}" for d, s, _ in wanted.pii_tables}
    schemas = {s for s in schemas if s.startswith(f"{db}.") and s in live.schemas}
    if schemas:
        names = ", ".join(_literal(s.split(".", 1)[1]) for s in sorted(schemas))
        rows = query(
            connection,
            f"SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM {sf_ident(db)}.INFORMATION_SCHEMA.TABLES"
            f" WHERE TABLE_SCHEMA IN ({names})",
        )
        for row in rows:
            kind = "VIEW" if "VIEW" in str(row["table_type"]).upper() else "TABLE"
            live.tables.add((db, row["table_schema"], row["table_name"], kind))
    for key in sorted(k for k in wanted.pii_tables if k[0] == db):
        if (*key, "TABLE") in live.tables:
            live.column_tags |= set(_column_tags(connection, key, wanted.tags))


def _column_tags(connection: Any, table: tuple[str, str, str], tags: Iterable[str]) -> list[ColumnTag]:
    db, schema, name = table
    rows = query(
        connection,
        f"SELECT COLUMN_NAME, TAG_DATABASE, TAG_SCHEMA, TAG_NAME, TAG_VALUE FROM TABLE({sf_ident(db)}."
        f"INFORMATION_SCHEMA.TAG_REFERENCES_ALL_COLUMNS({_literal(sf_table(db, schema, name))}, 'table'))",
    )
    wanted = set(tags)
    return [
        ColumnTag(db, schema, name, row["column_name"], row["tag_value"])
        for row in rows
        if f"{row['tag_database']}.{row['tag_schema']}.{row['tag_name']}" in wanted
    ]


def _read_governance(connection: Any, live: State, wanted: State, schema: str) -> None:
    db_schema = sf_table(*schema.split("."))
    for row in query(connection, f"SHOW TAGS IN SCHEMA {db_schema}"):
        tag = f"{schema}.{row['name']}"
        if tag in wanted.tags:
            allowed = json.loads(row["allowed_values"]) if row.get("allowed_values") else []
            live.tags[tag] = tuple(allowed)
    for row in query(connection, f"SHOW MASKING POLICIES IN SCHEMA {db_schema}"):
        policy = f"{schema}.{row['name']}"
        if policy not in wanted.policies:
            continue
        (desc,) = query(connection, f"DESCRIBE MASKING POLICY {sf_table(*policy.split('.'))}")
        signature = str(desc["signature"]).strip("()").split()
        live.policies[policy] = MaskingPolicy(policy, signature[-1].upper() if signature else "", str(desc["body"]))
    for tag in sorted(t for t in live.tags if t.startswith(f"{schema}.")):
        rows = query(
            connection,
            f"SELECT POLICY_DB, POLICY_SCHEMA, POLICY_NAME FROM TABLE({sf_ident(schema.split('.')[0])}."
            f"INFORMATION_SCHEMA.POLICY_REFERENCES(REF_ENTITY_NAME => {_literal(tag)}, REF_ENTITY_DOMAIN => 'tag'))",
        )
        live.tag_policies |= {(tag, f"{r['policy_db']}.{r['policy_schema']}.{r['policy_name']}") for r in rows}
