"""SQL Server CDC → Snowflake replication: config, reader, loader, MERGE builder, DAG factory."""
