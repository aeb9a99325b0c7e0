-- Point-in-time features of today (history path) equal today's position per account and
-- currency computed from the current state (fct_invoices). Only when the grid ends today.
{{ config(enabled=var('features_end_date', none) is none) }}

with features as (
    select
        account_id,
        currency,
        outstanding_amount,
        open_invoice_count
    from {{ ref('fct_account_features_daily') }}
    where as_of_date = {{ today_utc() }}
),

current_position as (
    select
        account_id,
        currency,
        sum(outstanding_amount)::number(18, 2) as outstanding_amount,
        count_if(outstanding_amount > 0) as open_invoice_count
    from {{ ref('fct_invoices') }}
    where is_billed
    group by account_id, currency
)

select
    coalesce(features.account_id, current_position.account_id) as account_id,
    coalesce(features.currency, current_position.currency) as currency,
    features.outstanding_amount as feature_outstanding,
    current_position.outstanding_amount as current_outstanding
from features
full outer join current_position
    on
        features.account_id = current_position.account_id
        and features.currency = current_position.currency
where
    features.outstanding_amount is distinct from current_position.outstanding_amount
    or features.open_invoice_count is distinct from current_position.open_invoice_count
