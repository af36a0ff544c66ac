"""GET /metrics: the media workers' and the calls' figures in Prometheus text format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from portal.app import start_portal_at
from portal.metrics import MetricsSource
from portal.services import PortalServices
from storage.database import Store


@dataclass
class Worker:
    index: int
    alive: bool
    port_pairs: int
    port_pairs_free: int
    calls: int


class Figures:
    def __init__(self) -> None:
        self.workers = [Worker(0, True, 50, 48, 1), Worker(1, False, 50, 0, 0)]
        self.restarts = 3
        self.calls = 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "callrec.db")
    yield opened
    await opened.close()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_metrics_are_read_from_the_source_at_each_scrape(
    store: Store, tmp_path: Path
) -> None:
    figures = Figures()
    source = MetricsSource(
        workers=lambda: figures.workers,
        restarts=lambda: figures.restarts,
        calls_active=lambda: figures.calls,
    )
    services = PortalServices(
        storage_dir=tmp_path, recordings_dir=tmp_path / "recordings", request_export=None
    )
    handle = await start_portal_at(store, services, "127.0.0.1", 0, metrics=source)
    try:
        status, content_type, text = await get(handle.url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
        samples = {
            (s.name, tuple(s.labels.values())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("callrec_media_port_pairs", ("0",))] == 50
        assert samples[("callrec_media_port_pairs_free", ("0",))] == 48
        assert samples[("callrec_media_port_pairs_free", ("1",))] == 0
        assert samples[("callrec_media_worker_up", ("1",))] == 0
        assert samples[("callrec_media_worker_calls", ("0",))] == 1
        assert samples[("callrec_media_workers_alive", ())] == 1
        assert samples[("callrec_media_worker_restarts_total", ())] == 3
        assert samples[("callrec_calls_active", ())] == 1
        figures.calls = 0
        figures.workers[1] = Worker(1, True, 50, 50, 0)
        _, _, text = await get(handle.url + "/metrics")
        assert "callrec_calls_active 0.0" in text
        assert "callrec_media_workers_alive 2.0" in text
    finally:
        await handle.stop()


async def test_without_a_source_there_is_no_metrics_page(store: Store, tmp_path: Path) -> None:
    services = PortalServices(
        storage_dir=tmp_path, recordings_dir=tmp_path / "recordings", request_export=None
    )
    handle = await start_portal_at(store, services, "127.0.0.1", 0)
    try:
        status, _, _ = await get(handle.url + "/metrics")
        assert status == 404
    finally:
        await handle.stop()
