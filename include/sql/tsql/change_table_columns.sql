-- Shape of a change table (frozen when its capture instance was created, except that ALTER COLUMN
-- changes a captured column's type in place): exact types, precision, scale, and whether the
-- captured column is computed in the source table (always NULL in the change table).
SELECT
    c.name,
    t.name AS type_name,
    c.max_length,
    c.[precision],
    c.scale,
    c.is_nullable,
    cc.is_computed
FROM sys.columns AS c
INNER JOIN sys.types AS t ON c.user_type_id = t.user_type_id
LEFT JOIN cdc.captured_columns AS cc ON c.object_id = cc.object_id AND c.name = cc.column_name
WHERE c.object_id = OBJECT_ID(%s)
ORDER BY c.column_id
