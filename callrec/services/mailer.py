"""Notification mail through the configured `[smtp]` relay (stdlib smtplib in a thread).

Plain SMTP by default; `[smtp] starttls = true` upgrades the connection and `username` /
`password` log in. Every failure comes out as one `MailError` line; callers log it and go
on, since a mail that cannot be sent must never take a call or an export down.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from callrec.config import SmtpConfig
from storage.database import StorageError

__all__ = ["Mail", "MailError", "compose", "export_failed_mail", "export_ready_mail", "send_mail"]

DEFAULT_TIMEOUT_S = 30.0


class MailError(StorageError):
    """A mail could not be handed to the SMTP relay."""


@dataclass(frozen=True)
class Mail:
    """A plain-text mail to one recipient."""

    to: str
    subject: str
    body: str


def compose(sender: str, mail: Mail) -> EmailMessage:
    """The RFC 5322 message; raises MailError for header values that are not allowed
    (such as a line break smuggled into the recipient)."""
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    except ValueError as exc:
        raise MailError(f"invalid mail header: {exc}") from exc
    message.set_content(mail.body)
    return message


def send_mail_blocking(smtp: SmtpConfig, mail: Mail, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Deliver `mail` to the relay; blocks (use `send_mail` from asyncio code)."""
    message = compose(smtp.sender, mail)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username is not None:
                client.login(smtp.username, smtp.password or "")
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(
            f"cannot send mail to {mail.to} via {smtp.host}:{smtp.port}: {exc}"
        ) from exc


async def send_mail(smtp: SmtpConfig, mail: Mail, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Deliver `mail` without blocking the event loop; raises MailError."""
    await asyncio.to_thread(send_mail_blocking, smtp, mail, timeout=timeout)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def export_ready_mail(
    to: str, *, month: str, link: str, files: int, size: int, expires_at: float
) -> Mail:
    """The "your export is ready" mail with its signed download link."""
    body = (
        f"The recordings of {month} are ready to download:\n\n"
        f"{link}\n\n"
        f"{files} recording(s), {size / 1e6:.1f} MB, with manifest.csv listing each "
        f"file's metadata and SHA-256.\n"
        f"The link works until {_utc(expires_at)}; the ZIP is deleted after that.\n"
    )
    return Mail(to, f"callrec: recordings of {month} ready to download", body)


def export_failed_mail(to: str, *, month: str, error: str) -> Mail:
    """The mail telling the admin that an ordered export could not be built."""
    body = f"The export of the recordings of {month} failed:\n\n{error}\n"
    return Mail(to, f"callrec: export of {month} failed", body)
