"""Which errors a retry can fix, an error as a person reads it, and the fingerprint that groups
failures into incidents (``alerts.incidents``).

**Classify before retrying.** ``orchestration.tasks.fail_fast`` asks :func:`not_retryable` about
every error a CDC task raises: the errors no retry can fix fail the task at once
(``AirflowFailException``: one try, the incident opens without waiting out ~3.5 min of retries with
backoff); every other error keeps its retries. The decision reads the error numbers the drivers
carry, never the wording:

- **pymssql** (``MsSqlHook``): a failed statement raises ``args == (number, message_bytes)``, a
  failed login ``args[0] == (number, message_bytes)`` (tests/emulator/test_tds.py). The number is
  SQL Server's, or FreeTDS DB-Library's (20000-20999) for client-side failures (20009 "unable to
  connect", 20003 "timed out"). When the server sent no message at all, pymssql still reports the
  last server number the process saw (measured: a refused connection after a failed login carries
  18456): the DB-Library number of the message text counts then.
- **snowflake-connector-python**: ``.errno`` (SQL errors: Snowflake's number, e.g. 2003; login and
  session errors: the 390xxx code of the server; the connector's own 25xxxx) and ``.sqlstate``.
- **mssql-python** (the change reader) carries no number, only the SQLSTATE its ODBC driver
  reported, as the text of ``driver_error``; it is read back through the driver's own table
  (``mssql_python.exceptions.sqlstate_to_exception``).

Not retryable (a person must act), by kind:

- **driver**: ``DriverLoadError`` (a native library of a SQL Server driver is missing);
- **login** failed: SQL Server 18456 (and 18452, 18470, 18486, 18487, 18488); Snowflake 390100,
  390144, 394300-394306 (credentials rejected); SQLSTATE 28xxx;
- **permission** denied: SQL Server 229, 230, 262, 297, 300; Snowflake 3001 ("Insufficient
  privileges"); SQLSTATE 42501;
- **database** not accessible: SQL Server 4060, 916, 4062, 4063;
- **object** not found: SQL Server 208, 207, 2812, 4121 (SQLSTATE 42S02, 42S22); Snowflake 2003
  ("does not exist or not authorized"), 2043, 606 ("No active warehouse");
- **config** / drift / data: the project's ``NOT_RETRYABLE`` (orchestration/tasks.py: retention gap,
  rewound source, schema drift, unsupported type, table not captured, table config, config).

Transient (retried as before): network and connection errors (DB-Lib 20002, 20003, 20004, 20006,
20009, 20017, 20047; SQL Server 233, 10053, 10054, 10060, 64; SQLSTATE 08xxx), deadlock 1205, lock
timeout 1222, lock resources 1204, timeouts (SQLSTATE HYT00/HYT01), Azure SQL's transient errors
(40197, 40501, 40613, 10928, 10929, 49918-49920), Snowflake session and token expiry (390110-390115,
390112 "session expired", 390114 "authentication token expired"), the connector's connection
errors (250001, 250003, 251011) and HTTP 5xx answers. Anything not listed keeps its retries too.

Where the lists come from:

- Microsoft Learn, *Database engine events and errors* (the error numbers and their texts, by range:
  https://learn.microsoft.com/sql/relational-databases/errors-events/database-engine-events-and-errors-0-to-999,
  ...-4000-to-4999, ...-18000-to-18999), the pages on MSSQLSERVER_18456 and MSSQLSERVER_4060, and
  Microsoft.Data.SqlClient's ``SqlConfigurableRetryFactory.BaselineTransientErrors`` (its list of
  transient numbers: 1204, 1205, 1222, 233, 10053, 10054, 10060, 40197, 40501, 40613, 49918-49920 ...).
  That list also holds **4060**, for Azure SQL Database's failovers; on a SQL Server instance 4060
  means the database does not exist, is offline or the login has no user in it, which waiting a
  few minutes does not fix: it opens the incident at once here, and the next scheduled run tries
  again (and resolves the incident when it passes).
- FreeTDS DB-Library's message numbers (``include/sybdb.h``: SYBECONN 20009, SYBETIME 20003,
  SYBEREAD 20004, SYBEWRIT 20006, SYBEDDNE 20047) as pymssql passes them on.
- Snowflake: the connector's own code lists (snowflake-connector-python ``errorcode.py`` and
  ``network.py``: ``CREDENTIAL_REJECTION_GS_CODES``, the session and master-token codes it renews
  on), the docs' *Federated authentication and SSO troubleshooting* / login-history error codes
  (https://docs.snowflake.com/en/user-guide/errors-saml), and the SQLSTATE each error carries
  (ANSI/ODBC classes: 08 connection, 28 authorization, 42 syntax or access rule, 57 operator
  intervention); Snowflake publishes no single list of its SQL error numbers.

**The pipeline relies on some "object not found" errors, and keeps them**: the health checks read
``msdb.dbo.cdc_jobs`` and ``sys.dm_db_index_usage_stats`` and treat 208 / 229 there as "not
available" (health.py catches them before they reach a task boundary); the status page's progress
estimate does the same. Only a 208 that ends a task is classified, and there no retry helps: a
capture instance dropped while its window was read (``cdc.<instance>_CT``) stays dropped for every
retry of that window, and the next run re-plans (roll-over) or names the table as not captured.

**As a person reads it** (:func:`error_info`): the server's message decoded (no bytes repr, no
HTML entity, no literal ``\\n``), one line per message, the error number first and the exception
class after, e.g. ``DB-Lib 20009: Unable to connect: Adaptive Server is unavailable or does not
exist (127.0.0.1); Net-Lib error during Connection refused (111)`` then
``pymssql.exceptions.OperationalError``. pymssql's trailer "General SQL Server error: Check
messages from the SQL Server" (20018) says nothing and is left out, repeated lines once.

**Fingerprint** (:func:`fingerprint`): the scope (a source), the error class (exception class and
number) and the message with numbers, LSNs, hex, quoted names, ids and the source's table names
replaced by placeholders — so the same cause on five tables, in ``plan`` or in ``extract_load``, in
this run or the next, is one fingerprint, and the table is not part of it.

Free of Airflow but for ``AirflowException``'s name (checked by class name, not imported).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from include.cdc_pipeline.errors import DriverLoadError

# -- the tables -------------------------------------------------------------------------------------
# kind -> (what it means for on-call, the docs/runbook.md section that says what to do)
KINDS: dict[str, tuple[str, str]] = {
    "driver": ("a driver cannot load its native library", "Task failed (errors by cause)"),
    "login": ("login failed", "Source or Snowflake unreachable, login or permission errors"),
    "permission": ("permission denied", "Source or Snowflake unreachable, login or permission errors"),
    "database": ("database not accessible", "Source or Snowflake unreachable, login or permission errors"),
    "object": ("object not found", "Source or Snowflake unreachable, login or permission errors"),
    "config": ("needs a person (config, drift or data)", "Task failed (errors by cause)"),
    "network": ("network or connection error", "Source or Snowflake unreachable, login or permission errors"),
    "lock": ("deadlock or lock timeout", "Task failed (errors by cause)"),
    "timeout": ("timeout", "Source or Snowflake unreachable, login or permission errors"),
    "session": ("Snowflake session or token expired", "Source or Snowflake unreachable, login or permission errors"),
    "service": ("service unavailable (HTTP 5xx)", "Source or Snowflake unreachable, login or permission errors"),
    "other": ("unclassified error", "Task failed (errors by cause)"),
}
NOT_RETRYABLE_KINDS = frozenset({"driver", "login", "permission", "database", "object", "config"})

SQLSERVER: dict[int, str] = {
    **dict.fromkeys((18456, 18452, 18470, 18486, 18487, 18488), "login"),
    **dict.fromkeys((229, 230, 262, 297, 300), "permission"),
    **dict.fromkeys((4060, 916, 4062, 4063), "database"),
    **dict.fromkeys((208, 207, 2812, 4121), "object"),
    **dict.fromkeys((1205, 1222, 1204), "lock"),
    **dict.fromkeys((20002, 20004, 20006, 20009, 20017, 20047, 233, 10053, 10054, 10060, 64), "network"),
    **dict.fromkeys((20003, -2), "timeout"),
    **dict.fromkeys((40197, 40501, 40613, 10928, 10929, 49918, 49919, 49920), "service"),
}
SNOWFLAKE: dict[int, str] = {
    **dict.fromkeys((390100, 390144, 394300, 394301, 394302, 394303, 394304, 394305, 394306), "login"),
    3001: "permission",
    **dict.fromkeys((2003, 2043, 606), "object"),
    **dict.fromkeys((390110, 390111, 390112, 390113, 390114, 390115), "session"),
    **dict.fromkeys((250001, 250002, 250003, 250005), "network"),
    **dict.fromkeys((251011, 604, 630), "timeout"),
}
# SQLSTATE (mssql-python; Snowflake when its number is not listed above), by prefix, longest first.
SQLSTATES: dict[str, str] = {
    "28": "login",
    "42501": "permission",
    "42S02": "object",
    "42S22": "object",
    "08": "network",
    "40001": "lock",
    "HYT": "timeout",
    "57": "timeout",
}


@dataclass(frozen=True)
class ErrorInfo:
    """An error as a person reads it, and what it is."""

    lines: tuple[str, ...]  # one line per message, the error number first
    exc_class: str  # module.Class of the original error
    number: int | None = None
    sqlstate: str | None = None
    system: str | None = None  # "SQL Server", "DB-Lib", "Snowflake", "Snowflake connector"

    @property
    def text(self) -> str:
        """Every line, then the exception class."""
        return "\n".join([*self.lines, self.exc_class])

    @property
    def summary(self) -> str:
        """One line: the first message and the short class name."""
        first = self.lines[0] if self.lines else "(no message)"
        return f"{first} ({self.exc_class.rsplit('.', 1)[-1]})"


@dataclass(frozen=True)
class Verdict:
    """What an error is, and whether a retry can fix it."""

    kind: str
    retryable: bool

    @property
    def meaning(self) -> str:
        return KINDS[self.kind][0]

    @property
    def runbook(self) -> str:
        return KINDS[self.kind][1]


# -- the error behind Airflow's wrapper ---------------------------------------------------------------
def root_error(exc: BaseException) -> BaseException:
    """The error a task raised, behind ``fail_fast``'s ``AirflowFailException`` (its ``__cause__``)."""
    seen = 0
    while type(exc).__name__ == "AirflowFailException" and exc.__cause__ is not None and seen < 5:
        exc, seen = exc.__cause__, seen + 1
    return exc


