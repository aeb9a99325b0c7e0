{#- Generic test: every row satisfies a SQL boolean expression (rows where it is not true fail). -#}
{% test expression_is_true(model, expression, column_name=none, where_clause=none) %}
select *
from {{ model }}
where
    not coalesce(({{ expression }}), false)
    {%- if where_clause %}
    and ({{ where_clause }})
    {%- endif %}
{% endtest %}
