"""Pytest plugin: a real local SMTP server (``python -m dev.smtp_sink serve``) for alert tests.

``smtp_sink`` (session scope) starts the sink in its own process group on a free port, with its
mail folder in a temporary directory, and stops it by the pid it started at session end.
``mailbox`` (per test) points ``AIRFLOW_CONN_SMTP_DEFAULT`` at it and empties the folder first.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dev import procs
from tests.fixtures_snowflake import free_port  # the one free-port helper of the tests

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SmtpSink:
    host: str
    port: int
    directory: Path
    pid: int

    def airflow_conn(self) -> dict[str, Any]:
        return {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": {"from_email": "airflow-cdc@example.com", "disable_ssl": True, "disable_tls": True},
        }

    def clear(self) -> None:
        for path in self.directory.glob("*.eml"):
            path.unlink()

    def one_mail(self) -> tuple[str, str]:
        """The one mail expected (after a second one had the chance to arrive): subject and text."""
        from dev.smtp_sink import body_text

        self.mails(expect=1)
        mails = self.mails(expect=2, timeout=1.0)
        assert len(mails) == 1, [m["Subject"] for m in mails]
        return str(mails[0]["Subject"]), body_text(mails[0])

    def mails(self, expect: int | None = None, timeout: float = 10.0) -> list[Any]:
        """The stored mails; with ``expect``, wait up to ``timeout`` s for at least that many."""
        from dev.smtp_sink import read_mails

        deadline = time.monotonic() + timeout
        found = read_mails(self.directory)
        while expect is not None and len(found) < expect and time.monotonic() < deadline:
            time.sleep(0.1)
            found = read_mails(self.directory)
        return found


@pytest.fixture(scope="session")
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    directory = tmp_path_factory.mktemp("mail")
    port = free_port()
    log = directory.parent / "smtp_sink.log"
    proc = procs.spawn(
        procs.python_module("dev.smtp_sink", "serve", "--port", str(port), "--dir", str(directory)), log_file=log
    )
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            procs.stop_pid(proc.pid)
            raise RuntimeError(f"SMTP sink did not start (see {log})")
        time.sleep(0.1)
    yield SmtpSink("127.0.0.1", port, directory, proc.pid)
    procs.stop_pid(proc.pid)
    proc.wait(timeout=10)


@pytest.fixture
def mailbox(smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> SmtpSink:
    smtp_sink.clear()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(smtp_sink.airflow_conn()))
    return smtp_sink
