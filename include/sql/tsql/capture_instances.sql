-- Every capture instance with its source table, validity start (raised by the cleanup job) and
-- creation time: cleanup can give two instances of a table the same start_lsn, so creation order
-- (then object id) tells which one is newer.
SELECT
    ct.capture_instance,
    ct.start_lsn,
    ct.create_date,
    ct.object_id,
    OBJECT_SCHEMA_NAME(ct.source_object_id) AS source_schema,
    OBJECT_NAME(ct.source_object_id) AS source_table
FROM cdc.change_tables AS ct
