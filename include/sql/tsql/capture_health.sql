-- The capture job's progress: highest captured LSN, its commit time, and the server's clock.
SELECT
    sys.fn_cdc_get_max_lsn() AS max_lsn,
    sys.fn_cdc_map_lsn_to_time(sys.fn_cdc_get_max_lsn()) AS max_lsn_time,
    GETDATE() AS server_now
