"""Names SQL Server allows (issue 16): the two quoting functions, the drivers' placeholder rules, the
slug that task ids, stage paths, Variable keys and control rows derive from a table, and config
validation of names and of collisions."""

from __future__ import annotations

import re

import pymssql._mssql as mssql_driver
import pytest
from airflow.sdk.definitions._internal.node import validate_group_key, validate_key
from pydantic import ValidationError

from include.cdc_pipeline.config import SourceConfig, load_source_config, source_files, table_slug
from include.cdc_pipeline.sql import sf_ident, sf_params, tsql_ident, tsql_name, tsql_params

NASTY = ["Order Details", "Qty%", "select", "Ä-Name", "O'Brien", "a]b", 'X"; DROP TABLE t; --', "1st", "a\\b", "%s"]


def config(tables: list[dict], **extra: object) -> SourceConfig:
    return SourceConfig.model_validate(
        {"name": "src", "target": {"database": "DB"}, "alert_emails": ["a@example.com"], "tables": tables, **extra}
    )


# -- quoting -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "quoted"),
    [("Order Details", "[Order Details]"), ("a]b", "[a]]b]"), ("x]; DROP TABLE t; --", "[x]]; DROP TABLE t; --]")],
)
def test_tsql_ident_brackets_and_doubles_closing_bracket(name: str, quoted: str) -> None:
    assert tsql_ident(name) == quoted
    assert tsql_name("cdc", f"dbo_{name}_CT") == f"[cdc].{tsql_ident(f'dbo_{name}_CT')}"


@pytest.mark.parametrize(("name", "quoted"), [("Qty%", '"QTY%"'), ('X"; DROP', '"X""; DROP"'), ("Ä-Name", '"Ä-NAME"')])
def test_sf_ident_upper_cases_and_doubles_quotes(name: str, quoted: str) -> None:
    assert sf_ident(name) == quoted


def test_snowflake_statement_with_parameters_escapes_percent_only_inside_quotes() -> None:
    # Given a statement with a quoted name holding %, a literal holding % and a placeholder,
    sql = f"SELECT {sf_ident('Qty%')}, 'a%b' FROM t WHERE {sf_ident('%(batch)s')} = %(batch)s"
    # when prepared for the connector's pyformat (Python's % operator), then only the placeholder remains.
    assert sf_params(sql) % {"batch": "'v'"} == """SELECT "QTY%", 'a%b' FROM t WHERE "%(BATCH)S" = 'v'"""


@pytest.mark.parametrize("column", [*NASTY, "%(p0)s", "%d"])
def test_tsql_statement_carries_any_name_through_pymssql_parameter_substitution(column: str) -> None:
    # Given a statement whose quoted name may look like a pymssql placeholder,
    sql = f"SELECT {tsql_ident(column)} FROM {tsql_name('dbo', 'Order Details')} WHERE k > %s AND v = %s"
    text, params = tsql_params(sql, (7, "O'x"))
    # when pymssql substitutes the parameters (its own client-side code),
    sent = mssql_driver.substitute_params(text, params).decode()
    # then the name arrives verbatim and the values in the placeholders' places.
    assert sent == f"SELECT {tsql_ident(column)} FROM [dbo].[Order Details] WHERE k > 7 AND v = N'O''x'"


def test_tsql_statement_with_both_placeholder_forms_in_names_is_refused() -> None:
    sql = f"SELECT {tsql_ident('%s')}, {tsql_ident('%(x)s')} FROM t WHERE k > %s"
    with pytest.raises(ValueError, match="both '%s' and '%\\('"):
        tsql_params(sql, (1,))


# -- slugs ------------------------------------------------------------------------------------------
def test_billing_slugs_task_ids_and_stage_names_are_unchanged() -> None:
    # Given the shipped billing config, its names are exactly those of deployments before issue 16.
    billing = load_source_config(next(p for p in source_files() if p.stem == "billing"))
    assert [t.name for t in billing.tables] == [f"{t.source_schema}_{t.table}".lower() for t in billing.tables]
    assert {t.name for t in billing.tables} >= {"dbo_accounts", "dbo_invoice_lines", "dbo_payments"}


@pytest.mark.parametrize(
    ("schema", "table"),
    [
        ("dbo", "Order Details"),
        ("dbo", "Ä-Name"),
        ("x]; DROP TABLE dbo.t; --", "y"),
        ("dbo", "a" * 128),
        ("s" * 128, "t" * 128),
    ],
)
def test_slug_of_any_name_is_a_valid_group_and_task_id(schema: str, table: str) -> None:
    slug = table_slug(schema, table)
    validate_group_key(slug)
    for task in ("plan", "extract_load", "apply"):
        validate_key(f"{slug}.{task}")
    assert re.fullmatch(r"[a-z0-9_]+", slug)
    assert table_slug(schema.upper(), table.upper()) == slug  # case-insensitive, like the default collation


