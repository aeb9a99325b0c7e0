"""T-SQL text → DuckDB SQL: parameter binding, batch splitting, DDL parsing, the transform pass.

sqlglot parses T-SQL well but its DuckDB output needs fixing for the emulator (see DESIGN.md
"Facts established"): SQL Server types, ``N'…'`` literals, bracketed function names, LSN literal
padding, ``GETDATE()`` against the emulator clock, ``OBJECT_ID()``, unnamed result columns and
the CDC table-valued functions (which must raise Msg 313 *before* running, so they are expanded
by the session, not by a DuckDB macro).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlglot
from pymssql import _mssql
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from . import errors
from .catalog import LSN_COLUMNS
from .collation import ColumnScope, apply_collation
from .sqltypes import SqlType, UnknownTypeError, make_type
from .storage import round_datetime

logging.getLogger("sqlglot").setLevel(logging.ERROR)

TSQL = Dialect.get_or_raise("tsql")
NONAME_PREFIX = "__emu_noname_"


# -- parameters ------------------------------------------------------------------------------
def bind_params(sql: str, params: Any) -> str:
    """Substitute pymssql-style parameters exactly as pymssql does (client side, same quoting).

    pymssql leaves the text untouched when ``params`` is empty/None (so a literal ``%`` survives).
    """
    if params is None or (isinstance(params, (tuple, list, dict)) and len(params) == 0):
        return sql
    if isinstance(params, list):
        params = tuple(params)
    if not isinstance(params, (tuple, dict)):
        params = (params,)
    try:
        return _mssql.substitute_params(sql, params).decode("utf-8")
    except (ValueError, KeyError, TypeError) as exc:  # what pymssql raises for bad params
        raise errors.SqlServerError(8179, f"Could not substitute parameters: {exc}") from exc


def literal_sql(value: Any) -> str:
    """A Python value as a T-SQL literal (for variables and emulator-built statements)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex().upper()
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, (date, time, UUID)):
        return f"'{value}'"
    return "N'" + str(value).replace("'", "''") + "'"


# -- splitting -------------------------------------------------------------------------------
@dataclass
class RawStatement:
    """One statement of a batch: its original text and tokens."""

    text: str
    tokens: list[Token]

    @property
    def first_word(self) -> str:
        return self.tokens[0].text.upper() if self.tokens else ""


class _BatchTokenizer(TSQL.tokenizer_class):  # type: ignore[name-defined,misc]
    """T-SQL's tokenizer, except that ``END`` after ``;`` or ``BEGIN`` is a keyword, not a command
    swallowing the rest of the statement as text (``IF … BEGIN …; END ELSE …``)."""

    COMMANDS = TSQL.tokenizer_class.COMMANDS - {TokenType.END}


# A tokenizer keeps its position and tokens on the instance while it runs: one per thread (the
# server serves each connection from a thread of its own), never one shared by all.
_TOKENIZERS = threading.local()


def _tokenizer() -> _BatchTokenizer:
    tokenizer = getattr(_TOKENIZERS, "tokenizer", None)
    if tokenizer is None:
        tokenizer = _TOKENIZERS.tokenizer = _BatchTokenizer(dialect=TSQL)
    return tokenizer


# BEGIN followed by these is a statement (BEGIN TRAN …), not the start of a statement block
_BEGIN_STATEMENTS = {"TRAN", "TRANSACTION", "DISTRIBUTED", "TRY", "CATCH", "DIALOG", "CONVERSATION"}


def _opens_block(tokens: list[Token], i: int, in_statement: bool) -> bool:
    nxt = tokens[i + 1].text.upper() if i + 1 < len(tokens) else ""
    return tokens[i].token_type == TokenType.BEGIN and in_statement and nxt not in _BEGIN_STATEMENTS


def split_batch(sql: str) -> list[RawStatement]:
    """Split a batch at top-level semicolons (T-SQL's optional terminators). A ``BEGIN … END``
    statement block of an IF, and an ``ELSE`` after a semicolon, stay in their IF statement."""
    try:
        tokens = _tokenizer().tokenize(sql)
    except sqlglot.errors.TokenError as exc:
        raise errors.syntax_error(str(exc)[:60]) from exc
    out: list[RawStatement] = []
    current: list[Token] = []
    depth = blocks = cases = 0
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
        elif tok.token_type == TokenType.R_PAREN:
            depth -= 1
        elif tok.token_type == TokenType.CASE:
            cases += 1
        elif _opens_block(tokens, i, bool(current)):
            blocks += 1
        elif tok.token_type == TokenType.END:
            if cases:
                cases -= 1
            elif blocks:
                blocks -= 1
        if tok.token_type == TokenType.SEMICOLON and depth <= 0 and not blocks:
            if i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.ELSE and current:
                continue  # IF … <statement>; ELSE …: one statement
            if current:
                out.append(RawStatement(sql[current[0].start : current[-1].end + 1], current))
            current = []
            continue
        current.append(tok)
    if current:
        out.append(RawStatement(sql[current[0].start : current[-1].end + 1], current))
    return out


_STATEMENT_WORDS = {
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "EXEC", "EXECUTE", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "SET", "DECLARE", "BEGIN", "COMMIT", "ROLLBACK", "SAVE", "IF", "WITH", "USE", "DBCC", "GRANT", "DENY",
    "REVOKE", "PRINT", "RETURN",
}  # fmt: skip


