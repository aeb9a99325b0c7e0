"""Sessions translating T-SQL at the same time never see each other's statements.

The server serves every connection from a thread of its own, and every statement goes through the
T-SQL translation; state kept between calls (sqlglot's tokenizer keeps its position and tokens on
the instance) must be per thread. Seen before it was: under four snapshot workers at once, a
catalog query came back as "Invalid object name 'cdc.ca'" or "SELECT clause without selection list".
"""

from __future__ import annotations

import threading

from dev.mssql_emulator import Engine
from include.cdc_pipeline.source import CdcSource


def test_threads_translating_at_once_get_their_own_answers() -> None:
    engine = Engine(":memory:")
    setup = engine.connect(autocommit=True).cursor()
    setup.execute("EXEC sys.sp_cdc_enable_db")
    for i in range(8):
        setup.execute(f"CREATE TABLE dbo.t{i} (id int NOT NULL PRIMARY KEY, v{i} nvarchar(40) NULL)")
        setup.execute(
            f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't{i}', @role_name = NULL"
        )
    errors: list[str] = []
    wrong: list[tuple[int, list[str]]] = []

    def session(n: int) -> None:
        source = CdcSource(engine.connect())
        try:
            for k in range(40):
                i = (n + k) % 8
                names = [c.name for c in source.change_table_columns(f"dbo_t{i}")]
                if names != ["id", f"v{i}"]:
                    wrong.append((i, names))
                source.capture_instances("dbo", f"t{i}")
                source.max_lsn()
        except Exception as exc:
            errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=session, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == []
