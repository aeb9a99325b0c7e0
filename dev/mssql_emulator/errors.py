"""SQL Server errors, raised as pymssql's own exception classes.

Callers (the production reader, Airflow's hook) catch pymssql exceptions and inspect
``exc.args == (number, message_bytes)`` (what pymssql raises for a failed statement; only a failed
login carries the pair as ``args[0]``); pymssql picks the class from the error number
(``prog_errors``/``integrity_errors`` in ``_pymssql.pyx``) and appends the DB-Lib trailer to the
message. Reproducing both exactly lets the same except-clauses work against the emulator.
"""

from __future__ import annotations

import re

import pymssql.exceptions as pe

# The numbers pymssql maps to ProgrammingError / IntegrityError; everything else is OperationalError.
PROGRAMMING_ERRORS = frozenset({102, 207, 208, 2812, 4104})
INTEGRITY_ERRORS = frozenset({515, 547, 2601, 2627})

_TRAILER = (
    "DB-Lib error message 20018, severity {severity}:\nGeneral SQL Server error: Check messages from the SQL Server\n"
)


class SqlServerError(Exception):
    """An error as the server reports it, before conversion to a pymssql exception.

    Internal code raises this; the DB-API layer converts it with :func:`to_pymssql` so the
    server process can also ship (number, message, severity) to its clients unchanged.
    """

    def __init__(self, number: int, message: str, severity: int = 16, *, aborts_transaction: bool = False):
        super().__init__(number, message)
        self.number = number
        self.message = message
        self.severity = severity
        # True when the emulator had to roll the whole transaction back (XACT_ABORT-like).
        self.aborts_transaction = aborts_transaction


def message_bytes(message: str, severity: int = 16) -> bytes:
    """The exact bytes pymssql puts in ``args[1]`` of a statement's error."""
    return (message + _TRAILER.format(severity=severity)).encode("utf-8")


def exception_class(number: int) -> type[pe.DatabaseError]:
    if number in PROGRAMMING_ERRORS:
        return pe.ProgrammingError
    if number in INTEGRITY_ERRORS:
        return pe.IntegrityError
    return pe.OperationalError


def to_pymssql(number: int, message: str, severity: int = 16) -> pe.DatabaseError:
    """Build the pymssql exception pymssql itself would raise for this server error."""
    return exception_class(number)(number, message_bytes(message, severity))


# -- constructors for the errors the emulator reports ------------------------------------------
def invalid_object(name: str) -> SqlServerError:
    return SqlServerError(208, f"Invalid object name '{name}'.")


def invalid_column(name: str) -> SqlServerError:
    return SqlServerError(207, f"Invalid column name '{name}'.")


def syntax_error(near: str) -> SqlServerError:
    return SqlServerError(102, f"Incorrect syntax near '{near}'.", 15)


def unknown_procedure(name: str) -> SqlServerError:
    return SqlServerError(2812, f"Could not find stored procedure '{name}'.")


def insufficient_arguments(function_prefix: str) -> SqlServerError:
    """Msg 313: how cdc.fn_cdc_get_all/net_changes_<ci> reports an LSN range outside the
    instance's validity interval (the real message truncates the function name to '... ')."""
    return SqlServerError(
        313,
        f"An insufficient number of arguments were supplied for the procedure or function {function_prefix} ... .",
    )


def pk_violation(constraint: str, table: str, key: str) -> SqlServerError:
    return SqlServerError(
        2627,
        f"Violation of PRIMARY KEY constraint '{constraint}'. Cannot insert duplicate key in object "
        f"'{table}'. The duplicate key value is ({key}).",
        14,
    )


def null_violation(column: str, table: str, op: str = "INSERT") -> SqlServerError:
    return SqlServerError(
        515,
        f"Cannot insert the value NULL into column '{column}', table '{table}'; column does not allow "
        f"nulls. {op} fails.",
    )


