-- The history path and the current-state path agree: receivables as of today (rebuilt from the
-- CDC history) are exactly the open items of fct_invoices (built from the current raw tables).
-- Only meaningful when fct_receivables_ageing was built for today (var as_of_date unset).
{{ config(enabled=var('as_of_date', none) is none) }}

with history_path as (
    select
        invoice_id,
        outstanding_amount
    from {{ ref('fct_receivables_ageing') }}
),

current_path as (
    select
        invoice_id,
        outstanding_amount
    from {{ ref('fct_invoices') }}
    where outstanding_amount > 0
)

select
    differences.invoice_id,
    differences.outstanding_amount
from (
    (
        select * from history_path
        minus
        select * from current_path
    )
    union all
    (
        select * from current_path
        minus
        select * from history_path
    )
) as differences
