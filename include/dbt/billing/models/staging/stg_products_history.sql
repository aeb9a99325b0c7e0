-- Every change of products, typed and renamed like stg_products, with its CDC position and operation.
-- Deletes are kept (is_delete): they close SCD2 versions and drop rows from as-of states.
with source as (
    select * from {{ source('billing_history', 'products') }}
    where not coalesce(_cdc_lost_timeline, false)
)

select
    product_id::number(10, 0) as product_id,
    sku::varchar(40) as sku,
    product_name::varchar as product_name,
    unit_price::number(18, 4) as list_price,
    upper(currency)::varchar(3) as list_currency,
    is_active::boolean as is_active,
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