def _class_name(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


# -- readable text ------------------------------------------------------------------------------------
_DBLIB = re.compile(r"DB-Lib error message (\d+), severity \d+:\s*(.*?)(?=DB-Lib error message \d+, severity|\Z)", re.S)
_BYTES_REPR = re.compile(r"""b(['"])((?:\\.|(?!\1).)*)\1""")
_ODBC_PREFIX = re.compile(r"^(\[[^\]]*\])+\s*")


def _one_line(text: str) -> str:
    """A message that spans lines as one line: its parts joined with "; " (with a blank after a
    part that ends in a colon, "SQL compilation error: Object ...")."""
    out = ""
    for part in (p.strip() for p in text.replace("\\n", "\n").splitlines()):
        if part:
            out += ("" if not out else " " if out.endswith(":") else "; ") + part
    return out


def _decoded(text: str) -> str:
    """Python bytes reprs (``b'...\\n...'``) inside a message, decoded."""

    def decode(match: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            return match.group(0)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    return _BYTES_REPR.sub(decode, text)


def _unique(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(line for line in lines if line))


def _pymssql_info(exc: BaseException) -> ErrorInfo | None:
    args = exc.args
    if len(args) == 1 and isinstance(args[0], tuple) and len(args[0]) == 2:
        number, message = args[0]  # a failed login / connect
    elif len(args) >= 2 and isinstance(args[0], int):
        number, message = args[0], args[1]  # a failed statement
    else:
        return None
    if not isinstance(number, int):
        return None
    text = message.decode("utf-8", "replace") if isinstance(message, bytes | bytearray) else str(message)
    lead = text.split("DB-Lib error message", 1)[0]
    library = [int(n) for n in re.findall(r"DB-Lib error message (\d+),", text)]
    if not lead.strip() and library and 20018 not in library:
        # The server sent no message (no text of its own, no 20018 "check messages from the
        # server"): the client library failed, e.g. a refused connection. pymssql then still
        # reports the number of the last server message of the process (a failed login minutes
        # earlier gives a refused connection the number 18456): the library's number is the one.
        number = library[0]
    lines = [f"{_system(number)} {number}: {_one_line(lead)}"] if lead.strip() else []
    for found in _DBLIB.finditer(text):
        dblib = int(found.group(1))
        if dblib != 20018:  # "General SQL Server error: Check messages from the SQL Server"
            lines.append(f"DB-Lib {dblib}: {_one_line(found.group(2))}")
    if not any(line.startswith(f"{_system(number)} {number}:") for line in lines):
        what = KINDS[SQLSERVER[number]][0] if number in SQLSERVER else "no message text from the driver"
        lines.insert(0, f"{_system(number)} {number}: {what}")
    return ErrorInfo(_unique(lines), _class_name(exc), number, None, _system(number))


def _system(number: int) -> str:
    return "DB-Lib" if 20000 <= number <= 20999 else "SQL Server"


def _snowflake_info(exc: BaseException) -> ErrorInfo:
    errno = getattr(exc, "errno", None)
    errno = errno if isinstance(errno, int) and errno > 0 else None
    sqlstate = getattr(exc, "sqlstate", None)
    sqlstate = sqlstate if isinstance(sqlstate, str) and sqlstate not in ("", "n/a") else None
    message = getattr(exc, "raw_msg", None) or getattr(exc, "msg", None) or str(exc)
    system = "Snowflake connector" if errno and 250000 <= errno < 260000 else "Snowflake"
    label = f"{system} {errno:06d}" if errno else system
    label += f" ({sqlstate})" if sqlstate else ""
    return ErrorInfo((f"{label}: {_one_line(_decoded(str(message)))}",), _class_name(exc), errno, sqlstate, system)


@cache
def _mssql_python_states() -> dict[str, str]:
    """mssql-python's ``driver_error`` texts → the SQLSTATE its own table maps to them."""
    try:
        from mssql_python.exceptions import sqlstate_to_exception
    except Exception:  # the driver's package is optional here (it loads a native library on import)
        return {}
    states: dict[str, str] = {}
    for state in ("28000", "42501", "42S02", "42S22", "42000", "40001", "HYT00", "HYT01", "08001", "08S01", "08004"):
        mapped = sqlstate_to_exception(state, "")
        if mapped is not None:
            states.setdefault(str(getattr(mapped, "driver_error", "")), state)
    return states


def _mssql_python_info(exc: BaseException) -> ErrorInfo:
    driver = str(getattr(exc, "driver_error", "") or "")
    ddbc = str(getattr(exc, "ddbc_error", "") or "")
    state = _mssql_python_states().get(driver)
    label = f"SQL Server (SQLSTATE {state})" if state else "SQL Server"
    lines = [f"{label}: {_one_line(_ODBC_PREFIX.sub('', ddbc))}"] if ddbc else []
    lines.append(f"mssql-python: {driver}") if driver else None
    return ErrorInfo(_unique(lines) or (str(exc),), _class_name(exc), None, state, "SQL Server")


def error_info(exc: BaseException) -> ErrorInfo:
    """The error (behind ``fail_fast``'s wrapper) as a person reads it."""
    exc = root_error(exc)
    module = type(exc).__module__
    if module.startswith("pymssql") and (found := _pymssql_info(exc)) is not None:
        return found
    if module.startswith("snowflake.connector"):
        return _snowflake_info(exc)
    if module.startswith("mssql_python"):
        return _mssql_python_info(exc)
    text = _decoded(str(exc))
    lines = _unique(line.strip() for line in text.replace("\\n", "\n").splitlines())
    return ErrorInfo(lines or (type(exc).__name__,), _class_name(exc))


# -- classification -----------------------------------------------------------------------------------
def _by_sqlstate(sqlstate: str | None) -> str | None:
    if not sqlstate:
        return None
    for prefix in sorted(SQLSTATES, key=len, reverse=True):
        if sqlstate.upper().startswith(prefix):
            return SQLSTATES[prefix]
    return None


def classify(exc: BaseException, project: Sequence[type[BaseException]] = ()) -> Verdict:
    """What ``exc`` (behind ``fail_fast``'s wrapper) is and whether a retry can fix it. ``project``:
    the project's own errors that need a person (``tasks.NOT_RETRYABLE``, passed in by ``fail_fast``);
    an error ``fail_fast`` already wrapped counts as one of them."""
    wrapped = type(exc).__name__ == "AirflowFailException"
    exc = root_error(exc)
    if isinstance(exc, DriverLoadError):
        return Verdict("driver", False)
    if isinstance(exc, tuple(project)):
        return Verdict("config", False)
    info = error_info(exc)
    kind: str | None = None
    if info.system in ("SQL Server", "DB-Lib") and info.number is not None:
        kind = SQLSERVER.get(info.number)
    elif info.system and info.system.startswith("Snowflake") and info.number is not None:
        kind = SNOWFLAKE.get(info.number)
    kind = kind or _by_sqlstate(info.sqlstate)
    if kind is None:
        kind = _by_text(exc, info)
    if kind is None:
        kind = "config" if wrapped else "other"  # fail_fast decided already (another NOT_RETRYABLE)
    return Verdict(kind, kind not in NOT_RETRYABLE_KINDS)


def _by_text(exc: BaseException, info: ErrorInfo) -> str | None:
    """Errors without a number: Python's own network errors, HTTP 5xx answers, timeouts."""
    name = type(exc).__name__
    if isinstance(exc, ConnectionError) or name in ("ConnectionError", "ConnectTimeout"):
        return "network"
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return "timeout"
    http = re.search(r"\bHTTP(?: error)?[ :]*5\d\d\b|\b50[234] (?:Bad Gateway|Service Unavailable|Gateway)", info.text)
    if name in ("InternalServerError", "ServiceUnavailableError", "GatewayTimeoutError", "BadGatewayError") or http:
        return "service"
    return None


def not_retryable(exc: BaseException, project: Sequence[type[BaseException]] = ()) -> Verdict | None:
    """The verdict when no retry can fix ``exc``, else None (Airflow's own exceptions: None)."""
    if any(cls.__name__ == "AirflowException" for cls in type(exc).__mro__):
        return None  # skip, fail, reschedule: Airflow's control flow, never reclassified
    verdict = classify(exc, project)
    return None if verdict.retryable else verdict


# -- fingerprint --------------------------------------------------------------------------------------
_PLACEHOLDERS = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{16,}\b", re.I), "<hex>"),  # LSNs, query ids
    (re.compile(r"\d{4}-\d\d-\d\d[t ]\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:?\d\d|z)?", re.I), "<time>"),
    (re.compile(r"N?'(?:[^']|'')*'"), "'<name>'"),
    (re.compile(r'"[^"]*"'), '"<name>"'),
    (re.compile(r"\[[^\]\s]*\]"), "[<name>]"),
    (re.compile(r"\d+"), "#"),
)


def normalise(text: str, names: Iterable[str] = ()) -> str:
    """``text`` without what differs between occurrences of one cause: the given (table) names,
    quoted names, ids, hex and LSNs, times and numbers; lower-cased, blanks collapsed."""
    out = text.lower()
    if tables := _names_pattern(tuple(sorted({n.lower() for n in names if n}, key=len, reverse=True))):
        out = tables.sub("<table>", out)
    for pattern, placeholder in _PLACEHOLDERS:
        out = pattern.sub(placeholder, out)
    return re.sub(r"\s+", " ", out).strip()


@cache
def _names_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for a desk's table names (longest first), compiled once per set of names."""
    if not names:
        return None
    return re.compile(rf"(?<![\w$])(?:{'|'.join(re.escape(n) for n in names)})(?![\w$])")


# Kinds that say a server cannot be reached or will not take the login, whatever statement ran:
# each driver words them its own way (pymssql's DB-Lib 20009 and mssql-python's SQLSTATE 08001 for
# one refused connection; the stream reads with mssql-python, the plan with pymssql).
SERVER_KINDS = frozenset({"driver", "network", "timeout", "service", "session", "login", "database"})


def fingerprint(scope: str, exc: BaseException, names: Iterable[str] = ()) -> str:
    """12 hex characters naming (scope, error class, normalised message): one incident per cause.
    For a server that cannot be reached or refuses the login (:data:`SERVER_KINDS`) the class is
    the server and the kind, not the driver's exception and wording: an outage that starts during
    one run's mssql-python read and goes on in the next run's pymssql plan is one cause."""
    info = error_info(exc)
    kind = classify(exc).kind
    if kind in SERVER_KINDS and info.system:
        server = "Snowflake" if info.system.startswith("Snowflake") else "SQL Server"
        return fingerprint_of(scope, server, kind)
    cls = f"{info.exc_class}:{info.number if info.number is not None else info.sqlstate or ''}"
    return fingerprint_of(scope, cls, normalise("\n".join(info.lines), names))


def fingerprint_of(*parts: str) -> str:
    """The fingerprint of already normalised parts (health findings, deadline misses)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
