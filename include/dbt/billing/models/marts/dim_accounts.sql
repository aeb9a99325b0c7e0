-- Accounts as SCD type 2, built from the CDC history: one row per version of an account,
-- valid over [valid_from, valid_to). Join facts on the version in force at the event time.
{{ scd2_from_history(
    relation=ref('stg_accounts_history'),
    key_columns=['account_id'],
    tracked_columns=['account_name', 'email_hash', 'country_code', 'segment', 'credit_limit', 'is_active', 'created_at'],
    version_key='account_version_key',
) }}
