-- Every change of payments, typed and renamed like stg_payments, with its CDC position and operation.
-- Deletes are kept (is_delete): they close SCD2 versions and drop rows from as-of states.
with source as (
    select * from {{ source('billing_history', 'payments') }}
    where not coalesce(_cdc_lost_timeline, false)
)

select
    payment_id::number(19, 0) as payment_id,
    invoice_id::number(19, 0) as invoice_id,
    account_id::number(10, 0) as account_id,
    amount::number(18, 2) as amount,
    lower(method)::varchar(20) as payment_method,
    lower(status)::varchar(20) as status,
    paid_at::timestamp_ntz(3) as paid_at,
    upper(external_ref)::varchar(36) as external_ref,
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
