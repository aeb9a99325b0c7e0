"""One test per rule of shared/docs/sqlserver-cdc-semantics.md, named after the rule."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pymssql
import pytest

from dev.mssql_emulator import Engine
from dev.mssql_emulator.lsn import lsn_to_int
from tests.emulator.conftest import T0, Sql, ct_rows

ZERO = bytes(10)


def err_number(exc: pytest.ExceptionInfo[BaseException]) -> int:
    return exc.value.args[0]


# == Log sequence numbers ==========================================================================
def test_lsn_is_binary10_compared_as_unsigned_bytes_left_to_right(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    tracked.scan()
    lsn = tracked.one("SELECT sys.fn_cdc_get_max_lsn()")
    assert isinstance(lsn, bytes) and len(lsn) == 10
    # bytewise, unsigned: 0x80… sorts after 0x7F… (a signed comparison would invert this)
    assert tracked.one("SELECT CASE WHEN 0x80000000000000000000 > 0x7F000000000000000000 THEN 1 ELSE 0 END") == 1
    assert tracked.one("SELECT CASE WHEN 0x00000000000000000100 > 0x000000000000000000FF THEN 1 ELSE 0 END") == 1
    # parameters bound as bytes compare the same way
    assert tracked.one("SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE start_lsn <= %s", (lsn,)) >= 1
    assert tracked.one("SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE start_lsn > %s", (b"\xff" * 10,)) == 0


def test_all_changes_of_a_transaction_share_the_commit_lsn(tracked: Sql) -> None:
    tracked(
        "BEGIN TRAN; INSERT INTO dbo.t (id, name) VALUES (1, N'a'), (2, N'b'); "
        "UPDATE dbo.t SET name = N'c' WHERE id = 1; DELETE FROM dbo.t WHERE id = 2; COMMIT"
    )
    tracked.scan()
    rows = ct_rows(tracked)
    assert len(rows) == 5
    assert len({r[0] for r in rows}) == 1
    assert tracked.one("SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE start_lsn = %s", (rows[0][0],)) == 1


def test_seqval_orders_the_changes_inside_a_transaction(tracked: Sql) -> None:
    tracked(
        "BEGIN TRAN; INSERT INTO dbo.t (id, name) VALUES (1, N'a'); UPDATE dbo.t SET name = N'b' WHERE id = 1; "
        "DELETE FROM dbo.t WHERE id = 1; COMMIT"
    )
    tracked.scan()
    rows = ct_rows(tracked)
    assert [r[2] for r in rows] == [2, 3, 4, 1]
    seqvals = [r[1] for r in rows]
    assert seqvals[0] < seqvals[1] == seqvals[2] < seqvals[3]


def test_seqval_is_not_monotonic_across_transactions(engine: Engine) -> None:
    setup = Sql(engine.connect(autocommit=True))
    setup("CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, amount decimal(18,2) NULL)")
    setup("EXEC sys.sp_cdc_enable_db")
    setup("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL")
    a, b = Sql(engine.connect()), Sql(engine.connect())
    a("INSERT INTO dbo.t (id) VALUES (1)")  # A writes first (lower seqval) …
    b("INSERT INTO dbo.t (id) VALUES (2)")
    b.conn.commit()  # … but B commits first (lower commit LSN)
    a.conn.commit()
    engine.capture_all()
    rows = ct_rows(setup)
    assert [r[4] for r in rows] == [2, 1]  # start_lsn order: B then A
    assert rows[0][1] > rows[1][1]  # yet B's seqval is higher: order by (start_lsn, seqval, op), never seqval


def test_increment_and_decrement_lsn_are_plus_minus_one_on_80_bits(sql: Sql) -> None:
    x = bytes.fromhex("0000002A000001F400FF")
    assert sql.one("SELECT sys.fn_cdc_increment_lsn(%s)", (x,)) == bytes.fromhex("0000002A000001F40100")
    assert sql.one("SELECT sys.fn_cdc_decrement_lsn(%s)", (x,)) == bytes.fromhex("0000002A000001F400FE")
    top = bytes.fromhex("0000FFFFFFFFFFFFFFFF")
    assert sql.one("SELECT sys.fn_cdc_increment_lsn(%s)", (top,)) == bytes.fromhex("00010000000000000000")


# == Change tables ===================================================================================
def test_default_capture_instance_name_is_schema_underscore_table(tracked: Sql) -> None:
    assert tracked("SELECT capture_instance FROM cdc.change_tables") == [("dbo_t",)]
    assert tracked.one("SELECT OBJECT_ID(N'cdc.dbo_t_CT')") is not None


def test_capture_instance_name_at_most_100_characters(tracked: Sql) -> None:
    with pytest.raises(pymssql.OperationalError):
        tracked(
            "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, "
            "@capture_instance = %s",
            ("x" * 101,),
        )


def test_a_source_table_has_at_most_two_capture_instances(tracked: Sql) -> None:
    tracked(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, "
        "@capture_instance = N'dbo_t_v2'"
    )
    with pytest.raises(pymssql.OperationalError) as exc:
        tracked(
            "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, "
            "@capture_instance = N'dbo_t_v3'"
        )
    assert err_number(exc) == 22962


def test_change_table_columns_in_order(tracked: Sql) -> None:
    tracked.cur.execute("SELECT * FROM cdc.dbo_t_CT")
    names = [d[0] for d in tracked.cur.description]
    assert names == [
        "__$start_lsn",
        "__$end_lsn",
        "__$seqval",
        "__$operation",
        "__$update_mask",
        "id",
        "name",
        "amount",
        "__$command_id",
    ]
    types = tracked(
        "SELECT c.name, t.name, c.max_length FROM sys.columns c JOIN sys.types t ON c.user_type_id = t.user_type_id "
        "WHERE c.object_id = OBJECT_ID(N'cdc.dbo_t_CT') ORDER BY c.column_id"
    )
    assert types[:5] == [
        ("__$start_lsn", "binary", 10),
        ("__$end_lsn", "binary", 10),
        ("__$seqval", "binary", 10),
        ("__$operation", "int", 4),
        ("__$update_mask", "varbinary", 128),
    ]
    assert types[-1] == ("__$command_id", "int", 4)


def test_end_lsn_is_always_null(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1); UPDATE dbo.t SET name = N'x'; DELETE FROM dbo.t")
    tracked.scan()
    assert tracked("SELECT DISTINCT [__$end_lsn] FROM cdc.dbo_t_CT") == [(None,)]


def test_operation_codes_one_row_per_insert_delete_two_per_update(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name) VALUES (1, N'a')")
    tracked("UPDATE dbo.t SET name = N'b' WHERE id = 1")
    tracked("DELETE FROM dbo.t WHERE id = 1")
    tracked.scan()
    rows = ct_rows(tracked)
    assert [(r[2], r[4], r[5]) for r in rows] == [(2, 1, "a"), (3, 1, "a"), (4, 1, "b"), (1, 1, "b")]
    before, after = rows[1], rows[2]
    assert before[0] == after[0] and before[1] == after[1]  # ops 3 and 4 share start_lsn and seqval


def test_primary_key_update_is_a_delete_followed_by_an_insert(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name) VALUES (1, N'a'), (2, N'b')")
    tracked("UPDATE dbo.t SET id = id + 1")  # shifts both keys: 1->2, 2->3
    tracked.scan()
    rows = ct_rows(tracked)[2:]
    assert [(r[2], r[4]) for r in rows] == [(1, 1), (1, 2), (2, 2), (2, 3)]  # all deletes before all inserts
    assert len({r[0] for r in rows}) == 1
    assert tracked("SELECT id, name FROM dbo.t ORDER BY id") == [(2, "a"), (3, "b")]


def test_update_mask_all_bits_for_insert_and_delete_changed_bits_for_update(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name, amount) VALUES (1, N'a', 1)")
    tracked("UPDATE dbo.t SET amount = 2 WHERE id = 1")  # column_ordinal 3 -> bit 2
    tracked("UPDATE dbo.t SET name = N'b', amount = amount WHERE id = 1")  # only name changed -> bit 1
    tracked("DELETE FROM dbo.t")
    tracked.scan()
    masks = [(r[2], r[3]) for r in ct_rows(tracked)]
    assert masks == [(2, b"\x07"), (3, b"\x04"), (4, b"\x04"), (3, b"\x02"), (4, b"\x02"), (1, b"\x07")]
    assert tracked.one("SELECT sys.fn_cdc_has_column_changed(N'dbo_t', N'amount', 0x04)") is True
    assert tracked.one("SELECT sys.fn_cdc_get_column_ordinal(N'dbo_t', N'amount')") == 3


def test_change_table_shape_frozen_added_column_not_captured(tracked: Sql) -> None:
    tracked("ALTER TABLE dbo.t ADD note nvarchar(20) NULL")
    tracked("INSERT INTO dbo.t (id, name, note) VALUES (1, N'a', N'new')")
    tracked.scan()
    tracked.cur.execute("SELECT * FROM cdc.dbo_t_CT")
    assert "note" not in [d[0] for d in tracked.cur.description]
    assert tracked("SELECT column_name FROM cdc.captured_columns ORDER BY column_ordinal") == [
        ("id",),
        ("name",),
        ("amount",),
    ]


def test_dropped_captured_column_comes_through_as_null(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name, amount) VALUES (1, N'a', 5)")
    tracked("ALTER TABLE dbo.t DROP COLUMN amount")
    tracked("UPDATE dbo.t SET name = N'b' WHERE id = 1")
    tracked.scan()
    assert [(r[2], r[6]) for r in ct_rows(tracked)] == [(2, Decimal("5.00")), (3, None), (4, None)]


def test_every_ddl_on_a_tracked_table_is_recorded_in_ddl_history(tracked: Sql) -> None:
    tracked("ALTER TABLE dbo.t ADD note nvarchar(20) NULL")
    tracked("ALTER TABLE dbo.t DROP COLUMN note")
    tracked.scan()
    rows = tracked(
        "SELECT source_object_id, object_id, required_column_update, ddl_command, ddl_lsn, ddl_time "
        "FROM cdc.ddl_history ORDER BY ddl_lsn"
    )
    assert [r[3] for r in rows] == [
        "ALTER TABLE dbo.t ADD note nvarchar(20) NULL",
        "ALTER TABLE dbo.t DROP COLUMN note",
    ]
    assert rows[0][0] == tracked.one("SELECT OBJECT_ID(N'dbo.t')")
    assert rows[0][1] == tracked.one("SELECT object_id FROM cdc.change_tables")
    assert all(isinstance(r[4], bytes) and len(r[4]) == 10 and r[5] == T0 for r in rows)


def test_picking_up_a_new_column_needs_a_second_capture_instance(tracked: Sql) -> None:
    tracked("ALTER TABLE dbo.t ADD note nvarchar(20) NULL")
    tracked(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, "
        "@capture_instance = N'dbo_t_v2'"
    )
    tracked("INSERT INTO dbo.t (id, note) VALUES (1, N'hello')")
    tracked.scan()
    assert tracked("SELECT id, note FROM cdc.dbo_t_v2_CT") == [(1, "hello")]
    assert tracked("SELECT id FROM cdc.dbo_t_CT") == [(1,)]  # the old instance keeps running meanwhile


def test_lob_columns_null_in_before_images(sql: Sql) -> None:
    sql(
        "CREATE TABLE dbo.docs (id int NOT NULL PRIMARY KEY, body nvarchar(max) NULL, legacy ntext NULL, "
        "title nvarchar(20) NULL)"
    )
    sql("EXEC sys.sp_cdc_enable_db")
    sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'docs', @role_name = NULL")
    sql("INSERT INTO dbo.docs VALUES (1, N'body1', N'old', N't1')")
    sql("UPDATE dbo.docs SET title = N't2' WHERE id = 1")  # body unchanged -> NULL in op 3
    sql("UPDATE dbo.docs SET body = N'body2' WHERE id = 1")  # body changed -> before image kept
    sql("DELETE FROM dbo.docs")
    sql.scan()
    rows = ct_rows(sql, "dbo_docs", "body, legacy, title")
    assert [(r[2], r[4], r[5], r[6]) for r in rows] == [
        (2, "body1", "old", "t1"),
        (3, None, None, "t1"),
        (4, "body1", "old", "t2"),
        (3, "body1", None, "t2"),
        (4, "body2", "old", "t2"),
        (1, "body2", None, "t2"),  # text/ntext/image: NULL in ops 1 and 3
    ]


# == Metadata tables ================================================================================
def test_change_tables_metadata(tracked: Sql) -> None:
    tracked.cur.execute("SELECT * FROM cdc.change_tables")
    names = [d[0] for d in tracked.cur.description]
    assert names == [
        "object_id",
        "version",
        "source_object_id",
        "capture_instance",
        "start_lsn",
        "end_lsn",
        "supports_net_changes",
        "has_drop_pending",
        "role_name",
        "index_name",
        "filegroup_name",
        "create_date",
        "partition_switch",
    ]
    row = tracked.cur.fetchone()
    assert row[3] == "dbo_t" and row[6] is True and row[11] == T0 and len(row[4]) == 10


def test_captured_columns_and_index_columns(tracked: Sql) -> None:
    ct_id = tracked.one("SELECT object_id FROM cdc.change_tables")
    assert tracked(
        "SELECT object_id, column_name, column_id, column_type, column_ordinal, is_computed "
        "FROM cdc.captured_columns ORDER BY column_ordinal"
    ) == [
        (ct_id, "id", 1, "int", 1, False),
        (ct_id, "name", 2, "nvarchar", 2, False),
        (ct_id, "amount", 3, "decimal", 3, False),
    ]
    assert tracked("SELECT object_id, column_name, index_ordinal, column_id FROM cdc.index_columns") == [
        (ct_id, "id", 1, 1)
    ]


def test_lsn_time_mapping_one_row_per_committed_transaction_with_changes(engine: Engine, tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    engine.clock.advance(5)
    tracked("BEGIN TRAN; INSERT INTO dbo.t (id) VALUES (2); INSERT INTO dbo.t (id) VALUES (3); COMMIT")
    tracked.scan()
    rows = tracked(
        "SELECT start_lsn, tran_begin_time, tran_end_time, tran_id FROM cdc.lsn_time_mapping "
        "WHERE tran_id <> 0x00 ORDER BY start_lsn"
    )
    assert len(rows) == 2
    assert rows[0][2] == T0 and rows[1][2] == T0 + timedelta(seconds=5)
    assert rows[0][3] != rows[1][3] and all(len(r[3]) == 10 for r in rows)


def test_lsn_time_mapping_idle_rows_have_tran_id_zero(engine: Engine, tracked: Sql) -> None:
    tracked("CREATE TABLE dbo.untracked (id int NOT NULL PRIMARY KEY)")
    tracked("INSERT INTO dbo.untracked VALUES (1)")  # the log moves on, nothing to capture
    tracked.scan()
    idle = tracked("SELECT start_lsn, tran_id FROM cdc.lsn_time_mapping")
    assert idle and idle[-1][1] == ZERO
    assert tracked.one("SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE tran_id <> 0x00") == 0
    assert tracked.one("SELECT sys.fn_cdc_get_max_lsn()") == idle[-1][0]


# == Functions =====================================================================================
def test_max_lsn_is_null_before_any_capture(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    assert tracked.one("SELECT sys.fn_cdc_get_max_lsn()") is None


def test_max_lsn_is_the_highest_start_lsn_of_lsn_time_mapping(tracked: Sql) -> None:
    for i in range(3):
        tracked("INSERT INTO dbo.t (id) VALUES (%s)", (i,))
    tracked.scan()
    top = tracked.one("SELECT MAX(start_lsn) FROM cdc.lsn_time_mapping")
    assert tracked.one("SELECT sys.fn_cdc_get_max_lsn()") == top


def test_min_lsn_is_the_instance_start_lsn_and_zeros_for_unknown_instance(tracked: Sql) -> None:
    start = tracked.one("SELECT start_lsn FROM cdc.change_tables WHERE capture_instance = N'dbo_t'")
    assert tracked.one("SELECT sys.fn_cdc_get_min_lsn(N'dbo_t')") == start
    assert tracked.one("SELECT sys.fn_cdc_get_min_lsn(N'nope')") == ZERO
    assert tracked.one("SELECT sys.fn_cdc_get_min_lsn(N'')") == ZERO


def test_map_lsn_to_time_returns_tran_end_time(engine: Engine, tracked: Sql) -> None:
    engine.clock.set(datetime(2026, 3, 1, 12, 0, 0, 123000))
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    tracked.scan()
    lsn = tracked.one("SELECT MAX(start_lsn) FROM cdc.lsn_time_mapping")
    assert tracked.one("SELECT sys.fn_cdc_map_lsn_to_time(%s)", (lsn,)) == datetime(2026, 3, 1, 12, 0, 0, 123000)


def test_map_time_to_lsn_relational_operators(engine: Engine, tracked: Sql) -> None:
    lsns = []
    for i in range(3):
        engine.clock.set(T0 + timedelta(minutes=i))
        tracked("INSERT INTO dbo.t (id) VALUES (%s)", (i,))
        tracked.scan()
        lsns.append(tracked.one("SELECT sys.fn_cdc_get_max_lsn()"))
    at = T0 + timedelta(minutes=1)

    def q(op: str, when: datetime) -> bytes | None:
        return tracked.one("SELECT sys.fn_cdc_map_time_to_lsn(%s, %s)", (op, when))

    assert q("largest less than", at) == lsns[0]
    assert q("largest less than or equal", at) == lsns[1]
    assert q("smallest greater than", at) == lsns[2]
    assert q("smallest greater than or equal", at) == lsns[1]
    assert q("largest less than", T0) is None  # may return NULL


def test_get_all_changes_returns_from_to_inclusive_and_all_omits_update_old(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name) VALUES (1, N'a')")
    tracked("UPDATE dbo.t SET name = N'b'")
    tracked("INSERT INTO dbo.t (id, name) VALUES (2, N'c')")
    tracked.scan()
    lsns = [r[0] for r in tracked("SELECT start_lsn FROM cdc.lsn_time_mapping ORDER BY start_lsn")]
    tracked.cur.execute("SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t(%s, %s, N'all')", (lsns[1], lsns[2]))
    assert [d[0] for d in tracked.cur.description] == [
        "__$start_lsn",
        "__$seqval",
        "__$operation",
        "__$update_mask",
        "id",
        "name",
        "amount",
    ]
    rows = sorted(tracked.cur.fetchall(), key=lambda r: (r[0], r[1], r[2]))
    assert [(r[2], r[4]) for r in rows] == [(4, 1), (2, 2)]  # the first transaction is outside, op 3 omitted
    old = tracked(
        "SELECT [__$operation] FROM cdc.fn_cdc_get_all_changes_dbo_t(%s, %s, N'all update old') "
        "ORDER BY [__$start_lsn], [__$seqval], [__$operation]",
        (lsns[1], lsns[2]),
    )
    assert old == [(3,), (4,), (2,)]


def test_get_all_changes_outside_the_valid_range_raises_msg_313(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    tracked.scan()
    lo = tracked.one("SELECT sys.fn_cdc_get_min_lsn(N'dbo_t')")
    hi = tracked.one("SELECT sys.fn_cdc_get_max_lsn()")
    for bad in ((ZERO, hi), (lo, b"\xff" * 10), (hi, lo), (None, hi)):
        with pytest.raises(pymssql.OperationalError) as exc:
            tracked("SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t(%s, %s, N'all')", bad)
        assert err_number(exc) == 313
        assert exc.value.args[1].startswith(
            b"An insufficient number of arguments were supplied for the "
            b"procedure or function cdc.fn_cdc_get_all_changes_"
        )
    assert tracked("SELECT id FROM cdc.fn_cdc_get_all_changes_dbo_t(%s, %s, N'all')", (lo, hi)) == [(1,)]


def test_get_all_changes_before_any_capture_raises_msg_313(tracked: Sql) -> None:
    with pytest.raises(pymssql.OperationalError) as exc:
        tracked(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t(sys.fn_cdc_get_min_lsn(N'dbo_t'), "
            "sys.fn_cdc_get_max_lsn(), N'all')"
        )
    assert err_number(exc) == 313


def test_net_changes_one_row_per_key(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id, name) VALUES (1, N'keep'), (2, N'gone'), (3, N'old')")
    tracked.scan()
    start = tracked.one("SELECT sys.fn_cdc_increment_lsn(sys.fn_cdc_get_max_lsn())")
    tracked("INSERT INTO dbo.t (id, name) VALUES (10, N'transient')")
    tracked("DELETE FROM dbo.t WHERE id = 10")  # insert-then-delete inside the window: nothing
    tracked("UPDATE dbo.t SET name = N'new' WHERE id = 3")
    tracked("UPDATE dbo.t SET name = N'newer' WHERE id = 3")
    tracked("DELETE FROM dbo.t WHERE id = 2")
    tracked("INSERT INTO dbo.t (id, name) VALUES (4, N'ins')")
    tracked("UPDATE dbo.t SET name = N'ins2' WHERE id = 4")
    tracked.scan()
    q = (
        "SELECT id, name, [__$operation] FROM cdc.fn_cdc_get_net_changes_dbo_t(%s, sys.fn_cdc_get_max_lsn(), %s) "
        "ORDER BY id"
    )
    assert tracked(q, (start, "all")) == [(2, "gone", 1), (3, "newer", 4), (4, "ins2", 2)]
    assert tracked(q, (start, "all with merge")) == [(2, "gone", 1), (3, "newer", 5), (4, "ins2", 5)]
    masks = tracked(
        "SELECT id, [__$update_mask] FROM cdc.fn_cdc_get_net_changes_dbo_t(%s, sys.fn_cdc_get_max_lsn(), "
        "N'all with mask') ORDER BY id",
        (start,),
    )
    assert masks == [(2, None), (3, b"\x02"), (4, None)]


def test_net_changes_function_needs_supports_net_changes(sql: Sql) -> None:
    sql("CREATE TABLE dbo.h (id int NULL, v int NULL)")
    sql("EXEC sys.sp_cdc_enable_db")
    sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'h', @role_name = NULL")
    with pytest.raises(pymssql.ProgrammingError) as exc:
        sql("SELECT * FROM cdc.fn_cdc_get_net_changes_dbo_h(0x00, 0x00, N'all')")
    assert err_number(exc) == 208
    with pytest.raises(pymssql.OperationalError) as exc:
        sql(
            "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'h', @role_name = NULL, "
            "@capture_instance = N'h2', @supports_net_changes = 1"
        )
    assert err_number(exc) == 22939


def test_enabling_procedures_and_their_parameters(sql: Sql) -> None:
    sql("CREATE TABLE dbo.p (id int NOT NULL PRIMARY KEY, a int NULL, b int NULL, c int NULL)")
    with pytest.raises(pymssql.OperationalError) as exc:
        sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'p', @role_name = NULL")
    assert err_number(exc) == 22901  # database not enabled yet
    sql("EXEC sys.sp_cdc_enable_db")
    assert sql.one("SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()") is True
    sql(
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'p', @role_name = N'cdc_reader', "
        "@capture_instance = N'p_ab', @supports_net_changes = 0, @captured_column_list = N'id, [b], a'"
    )
    assert sql("SELECT capture_instance, role_name, supports_net_changes FROM cdc.change_tables") == [
        ("p_ab", "cdc_reader", False)
    ]
    assert sql("SELECT column_name, column_ordinal FROM cdc.captured_columns ORDER BY column_ordinal") == [
        ("id", 1),
        ("a", 2),
        ("b", 3),
    ]
    assert sql.one("SELECT is_tracked_by_cdc FROM sys.tables WHERE object_id = OBJECT_ID(N'dbo.p')") is True
    sql("EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'p', @capture_instance = N'p_ab'")
    assert sql("SELECT capture_instance FROM cdc.change_tables") == []
    with pytest.raises(pymssql.ProgrammingError):
        sql("SELECT * FROM cdc.p_ab_CT")


# == Capture and cleanup jobs ========================================================================
def test_capture_is_asynchronous_changes_visible_only_after_a_scan(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    assert tracked("SELECT id FROM cdc.dbo_t_CT") == []
    tracked("EXEC sys.sp_cdc_scan")
    assert tracked("SELECT id FROM cdc.dbo_t_CT") == [(1,)]


def test_a_scan_captures_at_most_maxtrans_transactions(tracked: Sql) -> None:
    for i in range(5):
        tracked("INSERT INTO dbo.t (id) VALUES (%s)", (i,))
    tracked("EXEC sys.sp_cdc_scan @maxtrans = 2, @maxscans = 1")
    assert tracked.one("SELECT COUNT(*) FROM cdc.dbo_t_CT") == 2
    tracked("EXEC sys.sp_cdc_scan @maxtrans = 2, @maxscans = 10")
    assert tracked.one("SELECT COUNT(*) FROM cdc.dbo_t_CT") == 5


def test_rolled_back_work_is_never_captured(tracked: Sql) -> None:
    tracked("BEGIN TRAN; INSERT INTO dbo.t (id) VALUES (1); ROLLBACK")
    tracked("INSERT INTO dbo.t (id) VALUES (2)")
    tracked.scan()
    assert tracked("SELECT id FROM cdc.dbo_t_CT") == [(2,)]
    assert tracked.one("SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE tran_id <> 0x00") == 1


def test_cleanup_job_keeps_retention_and_raises_start_lsn(engine: Engine, tracked: Sql) -> None:
    old_start = tracked.one("SELECT start_lsn FROM cdc.change_tables")
    tracked("INSERT INTO dbo.t (id) VALUES (1)")  # T0: older than the retention
    engine.clock.advance(4 * 24 * 3600)
    tracked("INSERT INTO dbo.t (id) VALUES (2)")  # T0 + 4 days
    tracked.scan()
    lsns = [r[0] for r in tracked("SELECT start_lsn FROM cdc.lsn_time_mapping WHERE tran_id <> 0x00 ORDER BY 1")]
    tracked("EXEC emu.run_cleanup_job @retention_minutes = 4320")  # default retention, 3 days
    new_start = tracked.one("SELECT start_lsn FROM cdc.change_tables")
    assert new_start == lsns[0] and new_start > old_start  # low water mark: last tran ended <= max - 3 days
    engine.clock.advance(60)
    tracked("INSERT INTO dbo.t (id) VALUES (3)")
    tracked.scan()
    tracked("EXEC emu.run_cleanup_job")
    assert tracked.one("SELECT sys.fn_cdc_get_min_lsn(N'dbo_t')") == lsns[0]
    engine.clock.advance(4 * 24 * 3600)
    tracked("INSERT INTO dbo.t (id) VALUES (4)")
    tracked.scan()
    tracked("EXEC emu.run_cleanup_job")
    assert tracked("SELECT id FROM cdc.dbo_t_CT ORDER BY id") == [(3,), (4,)]
    assert tracked.one("SELECT MIN(start_lsn) FROM cdc.lsn_time_mapping") == tracked.one(
        "SELECT start_lsn FROM cdc.change_tables"
    )


def test_cleanup_change_table_with_invalid_low_water_mark_raises_22957(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    tracked("INSERT INTO dbo.t (id) VALUES (2)")
    tracked.scan()
    lsns = [r[0] for r in tracked("SELECT start_lsn FROM cdc.lsn_time_mapping ORDER BY start_lsn")]
    for bad in (ZERO, b"\xff" * 10):
        with pytest.raises(pymssql.OperationalError) as exc:
            tracked(
                "EXEC sys.sp_cdc_cleanup_change_table @capture_instance = N'dbo_t', @low_water_mark = %s, "
                "@threshold = 5000",
                (bad,),
            )
        assert err_number(exc) == 22957
    tracked(
        "EXEC sys.sp_cdc_cleanup_change_table @capture_instance = N'dbo_t', @low_water_mark = %s, @threshold = 5000",
        (lsns[1],),
    )
    assert tracked("SELECT id FROM cdc.dbo_t_CT") == [(2,)]
    assert tracked.one("SELECT sys.fn_cdc_get_min_lsn(N'dbo_t')") == lsns[1]


def test_reader_position_older_than_min_lsn_has_lost_changes(tracked: Sql) -> None:
    tracked("INSERT INTO dbo.t (id) VALUES (1)")
    tracked.scan()
    saved = tracked.one("SELECT sys.fn_cdc_get_max_lsn()")
    tracked("INSERT INTO dbo.t (id) VALUES (2)")
    tracked("INSERT INTO dbo.t (id) VALUES (3)")
    tracked.scan()
    third = tracked.one("SELECT sys.fn_cdc_get_max_lsn()")
    tracked("EXEC sys.sp_cdc_cleanup_change_table @capture_instance = N'dbo_t', @low_water_mark = %s", (third,))
    start = tracked.one("SELECT start_lsn FROM cdc.change_tables WHERE capture_instance = N'dbo_t'")
    assert lsn_to_int(tracked.one("SELECT sys.fn_cdc_increment_lsn(%s)", (saved,))) < lsn_to_int(start)
    with pytest.raises(pymssql.OperationalError) as exc:  # the gap cannot be read: the reader must notice
        tracked(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t(sys.fn_cdc_increment_lsn(%s), "
            "sys.fn_cdc_get_max_lsn(), N'all')",
            (saved,),
        )
    assert err_number(exc) == 313