def _branch_end(tokens: list[Token], start: int) -> int:
    """Index after the IF branch starting at ``start``: a ``BEGIN … END`` block, or one statement up
    to a top-level ELSE."""
    if _opens_block(tokens, start, True):
        blocks = cases = 0
        for i in range(start, len(tokens)):
            t = tokens[i].token_type
            if t == TokenType.CASE:
                cases += 1
            elif t == TokenType.BEGIN and _opens_block(tokens, i, True):
                blocks += 1
            elif t == TokenType.END:
                if cases:
                    cases -= 1
                else:
                    blocks -= 1
                    if blocks == 0:
                        return i + 1
        raise errors.syntax_error("BEGIN")
    depth = cases = nested_ifs = 0
    for i in range(start, len(tokens)):
        t = tokens[i].token_type
        depth += t == TokenType.L_PAREN
        depth -= t == TokenType.R_PAREN
        if t == TokenType.CASE:
            cases += 1
        elif t == TokenType.END and cases:
            cases -= 1
        elif tokens[i].text.upper() == "IF" and i > start and tokens[i].token_type not in _NAMES:
            nested_ifs += 1
        elif t == TokenType.ELSE and depth == 0 and not cases:
            if not nested_ifs:
                return i
            nested_ifs -= 1  # this ELSE belongs to a nested IF
    return len(tokens)


_NAMES = {TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.IDENTIFIER}  # 'SELECT', [IF]: not keywords


@dataclass
class IfStatement:
    """``IF <condition> <then> [ELSE <else>]``: the T-SQL text of each part (a branch may be a
    ``BEGIN … END`` block: its inner statements)."""

    condition: str
    then: str
    otherwise: str | None


def split_if(raw: RawStatement) -> IfStatement:
    toks = raw.tokens
    base = toks[0].start

    def text(a: int, b: int) -> str:
        return raw.text[toks[a].start - base : toks[b - 1].end + 1 - base] if b > a else ""

    def branch(a: int, b: int) -> str:
        if _opens_block(toks, a, True):  # the block's statements
            return text(a + 1, b - 1)
        return text(a, b).rstrip().rstrip(";")

    depth, cond_end = 0, None
    for i in range(1, len(toks)):
        depth += toks[i].token_type == TokenType.L_PAREN
        depth -= toks[i].token_type == TokenType.R_PAREN
        if depth == 0 and i > 1 and toks[i].text.upper() in _STATEMENT_WORDS and toks[i].token_type not in _NAMES:
            cond_end = i
            break
    if cond_end is None:
        raise errors.syntax_error("IF")
    then_end = _branch_end(toks, cond_end)
    otherwise = None
    if then_end < len(toks) and toks[then_end].token_type == TokenType.SEMICOLON:
        then_end += 1
    if then_end < len(toks):
        if toks[then_end].token_type != TokenType.ELSE or then_end + 1 >= len(toks):
            raise errors.syntax_error(toks[then_end].text)
        else_end = _branch_end(toks, then_end + 1)
        otherwise = branch(then_end + 1, else_end)
    return IfStatement(text(1, cond_end), branch(cond_end, then_end), otherwise)


def parse_statement(raw: RawStatement) -> exp.Expression:
    try:
        parsed = sqlglot.parse(raw.text, read="tsql")
    except sqlglot.errors.ParseError as exc:
        near = ""
        if exc.errors:
            near = exc.errors[0].get("highlight") or ""
        raise errors.syntax_error(near or raw.first_word) from exc
    statements = [p for p in parsed if p is not None]
    if len(statements) != 1:
        raise errors.syntax_error(raw.first_word)
    return mark_source_forms(statements[0], raw.text)


def mark_source_forms(node: exp.Expression, text: str) -> exp.Expression:
    """What sqlglot's tree no longer tells apart, from the statement's text:

    * GETDATE(), CURRENT_TIMESTAMP and SYSDATETIME() parse alike; SQL Server's GETDATE() returns
      ``datetime`` (1/300 s ticks), SYSDATETIME() ``datetime2(7)``: keep the latter apart;
    * ``0x``, "(empty binary string)" ("Constants (Transact-SQL)"), parses as the name ``[0x]``:
      a two-character identifier is the constant."""
    for found in list(node.find_all(exp.CurrentTimestamp)):
        start, end = found.meta.get("start"), found.meta.get("end")
        if start is not None and end is not None and text[start : end + 1].upper() == "SYSDATETIME":
            found.replace(exp.Anonymous(this="SYSDATETIME"))
    for name in list(node.find_all(exp.Identifier)):
        start, end = name.meta.get("start"), name.meta.get("end")
        if name.name.lower() == "0x" and start is not None and end == start + 1 and isinstance(name.parent, exp.Column):
            name.parent.replace(exp.HexString(this=""))
    return node


# -- DDL: column definitions (parsed from tokens to keep SQL Server's exact type names) --------
@dataclass
class ColumnDef:
    name: str
    type: SqlType
    nullable: bool = True
    primary_key: bool = False
    default_sql: str | None = None  # T-SQL text of the DEFAULT expression
    identity: tuple[int, int] | None = None
    computed_sql: str | None = None  # ``name AS (expr) [PERSISTED]``: T-SQL text of the expression
    persisted: bool = False
    unique: str | None = None  # ``[CONSTRAINT name] UNIQUE``: the name, "" when SQL Server generates it


