-- Every version of every invoice (SCD2 over the invoice history): the state of an invoice at any
-- past instant, for point-in-time models (receivables, account features).
{{ scd2_from_history(
    relation=ref('stg_invoices_history'),
    key_columns=['invoice_id'],
    tracked_columns=['account_id', 'invoice_number', 'status', 'issued_at', 'due_date', 'currency', 'total_amount'],
    carry_columns=['updated_at'],
    version_key='invoice_version_key',
) }}
