-- Nullable columns of a source table (key columns must not be: a NULL key never matches in MERGE).
SELECT c.name
FROM sys.columns AS c
WHERE c.object_id = OBJECT_ID(%s) AND c.is_nullable = 1
