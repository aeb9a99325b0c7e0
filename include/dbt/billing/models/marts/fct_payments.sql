-- One row per current (not deleted) payment, in its invoice's currency, with the account version
-- in force when it was recorded in the source and how early or late it came relative to the due date.
with payments as (
    select * from {{ ref('stg_payments') }}
),

recorded as (
    select
        payment_id,
        min(valid_from) as recorded_at
    from {{ ref('int_payment_versions') }}
    group by payment_id
),

invoices as (
    select * from {{ ref('stg_invoices') }}
),

accounts as (
    select * from {{ ref('dim_accounts') }}
)

select
    payments.payment_id,
    payments.invoice_id,
    invoices.invoice_number,
    payments.account_id,
    accounts.account_version_key,
    payments.amount,
    invoices.currency,
    payments.payment_method,
    payments.status,
    payments.status = 'refunded' as is_refunded,
    iff(payments.status = 'settled', payments.amount, 0)::number(18, 2) as settled_amount,
    payments.paid_at,
    payments.paid_at::date as paid_date,
    invoices.due_date,
    datediff(day, invoices.due_date, payments.paid_at::date) as days_after_due,
    payments.external_ref
from payments
left join recorded on payments.payment_id = recorded.payment_id
left join invoices on payments.invoice_id = invoices.invoice_id
left join accounts
    on
        payments.account_id = accounts.account_id
        and {{ as_recorded_join('recorded.recorded_at', 'accounts') }}
