-- Business rule: a non-draft invoice's total equals the sum of its current lines (drafts may be
-- mid-edit). Returns the invoices that break it.
select
    invoice_id,
    status,
    total_amount,
    lines_amount
from {{ ref('fct_invoices') }}
where
    status != 'draft'
    and total_amount != lines_amount
