"""Notification mail through the configured `[smtp]` relay (stdlib smtplib in a thread).

Plain SMTP by default; `[smtp] starttls = true` upgrades the connection and `username` /
`password` log in. Every failure comes out as one `MailError` line; callers log it and go
on, since a mail that cannot be sent must never take a call or an export down.

The mails are written in the reader's language and time zone (a `Presentation`; English
and UTC without one).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from callrec.config import SmtpConfig
from callrec.services.presentation import Presentation, Presentations
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


def _english() -> Presentation:
    return Presentations().get("en", "UTC")


def export_ready_mail(
    to: str,
    *,
    month: str,
    link: str,
    files: int,
    size: int,
    expires_at: float,
    presentation: Presentation | None = None,
) -> Mail:
    """The "your export is ready" mail with its signed download link."""
    p = presentation or _english()
    count = p.ngettext(
        "{files} recording, {size} MB, with manifest.csv listing each file's metadata and SHA-256.",
        "{files} recordings, {size} MB, with manifest.csv listing each file's metadata and"
        " SHA-256.",
        files,
    ).format(files=p.number(files), size=p.number(size / 1e6, 1))
    body = (
        p.gettext("The recordings of {month} are ready to download:").format(month=month)
        + f"\n\n{link}\n\n{count}\n"
        + p.gettext("The link works until {time}; the ZIP is deleted after that.").format(
            time=p.datetime_long(expires_at)
        )
        + "\n"
    )
    subject = p.gettext("callrec: recordings of {month} ready to download").format(month=month)
    return Mail(to, subject, body)


def export_failed_mail(
    to: str, *, month: str, error: str, presentation: Presentation | None = None
) -> Mail:
    """The mail telling the admin that an ordered export could not be built (`error`
    comes from the export as it was logged)."""
    p = presentation or _english()
    intro = p.gettext("The export of the recordings of {month} failed:").format(month=month)
    subject = p.gettext("callrec: export of {month} failed").format(month=month)
    return Mail(to, subject, f"{intro}\n\n{error}\n")
