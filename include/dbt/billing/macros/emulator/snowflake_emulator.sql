{#-
    Compatibility with the local Snowflake emulator (fakesnow on DuckDB), active ONLY when
    snowflake_emulator_enabled() - the target is named `local`, or var('snowflake_emulator') is
    true. On any other target every macro here returns exactly what dbt-snowflake renders
    (tests/dbt/test_production_rendering.py proves it). Docs: docs/dbt.md "Emulator overrides".

    What the emulator cannot run, and what we render instead:
    1. fully-qualified TEMPORARY relations (DuckDB keeps temp objects in its "temp" catalog, and
       DESCRIBE cannot see them, which on_schema_change and unit tests need): the <name>__dbt_tmp
       relations of incremental models (a view) and of unit tests (a table) are created as an
       ordinary view / a transient table in the model's schema; the materializations drop them at
       the end, as they drop the temporary ones;
    2. unqualified column references in MERGE ... WHEN NOT MATCHED THEN INSERT ... VALUES (...):
       the VALUES list names DBT_INTERNAL_SOURCE.<column>;
    3. BEGIN ... COMMIT around a MERGE: the statement runs alone (every Snowflake statement is
       atomic anyway).
-#}

{% macro snowflake_emulator_enabled() -%}
    {{ return(target.name == 'local' or (var('snowflake_emulator', false) | string | lower) in ['true', '1', 'yes']) }}
{%- endmacro %}


{% macro snowflake__create_view_as_with_temp_flag(relation, sql, is_temporary=False) -%}
    {%- set temporary = is_temporary and not snowflake_emulator_enabled() -%}
    {{ return(dbt.snowflake__create_view_as_with_temp_flag(relation, sql, temporary)) }}
{%- endmacro %}


{% macro snowflake__create_table_temporary_sql(relation, compiled_code) -%}
    {%- if snowflake_emulator_enabled() -%}
        {{ return(dbt.snowflake__create_table_transient_sql(relation, compiled_code)) }}
    {%- endif -%}
    {{ return(dbt.snowflake__create_table_temporary_sql(relation, compiled_code)) }}
{%- endmacro %}


{% macro snowflake__get_merge_sql(target, source_sql, unique_key, dest_columns, incremental_predicates) -%}
    {%- if not snowflake_emulator_enabled() or unique_key is none -%}
        {{ return(dbt.snowflake__get_merge_sql(target, source_sql, unique_key, dest_columns, incremental_predicates)) }}
    {%- endif -%}
    {{ return(emulator_merge_sql(target, source_sql, unique_key, dest_columns, incremental_predicates)) }}
{%- endmacro %}


{#- dbt's default__get_merge_sql with the INSERT values qualified, and no transaction wrapper. -#}
{% macro emulator_merge_sql(target, source, unique_key, dest_columns, incremental_predicates=none) -%}
    {%- set predicates = [] if incremental_predicates is none else [] + incremental_predicates -%}
    {%- set dest_cols = dest_columns | map(attribute='name') | list -%}
    {%- set dest_cols_csv = get_quoted_csv(dest_cols) -%}
    {%- set update_columns = get_merge_update_columns(config.get('merge_update_columns'), config.get('merge_exclude_columns'), dest_columns) -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {%- for key in keys -%}
        {%- do predicates.append('DBT_INTERNAL_SOURCE.' ~ key ~ ' = DBT_INTERNAL_DEST.' ~ key) -%}
    {%- endfor -%}
    {{ sql_header if sql_header is not none }}
    merge into {{ target }} as DBT_INTERNAL_DEST
        using {{ source }} as DBT_INTERNAL_SOURCE
        on {{ "(" ~ predicates | join(") and (") ~ ")" }}
    when matched then update set
        {% for column_name in update_columns -%}
            {{ column_name }} = DBT_INTERNAL_SOURCE.{{ column_name }}
            {%- if not loop.last %}, {% endif %}
        {%- endfor %}
    when not matched then insert
        ({{ dest_cols_csv }})
    values
        ({% for column in dest_cols %}DBT_INTERNAL_SOURCE.{{ adapter.quote(column) }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro %}
