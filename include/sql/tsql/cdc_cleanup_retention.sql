-- Retention (minutes) of this database's CDC cleanup job (SQL Server Agent, msdb). Needs read
-- access to msdb; the health checks fall back to the configured retention_minutes without it.
SELECT j.retention
FROM msdb.dbo.cdc_jobs AS j
WHERE j.database_id = DB_ID() AND j.job_type = N'cleanup'
