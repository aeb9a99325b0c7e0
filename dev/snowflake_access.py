"""Access control for the local Snowflake: roles, grants, future grants, users, warehouses, resource
monitors, tags and tag-based masking policies, as far as the access spec and its tests need them.

fakesnow has no access control: every role may do everything and ``GRANT`` is not understood. The
local server (:mod:`dev.snowflake_local`) hands each statement to :meth:`AccessModel.handle` first,
which either answers it (the statements below), refuses it with Snowflake's error, rewrites it
(masking), or lets fakesnow run it. What is modelled, with the Snowflake documentation it follows:

* **Roles and their hierarchy** (``CREATE ROLE``, ``GRANT ROLE r TO ROLE|USER``, ``REVOKE ROLE``;
  security-access-control-overview): a role has the privileges granted to it and to every role
  granted to it. Privileges are enforced only for roles created here with ``CREATE ROLE``; the
  system roles (SYSADMIN, ACCOUNTADMIN, SECURITYADMIN, USERADMIN) and roles never created (as older
  tests log in with) pass every privilege check, as before — but masking applies to them too.
* **Privileges on objects** (``GRANT|REVOKE <privileges> ON DATABASE|SCHEMA|WAREHOUSE|STAGE|TAG|
  TABLE|VIEW``, ``… ON ALL|FUTURE TABLES|VIEWS IN SCHEMA``, ``GRANT OWNERSHIP ON SCHEMA``;
  sql/grant-privilege): a table or view created in a schema gets the schema's future grants, and
  its creator owns it (ownership gives every privilege on it).
* **Checks** (access-control-privileges): referencing an object needs USAGE on its database and
  schema, else ``002003 (02000) SQL compilation error: Schema 'DB.S' does not exist or not
  authorized.``; reading a table needs SELECT (or ownership), else ``Object 'DB.S.T' does not exist
  or not authorized.``; writing (INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY INTO) needs the
  matching privilege, else — when the role sees the table — ``003001 (42501) SQL access control
  error: Insufficient privileges to operate on table 'DB.S.T'``; CREATE TABLE/VIEW needs CREATE
  TABLE/VIEW on the schema (or its ownership), else ``Insufficient privileges to operate on schema
  'S'``. Stage privileges (PUT, LIST, REMOVE) and warehouse USAGE are not checked.
* **Users, warehouses, resource monitors** (sql/create-user, create-warehouse,
  create-resource-monitor): recorded and shown (``SHOW USERS|WAREHOUSES|RESOURCE MONITORS``);
  nothing is metered.
* **Tags and tag-based masking** (user-guide/tag-based-masking-policies): ``CREATE TAG … ALLOWED_VALUES``,
  ``CREATE MASKING POLICY``, ``ALTER TAG … SET|UNSET MASKING POLICY``, ``ALTER TABLE … MODIFY
  COLUMN … SET|UNSET TAG``. A column whose tag carries a policy for the column's type is masked in
  every statement that reads the table (SELECT, CREATE TABLE AS, INSERT … SELECT, MERGE USING):
  the table reference is rewritten to ``(SELECT * REPLACE (<masked> AS col) FROM t) AS t``. Only
  policy bodies of the form ``CASE WHEN IS_ROLE_IN_SESSION('R') [OR CURRENT_ROLE() = 'L'] THEN val
  ELSE <expr> END`` are understood (what the spec renders); ``IS_ROLE_IN_SESSION`` is true for the
  session's role and every role it inherits, ``CURRENT_ROLE()`` is the session's role alone. Not
  modelled: masking through a view (a view reads the table when it is queried, past this rewrite),
  column references qualified with the schema (``RAW.T.C``), tag inheritance from tables or
  schemas, and privileges on SHOW commands.

The catalogue persists as JSON in ``DIR/access.json`` (the server is one process).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_ROLES = frozenset({"ACCOUNTADMIN", "SECURITYADMIN", "USERADMIN", "SYSADMIN", "ORGADMIN", "PUBLIC"})
ACCESS_FILE = "access.json"
CREATED_ON = "2026-01-01 00:00:00.000 -0800"

_N = r'(?:"(?:[^"]|"")*"|[A-Za-z_][\w$]*)'
_QN = rf"{_N}(?:\s*\.\s*{_N}){{0,2}}"
_PRIVS = r"[A-Za-z_ ,]+?"
_I = re.IGNORECASE | re.DOTALL


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(r"^\s*" + pattern + r"\s*;?\s*$", _I)


def split_name(name: str) -> list[str]:
    """``"A b".c`` -> ``['A b', 'C']``: quoted parts as written, unquoted parts upper-cased."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([A-Za-z_][\w$]*)', name)
    return [q.replace('""', '"') if q else p.upper() for q, p in parts]


def show_name(parts: list[str]) -> str:
    """Parts as Snowflake prints a qualified name: plain upper-case parts bare, others quoted."""
    return ".".join(p if re.fullmatch(r"[A-Z_][A-Z0-9_$]*", p) else '"' + p.replace('"', '""') + '"' for p in parts)


@dataclass(frozen=True)
class Session:
    role: str
    database: str | None
    schema: str | None
    user: str | None = None


