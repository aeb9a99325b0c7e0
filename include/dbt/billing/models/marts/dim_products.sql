-- Products as SCD type 2, built from the CDC history: one row per version (list price, name,
-- active flag) valid over [valid_from, valid_to).
{{ scd2_from_history(
    relation=ref('stg_products_history'),
    key_columns=['product_id'],
    tracked_columns=['sku', 'product_name', 'list_price', 'list_currency', 'is_active'],
    version_key='product_version_key',
) }}
