"""Static SQL templates (include/sql) and identifier quoting for dynamic statements.

Static statements live as .sql files; statements whose column lists depend on the table are
built from identifiers that config validation already restricted, and are quoted here with
sqlglot so that no name can break out of its identifier.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlglot import exp

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


@cache
def template(relative: str) -> str:
    """The text of ``include/sql/<relative>``, comments and all (both servers accept them)."""
    return (SQL_DIR / relative).read_text(encoding="utf-8").strip()


def tsql_ident(name: str) -> str:
    """``[name]`` with SQL Server's escaping."""
    return exp.to_identifier(name, quoted=True).sql(dialect="tsql")


def sf_ident(name: str) -> str:
    """A Snowflake identifier, upper-cased and always quoted: ``"NAME"`` equals unquoted NAME,
    and quoting protects reserved words (ORDER, GROUP) that source tables often use."""
    return exp.to_identifier(name.upper(), quoted=True).sql(dialect="snowflake")


def sf_table(*parts: str) -> str:
    return ".".join(sf_ident(part) for part in parts)
