"""Reconciliation: does a raw table hold exactly the source table's rows, value for value?

Used by `make demo` to prove what it loaded, by the end-to-end tests, and by operators after an
incident (it reads the whole table on both sides, so run it on small tables or off-hours).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from include.cdc_pipeline import snowflake_sql as q
from include.cdc_pipeline.pipeline import TablePipeline
from include.cdc_pipeline.types import ColumnMapping, arrow_column


@dataclass
class Reconciliation:
    table: str
    source_rows: int
    raw_live_rows: int
    raw_deleted_rows: int
    missing: list[tuple[Any, ...]] = field(default_factory=list)  # keys in source, not live in raw
    extra: list[tuple[Any, ...]] = field(default_factory=list)  # keys live in raw, not in source
    different: list[tuple[Any, ...]] = field(default_factory=list)  # keys whose values differ

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)


def _norm(value: Any, mapping: ColumnMapping) -> Any:
    if value is None:
        return None
    if mapping.snowflake_type == "TIMESTAMP_TZ":
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed.astimezone(UTC)
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, float):
        return round(value, 12)
    return value


def reconcile(pipeline: TablePipeline, salt: str | None = None, sample: int = 5) -> Reconciliation:
    """Compare the source table (through the CDC reader's connection) with the live raw rows."""
    instance = pipeline.instances()[-1]
    mappings = pipeline.mappings(instance.name)
    layout = pipeline.layout(mappings)
    key_idx = [layout.names.index(k) for k in layout.key]
    selected, widen = pipeline.snapshot_reader([m.source.name for m in mappings])
    table = pipeline.table
    rows = [widen(row) for row in pipeline.source.table_rows(table.source_schema, table.table, selected)]
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in mappings]
    converted = [arrow_column(m, list(columns[i]), salt).to_pylist() for i, m in enumerate(mappings)]
    source = {}
    for values in zip(*converted, strict=True) if rows else []:
        normed = tuple(_norm(v, m) for v, m in zip(values, mappings, strict=True))
        source[tuple(normed[i] for i in key_idx)] = normed

    raw_rows = pipeline.warehouse.execute(q.raw_rows(layout))
    raw, n_deleted = {}, 0
    for row in raw_rows:
        if row[-1]:
            n_deleted += 1
            continue
        normed = tuple(_norm(v, m) for v, m in zip(row[:-1], mappings, strict=True))
        raw[tuple(normed[i] for i in key_idx)] = normed

    result = Reconciliation(pipeline.table.name, len(source), len(raw), n_deleted)
    result.missing = sorted(set(source) - set(raw), key=repr)[:sample]
    result.extra = sorted(set(raw) - set(source), key=repr)[:sample]
    result.different = [k for k in sorted(set(source) & set(raw), key=repr) if source[k] != raw[k]][:sample]
    return result
