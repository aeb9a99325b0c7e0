-- Last write to any table of this database since the instance started (needs VIEW SERVER STATE):
-- tells a quiet source from a stalled capture job.
SELECT MAX(s.last_user_update) AS last_write
FROM sys.dm_db_index_usage_stats AS s
WHERE s.database_id = DB_ID()
