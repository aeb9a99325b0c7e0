"""The CDC DAG's Assets: one per raw table (emitted through the source's asset alias by the table's
``apply``), and the source's *published* Asset the dbt DAG is scheduled on. Imported by the DAG
builders (parse time: no connection) and by the task that emits the events.
"""

from __future__ import annotations

from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

from include.cdc_pipeline.config import SourceConfig, TableConfig


def snowflake_namespace(account: str) -> str:
    """``snowflake://<account>`` exactly as Cosmos names the marts' Assets (its OpenLineage namespace):
    the account goes through OpenLineage's ``fix_account_name`` (a bare locator gains the default
    region and cloud, ``xy12345`` → ``xy12345.us-west-1.aws``; ``org-account`` stays as is), as in
    ``cosmos.dataset`` (astronomer-cosmos 1.15), so raw tables and marts link up in the Assets view."""
    try:
        from openlineage.common.provider.snowflake import fix_account_name
    except ImportError:  # Cosmos then keeps the account as given, and so do we
        return f"snowflake://{account}"
    return f"snowflake://{fix_account_name(account)}"


def raw_asset(source: SourceConfig, table: TableConfig) -> Asset:
    """The Asset a table's load emits: ``snowflake://<account>/<DB>/<SCHEMA>/<TABLE>``, the URI Cosmos
    gives the same table (its dbt source), with the account of ``target.account``."""
    target = source.target
    parts = (target.database, target.raw_schema, table.snowflake_table)
    return Asset(
        name=".".join(_uri_part(p) for p in parts).lower(),
        uri=f"{snowflake_namespace(target.account)}/{'/'.join(_uri_part(p) for p in parts)}",
        group="cdc_raw",
    )


def _uri_part(name: str) -> str:
    """One name in an Asset URI or name, percent-encoded (RFC 3986) so that a table name holding
    ``/``, ``#``, ``?``, ``.``, a space or a non-ASCII letter stays one path segment, survives
    Airflow's URI normalisation (which drops fragments) and stays ASCII (MySQL metadata DBs);
    letters, digits, ``_``, ``-``, ``~`` and ``$`` are kept, so ``ANALYTICS/RAW/CUSTOMERS`` is unchanged."""
    return quote(name, safe="$").replace(".", "%2E")


def raw_alias(source: SourceConfig) -> AssetAlias:
    """The alias a table's ``apply`` emits its raw table's Asset through: the mapped task serves
    every table, and only the tables that changed get an event."""
    return AssetAlias(name=f"{source.name}_raw_tables", group="cdc_raw")


def published_asset(source: SourceConfig) -> Asset:
    """The Asset a CDC run emits once every table of the run was applied up to the run's LSN cut
    (and at least one changed): the raw tables are then consistent with each other, so the dbt DAG
    is scheduled on this one, never on a single table's event."""
    target = source.target
    # No snowflake:// URI: that scheme names one table, this event covers the source's raw schema.
    return Asset(name=f"{target.database}.{target.raw_schema}.{source.name}".lower(), group="cdc_raw")
