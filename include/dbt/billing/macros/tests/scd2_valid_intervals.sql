{#-
    Generic test for SCD2 relations (valid_from / valid_to / is_current / closed_by_delete):
    every interval is non-empty, versions of a key neither overlap nor leave a gap (except after a
    delete), only the last version may be open, is_current <=> valid_to is null. Returns the
    offending versions.
-#}
{% test scd2_valid_intervals(model, key_columns) %}
{%- set key = key_columns | join(', ') -%}
with versions as (
    select
        {{ key }},
        valid_from,
        valid_to,
        is_current,
        closed_by_delete,
        lead(valid_from) over (partition by {{ key }} order by valid_from) as next_valid_from
    from {{ model }}
)

select *
from versions
where
    valid_from is null
    or (valid_to is not null and valid_to <= valid_from)
    or is_current != (valid_to is null)
    or (closed_by_delete and valid_to is null)
    or (next_valid_from is not null and valid_to is null)
    or (next_valid_from is not null and next_valid_from < valid_to)
    or (next_valid_from is not null and not closed_by_delete and next_valid_from != valid_to)
{% endtest %}
