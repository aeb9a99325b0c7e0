"""Logins, database users, roles and permissions — recorded and *reported* as SQL Server does.

What a CDC reader's login may do is something the pipeline's preflight checks before a run, so the
emulator answers the documented functions with SQL Server's semantics:

* ``IS_SRVROLEMEMBER('role' [, 'login'])`` — 1 member, 0 not a member, NULL when the role or the
  login is not valid (https://learn.microsoft.com/sql/t-sql/functions/is-srvrolemember-transact-sql).
  ``sa`` is a member of ``sysadmin`` (as on every SQL Server).
* ``HAS_PERMS_BY_NAME(securable, class, permission)`` — the *effective* permission of the current
  user: granted to it or to a role it belongs to, or implied by a higher scope (a schema grant
  covers its objects, a database grant everything), and not denied; NULL when the class or the
  permission is not valid (https://learn.microsoft.com/sql/t-sql/functions/has-perms-by-name-transact-sql).
  ``sysadmin`` members (who enter every database as ``dbo``) and ``db_owner`` members hold every
  permission in the database; ``db_datareader`` holds SELECT and ``db_datawriter`` INSERT, UPDATE and
  DELETE on every object (https://learn.microsoft.com/sql/relational-databases/security/authentication-access/database-level-roles).
* ``IS_MEMBER('role')`` — 1 when the current user is a member of the database role.
* ``SUSER_SNAME()`` / ``SYSTEM_USER`` — the login.

Statements (the subset a DBA runs to set up a reader): ``CREATE LOGIN x WITH PASSWORD = '…'``,
``CREATE USER x [FOR|FROM LOGIN y]``, ``ALTER ROLE r ADD|DROP MEMBER x``,
``ALTER SERVER ROLE r ADD|DROP MEMBER x``, ``GRANT|DENY|REVOKE perm[, perm] ON [SCHEMA::|OBJECT::]name
TO|FROM x``, ``DROP USER x``, ``DROP LOGIN x``. They need ``sysadmin`` (or ``db_owner`` for database
principals and permissions), otherwise Msg 15247.

Known difference: permissions are reported, not enforced — a SELECT by a login without the
permission still runs here (SQL Server raises Msg 229). Connections with no login act as ``sa``.
"""

from __future__ import annotations

import re
from typing import Any

from . import errors
from .translate import split_object_name

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS emu.logins(name VARCHAR);
ALTER TABLE emu.logins ADD COLUMN IF NOT EXISTS password VARCHAR;
CREATE TABLE IF NOT EXISTS emu.server_role_members(role VARCHAR, login VARCHAR);
CREATE TABLE IF NOT EXISTS emu.db_users(name VARCHAR, login VARCHAR);
CREATE TABLE IF NOT EXISTS emu.db_role_members(role VARCHAR, member VARCHAR);
CREATE TABLE IF NOT EXISTS emu.db_permissions(
    state VARCHAR, permission VARCHAR, class VARCHAR, securable VARCHAR, grantee VARCHAR);
