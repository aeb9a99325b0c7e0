-- Approximate row count of a table (heap or clustered index) from the catalog, without a scan:
-- sys.partitions.rows needs no VIEW DATABASE STATE (sys.dm_db_partition_stats does).
SELECT SUM(p.rows) AS row_estimate
FROM sys.partitions AS p
WHERE p.object_id = OBJECT_ID(%s) AND p.index_id IN (0, 1)
