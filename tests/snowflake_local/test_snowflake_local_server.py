"""The local Snowflake server process: start/status/stop by pid, persistence, concurrent clients."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import snowflake.connector

from dev import snowflake_local as sl
from tests.fixtures_snowflake import LocalSnowflake, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A private server directory + port; whatever a test leaves running is stopped by pid."""
    db_dir = tmp_path / "sf"
    port = free_port()
    yield db_dir, port
    info = sl.read_pid_file(db_dir)
    if info is not None:
        sl.stop_pid(info.pid, grace=2)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dev.snowflake_local", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_start_status_stop_by_pid(own_server: tuple[Path, int]) -> None:
    db_dir, port = own_server
    pid = sl.start(db_dir, port)
    try:
        assert sl.pid_alive(pid)
        assert os.getpgid(pid) == pid  # own process group: stop() can end it without touching us
        assert sl.is_ready(sl.DEFAULT_HOST, port)
        info = sl.read_pid_file(db_dir)
        assert info is not None and (info.pid, info.port, Path(info.dir)) == (pid, port, db_dir.resolve())
        assert sl.start(db_dir, port) == pid  # idempotent: same server
        ready, st = sl.status(db_dir)
        assert ready and st is not None and st.pid == pid
    finally:
        assert sl.stop(db_dir) is True
    assert not sl.pid_alive(pid)
    assert not (db_dir / sl.PID_FILE).exists()
    assert not sl.is_ready(sl.DEFAULT_HOST, port)
    assert sl.stop(db_dir) is False  # idempotent
    assert sl.status(db_dir, port) == (False, None)


@pytest.mark.slow  # the local stand-in's process life: make test-all
def test_cli_start_status_stop(own_server: tuple[Path, int]) -> None:
    db_dir, port = own_server
    assert _cli("status", "--dir", str(db_dir), "--port", str(port)).returncode == 1
    out = _cli("start", "--dir", str(db_dir), "--port", str(port))
    assert out.returncode == 0, out.stderr
    assert "started" in out.stdout
    pid = sl.read_pid_file(db_dir).pid  # type: ignore[union-attr]
    again = _cli("start", "--dir", str(db_dir), "--port", str(port))
    assert again.returncode == 0 and "already running" in again.stdout and f"pid={pid}" in again.stdout
    st = _cli("status", "--dir", str(db_dir))
    assert st.returncode == 0 and f"pid={pid}" in st.stdout and f"port={port}" in st.stdout
    assert str(db_dir.resolve()) in st.stdout
    stop = _cli("stop", "--dir", str(db_dir))
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not sl.pid_alive(pid)
    assert _cli("stop", "--dir", str(db_dir)).returncode == 0  # idempotent
    assert _cli("status", "--dir", str(db_dir), "--port", str(port)).returncode == 1


@pytest.mark.slow  # the local stand-in's process life: make test-all
def test_concurrent_starts_share_one_server(own_server: tuple[Path, int]) -> None:
    db_dir, port = own_server
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "dev.snowflake_local", "start", "--dir", str(db_dir), "--port", str(port)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    info = sl.read_pid_file(db_dir)
    assert info is not None and sl.pid_alive(info.pid)
    assert all(f"pid={info.pid}" in out for out in outs), outs
    assert sorted("already running" in out for out in outs) == [False, True]


def test_second_server_on_same_dir_is_refused(local_snowflake: LocalSnowflake) -> None:
    """The directory lock: a second serve on the same files exits 1 instead of corrupting them."""
    out = _cli("serve", "--dir", str(local_snowflake.dir), "--port", str(free_port()), timeout=60)
    assert out.returncode == 1
    assert "already uses" in out.stderr
    assert sl.is_ready(local_snowflake.host, local_snowflake.port)  # the first one is unharmed


def test_start_refuses_a_port_in_use(own_server: tuple[Path, int], local_snowflake: LocalSnowflake) -> None:
    db_dir, _ = own_server
    with pytest.raises(sl.LocalSnowflakeError, match="already in use"):
        sl.start(db_dir, local_snowflake.port)


