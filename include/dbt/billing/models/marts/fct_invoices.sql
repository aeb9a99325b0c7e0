-- One row per current (not deleted) invoice with its lines and payments rolled up, and the
-- account version in force when the invoice was issued (point-in-time join to dim_accounts on the
-- commit time of the issue in the source; drafts: of their creation).
with invoices as (
    select * from {{ ref('stg_invoices') }}
),

recorded as (
    select
        invoice_id,
        min(valid_from) as created_recorded_at,
        min(iff(issued_at is not null, valid_from, null)) as issued_recorded_at
    from {{ ref('int_invoice_versions') }}
    group by invoice_id
),

lines as (
    select
        invoice_id,
        count(*) as line_count,
        sum(line_amount)::number(18, 2) as lines_amount
    from {{ ref('stg_invoice_lines') }}
    group by invoice_id
),

payments as (
    select
        invoice_id,
        count_if(status = 'settled') as settled_payment_count,
        sum(iff(status = 'settled', amount, 0))::number(18, 2) as paid_amount,
        sum(iff(status = 'refunded', amount, 0))::number(18, 2) as refunded_amount,
        max(iff(status = 'settled', paid_at, null)) as last_paid_at
    from {{ ref('stg_payments') }}
    group by invoice_id
),

accounts as (
    select * from {{ ref('dim_accounts') }}
),

joined as (
    select
        invoices.invoice_id,
        invoices.invoice_number,
        invoices.account_id,
        accounts.account_version_key,
        invoices.status,
        invoices.status in ('issued', 'paid', 'refunded') as is_billed,
        invoices.currency,
        invoices.issued_at,
        invoices.issued_at::date as issued_date,
        recorded.issued_recorded_at,
        invoices.due_date,
        invoices.total_amount,
        coalesce(lines.line_count, 0) as line_count,
        coalesce(lines.lines_amount, 0)::number(18, 2) as lines_amount,
        coalesce(payments.settled_payment_count, 0) as settled_payment_count,
        coalesce(payments.paid_amount, 0)::number(18, 2) as paid_amount,
        coalesce(payments.refunded_amount, 0)::number(18, 2) as refunded_amount,
        payments.last_paid_at,
        invoices.updated_at
    from invoices
    left join recorded on invoices.invoice_id = recorded.invoice_id
    left join lines on invoices.invoice_id = lines.invoice_id
    left join payments on invoices.invoice_id = payments.invoice_id
    left join accounts
        on
            invoices.account_id = accounts.account_id
            and {{ as_recorded_join('coalesce(recorded.issued_recorded_at, recorded.created_recorded_at)', 'accounts') }}
)

select
    *,
    iff(status = 'issued', greatest(total_amount - paid_amount, 0), 0)::number(18, 2) as outstanding_amount,
    status = 'issued' and total_amount > paid_amount and due_date < {{ today_utc() }} as is_overdue,
    iff(
        status = 'issued' and total_amount > paid_amount and due_date < {{ today_utc() }},
        datediff(day, due_date, {{ today_utc() }}),
        0
    ) as days_past_due
from joined
