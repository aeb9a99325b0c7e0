-- Business rule: settled payments never exceed the invoice total (no over-payment), and the
-- invoices marked paid are fully settled. Returns the invoices that break either.
select
    invoice_id,
    status,
    total_amount,
    paid_amount
from {{ ref('fct_invoices') }}
where
    paid_amount > total_amount
    or (status = 'paid' and paid_amount != total_amount)
