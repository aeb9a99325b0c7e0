"""DB-API 2.0 connection and cursor with pymssql's behaviour.

The same classes serve in-process sessions and network clients: both provide a "session" with
``execute(sql, params) -> list[Result]``, ``commit``, ``rollback``, ``set_autocommit``, ``close``.
What is copied from pymssql: ``conn.autocommit(bool)`` (default off = implicit transactions),
``cursor(as_dict=…)``, parameter binding, rowcount, ``nextset``, context managers (closing the
connection on exit, without commit), and exceptions (pymssql classes, ``args == (n, msg)`` as pymssql raises them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pymssql.exceptions as pe

from . import errors
from .results import Result, RowBuffer


class SessionLike(Protocol):
    def execute(self, sql: str, params: Any = None) -> list[Result]: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def set_autocommit(self, status: bool) -> None: ...
    def close(self) -> None: ...


def _call(fn: Any, *args: Any) -> Any:
    """Run a session call, converting emulator errors to pymssql exceptions."""
    try:
        return fn(*args)
    except errors.SqlServerError as exc:
        if exc.number == 0:
            raise pe.InterfaceError(exc.message) from None
        raise errors.to_pymssql(exc.number, exc.message, exc.severity) from None


class Cursor:
    """pymssql-compatible cursor."""

    def __init__(self, connection: Connection, as_dict: bool = False) -> None:
        self.connection = connection
        self.as_dict = as_dict
        self.arraysize = 1
        self.description: list[tuple[Any, ...]] | None = None
        self.lastrowid = None
        self._results: list[Result] = []
        self._index = -1
        self._buffer: RowBuffer | None = None
        self._rowcount = -1
        self._names: list[str] = []
        self._closed = False

    # -- execution -------------------------------------------------------------------------
    def execute(self, operation: str, params: Any = None) -> None:
        self._check()
        self._discard()
        self._results = _call(self.connection._session.execute, operation, params)
        self._index = -1
        dml = [r.rowcount for r in self._results if not r.has_rows and r.rowcount >= 0]
        self._rowcount = dml[-1] if dml else -1
        if not self._select_next_rowset():
            self.description = None

    def executemany(self, operation: str, params_seq: Sequence[Any]) -> None:
        total = 0
        for params in params_seq:
            self.execute(operation, params)
            total += max(self._rowcount, 0)
        self._rowcount = total

    def _select_next_rowset(self) -> bool:
        while self._index + 1 < len(self._results):
            self._index += 1
            result = self._results[self._index]
            if result.has_rows:
                assert result.columns is not None
                self.description = [c.description() for c in result.columns]
                self._names = [c.name for c in result.columns]
                if self.as_dict and any(not n for n in self._names):
                    raise pe.ColumnsWithoutNamesError([i for i, n in enumerate(self._names) if not n])
                self._buffer = RowBuffer(result.columns, result.stream())
                self._rowcount = -1
                return True
        self._buffer = None
        return False

    def nextset(self) -> bool | None:
        self._check()
        return True if self._select_next_rowset() else None

    # -- fetching --------------------------------------------------------------------------
    def _rows_or_raise(self) -> RowBuffer:
        if self._buffer is None:
            raise pe.OperationalError("Statement not executed or executed statement has no resultset")
        return self._buffer

    def _shape(self, row: tuple[Any, ...]) -> Any:
        return dict(zip(self._names, row, strict=True)) if self.as_dict else row

    def _track(self, buffer: RowBuffer) -> None:
        self._rowcount = buffer.fetched

    def fetchone(self) -> Any:
        buffer = self._rows_or_raise()
        row = _call(buffer.fetchone)
        self._track(buffer)
        return None if row is None else self._shape(row)

    def fetchmany(self, size: int | None = None) -> list[Any]:
        buffer = self._rows_or_raise()
        rows = _call(buffer.fetchmany, size or self.arraysize)
        self._track(buffer)
        return [self._shape(r) for r in rows] if self.as_dict else rows

    def fetchall(self) -> list[Any]:
        buffer = self._rows_or_raise()
        rows = _call(buffer.fetchall)
        self._track(buffer)
        return [self._shape(r) for r in rows] if self.as_dict else rows

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def rownumber(self) -> int:
        return self._buffer.fetched if self._buffer else 0

    def setinputsizes(self, sizes: Any = None) -> None:
        pass

    def setoutputsize(self, size: Any = None, column: Any = None) -> None:
        pass

    def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> Sequence[Any]:
        placeholders = ", ".join(["%s"] * len(parameters))
        self.execute(f"EXEC {procname} {placeholders}".strip(), tuple(parameters) or None)
        return parameters

    # -- lifecycle -------------------------------------------------------------------------
    def _discard(self) -> None:
        for result in self._results:
            result.dispose()
        self._results = []
        self._buffer = None
        self.description = None

    def _check(self) -> None:
        if self._closed or self.connection._closed:
            raise pe.InterfaceError("Cursor is closed." if self._closed else "Connection is closed.")

    def close(self) -> None:
        self._discard()
        self._closed = True

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connection:
    """pymssql-compatible connection over a session (in-process or remote)."""

    def __init__(
        self, session: SessionLike, *, as_dict: bool = False, on_close: Any = None, autocommit: bool = False
    ) -> None:
        self._session = session
        self.as_dict = as_dict
        self._on_close = on_close
        self._closed = False
        self._autocommit = autocommit

    @property
    def session(self) -> SessionLike:
        return self._session

    def cursor(self, as_dict: bool | None = None) -> Cursor:
        if self._closed:
            raise pe.InterfaceError("Connection is closed.")
        return Cursor(self, self.as_dict if as_dict is None else as_dict)

    def commit(self) -> None:
        if self._closed:
            raise pe.InterfaceError("Connection is closed.")
        _call(self._session.commit)

    def rollback(self) -> None:
        if self._closed:
            return
        _call(self._session.rollback)

    def autocommit(self, status: bool) -> None:
        """pymssql spelling: ``conn.autocommit(True)`` turns implicit transactions off."""
        _call(self._session.set_autocommit, bool(status))
        self._autocommit = bool(status)

    @property
    def autocommit_state(self) -> bool:
        return self._autocommit

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            _call(self._session.close)
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: S110 - never raise from a finalizer
            pass
