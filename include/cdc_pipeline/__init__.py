"""SQL Server CDC → Snowflake replication, one module per stage of the flow.

Read in the order the data moves: ``config`` (what to replicate) → ``source`` (every T-SQL
statement; ``lsn`` positions) → ``planner`` (which window) → ``extract`` (rows → Parquet → staging;
``types`` maps the columns, ``stages`` holds the files) → ``apply`` (staging → raw and history,
built by ``snowflake_sql`` and run by ``warehouse``) → ``offsets`` (watermark, hint, batch log).
``pipeline`` composes one table's cycle; ``orchestration`` wires it into Airflow; ``alerts``,
``health``, ``preflight`` and ``status`` watch it. The flow modules (``source`` … ``offsets``,
``pipeline``) are free of Airflow; it is used by ``orchestration``, ``alerts``, ``status.app``, the
hook in ``snowflake`` and the pool check of ``preflight``.
"""
