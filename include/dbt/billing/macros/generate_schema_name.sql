{#-
    Custom schemas are exact names (STAGING_DBT, MARTS), not dbt's default
    "<target.schema>_<custom>" concatenation: the warehouse layout is the same in every target.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim | upper }}
    {%- endif -%}
{%- endmacro %}
