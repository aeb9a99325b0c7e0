-- Current invoices: typed and renamed; rows deleted in the source (abandoned drafts) are filtered out.
with source as (
    select * from {{ source('billing', 'invoices') }}
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
    _cdc_committed_at as cdc_committed_at,
    _cdc_loaded_at as cdc_loaded_at
from source
where not coalesce(_cdc_deleted, false)
