-- Privacy rule: the billing e-mail reaches Snowflake only as a salted SHA-256 (64 hex chars),
-- never in clear, in the current state or in any historical version.
select
    account_id,
    'stg_accounts_history' as found_in
from {{ ref('stg_accounts_history') }}
where email_hash is not null and not regexp_like(email_hash, '^[0-9a-f]{64}$')
