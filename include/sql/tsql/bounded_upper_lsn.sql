-- Upper end of a window capped at N transactions after the watermark (Debezium's
-- max.iteration.transactions); tran_id 0x00 rows are idle-period markers, not transactions.
SELECT MAX(w.start_lsn) AS upper_lsn
FROM (
    SELECT TOP (%s) m.start_lsn
    FROM cdc.lsn_time_mapping AS m
    WHERE m.start_lsn > %s AND m.tran_id <> 0x00
    ORDER BY m.start_lsn
) AS w
