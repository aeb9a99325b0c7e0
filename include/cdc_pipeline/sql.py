"""Static SQL templates (include/sql), identifier quoting and parameter plumbing of both dialects.

Static statements live as .sql files; statements whose column lists depend on the table are
built here and in the reader/warehouse from names that can be anything SQL Server accepts
(spaces, quotes, ``]``, ``%``, Unicode letters; README "Table and column names"). One function per
dialect quotes a name (``tsql_ident``, ``sf_ident``), so no name can break out of its identifier,
and values always travel as driver parameters.

Both drivers format parameters on the client, by scanning the statement text for placeholders:
a ``%`` inside a quoted name would be taken for one. ``sf_params`` and ``tsql_params`` make the
text safe for the driver without touching what the server receives (see each).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from sqlglot import exp

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


@cache
def template(relative: str) -> str:
    """The text of ``include/sql/<relative>``, comments and all (both servers accept them)."""
    return (SQL_DIR / relative).read_text(encoding="utf-8").strip()


def tsql_ident(name: str) -> str:
    """``[name]`` with SQL Server's escaping (``]`` doubled): the one T-SQL identifier quoter."""
    return exp.to_identifier(name, quoted=True).sql(dialect="tsql")


def tsql_name(*parts: str) -> str:
    """A multi-part T-SQL object name, every part quoted: ``[dbo].[Order Details]``. Also the form
    ``OBJECT_ID()`` expects as its (parameter) argument: unquoted, a name with ``.`` or ``]`` in it
    would be split or rejected there."""
    return ".".join(tsql_ident(part) for part in parts)


def tsql_string(value: str) -> str:
    """An ``N'…'`` literal (quotes doubled) for T-SQL that is shown to a person to run by hand
    (the ``sp_cdc_enable_table`` call in errors); statements the pipeline runs pass values as
    parameters instead."""
    return "N'" + value.replace("'", "''") + "'"


def sf_ident(name: str) -> str:
    """A Snowflake identifier, upper-cased and always quoted: ``"NAME"`` equals unquoted NAME, and
    quoting keeps reserved words (ORDER, GROUP) and any other character (``"ORDER DETAILS"``,
    ``"QTY%"``, ``"A""B"``) literal. The one Snowflake identifier quoter."""
    return exp.to_identifier(name.upper(), quoted=True).sql(dialect="snowflake")


def sf_table(*parts: str) -> str:
    return ".".join(sf_ident(part) for part in parts)


# Quoted tokens of each dialect, in which a ``%`` is text, never a placeholder: string literals,
# quoted identifiers, comments. Snowflake string literals also take backslash escapes
# (docs.snowflake.com/en/sql-reference/data-types-text, "Escape sequences"); T-SQL's do not.
_SF_QUOTED = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/""", re.S)
_TSQL_QUOTED = re.compile(r"""\[(?:[^\]]|\]\])*\]|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/""", re.S)
# pymssql 2.4's placeholder patterns (src/pymssql/_mssql.pyx, _re_pos_param / _re_name_param).
PYMSSQL_POSITIONAL = re.compile(r"%[sd]")
PYMSSQL_NAMED_START = "%("


def sf_params(sql: str) -> str:
    """The statement as the Snowflake connector must receive it *with* parameters.

    The connector fills ``%(name)s`` placeholders with Python's ``%`` operator, so a ``%`` in a
    quoted name (``"QTY%"``) or literal must be written ``%%``; placeholders stay as they are."""
    return _SF_QUOTED.sub(lambda m: m.group(0).replace("%", "%%"), sql)


def tsql_params(sql: str, params: Sequence[Any]) -> tuple[str, tuple[Any, ...] | dict[str, Any]]:
    """The statement and parameters as pymssql must receive them.

    pymssql substitutes parameters on the client with two regular expressions over the whole
    text, and has no escape: ``%s``/``%d`` anywhere is a positional placeholder, ``%(…)s`` a named
    one. A quoted name holding ``%s`` (``[Rate%sum]``) would take a value meant for a placeholder.
    The positional form is kept unless a quoted token contains ``%s``/``%d``; then the real
    placeholders (those outside quoted tokens) become named ones. Only a statement whose quoted
    names contain both forms cannot be carried; it is refused naming the reason.
    """
    quoted = [m.group(0) for m in _TSQL_QUOTED.finditer(sql)]
    if not any(PYMSSQL_POSITIONAL.search(q) for q in quoted):
        return sql, tuple(params)
    if any(PYMSSQL_NAMED_START in q for q in quoted):
        raise ValueError(
            "pymssql cannot carry this statement: its quoted names contain both '%s' and '%(' "
            "(the driver takes either for a parameter placeholder and has no escape)"
        )
    values = iter(params)
    named: dict[str, Any] = {}

    def bare(text: str) -> str:
        def name(_: re.Match[str]) -> str:
            key = f"p{len(named)}"
            named[key] = next(values)
            return f"%({key})s"

        return PYMSSQL_POSITIONAL.sub(name, text)

    out, pos = [], 0
    for match in _TSQL_QUOTED.finditer(sql):
        out += [bare(sql[pos : match.start()]), match.group(0)]
        pos = match.end()
    out.append(bare(sql[pos:]))
    if len(named) != len(params):
        raise ValueError(f"statement has {len(named)} placeholder(s) for {len(params)} parameter(s)")
    return "".join(out), named
