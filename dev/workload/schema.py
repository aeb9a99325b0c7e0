"""The billing source tables: columns with their SQL Server types, keys, DDL and PII columns.

One declaration per column; everything else is derived from it: the column lists, the
``CREATE TABLE`` text the T-SQL sink runs, and the ``sys.columns`` description (type name,
precision, scale) that ``dev.dbt_local`` maps with the pipeline's own type mapping. Holds no
rows, no random choices and no connection (see :mod:`dev.workload.model`, :mod:`.oltp`,
:mod:`.tsql`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SCHEMA = "dbo"


@dataclass(frozen=True)
class Column:
    """One source column as declared in ``CREATE TABLE``: ``decl`` is its SQL Server type text."""

    name: str
    decl: str
    nullable: bool = False

    @property
    def type_name(self) -> str:
        return self.decl.split("(")[0]

    @property
    def precision_scale(self) -> tuple[int, int]:
        """``sys.columns.precision`` / ``scale`` as SQL Server reports them for this type."""
        args = [int(a) for a in re.findall(r"\d+", self.decl.partition("(")[2])]
        fixed = {"bit": (1, 0), "int": (10, 0), "bigint": (19, 0), "money": (19, 4), "date": (10, 0)}
        if self.type_name in fixed:
            return fixed[self.type_name]
        if self.type_name in ("decimal", "numeric"):
            return args[0], args[1]
        if self.type_name == "datetime2":
            scale = args[0] if args else 7
            return (19 if scale == 0 else 20 + scale), scale
        return 0, 0  # character and uniqueidentifier types


def _cols(*spec: tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


# The business's tables; order matters (parents before children: the DDL, the snapshot).
TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "accounts": _cols(
        ("account_id", "int"),
        ("account_name", "nvarchar(200)"),
        ("email", "nvarchar(320)", True),
        ("country", "char(2)"),
        ("segment", "varchar(20)"),
        ("credit_limit", "money"),
        ("is_active", "bit"),
        ("created_at", "datetime2(3)"),
        ("updated_at", "datetime2(3)"),
    ),
    "products": _cols(
        ("product_id", "int"),
        ("sku", "varchar(40)"),
        ("product_name", "nvarchar(200)"),
        ("unit_price", "decimal(18,4)"),
        ("currency", "char(3)"),
        ("is_active", "bit"),
        ("updated_at", "datetime2(3)"),
    ),
    "invoices": _cols(
        ("invoice_id", "bigint"),
        ("account_id", "int"),
        ("invoice_number", "varchar(30)"),
        ("status", "varchar(20)"),
        ("issued_at", "datetime2(3)", True),
        ("due_date", "date", True),
        ("currency", "char(3)"),
        ("total_amount", "decimal(18,2)"),
        ("updated_at", "datetime2(3)"),
    ),
    "invoice_lines": _cols(
        ("invoice_id", "bigint"),
        ("line_no", "int"),
        ("product_id", "int"),
        ("quantity", "int"),
        ("unit_price", "decimal(18,4)"),
        ("line_amount", "decimal(18,2)"),
    ),
    "payments": _cols(
        ("payment_id", "bigint"),
        ("invoice_id", "bigint"),
        ("account_id", "int"),
        ("amount", "decimal(18,2)"),
        ("method", "varchar(20)"),
        ("status", "varchar(20)"),
        ("paid_at", "datetime2(3)"),
        ("external_ref", "uniqueidentifier"),
    ),
}
KEYS: dict[str, list[str]] = {
    "accounts": ["account_id"],
    "products": ["product_id"],
    "invoices": ["invoice_id"],
    "invoice_lines": ["invoice_id", "line_no"],
    "payments": ["payment_id"],
}
# Personal data: the pipeline config hashes these (include/config/sources/billing.yaml hash_columns).
HASHED: dict[str, tuple[str, ...]] = {"accounts": ("email",)}

TABLES: list[str] = list(TABLE_COLUMNS)
COLUMNS: dict[str, list[str]] = {t: [c.name for c in cols] for t, cols in TABLE_COLUMNS.items()}

Row = dict[str, Any]


def _ddl(table: str) -> str:
    keys = KEYS[table]
    parts = []
    for col in TABLE_COLUMNS[table]:
        text = f"{col.name} {col.decl} {'NULL' if col.nullable else 'NOT NULL'}"
        if keys == [col.name]:
            text += " PRIMARY KEY"
        parts.append(text)
    if len(keys) > 1:
        parts.append(f"PRIMARY KEY ({', '.join(keys)})")
    return f"CREATE TABLE {SCHEMA}.{table} ({', '.join(parts)})"


DDL: dict[str, str] = {t: _ddl(t) for t in TABLES}


def key(table: str, row: Row | None) -> tuple[Any, ...] | None:
    """The primary-key values of ``row`` (None for no row)."""
    return None if row is None else tuple(row[k] for k in KEYS[table])
