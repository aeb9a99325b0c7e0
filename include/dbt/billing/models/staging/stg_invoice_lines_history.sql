-- Every change of invoice_lines, typed and renamed like stg_invoice_lines, with its CDC position and operation.
-- Deletes are kept (is_delete): they close SCD2 versions and drop rows from as-of states.
with source as (
    select * from {{ source('billing_history', 'invoice_lines') }}
    where not coalesce(_cdc_lost_timeline, false)
)

select
    invoice_id::number(19, 0) as invoice_id,
    line_no::number(10, 0) as line_no,
    product_id::number(10, 0) as product_id,
    quantity::number(10, 0) as quantity,
    unit_price::number(18, 4) as unit_price,
    line_amount::number(18, 2) as line_amount,
    _cdc_lsn as cdc_lsn,
    _cdc_seqval as cdc_seqval,
    _cdc_command_id as cdc_command_id,
    _cdc_operation as cdc_operation,
    {{ cdc_operation_name('_cdc_operation') }} as change_type,
    _cdc_operation = 1 as is_delete,
    _cdc_committed_at as cdc_committed_at,
    _cdc_loaded_at as cdc_loaded_at,
    _cdc_batch_id as cdc_batch_id
from source
