"""`[portal] public_url`: the base of the links callrec mails. Checked as an absolute
http(s) URL; without it the link is derived from the listen address, with a warning at
start-up when that address is a wildcard or loopback one that nobody elsewhere can
open. The mailed link (through a real SMTP server, aiosmtpd) uses it."""

from __future__ import annotations

import asyncio
import logging
import re
import zipfile
from pathlib import Path

import pytest

from callrec.config import ConfigError
from callrec.services.export import ExportService
from callrec.services.retention import set_retention_days
from storage.database import Store
from tests.callrec.test_mailer import Inbox, config_for, smtp_server, store, utc
from tests.storage.orgs import ORG
from tests.storage.recording_factory import file_recording, make_config

__all__ = ["smtp_server", "store"]  # fixtures used from the mailer tests


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("rec.example.org", "absolute http:// or https:// URL"),
        ("ftp://rec.example.org", "absolute http:// or https:// URL"),
        ("https://", "absolute http:// or https:// URL"),
        ("https://user:secret@rec.example.org", "absolute http:// or https:// URL"),
        ("https://rec.example.org/?next=x", "absolute http:// or https:// URL"),
        ("https://rec.example.org/#top", "absolute http:// or https:// URL"),
        ("https://rec.example.org:0", "port must be a number from 1 to 65535"),
        ("https://rec.example.org:70000", "port must be a number from 1 to 65535"),
        ("", "expected a non-empty string"),
    ],
)
def test_public_url_must_be_an_absolute_http_url(tmp_path: Path, value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)) as refused:
        make_config(tmp_path, f"[portal]\npublic_url = '{value}'\n")
    assert "[portal] public_url" in str(refused.value)


@pytest.mark.parametrize(
    "value", ["https://rec.example.org", "http://10.1.2.3:8080/callrec/", "https://[2001:db8::1]"]
)
def test_public_url_accepted(tmp_path: Path, value: str) -> None:
    config = make_config(tmp_path, f"[portal]\npublic_url = '{value}'\n")
    assert config.portal.base_url == value.rstrip("/")
    assert config.portal.link_warning() is None


@pytest.mark.parametrize(
    ("listen", "warned"),
    [
        ("0.0.0.0:8080", True),
        ("[::]:8080", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("10.0.0.5:8080", False),
        ("rec.example.org:8080", False),
    ],
)
def test_link_warning_without_public_url(tmp_path: Path, listen: str, warned: bool) -> None:
    config = make_config(tmp_path, f"[portal]\nlisten = '{listen}'\n")
    warning = config.portal.link_warning()
    assert (warning is not None) == warned
    if warning is not None:
        assert "public_url" in warning and config.portal.base_url in warning


async def test_start_up_warns_once_when_links_cannot_reach_anyone(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(tmp_path, 9)  # listens on 127.0.0.1:8088, no public_url
    with caplog.at_level(logging.WARNING, logger="callrec.export"):
        async with asyncio.TaskGroup() as tasks:
            ExportService(store, config, spawn=tasks.create_task)
    warnings = [r.getMessage() for r in caplog.records if "public_url" in r.getMessage()]
    assert len(warnings) == 1 and "http://127.0.0.1:8088" in warnings[0]
    caplog.clear()
    configured = config_for(tmp_path, 9, "public_url = 'https://rec.example.org'\n")
    with caplog.at_level(logging.WARNING, logger="callrec.export"):
        async with asyncio.TaskGroup() as tasks:
            ExportService(store, configured, spawn=tasks.create_task)
    assert not [r for r in caplog.records if "public_url" in r.getMessage()]


async def test_mailed_link_uses_public_url(
    smtp_server: tuple[Inbox, int], tmp_path: Path, store: Store
) -> None:
    inbox, port = smtp_server
    config = config_for(tmp_path, port, "public_url = 'https://rec.example.org/callrec/'\n")
    await set_retention_days(store, ORG, 180, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    await file_recording(store, config.storage.dir, started_at=utc(2024, 5, 3))
    await store.add_admin(ORG, "root", "correct horse", email="root@example.org")
    async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
        service = ExportService(store, config, spawn=tasks.create_task)
        await service.request(ORG, "2024-05", "admin:root", address="127.0.0.1")
        _, message = await inbox.next_message()
    body = message.get_content()
    links = re.findall(r"\S+/exports/download\?token=\S+", body)
    assert len(links) == 1, body
    assert links[0].startswith("https://rec.example.org/callrec/exports/download?token=")
    assert "127.0.0.1" not in body and "8088" not in body
    _, path = await service.resolve_download(ORG, links[0].partition("token=")[2])
    assert zipfile.is_zipfile(path)
