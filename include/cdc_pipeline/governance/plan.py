"""Compare the desired state with an account's and render the statements that close the gap.

Every statement is idempotent on its own (``IF NOT EXISTS``, GRANT/REVOKE, ``ALTER … SET``) and
only what differs is planned, so applying a plan twice runs nothing the second time: the second
plan is empty. Each statement names the system role it runs as (Snowflake's split of duties:
SECURITYADMIN for roles, users and grants, SYSADMIN for databases, schemas, stages and
warehouses, ACCOUNTADMIN for resource monitors, the PII tag and masking policies, which need
account-level privileges); :func:`apply` switches with ``USE ROLE``.

The managed roles are owned by the spec: a privilege or future grant they hold on its databases or
warehouses, or a role membership, that the spec does not list is revoked, as is a role granted to a
spec user other than its own.
Roles granted to people (e.g. PII_READER to an analyst) are left alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from include.cdc_pipeline.governance.spec import (
    ACCOUNTADMIN,
    SECURITYADMIN,
    SYSADMIN,
    ColumnTag,
    FutureGrant,
    Grant,
    RoleGrant,
    State,
)
from include.cdc_pipeline.sql import sf_ident, sf_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Statement:
    role: str  # the system role that runs it
    sql: str


@dataclass
class Plan:
    statements: list[Statement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what cannot be done yet (e.g. a table not loaded yet)

    def add(self, role: str, sql: str) -> None:
        self.statements.append(Statement(role, sql))

    @property
    def empty(self) -> bool:
        return not self.statements


_PLAIN = re.compile(r"^[A-Z_][A-Z0-9_$]*$")


def _id(name: str) -> str:
    """A name of the spec (validated, upper-case) as is; anything else quoted (``sql.sf_ident``)."""
    return name if _PLAIN.match(name) else sf_ident(name)


def _q(name: str) -> str:
    """A dotted name of the spec (``ANALYTICS.RAW``), part by part as :func:`_id`."""
    return ".".join(_id(part) for part in name.split("."))


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def grant_sql(g: Grant) -> str:
    return f"GRANT {g.privilege} ON {g.on} {_q(g.name)} TO ROLE {_id(g.role)}"


def future_sql(f: FutureGrant, scope: str = "FUTURE") -> str:
    return f"GRANT {f.privilege} ON {scope} {f.object_type}S IN SCHEMA {_q(f.schema)} TO ROLE {_id(f.role)}"


def role_grant_sql(r: RoleGrant) -> str:
    return f"GRANT ROLE {_id(r.role)} TO {r.grantee_type} {_id(r.grantee)}"


def column_tag_sql(c: ColumnTag, tag: str) -> str:
    table = sf_table(c.database, c.schema, c.table)
    return f"ALTER TABLE {table} MODIFY COLUMN {sf_ident(c.column)} SET TAG {_q(tag)} = {_string(c.value)}"


def make_plan(wanted: State, live: State) -> Plan:
    """The statements that turn ``live`` into ``wanted``, in dependency order."""
    plan = Plan()
    for role in sorted(wanted.roles - live.roles):
        plan.add(SECURITYADMIN, f"CREATE ROLE IF NOT EXISTS {_id(role)}")
    for db in sorted(wanted.databases - live.databases):
        plan.add(SYSADMIN, f"CREATE DATABASE IF NOT EXISTS {_id(db)}")
    for schema in sorted(wanted.schemas - live.schemas):
        plan.add(SYSADMIN, f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
    for stage in sorted(wanted.stages - live.stages):
        plan.add(SYSADMIN, f"CREATE STAGE IF NOT EXISTS {_q(stage)}")
    _warehouses(plan, wanted, live)
    _governance_objects(plan, wanted, live)
    for name, user in sorted(wanted.users.items()):
        have = live.users.get(name)
        if have is None:
            plan.add(
                SECURITYADMIN,
                f"CREATE USER IF NOT EXISTS {_id(name)} TYPE = SERVICE DEFAULT_ROLE = {_id(user.default_role)}"
                f" DEFAULT_WAREHOUSE = {_id(user.default_warehouse)}",
            )
        elif have != user:
            plan.add(
                SECURITYADMIN,
                f"ALTER USER {_id(name)} SET DEFAULT_ROLE = {_id(user.default_role)}"
                f" DEFAULT_WAREHOUSE = {_id(user.default_warehouse)}",
            )
    for schema, owner in sorted(wanted.schema_owners.items()):
        if live.schema_owners.get(schema) != owner:
            # COPY CURRENT GRANTS keeps the other roles' grants on the schema.
            plan.add(SECURITYADMIN, f"GRANT OWNERSHIP ON SCHEMA {_q(schema)} TO ROLE {_id(owner)} COPY CURRENT GRANTS")
    for rg in sorted(wanted.role_grants - live.role_grants):
        plan.add(SECURITYADMIN, role_grant_sql(rg))
    for g in sorted(wanted.grants - live.grants):
        plan.add(SECURITYADMIN, grant_sql(g))
    for f in sorted(wanted.future_grants - live.future_grants):
        plan.add(SECURITYADMIN, future_sql(f))
    for f in sorted(wanted.future_grants):
        if _existing_without(f, live):
            plan.add(SECURITYADMIN, future_sql(f, "ALL"))
    _column_tags(plan, wanted, live)
    _revokes(plan, wanted, live)
    return plan


def _warehouses(plan: Plan, wanted: State, live: State) -> None:
    for name, wh in sorted(wanted.warehouses.items()):
        have = live.warehouses.get(name)
        if have is None:
            plan.add(
                SYSADMIN,
                f"CREATE WAREHOUSE IF NOT EXISTS {_id(name)} WAREHOUSE_SIZE = {wh.size}"
                f" AUTO_SUSPEND = {wh.auto_suspend} AUTO_RESUME = TRUE INITIALLY_SUSPENDED = TRUE",
            )
        elif (have.size, have.auto_suspend) != (wh.size, wh.auto_suspend):
            plan.add(
                SYSADMIN, f"ALTER WAREHOUSE {_id(name)} SET WAREHOUSE_SIZE = {wh.size} AUTO_SUSPEND = {wh.auto_suspend}"
            )
    for name, m in sorted(wanted.monitors.items()):
        triggers = (
            f"TRIGGERS ON {m.notify} PERCENT DO NOTIFY ON {m.suspend} PERCENT DO SUSPEND"
            f" ON {m.suspend_immediate} PERCENT DO SUSPEND_IMMEDIATE"
        )
        have_m = live.monitors.get(name)
        if have_m is None:
            plan.add(
                ACCOUNTADMIN,
                f"CREATE RESOURCE MONITOR IF NOT EXISTS {_id(name)} WITH CREDIT_QUOTA = {m.credit_quota}"
                f" FREQUENCY = MONTHLY START_TIMESTAMP = IMMEDIATELY {triggers}",
            )
        elif have_m != m:
            plan.add(ACCOUNTADMIN, f"ALTER RESOURCE MONITOR {_id(name)} SET CREDIT_QUOTA = {m.credit_quota} {triggers}")
    for name, wh in sorted(wanted.warehouses.items()):
        have = live.warehouses.get(name)
        if wh.monitor and (have is None or have.monitor != wh.monitor):
            plan.add(ACCOUNTADMIN, f"ALTER WAREHOUSE {_id(name)} SET RESOURCE_MONITOR = {_id(wh.monitor)}")


def _governance_objects(plan: Plan, wanted: State, live: State) -> None:
    for tag, allowed in sorted(wanted.tags.items()):
        values = ", ".join(_string(v) for v in allowed)
        if tag not in live.tags:
            plan.add(ACCOUNTADMIN, f"CREATE TAG IF NOT EXISTS {_q(tag)} ALLOWED_VALUES {values}")
        elif missing := [v for v in allowed if v not in live.tags[tag]]:
            plan.add(ACCOUNTADMIN, f"ALTER TAG {_q(tag)} ADD ALLOWED_VALUES {', '.join(_string(v) for v in missing)}")
    for name, policy in sorted(wanted.policies.items()):
        have = live.policies.get(name)
        if have is None:
            plan.add(
                ACCOUNTADMIN,
                f"CREATE MASKING POLICY IF NOT EXISTS {_q(name)} AS (val {policy.data_type})"
                f" RETURNS {policy.data_type} -> {policy.body}",
            )
        elif " ".join(have.body.split()) != " ".join(policy.body.split()):
            plan.add(ACCOUNTADMIN, f"ALTER MASKING POLICY {_q(name)} SET BODY -> {policy.body}")
    for tag, bound in sorted(live.tag_policies - wanted.tag_policies):
        plan.add(ACCOUNTADMIN, f"ALTER TAG {_q(tag)} UNSET MASKING POLICY {_q(bound)}")
    for tag, bound in sorted(wanted.tag_policies - live.tag_policies):
        plan.add(ACCOUNTADMIN, f"ALTER TAG {_q(tag)} SET MASKING POLICY {_q(bound)}")


def _existing_without(f: FutureGrant, live: State) -> bool:
    """An existing table (view) of the schema on which the role lacks the privilege."""
    db, schema = f.schema.split(".")
    have = {g.name for g in live.grants if (g.privilege, g.on, g.role) == (f.privilege, f.object_type, f.role)}
    return any(
        (d, s, kind) == (db, schema, f.object_type) and f"{db}.{schema}.{name}" not in have
        for d, s, name, kind in live.tables
    )


def _covered(g: Grant, wanted: State) -> bool:
    """A table/view grant the spec wants through a schema-level (future + all) grant."""
    if g.on not in ("TABLE", "VIEW"):
        return g in wanted.grants
    schema = g.name.rsplit(".", 1)[0]
    return FutureGrant(g.privilege, g.on, schema, g.role) in wanted.future_grants


def _tag_of(c: ColumnTag, wanted: State) -> str:
    return next(t for t in wanted.tags if t.startswith(f"{c.database}."))


def _column_tags(plan: Plan, wanted: State, live: State) -> None:
    for (db, schema, table), columns in sorted(wanted.pii_tables.items()):
        if (db, schema, table, "TABLE") not in live.tables:
            plan.notes.append(
                f"{db}.{schema}.{table} does not exist yet: the pipeline tags its PII columns when it creates it "
                "(once this plan is applied and the tag exists)"
            )
            continue
        for column, value in sorted(columns.items()):
            c = ColumnTag(db, schema, table, column, value)
            if c not in live.column_tags:
                plan.add(ACCOUNTADMIN, column_tag_sql(c, _tag_of(c, wanted)))
    wanted_keys = {(db, s, t, col) for (db, s, t), cols in wanted.pii_tables.items() for col in cols}
    for c in sorted(live.column_tags):
        if (c.database, c.schema, c.table, c.column) not in wanted_keys:
            tag = _tag_of(c, wanted)
            table = sf_table(c.database, c.schema, c.table)
            plan.add(ACCOUNTADMIN, f"ALTER TABLE {table} MODIFY COLUMN {sf_ident(c.column)} UNSET TAG {_q(tag)}")


def _in_scope(g: Grant, wanted: State) -> bool:
    """An object of the spec: in one of its databases, or one of its warehouses (other databases'
    grants of the same roles belong to whoever manages those)."""
    if g.on == "WAREHOUSE":
        return g.name in wanted.warehouses
    return g.name.split(".")[0] in wanted.databases


def _revokes(plan: Plan, wanted: State, live: State) -> None:
    for g in sorted(live.grants):
        if g.role in wanted.managed_roles and _in_scope(g, wanted) and not _covered(g, wanted):
            plan.add(SECURITYADMIN, f"REVOKE {g.privilege} ON {g.on} {_q(g.name)} FROM ROLE {_id(g.role)}")
    for f in sorted(live.future_grants - wanted.future_grants):
        if f.role in wanted.managed_roles and f.schema.split(".")[0] in wanted.databases:
            scope = f"FUTURE {f.object_type}S IN SCHEMA {_q(f.schema)}"
            plan.add(SECURITYADMIN, f"REVOKE {f.privilege} ON {scope} FROM ROLE {_id(f.role)}")
    for rg in sorted(live.role_grants - wanted.role_grants):
        managed = rg.grantee in wanted.users if rg.grantee_type == "USER" else rg.role in wanted.managed_roles
        if managed and rg.role != "PUBLIC":
            plan.add(SECURITYADMIN, f"REVOKE ROLE {_id(rg.role)} FROM {rg.grantee_type} {_id(rg.grantee)}")


def render(plan: Plan) -> str:
    """The plan as SQL text: a ``USE ROLE`` before each run of statements of one role."""
    lines: list[str] = [f"-- note: {note}" for note in plan.notes]
    role = None
    for st in plan.statements:
        if st.role != role:
            role = st.role
            lines.append(f"USE ROLE {role};")
        lines.append(f"{st.sql};")
    if plan.empty:
        lines.append("-- no changes: the account matches the spec")
    return "\n".join(lines)


def apply(connection: Any, statements: Sequence[Statement]) -> int:
    """Run the statements (switching roles as planned); returns how many ran."""
    role = None
    cursor = connection.cursor()
    try:
        for st in statements:
            if st.role != role:
                cursor.execute(f"USE ROLE {st.role}")
                role = st.role
            log.info("%s: %s", st.role, st.sql)
            cursor.execute(st.sql)
    finally:
        cursor.close()
    return len(statements)


def differences(plan: Plan) -> list[str]:
    """Each planned statement as one line (what the preflight names)."""
    return [st.sql for st in plan.statements]
