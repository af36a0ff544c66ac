"""Export mail through a real SMTP server (aiosmtpd on 127.0.0.1, a random port)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import zipfile
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from callrec.config import Config
from callrec.services.export import ExportService
from callrec.services.mailer import Mail, MailError, send_mail
from callrec.services.retention import set_retention_days
from storage.database import Store
from storage.errors import Conflict
from tests.storage.orgs import ORG
from tests.storage.recording_factory import file_recording, make_config


@dataclass
class Inbox:
    """An aiosmtpd handler keeping what it receives."""

    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        self.arrived.set()
        return "250 OK"

    async def next_message(self, timeout: float = 10.0) -> tuple[Envelope, EmailMessage]:
        async with asyncio.timeout(timeout):
            while not self.messages:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages.pop(0)


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[Inbox, int]]:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="callrec-test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield inbox, port
    server.close()
    await server.wait_closed()


def config_for(tmp_path: Path, smtp_port: int, extra: str = "") -> Config:
    return make_config(
        tmp_path,
        f"[smtp]\nhost = '127.0.0.1'\nport = {smtp_port}\nsender = 'callrec@example.org'\n"
        f"[portal]\nlisten = '127.0.0.1:8088'\n{extra}",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "data" / "callrec.db")
    yield opened
    await opened.close()


def utc(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, tzinfo=UTC).timestamp()


async def test_send_mail_delivers_to_a_real_smtp_server(
    smtp_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp_server
    config = config_for(tmp_path, port)
    await send_mail(config.smtp, Mail("admin@example.org", "hello", "body line\n"))
    envelope, message = await inbox.next_message()
    assert envelope.mail_from == "callrec@example.org"
    assert envelope.rcpt_tos == ["admin@example.org"]
    assert message["Subject"] == "hello" and message["From"] == "callrec@example.org"
    assert message.get_content().splitlines() == ["body line"]


async def test_header_injection_is_refused(tmp_path: Path, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    config = config_for(tmp_path, port)
    with pytest.raises(MailError):
        await send_mail(config.smtp, Mail("a@example.org\r\nBcc: evil@example.org", "x", "y"))
    assert inbox.messages == []


async def test_unreachable_server_is_one_mail_error(tmp_path: Path) -> None:
    config = config_for(tmp_path, 9)  # discard port: nothing listens on loopback
    with pytest.raises(MailError, match=r"cannot send mail to a@example\.org via 127\.0\.0\.1:9"):
        await send_mail(config.smtp, Mail("a@example.org", "x", "y"), timeout=5)


async def test_ordered_export_is_mailed_with_a_working_signed_link(
    smtp_server: tuple[Inbox, int], tmp_path: Path, store: Store
) -> None:
    inbox, port = smtp_server
    config = config_for(tmp_path, port)
    await set_retention_days(store, ORG, 180, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    recordings = [
        await file_recording(store, config.storage.dir, started_at=utc(2024, 5, day))
        for day in (3, 4)
    ]
    await store.add_admin(ORG, "root", "correct horse", email="root@example.org")
    async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
        service = ExportService(store, config, spawn=tasks.create_task)
        export_id = await service.request(ORG, "2024-05", "admin:root", address="127.0.0.1")
        envelope, message = await inbox.next_message()

    assert envelope.rcpt_tos == ["root@example.org"]
    assert message["Subject"] == "callrec: recordings of 2024-05 ready to download"
    body = message.get_content()
    match = re.search(r"(http://127\.0\.0\.1:8088/exports/download\?token=(\S+))", body)
    assert match is not None, body
    _, path = await service.resolve_download(ORG, match.group(2))
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert len(archive.namelist()) == len(recordings) + 1
    job = await store.get_export(ORG, export_id)
    assert job is not None and (job.status, job.error, job.files) == ("ready", None, 2)
    actions = [entry.action for entry in await store.list_audit(ORG)]
    assert {"export.request", "export", "export.mailed"} <= set(actions)


async def test_mail_failure_keeps_the_export_ready_with_the_error_noted(
    tmp_path: Path, store: Store
) -> None:
    config = config_for(tmp_path, 9)
    await set_retention_days(store, ORG, 365, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    await file_recording(store, config.storage.dir, started_at=utc(2024, 5, 3))
    async with asyncio.timeout(60), asyncio.TaskGroup() as tasks:
        service = ExportService(store, config, spawn=tasks.create_task)
        export_id = await service.request(ORG, "2024-05", "admin:root", "root@example.org")
    job = await store.get_export(ORG, export_id)
    assert job is not None and job.status == "ready"
    assert job.error is not None and job.error.startswith("mail not sent: cannot send mail")
    assert job.path is not None and zipfile.is_zipfile(config.storage.dir / job.path)


async def test_refused_order_sends_nothing(
    smtp_server: tuple[Inbox, int], tmp_path: Path, store: Store
) -> None:
    inbox, port = smtp_server
    config = config_for(tmp_path, port)
    spawned: list[asyncio.Task[None]] = []
    async with asyncio.TaskGroup() as tasks:

        def spawn(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
            spawned.append(tasks.create_task(work))
            return spawned[-1]

        service = ExportService(store, config, spawn=spawn)
        with pytest.raises(Conflict, match=r"180 days or more \(now 90\)"):
            await service.request(ORG, "2024-05", "admin:root", "root@example.org")
    # The group has ended, so any mail a spawned task sent has been accepted (the inbox
    # keeps a message before it answers 250): nothing to wait for.
    assert spawned == []
    assert inbox.messages == [] and await store.list_exports(ORG) == []
