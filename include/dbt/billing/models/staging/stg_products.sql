-- Current products: typed and renamed; rows deleted in the source are filtered out here.
with source as (
    select * from {{ source('billing', 'products') }}
)

select
    product_id::number(10, 0) as product_id,
    sku::varchar(40) as sku,
    product_name::varchar as product_name,
    unit_price::number(18, 4) as list_price,
    upper(currency)::varchar(3) as list_currency,
    is_active::boolean as is_active,
    updated_at::timestamp_ntz(3) as updated_at,
    _cdc_committed_at as cdc_committed_at,
    _cdc_loaded_at as cdc_loaded_at
from source
where not coalesce(_cdc_deleted, false)
