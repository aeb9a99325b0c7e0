"""A tiny local SMTP sink: accepts every mail and stores it as an ``.eml`` file (no dependency).

Alerts of the local stack (failure callbacks, Deadline Alerts, CDC health) go to ``smtp_default``
on 127.0.0.1:1025 (dev/localenv.py); this server receives them so they can be read:

    python -m dev.smtp_sink serve [--host 127.0.0.1] [--port 1025] [--dir .local/mail]
    python -m dev.smtp_sink print [--dir .local/mail] [--last N] [--body]

It speaks just enough SMTP for smtplib / aiosmtplib (HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT;
no TLS, no AUTH). Each mail is written atomically to ``<dir>/<UTC time>-<n>.eml``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import itertools
import os
import re
import socketserver
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_counter = itertools.count(1)
_lock = threading.Lock()


def default_dir() -> Path:
    return Path(os.environ.get("CDC_LOCAL_DIR", ROOT / ".local")) / "mail"


def store(directory: Path, sender: str, recipients: list[str], data: bytes) -> Path:
    """Write one message (envelope as X- headers first) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    with _lock:
        name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%f')}-{next(_counter):04d}.eml"
    envelope = f"X-Envelope-From: {sender}\r\nX-Envelope-To: {', '.join(recipients)}\r\n".encode()
    path = directory / name
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(envelope + data)
    tmp.rename(path)
    return path


class _Handler(socketserver.StreamRequestHandler):
    server: SinkServer

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self._reply("220 cdc-smtp-sink ESMTP ready")
        sender, recipients = "", []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb == "EHLO":
                self._reply("250-cdc-smtp-sink")
                self._reply("250-8BITMIME")
                self._reply("250 SMTPUTF8")
            elif verb == "HELO":
                self._reply("250 cdc-smtp-sink")
            elif verb == "MAIL":
                match = re.search(r"<([^>]*)>", line)
                sender, recipients = (match.group(1) if match else ""), []
                self._reply("250 OK")
            elif verb == "RCPT":
                match = re.search(r"<([^>]*)>", line)
                recipients.append(match.group(1) if match else line[8:].strip())
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while True:
                    chunk = self.rfile.readline()
                    if not chunk or chunk in (b".\r\n", b".\n"):
                        break
                    lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                path = store(self.server.directory, sender, recipients, b"".join(lines))
                print(f"stored {path.name} from {sender} to {', '.join(recipients)}", flush=True)
                self._reply("250 OK: queued")
                sender, recipients = "", []
            elif verb == "RSET":
                sender, recipients = "", []
                self._reply("250 OK")
            elif verb == "NOOP":
                self._reply("250 OK")
            elif verb == "QUIT":
                self._reply("221 Bye")
                return
            else:
                self._reply("502 Command not implemented")


class SinkServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, host: str, port: int, directory: Path) -> None:
        self.directory = directory
        super().__init__((host, port), _Handler)


def serve(host: str, port: int, directory: Path) -> None:
    with SinkServer(host, port, directory) as server:
        print(f"SMTP sink on {host}:{server.server_address[1]}, storing mails in {directory}", flush=True)
        server.serve_forever()


def read_mails(directory: Path | None = None) -> list[email.message.EmailMessage]:
    """Every stored mail, oldest first (tests and `print`)."""
    folder = directory or default_dir()
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for path in sorted(folder.glob("*.eml"))
    ]


def body_text(message: email.message.EmailMessage) -> str:
    """The mail's text as a person reads it, for reading and for assertions: HTML tags removed,
    one line per table row, heading or paragraph (``name: value``), entities decoded."""
    part = message.get_body(preferencelist=("plain", "html"))
    text = part.get_content() if part is not None else ""
    text = re.sub(r"</?(b|i|em|strong|span|a|pre|code)(\s[^>]*)?>", "", text)  # inline: no blank of their own
    text = re.sub(r"</t[dh]>\s*<t[dh][^>]*>", ": ", text)
    text = re.sub(r"</(tr|h\d|p|li|table)>|<br\s*/?>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    lines = (re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def print_mails(directory: Path, last: int | None, with_body: bool) -> int:
    mails = read_mails(directory)
    if not mails:
        print(f"no mail in {directory}")
        return 0
    for message in mails[-last:] if last else mails:
        print(f"{message['Date']}  to {message['To']}\n  {message['Subject']}")
        if with_body:
            for line in body_text(message).splitlines():
                if line.strip():
                    print(f"    {line.strip()}")
    print(f"{len(mails)} mail(s) in {directory}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.smtp_sink", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the SMTP sink in the foreground")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=int(os.environ.get("CDC_LOCAL_SMTP_PORT", "1025")))
    s.add_argument("--dir", type=Path, default=None)
    p = sub.add_parser("print", help="show the captured mails")
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--last", type=int, default=None)
    p.add_argument("--body", action="store_true", help="print each mail's text too")
    args = parser.parse_args(argv)
    directory = args.dir or default_dir()
    if args.command == "serve":
        serve(args.host, args.port, directory)
        return 0
    return print_mails(directory, args.last, args.body)


if __name__ == "__main__":
    sys.exit(main())
