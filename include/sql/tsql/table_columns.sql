-- The source table's current column names (a re-snapshot reads only columns that still exist).
SELECT c.name
FROM sys.columns AS c
WHERE c.object_id = OBJECT_ID(%s)
ORDER BY c.column_id
