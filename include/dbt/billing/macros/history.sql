{#-
    Building blocks over the CDC history tables (RAW.<T>_HISTORY): change times, SCD2 intervals
    and point-in-time ("as of") filters. Docs: models/marts/_marts.yml and docs/dbt.md.
-#}

{% macro cdc_operation_name(column) -%}
    case {{ column }}
        when 0 then 'snapshot'
        when 1 then 'delete'
        when 2 then 'insert'
        when 4 then 'update'
    end
{%- endmacro %}


{% macro surrogate_key(columns) -%}
    md5(concat_ws('|'
        {%- for column in columns %}, coalesce(to_varchar({{ column }}), '<null>'){% endfor -%}
    ))
{%- endmacro %}


{#-
    SCD type 2 from a staged history relation (one row per change, as stg_<table>_history).

    relation         the staged history (columns: keys, tracked/carried columns, cdc_lsn,
                     cdc_command_id, cdc_seqval, cdc_operation, cdc_committed_at, cdc_loaded_at)
    key_columns      the source primary key
    tracked_columns  attributes whose change opens a new version
    carry_columns    other columns to output (values of the version's first change)
    version_key      name of the surrogate key column (md5 of key + valid_from)

    Rules (docs/dbt.md "SCD2"):
    * order of changes for a key: (cdc_lsn, cdc_command_id, cdc_seqval, cdc_operation), as the
      pipeline applies them (seqval alone can put an insert before the delete of the same row,
      Microsoft KB 3030352);
    * a change takes effect at its source commit time; a snapshot row without one (never-captured
      database) is valid since 1900-01-01 when it is the key's first change, any other change
      without one (a delete found by a re-snapshot) at its load time;
    * several changes of a key at the same instant (one transaction) collapse to the last one;
    * consecutive changes with identical tracked attributes collapse into one version;
    * a delete closes the open version (valid_to = delete time, closed_by_delete) and opens none;
      a later re-insert starts a new version after the gap;
    * valid_from < valid_to; versions of a key never overlap and only leave gaps after a delete;
      valid_to is null for the open version (is_current).
-#}
{% macro scd2_from_history(relation, key_columns, tracked_columns, carry_columns=[], version_key='version_key') -%}
{%- set key = key_columns | join(', ') -%}
with ordered as (
    select
        *,
        row_number() over (
            partition by {{ key }} order by cdc_lsn, cdc_command_id, cdc_seqval, cdc_operation
        ) as scd_change_seq
    from {{ relation }}
),

timed as (
    select
        *,
        coalesce(
            cdc_committed_at,
            case
                when scd_change_seq = 1 and cdc_operation = 0 then '1900-01-01 00:00:00'::timestamp_ntz
                else cdc_loaded_at
            end
        ) as scd_change_at
    from ordered
),

last_per_instant as (
    select *
    from timed
    qualify row_number() over (partition by {{ key }}, scd_change_at order by scd_change_seq desc) = 1
),

fingerprinted as (
    select
        *,
        cdc_operation = 1 as scd_is_delete,
        {{ surrogate_key(tracked_columns) }} as scd_hash
    from last_per_instant
),

compared as (
    select
        *,
        lag(scd_hash) over (partition by {{ key }} order by scd_change_seq) as scd_previous_hash,
        lag(scd_is_delete) over (partition by {{ key }} order by scd_change_seq) as scd_previous_is_delete
    from fingerprinted
),

boundaries as (
    -- deletes end a version; other changes start one unless nothing tracked changed
    select *
    from compared
    where
        scd_is_delete
        or scd_previous_hash is null
        or scd_previous_is_delete
        or scd_hash != scd_previous_hash
),

intervals as (
    select
        *,
        lead(scd_change_at) over (partition by {{ key }} order by scd_change_seq) as next_change_at,
        lead(scd_is_delete) over (partition by {{ key }} order by scd_change_seq) as next_is_delete
    from boundaries
),

versions as (
    select *
    from intervals
    where not scd_is_delete
)

select
    {{ surrogate_key(key_columns + ['scd_change_at']) }} as {{ version_key }},
    {%- for column in key_columns + tracked_columns + carry_columns %}
    {{ column }},
    {%- endfor %}
    scd_change_at as valid_from,
    next_change_at as valid_to,
    next_change_at is null as is_current,
    coalesce(next_is_delete, false) as closed_by_delete,
    row_number() over (partition by {{ key }} order by scd_change_seq) as version_number,
    cdc_operation as opened_by_operation
from versions
{%- endmacro %}


{#-
    Point-in-time filter on an SCD2 relation: the version in force just before instant `ts`,
    i.e. after every change committed strictly before `ts`. With contiguous [valid_from, valid_to)
    intervals it matches at most one version per key. "As of the end of day D" is
    as_of_filter('dateadd(day, 1, D)').
-#}
{% macro as_of_filter(ts, alias=none) -%}
    {%- set p = (alias ~ '.') if alias else '' -%}
    {{ p }}valid_from < {{ ts }} and ({{ p }}valid_to is null or {{ p }}valid_to >= {{ ts }})
{%- endmacro %}


{#-
    Join of a fact to the SCD2 dimension version in force when the fact was recorded in the source:
    `ts` is the fact's own commit time (transaction time, e.g. the valid_from of the invoice version
    that issued it), so the version's interval contains it: valid_from <= ts < valid_to. Both times
    come from the same CDC clock; with the source's foreign keys the referenced row existed then,
    so the join always finds one version - unlike a business timestamp (issued_at, paid_at), which
    an application may back-date or set from its own clock. A fact captured by an initial snapshot
    taken before its dimension's snapshot (tables are snapshotted one by one) sees the dimension's
    first snapshot version, the earliest state known.
-#}
{% macro as_recorded_join(ts, alias) -%}
    (
        (
            {{ alias }}.valid_from <= {{ ts }}
            and ({{ alias }}.valid_to is null or {{ alias }}.valid_to > {{ ts }})
        )
        or ({{ alias }}.version_number = 1 and {{ alias }}.opened_by_operation = 0 and {{ ts }} < {{ alias }}.valid_from)
    )
{%- endmacro %}


{#- The reporting date: var('as_of_date') when set (YYYY-MM-DD), else today (UTC). -#}
{% macro reporting_date() -%}
    {%- set value = var('as_of_date', none) -%}
    {%- set at = var('as_of_timestamp', none) -%}
    {%- if at -%}
        '{{ at }}'::timestamp_ntz::date
    {%- elif value -%}
        '{{ value }}'::date
    {%- else -%}
        {{ today_utc() }}
    {%- endif -%}
{%- endmacro %}


{#-
    The reporting cut-off instant: var('as_of_timestamp') when set (UTC, 'YYYY-MM-DD HH:MI:SS'):
    the state just before it; else the end of the reporting date (midnight after it).
-#}
{% macro reporting_cutoff() -%}
    {%- set at = var('as_of_timestamp', none) -%}
    {%- if at -%}
        '{{ at }}'::timestamp_ntz
    {%- else -%}
        dateadd(day, 1, {{ reporting_date() }})::timestamp_ntz
    {%- endif -%}
{%- endmacro %}


{#- One row per day from start to end (inclusive), `calendar_max_days` at most. -#}
{% macro date_spine(start_date, end_date, column='calendar_date') -%}
    select dateadd(day, n, {{ start_date }}) as {{ column }}
    from (
        select row_number() over (order by seq4()) - 1 as n
        from table(generator(rowcount => {{ var('calendar_max_days', 7320) }}))
    ) as days
    where dateadd(day, n, {{ start_date }}) <= {{ end_date }}
{%- endmacro %}


{#- Finance ageing buckets from days past due (<= 0 means not yet due). -#}
{% macro ageing_bucket(days_past_due) -%}
    case
        when {{ days_past_due }} <= 0 then 'not_due'
        when {{ days_past_due }} <= 30 then '1_30'
        when {{ days_past_due }} <= 60 then '31_60'
        when {{ days_past_due }} <= 90 then '61_90'
        else '90_plus'
    end
{%- endmacro %}


{#- Today's date in UTC (the warehouse's session time zone may differ). -#}
{% macro today_utc() -%}
    convert_timezone('UTC', current_timestamp())::date
{%- endmacro %}
