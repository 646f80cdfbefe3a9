"""The notices a requester gets by email: the download link, or why the export failed.

SMTP through aiosmtplib: the worker is async, and aiosmtplib talks SMTP on the event loop with
timeouts, STARTTLS when the server offers it (or implicit TLS for smtps://) and AUTH, so no thread
and no hand-written protocol code. `SMTP_CONNECTION_URL` is `smtp://user:pass@host:port` (587 by
default) or `smtps://...` (465); `EMAIL_FROM_ADDRESS` is the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

from tracehouse.batch_export.models import ExportRecord
from tracehouse.errors import ConfigError
from tracehouse.settings import Settings
from tracehouse.timefmt import api_time

SMTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("SMTP_CONNECTION_URL: expected smtp://[user:pass@]host[:port] or smtps://...")
        tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if tls else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=tls,
        )


class Mailer:
    def __init__(self, server: SmtpServer | None, sender: str | None) -> None:
        self._server = server
        self._sender = sender

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        url = settings.smtp_connection_url
        return cls(SmtpServer.from_url(url) if url else None, settings.email_from_address)

    @property
    def enabled(self) -> bool:
        return self._server is not None and bool(self._sender)

    async def send(self, to: str, subject: str, body: str) -> None:
        if self._server is None or not self._sender:
            raise ConfigError("email needs SMTP_CONNECTION_URL and EMAIL_FROM_ADDRESS")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self._sender, to, subject
        message.set_content(body)
        server = self._server
        await aiosmtplib.send(
            message,
            hostname=server.hostname,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.implicit_tls,
            start_tls=False if server.implicit_tls else None,  # None: STARTTLS when the server offers it
            timeout=SMTP_TIMEOUT_S,
        )


def completed_notice(record: ExportRecord, url: str, rows: int, truncated: bool, row_limit: int) -> tuple[str, str]:
    cut = (
        f"\nMore rows matched than the limit of {row_limit:,}; the file holds the first {rows:,}.\n"
        if truncated
        else ""
    )
    body = (
        f"Your export {record.name!r} of {record.table} ({record.format}) is ready: {rows:,} rows.\n{cut}\n"
        f"Download it here (the link works until {api_time(record.expires_at)}):\n{url}\n"
    )
    return f"Your {record.table} export is ready", body


def failed_notice(record: ExportRecord, reason: str) -> tuple[str, str]:
    body = f"Your export {record.name!r} of {record.table} ({record.format}) failed:\n\n{reason}\n"
    return f"Your {record.table} export failed", body
