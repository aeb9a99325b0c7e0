-- The two CDC paths agree: the open SCD2 version of every account and product (built from the
-- history tables) equals the current-state row (from the raw tables), and deleted rows have no
-- open version. Returns the keys where they differ.
with accounts_current as (
    select
        account_id,
        account_name,
        email_hash,
        country_code,
        segment,
        credit_limit,
        is_active
    from {{ ref('dim_accounts') }}
    where is_current
),

accounts_raw as (
    select
        account_id,
        account_name,
        email_hash,
        country_code,
        segment,
        credit_limit,
        is_active
    from {{ ref('stg_accounts') }}
),

products_current as (
    select
        product_id,
        sku,
        product_name,
        list_price,
        list_currency,
        is_active
    from {{ ref('dim_products') }}
    where is_current
),

products_raw as (
    select
        product_id,
        sku,
        product_name,
        list_price,
        list_currency,
        is_active
    from {{ ref('stg_products') }}
),

differences as (
    select
        'account' as entity_kind,
        account_id as entity_id
    from (
        (
            select * from accounts_current
            minus
            select * from accounts_raw
        )
        union all
        (
            select * from accounts_raw
            minus
            select * from accounts_current
        )
    ) as account_differences
    union all
    select
        'product' as entity_kind,
        product_id as entity_id
    from (
        (
            select * from products_current
            minus
            select * from products_raw
        )
        union all
        (
            select * from products_raw
            minus
            select * from products_current
        )
    ) as product_differences
)

select * from differences
