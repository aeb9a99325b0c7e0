-- Invoiced and paid amounts per day and currency (current state): invoices count on the day they
-- were issued (void and draft invoices excluded), payments on the day they were paid.
with invoiced as (
    select
        issued_date as revenue_date,
        currency,
        sum(total_amount)::number(18, 2) as invoiced_amount,
        count(*) as invoice_count
    from {{ ref('fct_invoices') }}
    where is_billed
    group by issued_date, currency
),

paid as (
    select
        paid_date as revenue_date,
        currency,
        sum(settled_amount)::number(18, 2) as paid_amount,
        count_if(status = 'settled') as payment_count,
        sum(iff(is_refunded, amount, 0))::number(18, 2) as refunded_amount
    from {{ ref('fct_payments') }}
    group by paid_date, currency
)

select
    coalesce(invoiced.revenue_date, paid.revenue_date) as revenue_date,
    coalesce(invoiced.currency, paid.currency) as currency,
    coalesce(invoiced.invoiced_amount, 0)::number(18, 2) as invoiced_amount,
    coalesce(invoiced.invoice_count, 0) as invoice_count,
    coalesce(paid.paid_amount, 0)::number(18, 2) as paid_amount,
    coalesce(paid.payment_count, 0) as payment_count,
    coalesce(paid.refunded_amount, 0)::number(18, 2) as refunded_amount
from invoiced
full outer join paid
    on
        invoiced.revenue_date = paid.revenue_date
        and invoiced.currency = paid.currency