@dataclass(frozen=True)
class Answer:
    """What the server sends instead of running the statement: rows, an error, or a rewritten statement."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    error: tuple[int, str, str] | None = None
    sql: str | None = None

    @staticmethod
    def ok(message: str = "Statement executed successfully.") -> Answer:
        return Answer(("status",), ((message,),))


def _error(errno: int, sqlstate: str, msg: str) -> Answer:
    return Answer(error=(errno, sqlstate, msg))


def _not_authorized(kind: str, name: str) -> Answer:
    return _error(2003, "02000", f"SQL compilation error:\n{kind} '{name}' does not exist or not authorized.")


def _insufficient(kind: str, name: str) -> Answer:
    return _error(3001, "42501", f"SQL access control error:\nInsufficient privileges to operate on {kind} '{name}'")


_STMTS: list[tuple[str, re.Pattern[str]]] = [
    ("create_role", _rx(rf"CREATE\s+(?:OR\s+REPLACE\s+)?ROLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_N})")),
    ("grant_role", _rx(rf"GRANT\s+ROLE\s+(?P<role>{_N})\s+TO\s+(?P<kind>ROLE|USER)\s+(?P<grantee>{_N})")),
    ("revoke_role", _rx(rf"REVOKE\s+ROLE\s+(?P<role>{_N})\s+FROM\s+(?P<kind>ROLE|USER)\s+(?P<grantee>{_N})")),
    (
        "grant_ownership",
        _rx(
            rf"GRANT\s+OWNERSHIP\s+ON\s+(?P<on>SCHEMA|TABLE|VIEW)\s+(?P<name>{_QN})\s+TO\s+ROLE\s+(?P<role>{_N})(?:\s+(?:COPY|REVOKE)\s+CURRENT\s+GRANTS)?"
        ),
    ),
    (
        "grant_scope",
        _rx(
            rf"(?P<verb>GRANT|REVOKE)\s+(?P<privs>{_PRIVS})\s+ON\s+(?P<scope>ALL|FUTURE)\s+(?P<kind>TABLES|VIEWS)\s+IN\s+SCHEMA\s+(?P<schema>{_QN})\s+(?:TO|FROM)\s+ROLE\s+(?P<role>{_N})"
        ),
    ),
    (
        "grant",
        _rx(
            rf"(?P<verb>GRANT|REVOKE)\s+(?P<privs>{_PRIVS})\s+ON\s+(?P<on>DATABASE|SCHEMA|WAREHOUSE|STAGE|TAG|TABLE|VIEW)\s+(?P<name>{_QN})\s+(?:TO|FROM)\s+ROLE\s+(?P<role>{_N})"
        ),
    ),
    ("create_user", _rx(rf"CREATE\s+(?:OR\s+REPLACE\s+)?USER\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_N})(?P<props>.*)")),
    ("alter_user", _rx(rf"ALTER\s+USER\s+(?:IF\s+EXISTS\s+)?(?P<name>{_N})\s+SET\s+(?P<props>.*)")),
    (
        "create_warehouse",
        _rx(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?WAREHOUSE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_N})(?:\s+WITH)?(?P<props>.*)"
        ),
    ),
    ("alter_warehouse", _rx(rf"ALTER\s+WAREHOUSE\s+(?:IF\s+EXISTS\s+)?(?P<name>{_N})\s+SET\s+(?P<props>.*)")),
    (
        "create_monitor",
        _rx(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?RESOURCE\s+MONITOR\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_N})(?:\s+WITH)?(?P<props>.*)"
        ),
    ),
    ("alter_monitor", _rx(rf"ALTER\s+RESOURCE\s+MONITOR\s+(?:IF\s+EXISTS\s+)?(?P<name>{_N})\s+SET\s+(?P<props>.*)")),
    (
        "create_tag",
        _rx(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?TAG\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_QN})(?:\s+ALLOWED_VALUES\s+(?P<values>.*))?"
        ),
    ),
    ("tag_values", _rx(rf"ALTER\s+TAG\s+(?P<name>{_QN})\s+ADD\s+ALLOWED_VALUES\s+(?P<values>.*)")),
    ("tag_policy", _rx(rf"ALTER\s+TAG\s+(?P<name>{_QN})\s+(?P<verb>SET|UNSET)\s+MASKING\s+POLICY\s+(?P<policy>{_QN})")),
    (
        "create_policy",
        _rx(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?MASKING\s+POLICY\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_QN})\s+AS\s*\(\s*(?P<arg>{_N})\s+(?P<type>[A-Za-z_]+)\s*\)\s+RETURNS\s+(?P<rtype>[A-Za-z_]+)\s*->\s*(?P<body>.*)"
        ),
    ),
    ("alter_policy", _rx(rf"ALTER\s+MASKING\s+POLICY\s+(?P<name>{_QN})\s+SET\s+BODY\s*->\s*(?P<body>.*)")),
    ("describe_policy", _rx(rf"DESC(?:RIBE)?\s+MASKING\s+POLICY\s+(?P<name>{_QN})")),
    (
        "column_tag",
        _rx(
            rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<table>{_QN})\s+(?:MODIFY|ALTER)\s+(?:COLUMN\s+)?(?P<column>{_N})\s+(?P<verb>SET|UNSET)\s+TAG\s+(?P<tag>{_QN})(?:\s*=\s*'(?P<value>(?:[^']|'')*)')?"
        ),
    ),
    ("show_roles", _rx(r"SHOW\s+ROLES(?:\s+LIKE\s+'(?P<like>[^']*)')?")),
    ("show_grants_to_role", _rx(rf"SHOW\s+GRANTS\s+TO\s+ROLE\s+(?P<name>{_N})")),
    (
        "show_future_grants",
        _rx(rf"SHOW\s+FUTURE\s+GRANTS\s+(?:TO\s+ROLE\s+(?P<role>{_N})|IN\s+SCHEMA\s+(?P<schema>{_QN}))"),
    ),
    ("show_grants_of_role", _rx(rf"SHOW\s+GRANTS\s+OF\s+ROLE\s+(?P<name>{_N})")),
    ("show_grants_to_user", _rx(rf"SHOW\s+GRANTS\s+TO\s+USER\s+(?P<name>{_N})")),
    ("show_users", _rx(r"SHOW\s+USERS(?:\s+LIKE\s+'(?P<like>[^']*)')?")),
    ("show_warehouses", _rx(r"SHOW\s+WAREHOUSES(?:\s+LIKE\s+'(?P<like>[^']*)')?")),
    ("show_monitors", _rx(r"SHOW\s+RESOURCE\s+MONITORS(?:\s+LIKE\s+'(?P<like>[^']*)')?")),
    (
        "show_tags",
        _rx(rf"SHOW\s+TAGS(?:\s+LIKE\s+'(?P<like>[^']*)')?\s+IN\s+(?P<level>SCHEMA|DATABASE)\s+(?P<schema>{_QN})"),
    ),
    (
        "show_policies",
        _rx(rf"SHOW\s+MASKING\s+POLICIES(?:\s+LIKE\s+'(?P<like>[^']*)')?\s+IN\s+SCHEMA\s+(?P<schema>{_QN})"),
    ),
    (
        "tag_references",
        _rx(
            rf"SELECT\s+(?P<cols>.+?)\s+FROM\s+TABLE\s*\(\s*(?:{_N}\s*\.\s*)?INFORMATION_SCHEMA\s*\.\s*TAG_REFERENCES_ALL_COLUMNS\s*\(\s*'(?P<table>(?:[^']|'')*)'\s*,\s*'table'\s*\)\s*\)"
        ),
    ),
    (
        "policy_references",
        _rx(
            rf"SELECT\s+(?P<cols>.+?)\s+FROM\s+TABLE\s*\(\s*(?:{_N}\s*\.\s*)?INFORMATION_SCHEMA\s*\.\s*POLICY_REFERENCES\s*\(\s*REF_ENTITY_NAME\s*=>\s*'(?P<name>(?:[^']|'')*)'\s*,\s*REF_ENTITY_DOMAIN\s*=>\s*'tag'\s*\)\s*\)"
        ),
    ),
]
_PROP = re.compile(r"(?P<key>[A-Za-z_]+)\s*=\s*(?P<value>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[^\s,]+)", re.IGNORECASE)
_TRIGGER = re.compile(r"ON\s+(?P<pct>\d+)\s+PERCENT\s+DO\s+(?P<action>SUSPEND_IMMEDIATE|SUSPEND|NOTIFY)", re.IGNORECASE)
_POLICY_BODY = re.compile(
    r"^\s*CASE\s+WHEN\s+IS_ROLE_IN_SESSION\s*\(\s*'(?P<role>[^']+)'\s*\)"
    r"(?:\s+OR\s+CURRENT_ROLE\s*\(\s*\)\s*=\s*'(?P<current>[^']+)')?"
    r"\s+THEN\s+(?P<arg>\w+)\s+ELSE\s+(?P<masked>.+?)\s+END\s*$",
    re.IGNORECASE | re.DOTALL,
)
# Snowflake type families of information_schema.columns.data_type -> masking policy signature type.
_POLICY_TYPE = {"TEXT": "STRING", "VARCHAR": "STRING", "STRING": "STRING", "NUMBER": "NUMBER", "FLOAT": "FLOAT",
                "DATE": "DATE", "TIMESTAMP_NTZ": "TIMESTAMP_NTZ", "TIMESTAMP_TZ": "TIMESTAMP_TZ",
                "BINARY": "BINARY", "BOOLEAN": "BOOLEAN"}  # fmt: skip


# Comments before or after a statement (not inside it: string literals may hold anything).
_COMMENTS = re.compile(r"^(?:\s*(?:/\*.*?\*/|--[^\n]*\n))+|(?:\s*(?:/\*.*?\*/|--[^\n]*))+\s*$", re.DOTALL)
_CREATE_OBJECT = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:LOCAL|GLOBAL)\s+)?(?:TRANSIENT\s+|TEMPORARY\s+|TEMP\s+|SECURE\s+)*"
    rf"(?P<kind>TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_QN})",
    _I,
)


def strip_comments(sql: str) -> str:
    """The statement without the comments (and ``;``) before and after it."""
    while True:
        stripped = _COMMENTS.sub("", sql.strip().rstrip(";").strip())
        if stripped == sql:
            return sql
        sql = stripped


def creates_object(sql: str) -> bool:
    """A CREATE TABLE / VIEW statement (its owner and future grants are recorded once it ran)."""
    return _CREATE_OBJECT.match(strip_comments(sql)) is not None


def _props(text: str) -> dict[str, str]:
    out = {}
    for m in _PROP.finditer(text or ""):
        value = m["value"]
        value = value[1:-1].replace(value[0] * 2, value[0]) if value[0] in "'\"" else value.upper()
        out[m["key"].upper()] = value
    return out


def _strings(text: str | None) -> list[str]:
    return [s.replace("''", "'") for s in re.findall(r"'((?:[^']|'')*)'", text or "")]


def _like(pattern: str | None, name: str) -> bool:
    if pattern is None:
        return True
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.IGNORECASE) is not None


class AccessModel:
    """The access catalogue of one local Snowflake server (see the module docstring)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = directory / ACCESS_FILE if directory else None
        self.lock = threading.RLock()
        self.roles: set[str] = set()
        self.role_grants: set[tuple[str, str, str]] = set()  # (role, ROLE|USER, grantee)
        self.grants: set[tuple[str, str, str, str]] = set()  # (privilege, on, name parts joined by \x1f, role)
        self.future: set[tuple[str, str, str, str]] = set()  # (privilege, TABLE|VIEW, schema key, role)
        self.owners: dict[str, str] = {}  # "on\x1fkey" -> role
        self.users: dict[str, dict[str, str]] = {}
        self.warehouses: dict[str, dict[str, str]] = {}
        self.monitors: dict[str, dict[str, str]] = {}
        self.tags: dict[str, list[str]] = {}  # tag key -> allowed values
        self.policies: dict[str, dict[str, str]] = {}  # policy key -> {type, body}
        self.tag_policies: set[tuple[str, str]] = set()
        self.column_tags: dict[str, dict[str, str]] = {}  # "table key\x1fCOLUMN" -> {tag key: value}
        self._load()

    # -- persistence ------------------------------------------------------------------------
    _SETS = ("roles", "role_grants", "grants", "future", "tag_policies")
    _DICTS = ("owners", "users", "warehouses", "monitors", "tags", "policies", "column_tags")

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        data = json.loads(self.path.read_text(encoding="utf-8"))
        for name in self._SETS:
            setattr(self, name, {tuple(x) if isinstance(x, list) else x for x in data.get(name, [])})
        for name in self._DICTS:
            setattr(self, name, data.get(name, {}))

    def _save(self) -> None:
        if self.path is None:
            return
        data: dict[str, Any] = {name: sorted(getattr(self, name)) for name in self._SETS}
        data |= {name: getattr(self, name) for name in self._DICTS}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.path)

    # -- names ------------------------------------------------------------------------------
    @staticmethod
    def key(parts: list[str]) -> str:
        return "\x1f".join(parts)

    def qualify(self, name: str, session: Session, depth: int) -> list[str]:
        """A name of ``depth`` parts (2 schema, 3 table), completed from the session's database/schema."""
        parts = split_name(name)
        context = [session.database or "", session.schema or ""]
        return [*context[: depth - len(parts)][-(depth - len(parts)) :], *parts] if len(parts) < depth else parts

    # -- privileges -------------------------------------------------------------------------
    def closure(self, role: str) -> set[str]:
        """The role and every role granted to it, transitively."""
        seen, todo = set(), [role]
        while todo:
            r = todo.pop()
            if r in seen:
                continue
            seen.add(r)
            todo += [child for child, kind, grantee in self.role_grants if kind == "ROLE" and grantee == r]
        return seen

    def enforced(self, role: str) -> bool:
        return role in self.roles and role not in SYSTEM_ROLES

    def has(self, role: str, privilege: str, on: str, parts: list[str]) -> bool:
        key = self.key(parts)
        roles = self.closure(role)
        if self.owners.get(f"{on}\x1f{key}") in roles:
            return True
        return any((privilege, on, key, r) in self.grants for r in roles)

    def any_privilege(self, role: str, on: str, parts: list[str]) -> bool:
        key = self.key(parts)
        roles = self.closure(role)
        return self.owners.get(f"{on}\x1f{key}") in roles or any(
            g[1] == on and g[2] == key and g[3] in roles for g in self.grants
        )

    # -- entry points -----------------------------------------------------------------------
    def handle(self, sql: str, session: Session, conn: Any) -> Answer | None:
        """Answer, refuse or rewrite one statement; None: let fakesnow run it unchanged."""
        sql = strip_comments(sql)  # dbt adds a /* query comment */ to every statement
        with self.lock:
            for name, pattern in _STMTS:
                if m := pattern.match(sql):
                    answer: Answer = getattr(self, f"_{name}")(m, session, conn)
                    return answer
            # Fast path (most statements): no privilege to check and no tagged table named in it.
            if not self.enforced(session.role) and not self._names_tagged_table(sql):
                return None
            return self._check(sql, session, conn)

    def _names_tagged_table(self, sql: str) -> bool:
        text = sql.upper()
        return any(key.split("\x1f")[2].upper() in text for key, tags in self.column_tags.items() if tags)

    def created(self, sql: str, session: Session) -> None:
        """After fakesnow ran a statement: a new table or view gets its owner and future grants."""
        m = _CREATE_OBJECT.match(strip_comments(sql))
        if not m or not session.database:
            return
        with self.lock:
            kind, parts = m["kind"].upper(), self.qualify(m["name"], session, 3)
            key = self.key(parts)
            if f"{kind}\x1f{key}" in self.owners and " REPLACE " not in f" {sql.upper()} ":
                return  # IF NOT EXISTS on an existing object
            self.grants = {g for g in self.grants if not (g[1] == kind and g[2] == key)}
            self.owners[f"{kind}\x1f{key}"] = session.role
            schema = self.key(parts[:2])
            for privilege, on, container, role in self.future:
                if on == kind and container == schema:
                    self.grants.add((privilege, kind, key, role))
            self._save()

    # -- roles and grants -------------------------------------------------------------------
    def _create_role(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        name = split_name(m["name"])[0]
        self.roles.add(name)
        self._save()
        return Answer.ok(f"Role {name} successfully created.")

    def _role_exists(self, name: str) -> bool:
        return name in self.roles or name in SYSTEM_ROLES

    def _grant_role(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        role, grantee, kind = split_name(m["role"])[0], split_name(m["grantee"])[0], m["kind"].upper()
        if not self._role_exists(role):
            return _not_authorized("Role", role)
        if kind == "USER" and grantee not in self.users:
            return _not_authorized("User", grantee)
        if kind == "ROLE" and role in self.closure(grantee) - {grantee} and grantee in self.closure(role):
            return _error(3012, "42601", "Cyclic role grant")
        self.role_grants.add((role, kind, grantee))
        self._save()
        return Answer.ok()

    def _revoke_role(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        self.role_grants.discard((split_name(m["role"])[0], m["kind"].upper(), split_name(m["grantee"])[0]))
        self._save()
        return Answer.ok()

    def _grant_ownership(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        on = m["on"].upper()
        parts = self.qualify(m["name"], s, 2 if on == "SCHEMA" else 3)
        self.owners[f"{on}\x1f{self.key(parts)}"] = split_name(m["role"])[0]
        self._save()
        return Answer.ok()

    @staticmethod
    def _privileges(text: str) -> list[str]:
        privs = [" ".join(p.split()).upper() for p in text.split(",")]
        return ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES"] if privs == ["ALL"] else privs

    def _grant(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        on, role = m["on"].upper(), split_name(m["role"])[0]
        depth = {"DATABASE": 1, "WAREHOUSE": 1, "SCHEMA": 2}.get(on, 3)
        parts = split_name(m["name"]) if depth == 1 else self.qualify(m["name"], s, depth)
        if not self._role_exists(role):
            return _not_authorized("Role", role)
        if on == "WAREHOUSE" and parts[0] not in self.warehouses:
            return _not_authorized("Warehouse", parts[0])
        if on == "TAG" and self.key(parts) not in self.tags:
            return _not_authorized("Tag", ".".join(parts))
        for privilege in self._privileges(m["privs"]):
            fact = (privilege, on, self.key(parts), role)
            if m["verb"].upper() == "GRANT":
                self.grants.add(fact)
            else:
                self.grants.discard(fact)
        self._save()
        return Answer.ok()

    def _grant_scope(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        kind, role = m["kind"].upper()[:-1], split_name(m["role"])[0]
        schema = self.qualify(m["schema"], s, 2)
        grant = m["verb"].upper() == "GRANT"
        for privilege in self._privileges(m["privs"]):
            if m["scope"].upper() == "FUTURE":
                fact = (privilege, kind, self.key(schema), role)
                self.future.add(fact) if grant else self.future.discard(fact)
                continue
            for name in self._tables(conn, schema, kind):
                fact = (privilege, kind, self.key([*schema, name]), role)
                self.grants.add(fact) if grant else self.grants.discard(fact)
        self._save()
        return Answer.ok()

    @staticmethod
    def _tables(conn: Any, schema: list[str], kind: str) -> list[str]:
        cur = conn._duck_conn.cursor()
        try:
            types = ("VIEW",) if kind == "VIEW" else ("BASE TABLE", "LOCAL TEMPORARY")
            rows = cur.execute(
                "SELECT table_name, table_type FROM information_schema.tables"
                " WHERE table_catalog = ? AND table_schema = ?",
                [schema[0], schema[1]],
            ).fetchall()
        finally:
            cur.close()
        return [name for name, type_ in rows if type_ in types]

    # -- users, warehouses, monitors ----------------------------------------------------------
    def _create_user(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        name = split_name(m["name"])[0]
        if name not in self.users or " REPLACE " in f" {m.string.upper()} ":
            self.users[name] = {"type": "PERSON", **_props(m["props"])}
            self._save()
        return Answer.ok(f"User {name} successfully created.")

    def _alter_user(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        name = split_name(m["name"])[0]
        if name not in self.users:
            return _not_authorized("User", name)
        self.users[name].update(_props(m["props"]))
        self._save()
        return Answer.ok()

    def _create_warehouse(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        name = split_name(m["name"])[0]
        if name not in self.warehouses:
            self.warehouses[name] = {"WAREHOUSE_SIZE": "XSMALL", "AUTO_SUSPEND": "600", "AUTO_RESUME": "TRUE",
                                     **_props(m["props"])}  # fmt: skip
            self._save()
        return Answer.ok(f"Warehouse {name} successfully created.")

    def _alter_warehouse(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        name = split_name(m["name"])[0]
        if name not in self.warehouses:
            return _not_authorized("Warehouse", name)
        props = _props(m["props"])
        if (monitor := props.get("RESOURCE_MONITOR")) and monitor not in self.monitors:
            return _not_authorized("Resource monitor", monitor)
        self.warehouses[name].update(props)
        self._save()
        return Answer.ok()

    def _monitor_props(self, text: str) -> dict[str, str]:
        props = {k: v for k, v in _props(text).items() if k in ("CREDIT_QUOTA", "FREQUENCY", "START_TIMESTAMP")}
        for t in _TRIGGER.finditer(text):
            props[t["action"].upper()] = t["pct"]
        return props

    def _create_monitor(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        if s.role != "ACCOUNTADMIN":
            return _insufficient("account", "FAKESNOW")  # only ACCOUNTADMIN creates resource monitors
        name = split_name(m["name"])[0]
        if name not in self.monitors:
            self.monitors[name] = {"FREQUENCY": "MONTHLY", **self._monitor_props(m["props"])}
            self._save()
        return Answer.ok(f"Resource monitor {name} successfully created.")

    def _alter_monitor(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        name = split_name(m["name"])[0]
        if name not in self.monitors:
            return _not_authorized("Resource monitor", name)
        props = self._monitor_props(m["props"])
        if "TRIGGERS" in m["props"].upper():  # TRIGGERS replaces the whole list
            self.monitors[name] = {
                k: v for k, v in self.monitors[name].items() if k not in ("NOTIFY", "SUSPEND", "SUSPEND_IMMEDIATE")
            }
        self.monitors[name].update(props)
        self._save()
        return Answer.ok()

    # -- tags and masking -------------------------------------------------------------------
    def _create_tag(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        key = self.key(self.qualify(m["name"], s, 3))
        if key not in self.tags:
            self.tags[key] = _strings(m["values"])
            self._save()
        return Answer.ok(f"Tag {key.split(chr(31))[-1]} successfully created.")

    def _tag_values(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        key = self.key(self.qualify(m["name"], s, 3))
        if key not in self.tags:
            return _not_authorized("Tag", key.replace("\x1f", "."))
        self.tags[key] += [v for v in _strings(m["values"]) if v not in self.tags[key]]
        self._save()
        return Answer.ok()

    def _create_policy(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        key = self.key(self.qualify(m["name"], s, 3))
        if key not in self.policies:
            self.policies[key] = {"type": m["type"].upper(), "arg": m["arg"], "body": m["body"].strip()}
            self._save()
        return Answer.ok(f"Masking policy {key.split(chr(31))[-1]} successfully created.")

    def _alter_policy(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        key = self.key(self.qualify(m["name"], s, 3))
        if key not in self.policies:
            return _not_authorized("Masking policy", key.replace("\x1f", "."))
        self.policies[key]["body"] = m["body"].strip()
        self._save()
        return Answer.ok()

    def _describe_policy(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        parts = self.qualify(m["name"], s, 3)
        policy = self.policies.get(self.key(parts))
        if policy is None:
            return _not_authorized("Masking policy", ".".join(parts))
        type_ = "VARCHAR" if policy["type"] == "STRING" else policy["type"]
        return Answer(("name", "signature", "return_type", "body"),
                      ((parts[-1], f"({policy['arg'].upper()} {type_})", type_, policy["body"]),))  # fmt: skip

    def _tag_policy(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        tag, policy = self.key(self.qualify(m["name"], s, 3)), self.key(self.qualify(m["policy"], s, 3))
        if tag not in self.tags:
            return _not_authorized("Tag", tag.replace("\x1f", "."))
        if policy not in self.policies:
            return _not_authorized("Masking policy", policy.replace("\x1f", "."))
        if m["verb"].upper() == "UNSET":
            self.tag_policies.discard((tag, policy))
        else:
            type_ = self.policies[policy]["type"]
            if any(t == tag and self.policies[p]["type"] == type_ and p != policy for t, p in self.tag_policies):
                return _error(
                    3050, "42601", f"SQL compilation error:\nTag already has a masking policy of data type {type_}"
                )
            self.tag_policies.add((tag, policy))
        self._save()
        return Answer.ok()

    def _column_tag(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        table, tag = self.qualify(m["table"], s, 3), self.key(self.qualify(m["tag"], s, 3))
        column = split_name(m["column"])[0]
        if tag not in self.tags:
            return _not_authorized("Tag", tag.replace("\x1f", "."))
        if self.enforced(s.role) and not self.has(s.role, "APPLY", "TAG", tag.split("\x1f")):
            return _insufficient("tag", tag.replace("\x1f", "."))
        if column not in self._columns(conn, table):
            return _error(
                904, "42000", f"SQL compilation error: error line 0 at position -1\ninvalid identifier '{column}'"
            )
        key = f"{self.key(table)}\x1f{column}"
        if m["verb"].upper() == "SET":
            value = (m["value"] or "").replace("''", "'")
            allowed = self.tags[tag]
            if allowed and value not in allowed:
                return _error(3051, "22023", f"Tag {tag.split(chr(31))[-1]} does not allow value '{value}'")
            self.column_tags.setdefault(key, {})[tag] = value
        else:
            self.column_tags.get(key, {}).pop(tag, None)
        self._save()
        return Answer.ok()

    @staticmethod
    def _columns(conn: Any, table: list[str]) -> dict[str, str]:
        cur = conn._duck_conn.cursor()
        try:
            rows = cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_catalog = ? AND table_schema = ? AND table_name = ?",
                table,
            ).fetchall()
        finally:
            cur.close()
        return {str(name): str(type_).upper() for name, type_ in rows}

    def masked_columns(self, table: list[str], role: str, conn: Any) -> dict[str, str]:
        """Column -> the SQL that replaces it for ``role`` (empty: nothing masked)."""
        prefix = self.key(table) + "\x1f"
        tagged = {k[len(prefix) :]: tags for k, tags in self.column_tags.items() if k.startswith(prefix) and tags}
        if not tagged:
            return {}
        types, roles, out = self._columns(conn, table), self.closure(role), {}
        for column, tags in tagged.items():
            duck_type = types.get(column, "")
            family = _POLICY_TYPE.get(duck_type.split("(")[0], "STRING" if "CHAR" in duck_type else duck_type)
            for tag in tags:
                for t, policy in self.tag_policies:
                    spec = self.policies.get(policy)
                    if t != tag or spec is None or spec["type"] != family:
                        continue
                    body = _POLICY_BODY.match(spec["body"])
                    clear = body is not None and (
                        body["role"].upper() in roles or (body["current"] or "").upper() == role.upper()
                    )
                    if not clear:
                        masked = body["masked"] if body else "NULL"
                        out[column] = masked if masked.upper() != "NULL" else f"CAST(NULL AS {duck_type or 'VARCHAR'})"
        return out

    # -- SHOW -------------------------------------------------------------------------------
    def _show_roles(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        rows = []
        for name in sorted(self.roles | SYSTEM_ROLES):
            if _like(m["like"], name):
                granted_to = sum(1 for r, k, _ in self.role_grants if r == name and k == "ROLE")
                granted = sum(1 for _, k, g in self.role_grants if g == name and k == "ROLE")
                users = sum(1 for r, k, _ in self.role_grants if r == name and k == "USER")
                rows.append(
                    (
                        CREATED_ON,
                        name,
                        "N",
                        "Y" if name == s.role else "N",
                        "N",
                        str(users),
                        str(granted_to),
                        str(granted),
                        "SECURITYADMIN",
                        "",
                    )
                )
        cols = (
            "created_on",
            "name",
            "is_default",
            "is_current",
            "is_inherited",
            "assigned_to_users",
            "granted_to_roles",
            "granted_roles",
            "owner",
            "comment",
        )
        return Answer(cols, tuple(rows))

    def _show_grants_to_role(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        role = split_name(m["name"])[0]
        rows = []
        for privilege, on, key, r in sorted(self.grants):
            if r == role:
                rows.append(
                    (CREATED_ON, privilege, on, show_name(key.split("\x1f")), "ROLE", role, "false", "SECURITYADMIN")
                )
        for owned, owner in sorted(self.owners.items()):
            if owner == role:
                on, _, key = owned.partition("\x1f")
                rows.append((CREATED_ON, "OWNERSHIP", on, show_name(key.split("\x1f")), "ROLE", role, "true", role))
        for child, kind, grantee in sorted(self.role_grants):
            if kind == "ROLE" and grantee == role:
                rows.append((CREATED_ON, "USAGE", "ROLE", child, "ROLE", role, "false", "SECURITYADMIN"))
        cols = (
            "created_on",
            "privilege",
            "granted_on",
            "name",
            "granted_to",
            "grantee_name",
            "grant_option",
            "granted_by",
        )
        return Answer(cols, tuple(rows))

    def _show_future_grants(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        role = split_name(m["role"])[0] if m["role"] else None
        schema = self.key(self.qualify(m["schema"], s, 2)) if m["schema"] else None
        rows = [
            (CREATED_ON, privilege, on, show_name([*container.split("\x1f"), f"<{on}>"]), "ROLE", r, "false")
            for privilege, on, container, r in sorted(self.future)
            if (role is None or r == role) and (schema is None or container == schema)
        ]
        return Answer(
            ("created_on", "privilege", "grant_on", "name", "grant_to", "grantee_name", "grant_option"), tuple(rows)
        )

    def _show_grants_of_role(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        role = split_name(m["name"])[0]
        rows = [
            (CREATED_ON, role, kind, grantee, "SECURITYADMIN")
            for r, kind, grantee in sorted(self.role_grants)
            if r == role
        ]
        return Answer(("created_on", "role", "granted_to", "grantee_name", "granted_by"), tuple(rows))

    def _show_grants_to_user(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        user = split_name(m["name"])[0]
        rows = [
            (CREATED_ON, r, "USER", user, "SECURITYADMIN")
            for r, kind, g in sorted(self.role_grants)
            if kind == "USER" and g == user
        ]
        return Answer(("created_on", "role", "granted_to", "grantee_name", "granted_by"), tuple(rows))

    def _show_users(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        rows = [
            (
                name,
                CREATED_ON,
                name,
                name,
                p.get("DEFAULT_WAREHOUSE", ""),
                p.get("DEFAULT_ROLE", ""),
                p.get("TYPE", "PERSON"),
                "false",
                "USERADMIN",
            )
            for name, p in sorted(self.users.items())
            if _like(m["like"], name)
        ]
        cols = (
            "name",
            "created_on",
            "login_name",
            "display_name",
            "default_warehouse",
            "default_role",
            "type",
            "disabled",
            "owner",
        )
        return Answer(cols, tuple(rows))

    def _show_warehouses(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        sizes = {"XSMALL": "X-Small", "SMALL": "Small", "MEDIUM": "Medium", "LARGE": "Large", "XLARGE": "X-Large"}
        rows = []
        for name, p in sorted(self.warehouses.items()):
            if _like(m["like"], name):
                size = sizes.get(p.get("WAREHOUSE_SIZE", "XSMALL").replace("-", ""), p.get("WAREHOUSE_SIZE", ""))
                monitor = p.get("RESOURCE_MONITOR", "null")
                rows.append(
                    (
                        name,
                        "SUSPENDED",
                        "STANDARD",
                        size,
                        p.get("AUTO_SUSPEND", ""),
                        p.get("AUTO_RESUME", "TRUE").lower(),
                        monitor,
                        CREATED_ON,
                        "SYSADMIN",
                    )
                )
        cols = (
            "name",
            "state",
            "type",
            "size",
            "auto_suspend",
            "auto_resume",
            "resource_monitor",
            "created_on",
            "owner",
        )
        return Answer(cols, tuple(rows))

    def _show_monitors(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        rows = []
        for name, p in sorted(self.monitors.items()):
            if _like(m["like"], name):
                quota = float(p.get("CREDIT_QUOTA", "0"))
                pct = {k: f"{p[k]}%" if k in p else "" for k in ("NOTIFY", "SUSPEND", "SUSPEND_IMMEDIATE")}
                quotas = (f"{quota:.2f}", "0.00", f"{quota:.2f}")
                when = ("WAREHOUSE", p.get("FREQUENCY", "MONTHLY"), CREATED_ON, "")
                triggers = (pct["NOTIFY"], pct["SUSPEND"], pct["SUSPEND_IMMEDIATE"])
                rows.append((name, *quotas, *when, *triggers, CREATED_ON, "ACCOUNTADMIN", ""))
        cols = (
            *("name", "credit_quota", "used_credits", "remaining_credits", "level", "frequency", "start_time"),
            *("end_time", "notify_at", "suspend_at", "suspend_immediately_at", "created_on", "owner", "comment"),
        )
        return Answer(cols, tuple(rows))

    def _show_tags(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        database = m["level"].upper() == "DATABASE"
        schema = split_name(m["schema"])[:1] if database else self.qualify(m["schema"], s, 2)
        rows = []
        for key, allowed in sorted(self.tags.items()):
            parts = key.split("\x1f")
            if parts[: len(schema)] == schema and _like(m["like"], parts[2]):
                rows.append(
                    (
                        CREATED_ON,
                        parts[2],
                        parts[0],
                        parts[1],
                        "ACCOUNTADMIN",
                        "",
                        json.dumps(allowed) if allowed else None,
                        "ROLE",
                    )
                )
        return Answer(
            (
                "created_on",
                "name",
                "database_name",
                "schema_name",
                "owner",
                "comment",
                "allowed_values",
                "owner_role_type",
            ),
            tuple(rows),
        )

    def _show_policies(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        schema = self.qualify(m["schema"], s, 2)
        rows = []
        for key in sorted(self.policies):
            parts = key.split("\x1f")
            if parts[:2] == schema and _like(m["like"], parts[2]):
                rows.append(
                    (CREATED_ON, parts[2], parts[0], parts[1], "MASKING_POLICY", "ACCOUNTADMIN", "", "ROLE", "")
                )
        return Answer(
            (
                "created_on",
                "name",
                "database_name",
                "schema_name",
                "kind",
                "owner",
                "comment",
                "owner_role_type",
                "options",
            ),
            tuple(rows),
        )

    def _tag_references(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        table = self.qualify(m["table"].replace("''", "'"), s, 3)
        prefix = self.key(table) + "\x1f"
        rows = []
        for key, tags in sorted(self.column_tags.items()):
            if key.startswith(prefix):
                for tag, value in sorted(tags.items()):
                    t = tag.split("\x1f")
                    rows.append(
                        (t[0], t[1], t[2], value, "COLUMN", table[0], table[1], table[2], "COLUMN", key[len(prefix) :])
                    )
        cols = (
            "TAG_DATABASE",
            "TAG_SCHEMA",
            "TAG_NAME",
            "TAG_VALUE",
            "LEVEL",
            "OBJECT_DATABASE",
            "OBJECT_SCHEMA",
            "OBJECT_NAME",
            "DOMAIN",
            "COLUMN_NAME",
        )
        return self._project(m["cols"], cols, rows)

    def _policy_references(self, m: re.Match[str], s: Session, conn: Any) -> Answer:
        tag = self.key(self.qualify(m["name"].replace("''", "'"), s, 3))
        rows = []
        for t, policy in sorted(self.tag_policies):
            if t == tag:
                p, tp = policy.split("\x1f"), t.split("\x1f")
                rows.append((p[0], p[1], p[2], "MASKING_POLICY", tp[0], tp[1], tp[2], "TAG", "ACTIVE"))
        cols = (
            "POLICY_DB",
            "POLICY_SCHEMA",
            "POLICY_NAME",
            "POLICY_KIND",
            "REF_DATABASE_NAME",
            "REF_SCHEMA_NAME",
            "REF_ENTITY_NAME",
            "REF_ENTITY_DOMAIN",
            "POLICY_STATUS",
        )
        return self._project(m["cols"], cols, rows)

    @staticmethod
    def _project(select: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Answer:
        wanted = cols if select.strip() == "*" else tuple(c.strip().upper() for c in select.split(","))
        index = [cols.index(c) for c in wanted]
        return Answer(wanted, tuple(tuple(r[i] for i in index) for r in rows))

    # -- checks on ordinary statements ------------------------------------------------------
    def _check(self, sql: str, s: Session, conn: Any) -> Answer | None:
        import sqlglot
        from sqlglot import exp

        try:
            tree = sqlglot.parse_one(sql, read="snowflake")
        except Exception:
            return None
        if tree is None or isinstance(tree, (exp.Command, exp.Show, exp.Describe, exp.Use)):
            return None
        if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() in ("SCHEMA", "DATABASE", "STAGE"):
            return self._check_create_container(tree, s)
        written = self._written(tree)
        ctes = {c.alias_or_name.upper() for c in tree.find_all(exp.CTE)}
        # Stage references (``@stage/path``) parse as tables too: they are not tables.
        reads = [t for t in tree.find_all(exp.Table) if id(t) not in {id(w) for w, _ in written}
                 and t.name and not t.name.startswith("@") and not (not t.db and t.name.upper() in ctes)]  # fmt: skip
        if isinstance(tree, exp.Drop) and tree.args.get("exists"):
            # DROP … IF EXISTS of an object that does not exist succeeds for any role (dbt drops its
            # __dbt_tmp relations that way before an incremental model's first build).
            written = [(t, a) for t, a in written if (at := self._resolve(t, s)) is None or self._columns(conn, at)]
        if self.enforced(s.role):
            for table, action in written:
                if denied := self._check_table(table, action, s):
                    return denied
            for table in reads:
                if denied := self._check_table(table, "SELECT", s):
                    return denied
        return self._mask(tree, reads, s, conn, sql)

    @staticmethod
    def _written(tree: Any) -> list[tuple[Any, str]]:
        from sqlglot import exp

        def table_of(node: Any) -> Any:
            return node if isinstance(node, exp.Table) else node.find(exp.Table) if node is not None else None

        kind = {
            **{exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE", exp.Merge: "MERGE"},
            **{exp.Copy: "INSERT", exp.Alter: "OWNERSHIP", exp.TruncateTable: "TRUNCATE"},
        }
        if isinstance(tree, exp.Create):
            kind_name = str(tree.args.get("kind", "")).upper()
            target = table_of(tree.this)
            return [(target, f"CREATE {kind_name}")] if target is not None and kind_name in ("TABLE", "VIEW") else []
        if isinstance(tree, exp.Drop):  # sqlglot keeps a DROP's objects in ``tables``
            if str(tree.args.get("kind", "")).upper() not in ("TABLE", "VIEW"):
                return []
            dropped = tree.args.get("tables") or ([tree.this] if tree.this is not None else [])
            return [(t, "OWNERSHIP") for t in dropped if isinstance(t, exp.Table)]
        for cls, action in kind.items():
            if isinstance(tree, cls):
                if cls is exp.TruncateTable:
                    return [(t, action) for t in tree.expressions if isinstance(t, exp.Table)]
                target = table_of(tree.this)
                if action == "MERGE" and target is not None:
                    whens = tree.sql(dialect="snowflake").upper()
                    return [(target, "INSERT"), (target, "UPDATE")] + (
                        [(target, "DELETE")] if " THEN DELETE" in whens else []
                    )
                return [(target, action)] if target is not None else []
        return []

    def _resolve(self, table: Any, s: Session) -> list[str] | None:
        db = table.catalog or s.database
        schema = table.db or s.schema
        if not db or not schema:
            return None
        parts = []
        for ident in (table.args.get("catalog"), table.args.get("db"), table.args.get("this")):
            if ident is not None:
                parts.append(ident.name if getattr(ident, "quoted", False) else ident.name.upper())
        if len(parts) == 3:
            return parts
        return [*([db.upper(), schema.upper()] if len(parts) == 1 else [db.upper()]), *parts]

    def _check_table(self, table: Any, action: str, s: Session) -> Answer | None:
        parts = self._resolve(table, s)
        if parts is None or parts[1] == "INFORMATION_SCHEMA":
            return None
        db, schema = parts[:1], parts[:2]
        if not (self.has(s.role, "USAGE", "DATABASE", db) or self.any_privilege(s.role, "SCHEMA", schema)):
            return _not_authorized("Database", db[0])
        if not self.has(s.role, "USAGE", "SCHEMA", schema):
            return _not_authorized("Schema", ".".join(schema))
        if action.startswith("CREATE "):
            if not self.has(s.role, action, "SCHEMA", schema):
                return _insufficient("schema", schema[1])
            return None
        on = "VIEW" if f"VIEW\x1f{self.key(parts)}" in self.owners else "TABLE"
        if self.has(s.role, action, on, parts):
            return None
        if not self.any_privilege(s.role, on, parts):
            return _not_authorized("Object", ".".join(parts))
        return _insufficient(on.lower(), ".".join(parts))

    def _check_create_container(self, tree: Any, s: Session) -> Answer | None:
        if not self.enforced(s.role):
            return None
        kind = str(tree.args.get("kind", "")).upper()
        if kind == "DATABASE":
            return None  # dev/snowflake_strict.py refuses it to every role but SYSADMIN/ACCOUNTADMIN
        target = tree.this
        if kind == "SCHEMA":
            db = (target.catalog or s.database or "").upper()
            if not self.has(s.role, "CREATE SCHEMA", "DATABASE", [db]):
                return _insufficient("database", db)
            return None
        parts = self._resolve(target, s)
        if parts is not None and not self.has(s.role, "CREATE STAGE", "SCHEMA", parts[:2]):
            return _insufficient("schema", parts[1])
        return None

    def _mask(self, tree: Any, reads: list[Any], s: Session, conn: Any, sql: str) -> Answer | None:
        import sqlglot
        from sqlglot import exp

        changed = False
        for table in reads:
            parts = self._resolve(table, s)
            if parts is None:
                continue
            masked = self.masked_columns(parts, s.role, conn)
            if not masked:
                continue
            replace = ", ".join(f"{value} AS {show_name([col])}" for col, value in sorted(masked.items()))
            source = table.copy()
            source.set("alias", None)
            # The subquery answers to the same name: the table's alias, else its own (unqualified) name.
            alias = table.args["alias"].this.copy() if table.args.get("alias") else table.this.copy()
            sub = sqlglot.parse_one(
                f"SELECT * REPLACE ({replace}) FROM {source.sql(dialect='snowflake')}", read="snowflake"
            )
            table.replace(exp.Subquery(this=sub, alias=exp.TableAlias(this=alias)))
            changed = True
        return Answer(sql=tree.sql(dialect="snowflake")) if changed else None
