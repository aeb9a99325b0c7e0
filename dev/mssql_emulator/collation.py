"""The database's default collation, SQL_Latin1_General_CP1_CI_AS, for character data of user tables.

SQL Server compares character data under a collation wherever data meets data: ``WHERE``, joins,
``MERGE … ON``, ``IN``, ``LIKE``, ``GROUP BY`` / ``DISTINCT`` and the uniqueness of PRIMARY KEY,
UNIQUE constraints and unique indexes. The emulator models the default collation of an
English-locale install (docs/emulator.md "Collation", with the source of each rule):

* case-insensitive (CI), and trailing blanks ignored: "SQL Server follows the ANSI/ISO SQL-92
  specification on how to compare strings with spaces" (KB 316626);
* width-insensitive for Unicode data: ``sys.fn_helpcollations()`` describes it as "Latin1-General,
  case-insensitive, accent-sensitive, kanatype-insensitive, width-insensitive for Unicode Data, SQL
  Server Sort Order 52 on Code Page 1252 for non-Unicode Data". Code page 1252 has no full-width
  forms, so folding them is harmless for ``varchar``; one equality key serves both kinds of data;
* a SQL collation sorts non-Unicode data (char/varchar/text, ``'…'``) in its own code-page order,
  character by character: '-' and "'" are punctuation before digits and letters (KB 322112,
  "Comparing SQL collations to Windows collations"), as are the other non-alphanumeric characters
  (``_ [ \\ ] ^ { | } ~ : @`` …): Microsoft's string sort, "the hyphen and apostrophe are treated
  like any other nonalphanumeric symbols. They precede the alphanumeric symbols" ("StringSorter.
  STRINGSORT", learn.microsoft.com/previous-versions/visualstudio/visual-studio-6.0/aa254109);
* Unicode data (nchar/nvarchar/ntext, ``N'…'``) sorts with the Windows rules, a "word sort" that
  ignores hyphen and apostrophe at the first level: abctest < abc-test < abctest1 < abc-test1
  (Microsoft blog "Sorting and comparing unicode and binary data - why do I get a weird sort
  order?", SQL_Latin1_General_CP1_CI_AS); "all punctuation marks and other non-alphanumeric
  characters, except the hyphen and the apostrophe, come before any alphanumeric character" (the
  same StringSorter page). Among themselves the punctuation characters sort by code point: the
  emulator's rule, their exact order under sort order 52 was not found documented;
* comparing a varchar column with an nvarchar value converts the column (data type precedence), so
  ``varchar_col > N'…'`` uses the Unicode rules while ``ORDER BY varchar_col`` uses the code-page
  order: keyset paging with pymssql's ``N'…'`` parameters trips over that.

The model: equality key = ``upper(rtrim(<full-width forms folded to ASCII>, ' '))``; the SQL sort
key is the equality key with its ASCII characters renumbered (blank, punctuation, digits, letters:
a permutation, so it orders as the collation and is equal exactly when the equality key is); the
word sort key is the same renumbered key without '-' and "'", then, for ties, the same text with
'-' and "'" placed after every other character. Equal sort keys mean equal equality keys, so
equality never depends on which sort applies, and ``ORDER BY`` and ``>`` / ``<`` use one key.
Not modelled: accents, other scripts, expansions (ß = ss), ``COLLATE`` clauses and per-column
collations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlglot import exp

VARCHAR_TYPES = frozenset({"char", "varchar", "text"})
NVARCHAR_TYPES = frozenset({"nchar", "nvarchar", "ntext", "sysname"})
CHARACTER_TYPES = VARCHAR_TYPES | NVARCHAR_TYPES
# Full-width forms of ASCII (U+FF01-U+FF5E) and the ideographic space, and what they fold to.
_WIDE = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
_NARROW = "".join(chr(c) for c in range(0x21, 0x7F)) + " "
# The sort order of the ASCII characters a key holds: blank, punctuation in code-point order, digits,
# letters; laid onto the same code points in ascending order (see _punctuation_first).
_PUNCTUATION = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum() and not chr(c).islower())
_SORT_FROM = " " + _PUNCTUATION + "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SORT_TO = "".join(sorted(_SORT_FROM))
_SYSTEM_SCHEMAS = {"cdc", "sys", "emu", "information_schema"}
_SKIP = "skip"  # a derived column whose kind cannot be known

ColumnTypes = Callable[[str | None, str], Mapping[str, str] | None]


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def key(x: exp.Expression) -> exp.Expression:
    """The equality key of a character expression (also the SQL collation's sort key)."""
    folded = _fn("translate", x, exp.Literal.string(_WIDE), exp.Literal.string(_NARROW))
    return exp.Upper(this=_fn("rtrim", folded, exp.Literal.string(" ")))


def key_sql(x: str) -> str:
    """:func:`key` as DuckDB SQL text around the SQL expression ``x`` (for emulator-built SQL)."""
    narrow = _NARROW.replace("'", "''")
    return f"upper(rtrim(translate({x}, '{_WIDE}', '{narrow}'), ' '))"


def _punctuation_first(x: exp.Expression) -> exp.Expression:
    """The equality key with its ASCII characters renumbered so that DuckDB's code-point order is
    the collation's: blank, punctuation (by code point), digits, letters. A permutation of the
    characters the key can hold (no lower-case ASCII after ``upper``), so two keys stay equal
    exactly when the text is equal under the collation."""
    return _fn("translate", x, exp.Literal.string(_SORT_FROM), exp.Literal.string(_SORT_TO))


def sort_key(x: exp.Expression) -> exp.Expression:
    """The SQL collation's sort key for non-Unicode data (varchar, ``'…'``). NULL stays NULL."""
    return _punctuation_first(key(x))


def word_sort_key(x: exp.Expression) -> exp.Expression:
    """The Unicode word-sort key (see the module docstring). NULL stays NULL."""
    base = key(x)
    primary = _fn(
        "replace",
        _fn("replace", base, exp.Literal.string("-"), exp.Literal.string("")),
        exp.Literal.string("'"),
        exp.Literal.string(""),
    )
    tie = _fn(  # '-' and "'" after every character the renumbered key holds
        "replace",
        _fn("replace", base.copy(), exp.Literal.string("-"), _fn("chr", exp.Literal.number(128))),
        exp.Literal.string("'"),
        _fn("chr", exp.Literal.number(127)),
    )
    return exp.DPipe(
        this=exp.DPipe(this=_punctuation_first(primary), expression=_fn("chr", exp.Literal.number(1))),
        expression=_punctuation_first(tie),
    )


def python_key(value: str) -> str | None:
    """:func:`key` computed in Python, for ASCII text (DuckDB's ``upper`` is the simple Unicode case
    mapping, Python's the full one: other text is keyed by DuckDB); None for non-ASCII text."""
    return value.rstrip(" ").upper() if value.isascii() else None


def collation_equal(a: Any, b: Any, cur: Any = None) -> bool:
    """Equality of two values under the collation (strings: :func:`key`; others as they are).
    ``cur`` (a DuckDB connection) keys non-ASCII text exactly as the SQL rewrite does."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return bool(a == b)
    ka, kb = python_key(a), python_key(b)
    if ka is not None and kb is not None:
        return ka == kb
    if cur is None:
        return a.rstrip(" ").upper() == b.rstrip(" ").upper()
    row = cur.execute(f"SELECT {key_sql('?')} = {key_sql('?')}", [a, b]).fetchone()
    return bool(row and row[0])


# -- the rewrite of a statement ------------------------------------------------------------------------
class ColumnScope:
    """Character columns of the tables a statement names: user tables (from the catalog) and derived
    tables (subqueries, ``VALUES`` lists and CTEs with an alias, typed from their select lists)."""

    def __init__(self, node: exp.Expression, column_types: ColumnTypes, variables: Mapping[str, Any]) -> None:
        self.variables = variables
        self.tables: dict[str, Mapping[str, str]] = {}
        for table in node.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier):
                continue
            db = table.args.get("db")
            schema = db.name if db is not None else None
            if (schema or "dbo").lower() in _SYSTEM_SCHEMAS:
                continue
            cols = column_types(schema, table.name)
            if cols is None:
                continue
            self.tables[table.alias_or_name.lower()] = cols
            self.tables.setdefault(table.name.lower(), cols)
        for derived in node.find_all(exp.Subquery, exp.Values, exp.CTE):
            alias = derived.args.get("alias")
            if not isinstance(alias, exp.TableAlias) or not alias.name:
                continue
            names = [c.name for c in alias.columns]
            if isinstance(derived, exp.Values):
                first = derived.expressions[0] if derived.expressions else None
                values = first.expressions if isinstance(first, exp.Tuple) else []
            else:
                query = derived.this
                while isinstance(query, exp.SetOperation):
                    query = query.this
                if not isinstance(query, exp.Select):
                    continue
                values = [p.this if isinstance(p, exp.Alias) else p for p in query.expressions]
                names = names or [p.alias_or_name for p in query.expressions]
            kinds = [_TYPE_OF_KIND.get(self.kind(v) or "", _SKIP) for v in values]
            self.tables.setdefault(alias.name.lower(), dict(zip([n.lower() for n in names], kinds, strict=False)))

    @property
    def empty(self) -> bool:
        return not self.tables

    def kind(self, e: exp.Expression) -> str | None:
        """'v' (non-Unicode), 'n' (Unicode), 's' (character, either) or None (not character data)."""
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, exp.Column):
            name = self.type_name(e)
            return "v" if name in VARCHAR_TYPES else "n" if name in NVARCHAR_TYPES else None
        if isinstance(e, exp.National):
            return "n"
        if isinstance(e, exp.Literal):
            return "v" if e.is_string else None
        if isinstance(e, exp.Cast):
            t = e.to.this
            if t in (exp.DType.CHAR, exp.DType.VARCHAR, exp.DType.TEXT):
                return "v"
            if t in (exp.DType.NCHAR, exp.DType.NVARCHAR):
                return "n"
            return None
        if isinstance(e, exp.Parameter) and not isinstance(e.this, exp.Parameter):
            return "s" if isinstance(self.variables.get(e.name.lower()), str) else None
        if isinstance(e, (exp.Upper, exp.Lower, exp.Trim, exp.Substring, exp.Left, exp.Right)):
            return self.kind(e.this)
        if isinstance(e, (exp.Concat, exp.DPipe, exp.Coalesce)) or (
            isinstance(e, exp.Anonymous) and str(e.this).upper() in ("RTRIM", "LTRIM", "REPLACE", "ISNULL")
        ):
            args = [e.this, *e.expressions] if isinstance(e, exp.Coalesce) else list(e.iter_expressions())
            kinds = [self.kind(a) for a in args]
            return next((k for k in kinds if k in ("v", "n")), "s" if "s" in kinds else None)
        return None

    def type_name(self, e: exp.Expression) -> str | None:
        """The SQL Server type name of a column of a user or derived table (None if unknown)."""
        if not isinstance(e, exp.Column):
            return None
        qualifier = e.table.lower()
        if qualifier and qualifier not in self.tables:
            return None
        distinct = list({id(c): c for c in self.tables.values()}.values())
        candidates = [self.tables[qualifier]] if qualifier else distinct
        found = {c[e.name.lower()] for c in candidates if e.name.lower() in c}
        return found.pop() if len(found) == 1 else None

    def typed_column(self, e: exp.Expression) -> str | None:
        """The kind of a character column of a user or derived table (None for anything else)."""
        return self.kind(e) if isinstance(e, exp.Column) and self.kind(e) in ("v", "n") else None


_TYPE_OF_KIND = {"v": "varchar", "n": "nvarchar"}


def _pair(scope: ColumnScope, left: exp.Expression, right: exp.Expression) -> str | None:
    """The kind two compared sides are compared under, or None if the collation does not apply:
    one side must be a character column, the other character data."""
    kl, kr = scope.kind(left), scope.kind(right)
    if kl is None or kr is None or not (scope.typed_column(left) or scope.typed_column(right)):
        return None
    return "n" if "n" in (kl, kr) else "v"


def _ordering_key(kind: str) -> Callable[[exp.Expression], exp.Expression]:
    return word_sort_key if kind == "n" else sort_key


def _same_column(a: exp.Column, b: exp.Column) -> bool:
    if a.name.lower() != b.name.lower():
        return False
    return not (a.table and b.table) or a.table.lower() == b.table.lower()


def apply_collation(node: exp.Expression, scope: ColumnScope) -> exp.Expression:
    """Rewrite a T-SQL statement (before translation) so DuckDB compares character data of user
    tables as the collation does: comparisons, ``IN``, ``BETWEEN``, ``LIKE``, ``GROUP BY``,
    ``DISTINCT``, ``COUNT(DISTINCT …)``, ``INTERSECT``/``EXCEPT`` and ``ORDER BY``. Returns the
    statement (a new node when the statement itself is an INTERSECT or EXCEPT)."""
    for setop in reversed(list(node.find_all(exp.Intersect, exp.Except))):  # innermost first
        rewritten = _set_operation(setop, scope)
        if rewritten is not None:
            if setop is node:
                node = rewritten
            else:
                setop.replace(rewritten)
    for cmp in list(node.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        if isinstance(cmp.parent, (exp.Update, exp.SetItem)):
            continue  # an assignment, not a comparison
        left, right = cmp.this, cmp.expression
        kind = _pair(scope, left, right)
        if kind is None:
            continue
        make = key if isinstance(cmp, (exp.EQ, exp.NEQ)) else _ordering_key(kind)
        cmp.set("this", make(left.copy()))
        cmp.set("expression", make(right.copy()))
    for found in list(node.find_all(exp.In)):
        if scope.typed_column(found.this) is None:
            continue
        query = found.args.get("query")
        if query is not None:
            select = query.this if isinstance(query, exp.Subquery) else query
            if isinstance(select, exp.Select) and len(select.expressions) == 1:
                item = select.expressions[0]
                inner = item.this if isinstance(item, exp.Alias) else item
                if scope.kind(inner) is not None:
                    select.set("expressions", [key(inner.copy())])
                    found.set("this", key(found.this.copy()))
            continue
        if found.expressions and all(scope.kind(e) is not None for e in found.expressions):
            found.set("expressions", [key(e.copy()) for e in found.expressions])
            found.set("this", key(found.this.copy()))
    for between in list(node.find_all(exp.Between)):
        low, high = between.args.get("low"), between.args.get("high")
        kinds = [_pair(scope, between.this, b) for b in (low, high) if b is not None]
        if len(kinds) == 2 and None not in kinds:
            make = _ordering_key("n" if "n" in kinds else "v")
            between.set("this", make(between.this.copy()))
            between.set("low", make(low.copy()))
            between.set("high", make(high.copy()))
    for like in list(node.find_all(exp.Like)):
        if scope.typed_column(like.this) is not None and not isinstance(like.parent, exp.Escape):
            like.replace(exp.ILike(this=like.this.copy(), expression=like.expression.copy()))
    for count in list(node.find_all(exp.Count)):
        distinct = count.this
        if isinstance(distinct, exp.Distinct):
            distinct.set("expressions", [key(e.copy()) if scope.typed_column(e) else e for e in distinct.expressions])
    for select in list(node.find_all(exp.Select)):
        _distinct_as_group_by(select, scope)
        _group_by(select, scope)
    for ordered in list(node.find_all(exp.Ordered)):
        select = ordered.find_ancestor(exp.Select)
        if select is not None and select.args.get("distinct"):
            continue  # DuckDB wants DISTINCT's ORDER BY keys in the select list
        kind = scope.typed_column(ordered.this)
        if kind is not None:
            ordered.set("this", _ordering_key(kind)(ordered.this.copy()))
    return node


def _projections(query: exp.Expression) -> list[exp.Expression] | None:
    """The select list of a query side of a set operation (None when it cannot be known: ``*``)."""
    while isinstance(query, exp.Subquery):
        query = query.this
    if not isinstance(query, exp.Select) or any(isinstance(p, exp.Star) for p in query.expressions):
        return None
    return list(query.expressions)


def _set_operation(setop: exp.SetOperation, scope: ColumnScope) -> exp.Expression | None:
    """``a INTERSECT b`` / ``a EXCEPT b`` over character columns, as SQL Server runs them: distinct
    rows of ``a`` (one per set of values the collation calls equal, its smallest spelling, as for
    DISTINCT) that some row of ``b`` equals (INTERSECT) or none does (EXCEPT), NULL equal to NULL.
    None when no compared column is character data of a user or derived table (DuckDB's exact
    comparison is then right)."""
    if setop.args.get("distinct") is False:
        return None
    left, right = _projections(setop.this), _projections(setop.expression)
    if left is None or right is None or len(left) != len(right):
        return None
    inner = [[p.this if isinstance(p, exp.Alias) else p for p in side] for side in (left, right)]
    kinds = [scope.typed_column(a) or scope.typed_column(b) for a, b in zip(inner[0], inner[1], strict=True)]
    if not any(kinds):
        return None
    names = [p.alias_or_name or f"__c{i}" for i, p in enumerate(left)]
    cols = [f"__c{i}" for i in range(len(left))]

    def side(query: exp.Expression, alias: str) -> exp.Expression:
        return exp.Subquery(
            this=query.copy(),
            alias=exp.TableAlias(this=exp.to_identifier(alias), columns=[exp.to_identifier(c) for c in cols]),
        )

    def col(alias: str, i: int) -> exp.Column:
        return exp.column(cols[i], table=alias)

    conditions = [
        exp.NullSafeEQ(
            this=key(col("__l", i)) if kinds[i] else col("__l", i),
            expression=key(col("__r", i)) if kinds[i] else col("__r", i),
        )
        for i in range(len(cols))
    ]
    match: exp.Expression = exp.Exists(
        this=exp.select("1").from_(side(setop.expression, "__r")).where(exp.and_(*conditions))
    )
    if isinstance(setop, exp.Except):
        match = exp.Not(this=match)
    outputs = [exp.Min(this=col("__l", i)) if kinds[i] else col("__l", i) for i in range(len(cols))]
    select = exp.Select(expressions=[exp.alias_(o, n, quoted=True) for o, n in zip(outputs, names, strict=True)]).from_(
        side(setop.this, "__l")
    )
    select = select.where(match).group_by(
        *[key(col("__l", i)) if kinds[i] else col("__l", i) for i in range(len(cols))]
    )
    order = setop.args.get("order")
    if isinstance(order, exp.Order):
        for ordered in order.expressions:
            target = ordered.this
            position = next(
                (i for i, n in enumerate(names) if isinstance(target, exp.Column) and target.name.lower() == n.lower()),
                None,
            )
            if position is not None:  # by the output column, under the collation when it is character data
                kind = kinds[position]
                ordered.set("this", _ordering_key(kind)(outputs[position].copy()) if kind else outputs[position].copy())
        select.set("order", order.copy())
    for arg in ("limit", "offset"):
        if setop.args.get(arg) is not None:
            select.set(arg, setop.args[arg].copy())
    return select


def _distinct_as_group_by(select: exp.Select, scope: ColumnScope) -> None:
    """``SELECT DISTINCT`` over character columns is a GROUP BY on their keys (one row per set of
    values the collation calls equal; which spelling comes back is the smallest, SQL Server returns
    one of them)."""
    distinct = select.args.get("distinct")
    if not isinstance(distinct, exp.Distinct) or distinct.args.get("on") or select.args.get("group"):
        return
    items = select.expressions
    if any(isinstance(p, exp.Star) or p.find(exp.AggFunc) for p in items):
        return
    inner = [p.this if isinstance(p, exp.Alias) else p for p in items]
    if not any(scope.typed_column(e) for e in inner):
        return
    group, projections = [], []
    for item, expr in zip(items, inner, strict=True):
        if scope.typed_column(expr):
            group.append(key(expr.copy()))
            projections.append(exp.alias_(exp.Min(this=expr.copy()), item.alias_or_name, quoted=True))
        else:
            group.append(expr.copy())
            projections.append(item)
    select.set("distinct", None)
    select.set("expressions", projections)
    select.set("group", exp.Group(expressions=group))


def _group_by(select: exp.Select, scope: ColumnScope) -> None:
    """``GROUP BY`` a character column groups by its key; the column itself, outside aggregates in
    the select list and HAVING, becomes ``MIN(column)`` (one of the group's spellings)."""
    group = select.args.get("group")
    if not isinstance(group, exp.Group):
        return
    keyed: list[exp.Column] = []
    new = []
    for expr in group.expressions:
        if scope.typed_column(expr):
            keyed.append(expr)
            new.append(key(expr.copy()))
        else:
            new.append(expr)
    if not keyed:
        return
    group.set("expressions", new)

    def fold(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column) and any(_same_column(n, k) for k in keyed) and not n.find_ancestor(exp.AggFunc):
            return exp.Min(this=n.copy())
        return n

    projections = []
    for item in select.expressions:
        if isinstance(item, exp.Column) and any(_same_column(item, k) for k in keyed):
            projections.append(exp.alias_(exp.Min(this=item.copy()), item.name, quoted=True))
        else:
            projections.append(item.transform(fold, copy=False) if not isinstance(item, exp.Star) else item)
    select.set("expressions", projections)
    having = select.args.get("having")
    if having is not None:
        select.set("having", having.transform(fold, copy=False))
