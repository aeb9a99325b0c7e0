-- Analysis (compile with `dbt compile --select month_ago_vs_today`, run the SQL it prints):
-- each account's billing position today next to the position exactly as it stood a month ago,
-- and the account's segment then and now - all point in time, from the CDC history, so
-- corrections made since (voids, refunds, re-segmentation) do not rewrite "a month ago".
{% set today = today_utc() %}
{% set month_ago = 'dateadd(month, -1, ' ~ today_utc() ~ ')' %}

with today as (
    select *
    from {{ ref('fct_account_features_daily') }}
    where as_of_date = {{ today }}
),

month_ago as (
    select *
    from {{ ref('fct_account_features_daily') }}
    where as_of_date = {{ month_ago }}
),

segment_then as (
    select
        dim_accounts.account_id,
        dim_accounts.segment
    from {{ ref('dim_accounts') }} as dim_accounts
    where {{ as_of_filter('dateadd(day, 1, ' ~ month_ago ~ ')::timestamp_ntz', 'dim_accounts') }}
),

segment_now as (
    select
        account_id,
        segment
    from {{ ref('dim_accounts') }}
    where is_current
)

select
    coalesce(today.account_id, month_ago.account_id) as account_id,
    coalesce(today.currency, month_ago.currency) as currency,
    segment_then.segment as segment_month_ago,
    segment_now.segment as segment_today,
    month_ago.invoiced_amount_to_date as invoiced_to_date_month_ago,
    today.invoiced_amount_to_date as invoiced_to_date_today,
    month_ago.paid_amount_to_date as paid_to_date_month_ago,
    today.paid_amount_to_date as paid_to_date_today,
    month_ago.outstanding_amount as outstanding_month_ago,
    today.outstanding_amount as outstanding_today,
    coalesce(today.outstanding_amount, 0) - coalesce(month_ago.outstanding_amount, 0) as outstanding_change,
    month_ago.max_days_past_due as days_late_month_ago,
    today.max_days_past_due as days_late_today
from today
full outer join month_ago
    on
        today.account_id = month_ago.account_id
        and today.currency = month_ago.currency
left join segment_then on coalesce(today.account_id, month_ago.account_id) = segment_then.account_id
left join segment_now on coalesce(today.account_id, month_ago.account_id) = segment_now.account_id
order by outstanding_change desc