"""
DEFAULT_LOGIN = "sa"
SERVER_ROLES = {
    "sysadmin",
    "serveradmin",
    "dbcreator",
    "setupadmin",
    "bulkadmin",
    "securityadmin",
    "diskadmin",
    "public",
    "processadmin",
}
DATABASE_ROLES = {
    "db_owner",
    "db_datareader",
    "db_datawriter",
    "db_ddladmin",
    "db_securityadmin",
    "db_accessadmin",
    "db_backupoperator",
    "db_denydatareader",
    "db_denydatawriter",
    "public",
}
CLASSES = {"OBJECT", "SCHEMA", "DATABASE", "SERVER"}
PERMISSIONS = {
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "EXECUTE",
    "ALTER",
    "CONTROL",
    "REFERENCES",
    "VIEW DEFINITION",
    "VIEW DATABASE STATE",
    "VIEW SERVER STATE",
    "CREATE TABLE",
    "ANY",
}
_WRITE = {"INSERT", "UPDATE", "DELETE"}


def bootstrap(cur: Any) -> None:
    """Create the principal tables; seed ``sa`` (sysadmin) once."""
    cur.execute(BOOTSTRAP)
    if cur.execute("SELECT count(*) FROM emu.logins").fetchone()[0] == 0:
        cur.execute("INSERT INTO emu.logins (name) VALUES ('sa')")
        cur.execute("INSERT INTO emu.server_role_members VALUES ('sysadmin', 'sa')")
        cur.execute("INSERT INTO emu.db_users VALUES ('dbo', 'sa')")


def password_matches(cur: Any, login: str, password: str) -> bool:
    """A login created with ``CREATE LOGIN … WITH PASSWORD`` and its password (TDS LOGIN7)."""
    found = cur.execute("SELECT password FROM emu.logins WHERE lower(name) = ?", [login.lower()]).fetchall()
    return bool(found) and found[0][0] is not None and found[0][0] == password


def _norm(name: str) -> str:
    return name.strip().replace("[", "").replace("]", "").lower()


def _rows(session: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return session.cur.execute(sql, params).fetchall()


# -- functions -------------------------------------------------------------------------------------
def _is_sysadmin(session: Any, login: str) -> bool:
    return bool(
        _rows(session, "SELECT 1 FROM emu.server_role_members WHERE role = 'sysadmin' AND lower(login) = ?", [login])
    )


def _user(session: Any) -> str | None:
    """The database user of the session's login (``dbo`` for sysadmin), None without one."""
    login = session.login.lower()
    if _is_sysadmin(session, login):
        return "dbo"
    found = _rows(session, "SELECT name FROM emu.db_users WHERE lower(login) = ?", [login])
    return found[0][0].lower() if found else None


def _roles(session: Any, user: str) -> set[str]:
    roles = {r.lower() for (r,) in _rows(session, "SELECT role FROM emu.db_role_members WHERE member = ?", [user])}
    return roles | {"public"}


def is_srvrolemember(session: Any, role: Any, login: Any = None) -> int | None:
    if role is None or str(role).lower() not in SERVER_ROLES:
        return None
    who = _norm(str(login)) if login is not None else session.login.lower()
    if not _rows(session, "SELECT 1 FROM emu.logins WHERE lower(name) = ?", [who]):
        return None
    if str(role).lower() == "public":
        return 1
    found = _rows(
        session, "SELECT 1 FROM emu.server_role_members WHERE role = ? AND lower(login) = ?", [str(role).lower(), who]
    )
    return 1 if found else 0


def is_member(session: Any, role: Any) -> int | None:
    user = _user(session)
    if role is None or user is None:
        return None
    if user == "dbo":
        return 1
    return 1 if _norm(str(role)) in _roles(session, user) else 0


def _object_scopes(session: Any, securable: str) -> list[tuple[str, str]] | None:
    """(class, name) scopes that grant on an object: the object, its schema, the database. The name
    is parsed as OBJECT_ID parses it (``[cdc].[dbo_Order Details_CT]``, ``]]`` inside brackets)."""
    parts = split_object_name(securable.strip())
    if parts is None:
        return None
    schema, name = (parts[-2].lower() if len(parts) >= 2 and parts[-2] else "dbo"), parts[-1].lower()
    exists = _rows(
        session,
        "SELECT 1 FROM duckdb_tables() WHERE lower(schema_name) = ? AND lower(table_name) = ? "
        "UNION ALL SELECT 1 FROM duckdb_views() WHERE lower(schema_name) = ? AND lower(view_name) = ?",
        [schema, name, schema, name],
    )
    if not exists:
        return None
    return [("OBJECT", f"{schema}.{name}"), ("SCHEMA", schema), ("DATABASE", "")]


