"""The composition root: `serve(config)` builds callrec's parts, wires them and runs them.

Only the CLI imports this module. It is the one place that knows every layer: the store,
the media relay, the recorder, the SIP side, the retention and export services and the
portal. Each part gets what it needs through its constructor; background work runs in
one task group that shutdown cancels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from b2bua.server import B2bua
from b2bua.services import MediaUnavailable
from callrec.config import Config
from callrec.recording.manager import RecordingManager
from callrec.services.export import fail_interrupted_exports, wait_for_exports
from callrec.services.retention import RetentionTask
from media.ports import PortAllocator
from media.relay import MediaSession
from media.rtp import MediaError
from portal.app import start_portal
from storage.database import Store

log = logging.getLogger("callrec.app")


class RelayFactory:
    """Opens one `MediaSession` per call on the configured address and port range."""

    def __init__(self, config: Config) -> None:
        media = config.media
        self.address = media.address
        self.silence_timeout = media.rtp_timeout
        self.idle_timeout = media.hangup_after_silence or None
        self.ports = PortAllocator(media.rtp_port_first, media.rtp_port_last)

    async def open(
        self, *, on_silence: Callable[[str], None], on_idle: Callable[[], None]
    ) -> MediaSession:
        try:
            return await MediaSession.create(
                self.ports,
                self.address,
                silence_timeout=self.silence_timeout,
                on_silence=on_silence,
                idle_timeout=self.idle_timeout,
                on_idle=on_idle,
            )
        except (MediaError, OSError) as exc:
            raise MediaUnavailable(str(exc)) from exc


def build_b2bua(config: Config, store: Store) -> tuple[B2bua, RecordingManager]:
    """The SIP side wired to the store, a relay factory and the recorder."""
    recordings = RecordingManager(config, store)
    return B2bua(config, store, RelayFactory(config), recordings), recordings


async def serve(config: Config, *, ready: Callable[[B2bua], None] | None = None) -> None:
    """Run callrec until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=os.environ.get("CALLREC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    store = await Store.open(config.storage.db_path)
    b2bua, recordings = build_b2bua(config, store)
    await recordings.refresh_settings()
    recovered = await recordings.recover()
    if recovered:
        log.warning("repaired %d recording(s) left unfinished by a crash", recovered)
    await fail_interrupted_exports(store, time.time())
    retention = RetentionTask(store, config.storage.dir)
    await b2bua.start()
    recordings.start()
    retention.start()
    portal = await start_portal(config, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"callrec serving SIP on {b2bua.hostport()} (udp, tcp), portal on {portal.url}",
        flush=True,
    )
    if ready is not None:
        ready(b2bua)
    await stop.wait()
    log.info("shutting down")
    await portal.stop()
    await b2bua.stop()
    await recordings.stop()
    await retention.stop()
    await wait_for_exports(30)
    await store.close()
