-- DDL on a tracked table after a position: the change table's shape does not follow it.
SELECT
    dh.ddl_command,
    dh.ddl_lsn,
    dh.ddl_time
FROM cdc.ddl_history AS dh
INNER JOIN cdc.change_tables AS ct ON dh.object_id = ct.object_id
WHERE ct.capture_instance = %s AND dh.ddl_lsn > %s
ORDER BY dh.ddl_lsn