def test_lossy_slugs_stay_unique() -> None:
    names = [("dbo", "a b"), ("dbo", "a-b"), ("dbo", "a_b "), ("dbo_a", "b"), ("dbo", "a.b"), ("dbo.a", "b")]
    slugs = {table_slug(*n) for n in names}
    assert len(slugs) == len(names)
    assert table_slug("dbo", "Order Details").startswith("dbo_order_details_")


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*NASTY, "x" * 128])
def test_config_accepts_any_sql_server_name(name: str) -> None:
    source = config([{"schema": "dbo", "table": name, "primary_key": [name], "hash_columns": [], "column_names": {}}])
    assert source.tables[0].table == name
    assert source.tables[0].snowflake_table == name.upper()


@pytest.mark.parametrize(("name", "words"), [("", "at least 1"), ("x" * 129, "at most 128"), ("a\x00b", "control")])
def test_config_rejects_what_sql_server_rejects_naming_the_field(name: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config([{"schema": "dbo", "table": name, "primary_key": ["id"]}])
    (error,) = caught.value.errors()
    assert error["loc"] == ("tables", 0, "table")
    assert words in error["msg"]


def test_two_tables_mapping_to_one_snowflake_table_are_rejected_naming_both() -> None:
    with pytest.raises(ValidationError, match=re.escape("two tables share target A B: 'dbo.a b' and 'sales.A B'")):
        config(
            [
                {"schema": "dbo", "table": "a b", "primary_key": ["id"]},
                {"schema": "sales", "table": "A B", "primary_key": ["id"]},
            ]
        )


def test_target_table_override_colliding_with_another_table_or_its_history_is_rejected() -> None:
    with pytest.raises(ValidationError, match=re.escape("share target ORDERS: 'dbo.Orders' and 'dbo.Order Details'")):
        config(
            [
                {"schema": "dbo", "table": "Orders", "primary_key": ["id"]},
                {"schema": "dbo", "table": "Order Details", "target_table": "orders", "primary_key": ["id"]},
            ]
        )
    with pytest.raises(ValidationError, match=re.escape("share target X_HISTORY: 'dbo.x' and 'dbo.x_history'")):
        config(
            [
                {"schema": "dbo", "table": "x", "primary_key": ["id"]},
                {"schema": "dbo", "table": "x_history", "primary_key": ["id"]},
            ]
        )


def test_column_rename_override_maps_and_two_renames_to_one_name_are_rejected() -> None:
    table = config(
        [{"schema": "dbo", "table": "t", "primary_key": ["id"], "column_names": {"Qty%": "qty_pct"}}]
    ).tables[0]
    assert table.snowflake_column("QTY%") == "QTY_PCT"
    assert table.snowflake_column("Unit Price") == "UNIT PRICE"
    with pytest.raises(ValidationError, match=re.escape("maps both 'a' and 'b' to Snowflake column 'C'")):
        config([{"schema": "dbo", "table": "t", "primary_key": ["id"], "column_names": {"a": "c", "b": "C"}}])


def test_target_table_too_long_for_its_history_or_staging_table_is_rejected() -> None:
    with pytest.raises(ValidationError, match="longer than 255 characters; set a shorter target_table"):
        config([{"schema": "dbo", "table": "t", "primary_key": ["id"], "target_table": "T" * 250}])


def test_asset_uris_percent_encode_table_names_and_keep_billing_uris() -> None:
    from include.cdc_pipeline.orchestration.cdc_dag import raw_asset

    billing = load_source_config(next(p for p in source_files() if p.stem == "billing"))
    for table in billing.tables:
        asset = raw_asset(billing, table)
        t = billing.target
        assert asset.uri.endswith(f"/{t.database}/{t.raw_schema}/{table.snowflake_table}")
        assert asset.name == f"{t.database}.{t.raw_schema}.{table.snowflake_table}".lower()
    source = config([{"schema": "dbo", "table": "Order Details/#?.x", "primary_key": ["id"]}])
    asset = raw_asset(source, source.tables[0])
    assert asset.uri.endswith("/DB/RAW/ORDER%20DETAILS%2F%23%3F%2EX")
    assert asset.name == "db.raw.order%20details%2f%23%3f%2ex"
