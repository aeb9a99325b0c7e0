{{
    config(
        materialized='incremental',
        unique_key=['account_id', 'currency', 'as_of_date'],
        incremental_strategy='merge',
        on_schema_change='fail',
    )
}}
-- Point-in-time features per account, currency and day for data science: what was invoiced,
-- paid, outstanding and how late the account was AS OF the end of each day, rebuilt from the
-- CDC history (no leakage of later corrections, voids or refunds into past rows).
-- Incremental: a past day never changes once its changes have arrived, so a run recomputes only
-- the last `features_lookback_days` days (late-arriving changes) plus the new ones.
{%- set lookback = var('features_lookback_days', 3) | int %}

with bounds as (
    select
        {%- if is_incremental() %}
            (select dateadd(day, -{{ lookback }}, max(as_of_date)) from {{ this }}) as start_date,
        {%- elif var('features_start_date', none) %}
            '{{ var("features_start_date") }}'::date as start_date,
        {%- else %}
        -- the first day the history covers (the initial snapshot); earlier states are unknown
            (
                select min(valid_from)::date
                from {{ ref('int_invoice_versions') }}
                where valid_from > '1900-01-01 00:00:00'::timestamp_ntz
            ) as start_date,
        {%- endif %}
        {%- if var('features_end_date', none) %}
            '{{ var("features_end_date") }}'::date as end_date
        {%- else %}
            {{ today_utc() }} as end_date
        {%- endif %}
),

calendar as (
    select
        days.calendar_date::date as as_of_date,
        dateadd(day, 1, days.calendar_date)::timestamp_ntz as as_of_ts
    from (
        {{ date_spine('(select start_date from bounds)', '(select end_date from bounds)') }}
    ) as days
),

invoice_state as (
    select
        calendar.as_of_date,
        versions.invoice_id,
        versions.account_id,
        versions.currency,
        versions.status,
        versions.total_amount,
        versions.issued_at,
        versions.due_date
    from calendar
    inner join {{ ref('int_invoice_versions') }} as versions
        on {{ as_of_filter('calendar.as_of_ts', 'versions') }}
    where versions.status in ('issued', 'paid', 'refunded')
),

payment_state as (
    select
        calendar.as_of_date,
        versions.invoice_id,
        sum(versions.amount)::number(18, 2) as paid_amount,
        sum(iff(versions.paid_at::date = calendar.as_of_date, versions.amount, 0))::number(18, 2) as paid_on_day
    from calendar
    inner join {{ ref('int_payment_versions') }} as versions
        on {{ as_of_filter('calendar.as_of_ts', 'versions') }}
    where versions.status = 'settled'
    group by calendar.as_of_date, versions.invoice_id
),

per_invoice as (
    select
        invoice_state.as_of_date,
        invoice_state.account_id,
        invoice_state.currency,
        invoice_state.total_amount,
        iff(invoice_state.issued_at::date = invoice_state.as_of_date, invoice_state.total_amount, 0)
            as invoiced_on_day,
        coalesce(payment_state.paid_amount, 0) as paid_amount,
        coalesce(payment_state.paid_on_day, 0) as paid_on_day,
        iff(
            invoice_state.status = 'issued',
            greatest(invoice_state.total_amount - coalesce(payment_state.paid_amount, 0), 0),
            0
        ) as outstanding_amount,
        datediff(day, invoice_state.due_date, invoice_state.as_of_date) as days_after_due
    from invoice_state
    left join payment_state
        on
            invoice_state.as_of_date = payment_state.as_of_date
            and invoice_state.invoice_id = payment_state.invoice_id
)

select
    account_id::number(10, 0) as account_id,
    currency::varchar(3) as currency,
    as_of_date::date as as_of_date,
    sum(total_amount)::number(18, 2) as invoiced_amount_to_date,
    sum(invoiced_on_day)::number(18, 2) as invoiced_amount_on_day,
    sum(paid_amount)::number(18, 2) as paid_amount_to_date,
    sum(paid_on_day)::number(18, 2) as paid_amount_on_day,
    sum(outstanding_amount)::number(18, 2) as outstanding_amount,
    count_if(outstanding_amount > 0)::number(10, 0) as open_invoice_count,
    sum(iff(outstanding_amount > 0 and days_after_due > 0, outstanding_amount, 0))::number(18, 2) as overdue_amount,
    count_if(outstanding_amount > 0 and days_after_due > 0)::number(10, 0) as overdue_invoice_count,
    coalesce(max(iff(outstanding_amount > 0 and days_after_due > 0, days_after_due, null)), 0)::number(10, 0)
        as max_days_past_due
from per_invoice
group by account_id, currency, as_of_date
