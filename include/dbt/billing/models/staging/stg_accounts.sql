-- Current accounts: typed and renamed; rows deleted in the source are filtered out here.
with source as (
    select * from {{ source('billing', 'accounts') }}
)

select
    account_id::number(10, 0) as account_id,
    account_name::varchar as account_name,
    email::varchar(64) as email_hash,
    upper(trim(country))::varchar(2) as country_code,
    lower(segment)::varchar(20) as segment,
    credit_limit::number(19, 4) as credit_limit,
    is_active::boolean as is_active,
    created_at::timestamp_ntz(3) as created_at,
    updated_at::timestamp_ntz(3) as updated_at,
    _cdc_committed_at as cdc_committed_at,
    _cdc_loaded_at as cdc_loaded_at
from source
where not coalesce(_cdc_deleted, false)