@dataclass
class TableDef:
    schema: str | None
    name: str
    columns: list[ColumnDef] = field(default_factory=list)
    pk: list[str] = field(default_factory=list)
    pk_name: str | None = None
    uniques: list[tuple[str, list[str]]] = field(default_factory=list)  # UNIQUE constraints ("" = unnamed)


_ELEMENT_END = {TokenType.COMMA}
_COLUMN_KEYWORDS = {
    "NOT",
    "NULL",
    "PRIMARY",
    "PRIMARY KEY",
    "CONSTRAINT",
    "IDENTITY",
    "UNIQUE",
    "COLLATE",
    "DEFAULT",
    "CHECK",
    "REFERENCES",
    "FOREIGN",
    "SPARSE",
    "ROWGUIDCOL",
    "CLUSTERED",
    "NONCLUSTERED",
}


def _ident(tok: Token) -> str:
    return tok.text


def _split_elements(tokens: list[Token]) -> list[list[Token]]:
    """Split a token list at depth-0 commas."""
    out: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
        elif tok.token_type == TokenType.R_PAREN:
            depth -= 1
        if tok.token_type == TokenType.COMMA and depth == 0:
            out.append([])
            continue
        out[-1].append(tok)
    return [e for e in out if e]


def _paren_group(tokens: list[Token], start: int) -> tuple[list[Token], int]:
    """Tokens inside the parenthesis opening at ``start``; returns (inner, index after ')')."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].token_type == TokenType.L_PAREN:
            depth += 1
        elif tokens[i].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return tokens[start + 1 : i], i + 1
    raise errors.syntax_error(tokens[start].text)


def _key_columns(tokens: list[Token]) -> list[str]:
    return [e[0].text for e in _split_elements(tokens)]


def parse_column_def(toks: list[Token], sql: str) -> ColumnDef:
    """``name type[(args)] [NULL|NOT NULL] [PRIMARY KEY] [IDENTITY(s,i)] [CONSTRAINT x] [DEFAULT expr]``."""
    if len(toks) < 2:
        raise errors.syntax_error(toks[0].text if toks else "")
    name = _ident(toks[0])
    if toks[1].text.upper() == "AS":
        return _computed_column_def(name, toks, sql)
    i = 1
    type_words = [toks[i].text.lower()]
    i += 1
    # multi-word type names (double precision, national character varying)
    while i < len(toks) and toks[i].text.upper() in ("PRECISION", "VARYING", "CHARACTER"):
        type_words.append(toks[i].text.lower())
        i += 1
    args: list[str] = []
    if i < len(toks) and toks[i].token_type == TokenType.L_PAREN:
        inner, i = _paren_group(toks, i)
        args = ["".join(t.text for t in e).lower() for e in _split_elements(inner)]
    try:
        sql_type = make_type(" ".join(type_words), args)
    except (UnknownTypeError, ValueError) as exc:
        raise errors.SqlServerError(
            2715, f"Column, parameter, or variable #{1}: Cannot find data type {' '.join(type_words)}."
        ) from exc
    col = ColumnDef(name, sql_type)
    constraint = ""
    while i < len(toks):
        word = toks[i].text.upper()
        if word == "NOT" and i + 1 < len(toks) and toks[i + 1].text.upper() == "NULL":
            col.nullable = False
            i += 2
        elif word == "NULL":
            col.nullable = True
            i += 1
        elif word in ("PRIMARY KEY", "PRIMARY"):
            col.primary_key = True
            col.nullable = False
            constraint = ""
            i += 1 if word == "PRIMARY KEY" else 2
        elif word == "IDENTITY":
            i += 1
            seed, inc = 1, 1
            if i < len(toks) and toks[i].token_type == TokenType.L_PAREN:
                inner, i = _paren_group(toks, i)
                parts = ["".join(t.text for t in e) for e in _split_elements(inner)]
                seed, inc = int(parts[0]), int(parts[1]) if len(parts) > 1 else 1
            col.identity = (seed, inc)
            col.nullable = False
        elif word == "DEFAULT":
            constraint = ""
            i += 1
            start = i
            depth = 0
            while i < len(toks):
                t = toks[i]
                if t.token_type == TokenType.L_PAREN:
                    depth += 1
                elif t.token_type == TokenType.R_PAREN:
                    depth -= 1
                elif depth == 0 and t.text.upper() in _COLUMN_KEYWORDS and i > start:
                    break
                i += 1
            col.default_sql = sql[toks[start].start : toks[i - 1].end + 1]
        elif word == "CONSTRAINT":
            constraint = toks[i + 1].text if i + 1 < len(toks) else ""
            i += 2
        elif word == "UNIQUE":
            col.unique = constraint
            i += 1
        elif word == "COLLATE":
            i += 2
        else:
            i += 1  # CLUSTERED, NONCLUSTERED, SPARSE, ROWGUIDCOL… carry no data semantics here
    return col


def _computed_column_def(name: str, toks: list[Token], sql: str) -> ColumnDef:
    """``name AS expr [PERSISTED [NOT NULL]]``. The type is the expression's: exact for a top-level
    ``CAST(… AS type)``, otherwise inferred after the table exists (see ddl.create_table)."""
    end, depth = 2, 0
    while end < len(toks):
        t = toks[end]
        depth += t.token_type == TokenType.L_PAREN
        depth -= t.token_type == TokenType.R_PAREN
        if depth == 0 and t.text.upper() in ("PERSISTED", "NOT", "NULL", "CONSTRAINT", "PRIMARY", "UNIQUE"):
            break
        end += 1
    if end == 2:
        raise errors.syntax_error("AS")
    expression = sql[toks[2].start : toks[end - 1].end + 1]
    words = {t.text.upper() for t in toks[end:]}
    try:
        node = sqlglot.parse_one(expression, read="tsql")
    except sqlglot.errors.ParseError as exc:
        raise errors.syntax_error(expression[:30]) from exc
    while isinstance(node, exp.Paren):
        node = node.this
    # None: inferred from DuckDB once the table exists
    sql_type = sqltype_from_datatype(node.args["to"]) if isinstance(node, exp.Cast) else None
    return ColumnDef(
        name,
        sql_type,  # type: ignore[arg-type]
        nullable=not ("NOT" in words and "PERSISTED" in words),
        computed_sql=expression,
        persisted="PERSISTED" in words,
    )


def parse_create_table(raw: RawStatement) -> TableDef:
    toks = raw.tokens
    # CREATE TABLE <name parts> ( ... )
    i = 2
    parts: list[str] = []
    while i < len(toks) and toks[i].token_type != TokenType.L_PAREN:
        if toks[i].token_type != TokenType.DOT:
            parts.append(toks[i].text)
        i += 1
    if not parts or i >= len(toks):
        raise errors.syntax_error(raw.first_word)
    inner, _ = _paren_group(toks, i)
    table = TableDef(parts[-2] if len(parts) >= 2 else None, parts[-1])
    for element in _split_elements(inner):
        word = element[0].text.upper()
        j = 0
        constraint_name = None
        if word == "CONSTRAINT":
            constraint_name = element[1].text
            j = 2
            word = element[j].text.upper()
        if word in ("PRIMARY KEY", "PRIMARY"):
            k = j + 1 if word == "PRIMARY KEY" else j + 2
            while k < len(element) and element[k].token_type != TokenType.L_PAREN:
                k += 1
            group, _ = _paren_group(element, k)
            table.pk = _key_columns(group)
            table.pk_name = constraint_name
            continue
        if word == "UNIQUE":
            k = j + 1
            while k < len(element) and element[k].token_type != TokenType.L_PAREN:
                k += 1
            group, _ = _paren_group(element, k)
            table.uniques.append((constraint_name or "", _key_columns(group)))
            continue
        if word in ("FOREIGN", "CHECK", "INDEX", "FOREIGN KEY"):
            continue
        col = parse_column_def(element, raw.text)
        if col.primary_key:
            table.pk = [col.name]
            # an inline "CONSTRAINT pk_x PRIMARY KEY" names the key
            for k in range(len(element) - 1):
                if element[k].text.upper() == "CONSTRAINT" and element[k + 2].text.upper().startswith("PRIMARY"):
                    table.pk_name = element[k + 1].text
        table.columns.append(col)
        if col.unique is not None:
            table.uniques.append((col.unique, [col.name]))
    for col in table.columns:
        if col.name.lower() in {p.lower() for p in table.pk}:
            col.nullable = False
    return table


def parse_alter_add(raw: RawStatement) -> list[ColumnDef]:
    """Column definitions of ``ALTER TABLE t ADD c1 type …, c2 type …``."""
    toks = raw.tokens
    for i, tok in enumerate(toks):
        if tok.text.upper() == "ADD":
            rest = toks[i + 1 :]
            if rest and rest[0].text.upper() == "COLUMN":
                rest = rest[1:]
            return [parse_column_def(e, raw.text) for e in _split_elements(rest)]
    raise errors.syntax_error("ALTER")


# -- the transform pass ----------------------------------------------------------------------
_DUCK_TYPE_CACHE: dict[str, exp.DataType] = {}


def duck_datatype(sql_type: SqlType) -> exp.DataType:
    text = sql_type.duck_type()
    if text not in _DUCK_TYPE_CACHE:
        _DUCK_TYPE_CACHE[text] = exp.DataType.build(text, dialect="duckdb")
    return _DUCK_TYPE_CACHE[text].copy()


def sqltype_from_datatype(dt: exp.DataType) -> SqlType:
    """Best-effort SqlType for a sqlglot DataType met in CAST/CONVERT/DECLARE."""
    t = dt.this
    args = [e.sql("tsql").lower() for e in dt.expressions]
    names = {
        exp.DType.INT: "int",
        exp.DType.BIGINT: "bigint",
        exp.DType.SMALLINT: "smallint",
        exp.DType.UTINYINT: "tinyint",
        exp.DType.TINYINT: "tinyint",
        exp.DType.BIT: "bit",
        exp.DType.BOOLEAN: "bit",
        exp.DType.DECIMAL: "decimal",
        exp.DType.MONEY: "money",
        exp.DType.SMALLMONEY: "smallmoney",
        exp.DType.FLOAT: "float",
        exp.DType.DOUBLE: "float",
        exp.DType.CHAR: "char",
        exp.DType.VARCHAR: "varchar",
        exp.DType.NCHAR: "nchar",
        exp.DType.NVARCHAR: "nvarchar",
        exp.DType.TEXT: "varchar",
        exp.DType.DATE: "date",
        exp.DType.TIME: "time",
        exp.DType.DATETIME: "datetime",
        exp.DType.DATETIME2: "datetime2",
        exp.DType.SMALLDATETIME: "smalldatetime",
        exp.DType.TIMESTAMPTZ: "datetimeoffset",
        exp.DType.UUID: "uniqueidentifier",
        exp.DType.BINARY: "binary",
        exp.DType.VARBINARY: "varbinary",
        exp.DType.IMAGE: "image",
        exp.DType.XML: "xml",
        exp.DType.ROWVERSION: "timestamp",
        exp.DType.TIMESTAMP: "datetime2",
    }
    name = names.get(t)
    if name is None:
        if t == exp.DType.USERDEFINED and str(dt.args.get("kind") or dt.sql("tsql")).lower() == "sysname":
            return make_type("sysname", [])
        return make_type("nvarchar", ["max"])
    if name in ("char", "varchar", "nchar", "nvarchar", "binary", "varbinary") and not args:
        args = ["30"]  # CAST(x AS varchar) means varchar(30) in SQL Server
    if name == "varchar" and t == exp.DType.TEXT:
        args = ["max"]
    return make_type(name, args)


@dataclass
class TranslateContext:
    """What the transform pass needs from the session."""

    now: Callable[[], datetime]
    cdc_enabled: bool
    db_name: str
    variables: Mapping[str, Any]
    session_values: Mapping[str, Any]  # @@TRANCOUNT, @@SPID, …
    expand_cdc_function: Callable[[str, str, list[exp.Expression], str | None], exp.Expression]
    dynamic_time: bool = False  # DEFAULT expressions keep GETDATE() dynamic
    # (schema, table) -> {column name (lower): SQL Server type name} of a user table, or None
    column_types: Callable[[str | None, str], Mapping[str, str] | None] | None = None
    login: str = "sa"  # SUSER_SNAME(), SYSTEM_USER
    # IS_SRVROLEMEMBER / IS_MEMBER / HAS_PERMS_BY_NAME with constant arguments (security.py)
    security_function: Callable[[str, list[Any]], Any] | None = None


_SECURITY_FUNCS = {"IS_SRVROLEMEMBER", "IS_MEMBER", "HAS_PERMS_BY_NAME"}


def _constant(node: exp.Expression) -> Any:
    """The value of a constant argument (string, number or NULL) of a security function."""
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.National):
        return node.this
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else int(node.this)
    raise errors.SqlServerError(
        102, f"Incorrect syntax near '{node.sql('tsql')}'. (the emulator needs constant arguments here)", 15
    )


_TIME_FUNCS = {"GETDATE", "SYSDATETIME", "CURRENT_TIMESTAMP", "SYSUTCDATETIME", "GETUTCDATE", "SYSDATETIMEOFFSET"}
_SYS_FUNCS = {
    "OBJECT_NAME": "object_name",
    "OBJECT_SCHEMA_NAME": "object_schema_name",
    "SCHEMA_NAME": "schema_name",
    "SCHEMA_ID": "schema_id",
}


_OFFSET_RE = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.]+ [+-]\d\d:\d\d$")


def _offset_literal(text: str) -> str:
    """``'2026-01-01 10:00 +02:00'`` (SQL Server's datetimeoffset form) → no space before the
    offset, which is the form DuckDB's TIMESTAMPTZ cast accepts."""
    if _OFFSET_RE.match(text):
        return text[:-7] + text[-6:]
    return text


_NAME_PART = re.compile(r'\[((?:[^\]]|\]\])*)\]|"((?:[^"]|"")*)"|([^.\["]*)')


def split_object_name(text: str) -> list[str] | None:
    """The parts of a multi-part object name as ``OBJECT_ID`` reads it: ``[dbo].[Order Details]``,
    ``"dbo"."q""t"``, ``dbo.[a]]b]``, ``dbo.Order Details`` (an undelimited part runs to the next
    dot). Delimited parts may hold dots and doubled delimiters
    (learn.microsoft.com/en-us/sql/relational-databases/databases/database-identifiers). None for
    a malformed name (an unclosed bracket) or more than four parts: OBJECT_ID then returns NULL."""
    parts, pos = [], 0
    while True:
        match = _NAME_PART.match(text, pos)
        assert match is not None  # the last alternative matches the empty string
        bracketed, quoted, bare = match.groups()
        if bracketed is not None:
            parts.append(bracketed.replace("]]", "]"))
        elif quoted is not None:
            parts.append(quoted.replace('""', '"'))
        else:
            parts.append(bare.strip())
        pos = match.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            return None
        pos += 1
    return parts if 1 <= len(parts) <= 4 and parts[-1] else None


def _object_id(arg: exp.Expression) -> exp.Expression:
    """``OBJECT_ID('<name>')``: a constant name (pymssql inlines parameters) is parsed here with SQL
    Server's rules; any other argument falls back to the catalog macro's simple split."""
    if isinstance(arg, exp.Literal) and arg.is_string:
        parts = split_object_name(arg.this)
        if parts is None:
            return exp.Null()
        schema = parts[-2] if len(parts) >= 2 and parts[-2] else "dbo"
        return _sys_call("object_id_parts", [exp.Literal.string(schema), exp.Literal.string(parts[-1])])
    return _sys_call("object_id", [arg])


def _sys_call(name: str, args: Sequence[exp.Expression]) -> exp.Expression:
    return exp.Dot(this=exp.to_identifier("sys"), expression=exp.Anonymous(this=name, expressions=list(args)))


def _pad_lsn_literal(node: exp.Expression) -> None:
    """Right-pad short 0x literals compared with binary(10) LSN columns (SQL Server ignores trailing
    zero bytes when comparing binary values; DuckDB does not)."""
    for cmp in node.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE):
        left, right = cmp.this, cmp.expression
        for col, lit in ((left, right), (right, left)):
            if (
                isinstance(col, exp.Column)
                and isinstance(lit, exp.HexString)
                and col.name.lower() in LSN_COLUMNS
                and len(lit.this) < 20
            ):
                digits = lit.this if len(lit.this) % 2 == 0 else "0" + lit.this
                lit.set("this", digits.ljust(20, "0"))