def deadlock_victim(spid: int) -> SqlServerError:
    return SqlServerError(
        1205,
        f"Transaction (Process ID {spid}) was deadlocked on lock resources with another process and has "
        "been chosen as the deadlock victim. Rerun the transaction.",
        13,
        aborts_transaction=True,
    )


_COLUMN_NOT_FOUND = re.compile(r'Referenced column "?([^"!]+)"? not found', re.IGNORECASE)
_TABLE_NOT_FOUND = re.compile(r"Table with name (.+?) does not exist", re.IGNORECASE)
_FUNC_NOT_FOUND = re.compile(r"(?:Scalar|Table|Aggregate)? ?Function with name ([^ !]+) does not exist", re.IGNORECASE)
_REF_TABLE_NOT_FOUND = re.compile(r'Referenced table "([^"]+)" not found', re.IGNORECASE)
_DUP_KEY = re.compile(r'Duplicate key "(.*)" violates (primary key|unique) constraint', re.IGNORECASE | re.DOTALL)
# DuckDB's wording when an UPDATE or a COMMIT finds the duplicate: values only, no column names
_DUP_VALUES = re.compile(r'PRIMARY KEY or UNIQUE constraint violation: duplicate key "(.*)"', re.DOTALL)
_NOT_NULL = re.compile(r"NOT NULL constraint failed: ([^.\s]+)\.(\S+)", re.IGNORECASE)
_CONVERT = re.compile(r"Could not convert string '([^']*)' to (\w+)", re.IGNORECASE)


def from_duckdb(
    exc: Exception,
    *,
    table: str | None = None,
    pk_name: str | None = None,
    names: dict[str, str] | None = None,
    spid: int = 51,
) -> SqlServerError:
    """Map a DuckDB exception to the SQL Server error a client would have seen.

    ``names`` maps lower-cased bare object names to the name as the statement spelled it, so that
    'Invalid object name' quotes what the user wrote (SQL Server quotes the reference, not the id).
    """
    text = str(exc)
    first = text.split("\n", 1)[0]
    kind = type(exc).__name__
    if kind == "TransactionException" and "Conflict" in text:
        return deadlock_victim(spid)
    match = _TABLE_NOT_FOUND.search(first)
    if match:
        bare = match.group(1).strip('"')
        return invalid_object((names or {}).get(bare.lower(), bare))
    match = _COLUMN_NOT_FOUND.search(first)
    if match:
        name = match.group(1)
        if "." in name:
            return SqlServerError(4104, f'The multi-part identifier "{name}" could not be bound.')
        return invalid_column(name)
    match = _REF_TABLE_NOT_FOUND.search(first)
    if match:
        return SqlServerError(4104, f'The multi-part identifier "{match.group(1)}" could not be bound.')
    match = _FUNC_NOT_FOUND.search(first)
    if match:
        name = match.group(1).strip('"')
        if "Table Function" in first:
            return invalid_object((names or {}).get(name.lower(), name))
        return SqlServerError(195, f"'{name}' is not a recognized built-in function name.", 15)
    match = _DUP_KEY.search(text)
    if match:
        key = ", ".join(part.split(": ", 1)[-1] for part in match.group(1).split(", "))
        return pk_violation(pk_name or "PK", table or "?", key)
    match = _DUP_VALUES.search(text)
    if match:
        return pk_violation(pk_name or "PK", table or "?", match.group(1))
    match = _NOT_NULL.search(first)
    if match:
        return null_violation(match.group(2), table or match.group(1))
    match = _CONVERT.search(first)
    if match:
        return SqlServerError(
            245,
            f"Conversion failed when converting the varchar value '{match.group(1)}' "
            f"to data type {match.group(2).lower()}.",
        )
    if kind == "ParserException":
        near = re.search(r'at or near "([^"]*)"', first)
        return syntax_error(near.group(1) if near else first)
    if kind in ("ConversionException", "OutOfRangeException"):
        return SqlServerError(8114, f"Error converting data type. ({first})")
    if kind == "ConstraintException":
        return SqlServerError(547, f"The statement conflicted with a constraint. ({first})")
    return SqlServerError(50000, f"Emulator error: {first}")
