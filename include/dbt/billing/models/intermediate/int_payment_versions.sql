-- Every version of every payment (SCD2 over the payment history), for point-in-time models.
{{ scd2_from_history(
    relation=ref('stg_payments_history'),
    key_columns=['payment_id'],
    tracked_columns=['invoice_id', 'account_id', 'amount', 'payment_method', 'status', 'paid_at', 'external_ref'],
    version_key='payment_version_key',
) }}
