SELECT sys.fn_cdc_map_lsn_to_time(%s) AS commit_time
