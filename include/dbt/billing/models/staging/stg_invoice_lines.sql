-- Current invoice lines: typed and renamed; deleted lines are filtered out.
with source as (
    select * from {{ source('billing', 'invoice_lines') }}
)

select
    invoice_id::number(19, 0) as invoice_id,
    line_no::number(10, 0) as line_no,
    product_id::number(10, 0) as product_id,
    quantity::number(10, 0) as quantity,
    unit_price::number(18, 4) as unit_price,
    line_amount::number(18, 2) as line_amount,
    _cdc_committed_at as cdc_committed_at,
    _cdc_loaded_at as cdc_loaded_at
from source
where not coalesce(_cdc_deleted, false)
