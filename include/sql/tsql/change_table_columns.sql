-- Shape of a change table (frozen when its capture instance was created): exact types, precision, scale.
SELECT
    c.name,
    t.name AS type_name,
    c.max_length,
    c.[precision],
    c.scale,
    c.is_nullable
FROM sys.columns AS c
INNER JOIN sys.types AS t ON c.user_type_id = t.user_type_id
WHERE c.object_id = OBJECT_ID(%s)
ORDER BY c.column_id