def _value_literal(value: Any) -> exp.Expression:
    """A Python value (variable contents) as a DuckDB-typed literal node."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return exp.HexString(this=bytes(value).hex().upper())
    if isinstance(value, (int, float, Decimal)):
        return exp.Literal.number(str(value))
    if isinstance(value, datetime) and value.tzinfo is not None:  # a datetimeoffset parameter (RPC)
        return _sys_call("to_datetimeoffset", [exp.Literal.string(value.isoformat(sep=" "))])
    if isinstance(value, datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, time):
        return exp.cast(exp.Literal.string(value.isoformat()), "TIME")
    if isinstance(value, UUID):
        return exp.cast(exp.Literal.string(str(value)), "UUID")
    return exp.Literal.string(str(value))


def _timestamp_literal(value: datetime, duck_type: str = "TIMESTAMP") -> exp.Expression:
    text = exp.Literal.string(value.isoformat(sep=" ", timespec="microseconds"))
    return exp.Cast(this=text, to=exp.DataType.build(duck_type, dialect="duckdb"))


# CAST/CONVERT to these types: the storage rules of .storage (ticks, minutes, offset)
_CONVERSION_MACROS = {
    exp.DType.DATETIME: "round_datetime",
    exp.DType.SMALLDATETIME: "round_smalldatetime",
    exp.DType.TIMESTAMPTZ: "to_datetimeoffset",
}
_DATETIME_FUNCS = {"GETDATE", "CURRENT_TIMESTAMP", "GETUTCDATE"}  # these return datetime (ticks)


def _convert_to_legacy_time(node: exp.Expression, scope: ColumnScope) -> None:
    """A string (or a pymssql datetime parameter, which is a string) compared with a ``datetime`` or
    ``smalldatetime`` column is converted to the column's type first, as SQL Server converts the
    lower-precedence side: ``at = '… 12:00:00.199'`` matches the row stored as .200."""

    def convert(column: exp.Expression, other: exp.Expression) -> exp.Expression | None:
        macro = {"datetime": "round_datetime", "smalldatetime": "round_smalldatetime"}.get(
            scope.type_name(column) or ""
        )
        textual = (
            isinstance(other, exp.National)
            or (isinstance(other, exp.Literal) and other.is_string)
            or (isinstance(other, exp.Parameter) and isinstance(scope.variables.get(other.name.lower()), str))
        )
        return _sys_call(macro, [other.copy()]) if macro and textual else None

    for cmp in list(node.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        if isinstance(cmp.parent, (exp.Update, exp.SetItem)):
            continue
        for side, other in (("this", "expression"), ("expression", "this")):
            converted = convert(cmp.args[side], cmp.args[other])
            if converted is not None:
                cmp.set(other, converted)
                break
    for between in list(node.find_all(exp.Between)):
        for bound in ("low", "high"):
            converted = convert(between.this, between.args[bound])
            if converted is not None:
                between.set(bound, converted)
    for found in list(node.find_all(exp.In)):
        if found.expressions and scope.type_name(found.this) in ("datetime", "smalldatetime"):
            found.set("expressions", [convert(found.this, e) or e for e in found.expressions])


def _plus_as_concatenation(node: exp.Expression, scope: ColumnScope) -> None:
    """``+`` between character or binary strings concatenates ("+ (String Concatenation)"); DuckDB's
    ``||`` keeps SQL Server's default CONCAT_NULL_YIELDS_NULL ON (NULL + 'a' is NULL)."""

    def textual(e: exp.Expression) -> bool:
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, (exp.HexString, exp.DPipe)):
            return True
        if scope.type_name(e) in ("binary", "varbinary") or scope.kind(e) is not None:
            return True
        return isinstance(e, exp.Cast) and e.to.this in (exp.DType.BINARY, exp.DType.VARBINARY)

    def numeric(e: exp.Expression) -> bool:
        return isinstance(e, exp.Literal) and not e.is_string

    for add in list(node.find_all(exp.Add)):
        sides = (add.this, add.expression)
        if any(textual(s) for s in sides) and not any(numeric(s) for s in sides):
            add.replace(exp.DPipe(this=add.this, expression=add.expression))


