-- Current payments: typed and renamed; deleted payments are filtered out.
with source as (
    select * from {{ source('billing', 'payments') }}
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
    _cdc_committed_at as cdc_committed_at,
    _cdc_loaded_at as cdc_loaded_at
from source
where not coalesce(_cdc_deleted, false)
