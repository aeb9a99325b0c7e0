-- Every capture instance with its source table and validity start (raised by the cleanup job).
SELECT
    ct.capture_instance,
    ct.start_lsn,
    OBJECT_SCHEMA_NAME(ct.source_object_id) AS source_schema,
    OBJECT_NAME(ct.source_object_id) AS source_table
FROM cdc.change_tables AS ct