def _instant(side: exp.Expression, scope: ColumnScope) -> exp.Expression:
    """The UTC instant of a datetimeoffset column, or of any other value read as datetimeoffset."""
    if scope.type_name(side) == "datetimeoffset":
        return exp.Anonymous(this="struct_extract", expressions=[side.copy(), exp.Literal.string("dto_utc")])
    value = _sys_call("to_datetimeoffset", [side.copy()])
    return exp.Anonymous(this="struct_extract", expressions=[value, exp.Literal.string("dto_utc")])


def _datetimeoffset_as_instant(node: exp.Expression, scope: ColumnScope) -> None:
    """datetimeoffset is "processed, compared, sorted, and indexed in the server as in UTC": a
    comparison with a datetimeoffset column compares instants; converting the column to another date
    or time type copies its local date and time, to a string gives SQL Server's text with the offset."""
    dto = "datetimeoffset"
    for cmp in list(node.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        if not isinstance(cmp.parent, (exp.Update, exp.SetItem)) and dto in (
            scope.type_name(cmp.this),
            scope.type_name(cmp.expression),
        ):
            cmp.set("this", _instant(cmp.this, scope))
            cmp.set("expression", _instant(cmp.expression, scope))
    for between in list(node.find_all(exp.Between)):
        if scope.type_name(between.this) == dto:
            for part in ("this", "low", "high"):
                between.set(part, _instant(between.args[part], scope))
    for found in list(node.find_all(exp.In)):
        if scope.type_name(found.this) == dto and found.expressions:
            found.set("expressions", [_instant(e, scope) for e in found.expressions])
            found.set("this", _instant(found.this, scope))
    for cast in list(node.find_all(exp.Cast, exp.Convert)):
        value = cast.this if isinstance(cast, exp.Cast) else cast.expression
        target = cast.args.get("to") if isinstance(cast, exp.Cast) else cast.this
        if value is None or scope.type_name(value) != dto or not isinstance(target, exp.DataType):
            continue
        if target.this == exp.DType.TIMESTAMPTZ:
            continue
        textual = target.this in (exp.DType.CHAR, exp.DType.VARCHAR, exp.DType.NCHAR, exp.DType.NVARCHAR)
        converted = _sys_call("dto_text" if textual else "dto_local", [value.copy()])
        cast.set("this" if isinstance(cast, exp.Cast) else "expression", converted)


# DATALENGTH of the fixed-size types: their storage size ("Data types (Transact-SQL)" and each type's page).
_FIXED_BYTES = {
    "tinyint": 1,
    "smallint": 2,
    "int": 4,
    "bigint": 8,
    "bit": 1,
    "real": 4,
    "float": 8,
    "smallmoney": 4,
    "money": 8,
    "date": 3,
    "smalldatetime": 4,
    "datetime": 8,
    "uniqueidentifier": 16,
}
_BINARY_TYPES = frozenset({"binary", "varbinary", "image", "timestamp"})


def _length_functions(node: exp.Expression, scope: ColumnScope) -> None:
    """``LEN`` and ``DATALENGTH`` as SQL Server counts ("LEN (Transact-SQL)": characters, trailing
    blanks excluded; "DATALENGTH (Transact-SQL)": bytes, trailing blanks included, NULL for NULL):
    ``varchar`` one byte per character (code page 1252), ``nvarchar`` two (UTF-16; a character
    outside the BMP counts 2 here where SQL Server counts 4), binary data its bytes, the fixed-size
    types their storage size."""
    for length in list(node.find_all(exp.Length)):
        length.set("this", _fn_call("rtrim", length.this.copy(), exp.Literal.string(" ")))
    for call in list(node.find_all(exp.Anonymous)):
        if str(call.this).upper() != "DATALENGTH" or len(call.expressions) != 1:
            continue
        arg = call.expressions[0]
        kind = scope.kind(arg)
        type_name = scope.type_name(arg)
        if isinstance(arg, exp.Null):
            call.replace(exp.Null())
        elif kind == "v":
            call.replace(exp.Length(this=arg.copy()))
        elif kind == "n":
            call.replace(exp.Mul(this=exp.Length(this=arg.copy()), expression=exp.Literal.number(2)))
        elif kind == "s":
            raise errors.SqlServerError(
                102,
                "Incorrect syntax near 'DATALENGTH'. (the emulator does not keep a variable's type: "
                "DATALENGTH of a character variable is not supported)",
                15,
            )
        elif type_name in _FIXED_BYTES:
            size = exp.Literal.number(_FIXED_BYTES[type_name])
            call.replace(exp.If(this=exp.Is(this=arg.copy(), expression=exp.Null()), true=exp.Null(), false=size))
        elif type_name is not None and type_name not in _BINARY_TYPES:
            raise errors.SqlServerError(
                102,
                f"Incorrect syntax near 'DATALENGTH'. (DATALENGTH of a {type_name} column is not supported "
                "by the emulator)",
                15,
            )
        else:  # binary data (and anything else DuckDB holds as a BLOB)
            call.replace(exp.Anonymous(this="octet_length", expressions=[arg.copy()]))


def _fn_call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def transform(node: exp.Expression, ctx: TranslateContext, *, top_level: bool = True) -> exp.Expression:
    """Rewrite a parsed T-SQL statement so that DuckDB runs it with SQL Server's meaning."""
    node = node.copy()
    _pad_lsn_literal(node)
    scope = ColumnScope(node, ctx.column_types or (lambda schema, name: None), ctx.variables)
    if not scope.empty:
        node = apply_collation(node, scope)
        _convert_to_legacy_time(node, scope)
        _datetimeoffset_as_instant(node, scope)
    _plus_as_concatenation(node, scope)
    _length_functions(node, scope)

    def fix(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.National):
            return exp.Literal.string(_offset_literal(n.this))
        if isinstance(n, exp.Literal) and n.is_string and _OFFSET_RE.match(n.this):
            return exp.Literal.string(_offset_literal(n.this))
        if isinstance(n, exp.Table):
            return _fix_table(n, ctx)
        if isinstance(n, exp.DataType) and not isinstance(n.parent, exp.DataType):
            try:
                return duck_datatype(sqltype_from_datatype(n))
            except (UnknownTypeError, ValueError):
                return n
        if isinstance(n, exp.CurrentTimestamp):  # GETDATE(), CURRENT_TIMESTAMP: datetime
            if ctx.dynamic_time:
                return _sys_call("round_datetime", [exp.Anonymous(this="current_localtimestamp")])
            return _timestamp_literal(round_datetime(ctx.now()), "TIMESTAMP_MS")
        if isinstance(n, (exp.Cast, exp.Convert)):
            target = n.args.get("to") if isinstance(n, exp.Cast) else n.this
            value = n.this if isinstance(n, exp.Cast) else n.expression
            macro = _CONVERSION_MACROS.get(target.this) if isinstance(target, exp.DataType) else None
            if macro is not None and value is not None:
                if isinstance(n, exp.TryCast):
                    value = exp.TryCast(this=value, to=exp.DataType.build("TIMESTAMP"))
                return _sys_call(macro, [sub(value)])
        if isinstance(n, exp.ObjectId):
            return _object_id(sub(n.this))
        if isinstance(n, exp.CurrentUser) or (isinstance(n, exp.Column) and n.name.upper() == "SYSTEM_USER"):
            return exp.Literal.string(ctx.login)
        if isinstance(n, exp.Anonymous):
            name = n.name.upper() if isinstance(n.this, str) else str(n.this).upper()
            if name in _TIME_FUNCS:
                if ctx.dynamic_time:
                    now: exp.Expression = exp.Anonymous(this="current_localtimestamp")
                    return _sys_call("round_datetime", [now]) if name in _DATETIME_FUNCS else now
                if name in _DATETIME_FUNCS:
                    return _timestamp_literal(round_datetime(ctx.now()), "TIMESTAMP_MS")
                if name == "SYSDATETIMEOFFSET":  # the emulator clock has no zone: +00:00
                    return _sys_call("to_datetimeoffset", [_timestamp_literal(ctx.now())])
                return _timestamp_literal(ctx.now())
            if name in _SYS_FUNCS and not isinstance(n.parent, exp.Dot):
                return _sys_call(_SYS_FUNCS[name], [sub(a) for a in n.expressions])
            if name in _SECURITY_FUNCS and ctx.security_function is not None:
                value = ctx.security_function(name, [_constant(a) for a in n.expressions])
                return exp.Null() if value is None else exp.Literal.number(value)
            if name == "DB_NAME" and not n.expressions:
                return exp.Literal.string(ctx.db_name)
            if name == "DB_ID":
                return exp.Literal.number(5)
        if isinstance(n, exp.Parameter):
            inner = n.this
            if isinstance(inner, exp.Parameter):  # @@NAME
                key = inner.name.upper()
                if key in ctx.session_values:
                    return _value_literal(ctx.session_values[key])
                raise errors.SqlServerError(137, f'Must declare the scalar variable "@@{inner.name}".', 15)
            key = n.name.lower()
            if key not in ctx.variables:
                raise errors.SqlServerError(137, f'Must declare the scalar variable "@{n.name}".', 15)
            return _value_literal(ctx.variables[key])
        return n

    def sub(n: exp.Expression) -> exp.Expression:
        # transform() does not descend into a node it just replaced: rewrite its arguments here
        return n.transform(fix, copy=False)

    node = node.transform(fix, copy=False)
    if top_level and isinstance(node, exp.Select):
        _name_projections(node)
    return node


def _fix_table(table: exp.Table, ctx: TranslateContext) -> exp.Expression:
    func = table.this
    db = table.args.get("db")
    db_name = db.name.lower() if db is not None else ""
    if isinstance(func, exp.Anonymous):
        fname = func.this.name if isinstance(func.this, exp.Identifier) else str(func.this)
        low = fname.lower()
        if db_name == "cdc" and low.startswith(("fn_cdc_get_all_changes_", "fn_cdc_get_net_changes_")):
            if not ctx.cdc_enabled:
                raise errors.invalid_object(f"cdc.{fname}")
            alias = table.alias or None
            return ctx.expand_cdc_function(low, fname, list(func.expressions), alias)
        return table
    if table.args.get("catalog") is not None:
        table.set("catalog", None)
    if db_name == "cdc" and not ctx.cdc_enabled:
        raise errors.invalid_object(f"cdc.{table.name}")
    if table.args.get("hints"):
        table.set("hints", None)
    return table


def _name_projections(select: exp.Select) -> None:
    """pymssql reports '' for an unnamed result column; alias them so the DB-API layer can tell."""
    new = []
    for i, proj in enumerate(select.expressions):
        if isinstance(proj, (exp.Alias, exp.Column, exp.Star)) or (
            isinstance(proj, exp.Dot) and isinstance(proj.expression, exp.Star)
        ):
            new.append(proj)
        else:
            new.append(exp.alias_(proj, f"{NONAME_PREFIX}{i}", quoted=True))
    select.set("expressions", new)


def to_duckdb(node: exp.Expression) -> str:
    return node.sql(dialect="duckdb", identify=True)


def table_parts(table: exp.Table) -> tuple[str | None, str]:
    db = table.args.get("db")
    return (db.name if db is not None else None, table.name)
