"""The Snowflake executor: runs statements on one DB-API connection and counts them.

``Warehouse`` executes what ``snowflake_sql`` builds (MERGE, history, DDL, COPY) and adds only
what needs answers from the server: existence checks (so nothing is created that exists), the
columns and declared types of a table, and schema evolution of raw/history tables decided by
``snowflake_sql.type_change``. It holds no statement of the replication itself; the control table
and the batch log are ``offsets``' concern.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from include.cdc_pipeline import snowflake_sql as q
from include.cdc_pipeline.errors import SchemaDriftError
from include.cdc_pipeline.snowflake_sql import TableLayout
from include.cdc_pipeline.sql import sf_ident, sf_params, sf_table

log = logging.getLogger(__name__)


class Warehouse:
    """Runs the pipeline's statements on one Snowflake DB-API connection and counts them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.queries = 0
        self.query_ids: list[str] = []  # Snowflake's id of each statement (credits per batch: governance/credits.py)
        self._present: set[str] = set()  # objects found or created on this connection

    # -- plumbing -----------------------------------------------------------------------------
    def execute(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.queries += 1
        if params is not None:
            sql = sf_params(sql)  # a % in a quoted name ("QTY%") is not a placeholder
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, params)
            if qid := getattr(cursor, "sfqid", None):
                self.query_ids.append(qid)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def affected(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Run a DML statement; the rows it changed (Snowflake returns counts as the single result
        row; a MERGE answers (inserted, updated, deleted), all counted)."""
        rows = self.execute(sql, params)
        return int(sum(v for v in rows[0] if isinstance(v, int))) if rows else 0

    # -- objects ------------------------------------------------------------------------------
    # Existing objects are found before anything is created: Snowflake checks the privilege to
    # create even for CREATE … IF NOT EXISTS on an existing object, and a loader role granted
    # rights on the target database has no account-level CREATE DATABASE
    # (docs.snowflake.com/en/sql-reference/sql/create-database, access control requirements).
    def database_exists(self, database: str) -> bool:
        name = database.upper()
        # SHOW … LIKE takes a pattern (``_`` matches any character): compare the names exactly.
        return any(row[1] == name for row in self.execute(f"SHOW DATABASES LIKE '{_like(name)}'"))

    def schema_exists(self, database: str, schema: str) -> bool:
        return bool(
            self.execute(
                f"SELECT 1 FROM {sf_ident(database)}.INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = %(schema)s",
                {"schema": schema.upper()},
            )
        )

    def stage_exists(self, database: str, schema: str, stage: str) -> bool:
        name = stage.upper()
        rows = self.execute(f"SHOW STAGES LIKE '{_like(name)}' IN SCHEMA {sf_table(database, schema)}")
        return any(row[1] == name for row in rows)

    def ensure_database(self, database: str) -> None:
        if database.upper() not in self._present and not self.database_exists(database):
            self.execute(f"CREATE DATABASE IF NOT EXISTS {sf_ident(database)}")
        self._present.add(database.upper())

    def use_schema(self, database: str, schema: str) -> None:
        """Create the target database and schema if missing and make them current.

        Statements are fully qualified; a current database and schema are still needed by the
        local emulator (COPY's load history, MERGE), and are harmless on Snowflake.
        """
        self.ensure_database(database)
        self.ensure_schemas(database, [schema])
        self.execute(f"USE SCHEMA {sf_table(database, schema)}")

    def ensure_schemas(self, database: str, schemas: Iterable[str]) -> None:
        for schema in schemas:
            key = f"{database}.{schema}".upper()
            if key not in self._present and not self.schema_exists(database, schema):
                self.execute(f"CREATE SCHEMA IF NOT EXISTS {sf_table(database, schema)}")
            self._present.add(key)

    def ensure_stage(self, database: str, schema: str, stage: str) -> None:
        key = f"{database}.{schema}.@{stage}".upper()
        if key not in self._present and not self.stage_exists(database, schema, stage):
            self.execute(f"CREATE STAGE IF NOT EXISTS {sf_table(database, schema, stage)}")
        self._present.add(key)

    def existing_columns(self, database: str, schema: str, table: str) -> dict[str, str]:
        rows = self.execute(
            f"SELECT column_name, data_type FROM {sf_ident(database)}.information_schema.columns"
            " WHERE table_schema = %(schema)s AND table_name = %(table)s",
            {"schema": schema.upper(), "table": table.upper()},
        )
        return {name.upper(): data_type for name, data_type in rows}

    def declared_types(self, database: str, schema: str, table: str) -> dict[str, str]:
        """Exact declared column types (``NUMBER(10,2)``, ``VARCHAR(36)``, ``TIMESTAMP_NTZ(3)``)."""
        rows = self.execute(f"DESCRIBE TABLE {sf_table(database, schema, table)}")
        return {str(row[0]).upper(): str(row[1]) for row in rows}

    def ensure_target_tables(self, layout: TableLayout) -> list[str]:
        """Create raw/history tables if missing; add columns the capture instance gained; widen
        columns whose source type grew (ALTER COLUMN on SQL Server changes the change table's type
        in place).

        Returns the names of added columns. A type Snowflake cannot change in place without
        rounding, truncating or converting old values is a SchemaDriftError naming the column.
        """
        source = layout.source_columns
        added: list[str] = []
        for table, meta in layout.target_tables():
            target = sf_table(layout.database, layout.raw_schema, table)
            existing = self.existing_columns(layout.database, layout.raw_schema, table)
            if not existing:
                self.execute(q.create_table(target, [*source, *meta]))
                self._tag_pii(layout, target, [name for name, _ in source])
                continue
            declared = self.declared_types(layout.database, layout.raw_schema, table)
            for name, type_ in [*source, *meta]:
                if name not in existing:
                    # Metadata columns a newer pipeline version introduced are added the same way.
                    self.execute(q.add_column(target, name, type_))
                    if (name, type_) in source:
                        added.append(f"{table}.{name}")
                        self._tag_pii(layout, target, [name])
                    continue
                have = declared.get(name, existing[name])
                change = q.type_change(have, type_)
                if change.startswith("widen "):
                    wider = change.removeprefix("widen ")
                    log.warning("%s.%s: source type grew; widening %s to %s", target, name, have, wider)
                    self.execute(q.widen_column(target, name, wider))
                elif change != "fits":
                    raise SchemaDriftError(
                        f"{target}.{name} is {have} in Snowflake but the source column now maps to {type_} "
                        f"({change}): Snowflake cannot change it in place without changing stored values. "
                        "Add a new column (or re-create the table) and re-snapshot, by hand"
                    )
        return added

    def _tag_pii(self, layout: TableLayout, table: str, columns: Sequence[str]) -> None:
        """Tag the PII columns of a table or columns just created, before any row lands in them
        (the tag's masking policy then hides them from every role but the PII reader). Without the
        tag (the access spec not applied yet: ``make access-apply``) the table loads untagged, said
        once in the log; the preflight names such columns."""
        wanted = [(c, category) for c, category in layout.pii if c in columns]
        if not wanted or not layout.pii_tag:
            return
        try:
            for column, category in wanted:
                self.execute(q.set_column_tag(table, column, layout.pii_tag, category))
        except Exception as exc:
            log.warning(
                "%s: PII column(s) %s not tagged %s (%s): they are NOT masked until the access spec is applied "
                "(make access-apply, README 'Snowflake access')",
                table,
                [c for c, _ in wanted],
                layout.pii_tag,
                " ".join(str(exc).split())[:300],
            )

    # -- stage --------------------------------------------------------------------------------
    def stage_remove(self, stage: str, path: str) -> None:
        self.execute(f"REMOVE @{stage}/{path}")

    def stage_put(self, local_file: str, stage: str, path: str) -> None:
        self.execute(f"PUT 'file://{local_file}' @{stage}/{path} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")


def _like(name: str) -> str:
    """A validated identifier as a SHOW … LIKE string literal (config restricts names to [A-Za-z0-9_$])."""
    if not all(c.isalnum() or c in "_$" for c in name):
        raise ValueError(f"unexpected character in Snowflake object name {name!r}")
    return name