@pytest.mark.slow  # the local stand-in's process life: make test-all
def test_data_stage_and_metadata_persist_across_restart(own_server: tuple[Path, int], tmp_path: Path) -> None:
    db_dir, port = own_server
    parquet = tmp_path / "p.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ID": pa.array([7], pa.int64())}), parquet)
    sl.start(db_dir, port)
    with contextlib.closing(snowflake.connector.connect(**sl.connection_params(port))) as conn:
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS PERSIST")
        cur.execute("CREATE SCHEMA IF NOT EXISTS PERSIST.RAW")
        cur.execute(
            "CREATE OR REPLACE TABLE PERSIST.RAW.T (ID NUMBER(38,0), NAME VARCHAR(50),"
            " LOADED_AT TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP()::TIMESTAMP_NTZ)"
        )
        cur.execute("INSERT INTO PERSIST.RAW.T (ID, NAME) VALUES (1, 'a'), (2, 'b')")
        cur.execute("CREATE STAGE IF NOT EXISTS PERSIST.RAW.STG")
        cur.execute(f"PUT file://{parquet} @PERSIST.RAW.STG/t/run1/")
    assert sl.stop(db_dir)

    sl.start(db_dir, port)
    # log in WITHOUT a database: fully-qualified names must still resolve after the restart
    with contextlib.closing(snowflake.connector.connect(**sl.connection_params(port))) as conn:
        cur = conn.cursor()
        assert cur.execute("SELECT ID, NAME FROM PERSIST.RAW.T ORDER BY ID").fetchall() == [(1, "a"), (2, "b")]
        lengths = cur.execute(
            "SELECT column_name, character_maximum_length FROM PERSIST.information_schema.columns"
            " WHERE table_name = 'T' AND column_name = 'NAME'"
        ).fetchall()
        assert lengths == [("NAME", 50)]  # VARCHAR(n) lengths live in the global metadata
        listed = cur.execute("LIST @PERSIST.RAW.STG").fetchall()
        assert [r[0] for r in listed] == ["stg/t/run1/p.parquet"]
        # a table with a macro-backed DEFAULT used to break CREATE DATABASE IF NOT EXISTS
        cur.execute("CREATE DATABASE IF NOT EXISTS PERSIST")
    # COPY needs a current database (fakesnow keeps the load history in it)
    with contextlib.closing(snowflake.connector.connect(**sl.connection_params(port, database="PERSIST"))) as conn:
        cur = conn.cursor()
        cur.execute("CREATE OR REPLACE TABLE PERSIST.RAW.U (ID NUMBER(38,0))")
        cur.execute(
            "COPY INTO PERSIST.RAW.U FROM @PERSIST.RAW.STG/t/run1/ FILE_FORMAT=(TYPE=PARQUET)"
            " MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE"
        )
        assert cur.execute("SELECT ID FROM PERSIST.RAW.U").fetchall() == [(7,)]
    sl.stop(db_dir)
    # stopped cleanly: the databases were checkpointed (no write-ahead log left behind)
    assert not list(db_dir.glob("*.wal"))


WRITER = textwrap.dedent(
    """
    import sys, snowflake.connector
    from dev.snowflake_local import connection_params
    port, writer, rows = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    conn = snowflake.connector.connect(**connection_params(port, database="CONC", schema="RAW"))
    cur = conn.cursor()
    for i in range(rows):
        cur.execute("INSERT INTO SHARED (WRITER, I) VALUES (%s, %s)", (writer, i))
    cur.execute(f"CREATE OR REPLACE TABLE OWN_{writer} AS SELECT * FROM SHARED WHERE WRITER = {writer}")
    conn.close()
    """
)


@pytest.mark.slow  # the local stand-in's process life: make test-all
def test_two_processes_write_concurrently(local_snowflake: LocalSnowflake) -> None:
    with contextlib.closing(local_snowflake.connect()) as conn:
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS CONC")
        cur.execute("CREATE SCHEMA IF NOT EXISTS CONC.RAW")
        cur.execute("CREATE OR REPLACE TABLE CONC.RAW.SHARED (WRITER INT, I INT)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(local_snowflake.port), str(w), str(rows)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (1, 2)
    ]
    deadline = time.monotonic() + 240
    for p in procs:
        _, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        assert p.returncode == 0, err[-2000:]
    with contextlib.closing(local_snowflake.connect("CONC", "RAW")) as conn:
        cur = conn.cursor()
        got = cur.execute("SELECT WRITER, COUNT(*), COUNT(DISTINCT I) FROM SHARED GROUP BY 1 ORDER BY 1").fetchall()
        assert got == [(1, rows, rows), (2, rows, rows)]
        assert cur.execute("SELECT COUNT(*) FROM OWN_1").fetchone() == (rows,)
        assert cur.execute("SELECT COUNT(*) FROM OWN_2").fetchone() == (rows,)


def test_server_error_does_not_hang_the_client(local_snowflake: LocalSnowflake) -> None:
    """An HTTP 500 (here: MERGE inside BEGIN) is retried only until network_timeout, then raised."""
    params = {**local_snowflake.connection_params(), "network_timeout": 3}
    with contextlib.closing(snowflake.connector.connect(**params)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS ERRS")
        cur.execute("CREATE SCHEMA IF NOT EXISTS ERRS.PUBLIC")  # not created with the database here
        cur.execute("CREATE OR REPLACE TABLE ERRS.PUBLIC.T (K INT, V VARCHAR)")
        cur.execute("INSERT INTO ERRS.PUBLIC.T VALUES (1, 'a')")
        cur.execute("BEGIN")
        started = time.monotonic()
        with pytest.raises(snowflake.connector.errors.InternalServerError):
            cur.execute(
                "MERGE INTO ERRS.PUBLIC.T t USING (SELECT 1 AS K) s ON t.K = s.K WHEN MATCHED THEN UPDATE SET V = 'b'"
            )
        assert time.monotonic() - started < 30
        cur.execute("ROLLBACK")
        assert cur.execute("SELECT V FROM ERRS.PUBLIC.T").fetchall() == [("a",)]
        # an ordinary SQL error is a ProgrammingError at once, and the session stays usable
        with pytest.raises(snowflake.connector.errors.ProgrammingError):
            cur.execute("SELECT * FROM ERRS.PUBLIC.NOPE")
        assert cur.execute("SELECT 1").fetchone() == (1,)


def test_results_cache_is_bounded() -> None:
    cache = sl._BoundedDict(3)
    for i in range(10):
        cache[str(i)] = (i,)
    assert list(cache) == ["7", "8", "9"]
