"""Helpers for the DuckDB cursors that the engine and the statement modules (dml, bulk…) share.

Kept below :mod:`.engine` so that the statement modules need not import the engine that calls them.
"""

from __future__ import annotations

import contextlib

import duckdb


def settle(cur: duckdb.DuckDBPyConnection) -> None:
    """Drop an unread result of ``execute()``: DuckDB 2 refuses ``sql()``/``register()`` while one
    is pending (the statement itself has already run)."""
    with contextlib.suppress(duckdb.Error):
        cur.abort()
