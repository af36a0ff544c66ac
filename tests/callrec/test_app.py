"""`callrec.app.background_tasks`: the one task group that owns callrec's background work."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from callrec.app import background_tasks, open_files_needed
from callrec.config import load_config


async def test_a_failing_task_is_logged_once_and_its_siblings_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sibling_done = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("disk on fire")

    async def sibling() -> str:
        await asyncio.sleep(0)
        sibling_done.set()
        return "done"

    with caplog.at_level(logging.ERROR, logger="callrec.app"):
        async with background_tasks() as spawn:
            failed = spawn(fails())
            other = spawn(sibling())
            await asyncio.wait([failed])
            await sibling_done.wait()
            assert await other == "done"
    assert failed.done() and not failed.cancelled() and failed.result() is None
    records = [r for r in caplog.records if "disk on fire" in str(r.exc_info)]
    assert len(records) == 1
    assert "fails" in records[0].getMessage()


async def test_leaving_the_block_cancels_what_still_runs() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with background_tasks() as spawn:
        task = spawn(forever())
        await started.wait()
    assert task.cancelled() and cancelled.is_set()


async def test_an_error_in_the_block_comes_out_as_itself_after_cancelling_the_tasks() -> None:
    started = asyncio.Event()
    cause = OSError("address in use")

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    with pytest.raises(ValueError, match="cannot listen") as raised:
        async with background_tasks() as spawn:
            task = spawn(forever())
            await started.wait()
            raise ValueError("cannot listen") from cause
    assert raised.value.__cause__ is cause
    assert task.cancelled()


async def test_cancelling_the_owner_cancels_the_tasks() -> None:
    started = asyncio.Event()
    inner: list[asyncio.Task[None]] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def owner() -> None:
        async with background_tasks() as spawn:
            inner.append(spawn(forever()))
            await asyncio.Event().wait()

    outer = asyncio.create_task(owner())
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner[0].cancelled()


def test_open_files_needed_counts_a_workers_share_of_the_rtp_ports(tmp_path: Path) -> None:
    def needed(body: str) -> int:
        path = tmp_path / "callrec.toml"
        path.write_text(body)
        return open_files_needed(load_config(path))

    ports = '[media]\nrtp_ports = "20000-29999"\n'
    # Ten thousand ports: one worker holds them all, four a quarter each.
    assert needed(ports + "workers = 1\n") == 10_000 + 2_500
    assert needed(ports + "workers = 4\n") == 2_500 + 625
    # A small range: the SIP process's TCP connections are the larger need.
    small = '[sip]\ntcp_max_connections = 3000\n[media]\nrtp_ports = "20000-20099"\n'
    assert needed(small + "workers = 2\n") == 3000