def has_perms_by_name(session: Any, securable: Any, klass: Any, permission: Any) -> int | None:
    if permission is None:
        return None
    # The server itself: securable and class NULL (the documented example asks for VIEW SERVER STATE).
    klass, permission = str(klass or "SERVER").upper(), " ".join(str(permission).upper().split())
    if klass not in CLASSES or permission not in PERMISSIONS:
        return None
    if klass == "SERVER":
        return 1 if _is_sysadmin(session, session.login.lower()) else 0
    if klass == "OBJECT":
        scopes = _object_scopes(session, str(securable or ""))
    elif klass == "SCHEMA":
        schema = _norm(str(securable or ""))
        known = _rows(session, "SELECT 1 FROM emu.schemas WHERE lower(name) = ?", [schema])
        scopes = [("SCHEMA", schema), ("DATABASE", "")] if known else None
    else:
        scopes = [("DATABASE", "")]
    if scopes is None:
        return None
    user = _user(session)
    if user is None:
        return 0
    if user == "dbo":
        return 1
    principals = {user} | _roles(session, user)
    if "db_owner" in principals:
        return 1
    marks = ", ".join("?" for _ in principals)
    where = " OR ".join("(class = ? AND securable = ?)" for _ in scopes)
    params = [p for scope in scopes for p in scope]
    states = {
        state
        for (state,) in _rows(
            session,
            f"SELECT state FROM emu.db_permissions WHERE grantee IN ({marks}) AND ({where}) "
            "AND (permission = ? OR ? = 'ANY')",
            [*sorted(principals), *params, permission, permission],
        )
    }
    denied_by_role = (permission == "SELECT" and "db_denydatareader" in principals) or (
        permission in _WRITE and "db_denydatawriter" in principals
    )
    if "DENY" in states or denied_by_role:
        return 0
    if "GRANT" in states:
        return 1
    if klass in ("OBJECT", "SCHEMA", "DATABASE"):
        if permission == "SELECT" and "db_datareader" in principals:
            return 1
        if permission in _WRITE and "db_datawriter" in principals:
            return 1
    return 0


FUNCTIONS = {
    "IS_SRVROLEMEMBER": is_srvrolemember,
    "IS_MEMBER": is_member,
    "HAS_PERMS_BY_NAME": has_perms_by_name,
}


def call(session: Any, name: str, args: list[Any]) -> Any:
    """Evaluate one of ``FUNCTIONS`` (constant arguments) for the session."""
    return FUNCTIONS[name](session, *args)


# -- statements ------------------------------------------------------------------------------------
_NAME = r"\[?([A-Za-z_#@][\w#@$]*)\]?"
_CREATE_LOGIN = re.compile(rf"^\s*CREATE\s+LOGIN\s+{_NAME}\s+WITH\s+PASSWORD\s*=\s*N?'([^']*)'.*$", re.I | re.S)
_CREATE_USER = re.compile(rf"^\s*CREATE\s+USER\s+{_NAME}(?:\s+(?:FOR|FROM)\s+LOGIN\s+{_NAME})?\s*;?\s*$", re.I)
_ROLE_MEMBER = re.compile(rf"^\s*ALTER\s+(SERVER\s+)?ROLE\s+{_NAME}\s+(ADD|DROP)\s+MEMBER\s+{_NAME}\s*;?\s*$", re.I)
_PERMISSION = re.compile(
    # an object name: bracketed parts (any character, ] doubled), quoted parts, or plain words and dots
    rf"^\s*(GRANT|DENY|REVOKE)\s+(.+?)\s+ON\s+(?:(SCHEMA|OBJECT|DATABASE)\s*::\s*)?"
    r'((?:\[(?:[^\]]|\]\])*\]|"(?:[^"]|"")*"|[\w.#@$])+)\s+'
    rf"(?:TO|FROM)\s+{_NAME}\s*;?\s*$",
    re.I | re.S,
)
_DROP = re.compile(rf"^\s*DROP\s+(USER|LOGIN)\s+{_NAME}\s*;?\s*$", re.I)


def handles(first_words: list[str]) -> bool:
    """Whether a statement starting with these words is one of ours."""
    words = [w.upper() for w in first_words[:3]]
    return (
        words[:1] in (["GRANT"], ["DENY"], ["REVOKE"])
        or words[:2] in (["CREATE", "LOGIN"], ["CREATE", "USER"], ["ALTER", "ROLE"], ["DROP", "USER"])
        or words[:2] == ["DROP", "LOGIN"]
        or words == ["ALTER", "SERVER", "ROLE"]
    )


