-- Open receivables at the end of the reporting date (var as_of_date, default today UTC; or at the
-- instant var as_of_timestamp), rebuilt from the CDC history: the invoices and payments exactly as
-- they stood at that cut-off, so a past month-end can be reproduced after the fact. One row per
-- invoice with money outstanding.
with cutoff as (
    select
        {{ reporting_date() }} as as_of_date,
        {{ reporting_cutoff() }} as as_of_ts
),

invoices as (
    select
        versions.*,
        cutoff.as_of_date
    from {{ ref('int_invoice_versions') }} as versions
    cross join cutoff
    where
        {{ as_of_filter('cutoff.as_of_ts', 'versions') }}
        and versions.status = 'issued'
),

payments as (
    select
        versions.invoice_id,
        sum(versions.amount)::number(18, 2) as paid_amount
    from {{ ref('int_payment_versions') }} as versions
    cross join cutoff
    where
        {{ as_of_filter('cutoff.as_of_ts', 'versions') }}
        and versions.status = 'settled'
    group by versions.invoice_id
),

accounts as (
    select account_versions.*
    from {{ ref('dim_accounts') }} as account_versions
    cross join cutoff
    where {{ as_of_filter('cutoff.as_of_ts', 'account_versions') }}
),

open_items as (
    select
        invoices.as_of_date,
        invoices.invoice_id,
        invoices.invoice_number,
        invoices.account_id,
        accounts.account_version_key,
        accounts.segment,
        accounts.country_code,
        invoices.currency,
        invoices.issued_at,
        invoices.due_date,
        invoices.total_amount,
        coalesce(payments.paid_amount, 0)::number(18, 2) as paid_amount,
        greatest(invoices.total_amount - coalesce(payments.paid_amount, 0), 0)::number(18, 2) as outstanding_amount,
        datediff(day, invoices.due_date, invoices.as_of_date) as days_after_due
    from invoices
    left join payments on invoices.invoice_id = payments.invoice_id
    left join accounts on invoices.account_id = accounts.account_id
)

select
    as_of_date,
    invoice_id,
    invoice_number,
    account_id,
    account_version_key,
    segment,
    country_code,
    currency,
    issued_at,
    due_date,
    total_amount,
    paid_amount,
    outstanding_amount,
    greatest(days_after_due, 0) as days_past_due,
    {{ ageing_bucket('days_after_due') }} as ageing_bucket
from open_items
where outstanding_amount > 0
