{#-
    PII tags on mart columns (README "Snowflake access, PII and cost guards").
    Marts are tables: CREATE TABLE AS copies values, not tags, so a column declared with
    `config: {meta: {pii: <category>}}` in the model's YAML gets the tag
    <database>.<var pii_tag_schema>.PII = '<category>' after each build, and with it the tag's
    masking policy (clear only for PII_READER). Staging and intermediate models are views: Snowflake
    masks them through the raw tables' tagged columns at query time.
    Only where the tag exists (the access spec applied: make access-apply); elsewhere, e.g. the
    local demo before the spec is applied, the hook logs that it tagged nothing.
-#}
{% macro apply_pii_tags() -%}
    {%- set columns = [] -%}
    {%- for name, column in model.columns.items() -%}
        {%- set meta = (column.get('config') or {}).get('meta') or column.get('meta') or {} -%}
        {%- if meta.get('pii') -%}{%- do columns.append((name, meta.get('pii'))) -%}{%- endif -%}
    {%- endfor -%}
    {%- if columns and execute -%}
        {%- set schema = var('pii_tag_schema', 'GOVERNANCE') | upper -%}
        {%- set found = run_query("show tags like 'PII' in database " ~ adapter.quote(this.database)) -%}
        {%- set present = found.rows | selectattr('schema_name', 'equalto', schema) | list | length > 0 -%}
        {%- if present -%}
            {%- for name, value in columns %}
alter table {{ this }} modify column {{ adapter.quote(name | upper) }} set tag {{ this.database }}.{{ schema }}.PII = '{{ value }}';
            {%- endfor %}
        {%- else -%}
            {{ log("PII tag " ~ this.database ~ "." ~ schema ~ ".PII not found: " ~ this ~ " columns " ~ (columns | map(attribute=0) | join(", ")) ~ " left untagged (make access-apply)", info=True) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
