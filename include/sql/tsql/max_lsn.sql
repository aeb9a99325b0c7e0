-- Highest LSN the capture job has written (NULL before any capture, or when capture never ran).
SELECT sys.fn_cdc_get_max_lsn() AS max_lsn