def _require(session: Any, server_level: bool) -> None:
    login = session.login.lower()
    if _is_sysadmin(session, login):
        return
    if not server_level and is_member(session, "db_owner") == 1:
        return
    raise errors.SqlServerError(15247, "User does not have permission to perform this action.", 16)


def _exists(session: Any, table: str, column: str, name: str) -> bool:
    return bool(_rows(session, f"SELECT 1 FROM emu.{table} WHERE lower({column}) = ?", [name]))


def execute(session: Any, sql: str) -> None:
    """Run one security statement (see the module docstring)."""
    session.begin_write()
    if m := _CREATE_LOGIN.match(sql):
        _require(session, server_level=True)
        name = m.group(1)
        if _exists(session, "logins", "name", name.lower()):
            raise errors.SqlServerError(15025, f"The server principal '{name}' already exists.", 16)
        session.cur.execute("INSERT INTO emu.logins (name, password) VALUES (?, ?)", [name, m.group(2)])
    elif m := _CREATE_USER.match(sql):
        _require(session, server_level=False)
        name, login = m.group(1), m.group(2) or m.group(1)
        if _exists(session, "db_users", "name", name.lower()):
            raise errors.SqlServerError(15023, f"User, group, or role '{name}' already exists in the current database.")
        if not _exists(session, "logins", "name", login.lower()):
            raise errors.SqlServerError(15007, f"'{login}' is not a valid login or you do not have permission.")
        session.cur.execute("INSERT INTO emu.db_users VALUES (?, ?)", [name.lower(), login])
    elif m := _ROLE_MEMBER.match(sql):
        server, role, action, member = bool(m.group(1)), m.group(2).lower(), m.group(3).upper(), m.group(4)
        _require(session, server_level=server)
        roles, table, column = (
            (SERVER_ROLES, "server_role_members", "login") if server else (DATABASE_ROLES, "db_role_members", "member")
        )
        if role not in roles:
            raise errors.SqlServerError(15151, f"Cannot alter the role '{role}', because it does not exist.")
        session.cur.execute(f"DELETE FROM emu.{table} WHERE role = ? AND lower({column}) = ?", [role, member.lower()])
        if action == "ADD":
            session.cur.execute(f"INSERT INTO emu.{table} VALUES (?, ?)", [role, member.lower()])
    elif m := _PERMISSION.match(sql):
        _require(session, server_level=False)
        verb, perms, klass, securable, grantee = m.groups()
        klass = (klass or "OBJECT").upper()
        target = _norm(securable)
        if klass == "OBJECT":
            scopes = _object_scopes(session, securable)
            if scopes is None:
                raise errors.SqlServerError(15151, f"Cannot find the object '{securable}', because it does not exist.")
            target = scopes[0][1]
        elif klass == "DATABASE":
            target = ""
        for permission in (" ".join(p.upper().split()) for p in perms.split(",")):
            session.cur.execute(
                "DELETE FROM emu.db_permissions WHERE permission = ? AND class = ? AND securable = ? AND grantee = ?",
                [permission, klass, target, grantee.lower()],
            )
            if verb.upper() != "REVOKE":
                session.cur.execute(
                    "INSERT INTO emu.db_permissions VALUES (?, ?, ?, ?, ?)",
                    [verb.upper(), permission, klass, target, grantee.lower()],
                )
    elif m := _DROP.match(sql):
        kind, name = m.group(1).upper(), m.group(2).lower()
        _require(session, server_level=kind == "LOGIN")
        if kind == "USER":
            session.cur.execute("DELETE FROM emu.db_users WHERE lower(name) = ?", [name])
        else:
            session.cur.execute("DELETE FROM emu.logins WHERE lower(name) = ?", [name])
            session.cur.execute("DELETE FROM emu.server_role_members WHERE lower(login) = ?", [name])
    else:
        raise errors.SqlServerError(102, f"Incorrect syntax near '{sql.split()[0]}'. (form not supported)", 15)
