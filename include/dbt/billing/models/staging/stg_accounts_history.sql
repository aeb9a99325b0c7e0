-- Every change of accounts, typed and renamed like stg_accounts, with its CDC position and operation.
-- Deletes are kept (is_delete): they close SCD2 versions and drop rows from as-of states.
with source as (
    select * from {{ source('billing_history', 'accounts') }}
    where not coalesce(_cdc_lost_timeline, false)
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
