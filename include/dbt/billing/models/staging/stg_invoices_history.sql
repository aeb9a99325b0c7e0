-- Every change of invoices, typed and renamed like stg_invoices, with its CDC position and operation.
-- Deletes are kept (is_delete): they close SCD2 versions and drop rows from as-of states.
with source as (
    select * from {{ source('billing_history', 'invoices') }}
    where not coalesce(_cdc_lost_timeline, false)
)

select
    invoice_id::number(19, 0) as invoice_id,
    account_id::number(10, 0) as account_id,
    invoice_number::varchar(30) as invoice_number,
    lower(status)::varchar(20) as status,
    issued_at::timestamp_ntz(3) as issued_at,
    due_date::date as due_date,
    upper(currency)::varchar(3) as currency,
    total_amount::number(18, 2) as total_amount,
    updated_at::timestamp_ntz(3) as updated_at,
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
