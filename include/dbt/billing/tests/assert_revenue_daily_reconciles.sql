-- fct_revenue_daily adds up to the facts it summarises, per currency.
with daily as (
    select
        currency,
        sum(invoiced_amount)::number(18, 2) as invoiced,
        sum(paid_amount)::number(18, 2) as paid
    from {{ ref('fct_revenue_daily') }}
    group by currency
),

invoices as (
    select
        currency,
        sum(total_amount)::number(18, 2) as invoiced
    from {{ ref('fct_invoices') }}
    where is_billed
    group by currency
),

payments as (
    select
        currency,
        sum(settled_amount)::number(18, 2) as paid
    from {{ ref('fct_payments') }}
    group by currency
)

select
    coalesce(daily.currency, invoices.currency, payments.currency) as currency,
    daily.invoiced as daily_invoiced,
    invoices.invoiced as fact_invoiced,
    daily.paid as daily_paid,
    payments.paid as fact_paid
from daily
full outer join invoices on daily.currency = invoices.currency
full outer join payments on coalesce(daily.currency, invoices.currency) = payments.currency
where
    coalesce(daily.invoiced, 0) != coalesce(invoices.invoiced, 0)
    or coalesce(daily.paid, 0) != coalesce(payments.paid, 0)
